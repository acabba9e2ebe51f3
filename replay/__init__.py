"""Replay: rebuild, step through, re-drive and export recorded executions (``swf-replay``).

One job: answer "what happened, and would today's code do the same?" from the log alone. A
replay opens the store read-only: it never migrates and never writes. May import: eventstore,
projections, agents.

Modules: ``source`` (an execution's events, read fast), ``rebuild`` (fold in memory, compare
with the stored tables), ``timeline`` (``--until``, ``--step``), ``redrive`` (``--agents``),
``mermaid`` (``--mermaid``), ``fixture`` (fixture files: export, load), ``scenarios`` (the
recipes that record the fixtures), ``render`` (output), ``cli`` (the command).
"""
