"""Reading the log for the fold, fast.

``EventStore.read`` re-examines every body through the catalog (about 10 us an event), which
alone would cap a rebuild far below its 250k events/s target. The projector reads the columns it
needs straight from the events table instead: rejected rows are skipped without decoding, and a
body already in the catalog's normalized shape (what our own senders write;
``catalog.needs_normalization`` decides) is only parsed. Anything else - an upstream ``content``
wrapper, an aliased field, a checksum to normalize, an older schema version - goes through
``catalog.examine`` exactly as ``read`` would. The
equivalence is tested against ``EventStore.read`` for every message form.

Few columns are read: each text column costs a string object per row. msg_type, namespace and
sender come from the body (the catalog takes them from there too); execution_id is a column
because the store may have resolved it from the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import sqlalchemy as sa

from eventstore.catalog import examine, needs_normalization
from eventstore.schema import events

from .fold import Fold, Item

CHUNK = 5000  # rows per query of a streaming fold: small enough to stay in the CPU caches
_SQL = ("SELECT position, run_id, schema_version, coalesce(sent_at, recorded_at), "
        "execution_id, body FROM events WHERE position > {0} AND position <= {0} "
        "AND reject_reason IS NULL ORDER BY position LIMIT {0}")
Row = tuple[int, int | None, int, str, str | None, bytes]


def head(conn: sa.Connection) -> int:
    return conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.position), 0))
                        ).scalar_one()


def fetch(conn: sa.Connection, after: int, until: int, limit: int) -> tuple[list[Row], int]:
    """Up to ``limit`` valid rows in (after, until], and the position they cover: the last
    row's, or ``until`` when the range is exhausted."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    rows = conn.exec_driver_sql(_SQL.format(mark), (after, until, limit)).cursor.fetchall()
    return rows, rows[-1][0] if len(rows) == limit else until


def _examined(conn: sa.Connection, position: int, body: bytes
              ) -> tuple[str, str, str | None, dict[str, Any]] | None:
    destination, headers = conn.execute(sa.select(events.c.destination, events.c.headers)
                                        .where(events.c.position == position)).one()
    verdict = examine(body, destination, headers=orjson.loads(headers) if headers else None)
    if verdict.data is None or verdict.msg_type is None:
        return None  # today's catalog rejects what was accepted then: skip it
    return verdict.msg_type, verdict.namespace or "", verdict.sender, verdict.data


def _decoded(conn: sa.Connection, rows: list[Row]) -> Iterator[Item]:
    """Each row as a fold item; rows the catalog rejects today are skipped."""
    loads = orjson.loads
    for position, run, version, time, execution_id, body in rows:
        if type(body) is not bytes:
            body = bytes(body)  # PostgreSQL may hand back a memoryview
        data = loads(body)
        if needs_normalization(data, version):
            found = _examined(conn, position, body)
            if found is None:
                continue
            msg_type, ns, sender, data = found
        else:
            msg_type, ns, sender = data["msg_type"], data.get("namespace") or "", data.get(
                "sender") or None
        yield position, msg_type, ns, execution_id, run, sender, time, data


def decode(conn: sa.Connection, rows: list[Row]) -> list[Item]:
    """Rows -> fold items (kept as a list: catch-up looks at a batch before folding it)."""
    return list(_decoded(conn, rows))


def fold_rows(fold: Fold, conn: sa.Connection, rows: list[Row]) -> int:
    """Decode and fold in one pass (a rebuild's hot loop: no intermediate list); returns how
    many events were folded. Same decisions as ``decode`` + ``Fold.feed``."""
    handlers = fold.handlers
    count = 0
    for position, msg_type, ns, execution_id, run, sender, time, data in _decoded(conn, rows):
        handler = handlers.get(msg_type)
        if handler is not None and run is not None:
            handler(ns, execution_id, run, time, data)
        else:
            fold.runless(position, msg_type, ns, execution_id, run, sender, time, data)
        count += 1
    if rows and rows[-1][0] > fold.position:
        fold.position = rows[-1][0]
    return count
