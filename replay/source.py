"""The events of one execution, read straight from the events table.

A replay folds "the events that determine the execution's rows" (``Scope``): the execution's own
events, plus two kinds of events of other executions that its rows depend on too:

- heartbeats of its agents sent in other executions (an ``agents`` row is per agent name, and
  ``swf run`` reuses the names): they are runless, so folding them after the rest is exact;
- events of its runs that belong to another execution (a retried run number, announced again by
  a later execution's ``run_imminent``) or to none: those are merged in position order, since
  which execution a run belongs to follows the order of the run_imminents.

Rows come in the projector's fast shape (``projections.source.Row``): the catalog only sees
bodies that are not in its normalized form already. Everything runs on one connection, inside
the caller's transaction, so a replay reads one snapshot of the store.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from eventstore.catalog import examine
from eventstore.envelope import Event
from projections.source import CHUNK, Row

_FAST = "position, run_id, schema_version, coalesce(sent_at, recorded_at), execution_id, body"
# Every stored column, in the events table's order (fixtures keep events as stored).
STORED_COLUMNS = ("position", "event_id", "recorded_at", "destination", "headers", "body",
                  "namespace", "execution_id", "run_id", "msg_type", "sender", "sent_at",
                  "schema_version", "reject_reason")


@dataclass(frozen=True, slots=True)
class Limit:
    """Which events count: positions up to ``position``, event times up to ``time``."""

    position: int | None = None
    time: str | None = None  # ISO-8601 UTC in the store's format


@dataclass(slots=True)
class Scope:
    """The execution and the keys of the rows it owns (filled as its events are folded)."""

    execution_id: str
    runs: set[tuple[int, str]] = field(default_factory=set)  # (run_number, namespace)
    agents: set[tuple[str, str]] = field(default_factory=set)  # (namespace, name)
    foreign_executions: list[str] = field(default_factory=list)  # sharing one of its runs
    extra_positions: list[int] = field(default_factory=list)  # other executions' events folded


def mark(conn: sa.Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def where_clause(conn: sa.Connection, limit: Limit, valid_only: bool = True
                 ) -> tuple[str, list[Any]]:
    """SQL conditions (' AND ...') and parameters selecting the events within ``limit``."""
    m = mark(conn)
    clauses, params = [], []
    if limit.position is not None:
        clauses.append(f"position <= {m}")
        params.append(limit.position)
    if limit.time is not None:
        clauses.append(f"coalesce(sent_at, recorded_at) <= {m}")
        params.append(limit.time)
    if valid_only:
        clauses.append("reject_reason IS NULL")
    return "".join(f" AND {clause}" for clause in clauses), params


def execution_chunks(conn: sa.Connection, execution_id: str, limit: Limit,
                     chunk: int = CHUNK) -> Iterator[list[Row]]:
    """The execution's valid events in position order, ``chunk`` rows at a time.

    When the execution fills most of its span of the log (an execution recorded on its own),
    the span is read by position, the table's own order, and other executions' rows dropped
    here: a third cheaper than a lookup per event through the execution index.
    """
    m = mark(conn)
    extra, params = where_clause(conn, limit)
    count, first, last = conn.exec_driver_sql(
        f"SELECT count(*), min(position), max(position) FROM events WHERE execution_id = {m}",
        (execution_id,)).one()
    if not count:
        return
    span = last - first + 1
    dense = count * 2 >= span
    alone = count == span  # positions are unique: every row of the span is the execution's
    if dense:
        sql = (f"SELECT {_FAST} FROM events WHERE position > {m} AND position <= {m}{extra} "
               f"ORDER BY position LIMIT {m}")
    else:
        sql = (f"SELECT {_FAST} FROM events WHERE execution_id = {m} AND position > {m}"
               f"{extra} ORDER BY position LIMIT {m}")
    after = first - 1
    while True:
        args = (after, last, *params, chunk) if dense else (execution_id, after, *params, chunk)
        rows = conn.exec_driver_sql(sql, args).cursor.fetchall()
        if not rows:
            return
        after = rows[-1][0]
        if dense and not alone and any(row[4] != execution_id for row in rows):
            mine = [row for row in rows if row[4] == execution_id]
            if mine:
                yield mine
        else:
            yield rows
        if len(rows) < chunk:
            return


def agents_of(conn: sa.Connection, execution_id: str, limit: Limit) -> set[tuple[str, str]]:
    """(namespace, name) of the agents that sent heartbeats in the execution."""
    m = mark(conn)
    extra, params = where_clause(conn, limit)
    rows = conn.exec_driver_sql(
        f"SELECT DISTINCT namespace, sender FROM events WHERE msg_type = 'agent_heartbeat' "
        f"AND execution_id = {m}{extra}", (execution_id, *params)).fetchall()
    return {(namespace or "", sender or "") for namespace, sender in rows}


def foreign_heartbeats(conn: sa.Connection, scope: Scope, limit: Limit) -> list[Row]:
    """Heartbeats of the execution's agents sent outside it (other executions, or none)."""
    names = sorted({name for _ns, name in scope.agents})
    if not names:
        return []
    m = mark(conn)
    extra, params = where_clause(conn, limit)
    rows: list[Row] = []
    for start in range(0, len(names), 500):
        chunk = names[start:start + 500]
        rows.extend(conn.exec_driver_sql(
            f"SELECT {_FAST} FROM events WHERE msg_type = 'agent_heartbeat' "
            f"AND sender IN ({', '.join([m] * len(chunk))}) "
            f"AND (execution_id IS NULL OR execution_id <> {m}){extra} ORDER BY position",
            (*chunk, scope.execution_id, *params)).cursor.fetchall())
    rows.sort(key=_position)
    return rows


def namespace_stops(conn: sa.Connection, namespaces: set[str], limit: Limit) -> list[Row]:
    """stop_workflow messages of these namespaces that name no execution."""
    if not namespaces:
        return []
    m = mark(conn)
    extra, params = where_clause(conn, limit)
    names = sorted(namespaces)
    return list(conn.exec_driver_sql(
        f"SELECT {_FAST} FROM events WHERE msg_type = 'stop_workflow' "
        f"AND execution_id IS NULL AND coalesce(namespace, '') IN "
        f"({', '.join([m] * len(names))}){extra} ORDER BY position",
        (*names, *params)).cursor.fetchall())


def runner_announcements(conn: sa.Connection, runners: set[tuple[str, str]],
                         execution_id: str, limit: Limit) -> list[Row]:
    """run_imminent messages of other executions by these (namespace, sender) runners."""
    m = mark(conn)
    extra, params = where_clause(conn, limit)
    rows: list[Row] = []
    for ns, sender in sorted(runners):
        rows.extend(conn.exec_driver_sql(
            f"SELECT {_FAST} FROM events WHERE msg_type = 'run_imminent' AND sender = {m} "
            f"AND coalesce(namespace, '') = {m} AND execution_id <> {m}{extra} "
            f"ORDER BY position", (sender, ns, execution_id, *params)).cursor.fetchall())
    rows.sort(key=_position)
    return rows


def foreign_run_events(conn: sa.Connection, scope: Scope, limit: Limit) -> list[Row]:
    """Events of the execution's runs that belong to another execution or to none.

    Other executions are found by their run_imminent of one of these runs (cheap: the
    msg_type index), not by scanning every event of the runs.
    """
    numbers = sorted({run for run, _ns in scope.runs})
    if not numbers:
        return []
    m = mark(conn)
    extra, params = where_clause(conn, limit)
    runs_in = f"run_id IN ({', '.join([m] * len(numbers))})"
    others = [row[0] for row in conn.exec_driver_sql(
        f"SELECT DISTINCT execution_id FROM events WHERE msg_type = 'run_imminent' "
        f"AND {runs_in} AND execution_id <> {m}{extra}",
        (*numbers, scope.execution_id, *params)).fetchall()]
    scope.foreign_executions = sorted(others)
    owners = "execution_id IS NULL"
    if others:
        owners += f" OR execution_id IN ({', '.join([m] * len(others))})"
    # "+run_id": look the rows up by execution (few), not by run (all of the execution's)
    rows = conn.exec_driver_sql(
        f"SELECT {_FAST} FROM events WHERE ({owners}) AND +{runs_in}{extra} ORDER BY position",
        (*others, *numbers, *params)).cursor.fetchall()
    return list(rows)


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


def read_events(conn: sa.Connection, execution_id: str, chunk: int = CHUNK) -> Iterator[Event]:
    """The execution's events as ``EventStore.read`` gives them (``data`` normalized by today's
    catalog), read on this connection: inside the replay's snapshot."""
    m = mark(conn)
    sql = (f"SELECT {', '.join(STORED_COLUMNS)} FROM events WHERE execution_id = {m} "
           f"AND position > {m} ORDER BY position LIMIT {m}")
    last = 0
    while True:
        rows = conn.exec_driver_sql(sql, (execution_id, last, chunk)).cursor.fetchall()
        yield from _stored_events(rows)
        if len(rows) < chunk:
            return
        last = rows[-1][0]


def introductions(conn: sa.Connection, execution_id: str) -> list[Event]:
    """The first agent-level heartbeat (no execution) of each sender of the execution.

    Live agents (``swf agent``) announce their type that way, before any execution exists;
    without it a re-drive could not tell which agent type sent what. Embedded agents send
    their heartbeats within the execution, so this is empty for them."""
    m = mark(conn)
    rows = conn.exec_driver_sql(
        f"SELECT {', '.join(STORED_COLUMNS)} FROM events WHERE position IN ("
        f"SELECT min(position) FROM events WHERE msg_type = 'agent_heartbeat' "
        f"AND execution_id IS NULL AND sender IN (SELECT DISTINCT sender FROM events "
        f"WHERE execution_id = {m}) GROUP BY sender) ORDER BY position",
        (execution_id,)).cursor.fetchall()
    return list(_stored_events(rows))


def _stored_events(rows: list[Any]) -> Iterator[Event]:
    loads = orjson.loads
    for (position, event_id, recorded_at, destination, headers, body, namespace, execution,
         run_id, msg_type, sender, sent_at, version, reason) in rows:
        body = bytes(body)
        headers = loads(bytes(headers)) if headers else {}
        data = None
        if reason is None:
            verdict = examine(body, destination, headers=headers)
            data, reason = verdict.data, verdict.reason
            if data is not None:
                if data["execution_id"] is None and execution is not None:
                    data["execution_id"] = execution  # resolved by the store from the run
                data["timestamp"] = sent_at  # resolved at append (sender zone, broker time)
        yield Event(position, event_id, recorded_at, destination, headers, body, msg_type,
                    namespace, execution, run_id, sender, sent_at, version, reason, data)


def _position(row: Any) -> int:
    return row[0]
