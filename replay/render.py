"""What swf-replay prints: text for people, JSON-ready values for machines. Everything here is a
pure function of its input, so the same replay always prints the same bytes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from eventstore.envelope import Event

from . import rebuild
from .rebuild import Comparison, Row

if TYPE_CHECKING:  # only a type here: the re-drive imports every agent, a plain replay none
    from .redrive import Report

SHOWN_ROWS = 50  # per table and kind of difference in the text diff (--json has them all)


# -- projections -----------------------------------------------------------------------------


def value_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def key_text(name: str, row: Row) -> str:
    table = rebuild.TABLE_BY_NAME[name]
    columns = rebuild.columns_of(table)[:rebuild.key_width(table)]
    return " ".join(f"{column}={value_text(value)}" for column, value in zip(columns, row,
                                                                           strict=False))


def comparison_json(comparison: Comparison, label: str) -> dict[str, Any]:
    tables = {}
    for diff in comparison.tables:
        table = rebuild.TABLE_BY_NAME[diff.name]
        names = rebuild.columns_of(table)
        width = rebuild.key_width(table)
        tables[diff.name] = {
            "rebuilt": diff.rebuilt, "stored": diff.stored, "identical": diff.identical,
            "missing": [dict(zip(names, row, strict=True)) for row in diff.missing],
            "extra": [dict(zip(names, row, strict=True)) for row in diff.extra],
            "changed": [{"key": dict(zip(names[:width], stored[:width], strict=True)),
                         "columns": {column: {"stored": old, "rebuilt": new} for column,
                                     (old, new) in rebuild.changed_columns(
                                         diff.name, stored, rebuilt).items()}}
                        for stored, rebuilt in diff.changed]}
    return {"execution_id": comparison.execution_id, "source": label,
            "events": comparison.events, "covered": comparison.covered,
            "lag": comparison.lag, "notice": lag_notice(comparison.lag),
            "shared_runs_with": comparison.foreign_executions,
            "identical": comparison.identical, "tables": tables}


def lag_notice(lag: int) -> str | None:
    """What to say when the stored tables lag the log (None when they do not)."""
    if not lag:
        return None
    return (f"the stored projections lag the log by {lag} event{'s' if lag != 1 else ''} "
            f"(compared as of their checkpoint): run `swf projections catch-up` to bring them "
            f"up to date")


def comparison_lines(comparison: Comparison, label: str) -> Iterator[str]:
    marks = sorted(set(comparison.covered.values()))
    at = f"position {marks[0]}" if len(marks) == 1 else "positions " + ", ".join(
        f"{name} {mark}" for name, mark in comparison.covered.items())
    yield (f"{comparison.execution_id} ({label}): {comparison.events} events folded; "
           f"stored projections at {at}")
    notice = lag_notice(comparison.lag)
    if notice is not None:
        yield notice
    if comparison.foreign_executions:
        yield ("its runs also have events of " + ", ".join(comparison.foreign_executions)
               + " (folded in too)")
    width = max(len(diff.name) for diff in comparison.tables)
    yield f"{'table'.ljust(width)}  rebuilt  stored  result"
    for diff in comparison.tables:
        parts = [f"{len(items)} {kind}" for kind, items in
                 (("missing", diff.missing), ("extra", diff.extra), ("changed", diff.changed))
                 if items]
        yield (f"{diff.name.ljust(width)}  {diff.rebuilt:>7}  {diff.stored:>6}  "
               f"{', '.join(parts) if parts else 'identical'}")
    if comparison.identical:
        yield "identical"
        return
    for diff in comparison.tables:
        if diff.identical:
            continue
        names = rebuild.columns_of(rebuild.TABLE_BY_NAME[diff.name])
        yield f"{diff.name} (stored -> rebuilt from the log):"
        for kind, rows in (("missing from the table", diff.missing),
                           ("extra in the table", diff.extra)):
            sign = "-" if kind.startswith("missing") else "+"
            for row in rows[:SHOWN_ROWS]:
                yield f"  {sign} {kind}: {value_text(dict(zip(names, row, strict=True)))}"
            if len(rows) > SHOWN_ROWS:
                yield f"  ... and {len(rows) - SHOWN_ROWS} more rows {kind} (--json lists all)"
        for stored, rebuilt in diff.changed[:SHOWN_ROWS]:
            changes = rebuild.changed_columns(diff.name, stored, rebuilt)
            yield f"  ~ {key_text(diff.name, stored)}"
            for column, (old, new) in changes.items():
                yield f"      {column}: {value_text(old)} -> {value_text(new)}"
        if len(diff.changed) > SHOWN_ROWS:
            yield (f"  ... and {len(diff.changed) - SHOWN_ROWS} more changed rows "
                   f"(--json lists all)")
    drifting = [diff.name for diff in comparison.tables if not diff.identical]
    yield f"DRIFT in {', '.join(drifting)}"


def state_lines(state: dict[str, Any]) -> Iterator[str]:
    until = state["until"]
    moment = f"position {until['position']}" if until["position"] is not None else until["time"]
    last = state["last_event"]
    yield (f"{state['execution_id']} at {moment}: {state['events']} events folded"
           + (f"; last event #{last['position']} {last['msg_type']} at {last['time']}"
              if last else ""))
    for row in state["executions"]:
        yield (f"execution {row['execution_id']}: {row['status']}, runs {row['runs']}, "
               f"stf {row['stf_count']}, samples {row['stf_samples_received']}, slices created "
               f"{row['slices_created']}, completed {row['slices_completed']}, failed "
               f"{row['slices_failed']}")
    for row in state["runs"]:
        run = str(row["run_number"])
        yield (f"run {run}: phase {row['phase']}, state {row['state']}/{row['substate']}"
               f"{', outcome ' + row['outcome'] if row['outcome'] else ''}")
        yield (f"  stf_count {row['stf_count']}  stf_samples_received "
               f"{row['stf_samples_received']}  slices_created {row['slices_created']}  "
               f"queued {row['slices_queued']}  processing {row['slices_processing']}  "
               f"completed {row['slices_completed']}  failed {row['slices_failed']}  "
               f"retries {row['slice_retries']}")
        for name in ("stf_files", "tf_samples", "tf_slices"):
            tally = state[name].get(run)
            if tally:
                yield f"  {name}: " + ", ".join(f"{status} {count}"
                                                 for status, count in tally.items())
        for row2 in state["datasets"]:
            if row2["run_number"] == row["run_number"]:
                yield (f"  dataset {row2['scope']}:{row2['name']}: {row2['state']}, "
                       f"{row2['file_count']} files, {row2['size_bytes']} bytes")
        for row2 in state["panda_tasks"]:
            if row2["run_number"] == row["run_number"]:
                yield f"  task {row2['task_id']}: {row2['status']}"


# -- re-drive -------------------------------------------------------------------------------


def event_summary(event: Event | None) -> dict[str, Any] | None:
    if event is None:
        return None
    return {"position": event.position, "event_id": event.event_id, "msg_type": event.msg_type,
            "sender": event.sender, "time": event.time, "destination": event.destination}


def report_json(report: Report) -> dict[str, Any]:
    divergence = report.divergence
    body: dict[str, Any] | None = None
    if divergence is not None:
        expected = divergence.expected
        body = {
            "kind": divergence.kind, "agent": divergence.agent,
            "agent_type": divergence.agent_type, "input": event_summary(divergence.input),
            "expected": None if expected is None else {
                **event_summary(expected),  # type: ignore[dict-item]
                "message": _loads(expected.body)},
            "actual": None if divergence.actual is None else {
                "destination": divergence.destination, "message": divergence.actual},
            "fields": {name: {"expected": old, "actual": new}
                       for name, (old, new) in divergence.fields.items()},
            "candidate": event_summary(divergence.candidate),
            "command": divergence.command, "filled_from_log": divergence.filled,
        }
    return {"execution_id": report.execution_id, "events": report.events,
            "agents": report.agents, "inputs": report.inputs,
            "unknown_agent_types": report.unknown_types, "emitted": report.emitted,
            "compared": report.compared, "not_compared": report.not_compared,
            "divergence": body}


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


_KIND_TEXT = {
    "differs": "emitted a message that differs from the recorded one",
    "not_recorded": "emitted a message that was not recorded",
    "not_emitted": "did not emit a recorded message",
}


def report_lines(report: Report) -> Iterator[str]:
    yield f"re-drive of {report.execution_id}: {report.events} events"
    yield "agents re-driven with the current code:"
    if not report.agents:
        yield "  (none: no sender of this execution is a known agent type)"
    width = max((len(name) for name in report.agents), default=0)
    for name, agent_type in report.agents.items():
        yield f"  {name.ljust(width)}  {agent_type}"
    if report.inputs:
        yield "recorded inputs (senders not re-driven): " + ", ".join(
            f"{sender} ({count})" for sender, count in report.inputs.items())
    for sender, agent_type in report.unknown_types.items():
        yield f"  {sender}: agent type {agent_type!r} is not in the registry"
    yield (f"emitted {report.emitted} messages, {report.compared} matched to recorded ones")
    if report.not_compared:
        yield "not compared (runtime-generated): " + ", ".join(
            f"{count} {msg_type}" for msg_type, count in report.not_compared.items())
    divergence = report.divergence
    if divergence is None:
        yield "no divergence"
        return
    yield (f"DIVERGENCE: {divergence.agent} ({divergence.agent_type}) "
           f"{_KIND_TEXT[divergence.kind]}")
    label = "input event" if divergence.kind != "not_emitted" else "input event (likely cause)"
    yield f"{label}: {event_text(divergence.input)}"
    expected = divergence.expected
    if expected is not None:
        yield f"expected (recorded at position {expected.position}, {expected.destination}):"
        yield f"  {value_text(_loads(expected.body))}"
    else:
        yield "expected: nothing recorded with this msg_id"
    if divergence.actual is not None:
        what = (f"the reply of command {divergence.command}" if divergence.command
                else "emitted")
        yield f"actual ({what}, to {divergence.destination}):"
        yield f"  {value_text(divergence.actual)}"
        if divergence.filled:
            yield ("  (adapter-filled, taken from the recorded reply: "
                   f"{', '.join(divergence.filled)})")
    else:
        yield "actual: not emitted by the current code"
    if divergence.fields:
        yield "differing fields (expected -> actual):"
        for name, (old, new) in divergence.fields.items():
            yield f"  {name}: {value_text(old)} -> {value_text(new)}"
    if divergence.candidate is not None:
        yield (f"the recorded {divergence.candidate.msg_type} nothing emitted next: "
               f"{event_text(divergence.candidate)}")
        yield f"  {value_text(_loads(divergence.candidate.body))}"


def event_text(event: Event | None) -> str:
    if event is None:
        return "(none)"
    return (f"position {event.position} {event.msg_type} from {event.sender} at {event.time} "
            f"(event_id {event.event_id})")


