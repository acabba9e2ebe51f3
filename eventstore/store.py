"""The event store: append (batched, idempotent), read, follow, and the named reads.

Public API (other packages rely on exactly this):

    store = EventStore(url=None, *, namespace=None, read_only=False, sender_zone=None)
                                        # url None -> $SWF_DB or sqlite:///swf.db; the schema
                                        # is upgraded on open (read_only: checked, never changed)
    store.engine                                    # the SQLAlchemy Engine (projections share it)
    store.backend                                   # "sqlite" | "postgresql"
    result = store.append(iterable_of_Incoming)     # one transaction; returns AppendResult
    result.events      -> list[Event]   newly stored events, in position order, data filled
    result.duplicates  -> list[str]     event_ids already stored (or repeated in the batch)
    result.rejected    -> int           how many of result.events were stored as rejected
    store.append_rejected(incoming, reason) -> AppendResult
                                        store one message as rejected with ``reason`` (one the
                                        database refused as examined: see ``identity``)
    store.read(after=0, until=None, *, execution_id=None, run_id=None, msg_types=None,
               namespace=None, since=None, until_time=None, valid=None, limit=None)
                                        -> Iterator[Event] in position order, data filled
    store.follow(after=0, *, stop=None, poll_interval=0.05) -> Iterator[Event]
                                        catch up, then yield new events as they commit, never
                                        skipping one; ends when the threading.Event `stop` is set
    store.head() -> int                 highest committed position (0 when empty)
    with store.snapshot() as view: ...  the named reads (``reads.Reads``) on one connection in
                                        one read transaction; ``view.connection`` reads other
                                        tables at the same moment. The store has them too, each
                                        on a connection of its own (stored_ids, open_executions,
                                        count_after, fold_rows, and for the monitor's REST
                                        calls with_id_prefix, latest_namespace, top_run_id,
                                        executions_with_prefix, count_of_type).
    with store.write_group(max_events=20_000, max_seconds=0.5): ...
                                        this thread's appends inside share write transactions
                                        (SQLite; elsewhere each append commits on its own)
    store.restore(rows)                 insert rows exactly as stored (fixtures)
    store.reserve_execution(workflow, user, start_time=None) -> Reservation
                                        the next execution id, run number and start time,
                                        reserved atomically (see ``reservations``)
    store.store_id() -> str | None      the store's own random name (None: read-only and unnamed)
    store.close()

Details:

- ``after``/``until`` select positions ``after < position <= until``. ``since``/``until_time``
  (ISO-8601 text or datetime, both inclusive) compare with the event's time: ``sent_at``, else
  ``recorded_at``. ``valid=True`` reads only accepted events, ``valid=False`` only rejected ones.
- Positions are strictly increasing in commit order; on PostgreSQL they may have gaps (a
  sequence value spent on a duplicate or a rolled-back append is not reused).
- Identity and execution follow ``identity``: an event whose message lacks ``execution_id``
  but has a ``run_id`` gets the execution of the latest earlier event of the same run and
  namespace (in the batch, else in the store); ``data`` carries it too.
- Naive local sender times are read in ``sender_zone`` (an IANA name; default UTC) at append,
  and checked against the broker's ``timestamp`` header; ``sent_at`` keeps the result and
  ``data["timestamp"]`` is always ``sent_at``, so reading never depends on the zone configured
  now.
- ``read`` re-examines each accepted body through the catalog (read-time normalization); should
  today's catalog reject a body accepted earlier, the event comes back with ``data`` None and
  that reason. ``read_raw`` takes the same arguments and skips the catalog (``data`` None).
- Each backend has its recorder (``sqlite.SqliteRecorder``, ``postgres.PostgresRecorder``);
  this class is the facade over it.
- ``EventStore`` is a context manager; errors opening it are ``StoreUnavailable`` (bad URL,
  unreachable database), ``SchemaTooNew`` (database migrated by newer code) and, read-only,
  ``SchemaOutdated`` (no schema or an older one). Writing to a read-only store is
  ``ReadOnlyStore``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

import orjson
import sqlalchemy as sa

from .catalog import resolve_zone
from .collector import quiet_gc
from .engine import DEFAULT_URL, create_engine, lock_key
from .envelope import Event, Incoming, utc_now
from .errors import ReadOnlyStore
from .identity import RunExecutions, as_rejected, as_stored
from .migrate import check_store, upgrade_store
from .postgres import PostgresRecorder
from .reads import (
    FoldRow,
    Limit,
    Reads,
    Rejection,
    Snapshot,
    StepRow,
    decoded,
    filtered,
    latest_execution,
)
from .reservations import Reservation, reserve
from .schema import STORED_COLUMNS, events, store_info
from .sqlite import SqliteRecorder

READ_CHUNK = 5000
GROUP_EVENTS = 20_000  # a write group commits after this many appended events
GROUP_SECONDS = 0.5  # or when its transaction is this old (other writers wait that long at most)
_RUN_CACHE_MAX = 100_000
_EMPTY_HEADERS = b"{}"

__all__ = ["DEFAULT_URL", "STORED_COLUMNS", "AppendResult", "EventStore", "FoldRow", "Limit",
           "Rejection", "Reservation", "Snapshot", "StepRow"]


@dataclass(slots=True)
class AppendResult:
    """What an append stored, what it found stored already, and how many it rejected."""

    events: list[Event] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: int = 0


class EventStore(Reads):
    """An append-only event log in SQLite or PostgreSQL. Thread-safe; see the module docstring."""

    def __init__(self, url: str | None = None, *, namespace: str | None = None,
                 read_only: bool = False, sender_zone: str | tzinfo | None = None) -> None:
        self.namespace = namespace
        # Naive local sender times are read in this zone at append (see the module docstring).
        self.sender_zone = resolve_zone(sender_zone)
        self.read_only = read_only
        self.engine = create_engine(url, read_only=read_only)
        self.backend = self.engine.dialect.name
        super().__init__(self.engine.dialect)
        self._recorder: SqliteRecorder | PostgresRecorder | None = None
        try:
            if read_only:
                check_store(self.engine)
            else:
                upgrade_store(self.engine)
                self._recorder = (PostgresRecorder(self.engine) if self.backend == "postgresql"
                                  else SqliteRecorder(self.engine))
        except BaseException:
            self.engine.dispose()
            raise
        # (namespace, run_id) -> execution_id of the run's latest event appended here.
        self._runs = RunExecutions(limit=_RUN_CACHE_MAX)
        self._runs_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _connection(self) -> AbstractContextManager[sa.Connection]:
        """A connection for one read: inside this thread's write group its own connection, so
        the writer reads what it appended (committed or not yet)."""
        held = self._recorder.held() if isinstance(self._recorder, SqliteRecorder) else None
        return nullcontext(held) if held is not None else self.engine.connect()

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """The named reads on one connection inside one read transaction (REPEATABLE READ on
        PostgreSQL; SQLite's read transaction holds its WAL snapshot from the first read)."""
        with self.engine.connect() as base:
            conn = base
            if self.backend == "postgresql":
                # (A read-only store's sessions are READ ONLY already; asking again here would
                # make SQLAlchemy reset the session to read-write when the connection returns.)
                conn = base.execution_options(isolation_level="REPEATABLE READ",
                                              **({} if self.read_only
                                                 else {"postgresql_readonly": True}))
            with conn.begin():
                yield Snapshot(conn)

    # -- append --------------------------------------------------------------------------------

    def append(self, messages: Iterable[Incoming]) -> AppendResult:
        """Store each new message once, in one transaction; see the module docstring. The
        cyclic collector is paused meanwhile (``collector.quiet_gc``): the batch's parsed
        bodies and events form no cycles, and collections in the middle of the batch would
        promote the events still in use, which later makes full collections rescan the whole
        process: measured, up to 12% of a PostgreSQL append's client CPU in the append
        benchmark, and up to a third where the process held more."""
        recorder = self._writable()
        result = AppendResult()
        messages = messages if isinstance(messages, list) else list(messages)
        if not messages:
            return result
        with quiet_gc():
            stored = recorder.append(self._examined(messages, result.duplicates),
                                     len(messages), result.duplicates, self._resolve_runs)
            # Each run's latest execution in the batch (later events overwrite earlier ones).
            latest = {(event.namespace, event.run_id): event.execution_id for event in stored
                      if event.run_id is not None and event.execution_id is not None}
            with self._runs_lock:
                for (namespace, run_id), execution_id in latest.items():
                    self._runs.note(namespace, run_id, execution_id)
            result.events = stored
            result.rejected = sum(1 for event in stored if event.reject_reason is not None)
        return result

    @contextmanager
    def write_group(self, max_events: int = GROUP_EVENTS, max_seconds: float = GROUP_SECONDS
                    ) -> Iterator[None]:
        """Let this thread's appends inside the block share write transactions, for a writer
        that appends often and little (the embedded runtime: one append per simulated instant,
        where a commit each would cost more than the append).

        Each append is still all or nothing, and the events it returns are positioned and final
        as before; but they are committed (visible to other connections, durable) only when
        ``max_events`` were appended or ``max_seconds`` passed since the transaction began
        (looked at after each append), and when the block ends, also by an exception. Meanwhile
        the write lock is held: other writers wait (busy timeout); after each commit a pause of
        a tenth of ``max_seconds``, in which appends commit on their own, lets them in (see
        ``sqlite._Group``). A crash loses the appends
        since the last commit, never part of one. SQLite only (except ``:memory:``); on
        PostgreSQL each append commits on its own, as without the block. Not for a writer that
        must acknowledge after commit (the recorder).
        """
        recorder = self._writable()
        if not isinstance(recorder, SqliteRecorder):
            yield
            return
        with recorder.group(max_events, max_seconds):
            yield

    def append_rejected(self, message: Incoming, reason: str) -> AppendResult:
        """Store ``message`` as rejected with ``reason``, nothing derived from it but its
        event_id (a repeat is absorbed as usual): for a message whose append failed on what it
        holds, so that it is kept, and a recorder is never stuck retrying it."""
        recorder = self._writable()
        result = AppendResult()
        event = as_rejected(message.destination, message.headers, message.body, utc_now(),
                            reason)
        try:
            headers = orjson.dumps(message.headers) if message.headers else _EMPTY_HEADERS
        except (TypeError, orjson.JSONEncodeError):
            headers = orjson.dumps({"swf-unstorable-headers": repr(message.headers)[:4096]})
        result.events = recorder.append(iter([(event, headers, True)]), 1, result.duplicates,
                                        self._resolve_runs)
        result.rejected = len(result.events)
        return result

    def restore(self, rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows exactly as stored (``STORED_COLUMNS`` order: positions, ids and store
        times included), e.g. a fixture's; on PostgreSQL the position sequence moves past
        them. Raises the database's IntegrityError when a position or event_id is taken."""
        self._writable().restore(rows)

    # -- reservations and the store's own facts -------------------------------------------------

    def reserve_execution(self, workflow: str, user: str, start_time: str | None = None
                          ) -> Reservation:
        """Reserve the next execution id, run number and start time in one write transaction
        under the store's write lock: concurrent callers (threads or processes) never get the
        same id or run number (rules: ``eventstore.reservations``)."""
        self._writable()
        with self._locked("reserve") as conn:
            return reserve(conn, workflow, user, start_time, utc_now())

    def store_id(self) -> str | None:
        """The store's own random name, given on first asking (None: a read-only store that
        was never asked while writable)."""
        query = sa.select(store_info.c.value).where(store_info.c.name == "store_id")
        with self.engine.connect() as conn:
            found = conn.execute(query).scalar()
        if found is not None or self.read_only:
            return found
        with self._locked("store_info") as conn:
            found = conn.execute(query).scalar()
            if found is None:
                found = str(uuid.uuid4())
                conn.execute(store_info.insert().values(name="store_id", value=found))
            return found

    @contextmanager
    def _locked(self, purpose: str) -> Iterator[sa.Connection]:
        """A write transaction that holds the store's lock for ``purpose``: SQLite's write lock
        from its first statement (BEGIN IMMEDIATE), on PostgreSQL an advisory lock per schema.
        Inside this thread's write group, a savepoint of its transaction (which holds the lock:
        a second connection would wait for this thread forever)."""
        held = self._recorder.held() if isinstance(self._recorder, SqliteRecorder) else None
        if held is not None:
            with held.begin_nested():
                yield held
            return
        with self.engine.connect() as base:
            conn = base.execution_options(swf_sqlite_begin="IMMEDIATE") \
                if self.backend == "sqlite" else base
            with conn.begin():
                if self.backend == "postgresql":
                    schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                                 {"key": lock_key(f"{purpose}:{schema}")})
                yield conn

    def _writable(self) -> SqliteRecorder | PostgresRecorder:
        if self._recorder is None:
            raise ReadOnlyStore(f"the store {self.engine.url!r} is open read-only")
        return self._recorder

    def _examined(self, messages: list[Incoming], duplicates: list[str]
                  ) -> Iterator[tuple[Event, bytes, bool]]:
        """Examine the batch, skipping (and reporting) repeats: each new message as an Event
        (position 0), its encoded headers, and False when its execution_id is still to be
        looked up in the store (no earlier event of its run in the batch carried one)."""
        recorded_at = utc_now()  # one store-clock reading per batch: it commits as one
        expected_namespace, zone = self.namespace, self.sender_zone
        seen: set[str] = set()
        batch_runs = RunExecutions()
        # Locals: this loop runs per event and global lookups show in profiles.
        stored_form, resolve, note, dumps, empty = as_stored, batch_runs.resolve, \
            batch_runs.note, orjson.dumps, _EMPTY_HEADERS
        noted: tuple[str | None, int, str] | None = None  # a batch is mostly one run's events
        for message in messages:
            headers = message.headers
            event = stored_form(message.destination, headers, message.body, recorded_at,
                                expected_namespace, zone)
            event_id = event.event_id
            if event_id in seen:
                duplicates.append(event_id)
                continue
            seen.add(event_id)
            encoded = dumps(headers) if headers else empty
            # RunExecutions.resolve, its common cases inlined: no run, or a run and its execution.
            if event.run_id is None:
                yield event, encoded, True
            elif event.execution_id is not None:
                run = (event.namespace, event.run_id, event.execution_id)
                if run != noted:
                    note(*run)
                    noted = run
                yield event, encoded, True
            else:
                yield event, encoded, resolve(event)

    def _resolve_runs(self, conn: sa.Connection, unresolved: list[Event],
                      before: int | None) -> None:
        """Give events lacking execution_id the one of their run's latest event stored before
        this batch (``before``: the batch's first position, if some of it is already written):
        as this store appended it, else as the table holds it."""
        appended = self._runs.get
        runs = RunExecutions(lambda namespace, run_id: appended(namespace, run_id)
                             or latest_execution(conn, namespace, run_id, before))
        for event in unresolved:
            if event.execution_id is None:
                runs.resolve(event)

    # -- read ----------------------------------------------------------------------------------

    def read(self, after: int = 0, until: int | None = None, *, execution_id: str | None = None,
             run_id: int | None = None, msg_types: Iterable[str] | None = None,
             namespace: str | None = None, since: str | datetime | None = None,
             until_time: str | datetime | None = None, valid: bool | None = None,
             limit: int | None = None, chunk_size: int = READ_CHUNK) -> Iterator[Event]:
        """Events in position order with ``data`` normalized by today's catalog."""
        query = filtered(until, execution_id, run_id, msg_types, namespace, since, until_time,
                         valid)
        return self._stream(query, after, limit, chunk_size, normalize=True)

    def read_raw(self, after: int = 0, until: int | None = None, *,
                 execution_id: str | None = None, run_id: int | None = None,
                 msg_types: Iterable[str] | None = None, namespace: str | None = None,
                 since: str | datetime | None = None, until_time: str | datetime | None = None,
                 valid: bool | None = None, limit: int | None = None,
                 chunk_size: int = READ_CHUNK) -> Iterator[Event]:
        """Like ``read`` but without the catalog: ``data`` is None (export, benchmarks)."""
        query = filtered(until, execution_id, run_id, msg_types, namespace, since, until_time,
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
            with self._connection() as conn:
                rows = conn.execute(query, {"last": last, "chunk": chunk}).all()
            yield from decoded(rows, normalize)
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
        its lock; on PostgreSQL appends are serialized by an advisory lock (see postgres.py).
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
