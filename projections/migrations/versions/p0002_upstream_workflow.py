"""Upstream runs: failed results without a slice, PanDA workflow tasks and worker requests,
workflow control commands; run_state.unmatched_failures and expects_outcome; executions'
runner (daq_sender, started_at).

Revision ID: p0002
Revises: p0001
Create Date: 2026-07-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = 'p0002'
down_revision = 'p0001'
branch_labels = None
depends_on = None

# A frozen copy of the tables.py changes of this revision.


def upgrade() -> None:
    with op.batch_alter_table('executions') as batch:
        batch.add_column(sa.Column('daq_sender', sa.String(length=300), nullable=True))
        batch.add_column(sa.Column('started_at', sa.String(length=32), nullable=True))
        batch.create_index('ix_executions_runner', ['namespace', 'daq_sender'], unique=False)
    with op.batch_alter_table('run_state') as batch:
        batch.add_column(sa.Column('unmatched_failures', sa.Integer(), nullable=False,
                                   server_default='0'))
        batch.add_column(sa.Column('expects_outcome', sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    op.create_table('failed_results',
    sa.Column('run_number', sa.BigInteger(), nullable=False),
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('time', sa.String(length=32), nullable=False),
    sa.Column('worker', sa.String(length=300), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('panda_task_id', sa.String(length=100), nullable=True),
    sa.Column('panda_id', sa.String(length=100), nullable=True),
    sa.PrimaryKeyConstraint('run_number', 'namespace', 'time', 'worker'),
    sqlite_with_rowid=False
    )
    op.create_table('workflow_tasks',
    sa.Column('run_number', sa.BigInteger(), nullable=False),
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('execution_id', sa.String(length=300), nullable=True),
    sa.Column('state', sa.String(length=20), nullable=True),
    sa.Column('status', sa.String(length=40), nullable=True),
    sa.Column('task_name', sa.String(length=300), nullable=True),
    sa.Column('scope', sa.String(length=300), nullable=True),
    sa.Column('site', sa.String(length=300), nullable=True),
    sa.Column('request_id', sa.String(length=100), nullable=True),
    sa.Column('transform_id', sa.String(length=100), nullable=True),
    sa.Column('workload_id', sa.String(length=100), nullable=True),
    sa.Column('target_workers', sa.Integer(), nullable=True),
    sa.Column('requested_cores', sa.Integer(), nullable=True),
    sa.Column('memory_per_core', sa.Float(), nullable=True),
    sa.Column('adjusted_cores', sa.Integer(), nullable=True),
    sa.Column('announced_at', sa.String(length=32), nullable=True),
    sa.Column('requested_at', sa.String(length=32), nullable=True),
    sa.Column('ids_at', sa.String(length=32), nullable=True),
    sa.Column('adjusted_at', sa.String(length=32), nullable=True),
    sa.Column('status_at', sa.String(length=32), nullable=True),
    sa.Column('stop_requested_at', sa.String(length=32), nullable=True),
    sa.Column('closed_at', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.String(length=32), nullable=True),
    sa.Column('updated_at', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('run_number', 'namespace'),
    sqlite_with_rowid=False
    )
    op.create_table('worker_requests',
    sa.Column('run_number', sa.BigInteger(), nullable=False),
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('time', sa.String(length=32), nullable=False),
    sa.Column('msg_type', sa.String(length=40), nullable=False),
    sa.Column('target_workers', sa.Integer(), nullable=True),
    sa.Column('core_count', sa.Integer(), nullable=True),
    sa.Column('memory_per_core', sa.Float(), nullable=True),
    sa.Column('site', sa.String(length=300), nullable=True),
    sa.Column('status', sa.String(length=40), nullable=True),
    sa.PrimaryKeyConstraint('run_number', 'namespace', 'time', 'msg_type'),
    sqlite_with_rowid=False
    )
    op.create_table('workflow_commands',
    sa.Column('position', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('time', sa.String(length=32), nullable=False),
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('msg_type', sa.String(length=40), nullable=False),
    sa.Column('execution_id', sa.String(length=300), nullable=True),
    sa.Column('workflow_name', sa.String(length=300), nullable=True),
    sa.Column('sender', sa.String(length=300), nullable=True),
    sa.Column('config', sa.String(length=300), nullable=True),
    sa.Column('realtime', sa.Boolean(), nullable=True),
    sa.Column('params', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('position')
    )


def downgrade() -> None:
    op.drop_table('workflow_commands')
    op.drop_table('worker_requests')
    op.drop_table('workflow_tasks')
    op.drop_table('failed_results')
    with op.batch_alter_table('run_state') as batch:
        batch.drop_column('expects_outcome')
        batch.drop_column('unmatched_failures')
    with op.batch_alter_table('executions') as batch:
        batch.drop_index('ix_executions_runner')
        batch.drop_column('started_at')
        batch.drop_column('daq_sender')
