"""Mark the bodies that were in the catalog's canonical shape when appended.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

``canonical`` holds ``catalog.canonical_revision()`` for such a body (NULL: not known, which is
what every row stored before this revision is): a reader of a marked row skips the catalog's
shape check. Adding a nullable column rewrites no row on either backend.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("canonical", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("canonical")
