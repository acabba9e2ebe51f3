"""Command modules of the ``swf`` CLI, one per area."""
