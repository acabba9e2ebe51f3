"""The SQL schema of the event store (SQLAlchemy Core). Migrations create it; see migrations/."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

# On SQLite the position must be the rowid alias (`INTEGER PRIMARY KEY`): append order is then
# position order and the column costs no extra index. No AUTOINCREMENT: rows are never deleted,
# so rowids are never reused, and AUTOINCREMENT would add a write to sqlite_sequence per append.
POSITION_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Text columns have no length limit: their values come from arbitrary messages, and an append
# must never fail on one (the store keeps indexed values short, see identity._storable).
COLUMN_LIMIT = 512  # characters kept in an indexed text column (bodies keep everything)


def _key() -> sa.types.TypeEngine:
    """An identifier column: compared bytewise on PostgreSQL (COLLATE "C"), so its index does not
    pay for linguistic collation; SQLite compares bytewise already (BINARY)."""
    return sa.String().with_variant(sa.String(collation="C"), "postgresql")


events = sa.Table(
    "events",
    metadata,
    sa.Column("position", POSITION_TYPE, sa.Identity(), primary_key=True),
    sa.Column("event_id", _key(), nullable=False),
    sa.Column("recorded_at", sa.String(), nullable=False),
    sa.Column("destination", sa.String(), nullable=False),
    sa.Column("headers", sa.LargeBinary(), nullable=False),  # orjson bytes of the headers dict
    sa.Column("body", sa.LargeBinary(), nullable=False),  # the message as received, untouched
    sa.Column("namespace", sa.String()),
    sa.Column("execution_id", _key()),
    sa.Column("run_id", sa.BigInteger()),
    sa.Column("msg_type", _key()),
    sa.Column("sender", sa.String()),
    sa.Column("sent_at", sa.String()),
    sa.Column("schema_version", sa.SmallInteger(), nullable=False),
    sa.Column("reject_reason", sa.Text()),  # NULL means valid
    # catalog.canonical_revision() when the body was canonical at append (migration 0003)
    sa.Column("canonical", sa.Integer()),
    sa.UniqueConstraint("event_id", name="uq_events_event_id"),
    sa.Index("ix_events_execution", "execution_id", "position"),
    sa.Index("ix_events_run", "run_id", "position"),
    sa.Index("ix_events_msg_type", "msg_type", "position"),
    # Partial (WHERE reject_reason IS NOT NULL, see migration 0001): rejected rows are rare, so
    # this index stays tiny and costs valid appends nothing. The condition is left to the
    # migration: a ``postgresql_where`` here would import SQLAlchemy's PostgreSQL dialect into
    # every process that touches the schema (a tenth of `swf run`'s start-up on SQLite).
    sa.Index("ix_events_rejected", "position"),
)
# Migration 0001's order of the indexes: SQLite's planner, without statistics, breaks ties
# between equally good indexes by their order (a replay's lookup of the runs' announcements
# went through the run's 1M events instead of the few run_imminent rows in another order).
_INDEX_ORDER = ("ix_events_execution", "ix_events_run", "ix_events_msg_type",
                "ix_events_rejected")


@sa.event.listens_for(events, "after_create")
def _indexes_as_migrated(table: sa.Table, connection: sa.Connection, **_kw: Any) -> None:
    """A fresh store's tables are created from these declarations (``migrate.upgrade``), each
    table's indexes in no set order: the events table's are made again as migration 0001 makes
    them, in its order, the rejected rows' partial (a test compares the two schemas)."""
    declared = {str(index.name): index for index in table.indexes}
    for name in _INDEX_ORDER:
        connection.execute(sa.schema.DropIndex(declared[name]))
    for name in _INDEX_ORDER[:-1]:
        connection.execute(sa.schema.CreateIndex(declared[name]))
    connection.exec_driver_sql(
        "CREATE INDEX ix_events_rejected ON events (position) WHERE reject_reason IS NOT NULL")

# Execution ids and run numbers handed out by ``EventStore.reserve_execution``: one row per
# reservation, written under the store's write lock, so two concurrent runs never get the same
# id or run number (the events table alone cannot say what was handed out but not yet used).
reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("execution_id", _key(), primary_key=True),
    sa.Column("prefix", _key(), nullable=False),  # "{workflow}-{user}-"
    sa.Column("sequence", sa.Integer(), nullable=False),  # the id's number after the prefix
    sa.Column("run_number", sa.BigInteger(), nullable=False),
    sa.Column("start_time", sa.String(), nullable=False),
    sa.Column("reserved_at", sa.String(), nullable=False),  # store clock
    sa.UniqueConstraint("run_number", name="uq_reservations_run_number"),
    sa.Index("ix_reservations_prefix", "prefix", "sequence"),
)

# Facts about the store itself (``store_id``: a random name given once, so files kept for a
# store elsewhere, e.g. its data directory, can tell which store they belong to).
store_info = sa.Table(
    "store_info",
    metadata,
    sa.Column("name", _key(), primary_key=True),
    sa.Column("value", sa.String(), nullable=False),
)

# Column order used by the append paths (everything but the position).
EVENT_COLUMNS = ("event_id", "recorded_at", "destination", "headers", "body", "namespace",
                 "execution_id", "run_id", "msg_type", "sender", "sent_at", "schema_version",
                 "reject_reason")
# Every stored column, in the table's order (an event exported or restored exactly as stored),
# but the canonical mark: a cache of the catalog's verdict, not part of what was received.
STORED_COLUMNS = ("position", *EVENT_COLUMNS)
# What the append paths write: the event and its mark.
APPEND_COLUMNS = (*EVENT_COLUMNS, "canonical")

