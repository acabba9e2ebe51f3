"""Execution ids, run numbers and start times, reserved atomically (``reserve_execution``).

The rule (the same store contents give the same answer, so an embedded run stays a pure function
of its store):

- execution id ``{workflow}-{user}-{n:04d}``: n is one more than the executions with that prefix
  (in the log or reserved), moved on past any id already taken (an imported one, say);
- run number: one more than the highest in the log or reserved, else ``FIRST_RUN_NUMBER``: a run
  number the log has seen (an import, an upstream run) is never handed out again;
- start time: the one asked for, else the minute after the next whole minute after the latest
  event or reserved start (``EMPTY_STORE_START`` for an empty store).

``reserve`` runs inside the caller's write transaction, which holds the store's write lock
(SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so concurrent reservations are
serialized and each sees the ones before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, timedelta

import sqlalchemy as sa

from .envelope import format_time, parse_time
from .schema import events, reservations

EMPTY_STORE_START = "2026-01-01T00:00:00.000000Z"
FIRST_RUN_NUMBER = 100001


@dataclass(frozen=True, slots=True)
class Reservation:
    """An execution's reserved id, run number and start time."""

    execution_id: str
    run_number: int
    start_time: str


def reserve(conn: sa.Connection, workflow: str, user: str, start_time: str | None,
            now: str) -> Reservation:
    """Reserve the next execution id, run number and start time (see the module docstring)."""
    prefix = f"{workflow}-{user}-"
    sequence = max(_executions_in_log(conn, prefix), _highest_reserved(conn, prefix)) + 1
    while _taken(conn, f"{prefix}{sequence:04d}"):
        sequence += 1
    execution_id = f"{prefix}{sequence:04d}"
    top_run = _max_of(conn, events.c.run_id, reservations.c.run_number)
    run_number = FIRST_RUN_NUMBER if top_run is None else int(top_run) + 1
    if start_time is not None:
        start = format_time(parse_time(start_time))
    else:
        latest = conn.execute(sa.select(sa.func.max(events.c.sent_at))).scalar() \
            or conn.execute(sa.select(sa.func.max(events.c.recorded_at))).scalar()
        reserved = conn.execute(sa.select(sa.func.max(reservations.c.start_time))).scalar()
        latest = max(filter(None, (latest, reserved)), default=None)
        start = EMPTY_STORE_START if latest is None else _next_minute(latest)
    conn.execute(reservations.insert().values(
        execution_id=execution_id, prefix=prefix, sequence=sequence, run_number=run_number,
        start_time=start, reserved_at=now))
    return Reservation(execution_id, run_number, start)


def _executions_in_log(conn: sa.Connection, prefix: str) -> int:
    """Distinct execution ids in the log that start with ``prefix`` (an index range: ids compare
    bytewise, so the ids with the prefix are those in [prefix, prefix with its last character
    incremented))."""
    column = events.c.execution_id
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return conn.execute(sa.select(sa.func.count(sa.distinct(column)))
                        .where(column >= prefix, column < upper)).scalar() or 0


def _highest_reserved(conn: sa.Connection, prefix: str) -> int:
    return conn.execute(sa.select(sa.func.max(reservations.c.sequence))
                        .where(reservations.c.prefix == prefix)).scalar() or 0


def _taken(conn: sa.Connection, execution_id: str) -> bool:
    in_log = conn.execute(sa.select(events.c.position).where(
        events.c.execution_id == execution_id).limit(1)).first()
    return in_log is not None or conn.execute(sa.select(reservations.c.sequence).where(
        reservations.c.execution_id == execution_id)).first() is not None


def _max_of(conn: sa.Connection, *columns: sa.Column) -> int | None:
    values = [conn.execute(sa.select(sa.func.max(column))).scalar() for column in columns]
    return max((int(value) for value in values if value is not None), default=None)


def _next_minute(latest: str) -> str:
    moment = parse_time(latest)
    floor = moment.replace(second=0, microsecond=0)
    ceiling = floor if floor == moment else floor + timedelta(minutes=1)
    return format_time((ceiling + timedelta(minutes=1)).astimezone(UTC))
