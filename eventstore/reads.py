"""Named reads of the events table: every query on ``events`` outside an append is here.

``Reads`` is shared by the store (each read on a connection of its own, for one-off use) and by
its ``Snapshot`` (every read on one connection, inside one transaction: one moment of the log,
and ``.connection`` lets the caller read its own tables at that same moment).

Rows for the fold (``FoldRow``) are plain tuples - position, run_id, schema_version, event time,
execution_id, body, and whether the body carries today's canonical mark (``catalog.
canonical_revision``: its shape check may be skipped) - read with driver-level SQL: the fold's hot
path allocates nothing more.
Rows "as stored" are tuples in ``STORED_COLUMNS`` order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

import orjson
import sqlalchemy as sa

from .catalog import SCHEMA_VERSION, canonical_revision, complete, examine, needs_normalization
from .envelope import Event, format_time, parse_time
from .schema import STORED_COLUMNS, events, reservations

log = logging.getLogger(__name__)

FOLD_CHUNK = 5000  # rows per query of a streaming fold: small enough to stay in the CPU caches
_IN_CHUNK = 500  # values per IN (...) list
_EMPTY_HEADERS = b"{}"

FoldRow = tuple[int, int | None, int, str, str | None, bytes, Any]
# (an integer the code computes, not an input: safe in the SQL text)
_MARKED = ("false" if canonical_revision() is None
           else f"coalesce(canonical = {canonical_revision()}, false)")
_FOLD = ("position, run_id, schema_version, coalesce(sent_at, recorded_at), execution_id, body, "
         f"{_MARKED}")
_FOLD_RANGE = (f"SELECT {_FOLD} FROM events WHERE position > {{0}} AND position <= {{0}} "
               f"AND reject_reason IS NULL ORDER BY position LIMIT {{0}}")
# The same rows packed by SQLite into two JSON arrays, [[position, run_id, schema_version,
# time, execution_id, null, marked], ...] and the bodies (null for another schema's; a slice's
# or result's as its fields, see below), in one result row
# per chunk: SQLite builds them with the GIL released (a read-ahead thread's work overlaps the
# fold's), and one orjson parse of each array replaces a Python tuple and a parse call per row.
# The rows are fed to the aggregates in the subquery's order; their positions are returned too.
_PACKED = (
    "SELECT count(*), max(position), CAST('[' || group_concat(json_array(position, run_id, "
    "schema_version, coalesce(sent_at, recorded_at), execution_id, NULL, marked), ',') || ']' "
    "AS BLOB), CAST('[' || group_concat(CASE WHEN schema_version = {version} THEN {body} ELSE "
    "'null' END, ',') || ']' AS BLOB) FROM (SELECT position, run_id, schema_version, sent_at, "
    "recorded_at, execution_id, msg_type, body, " + _MARKED + " AS marked FROM events WHERE "
    "{where} ORDER BY position LIMIT {m})")
# Slices and their results as fields: the marked body of a slice or slice_result with a run
# (most of a log) comes as the JSON array of the fields the fold reads of it, msg_type and
# namespace first (``Fold.slice_fields``, ``Fold.result_fields``; a missing one is null), not
# the envelope keys whose facts the fold takes from the row (run, execution, time) or never
# reads for such an event (msg_id, sender). SQLite extracts them in the read-ahead thread; the
# fold's thread parses and frees an array, and looks up no keys. (CAST: since SQLite 3.45 a
# BLOB argument is JSONB.) Only marked bodies: an unmarked one may go to the catalog, which
# reads every key. (A valid slice always has a run; without one the fold would read its
# sender, so it stays whole.)
SLICE_FIELDS = ("tf_filename", "slice_id", "stf_filename", "start", "end", "tf_count", "retry")
RESULT_FIELDS = ("slice_id", "tf_filename", "retry", "status", "worker", "error")


def _fields(msg_type: str, names: tuple[str, ...]) -> str:
    paths = ", ".join(repr(f"$.{name}") for name in ("msg_type", "namespace", *names))
    return (f"WHEN marked AND run_id IS NOT NULL AND msg_type = {msg_type!r} "
            f"THEN json_extract(CAST(body AS TEXT), {paths})")


_FIELDS_BODY = (f"CASE {_fields('slice', SLICE_FIELDS)} "
                f"{_fields('slice_result', RESULT_FIELDS)} ELSE body END")
_STORED = ", ".join(STORED_COLUMNS)
_STEP = ("position, event_id, coalesce(sent_at, recorded_at), msg_type, sender, execution_id, "
         "reject_reason, run_id, schema_version, body")
# Event's positional field order; ``read`` selects columns in exactly this order.
READ_COLUMNS = ("position", "event_id", "recorded_at", "destination", "headers", "body",
                "msg_type", "namespace", "execution_id", "run_id", "sender", "sent_at",
                "schema_version", "reject_reason")


class Packed(NamedTuple):
    """A chunk of fold rows as SQLite packs them (``Reads.fold_packed``)."""

    after: int  # the chunk is the valid rows of (after, covered]
    covered: int
    size: int  # how many rows
    rows: bytes  # JSON: [[position, run_id, schema_version, time, execution_id, null, 0|1], ...]
    bodies: bytes  # JSON: the bodies in the same order, null for another schema's
    execution_id: str | None = None  # only this execution's rows (``execution_chunks``)


@dataclass(frozen=True, slots=True)
class Limit:
    """Which events count: positions up to ``position``, event times up to ``time``."""

    position: int | None = None
    time: str | None = None  # ISO-8601 UTC in the store's format


class Rejection(NamedTuple):
    position: int
    msg_type: str | None
    reject_reason: str


class StepRow(NamedTuple):
    position: int
    event_id: str
    time: str
    msg_type: str | None
    sender: str | None
    execution_id: str | None
    reject_reason: str | None
    run_id: int | None
    schema_version: int
    body: bytes


def _one_row(driver: Any, sql: str, args: tuple[Any, ...]) -> Any:
    """The one row ``sql`` returns, read on the driver's own connection (SQLite).

    A packed read runs in a read-ahead thread beside the fold. The driver hands the GIL back
    at each call into SQLite, and taking it back while the fold runs waits up to the
    interpreter's switch interval (5 ms), so the fewer calls a chunk takes, the sooner it
    reaches the fold: SQLAlchemy's result adds calls, a transaction per chunk two more."""
    cursor = driver.execute(sql, args)
    try:
        return cursor.fetchone()
    finally:
        cursor.close()  # (ends the statement, and with it an autocommit read's snapshot)


class Reads:
    """The named reads; a subclass supplies the connection each read runs on."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self._m = "?" if dialect.paramstyle == "qmark" else "%s"
        self._fold_range = _FOLD_RANGE.format(self._m)
        self._packs = dialect.name == "sqlite"
        self._fold_packed = self._packed(
            f"position > {self._m} AND position <= {self._m} AND reject_reason IS NULL")

    def _connection(self) -> AbstractContextManager[sa.Connection]:
        raise NotImplementedError

    # -- the log as a whole --------------------------------------------------------------------

    def head(self) -> int:
        """The highest committed position (0 when empty)."""
        with self._connection() as conn:
            return conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.position), 0))
                                ).scalar_one()

    def count_after(self, position: int) -> int:
        """How many events are stored after ``position``."""
        with self._connection() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(events)
                                .where(events.c.position > position)).scalar_one()

    def stored_ids(self, event_ids: Iterable[str]) -> set[str]:
        """Which of these event ids are stored."""
        found: set[str] = set()
        ids = [event_id for event_id in event_ids if event_id]
        with self._connection() as conn:
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start:start + _IN_CHUNK]
                found.update(conn.execute(sa.select(events.c.event_id)
                                          .where(events.c.event_id.in_(chunk))).scalars())
        return found

    def open_executions(self, namespace: str) -> list[str]:
        """Executions of ``namespace`` that started (run_imminent) and have not finished
        (run_processed), oldest first: the ones a restarted agent may still have work in."""
        columns = events.c
        valid = sa.and_(columns.namespace == namespace, columns.reject_reason.is_(None),
                        columns.execution_id.is_not(None))
        finished = sa.select(columns.execution_id).where(valid,
                                                         columns.msg_type == "run_processed")
        query = (sa.select(columns.execution_id, sa.func.min(columns.position).label("first"))
                 .where(valid, columns.msg_type == "run_imminent",
                        columns.execution_id.not_in(finished))
                 .group_by(columns.execution_id).order_by("first"))
        with self._connection() as conn:
            return [row[0] for row in conn.execute(query)]

    def latest_from(self, sender: str, msg_type: str) -> tuple[str, str | None] | None:
        """(recorded_at, sent_at) of the latest event of this type from this sender."""
        with self._connection() as conn:
            row = conn.exec_driver_sql(
                f"SELECT recorded_at, sent_at FROM events WHERE msg_type = {self._m} "
                f"AND sender = {self._m} ORDER BY position DESC LIMIT 1",
                (msg_type, sender)).first()
        return None if row is None else (row[0], row[1])

    # -- what a REST call names (the console's monitor endpoints) ---------------------------

    def with_id_prefix(self, prefix: str, limit: int = 20) -> list[Event]:
        """Valid events whose event_id starts with ``prefix``, oldest first: one range of the
        unique event_id index (ids compare bytewise on both backends)."""
        if not prefix:
            return []
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        with self._connection() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT {_STORED} FROM events WHERE event_id >= {self._m} AND event_id < "
                f"{self._m} AND reject_reason IS NULL ORDER BY position LIMIT {self._m}",
                (prefix, upper, limit)).cursor.fetchall()
        return list(stored_events(rows))

    def latest_namespace(self, *, execution_id: str | None = None,
                         run_id: int | None = None) -> str | None:
        """The namespace of the latest valid event of the execution (else of the run) that
        carries one (the execution and run indexes, read backwards)."""
        column, value = ("execution_id", execution_id) if execution_id is not None else (
            "run_id", run_id)
        if value is None:
            return None
        with self._connection() as conn:
            return conn.exec_driver_sql(
                f"SELECT namespace FROM events WHERE {column} = {self._m} AND namespace IS NOT "
                f"NULL AND reject_reason IS NULL ORDER BY position DESC LIMIT 1",
                (value,)).scalar()

    def top_run_id(self) -> int | None:
        """The highest run number stored or reserved (``reserve_execution``): a run number
        handed out from it never meets a run an embedded or live execution reserved."""
        with self._connection() as conn:
            found = [conn.execute(sa.select(sa.func.max(column))).scalar()
                     for column in (events.c.run_id, reservations.c.run_number)]
        return max((int(value) for value in found if value is not None), default=None)

    def executions_with_prefix(self, prefix: str) -> int:
        """How many distinct execution ids start with ``prefix`` (a range of their index)."""
        if not prefix:
            return 0
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        with self._connection() as conn:
            return conn.exec_driver_sql(
                f"SELECT count(DISTINCT execution_id) FROM events WHERE execution_id >= "
                f"{self._m} AND execution_id < {self._m}", (prefix, upper)).scalar_one()

    def count_of_type(self, msg_type: str) -> int:
        """How many events of this msg_type are stored (the msg_type index)."""
        with self._connection() as conn:
            return conn.exec_driver_sql(
                f"SELECT count(*) FROM events WHERE msg_type = {self._m}",
                (msg_type,)).scalar_one()

    # -- the fold ------------------------------------------------------------------------------

    def fold_rows(self, after: int, until: int, limit: int) -> tuple[list[FoldRow], int]:
        """Up to ``limit`` valid rows in (after, until], and the position they cover: the last
        row's, or ``until`` when the range is exhausted."""
        with self._connection() as conn:
            rows = cast(list[FoldRow], conn.exec_driver_sql(
                self._fold_range, (after, until, limit)).cursor.fetchall())
        return rows, rows[-1][0] if len(rows) == limit else until

    def _packed(self, where: str) -> tuple[str, str]:
        """The packed read of the rows ``where`` selects: (slices and results as their fields,
        every body whole)."""
        return (_PACKED.format(version=SCHEMA_VERSION, where=where, m=self._m, body=_FIELDS_BODY),
                _PACKED.format(version=SCHEMA_VERSION, where=where, m=self._m, body="body"))

    def fold_packed(self, after: int, until: int, limit: int) -> Packed | None:
        """``fold_rows`` packed by the database (SQLite), or None: read ``fold_rows``. A
        marked slice or slice_result with a run comes as its fields (``SLICE_FIELDS``,
        ``RESULT_FIELDS``)."""
        if not self._packs:
            return None
        return self._read_packed(self._fold_packed, (after, until, limit), after, until, limit)

    def _read_packed(self, sql: tuple[str, str], args: tuple[Any, ...], after: int, until: int,
                     limit: int, execution_id: str | None = None) -> Packed:
        with self._connection() as conn:
            driver = conn.connection.driver_connection
            try:
                size, last, rows, bodies = _one_row(driver, sql[0], args)
            except conn.dialect.loaded_dbapi.OperationalError as problem:
                # A body SQLite's JSON cannot read (orjson, the catalog's parser, could): this
                # chunk's bodies come whole, the fold reads them as it would anyway.
                log.warning("positions after %d: bodies read whole, SQLite could not extract "
                            "the fields of their slices (%s)", after, problem)
                size, last, rows, bodies = _one_row(driver, sql[1], args)
        if not size:
            return Packed(after, until, 0, b"[]", b"[]", execution_id)
        return Packed(after, last if size == limit else until, size, rows, bodies, execution_id)

    def packed_rows(self, chunk: Packed) -> list[FoldRow]:
        """A packed chunk's rows read again as rows (with their bodies)."""
        if chunk.execution_id is None:
            return self.fold_rows(chunk.after, chunk.covered, chunk.size)[0]
        with self._connection() as conn:
            return cast(list[FoldRow], conn.exec_driver_sql(
                f"SELECT {_FOLD} FROM events WHERE execution_id = {self._m} AND position > "
                f"{self._m} AND position <= {self._m} AND reject_reason IS NULL ORDER BY "
                f"position LIMIT {self._m}",
                (chunk.execution_id, chunk.after, chunk.covered, chunk.size)).cursor.fetchall())

    def examine_inputs(self, position: int) -> tuple[bytes, str, dict[str, str]]:
        """The body, destination and STOMP headers of the event at ``position``: what the
        catalog examines (for a body the fold must normalize)."""
        with self._connection() as conn:
            body, destination, headers = conn.execute(
                sa.select(events.c.body, events.c.destination, events.c.headers)
                .where(events.c.position == position)).one()
        return bytes(body), destination, _headers(headers)

    # -- one execution -------------------------------------------------------------------------

    def event_count(self, execution_id: str) -> int:
        """How many events the execution has (an index scan)."""
        with self._connection() as conn:
            return conn.exec_driver_sql(
                f"SELECT count(*) FROM events WHERE execution_id = {self._m}",
                (execution_id,)).scalar_one()

    def has_events(self, execution_id: str) -> bool:
        with self._connection() as conn:
            return conn.exec_driver_sql(
                f"SELECT 1 FROM events WHERE execution_id = {self._m} LIMIT 1",
                (execution_id,)).first() is not None

    def execution_rows(self, execution_id: str, limit: Limit, chunk: int = FOLD_CHUNK
                       ) -> Iterator[list[FoldRow]]:
        """The execution's valid events as fold rows in position order, ``chunk`` at a time.

        When the execution fills most of its span of the log (an execution recorded on its
        own), the span is read by position, the table's own order, and other executions' rows
        dropped here: a third cheaper than a lookup per event through the execution index.
        """
        m = self._m
        extra, params = self._within(limit)
        count, first, last = self._span(execution_id)
        if not count:
            return
        span = last - first + 1
        dense = count * 2 >= span
        alone = count == span  # positions are unique: every row of the span is the execution's
        if dense:
            sql = (f"SELECT {_FOLD} FROM events WHERE position > {m} AND position <= {m}"
                   f"{extra} ORDER BY position LIMIT {m}")
        else:
            sql = (f"SELECT {_FOLD} FROM events WHERE execution_id = {m} AND position > {m}"
                   f"{extra} ORDER BY position LIMIT {m}")
        after = first - 1
        while True:
            args = (after, last, *params, chunk) if dense else (execution_id, after, *params,
                                                                chunk)
            with self._connection() as conn:
                rows = cast(list[FoldRow], conn.exec_driver_sql(sql, args).cursor.fetchall())
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

    def execution_chunks(self, execution_id: str, limit: Limit, packed: int,
                         chunk: int = FOLD_CHUNK) -> Iterator[list[FoldRow] | Packed]:
        """``execution_rows``, packed by the database ``packed`` rows at a time where it can
        (SQLite, no time limit): see ``fold_packed``. Read through the execution index, with
        no count of its events first (a tenth of a second for a million): this runs in a
        read-ahead thread, which keeps ahead of the fold either way."""
        if not self._packs or limit.time is not None:
            yield from self.execution_rows(execution_id, limit, chunk)
            return
        m = self._m
        until = limit.position
        if until is None:
            with self._connection() as conn:
                until = conn.exec_driver_sql(
                    f"SELECT max(position) FROM events WHERE execution_id = {m}",
                    (execution_id,)).scalar() or 0
        sql = self._packed(f"execution_id = {m} AND position > {m} AND position <= {m} "
                           f"AND reject_reason IS NULL")
        after = 0
        while after < until:
            found = self._read_packed(sql, (execution_id, after, until, packed), after, until,
                                      packed, execution_id)
            if found.size:
                yield found
            after = found.covered

    def _span(self, execution_id: str) -> tuple[int, int, int]:
        """How many events the execution has, its first and last position (0s: none)."""
        with self._connection() as conn:
            count, first, last = conn.exec_driver_sql(
                f"SELECT count(*), min(position), max(position) FROM events "
                f"WHERE execution_id = {self._m}", (execution_id,)).one()
        return (count, first, last) if count else (0, 0, 0)

    def heartbeat_senders(self, execution_id: str, limit: Limit) -> set[tuple[str, str]]:
        """(namespace, sender) of the agents that sent heartbeats in the execution."""
        extra, params = self._within(limit)
        with self._connection() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT DISTINCT namespace, sender FROM events WHERE msg_type = "
                f"'agent_heartbeat' AND execution_id = {self._m}{extra}",
                (execution_id, *params)).fetchall()
        return {(namespace or "", sender or "") for namespace, sender in rows}

    def foreign_heartbeats(self, execution_id: str, senders: Iterable[str], limit: Limit
                           ) -> list[FoldRow]:
        """Heartbeats of these senders sent outside the execution (other executions, or none),
        as fold rows in position order."""
        names = sorted(set(senders))
        if not names:
            return []
        m = self._m
        extra, params = self._within(limit)
        rows: list[FoldRow] = []
        with self._connection() as conn:
            for start in range(0, len(names), _IN_CHUNK):
                chunk = names[start:start + _IN_CHUNK]
                rows.extend(conn.exec_driver_sql(
                    f"SELECT {_FOLD} FROM events WHERE msg_type = 'agent_heartbeat' "
                    f"AND sender IN ({', '.join([m] * len(chunk))}) "
                    f"AND (execution_id IS NULL OR execution_id <> {m}){extra} "
                    f"ORDER BY position", (*chunk, execution_id, *params)).cursor.fetchall())
        rows.sort(key=_position)
        return rows

    def foreign_run_rows(self, execution_id: str, runs: Iterable[int], limit: Limit
                         ) -> tuple[list[str], list[FoldRow]]:
        """(the other executions that announced one of these runs, sorted; the events of the
        runs that belong to those executions or to none, as fold rows in position order).

        Other executions are found by their run_imminent of one of these runs (cheap: the
        msg_type index), not by scanning every event of the runs."""
        numbers = sorted(set(runs))
        if not numbers:
            return [], []
        m = self._m
        extra, params = self._within(limit)
        runs_in = f"run_id IN ({', '.join([m] * len(numbers))})"
        with self._connection() as conn:
            # "+run_id" too: through the few run_imminent rows, never the runs' every event
            # (SQLite's planner, without statistics, may take either index)
            others = sorted(row[0] for row in conn.exec_driver_sql(
                f"SELECT DISTINCT execution_id FROM events WHERE msg_type = 'run_imminent' "
                f"AND +{runs_in} AND execution_id <> {m}{extra}",
                (*numbers, execution_id, *params)).fetchall())
            owners = "execution_id IS NULL"
            if others:
                owners += f" OR execution_id IN ({', '.join([m] * len(others))})"
            # "+run_id": look the rows up by execution (few), not by run (all of the
            # execution's)
            rows = conn.exec_driver_sql(
                f"SELECT {_FOLD} FROM events WHERE ({owners}) AND +{runs_in}{extra} "
                f"ORDER BY position", (*others, *numbers, *params)).cursor.fetchall()
        return others, list(rows)

    def namespace_stops(self, namespaces: Iterable[str], limit: Limit) -> list[FoldRow]:
        """stop_workflow messages of these namespaces that name no execution, as fold rows."""
        names = sorted(set(namespaces))
        if not names:
            return []
        extra, params = self._within(limit)
        with self._connection() as conn:
            return list(conn.exec_driver_sql(
                f"SELECT {_FOLD} FROM events WHERE msg_type = 'stop_workflow' "
                f"AND execution_id IS NULL AND coalesce(namespace, '') IN "
                f"({', '.join([self._m] * len(names))}){extra} ORDER BY position",
                (*names, *params)).cursor.fetchall())

    def runner_announcements(self, runners: Iterable[tuple[str, str]], execution_id: str,
                             limit: Limit) -> list[FoldRow]:
        """run_imminent messages of other executions by these (namespace, sender) runners, as
        fold rows in position order."""
        m = self._m
        extra, params = self._within(limit)
        rows: list[FoldRow] = []
        with self._connection() as conn:
            for ns, sender in sorted(set(runners)):
                rows.extend(conn.exec_driver_sql(
                    f"SELECT {_FOLD} FROM events WHERE msg_type = 'run_imminent' "
                    f"AND sender = {m} AND coalesce(namespace, '') = {m} "
                    f"AND execution_id <> {m}{extra} ORDER BY position",
                    (sender, ns, execution_id, *params)).cursor.fetchall())
        rows.sort(key=_position)
        return rows

    def positions(self) -> list[int]:
        """Every stored position, in order (a fixture that keeps a whole small store)."""
        with self._connection() as conn:
            return [row[0] for row in conn.exec_driver_sql(
                "SELECT position FROM events ORDER BY position")]

    def last_event(self, execution_id: str, limit: Limit
                   ) -> tuple[int, str, str | None, str | None] | None:
        """(position, time, msg_type, sender) of the execution's last event within ``limit``,
        rejected ones included."""
        where, params = self._within(limit, valid_only=False)
        with self._connection() as conn:
            row = conn.exec_driver_sql(
                f"SELECT position, coalesce(sent_at, recorded_at), msg_type, sender FROM events "
                f"WHERE execution_id = {self._m}{where} ORDER BY position DESC LIMIT 1",
                (execution_id, *params)).first()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def step_rows(self, execution_id: str, runs: Iterable[int],
                  foreign_executions: Iterable[str], limit: Limit) -> Iterator[StepRow]:
        """The execution's events and, of its ``runs``, those of ``foreign_executions`` or of
        none, rejected ones included, in position order."""
        m = self._m
        where, params = self._within(limit, valid_only=False)
        owners = f"execution_id = {m}"
        extra: list[Any] = []
        others = list(foreign_executions)
        if others:
            numbers = sorted(set(runs))
            runs_in = f"run_id IN ({', '.join([m] * len(numbers))})"
            owners += (f" OR ({runs_in} AND (execution_id IS NULL OR execution_id IN "
                       f"({', '.join([m] * len(others))})))")
            extra = [*numbers, *others]
        with self._connection() as conn:
            for row in conn.exec_driver_sql(
                    f"SELECT {_STEP} FROM events WHERE ({owners}){where} ORDER BY position",
                    (execution_id, *extra, *params)):
                yield StepRow(*row)

    def rejected(self, execution_id: str) -> list[Rejection]:
        """The execution's events stored as invalid, in position order.

        Through the partial index of rejected rows (few), not the execution's index (all its
        events: 2 s for a 1M-event execution): ``execution_id || ''`` keeps SQLite's planner
        off the latter, and is ``execution_id`` on both backends (NULL stays NULL)."""
        with self._connection() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT position, msg_type, reject_reason FROM events "
                f"WHERE reject_reason IS NOT NULL AND execution_id || '' = {self._m} "
                f"ORDER BY position", (execution_id,)).all()
        return [Rejection(*row) for row in rows]

    def execution_events(self, execution_id: str, chunk: int = FOLD_CHUNK) -> Iterator[Event]:
        """The execution's events as ``EventStore.read`` gives them (``data`` normalized by
        today's catalog)."""
        sql = (f"SELECT {_STORED} FROM events WHERE execution_id = {self._m} "
               f"AND position > {self._m} ORDER BY position LIMIT {self._m}")
        last = 0
        while True:
            with self._connection() as conn:
                rows = conn.exec_driver_sql(sql, (execution_id, last, chunk)).cursor.fetchall()
            yield from stored_events(rows)
            if len(rows) < chunk:
                return
            last = rows[-1][0]

    def introductions(self, execution_id: str) -> list[Event]:
        """The first agent-level heartbeat (no execution) of each sender of the execution.

        Live agents (``swf agent``) announce their type that way, before any execution exists;
        without it a re-drive could not tell which agent type sent what. Embedded agents send
        their heartbeats within the execution, so this is empty for them."""
        with self._connection() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT {_STORED} FROM events WHERE position IN ("
                f"SELECT min(position) FROM events WHERE msg_type = 'agent_heartbeat' "
                f"AND execution_id IS NULL AND sender IN (SELECT DISTINCT sender FROM events "
                f"WHERE execution_id = {self._m}) GROUP BY sender) ORDER BY position",
                (execution_id,)).cursor.fetchall()
        return list(stored_events(rows))

    def export_rows(self, execution_id: str, until: int, extra_positions: Iterable[int]
                    ) -> list[tuple[Any, ...]]:
        """Every stored column (``STORED_COLUMNS``) of the execution's events up to ``until``
        and of the events at ``extra_positions``, in position order, bytes as bytes."""
        m = self._m
        select = f"SELECT {_STORED} FROM events"
        extra = sorted(set(extra_positions))
        with self._connection() as conn:
            rows = [tuple(row) for row in conn.exec_driver_sql(
                f"{select} WHERE execution_id = {m} AND position <= {m} ORDER BY position",
                (execution_id, until)).fetchall()]
            for start in range(0, len(extra), _IN_CHUNK):
                chunk = extra[start:start + _IN_CHUNK]
                rows.extend(tuple(row) for row in conn.exec_driver_sql(
                    f"{select} WHERE position IN ({', '.join([m] * len(chunk))})",
                    tuple(chunk)))
        rows = list({row[0]: _plain(row) for row in rows}.values())
        rows.sort(key=_position)
        return rows

    # -- helpers -------------------------------------------------------------------------------

    def _within(self, limit: Limit, valid_only: bool = True) -> tuple[str, list[Any]]:
        """SQL conditions (' AND ...') and parameters selecting the events within ``limit``."""
        clauses: list[str] = []
        params: list[Any] = []
        if limit.position is not None:
            clauses.append(f"position <= {self._m}")
            params.append(limit.position)
        if limit.time is not None:
            clauses.append(f"coalesce(sent_at, recorded_at) <= {self._m}")
            params.append(limit.time)
        if valid_only:
            clauses.append("reject_reason IS NULL")
        return "".join(f" AND {clause}" for clause in clauses), params


class Snapshot(Reads):
    """The reads on one connection in one read transaction: one moment of the log.
    ``connection`` is that connection, for the caller's own tables at the same moment."""

    def __init__(self, connection: sa.Connection) -> None:
        super().__init__(connection.dialect)
        self.connection = connection

    def _connection(self) -> AbstractContextManager[sa.Connection]:
        return nullcontext(self.connection)


SCAN_CACHE_KIB = 8 * 1024  # SQLite page cache of a connection scanning the log


@contextmanager
def scan_cache(conn: sa.Connection) -> Iterator[None]:
    """A small SQLite page cache on ``conn`` while it scans the log, the usual one after.

    Connections keep a large cache for the appends' random index inserts; a scan of the whole
    log only ever reads each page once, so filling that cache (the OS caches the file anyway)
    would only add its size to the reader's memory: 260 MB of a 1M-event rebuild's 650."""
    if conn.dialect.name != "sqlite":
        yield
        return
    def pragma(sql: str) -> Any:
        began = not conn.in_transaction()
        result = conn.exec_driver_sql(sql)
        value = result.scalar() if result.returns_rows else None
        if began:  # end the transaction the statement began, so the caller can begin its own
            conn.rollback()
        return value

    usual = int(pragma("PRAGMA cache_size"))
    pragma(f"PRAGMA cache_size = -{SCAN_CACHE_KIB}")
    try:
        yield
    finally:
        pragma(f"PRAGMA cache_size = {usual}")


def latest_execution(conn: sa.Connection, namespace: str | None, run_id: int,
                     before: int | None) -> str | None:
    """The execution of the run's latest stored event that carried one (before position
    ``before``, if given)."""
    query = (sa.select(events.c.execution_id)
             .where(events.c.run_id == run_id,
                    events.c.namespace.is_not_distinct_from(namespace),
                    events.c.execution_id.is_not(None))
             .order_by(events.c.position.desc()).limit(1))
    if before is not None:
        query = query.where(events.c.position < before)
    return conn.execute(query).scalar()


def filtered(until: int | None, execution_id: str | None, run_id: int | None,
             msg_types: Iterable[str] | None, namespace: str | None,
             since: str | datetime | None, until_time: str | datetime | None,
             valid: bool | None) -> sa.Select:
    """The query behind ``EventStore.read``: READ_COLUMNS in position order, filtered."""
    columns = events.c
    query = sa.select(*(columns[name] for name in READ_COLUMNS)).order_by(columns.position)
    if until is not None:
        query = query.where(columns.position <= until)
    if execution_id is not None:
        query = query.where(columns.execution_id == execution_id)
    if run_id is not None:
        query = query.where(columns.run_id == run_id)
    if msg_types is not None:
        if isinstance(msg_types, str):
            msg_types = [msg_types]
        query = query.where(columns.msg_type.in_(list(msg_types)))
    if namespace is not None:
        query = query.where(columns.namespace == namespace)
    # Times are stored in one fixed ISO form (format_time), so text order is time order.
    event_time = sa.func.coalesce(columns.sent_at, columns.recorded_at)
    if since is not None:
        query = query.where(event_time >= _moment(since))
    if until_time is not None:
        query = query.where(event_time <= _moment(until_time))
    if valid is True:
        query = query.where(columns.reject_reason.is_(None))
    elif valid is False:
        query = query.where(columns.reject_reason.is_not(None))
    return query


def decoded(rows: Sequence[Any], normalize: bool) -> Iterator[Event]:
    """READ_COLUMNS rows as Events; ``normalize``: ``data`` by today's catalog (its fast path
    for bodies already in normalized form)."""
    loads = orjson.loads
    for row in rows:
        (position, event_id, recorded_at, destination, headers, body, msg_type, namespace,
         execution_id, run_id, sender, sent_at, schema_version, reason) = row
        body = bytes(body)  # PostgreSQL may hand back a memoryview
        headers = {} if headers == _EMPTY_HEADERS else loads(headers)
        data = None
        if normalize and reason is None:
            # A body of another schema (a REST call's payload, maybe empty) is read with its
            # destination, never parsed as a bus message.
            data = loads(body) if schema_version == SCHEMA_VERSION else None
            if data is None or needs_normalization(data, schema_version, sent_at):
                verdict = examine(body, destination, headers=headers)
                data = verdict.data
                if data is None:
                    reason = verdict.reason  # today's catalog rejects what was accepted then
            else:
                complete(data)
            if data is not None:
                _settled(data, execution_id, sent_at)
        yield Event(position, event_id, recorded_at, destination, headers, body, msg_type,
                    namespace, execution_id, run_id, sender, sent_at, schema_version, reason,
                    data)


def stored_events(rows: Sequence[Any]) -> Iterator[Event]:
    """STORED_COLUMNS rows as Events, each body examined by today's catalog."""
    for (position, event_id, recorded_at, destination, headers, body, namespace, execution,
         run_id, msg_type, sender, sent_at, version, reason) in rows:
        body = bytes(body)
        headers = _headers(headers)
        data = None
        if reason is None:
            verdict = examine(body, destination, headers=headers)
            data, reason = verdict.data, verdict.reason
            if data is not None:
                _settled(data, execution, sent_at)
        yield Event(position, event_id, recorded_at, destination, headers, body, msg_type,
                    namespace, execution, run_id, sender, sent_at, version, reason, data)


def _settled(data: dict[str, Any], execution_id: str | None, sent_at: str | None) -> None:
    """What the store decided at append, over what today's catalog reads alone: the execution
    inferred from the run, and the time resolved with the sender zone and the broker time."""
    if execution_id is not None and data["execution_id"] is None:
        data["execution_id"] = execution_id
    if data["timestamp"] != sent_at:
        data["timestamp"] = sent_at


def _headers(encoded: Any) -> dict[str, str]:
    if encoded is None:
        return {}
    encoded = bytes(encoded)
    return {} if encoded == _EMPTY_HEADERS else orjson.loads(encoded)


def _plain(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """bytes for the byte columns (PostgreSQL may hand back memoryviews)."""
    values = list(row)
    for index in (_HEADERS_AT, _BODY_AT):
        if values[index] is not None and not isinstance(values[index], bytes):
            values[index] = bytes(values[index])
    return tuple(values)


_HEADERS_AT, _BODY_AT = STORED_COLUMNS.index("headers"), STORED_COLUMNS.index("body")


def _moment(value: str | datetime) -> str:
    return format_time(value if isinstance(value, datetime) else parse_time(value))


def _position(row: Any) -> int:
    return row[0]
