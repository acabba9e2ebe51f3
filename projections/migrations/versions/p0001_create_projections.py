"""Create the projection tables and their checkpoints.

Revision ID: p0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = 'p0001'
down_revision = None
branch_labels = None
depends_on = None

# A frozen copy of tables.py as of this revision: later edits to tables.py need a new revision.


def upgrade() -> None:
    op.create_table('agents',
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('agent_type', sa.String(length=300), nullable=True),
    sa.Column('status', sa.String(length=40), nullable=True),
    sa.Column('operational_state', sa.String(length=40), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('hostname', sa.String(length=300), nullable=True),
    sa.Column('first_seen', sa.String(length=32), nullable=True),
    sa.Column('last_heartbeat', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('namespace', 'name'),
    sqlite_with_rowid=False
    )
    op.create_table('dataset_files',
    sa.Column('run_number', sa.BigInteger(), nullable=False),
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('scope', sa.String(length=300), nullable=False),
    sa.Column('dataset', sa.String(length=300), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('checksum', sa.String(length=100), nullable=True),
    sa.Column('attached_at', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('run_number', 'namespace', 'scope', 'dataset', 'name'),
    sqlite_with_rowid=False
    )
    op.create_table('datasets',
    sa.Column('run_number', sa.BigInteger(), nullable=False),
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('scope', sa.String(length=300), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('execution_id', sa.String(length=300), nullable=True),
    sa.Column('state', sa.String(length=20), nullable=True),
    sa.Column('file_count', sa.Integer(), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('error_at', sa.String(length=32), nullable=True),
    sa.Column('opened_at', sa.String(length=32), nullable=True),
    sa.Column('closed_at', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.String(length=32), nullable=True),
    sa.Column('updated_at', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('run_number', 'namespace', 'scope', 'name'),
    sqlite_with_rowid=False
    )
    op.create_table('executions',
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('execution_id', sa.String(length=300), nullable=False),
    sa.Column('workflow', sa.String(length=300), nullable=True),
    sa.Column('parameters', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('start_time', sa.String(length=32), nullable=True),
    sa.Column('end_time', sa.String(length=32), nullable=True),
    sa.Column('runs', sa.Text(), nullable=False),
    sa.Column('run_count', sa.Integer(), nullable=False),
    sa.Column('stf_count', sa.Integer(), nullable=False),
    sa.Column('stf_samples_received', sa.Integer(), nullable=False),
    sa.Column('slices_created', sa.Integer(), nullable=False),
    sa.Column('slices_completed', sa.Integer(), nullable=False),
    sa.Column('slices_failed', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('namespace', 'execution_id'),
    sqlite_with_rowid=False
    )
    op.create_table('logs',
    sa.Column('position', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('time', sa.String(length=32), nullable=False),
    sa.Column('level', sa.String(length=20), nullable=True),
    sa.Column('agent', sa.String(length=300), nullable=True),
    sa.Column('module', sa.String(length=300), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('execution_id', sa.String(length=300), nullable=True),
    sa.Column('run_number', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('position')
    )
    with op.batch_alter_table('logs', schema=None) as batch_op:
        batch_op.create_index('ix_logs_execution', ['execution_id'], unique=False)

    op.create_table('panda_tasks',
    sa.Column('run_number', sa.BigInteger(), nullable=False),
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('task_key', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('task_id', sa.BigInteger(), nullable=True),
    sa.Column('execution_id', sa.String(length=300), nullable=True),
    sa.Column('input_dataset', sa.String(length=300), nullable=True),
    sa.Column('status', sa.String(length=40), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('submitted_at', sa.String(length=32), nullable=True),
    sa.Column('updated_at', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('run_number', 'namespace', 'task_key'),
    sqlite_with_rowid=False
    )
    op.create_table('projection_checkpoints',
    sa.Column('name', sa.String(length=50), nullable=False),
    sa.Column('position', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name'),
    sqlite_with_rowid=False
    )
    op.create_table('run_state',
    sa.Column('run_number', sa.BigInteger(), nullable=False),
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('execution_id', sa.String(length=300), nullable=True),
    sa.Column('phase', sa.String(length=20), nullable=True),
    sa.Column('state', sa.String(length=300), nullable=True),
    sa.Column('substate', sa.String(length=300), nullable=True),
    sa.Column('state_at', sa.String(length=32), nullable=True),
    sa.Column('total_stf_files', sa.Integer(), nullable=True),
    sa.Column('stf_count', sa.Integer(), nullable=False),
    sa.Column('stf_samples_received', sa.Integer(), nullable=False),
    sa.Column('slices_created', sa.Integer(), nullable=False),
    sa.Column('slices_queued', sa.Integer(), nullable=False),
    sa.Column('slices_processing', sa.Integer(), nullable=False),
    sa.Column('slices_completed', sa.Integer(), nullable=False),
    sa.Column('slices_failed', sa.Integer(), nullable=False),
    sa.Column('slice_retries', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=True),
    sa.Column('outcome_error', sa.Text(), nullable=True),
    sa.Column('processed_at', sa.String(length=32), nullable=True),
    sa.Column('state_changed_at', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.String(length=32), nullable=True),
    sa.Column('updated_at', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('run_number', 'namespace'),
    sqlite_with_rowid=False
    )
    with op.batch_alter_table('run_state', schema=None) as batch_op:
        batch_op.create_index('ix_run_state_execution', ['execution_id'], unique=False)

    op.create_table('stf_files',
    sa.Column('run_number', sa.BigInteger(), nullable=False),
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('filename', sa.String(length=300), nullable=False),
    sa.Column('sequence', sa.Integer(), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('checksum', sa.String(length=100), nullable=True),
    sa.Column('file_url', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('generated_at', sa.String(length=32), nullable=True),
    sa.Column('ready_at', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.String(length=32), nullable=True),
    sa.Column('updated_at', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('run_number', 'namespace', 'filename'),
    sqlite_with_rowid=False
    )
    op.create_table('tf_samples',
    sa.Column('run_number', sa.BigInteger(), nullable=False),
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('tf_filename', sa.String(length=300), nullable=False),
    sa.Column('stf_filename', sa.String(length=300), nullable=True),
    sa.Column('tf_first', sa.BigInteger(), nullable=True),
    sa.Column('tf_last', sa.BigInteger(), nullable=True),
    sa.Column('tf_count', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.String(length=32), nullable=True),
    sa.Column('updated_at', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('run_number', 'namespace', 'tf_filename'),
    sqlite_with_rowid=False
    )
    op.create_table('tf_slices',
    sa.Column('run_number', sa.BigInteger(), nullable=False),
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('tf_filename', sa.String(length=300), nullable=False),
    sa.Column('slice_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('retries', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=300), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.String(length=32), nullable=True),
    sa.Column('updated_at', sa.String(length=32), nullable=True),
    sa.Column('stf_filename', sa.String(length=300), nullable=True),
    sa.Column('start', sa.BigInteger(), nullable=True),
    sa.Column('end', sa.BigInteger(), nullable=True),
    sa.Column('tf_count', sa.Integer(), nullable=True),
    sa.Column('final', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('run_number', 'namespace', 'tf_filename', 'slice_id'),
    sqlite_with_rowid=False
    )
    op.create_table('unmatched_results',
    sa.Column('run_number', sa.BigInteger(), nullable=False),
    sa.Column('namespace', sa.String(length=300), nullable=False),
    sa.Column('tf_filename', sa.String(length=300), nullable=False),
    sa.Column('slice_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('retries', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=300), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.String(length=32), nullable=True),
    sa.Column('updated_at', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('run_number', 'namespace', 'tf_filename', 'slice_id'),
    sqlite_with_rowid=False
    )


def downgrade() -> None:
    op.drop_table('unmatched_results')
    op.drop_table('tf_slices')
    op.drop_table('tf_samples')
    op.drop_table('stf_files')
    with op.batch_alter_table('run_state', schema=None) as batch_op:
        batch_op.drop_index('ix_run_state_execution')

    op.drop_table('run_state')
    op.drop_table('projection_checkpoints')
    op.drop_table('panda_tasks')
    with op.batch_alter_table('logs', schema=None) as batch_op:
        batch_op.drop_index('ix_logs_execution')

    op.drop_table('logs')
    op.drop_table('executions')
    op.drop_table('datasets')
    op.drop_table('dataset_files')
    op.drop_table('agents')
