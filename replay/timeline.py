"""An execution in time: its state at a moment (``--until``), and event by event (``--step``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from eventstore.collector import quiet_gc
from eventstore.store import Snapshot
from projections import source as fast
from projections.derive import snapshot
from projections.fold import Fold

from .rebuild import (
    TABLE_BY_NAME,
    Row,
    fold_execution,
    key_width,
    rebuilt_rows,
    rows_to_dicts,
)
from .source import Limit, Scope


def parse_moment(text: str) -> Limit:
    """``--until``: a log position (digits) or an ISO-8601 time."""
    from eventstore.envelope import format_time, parse_time

    value = text.strip()
    if value.isdigit():
        return Limit(position=int(value))
    return Limit(time=format_time(parse_time(value)))  # ValueError when neither


# -- --until ---------------------------------------------------------------------------------


def state_at(view: Snapshot, scope: Scope, limit: Limit) -> dict[str, Any]:
    """The execution's state after the events up to ``limit``: executions and run rows, status
    tallies of files, samples and slices per run, datasets and tasks."""
    with quiet_gc():  # (the fold and its rows are freed before the collector is back)
        fold, count = fold_execution(view, scope, limit)
        last = _last_event(view, scope.execution_id, limit)
        rows = rebuilt_rows(fold, scope)
        del fold
        state = {
            "execution_id": scope.execution_id,
            "until": {"position": limit.position, "time": limit.time},
            "events": count,
            "last_event": last,
            "executions": rows_to_dicts("executions", rows["executions"]),
            "runs": rows_to_dicts("run_state", rows["run_state"]),
            "stf_files": _tally(rows["stf_files"], "stf_files"),
            "tf_samples": _tally(rows["tf_samples"], "tf_samples"),
            "tf_slices": _tally(rows["tf_slices"], "tf_slices"),
            "datasets": rows_to_dicts("datasets", rows["datasets"]),
            "panda_tasks": rows_to_dicts("panda_tasks", rows["panda_tasks"]),
        }
        del rows
    return state


def _tally(rows: list[Row], name: str) -> dict[str, dict[str, int]]:
    """{run_number: {status: count}} (keys as text: JSON object keys)."""
    status = list(TABLE_BY_NAME[name].c.keys()).index("status")
    counts: dict[int, Counter[str]] = {}
    for row in rows:
        counts.setdefault(row[0], Counter())[row[status]] += 1
    return {str(run): dict(sorted(counter.items())) for run, counter in sorted(counts.items())}


def _last_event(view: Snapshot, execution_id: str, limit: Limit) -> dict[str, Any] | None:
    row = view.last_event(execution_id, limit)
    if row is None:
        return None
    return {"position": row[0], "time": row[1], "msg_type": row[2], "sender": row[3]}


# -- --step ----------------------------------------------------------------------------------


Change = tuple[Row, dict[str, tuple[Any, Any]], bool]


@dataclass(slots=True)
class Step:
    position: int
    event_id: str
    time: str
    msg_type: str | None
    sender: str | None
    execution_id: str | None
    rejected: str | None
    # table -> [(key, {column: (old, new)}, whether the row is new)]
    changes: dict[str, list[Change]] = field(default_factory=dict)


def steps(view: Snapshot, scope: Scope, limit: Limit) -> Iterator[Step]:
    """Each event of the execution (and of other executions in its runs), in position order,
    with the projection rows it changed."""
    with quiet_gc():  # (its fold freed before the collector is back)
        fold_execution(view, scope, limit)  # fills the scope: its runs, executions sharing them
    rows = view.step_rows(scope.execution_id, scope.run_numbers, scope.foreign_executions,
                          limit)
    fold = Fold(complete=True)
    seen: dict[tuple[str, Row], dict[str, Any]] = {}
    with quiet_gc():
        for (position, event_id, time, msg_type, sender, execution_id, reason, run, version,
             body) in rows:
            step = Step(position, event_id, time, msg_type, sender, execution_id, reason)
            if reason is None:
                # (unmarked: stepping is not the hot path, its row reads no mark)
                items = fast.decode(view, [(position, run, version, time, execution_id, body,
                                            False)])
                if items:
                    fold.feed(items)
                    step.changes = _changes(snapshot(fold), seen)
            yield step
        del fold, seen  # (freed before the collector is back)


def _changes(tables: dict[str, list[dict[str, Any]]], seen: dict[tuple[str, Row], dict[str, Any]]
             ) -> dict[str, list[Change]]:
    """The rows that differ from their last rendering (a re-rendered, unchanged row is not a
    change), as (key, {column: (old, new)}, new row?)."""
    out: dict[str, list[Change]] = {}
    for name, rows in tables.items():
        width = key_width(TABLE_BY_NAME[name])
        for row in rows:
            values = list(row.values())
            key = tuple(values[:width])
            before = seen.get((name, key))
            if before == row:
                continue
            seen[(name, key)] = row
            names = list(row)[width:]
            if before is None:
                delta = {column: (None, row[column]) for column in names
                         if row[column] is not None}
            else:
                delta = {column: (before[column], row[column]) for column in names
                         if before[column] != row[column]}
            out.setdefault(str(name), []).append((key, delta, before is None))
    return out


def step_json(step: Step) -> dict[str, Any]:
    return {
        "position": step.position, "event_id": step.event_id, "time": step.time,
        "msg_type": step.msg_type, "sender": step.sender, "execution_id": step.execution_id,
        "rejected": step.rejected,
        "changes": {name: [{"key": list(key), "new_row": new_row,
                            "columns": {column: {"old": old, "new": new}
                                        for column, (old, new) in delta.items()}}
                           for key, delta, new_row in changes]
                    for name, changes in step.changes.items()},
    }


def step_lines(step: Step) -> Iterator[str]:
    head = (f"#{step.position} {step.time} {step.msg_type or '(unknown type)'} "
            f"from {step.sender or '(no sender)'}")
    if step.rejected is not None:
        yield f"{head}  REJECTED: {step.rejected}"
        return
    if not step.changes:
        yield f"{head}  (no rows changed)"
        return
    yield head
    for name, changes in step.changes.items():
        for key, delta, new_row in changes:
            if new_row:
                parts = ", ".join(f"{column}={_json(new)}" for column, (_old, new)
                                  in delta.items())
                yield f"  + {name}{_json(list(key))}: {parts}"
            else:
                parts = ", ".join(f"{column} {_json(old)} -> {_json(new)}"
                                  for column, (old, new) in delta.items())
                yield f"  ~ {name}{_json(list(key))}: {parts}"


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


__all__ = ["Step", "parse_moment", "state_at", "step_json", "step_lines", "steps"]
