"""The SQLite recorder: appends under SQLite's one write lock, with dense positions.

BEGIN IMMEDIATE takes the write lock up front: appenders queue on the busy timeout, and
positions (max + 1 under the lock) are assigned in the order appends commit, without gaps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from .envelope import Event
from .schema import EVENT_COLUMNS, STORED_COLUMNS

Examined = tuple[Event, bytes, bool]  # (event, encoded headers, execution resolved in batch)
Resolve = Callable[[sa.Connection, list[Event], "int | None"], None]

_IN_CHUNK = 5000  # bound parameters per IN (...) query, well below SQLite's 32766
_INSERT = (f"INSERT INTO events (position, {', '.join(EVENT_COLUMNS)}) "
           f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) + 1))}) "
           f"ON CONFLICT (event_id) DO NOTHING")
_RESTORE = (f"INSERT INTO events ({', '.join(STORED_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(STORED_COLUMNS))})")


class SqliteRecorder:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def append(self, examined: Iterable[Examined], _size: int, duplicates: list[str],
               resolve: Resolve) -> list[Event]:
        """Store the examined batch in one transaction; returns the new events, positioned."""
        batch: list[Event] = []
        encoded_headers: list[bytes] = []
        unresolved: list[Event] = []
        for event, headers, resolved in examined:
            batch.append(event)
            encoded_headers.append(headers)
            if not resolved:
                unresolved.append(event)
        with self.engine.connect() as base:
            conn = base.execution_options(swf_sqlite_begin="IMMEDIATE")
            with conn.begin():
                resolve(conn, unresolved, None)
                start = conn.exec_driver_sql(
                    "SELECT coalesce(max(position), 0) FROM events").scalar_one()
                # Optimistic: a batch is usually all new, so insert it without looking first.
                # If ON CONFLICT skipped a stored event, undo and insert only the new ones, so
                # positions stay dense.
                conn.exec_driver_sql("SAVEPOINT swf_append")
                inserted = conn.exec_driver_sql(
                    _INSERT, _rows(batch, encoded_headers, start)).rowcount
                if inserted != len(batch):
                    conn.exec_driver_sql("ROLLBACK TO swf_append")
                    stored_ids = _stored_ids(conn, [e.event_id for e in batch])
                    batch, encoded_headers = _drop(stored_ids, batch, encoded_headers,
                                                   duplicates)
                    if batch:
                        conn.exec_driver_sql(_INSERT, _rows(batch, encoded_headers, start))
                conn.exec_driver_sql("RELEASE swf_append")
        return batch

    def restore(self, rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows exactly as stored (``STORED_COLUMNS`` order), positions included."""
        with self.engine.begin() as conn:
            if rows:
                conn.exec_driver_sql(_RESTORE, [tuple(row) for row in rows])


def _rows(batch: list[Event], encoded_headers: list[bytes], start: int) -> list[tuple[Any, ...]]:
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


def _stored_ids(conn: sa.Connection, event_ids: list[str]) -> set[str]:
    stored: set[str] = set()
    for start in range(0, len(event_ids), _IN_CHUNK):
        chunk = tuple(event_ids[start:start + _IN_CHUNK])
        marks = ",".join("?" * len(chunk))
        rows = conn.exec_driver_sql(
            f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk)
        stored.update(row[0] for row in rows)
    return stored


def _drop(stored_ids: set[str], batch: list[Event], encoded_headers: list[bytes],
          duplicates: list[str]) -> tuple[list[Event], list[bytes]]:
    """The batch without the events already stored, which are reported as duplicates."""
    keep = [i for i, event in enumerate(batch) if event.event_id not in stored_ids]
    duplicates.extend(event.event_id for event in batch if event.event_id in stored_ids)
    return [batch[i] for i in keep], [encoded_headers[i] for i in keep]
