"""Projections: all workflow state as rebuildable folds over the event log, and audit queries.

    from projections import Projector, queries
    projector = Projector(store)             # creates/upgrades the tables (own alembic history)
    projector.catch_up()                     # apply new events; returns how many
    projector.rebuild(["tf_slices"])         # or rebuild() for all; from position 0
    projector.status()                       # [{name, position, head, lag}]
    queries.execution_summary(store, "exec-id")
    queries.runs(store, execution_id=..., run=..., status=..., since=..., limit=...)

Modules: ``tables`` (schema), ``records``/``fold`` (the fold), ``derive`` (statuses, counters,
rows), ``load`` (rows back into the fold for catch-up), ``source`` (decoding the log for the fold),
``projector`` (checkpoints, catch-up, rebuild), ``queries`` (audit queries).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import queries
from .projector import NAMES, Projector, upgrade_projections

if TYPE_CHECKING:
    from .fold import Fold


def __getattr__(name: str) -> Any:
    """``Fold`` on first use: importing the package (every query does) need not load the fold."""
    if name == "Fold":
        from .fold import Fold

        return Fold
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["NAMES", "Fold", "Projector", "queries", "upgrade_projections"]
