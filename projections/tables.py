"""The projection tables (SQLAlchemy Core), DESIGN section 5. Migrations create them.

Every row of a run carries its run's key, ``(run_number, namespace)``, first in its primary key:
loading a run's rows for an incremental catch-up is then one index range per table, and a
message of one namespace can never touch a row of another. ``namespace`` is ``''`` when a
message carried none (a primary key column cannot be NULL on PostgreSQL); the query API shows
it as None again. Times are ISO-8601 UTC text in the store's one format, so text order is time
order.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# Tables are created WITHOUT ROWID on SQLite (``sqlite_with_rowid=False``): clustered on their
# primary key (no separate rowid b-tree plus key index); a rebuild's inserts, in key order, then
# touch one b-tree instead of two.

TIME = sa.String(32)
NAME = sa.String(300)
RUN = sa.BigInteger()


def _run_key() -> list[sa.Column]:
    return [sa.Column("run_number", RUN, primary_key=True),
            sa.Column("namespace", NAME, primary_key=True)]


executions = sa.Table(
    "executions", metadata,
    sa.Column("namespace", NAME, primary_key=True),
    sa.Column("execution_id", NAME, primary_key=True),
    sa.Column("workflow", NAME),
    sa.Column("parameters", sa.Text()),  # orjson text of run_imminent.workflow_params
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("start_time", TIME),
    sa.Column("end_time", TIME),
    sa.Column("runs", sa.Text(), nullable=False),  # orjson text: sorted run numbers
    sa.Column("run_count", sa.Integer(), nullable=False),
    sa.Column("stf_count", sa.Integer(), nullable=False),
    sa.Column("stf_samples_received", sa.Integer(), nullable=False),
    sa.Column("slices_created", sa.Integer(), nullable=False),
    sa.Column("slices_completed", sa.Integer(), nullable=False),
    sa.Column("slices_failed", sa.Integer(), nullable=False),
    sa.Column("updated_at", TIME),
    # An upstream execution: its runner (the sender of its run_imminent) and its earliest
    # run_imminent; a runner runs one execution at a time (derive.execution_status).
    sa.Column("daq_sender", NAME),
    sa.Column("started_at", TIME),
    # What upstream's runner declared over REST (its latest status, when, start and end), who
    # ran it and its workflow definition: a declared end outranks the derived status.
    sa.Column("declared_status", sa.String(50)),
    sa.Column("declared_at", TIME),
    sa.Column("declared_start", TIME),
    sa.Column("declared_end", TIME),
    sa.Column("executed_by", NAME),
    sa.Column("definition_id", sa.BigInteger()),
    sa.Index("ix_executions_runner", "namespace", "daq_sender"),
    sqlite_with_rowid=False,
)

run_state = sa.Table(
    "run_state", metadata,
    *_run_key(),
    sa.Column("execution_id", NAME),
    sa.Column("phase", sa.String(20)),
    sa.Column("state", NAME),
    sa.Column("substate", NAME),
    sa.Column("state_at", TIME),  # time of the message state/substate came from
    sa.Column("total_stf_files", sa.Integer()),
    sa.Column("stf_count", sa.Integer(), nullable=False),
    sa.Column("stf_samples_received", sa.Integer(), nullable=False),
    sa.Column("slices_created", sa.Integer(), nullable=False),
    sa.Column("slices_queued", sa.Integer(), nullable=False),
    sa.Column("slices_processing", sa.Integer(), nullable=False),
    sa.Column("slices_completed", sa.Integer(), nullable=False),
    sa.Column("slices_failed", sa.Integer(), nullable=False),
    sa.Column("slice_retries", sa.Integer(), nullable=False),
    sa.Column("outcome", sa.String(20)),  # run_processed.status
    sa.Column("outcome_error", sa.Text()),
    sa.Column("processed_at", TIME),
    sa.Column("state_changed_at", TIME),
    sa.Column("created_at", TIME),
    sa.Column("updated_at", TIME),
    # Failed worker results that name no slice (failed_results rows of the run).
    sa.Column("unmatched_failures", sa.Integer(), nullable=False, server_default="0"),
    # Its run_imminent came from our DAQ, which promises run_processed; an upstream run's
    # outcome is derived from its own facts instead.
    sa.Column("expects_outcome", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Index("ix_run_state_execution", "execution_id"),
    sqlite_with_rowid=False,
)

stf_files = sa.Table(
    "stf_files", metadata,
    *_run_key(),
    sa.Column("filename", NAME, primary_key=True),
    sa.Column("sequence", sa.Integer()),
    sa.Column("size_bytes", sa.BigInteger()),
    sa.Column("checksum", sa.String(100)),
    sa.Column("file_url", sa.Text()),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("generated_at", TIME),  # first stf_gen
    sa.Column("ready_at", TIME),  # first stf_ready
    sa.Column("created_at", TIME),
    sa.Column("updated_at", TIME),
    sqlite_with_rowid=False,
)

tf_samples = sa.Table(
    "tf_samples", metadata,
    *_run_key(),
    sa.Column("tf_filename", NAME, primary_key=True),
    sa.Column("stf_filename", NAME),
    sa.Column("tf_first", sa.BigInteger()),
    sa.Column("tf_last", sa.BigInteger()),
    sa.Column("tf_count", sa.Integer()),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", TIME),
    sa.Column("updated_at", TIME),
    sqlite_with_rowid=False,
)


def _slice_columns() -> list[sa.Column]:
    return [*_run_key(),
            sa.Column("tf_filename", NAME, primary_key=True),
            sa.Column("slice_id", sa.Integer(), primary_key=True, autoincrement=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("retries", sa.Integer(), nullable=False),
            sa.Column("worker", NAME),
            sa.Column("error", sa.Text()),
            sa.Column("created_at", TIME),
            sa.Column("updated_at", TIME)]


tf_slices = sa.Table(
    "tf_slices", metadata,
    *_slice_columns(),
    sa.Column("stf_filename", NAME),
    sa.Column("start", sa.BigInteger()),
    sa.Column("end", sa.BigInteger()),
    sa.Column("tf_count", sa.Integer()),
    sa.Column("final", sa.Boolean(), nullable=False),  # failed for good (retries exhausted)
    sqlite_with_rowid=False,
)

# slice_results for a slice no `slice` message announced (yet): kept, reported, and folded into
# the slice the moment it appears.
unmatched_results = sa.Table("unmatched_results", metadata, *_slice_columns(),
                             sqlite_with_rowid=False)

datasets = sa.Table(
    "datasets", metadata,
    *_run_key(),
    sa.Column("scope", NAME, primary_key=True),
    sa.Column("name", NAME, primary_key=True),
    sa.Column("execution_id", NAME),
    sa.Column("state", sa.String(20)),
    sa.Column("file_count", sa.Integer(), nullable=False),
    sa.Column("size_bytes", sa.BigInteger(), nullable=False),
    sa.Column("error", sa.Text()),
    sa.Column("error_at", TIME),
    sa.Column("opened_at", TIME),
    sa.Column("closed_at", TIME),
    sa.Column("created_at", TIME),
    sa.Column("updated_at", TIME),
    sqlite_with_rowid=False,
)

dataset_files = sa.Table(
    "dataset_files", metadata,
    *_run_key(),
    sa.Column("scope", NAME, primary_key=True),
    sa.Column("dataset", NAME, primary_key=True),
    sa.Column("name", NAME, primary_key=True),
    sa.Column("size_bytes", sa.BigInteger()),
    sa.Column("checksum", sa.String(100)),
    sa.Column("attached_at", TIME),
    sqlite_with_rowid=False,
)

panda_tasks = sa.Table(
    "panda_tasks", metadata,
    *_run_key(),
    # task_id, or 0 for a submission that got no task id (it failed): one row per run then.
    sa.Column("task_key", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("task_id", sa.BigInteger()),
    sa.Column("execution_id", NAME),
    sa.Column("input_dataset", NAME),
    sa.Column("status", sa.String(40)),
    sa.Column("error", sa.Text()),
    sa.Column("submitted_at", TIME),
    sa.Column("updated_at", TIME),
    sqlite_with_rowid=False,
)

# Failed worker results without a slice identity (the transformer's failure carries no copy of
# the slice): kept per run, counted (run_state.unmatched_failures), their errors reported.
failed_results = sa.Table(
    "failed_results", metadata,
    *_run_key(),
    sa.Column("time", TIME, primary_key=True),
    sa.Column("worker", NAME, primary_key=True),  # '' when the result names none
    sa.Column("error", sa.Text()),
    sa.Column("panda_task_id", sa.String(100)),
    sa.Column("panda_id", sa.String(100)),
    sqlite_with_rowid=False,
)

# The PanDA/iDDS workflow task of a run, as upstream's fast processing agent, PanDA workers
# transceiver and iDDS describe it (run_imminent_worker, create/created/adjust(ed)/close(d)
# workflow task, stop_transformer). Ids are text: iDDS may send numbers or strings.
workflow_tasks = sa.Table(
    "workflow_tasks", metadata,
    *_run_key(),
    sa.Column("execution_id", NAME),
    sa.Column("state", sa.String(20)),  # announced < requested < created < closing < closed
    sa.Column("status", sa.String(40)),  # iDDS's own word (adjusted_worker, closed_...)
    sa.Column("task_name", NAME),
    sa.Column("scope", NAME),
    sa.Column("site", NAME),
    sa.Column("request_id", sa.String(100)),
    sa.Column("transform_id", sa.String(100)),
    sa.Column("workload_id", sa.String(100)),
    sa.Column("target_workers", sa.Integer()),
    sa.Column("requested_cores", sa.Integer()),
    sa.Column("memory_per_core", sa.Float()),
    sa.Column("adjusted_cores", sa.Integer()),
    sa.Column("announced_at", TIME),  # earliest run_imminent_worker: target_workers
    sa.Column("requested_at", TIME),  # earliest create_workflow_task: the request
    sa.Column("ids_at", TIME),  # earliest message with the iDDS ids
    sa.Column("adjusted_at", TIME),  # latest adjust_worker/adjusted_worker
    sa.Column("status_at", TIME),
    sa.Column("stop_requested_at", TIME),  # earliest stop_transformer
    sa.Column("closed_at", TIME),  # earliest closed_workflow_task
    sa.Column("created_at", TIME),
    sa.Column("updated_at", TIME),
    sqlite_with_rowid=False,
)

# Every worker request and answer of a run, in time order (one row per message).
worker_requests = sa.Table(
    "worker_requests", metadata,
    *_run_key(),
    sa.Column("time", TIME, primary_key=True),
    sa.Column("msg_type", sa.String(40), primary_key=True),
    sa.Column("target_workers", sa.Integer()),
    sa.Column("core_count", sa.Integer()),
    sa.Column("memory_per_core", sa.Float()),
    sa.Column("site", NAME),
    sa.Column("status", sa.String(40)),
    sqlite_with_rowid=False,
)

# Workflow control messages (run_workflow, stop_workflow, status_request), as sent.
workflow_commands = sa.Table(
    "workflow_commands", metadata,
    sa.Column("position", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("time", TIME, nullable=False),
    sa.Column("namespace", NAME, nullable=False),
    sa.Column("msg_type", sa.String(40), nullable=False),
    sa.Column("execution_id", NAME),  # the execution it names, if any
    sa.Column("workflow_name", NAME),
    sa.Column("sender", NAME),
    sa.Column("config", NAME),
    sa.Column("realtime", sa.Boolean()),
    sa.Column("params", sa.Text()),  # orjson text
)

# Workflow definitions upstream's runner registers (POST /api/workflow-definitions/): one per
# (name, version), immutable; its id is derived from the pair.
workflow_definitions = sa.Table(
    "workflow_definitions", metadata,
    sa.Column("workflow_name", NAME, primary_key=True),
    sa.Column("version", NAME, primary_key=True),
    sa.Column("definition_id", sa.BigInteger(), nullable=False),
    sa.Column("workflow_type", NAME),
    sa.Column("definition", sa.Text()),
    sa.Column("parameter_values", sa.Text()),  # orjson text
    sa.Column("created_by", NAME),
    sa.Column("created_at", TIME),
    sqlite_with_rowid=False,
)

agents = sa.Table(
    "agents", metadata,
    sa.Column("namespace", NAME, primary_key=True),
    sa.Column("name", NAME, primary_key=True),
    sa.Column("agent_type", NAME),
    sa.Column("status", sa.String(40)),
    sa.Column("operational_state", sa.String(40)),
    sa.Column("pid", sa.Integer()),
    sa.Column("hostname", NAME),
    sa.Column("first_seen", TIME),
    sa.Column("last_heartbeat", TIME),
    sqlite_with_rowid=False,
)

logs = sa.Table(
    "logs", metadata,
    sa.Column("position", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("time", TIME, nullable=False),
    sa.Column("level", sa.String(20)),
    sa.Column("agent", NAME),
    sa.Column("module", NAME),
    sa.Column("message", sa.Text()),
    sa.Column("namespace", NAME, nullable=False),
    sa.Column("execution_id", NAME),
    sa.Column("run_number", RUN),
    sa.Index("ix_logs_execution", "execution_id"),
)

projection_checkpoints = sa.Table(
    "projection_checkpoints", metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("position", sa.BigInteger(), nullable=False),
    sqlite_with_rowid=False,
)

# Projection name -> the tables it owns, in write order. Checkpoints are kept per name.
PROJECTIONS: dict[str, tuple[sa.Table, ...]] = {
    "executions": (executions,),
    "run_state": (run_state,),
    "stf_files": (stf_files,),
    "tf_samples": (tf_samples,),
    "tf_slices": (tf_slices, unmatched_results, failed_results),
    "datasets": (datasets, dataset_files),
    "panda_tasks": (panda_tasks,),
    "workflow_tasks": (workflow_tasks, worker_requests),
    "commands": (workflow_commands,),
    "workflow_definitions": (workflow_definitions,),
    "agents": (agents,),
    "logs": (logs,),
}
