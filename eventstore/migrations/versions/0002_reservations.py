"""Reservations of execution ids and run numbers; the store's own facts (its id).

Revision ID: 0002
Revises: 0001
Create Date: 2026-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _key() -> sa.types.TypeEngine:
    return sa.String().with_variant(sa.String(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "reservations",
        sa.Column("execution_id", _key(), primary_key=True),
        sa.Column("prefix", _key(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("run_number", sa.BigInteger(), nullable=False),
        sa.Column("start_time", sa.String(), nullable=False),
        sa.Column("reserved_at", sa.String(), nullable=False),
        sa.UniqueConstraint("run_number", name="uq_reservations_run_number"),
    )
    op.create_index("ix_reservations_prefix", "reservations", ["prefix", "sequence"])
    op.create_table(
        "store_info",
        sa.Column("name", _key(), primary_key=True),
        sa.Column("value", sa.String(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("store_info")
    op.drop_table("reservations")
