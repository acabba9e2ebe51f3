"""The event store: append (batched, idempotent), read, follow.

Public API (other packages rely on exactly this):

    store = EventStore(url=None, *, namespace=None, sender_zone=None)
                                                     # url None -> $SWF_DB or sqlite:///swf.db;
                                                     # schema upgraded automatically on open
    store.engine                                    # the SQLAlchemy Engine (projections share it)
    result = store.append(iterable_of_Incoming)     # one transaction; returns AppendResult
    result.events      -> list[Event]   newly stored events, in position order, data filled
    result.duplicates  -> list[str]     event_ids already stored (or repeated in the batch)
    result.rejected    -> int           how many of result.events were stored as rejected
    store.read(after=0, until=None, *, execution_id=None, run_id=None, msg_types=None,
               namespace=None, since=None, until_time=None, valid=None, limit=None)
                                        -> Iterator[Event] in position order, data filled
    store.follow(after=0, *, stop=None, poll_interval=0.05) -> Iterator[Event]
                                        catch up, then yield new events as they commit, never
                                        skipping one; ends when the threading.Event `stop` is set
    store.head() -> int                 highest committed position (0 when empty)
    store.close()

Details:

- ``after``/``until`` select positions ``after < position <= until``. ``since``/``until_time``
  (ISO-8601 text or datetime, both inclusive) compare with the event's time: ``sent_at``, else
  ``recorded_at``. ``valid=True`` reads only accepted events, ``valid=False`` only rejected ones.
- Positions are strictly increasing in commit order; on PostgreSQL they may have gaps (a
  sequence value spent on a duplicate or a rolled-back append is not reused).
- An event whose message lacks ``execution_id`` but has a ``run_id`` gets the execution of the
  latest earlier event of the same run and namespace (in the batch, else in the store); ``data``
  carries it too.
- Naive local sender times are read in ``sender_zone`` at append (and checked against the
  broker's ``timestamp`` header); ``sent_at`` keeps the result, and ``data["timestamp"]`` is
  always ``sent_at``, so reading never depends on the zone configured now.
- ``read`` re-examines each accepted body through the catalog (read-time normalization); should
  today's catalog reject a body accepted earlier, the event comes back with ``data`` None and
  that reason. ``read_raw`` takes the same arguments and skips the catalog (``data`` None).
- ``EventStore`` is a context manager; errors opening it are ``StoreUnavailable`` (bad URL,
  unreachable database) or ``SchemaTooNew`` (database migrated by newer code).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from .catalog import Verdict, complete, examine, needs_normalization, resolve_zone
from .envelope import Event, Incoming, event_id_for, format_time, parse_time, utc_now
from .errors import StoreUnavailable
from .migrate import lock_key, upgrade_store
from .schema import EVENT_COLUMNS, events

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///swf.db"
READ_CHUNK = 5000
SQLITE_BUSY_TIMEOUT_S = 30.0
SQLITE_WAL_AUTOCHECKPOINT = 10_000  # pages
SQLITE_CACHE_KIB = 256 * 1024  # an upper bound, allocated only as pages are used
PG_CONNECT_TIMEOUT_S = 5
COLUMN_LIMIT = 512  # characters kept in an indexed text column (bodies keep everything)
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
ANALYZE_MIN_ROWS = 10_000
ANALYZE_GROWTH = 3  # analyze again once rows appended exceed 3x the last row estimate
_SQLITE_IN_CHUNK = 5000  # bound parameters per IN (...) query, well below SQLite's 32766
_RUN_CACHE_MAX = 100_000
_EMPTY_HEADERS = b"{}"

# Event's positional field order; read queries select columns in exactly this order.
_READ_COLUMNS = ("position", "event_id", "recorded_at", "destination", "headers", "body",
                 "msg_type", "namespace", "execution_id", "run_id", "sender", "sent_at",
                 "schema_version", "reject_reason")


@dataclass(slots=True)
class AppendResult:
    events: list[Event] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: int = 0


def database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else $SWF_DB, else a SQLite file in the working dir."""
    return url or os.environ.get("SWF_DB") or DEFAULT_URL


def create_engine(url: str | None = None) -> sa.Engine:
    """An Engine tuned for the store; ``postgresql://`` means psycopg 3. Raises StoreUnavailable."""
    text = database_url(url)
    try:
        parsed = sa.make_url(text)
    except sa.exc.ArgumentError:
        raise StoreUnavailable(f"not a database URL: {text!r}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {}
    options: dict[str, Any] = {}
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_S
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, or every checkout would see a different empty database.
            connect_args["check_same_thread"] = False
            options["poolclass"] = StaticPool
    elif backend == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args, **options)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as problem:
        raise StoreUnavailable(f"cannot use {parsed!r}: {problem}".splitlines()[0]) from None
    if engine.dialect.name == "sqlite" and engine.dialect.driver == "pysqlite":
        _tune_sqlite(engine)
    elif engine.dialect.driver == "psycopg":
        sa.event.listen(engine, "connect", _tune_psycopg)
    return engine


def _tune_psycopg(dbapi_connection: Any, _record: Any) -> None:
    # psycopg's default bytes dumper is a Python subclass (for the DB-API Binary wrapper); the
    # plain one is implemented in C and saves a Python call per bytea value in COPY.
    from psycopg.types.string import BytesBinaryDumper  # lazily: SQLite users never need it

    dbapi_connection.adapters.register_dumper(bytes, BytesBinaryDumper)


def _tune_sqlite(engine: sa.Engine) -> None:
    """WAL + synchronous=NORMAL on every connection, and explicit BEGINs.

    pysqlite's own implicit BEGIN is deferred and skips DDL; we take over (isolation_level None)
    so migrations are transactional and appends can BEGIN IMMEDIATE: a deferred transaction that
    reads and then writes can fail with SQLITE_BUSY instead of waiting for the write lock.
    """

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        # WAL is synced at checkpoints only; checkpoint every ~40 MB instead of every 4 MB.
        cursor.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT}")
        # The event_id index takes random inserts: with the default 2 MB page cache every
        # append misses it and SQLite's insert rate halves once the index outgrows the cache.
        cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        cursor.execute("PRAGMA temp_store = MEMORY")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("swf_sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _use_wal(cursor: Any) -> None:
    """Switch the database file to WAL (persistent, so normally a no-op check).

    Several connections opening a fresh file at once race for the switch, and SQLite answers
    the loser "database is locked" at once, without its busy handler: retry with backoff.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    delay = 0.001
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() not in ("wal", "memory"):
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as problem:
            if "locked" not in str(problem) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


class EventStore:
    """An append-only event log in SQLite or PostgreSQL. Thread-safe; see the module docstring."""

    def __init__(self, url: str | None = None, *, namespace: str | None = None,
                 sender_zone: str | tzinfo | None = None) -> None:
        self.namespace = namespace
        # Naive local sender times are read in this zone (an IANA name; default UTC), at append.
        self.sender_zone = resolve_zone(sender_zone)
        self.engine = create_engine(url)
        self.backend = self.engine.dialect.name
        try:
            upgrade_store(self.engine)
            if self.backend == "postgresql":
                self._append_lock, self._sequence = self._postgres_names()
        except BaseException:
            self.engine.dispose()
            raise
        # (namespace, run_id) -> execution_id of the run's latest event that carried one.
        self._runs: dict[tuple[str | None, int], str] = {}
        self._runs_lock = threading.Lock()
        self._unanalyzed = 0  # rows appended since this store last analyzed (PostgreSQL)
        self._analyze_check_at = ANALYZE_MIN_ROWS

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def head(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.position), 0))
                                ).scalar_one()

    # -- append --------------------------------------------------------------------------------

    def append(self, messages: Iterable[Incoming]) -> AppendResult:
        """Store each new message once, in one transaction; see the module docstring."""
        result = AppendResult()
        messages = messages if isinstance(messages, list) else list(messages)
        if not messages:
            return result
        if self.backend == "postgresql":
            stored = self._append_postgres(messages, result.duplicates)
        else:
            stored = self._append_sqlite(messages, result.duplicates)
        with self._runs_lock:
            if len(self._runs) > _RUN_CACHE_MAX:
                self._runs.clear()
            for event in stored:
                if event.execution_id is not None and event.run_id is not None:
                    self._runs[(event.namespace, event.run_id)] = event.execution_id
        result.events = stored
        result.rejected = sum(1 for event in stored if event.reject_reason is not None)
        if self.backend == "postgresql":
            self._maybe_analyze(len(stored))
        return result

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
            tuples = conn.exec_driver_sql(_PG_RELTUPLES).scalar() or 0
            if tuples < 0 or self._unanalyzed > ANALYZE_GROWTH * tuples:
                log.debug("analyzing events after %d appended rows", self._unanalyzed)
                conn.exec_driver_sql(
                    "ANALYZE events (position, execution_id, run_id, msg_type, reject_reason)")
                conn.commit()
                tuples = conn.exec_driver_sql(_PG_RELTUPLES).scalar() or 0
                self._unanalyzed = 0
        self._analyze_check_at = max(ANALYZE_MIN_ROWS, int(ANALYZE_GROWTH * tuples))

    def _examined(self, messages: list[Incoming], duplicates: list[str]
                  ) -> Iterator[tuple[Event, bytes, bool]]:
        """Examine the batch, skipping (and reporting) repeats: each new message as an Event
        (position 0), its encoded headers, and False when its execution_id is still to be
        looked up in the store (no earlier event of its run in the batch carried one)."""
        recorded_at = utc_now()  # one store-clock reading per batch: it commits as one
        expected_namespace, zone = self.namespace, self.sender_zone
        seen: set[str] = set()
        batch_runs: dict[tuple[str | None, int], str] = {}
        # Locals: this loop runs per event and global lookups show in profiles.
        _examine, _event, limit, low, high = examine, Event, COLUMN_LIMIT, _INT64_MIN, _INT64_MAX
        dumps, empty = orjson.dumps, _EMPTY_HEADERS
        for message in messages:
            body = message.body
            if type(body) is not bytes:
                body = bytes(body)
            destination = message.destination
            headers = message.headers
            verdict = _examine(body, destination, expected_namespace, headers, zone)
            run_id = verdict.run_id
            # Rarely true; ordered cheapest first (a one-byte search is a memchr).
            if (len(body) > limit or (b"\\" in body and b"\\u0000" in body)
                    or "\x00" in destination
                    or (run_id is not None and not low <= run_id <= high)):
                destination = _storable(verdict, destination)
                run_id = verdict.run_id
            event_id = verdict.msg_id or event_id_for(None, headers, destination, body)
            if len(event_id) > limit:  # a cut would merge distinct ids: hash instead
                event_id = f"long:{hashlib.blake2b(event_id.encode(), digest_size=16).hexdigest()}"
            if event_id in seen:
                duplicates.append(event_id)
                continue
            seen.add(event_id)
            execution_id = verdict.execution_id
            event = _event(0, event_id, recorded_at, destination, headers, body, verdict.msg_type,
                           verdict.namespace, execution_id, run_id, verdict.sender,
                           verdict.sent_at, verdict.schema_version, verdict.reason, verdict.data)
            resolved = True
            if run_id is not None:
                if execution_id is not None:
                    batch_runs[(verdict.namespace, run_id)] = execution_id
                else:
                    execution_id = batch_runs.get((verdict.namespace, run_id))
                    if execution_id is None:
                        resolved = False
                    else:
                        _set_execution(event, execution_id)
            yield event, dumps(headers) if headers else empty, resolved

    def _resolve_runs(self, conn: sa.Connection, unresolved: list[Event],
                      before: int | None = None) -> None:
        """Give events lacking execution_id the one of their run's latest event stored before
        this batch (``before``: the batch's first position, if some of it is already written)."""
        found: dict[tuple[str | None, int], str | None] = {}
        for event in unresolved:
            if event.run_id is None or event.execution_id is not None:
                continue
            key = (event.namespace, event.run_id)
            if key not in found:
                found[key] = self._runs.get(key) or self._stored_execution(conn, *key, before)
            execution_id = found[key]
            if execution_id is not None:
                _set_execution(event, execution_id)

    @staticmethod
    def _stored_execution(conn: sa.Connection, namespace: str | None, run_id: int,
                          before: int | None) -> str | None:
        query = (sa.select(events.c.execution_id)
                 .where(events.c.run_id == run_id,
                        events.c.namespace.is_not_distinct_from(namespace),
                        events.c.execution_id.is_not(None))
                 .order_by(events.c.position.desc()).limit(1))
        if before is not None:
            query = query.where(events.c.position < before)
        return conn.execute(query).scalar()

    def _append_sqlite(self, messages: list[Incoming], duplicates: list[str]) -> list[Event]:
        batch: list[Event] = []
        encoded_headers: list[bytes] = []
        unresolved: list[Event] = []
        for event, headers, resolved in self._examined(messages, duplicates):
            batch.append(event)
            encoded_headers.append(headers)
            if not resolved:
                unresolved.append(event)
        with self.engine.connect() as base:
            # IMMEDIATE takes the write lock up front: appenders queue on the busy timeout, and
            # positions (max + 1 under the lock) equal the order in which appends commit.
            conn = base.execution_options(swf_sqlite_begin="IMMEDIATE")
            with conn.begin():
                self._resolve_runs(conn, unresolved)
                start = conn.exec_driver_sql(
                    "SELECT coalesce(max(position), 0) FROM events").scalar_one()
                # Optimistic: a batch is usually all new, so insert it without looking first.
                # If ON CONFLICT skipped a stored event, undo and insert only the new ones, so
                # positions stay dense.
                conn.exec_driver_sql("SAVEPOINT swf_append")
                inserted = conn.exec_driver_sql(
                    _SQLITE_INSERT, _sqlite_rows(batch, encoded_headers, start)).rowcount
                if inserted != len(batch):
                    conn.exec_driver_sql("ROLLBACK TO swf_append")
                    stored_ids = self._stored_ids_sqlite(conn, [e.event_id for e in batch])
                    batch, encoded_headers = _drop(stored_ids, batch, encoded_headers,
                                                   duplicates)
                    if batch:
                        conn.exec_driver_sql(_SQLITE_INSERT,
                                             _sqlite_rows(batch, encoded_headers, start))
                conn.exec_driver_sql("RELEASE swf_append")
        return batch

    @staticmethod
    def _stored_ids_sqlite(conn: sa.Connection, event_ids: list[str]) -> set[str]:
        stored: set[str] = set()
        for start in range(0, len(event_ids), _SQLITE_IN_CHUNK):
            chunk = tuple(event_ids[start:start + _SQLITE_IN_CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = conn.exec_driver_sql(
                f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk)
            stored.update(row[0] for row in rows)
        return stored

    def _append_postgres(self, messages: list[Incoming], duplicates: list[str]) -> list[Event]:
        with self.engine.begin() as conn:
            # Appenders are serialized for the whole transaction, and positions are drawn from
            # the sequence only while holding the lock. So an append that commits later always
            # has larger positions, and a reader that sees position p also sees all below p:
            # follow() can never skip an event by reading past a not-yet-committed one.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (self._append_lock,))
            raw = conn.connection.driver_connection
            assert raw is not None
            from psycopg.errors import UniqueViolation  # lazily: only PostgreSQL needs psycopg

            positions = sorted(raw.execute(_PG_NEXTVALS, (self._sequence, len(messages)),
                                           binary=True).fetchone()[0])
            examined = self._examined(messages, duplicates)
            batch: list[Event] = []
            encoded_headers: list[bytes] = []
            raw.execute("SAVEPOINT swf_append")
            try:
                _copy_streaming(conn, raw, examined, positions, batch, encoded_headers,
                                self._resolve_runs)
                return batch
            except UniqueViolation:
                # Some event is stored already: undo, and let ON CONFLICT sort them out.
                raw.execute("ROLLBACK TO SAVEPOINT swf_append")
            for event, headers, _resolved in examined:  # what the failed COPY did not reach
                batch.append(event)
                encoded_headers.append(headers)
            self._resolve_runs(conn, batch)
            stored_at = self._insert_staged(conn, raw, batch, encoded_headers)
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

    @staticmethod
    def _insert_staged(conn: sa.Connection, raw: Any, batch: list[Event],
                       encoded_headers: list[bytes]) -> dict[str, int]:
        info = conn.connection.info  # lives as long as the DBAPI connection (its session)
        try:
            if not info.get("swf_stage_ready"):
                raw.execute(_PG_CREATE_STAGE)
                info["swf_stage_ready"] = True
            return _copy_insert(raw, batch, encoded_headers)
        except BaseException:
            info.pop("swf_stage_ready", None)  # a rollback may have undone the CREATE
            raise

    def _postgres_names(self) -> tuple[int, str]:
        """The advisory lock serializing appends to this schema's events, and its sequence."""
        with self.engine.connect() as conn:
            schema, sequence = conn.exec_driver_sql(
                "SELECT current_schema(), pg_get_serial_sequence('events', 'position')").one()
        return lock_key(f"append:{schema}.events"), sequence

    # -- read ----------------------------------------------------------------------------------

    def read(self, after: int = 0, until: int | None = None, *, execution_id: str | None = None,
             run_id: int | None = None, msg_types: Iterable[str] | None = None,
             namespace: str | None = None, since: str | datetime | None = None,
             until_time: str | datetime | None = None, valid: bool | None = None,
             limit: int | None = None, chunk_size: int = READ_CHUNK) -> Iterator[Event]:
        """Events in position order with ``data`` normalized by today's catalog."""
        query = _filtered(until, execution_id, run_id, msg_types, namespace, since, until_time,
                          valid)
        return self._stream(query, after, limit, chunk_size, normalize=True)

    def read_raw(self, after: int = 0, until: int | None = None, *,
                 execution_id: str | None = None, run_id: int | None = None,
                 msg_types: Iterable[str] | None = None, namespace: str | None = None,
                 since: str | datetime | None = None, until_time: str | datetime | None = None,
                 valid: bool | None = None, limit: int | None = None,
                 chunk_size: int = READ_CHUNK) -> Iterator[Event]:
        """Like ``read`` but without the catalog: ``data`` is None (export, benchmarks)."""
        query = _filtered(until, execution_id, run_id, msg_types, namespace, since, until_time,
                          valid)
        return self._stream(query, after, limit, chunk_size, normalize=False)

    def _stream(self, query: sa.Select, after: int, limit: int | None, chunk_size: int,
                normalize: bool) -> Iterator[Event]:
        # Keyset pagination, one short transaction per chunk: memory stays bounded and no
        # snapshot (PostgreSQL) or WAL read mark (SQLite) is held while the caller works.
        query = query.where(events.c.position > sa.bindparam("last")).limit(
            sa.bindparam("chunk"))
        last, remaining = after, limit
        while remaining is None or remaining > 0:
            chunk = chunk_size if remaining is None else min(chunk_size, remaining)
            with self.engine.connect() as conn:
                rows = conn.execute(query, {"last": last, "chunk": chunk}).all()
            yield from _decode(rows, normalize)
            if len(rows) < chunk:
                return
            last = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)

    def follow(self, after: int = 0, *, stop: threading.Event | None = None,
               poll_interval: float = 0.05) -> Iterator[Event]:
        """Catch up from ``after``, then poll for new events until ``stop`` is set.

        Reading ``position > last`` never skips an event because positions become visible in
        commit order: on SQLite there is one writer at a time and positions are assigned under
        its lock; on PostgreSQL appends are serialized by an advisory lock (see append).
        """
        stop = stop or threading.Event()
        last = after
        while not stop.is_set():
            for event in self.read(after=last):
                yield event
                last = event.position
                if stop.is_set():
                    return
            stop.wait(poll_interval)


def _out_of_range(run_id: int | None) -> bool:
    return run_id is not None and not _INT64_MIN <= run_id <= _INT64_MAX


def _storable(verdict: Verdict, destination: str) -> str:
    """Make the extracted columns storable on every backend, so no message can fail an append
    (and, redelivered, block a recorder forever): PostgreSQL text cannot hold NUL (JSON can, as
    \\u0000), btree entries are limited to ~2.7 kB, and run_id is a 64-bit column. The body is
    untouched; only what is indexed is adjusted. Returns the destination, cleaned likewise."""
    for name in ("msg_id", "msg_type", "namespace", "execution_id", "sender", "reason"):
        value = getattr(verdict, name)
        if value is None:
            continue
        value = value.replace("\x00", "\ufffd")
        if len(value) > COLUMN_LIMIT and name not in ("msg_id", "reason"):  # ids: see _examine
            value = value[:COLUMN_LIMIT]
        setattr(verdict, name, value)
    if _out_of_range(verdict.run_id):
        verdict.reason = verdict.reason or f"run_id {verdict.run_id} does not fit in 64 bits"
        verdict.run_id = None
        verdict.data = None
    return destination.replace("\x00", "\ufffd")


def _sqlite_rows(batch: list[Event], encoded_headers: list[bytes], start: int
                 ) -> list[tuple[Any, ...]]:
    """Number the batch from ``start + 1`` and lay it out as INSERT parameters."""
    rows = []
    position = start
    for event, headers in zip(batch, encoded_headers, strict=True):
        position += 1
        event.position = position
        rows.append((position, event.event_id, event.recorded_at, event.destination, headers,
                     event.body, event.namespace, event.execution_id, event.run_id,
                     event.msg_type, event.sender, event.sent_at, event.schema_version,
                     event.reject_reason))
    return rows


def _drop(stored_ids: set[str], batch: list[Event], encoded_headers: list[bytes],
          duplicates: list[str]) -> tuple[list[Event], list[bytes]]:
    """The batch without the events already stored, which are reported as duplicates."""
    keep = [i for i, event in enumerate(batch) if event.event_id not in stored_ids]
    duplicates.extend(event.event_id for event in batch if event.event_id in stored_ids)
    return [batch[i] for i in keep], [encoded_headers[i] for i in keep]


def _copy_streaming(conn: sa.Connection, raw: Any, examined: Iterator[tuple[Event, bytes, bool]],
                    positions: list[int], batch: list[Event], encoded_headers: list[bytes],
                    resolve: Callable[[sa.Connection, list[Event], int], None]) -> None:
    """COPY the batch straight into events while examining it, filling ``batch``.

    Examining inside the COPY lets the server store rows while the client examines the next
    ones: two cores at work instead of one after the other. Events whose execution must be
    looked up wait for a second COPY (same transaction, so still one atomic append); their
    positions were fixed in batch order, so the lookup only considers positions before it.
    """
    waiting: list[tuple[Event, bytes]] = []
    with raw.cursor() as cursor:
        with cursor.copy(_PG_COPY_EVENTS) as copy:
            copy.set_types(_PG_EVENT_TYPES)
            write_row = copy.write_row
            for event, headers, resolved in examined:
                event.position = positions[len(batch)]
                batch.append(event)
                encoded_headers.append(headers)
                if resolved:
                    write_row(_pg_row(event, headers))
                else:
                    waiting.append((event, headers))
        if waiting:
            resolve(conn, [event for event, _headers in waiting], positions[0])
            with cursor.copy(_PG_COPY_EVENTS) as copy:
                copy.set_types(_PG_EVENT_TYPES)
                for event, headers in waiting:
                    copy.write_row(_pg_row(event, headers))


def _pg_row(event: Event, headers: bytes) -> tuple[Any, ...]:
    return (event.position, event.event_id, event.recorded_at, event.destination, headers,
            event.body, event.namespace, event.execution_id, event.run_id, event.msg_type,
            event.sender, event.sent_at, event.schema_version, event.reject_reason)


def _copy_insert(raw: Any, batch: list[Event], encoded_headers: list[bytes]) -> dict[str, int]:
    """COPY the batch into the session's staging table, move it into events: {event_id: pos}."""
    with raw.cursor() as cursor:
        with cursor.copy(_PG_COPY) as copy:
            copy.set_types(_PG_STAGE_TYPES)
            write_row = copy.write_row
            for seq, (event, headers) in enumerate(zip(batch, encoded_headers, strict=True)):
                write_row((seq, event.event_id, event.recorded_at, event.destination, headers,
                           event.body, event.namespace, event.execution_id, event.run_id,
                           event.msg_type, event.sender, event.sent_at, event.schema_version,
                           event.reject_reason))
        # ON CONFLICT: a duplicate is skipped and reported, never an error.
        cursor.execute(_PG_INSERT)
        return dict(cursor.fetchall())


def _set_execution(event: Event, execution_id: str) -> None:
    event.execution_id = execution_id
    if event.data is not None and event.data.get("execution_id") is None:
        event.data["execution_id"] = execution_id


def _position(event: Event) -> int:
    return event.position


def _moment(value: str | datetime) -> str:
    return format_time(value if isinstance(value, datetime) else parse_time(value))


def _filtered(until: int | None, execution_id: str | None, run_id: int | None,
              msg_types: Iterable[str] | None, namespace: str | None,
              since: str | datetime | None, until_time: str | datetime | None,
              valid: bool | None) -> sa.Select:
    columns = events.c
    query = sa.select(*(columns[name] for name in _READ_COLUMNS)).order_by(columns.position)
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


def _decode(rows: list[Any], normalize: bool) -> Iterator[Event]:
    loads = orjson.loads
    for row in rows:
        (position, event_id, recorded_at, destination, headers, body, msg_type, namespace,
         execution_id, run_id, sender, sent_at, schema_version, reason) = row
        body = bytes(body)  # PostgreSQL may hand back a memoryview
        headers = {} if headers == _EMPTY_HEADERS else loads(headers)
        data = None
        if normalize and reason is None:
            data = loads(body)
            if needs_normalization(data, schema_version):
                verdict = examine(body, destination, headers=headers)
                data = verdict.data
                if data is None:
                    reason = verdict.reason  # today's catalog rejects what was accepted then
            else:
                complete(data)
            if data is not None:
                if execution_id is not None and data["execution_id"] is None:
                    data["execution_id"] = execution_id
                if data["timestamp"] != sent_at:  # resolved at append (sender zone, broker)
                    data["timestamp"] = sent_at
        yield Event(position, event_id, recorded_at, destination, headers, body, msg_type,
                    namespace, execution_id, run_id, sender, sent_at, schema_version, reason,
                    data)


_SQLITE_INSERT = (f"INSERT INTO events (position, {', '.join(EVENT_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) + 1))}) "
                  f"ON CONFLICT (event_id) DO NOTHING")

# A per-session staging table: COPY is the fastest way in, and INSERT ... SELECT ... ON CONFLICT
# then moves the rows over, skipping any duplicate instead of failing the whole COPY.
_PG_CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS swf_append_stage (
    seq integer, event_id text, recorded_at text, destination text, headers bytea, body bytea,
    namespace text, execution_id text, run_id bigint, msg_type text, sender text, sent_at text,
    schema_version smallint, reject_reason text
) ON COMMIT DELETE ROWS
"""
_PG_STAGE_TYPES = ["int4", "text", "text", "text", "bytea", "bytea", "text", "text", "int8",
                   "text", "text", "text", "int2", "text"]
_PG_COPY = f"COPY swf_append_stage (seq, {', '.join(EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_PG_RELTUPLES = "SELECT reltuples FROM pg_class WHERE oid = 'events'::regclass"
_PG_NEXTVALS = "SELECT array_agg(nextval(%s::regclass)) FROM generate_series(1, %s)"
_PG_EVENT_TYPES = ["int8", *_PG_STAGE_TYPES[1:]]
_PG_COPY_EVENTS = (f"COPY events (position, {', '.join(EVENT_COLUMNS)}) "
                   f"FROM STDIN (FORMAT BINARY)")
_PG_INSERT = (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
              f"SELECT {', '.join(EVENT_COLUMNS)} FROM swf_append_stage ORDER BY seq "
              f"ON CONFLICT (event_id) DO NOTHING RETURNING event_id, position")
