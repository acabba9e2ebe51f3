"""The events of one execution, as the store's snapshot reads them.

A replay folds "the events that determine the execution's rows" (``Scope``): the execution's own
events, plus two kinds of events of other executions that its rows depend on too:

- heartbeats of its agents sent in other executions (an ``agents`` row is per agent name, and
  ``swf run`` reuses the names): they are runless, so folding them after the rest is exact;
- events of its runs that belong to another execution (a retried run number, announced again by
  a later execution's ``run_imminent``) or to none: those are merged in position order, since
  which execution a run belongs to follows the order of the run_imminents.

Rows come in the projector's fast shape (``projections.source.Row``): the catalog only sees
bodies that are not in its normalized form already. Everything is read through one
``EventStore.snapshot()``, so a replay reads one moment of the store.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventstore.store import STORED_COLUMNS, Limit
from projections.source import CHUNK, Row

__all__ = ["STORED_COLUMNS", "Limit", "Scope", "merged"]


@dataclass(slots=True)
class Scope:
    """The execution and the keys of the rows it owns (filled as its events are folded)."""

    execution_id: str
    runs: set[tuple[int, str]] = field(default_factory=set)  # (run_number, namespace)
    agents: set[tuple[str, str]] = field(default_factory=set)  # (namespace, name)
    foreign_executions: list[str] = field(default_factory=list)  # sharing one of its runs
    extra_positions: list[int] = field(default_factory=list)  # other executions' events folded

    @property
    def run_numbers(self) -> set[int]:
        return {run for run, _ns in self.runs}


def merged(chunks: Iterable[list[Row]], extra: Sequence[Row], chunk: int = CHUNK
           ) -> Iterator[list[Row]]:
    """``chunks`` with the (sorted) ``extra`` rows merged in by position."""
    if not extra:
        yield from chunks
        return
    batch: list[Row] = []
    flat = (row for rows in chunks for row in rows)
    for row in heapq.merge(flat, extra, key=_position):
        batch.append(row)
        if len(batch) >= chunk:
            yield batch
            batch = []
    if batch:
        yield batch


def _position(row: Any) -> int:
    return row[0]
