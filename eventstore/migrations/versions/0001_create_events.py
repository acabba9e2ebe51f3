"""Create the events table.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# A frozen copy of schema.py as of this revision: later edits to schema.py need a new revision.
_REJECTED = sa.text("reject_reason IS NOT NULL")


def _key() -> sa.types.TypeEngine:
    return sa.String().with_variant(sa.String(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  sa.Identity(), primary_key=True),
        sa.Column("event_id", _key(), nullable=False),
        sa.Column("recorded_at", sa.String(), nullable=False),
        sa.Column("destination", sa.String(), nullable=False),
        sa.Column("headers", sa.LargeBinary(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("namespace", sa.String()),
        sa.Column("execution_id", _key()),
        sa.Column("run_id", sa.BigInteger()),
        sa.Column("msg_type", _key()),
        sa.Column("sender", sa.String()),
        sa.Column("sent_at", sa.String()),
        sa.Column("schema_version", sa.SmallInteger(), nullable=False),
        sa.Column("reject_reason", sa.Text()),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
    )
    op.create_index("ix_events_execution", "events", ["execution_id", "position"])
    op.create_index("ix_events_run", "events", ["run_id", "position"])
    op.create_index("ix_events_msg_type", "events", ["msg_type", "position"])
    op.create_index("ix_events_rejected", "events", ["position"],
                    postgresql_where=_REJECTED, sqlite_where=_REJECTED)


def downgrade() -> None:
    op.drop_table("events")
