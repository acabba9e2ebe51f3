"""The PostgreSQL recorder: appends serialized by an advisory lock, rows streamed in by COPY.

Appenders are serialized for the whole transaction, and positions are drawn from the sequence
only while holding the lock. So an append that commits later always has larger positions, and a
reader that sees position p also sees all below p: ``follow`` can never skip an event by reading
past a not-yet-committed one. Positions may have gaps (a value spent on a duplicate or a
rolled-back append is not reused).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from .catalog import canonical_revision
from .engine import lock_key
from .envelope import Event
from .schema import APPEND_COLUMNS, STORED_COLUMNS

log = logging.getLogger(__name__)

Examined = tuple[Event, bytes, bool]  # (event, encoded headers, execution resolved in batch)
Resolve = Callable[[sa.Connection, list[Event], "int | None"], None]

ANALYZE_MIN_ROWS = 10_000
ANALYZE_GROWTH = 3  # analyze again once rows appended exceed 3x the last row estimate
# The sample (300 rows per unit) of the recorder's own ANALYZE: 3,000 rows give the row count and
# coarse histograms, enough to steer keyset pages to the index, at a tenth of the default's cost
# (0.02 s instead of 0.2 s at 270k rows, paid by the append crossing the threshold); autovacuum's
# ANALYZE, on its own schedule, refines them with the configured target.
ANALYZE_TARGET = 10


class PostgresRecorder:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        with engine.connect() as conn:
            schema, self._sequence = conn.exec_driver_sql(
                "SELECT current_schema(), pg_get_serial_sequence('events', 'position')").one()
        self._lock = lock_key(f"append:{schema}.events")  # this schema's appends
        self._unanalyzed = 0  # rows appended since this recorder last analyzed
        self._analyze_check_at = ANALYZE_MIN_ROWS

    def append(self, examined: Iterator[Examined], size: int, duplicates: list[str],
               resolve: Resolve) -> list[Event]:
        """Store the examined batch (``size`` messages at most) in one transaction; returns
        the new events, positioned."""
        stored = self._append(examined, size, duplicates, resolve)
        self._maybe_analyze(len(stored))
        return stored

    def _append(self, examined: Iterator[Examined], size: int, duplicates: list[str],
                resolve: Resolve) -> list[Event]:
        with self.engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (self._lock,))
            raw = conn.connection.driver_connection
            assert raw is not None
            from psycopg.errors import UniqueViolation  # lazily: only PostgreSQL needs psycopg

            info = conn.connection.info  # lives as long as the DBAPI connection (its session)
            if not info.get("swf_bytea_dumper"):
                _dump_bytea_in_c(raw)
                info["swf_bytea_dumper"] = True

            # One block of ``size`` positions in one step: every other draw from the sequence
            # happens under this lock too (the staged INSERT's defaults), so none falls inside.
            last = raw.execute(_RESERVE_BLOCK, (self._sequence, self._sequence, size)
                               ).fetchone()[0]
            positions = range(last - size + 1, last + 1)
            batch: list[Event] = []
            encoded_headers: list[bytes] = []
            raw.execute("SAVEPOINT swf_append")
            try:
                _copy_streaming(conn, raw, examined, positions, batch, encoded_headers, resolve)
                return batch
            except UniqueViolation:
                # Some event is stored already: undo, and let ON CONFLICT sort them out.
                raw.execute("ROLLBACK TO SAVEPOINT swf_append")
            for event, headers, _resolved in examined:  # what the failed COPY did not reach
                batch.append(event)
                encoded_headers.append(headers)
            resolve(conn, batch, None)
            stored_at = _insert_staged(conn, raw, batch, encoded_headers)
        stored = []
        for event in batch:
            position = stored_at.get(event.event_id)
            if position is None:
                duplicates.append(event.event_id)
            else:
                event.position = position
                stored.append(event)
        stored.sort(key=_position)
        return stored

    def restore(self, rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows exactly as stored (``STORED_COLUMNS`` order), positions included, and
        move the sequence past them."""
        if not rows:
            return
        with self.engine.begin() as conn:
            conn.exec_driver_sql(_RESTORE, [tuple(row) for row in rows])
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('events', 'position'), "
                "(SELECT coalesce(max(position), 1) FROM events))")

    def _maybe_analyze(self, appended: int) -> None:
        """ANALYZE the columns reads filter and order on when the table outgrew its statistics.

        Without statistics (a fresh table, bulk-loaded before autovacuum wakes up) PostgreSQL
        answers a keyset page ``position > x ORDER BY position LIMIT n`` with a scan and sort of
        the whole table, so a full read turns quadratic. Checked every ANALYZE_MIN_ROWS appended
        rows; analyzed when never analyzed or grown ANALYZE_GROWTH-fold, so rarely.
        """
        self._unanalyzed += appended
        if self._unanalyzed < self._analyze_check_at:
            return
        with self.engine.connect() as conn:
            tuples = conn.exec_driver_sql(_RELTUPLES).scalar() or 0
            if tuples < 0 or self._unanalyzed > ANALYZE_GROWTH * tuples:
                log.debug("analyzing events after %d appended rows", self._unanalyzed)
                conn.exec_driver_sql(f"SET LOCAL default_statistics_target = {ANALYZE_TARGET}")
                conn.exec_driver_sql(
                    "ANALYZE events (position, execution_id, run_id, msg_type, reject_reason)")
                conn.commit()
                tuples = conn.exec_driver_sql(_RELTUPLES).scalar() or 0
                self._unanalyzed = 0
        self._analyze_check_at = max(ANALYZE_MIN_ROWS, int(ANALYZE_GROWTH * tuples))


def _dump_bytea_in_c(raw: Any) -> None:
    """Let COPY write bytea (headers, body) with psycopg's compiled dumper: by default the type
    name finds the DB-API ``Binary`` wrapper's dumper, a Python call per value (6% of the
    client's time per event)."""
    from psycopg.types.string import BytesBinaryDumper

    raw.adapters.register_dumper(bytes, BytesBinaryDumper)


def _copy_streaming(conn: sa.Connection, raw: Any, examined: Iterator[Examined],
                    positions: range, batch: list[Event], encoded_headers: list[bytes],
                    resolve: Resolve) -> None:
    """COPY the batch straight into events while examining it, filling ``batch``.

    Examining inside the COPY lets the server store rows while the client examines the next
    ones: two cores at work instead of one after the other. Events whose execution must be
    looked up wait for a second COPY (same transaction, so still one atomic append); their
    positions were fixed in batch order, so the lookup only considers positions before it.
    """
    waiting: list[tuple[Event, bytes]] = []
    with raw.cursor() as cursor:
        with cursor.copy(_COPY_EVENTS) as copy:
            copy.set_types(_EVENT_TYPES)
            write_row = copy.write_row
            add_event, add_headers = batch.append, encoded_headers.append
            mark = canonical_revision()
            position = positions.start  # the examined are at most ``size``: checked below
            for event, headers, resolved in examined:
                event.position = position
                add_event(event)
                add_headers(headers)
                if resolved:  # _row(event, headers), inlined: it runs per event
                    write_row((position, event.event_id, event.recorded_at, event.destination,
                               headers, event.body, event.namespace, event.execution_id,
                               event.run_id, event.msg_type, event.sender, event.sent_at,
                               event.schema_version, event.reject_reason,
                               mark if event.canonical else None))
                else:
                    waiting.append((event, headers))
                position += 1
            if position > positions.stop:  # the reserved block overflowed: roll back
                raise RuntimeError(f"{len(batch)} events for {len(positions)} positions")
        if waiting:
            resolve(conn, [event for event, _headers in waiting], positions[0])
            with cursor.copy(_COPY_EVENTS) as copy:
                copy.set_types(_EVENT_TYPES)
                for event, headers in waiting:
                    copy.write_row(_row(event, headers))


def _row(event: Event, headers: bytes) -> tuple[Any, ...]:
    return (event.position, event.event_id, event.recorded_at, event.destination, headers,
            event.body, event.namespace, event.execution_id, event.run_id, event.msg_type,
            event.sender, event.sent_at, event.schema_version, event.reject_reason,
            canonical_revision() if event.canonical else None)


def _insert_staged(conn: sa.Connection, raw: Any, batch: list[Event],
                   encoded_headers: list[bytes]) -> dict[str, int]:
    info = conn.connection.info  # lives as long as the DBAPI connection (its session)
    try:
        if not info.get("swf_stage_ready"):
            raw.execute(_CREATE_STAGE)
            info["swf_stage_ready"] = True
        return _copy_insert(raw, batch, encoded_headers)
    except BaseException:
        info.pop("swf_stage_ready", None)  # a rollback may have undone the CREATE
        raise


def _copy_insert(raw: Any, batch: list[Event], encoded_headers: list[bytes]) -> dict[str, int]:
    """COPY the batch into the session's staging table, move it into events: {event_id: pos}."""
    with raw.cursor() as cursor:
        with cursor.copy(_COPY_STAGE) as copy:
            copy.set_types(_STAGE_TYPES)
            write_row = copy.write_row
            mark = canonical_revision()
            for seq, (event, headers) in enumerate(zip(batch, encoded_headers, strict=True)):
                write_row((seq, event.event_id, event.recorded_at, event.destination, headers,
                           event.body, event.namespace, event.execution_id, event.run_id,
                           event.msg_type, event.sender, event.sent_at, event.schema_version,
                           event.reject_reason, mark if event.canonical else None))
        # ON CONFLICT: a duplicate is skipped and reported, never an error.
        cursor.execute(_INSERT_STAGED)
        return dict(cursor.fetchall())


def _position(event: Event) -> int:
    return event.position


# A per-session staging table: COPY is the fastest way in, and INSERT ... SELECT ... ON CONFLICT
# then moves the rows over, skipping any duplicate instead of failing the whole COPY.
_CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS swf_append_stage (
    seq integer, event_id text, recorded_at text, destination text, headers bytea, body bytea,
    namespace text, execution_id text, run_id bigint, msg_type text, sender text, sent_at text,
    schema_version smallint, reject_reason text, canonical integer
) ON COMMIT DELETE ROWS
"""
_STAGE_TYPES = ["int4", "text", "text", "text", "bytea", "bytea", "text", "text", "int8",
                "text", "text", "text", "int2", "text", "int4"]
_COPY_STAGE = f"COPY swf_append_stage (seq, {', '.join(APPEND_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_RELTUPLES = "SELECT reltuples FROM pg_class WHERE oid = 'events'::regclass"
# nextval once and setval to the block's end: a tenth of the server's time for 5,000 nextvals.
_RESERVE_BLOCK = "SELECT setval(%s::regclass, nextval(%s::regclass) + %s - 1)"
_EVENT_TYPES = ["int8", *_STAGE_TYPES[1:]]
_COPY_EVENTS = f"COPY events (position, {', '.join(APPEND_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_INSERT_STAGED = (f"INSERT INTO events ({', '.join(APPEND_COLUMNS)}) "
                  f"SELECT {', '.join(APPEND_COLUMNS)} FROM swf_append_stage ORDER BY seq "
                  f"ON CONFLICT (event_id) DO NOTHING RETURNING event_id, position")
_RESTORE = (f"INSERT INTO events ({', '.join(STORED_COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(STORED_COLUMNS))})")
