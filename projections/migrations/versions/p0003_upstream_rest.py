"""Upstream's REST calls on the console: what the runner declared of its executions
(declared_status/at/start/end, executed_by, definition_id) and its workflow definitions.

Revision ID: p0003
Revises: p0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = 'p0003'
down_revision = 'p0002'
branch_labels = None
depends_on = None

# A frozen copy of the tables.py changes of this revision.


def upgrade() -> None:
    with op.batch_alter_table('executions') as batch:
        batch.add_column(sa.Column('declared_status', sa.String(length=50), nullable=True))
        batch.add_column(sa.Column('declared_at', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('declared_start', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('declared_end', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('executed_by', sa.String(length=300), nullable=True))
        batch.add_column(sa.Column('definition_id', sa.BigInteger(), nullable=True))
    op.create_table('workflow_definitions',
    sa.Column('workflow_name', sa.String(length=300), nullable=False),
    sa.Column('version', sa.String(length=300), nullable=False),
    sa.Column('definition_id', sa.BigInteger(), nullable=False),
    sa.Column('workflow_type', sa.String(length=300), nullable=True),
    sa.Column('definition', sa.Text(), nullable=True),
    sa.Column('parameter_values', sa.Text(), nullable=True),
    sa.Column('created_by', sa.String(length=300), nullable=True),
    sa.Column('created_at', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('workflow_name', 'version'),
    sqlite_with_rowid=False
    )


def downgrade() -> None:
    op.drop_table('workflow_definitions')
    with op.batch_alter_table('executions') as batch:
        batch.drop_column('definition_id')
        batch.drop_column('executed_by')
        batch.drop_column('declared_end')
        batch.drop_column('declared_start')
        batch.drop_column('declared_at')
        batch.drop_column('declared_status')
