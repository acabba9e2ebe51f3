"""The SQLite recorder: appends under SQLite's one write lock, with dense positions.

BEGIN IMMEDIATE takes the write lock up front: appenders queue on the busy timeout, and
positions (max + 1 under the lock) are assigned in the order appends commit, without gaps.

A write group (``group``, ``EventStore.write_group``) keeps one thread's appends in one write
transaction for a while: each append is still whole (under a savepoint) and a commit only ever
falls between appends, so a crash leaves what some sequence of single-append commits would
have left, only fewer of the latest appends.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from .catalog import canonical_revision
from .envelope import Event
from .schema import APPEND_COLUMNS, STORED_COLUMNS

Examined = tuple[Event, bytes, bool]  # (event, encoded headers, execution resolved in batch)
Resolve = Callable[[sa.Connection, list[Event], "int | None"], None]

_IN_CHUNK = 5000  # bound parameters per IN (...) query, well below SQLite's 32766
_INSERT = (f"INSERT INTO events (position, {', '.join(APPEND_COLUMNS)}) "
           f"VALUES ({', '.join('?' * (len(APPEND_COLUMNS) + 1))}) "
           f"ON CONFLICT (event_id) DO NOTHING")
_RESTORE = (f"INSERT INTO events ({', '.join(STORED_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(STORED_COLUMNS))})")


class SqliteRecorder:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._local = threading.local()  # .group: this thread's open write group, if any

    def append(self, examined: Iterable[Examined], _size: int, duplicates: list[str],
               resolve: Resolve) -> list[Event]:
        """Store the examined batch in one transaction (in this thread's write group, if one is
        open: see ``group``); returns the new events, positioned."""
        group: _Group | None = getattr(self._local, "group", None)
        if group is not None:
            if group.pausing():  # just committed: this append commits on its own
                with group.connection.begin():
                    return _append(group.connection, examined, duplicates, resolve)
            group.begin()
            stored = _append(group.connection, examined, duplicates, resolve)
            group.appended(len(stored))
            return stored
        with self.engine.connect() as base:
            conn = base.execution_options(swf_sqlite_begin="IMMEDIATE")
            with conn.begin():
                return _append(conn, examined, duplicates, resolve)

    def held(self) -> sa.Connection | None:
        """The connection of this thread's write group while its transaction is open."""
        group: _Group | None = getattr(self._local, "group", None)
        return None if group is None or not group.open else group.connection

    @contextmanager
    def group(self, max_events: int, max_seconds: float) -> Iterator[None]:
        """Appends of this thread inside the block share write transactions (see
        ``EventStore.write_group``). A StaticPool engine (``:memory:``) has one connection for
        everyone: no group there, each append commits as usual."""
        if isinstance(self.engine.pool, StaticPool) or getattr(self._local, "group", None):
            yield
            return
        with self.engine.connect() as base:
            group = _Group(base.execution_options(swf_sqlite_begin="IMMEDIATE"), max_events,
                           max_seconds)
            self._local.group = group
            try:
                yield
            finally:
                self._local.group = None
                group.close()

    def restore(self, rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows exactly as stored (``STORED_COLUMNS`` order), positions included."""
        with self.engine.begin() as conn:
            if rows:
                conn.exec_driver_sql(_RESTORE, [tuple(row) for row in rows])


class _Group:
    """One connection's run of write transactions: BEGIN IMMEDIATE at an append, COMMIT once
    ``max_events`` were appended or ``max_seconds`` passed since the transaction began (checked
    after each append, so a transaction always ends between whole appends).

    After each commit the group pauses for a tenth of ``max_seconds``: appends commit on their
    own, as without a group, and the write lock is free between them. SQLite's lock is not a
    queue: a writer waiting in another process (``swf record``, ``swf stop``, another run)
    retries on its busy timeout and would hardly ever hit the instant between a COMMIT and the
    next BEGIN; in the pauses it finds the lock free as often as it did before groups.
    """

    def __init__(self, connection: sa.Connection, max_events: int, max_seconds: float) -> None:
        self.connection = connection
        self.max_events, self.max_seconds = max_events, max_seconds
        self._transaction: sa.RootTransaction | None = None
        self._events = 0
        self._began = 0.0
        self._resume_at = 0.0  # monotonic time the pause after the last commit ends

    @property
    def open(self) -> bool:
        return self._transaction is not None

    def pausing(self) -> bool:
        return self._transaction is None and time.monotonic() < self._resume_at

    def begin(self) -> None:
        if self._transaction is None:
            self._transaction = self.connection.begin()
            self._events, self._began = 0, time.monotonic()

    def appended(self, count: int) -> None:
        self._events += count
        if (self._events >= self.max_events
                or time.monotonic() - self._began >= self.max_seconds):
            self.commit()
            self._resume_at = time.monotonic() + self.max_seconds / 10

    def commit(self) -> None:
        if self._transaction is not None:
            transaction, self._transaction = self._transaction, None
            transaction.commit()

    def close(self) -> None:
        """Commit what was appended (every append in it is whole: a failed one was undone)."""
        self.commit()


def _append(conn: sa.Connection, examined: Iterable[Examined], duplicates: list[str],
            resolve: Resolve) -> list[Event]:
    """The batch appended inside the connection's write transaction, under a savepoint: a
    failure undoes this append only (earlier appends of a write group stay)."""
    batch: list[Event] = []
    encoded_headers: list[bytes] = []
    unresolved: list[Event] = []
    for event, headers, resolved in examined:
        batch.append(event)
        encoded_headers.append(headers)
        if not resolved:
            unresolved.append(event)
    raw = conn.connection.driver_connection  # the statements below skip SQLAlchemy's layer
    assert raw is not None
    cursor = raw.cursor()
    cursor.execute("SAVEPOINT swf_append")
    try:
        if unresolved:
            resolve(conn, unresolved, None)
        start = cursor.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
        # Optimistic: a batch is usually all new, so insert it without looking first. If ON
        # CONFLICT skipped a stored event, undo and insert only the new ones, so positions stay
        # dense.
        cursor.executemany(_INSERT, _rows(batch, encoded_headers, start))
        if cursor.rowcount != len(batch):
            cursor.execute("ROLLBACK TO swf_append")
            stored_ids = _stored_ids(cursor, [e.event_id for e in batch])
            batch, encoded_headers = _drop(stored_ids, batch, encoded_headers, duplicates)
            if batch:
                cursor.executemany(_INSERT, _rows(batch, encoded_headers, start))
    except BaseException:
        cursor.execute("ROLLBACK TO swf_append")
        cursor.execute("RELEASE swf_append")
        raise
    cursor.execute("RELEASE swf_append")
    return batch


def _rows(batch: list[Event], encoded_headers: list[bytes], start: int) -> list[tuple[Any, ...]]:
    """Number the batch from ``start + 1`` and lay it out as INSERT parameters."""
    rows = []
    position = start
    mark = canonical_revision()
    for event, headers in zip(batch, encoded_headers, strict=True):
        position += 1
        event.position = position
        rows.append((position, event.event_id, event.recorded_at, event.destination, headers,
                     event.body, event.namespace, event.execution_id, event.run_id,
                     event.msg_type, event.sender, event.sent_at, event.schema_version,
                     event.reject_reason, mark if event.canonical else None))
    return rows


def _stored_ids(cursor: sqlite3.Cursor, event_ids: list[str]) -> set[str]:
    stored: set[str] = set()
    for start in range(0, len(event_ids), _IN_CHUNK):
        chunk = tuple(event_ids[start:start + _IN_CHUNK])
        marks = ",".join("?" * len(chunk))
        rows = cursor.execute(
            f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk)
        stored.update(row[0] for row in rows)
    return stored


def _drop(stored_ids: set[str], batch: list[Event], encoded_headers: list[bytes],
          duplicates: list[str]) -> tuple[list[Event], list[bytes]]:
    """The batch without the events already stored, which are reported as duplicates."""
    keep = [i for i, event in enumerate(batch) if event.event_id not in stored_ids]
    duplicates.extend(event.event_id for event in batch if event.event_id in stored_ids)
    return [batch[i] for i in keep], [encoded_headers[i] for i in keep]
