"""``swf query ...``: audit queries over the projections (the lead's store_commands adds
``messages`` and ``rejected`` to the same group)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from eventstore.store import EventStore
from projections import queries
from projections.projector import Projector
from swf.commands.group import db_option, main
from swf.commands.options import time_window_options
from swf.output import echo_rows, echo_summary

# What the readable table shows; --json prints every column (queries.COLUMNS).
DISPLAY = {
    "executions": ("execution_id", "workflow", "namespace", "status", "start_time", "end_time",
                   "runs", "stf_count", "stf_samples_received", "slices_created",
                   "slices_completed", "slices_failed"),
    "runs": ("run_number", "execution_id", "phase", "state", "substate", "stf_count",
             "stf_samples_received", "slices_created", "slices_queued", "slices_processing",
             "slices_completed", "slices_failed", "state_changed_at"),
    "stf_files": ("run_number", "filename", "sequence", "size_bytes", "checksum", "status",
                  "updated_at"),
    "tf_samples": ("run_number", "tf_filename", "stf_filename", "tf_first", "tf_last",
                   "tf_count", "status", "updated_at"),
    "slices": ("run_number", "tf_filename", "slice_id", "start", "end", "status", "retries",
               "worker", "updated_at"),
    "datasets": ("run_number", "scope", "name", "state", "file_count", "size_bytes", "error"),
    "tasks": ("run_number", "task_id", "status", "input_dataset", "error", "updated_at"),
    "agents": ("name", "agent_type", "namespace", "status", "operational_state", "hostname",
               "pid", "last_heartbeat"),
    "logs": ("time", "level", "agent", "module", "execution_id", "run_number", "message"),
    "workflow_tasks": ("run_number", "execution_id", "state", "status", "request_id",
                       "transform_id", "workload_id", "target_workers", "requested_cores",
                       "adjusted_cores", "site", "updated_at"),
    "worker_requests": ("run_number", "time", "msg_type", "target_workers", "core_count",
                        "memory_per_core", "site", "status"),
    "failures": ("run_number", "time", "worker", "panda_id", "error"),
    "commands": ("time", "msg_type", "namespace", "workflow_name", "execution_id", "sender"),
}


@main.group()
def query() -> None:
    """Audit queries: workflow state from the projections, messages from the log."""


@contextmanager
def projected(db_url: str | None, catch_up: bool) -> Iterator[EventStore]:
    """The store, with the projections brought up to date first unless told not to."""
    with EventStore(db_url) as store:
        projector = Projector(store)
        if catch_up:
            projector.catch_up()
        yield store


def _common(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed((
        db_option,
        click.option("--namespace", help="Only this namespace."),
        time_window_options,
        click.option("--limit", type=click.IntRange(min=0), help="At most this many rows."),
        click.option("--json", "as_json", is_flag=True,
                     help="A JSON array of row objects keyed by column name."),
        click.option("--no-catch-up", "stale", is_flag=True,
                     help="Read the tables as they are, without applying new events first."),
    )):
        function = option(function)
    return function


def _run_filters(function: Callable[..., Any]) -> Callable[..., Any]:
    function = click.option("--run", "run", type=int, help="Only this run number.")(function)
    return click.option("--execution-id", help="Only this execution.")(function)


def _table_command(name: str, cli_name: str, status_help: str | None, summary: str) -> None:
    def command(db_url: str | None, stale: bool, as_json: bool, **filters: Any) -> None:
        with projected(db_url, not stale) as store:
            rows = queries.query(store, name, **filters)
        echo_rows(rows, queries.COLUMNS[name] if as_json else DISPLAY[name], as_json)

    command = _common(command)
    if status_help is not None:
        command = click.option("--status", help=status_help)(command)
    query.command(cli_name, help=f"{summary} Time filters apply to "
                                 f"{queries.TIME_COLUMNS[name]}.")(_run_filters(command))


_table_command("runs", "runs", "Only runs in this phase (imminent/physics/standby/completed).",
               "One row per run: phase, state and the STF/sample/slice counters.")
_table_command("stf_files", "stf-files",
               "Only files with this status (registered/processing/processed/failed).",
               "STF files.")
_table_command("tf_samples", "tf-samples",
               "Only samples with this status (registered/processing/processed/failed).",
               "TF samples (fastmon).")
_table_command("slices", "slices",
               "Only slices with this status (queued/processing/completed/failed).",
               "TF slices with their status, retries and worker.")
_table_command("datasets", "datasets", "Only datasets in this state (open/closed).",
               "DDM datasets, one per run.")
_table_command("tasks", "tasks", "Only tasks with this status.", "PanDA tasks.")
_table_command("workflow_tasks", "workflow-tasks",
               "Only tasks in this state (announced/requested/created/closing/closed).",
               "The PanDA/iDDS workflow task of each run (upstream's PanDA workers): its ids, "
               "requested and adjusted worker cores, open/closed state.")
_table_command("worker_requests", "worker-requests",
               "Only this message type (run_imminent_worker/create_workflow_task/"
               "adjust_worker/adjusted_worker).",
               "Every worker request and iDDS answer of each run, in time order.")
_table_command("failures", "failures", None,
               "Failed worker results that name no slice (counted per run as "
               "unmatched_failures), with their error text.")


@query.command("commands")
@click.option("--execution-id", help="Only commands naming this execution.")
@click.option("--status", help="Only this type (run_workflow/stop_workflow/status_request).")
@_common
def query_commands(db_url: str | None, stale: bool, as_json: bool, **filters: Any) -> None:
    """Workflow control messages as sent (with --limit: the latest). Time filters apply to
    the message time. `swf query execution ID` shows the ones about an execution."""
    with projected(db_url, not stale) as store:
        rows = queries.commands(store, **filters)
    echo_rows(rows, queries.COLUMNS["commands"] if as_json else DISPLAY["commands"], as_json)


@query.command("executions")
@click.option("--execution-id", help="Only this execution.")
@click.option("--status", help="Only executions with this status "
                               "(running/completed/failed/terminated).")
@_common
def query_executions(db_url: str | None, stale: bool, as_json: bool, **filters: Any) -> None:
    """Workflow executions (with --limit: the latest). Time filters apply to start_time."""
    with projected(db_url, not stale) as store:
        rows = queries.executions(store, **filters)
    echo_rows(rows, queries.COLUMNS["executions"] if as_json else DISPLAY["executions"],
              as_json)


@query.command("agents")
@click.option("--status", help="Only agents with this status (EXITED: no heartbeat for 3 min).")
@click.option("--now", help="Judge staleness at this ISO-8601 time (default: now).")
@_common
def query_agents(db_url: str | None, stale: bool, as_json: bool, **filters: Any) -> None:
    """Agents by their heartbeats. Time filters apply to last_heartbeat."""
    with projected(db_url, not stale) as store:
        rows = queries.agents(store, **filters)
    echo_rows(rows, queries.COLUMNS["agents"] if as_json else DISPLAY["agents"], as_json)


@query.command("logs")
@_run_filters
@click.option("--level", help="Only records of this level (e.g. ERROR).")
@_common
def query_logs(db_url: str | None, stale: bool, as_json: bool, **filters: Any) -> None:
    """Agent log records (with --limit: the latest). Time filters apply to the record time."""
    with projected(db_url, not stale) as store:
        rows = queries.logs(store, **filters)
    echo_rows(rows, queries.COLUMNS["logs"] if as_json else DISPLAY["logs"], as_json)


@query.command("execution")
@click.argument("execution_id")
@db_option
@click.option("--namespace", help="The execution's namespace (when its id is in several).")
@click.option("--now", help="For a running execution: its duration up to this ISO-8601 time.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--no-catch-up", "stale", is_flag=True,
              help="Read the tables as they are, without applying new events first.")
def query_execution(execution_id: str, db_url: str | None, namespace: str | None,
                    now: str | None, as_json: bool, stale: bool) -> None:
    """One execution's summary: status, phase, counters, datasets, tasks, errors, duration."""
    with projected(db_url, not stale) as store:
        try:
            summary = queries.execution_summary(store, execution_id, namespace=namespace,
                                                now=now)
        except queries.AmbiguousExecution as problem:
            raise click.ClickException(str(problem)) from None
    if summary is None:
        raise click.ClickException(f"no execution {execution_id!r}"
                                   + (f" in namespace {namespace!r}" if namespace else ""))
    echo_summary(summary, as_json)
