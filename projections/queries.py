"""Audit queries over the projection tables: rows as dicts keyed by column name, and the
execution summary operators ask for most.

Filters are all optional and combine with AND. ``since``/``until`` (ISO-8601 text or datetime,
inclusive) apply to each table's main time column (``TIME_COLUMNS``). Rows come in a stable
order; with ``limit``, executions and logs give the latest ones (still oldest first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from eventstore.envelope import format_time, parse_time
from eventstore.store import EventStore

from . import tables as t

STALE_AFTER = timedelta(minutes=3)  # an agent silent this long has EXITED
ERROR_LEVELS = ("ERROR", "CRITICAL")
MAX_ERRORS_PER_KIND = 50  # the summary stays readable when a run goes badly wrong
When = str | datetime | None


class AmbiguousExecution(LookupError):
    """The execution id exists in several namespaces and none was given."""


@dataclass(frozen=True, slots=True)
class _Spec:
    """How a table is queried: its time and status columns and its order."""

    table: sa.Table
    time: str  # the column --since/--until compare with
    status: str | None  # the column --status compares with
    order: tuple[str, ...]
    latest: bool = False  # with a limit, keep the newest rows


SPECS = {
    "executions": _Spec(t.executions, "start_time", "status", ("start_time", "execution_id"),
                        latest=True),
    "runs": _Spec(t.run_state, "created_at", "phase", ("run_number", "namespace")),
    "stf_files": _Spec(t.stf_files, "created_at", "status",
                       ("run_number", "namespace", "sequence", "filename")),
    "tf_samples": _Spec(t.tf_samples, "created_at", "status",
                        ("run_number", "namespace", "tf_filename")),
    "slices": _Spec(t.tf_slices, "created_at", "status",
                    ("run_number", "namespace", "tf_filename", "slice_id")),
    "unmatched_results": _Spec(t.unmatched_results, "created_at", "status",
                               ("run_number", "namespace", "tf_filename", "slice_id")),
    "datasets": _Spec(t.datasets, "created_at", "state", ("run_number", "namespace", "scope",
                                                          "name")),
    "tasks": _Spec(t.panda_tasks, "updated_at", "status", ("run_number", "namespace",
                                                          "task_key")),
    "agents": _Spec(t.agents, "last_heartbeat", None, ("namespace", "name")),
    "logs": _Spec(t.logs, "time", "level", ("position",), latest=True),
}
TIME_COLUMNS = {name: spec.time for name, spec in SPECS.items()}
# Columns a query returns (all of the table's but internal bookkeeping), in display order.
COLUMNS = {name: tuple(str(c.name) for c in spec.table.columns if c.name != "task_key")
           for name, spec in SPECS.items()}


def _moment(value: When) -> str | None:
    if value is None:
        return None
    return format_time(value if isinstance(value, datetime) else parse_time(value))


def _row(row: sa.Row[Any]) -> dict[str, Any]:
    values = {str(key): value for key, value in row._mapping.items()}  # not quoted_name
    if values.get("namespace") == "":
        values["namespace"] = None
    for name in ("parameters", "runs"):
        if isinstance(values.get(name), str):
            values[name] = orjson.loads(values[name])
    if "final" in values:
        values["final"] = bool(values["final"])
    values.pop("task_key", None)
    return values


def query(store: EventStore, name: str, *, execution_id: str | None = None,
          run: int | None = None, namespace: str | None = None, status: str | None = None,
          since: When = None, until: When = None, limit: int | None = None
          ) -> list[dict[str, Any]]:
    """Rows of one projection (``SPECS`` names), filtered."""
    spec = SPECS[name]
    table = spec.table
    columns = table.c
    statement = sa.select(table)
    if execution_id is not None:
        if "execution_id" in columns:
            statement = statement.where(columns.execution_id == execution_id)
        else:  # rows of the execution's runs
            runs = sa.select(t.run_state.c.run_number, t.run_state.c.namespace).where(
                t.run_state.c.execution_id == execution_id)
            statement = statement.where(
                sa.tuple_(columns.run_number, columns.namespace).in_(runs))
    if run is not None:
        if "run_number" not in columns:
            raise ValueError(f"{name} rows have no run")
        statement = statement.where(columns.run_number == run)
    if namespace is not None:
        statement = statement.where(columns.namespace == namespace)
    if status is not None and spec.status is not None:
        statement = statement.where(columns[spec.status] == status)
    if since is not None:
        statement = statement.where(columns[spec.time] >= _moment(since))
    if until is not None:
        statement = statement.where(columns[spec.time] <= _moment(until))
    order = [columns[c] for c in spec.order]
    if limit is not None and spec.latest:
        statement = statement.order_by(*(c.desc() for c in order)).limit(limit)
    else:
        statement = statement.order_by(*order).limit(limit)
    with store.engine.connect() as conn:
        rows = [_row(row) for row in conn.execute(statement)]
    if limit is not None and spec.latest:
        rows.reverse()
    return rows


def executions(store: EventStore, **filters: Any) -> list[dict[str, Any]]:
    return query(store, "executions", **filters)


def runs(store: EventStore, **filters: Any) -> list[dict[str, Any]]:
    """run_state rows; ``status`` filters on the phase."""
    return query(store, "runs", **filters)


def stf_files(store: EventStore, **filters: Any) -> list[dict[str, Any]]:
    return query(store, "stf_files", **filters)


def tf_samples(store: EventStore, **filters: Any) -> list[dict[str, Any]]:
    return query(store, "tf_samples", **filters)


def slices(store: EventStore, **filters: Any) -> list[dict[str, Any]]:
    return query(store, "slices", **filters)


def unmatched_results(store: EventStore, **filters: Any) -> list[dict[str, Any]]:
    return query(store, "unmatched_results", **filters)


def datasets(store: EventStore, **filters: Any) -> list[dict[str, Any]]:
    """Datasets; ``status`` filters on the state (open/closed)."""
    return query(store, "datasets", **filters)


def dataset_files(store: EventStore, scope: str, dataset: str, *,
                  namespace: str | None = None) -> list[dict[str, Any]]:
    statement = (sa.select(t.dataset_files)
                 .where(t.dataset_files.c.scope == scope, t.dataset_files.c.dataset == dataset)
                 .order_by(t.dataset_files.c.name))
    if namespace is not None:
        statement = statement.where(t.dataset_files.c.namespace == namespace)
    with store.engine.connect() as conn:
        return [_row(row) for row in conn.execute(statement)]


def tasks(store: EventStore, **filters: Any) -> list[dict[str, Any]]:
    return query(store, "tasks", **filters)


def logs(store: EventStore, *, level: str | None = None, **filters: Any) -> list[dict[str, Any]]:
    """agent_log records; ``level`` (or ``status``) filters on the level."""
    if level is not None:
        filters["status"] = level.upper()
    return query(store, "logs", **filters)


def agents(store: EventStore, *, namespace: str | None = None, status: str | None = None,
           since: When = None, until: When = None, limit: int | None = None,
           now: When = None) -> list[dict[str, Any]]:
    """Agents with their status at ``now`` (default: the wall clock): EXITED when the last
    heartbeat is more than 3 minutes old, else the status the agent last reported."""
    rows = query(store, "agents", namespace=namespace, since=since, until=until)
    moment = parse_time(_moment(now) or format_time(datetime.now(UTC)))
    cutoff = format_time(moment - STALE_AFTER)
    for row in rows:
        beat = row["last_heartbeat"]
        if beat is None or beat < cutoff:
            row["status"] = "EXITED"
    if status is not None:
        rows = [row for row in rows if (row["status"] or "").upper() == status.upper()]
    return rows[:limit] if limit is not None else rows


def alive(row: dict[str, Any]) -> bool:
    """Whether an ``agents`` row (as ``agents`` gives it) is of a live agent: heard of within
    the stale window, and its last word was not EXITED."""
    return row["status"] != "EXITED" and row["operational_state"] != "EXITED"


# -- the execution summary -----------------------------------------------------------------

SUMMARY_COUNTERS = ("stf_count", "stf_samples_received", "slices_created", "slices_queued",
                    "slices_processing", "slices_completed", "slices_failed", "slice_retries",
                    "unmatched_failures")


def execution_summary(store: EventStore, execution_id: str, *, namespace: str | None = None,
                      now: When = None) -> dict[str, Any] | None:
    """One execution at a glance; None if unknown. Raises AmbiguousExecution when the id exists
    in several namespaces and ``namespace`` is not given."""
    with store.snapshot() as view:
        conn = view.connection
        found = conn.execute(sa.select(t.executions).where(
            t.executions.c.execution_id == execution_id)).all()
        if namespace is not None:
            found = [row for row in found if row.namespace == namespace]
        if not found:
            return None
        if len(found) > 1:
            spaces = ", ".join(sorted(repr(row.namespace) for row in found))
            raise AmbiguousExecution(f"execution {execution_id} exists in namespaces {spaces}; "
                                     f"pass a namespace")
        execution = found[0]
        ns = execution.namespace
        mine = sa.and_  # rows of this execution in its namespace
        runs = conn.execute(sa.select(t.run_state).where(mine(
            t.run_state.c.namespace == ns, t.run_state.c.execution_id == execution_id))
            .order_by(t.run_state.c.run_number)).all()
        run_keys = [(row.run_number, ns) for row in runs]
        sets = conn.execute(sa.select(t.datasets).where(mine(
            t.datasets.c.namespace == ns, t.datasets.c.execution_id == execution_id))
            .order_by(t.datasets.c.run_number, t.datasets.c.scope, t.datasets.c.name)).all()
        jobs = conn.execute(sa.select(t.panda_tasks).where(mine(
            t.panda_tasks.c.namespace == ns, t.panda_tasks.c.execution_id == execution_id))
            .order_by(t.panda_tasks.c.run_number, t.panda_tasks.c.task_key)).all()
        unmatched = conn.execute(sa.select(t.unmatched_results).where(
            sa.tuple_(t.unmatched_results.c.run_number, t.unmatched_results.c.namespace)
            .in_(run_keys)).order_by(*t.unmatched_results.primary_key.columns)).all() \
            if run_keys else []
        rejected = view.rejected(execution_id)
        bad_logs = conn.execute(sa.select(t.logs).where(mine(
            t.logs.c.namespace == ns, t.logs.c.execution_id == execution_id,
            t.logs.c.level.in_(ERROR_LEVELS))).order_by(t.logs.c.position)).all()
        failures = conn.execute(sa.select(t.failed_results).where(
            sa.tuple_(t.failed_results.c.run_number, t.failed_results.c.namespace)
            .in_(run_keys)).order_by(*t.failed_results.primary_key.columns)).all() \
            if run_keys else []
        orders = _commands_concerning(conn, execution)
    totals = {name: sum(getattr(row, name) for row in runs) for name in SUMMARY_COUNTERS}
    latest = max(runs, key=lambda row: (row.created_at or "", row.run_number), default=None)
    end_time = execution.end_time
    finish = end_time
    if finish is None and execution.status == "running":  # still going: its age so far
        finish = _moment(now) or format_time(datetime.now(UTC))
    duration = None
    if execution.start_time is not None and finish is not None:
        duration = round((parse_time(finish) - parse_time(execution.start_time))
                         .total_seconds(), 3)
    return {
        "execution_id": execution.execution_id,
        "workflow": execution.workflow,
        "namespace": execution.namespace or None,
        "status": execution.status,
        "phase": latest.phase if latest is not None else None,
        "runs": [row.run_number for row in runs],
        **totals,
        "datasets": [{"run_number": row.run_number, "scope": row.scope, "name": row.name,
                      "state": row.state, "file_count": row.file_count,
                      "size_bytes": row.size_bytes} for row in sets],
        "tasks": [{"run_number": row.run_number, "task_id": row.task_id, "status": row.status}
                  for row in jobs],
        "commands": orders,
        "errors": _errors(runs, sets, jobs, unmatched, rejected, bad_logs, failures),
        "start_time": execution.start_time,
        "end_time": end_time,
        "duration_s": duration,
    }


def _errors(runs: Sequence[Any], sets: Sequence[Any], jobs: Sequence[Any],
            unmatched: Sequence[Any], rejected: Sequence[Any], bad_logs: Sequence[Any],
            failures: Sequence[Any] = ()) -> list[str]:
    kinds = [
        [f"rejected message at position {row.position} ({row.msg_type or 'unknown type'}): "
         f"{row.reject_reason}" for row in rejected],
        [f"run {row.run_number} {row.outcome}: {row.outcome_error}" for row in runs
         if row.outcome_error],
        [f"dataset {row.scope}:{row.name} (run {row.run_number}): {row.error}" for row in sets
         if row.error],
        [f"panda task {row.task_id if row.task_id is not None else '(not submitted)'} "
         f"(run {row.run_number}) {row.status}: {row.error}" for row in jobs if row.error],
        [f"slice_result for unknown slice {row.tf_filename or '(no tf_filename)'}#"
         f"{row.slice_id} (run {row.run_number}): {row.status}" for row in unmatched],
        [f"{row.time} {row.level} {row.agent or '-'}: {row.message}" for row in bad_logs],
        [f"failed worker result naming no slice (run {row.run_number}, worker "
         f"{row.worker or '-'}, {row.time}): {row.error or '(no error text)'}"
         for row in failures],
    ]
    errors: list[str] = []
    for kind in kinds:
        errors.extend(kind[:MAX_ERRORS_PER_KIND])
        if len(kind) > MAX_ERRORS_PER_KIND:
            errors.append(f"... and {len(kind) - MAX_ERRORS_PER_KIND} more like the above")
    return errors


# -- upstream runs: PanDA workflow tasks, worker requests, unmatched failures, control --------

SPECS.update({
    "workflow_tasks": _Spec(t.workflow_tasks, "created_at", "state",
                            ("run_number", "namespace")),
    "worker_requests": _Spec(t.worker_requests, "time", "msg_type",
                             ("run_number", "namespace", "time", "msg_type")),
    "failures": _Spec(t.failed_results, "time", None,
                      ("run_number", "namespace", "time", "worker")),
    "commands": _Spec(t.workflow_commands, "time", "msg_type", ("position",), latest=True),
})
TIME_COLUMNS.update({name: SPECS[name].time for name in
                     ("workflow_tasks", "worker_requests", "failures", "commands")})
COLUMNS.update({name: tuple(str(c.name) for c in SPECS[name].table.columns) for name in
                ("workflow_tasks", "worker_requests", "failures", "commands")})


def workflow_tasks(store: EventStore, **filters: Any) -> list[dict[str, Any]]:
    """Each run's PanDA/iDDS workflow task: ids, requested and adjusted worker cores, state
    (announced/requested/created/closing/closed); ``status`` filters on the state."""
    return query(store, "workflow_tasks", **filters)


def worker_requests(store: EventStore, **filters: Any) -> list[dict[str, Any]]:
    """Every worker request and answer (run_imminent_worker, create_workflow_task,
    adjust_worker, adjusted_worker); ``status`` filters on the message type."""
    return query(store, "worker_requests", **filters)


def failures(store: EventStore, **filters: Any) -> list[dict[str, Any]]:
    """Failed worker results that name no slice, per run."""
    return query(store, "failures", **filters)


def commands(store: EventStore, **filters: Any) -> list[dict[str, Any]]:
    """Workflow control messages (with --limit: the latest); ``status`` filters on the type;
    ``execution_id`` on the execution a command names."""
    rows = query(store, "commands", **filters)
    for row in rows:
        if isinstance(row.get("params"), str):
            row["params"] = orjson.loads(row["params"])
        if row.get("realtime") is not None:
            row["realtime"] = bool(row["realtime"])
    return rows


def _commands_concerning(conn: sa.Connection, execution: Any) -> list[dict[str, Any]]:
    """The workflow control messages about one execution: those naming it; the run_workflow
    that started it (the latest for its workflow in its namespace before its start: upstream's
    runner names the execution only after it started); stop and status requests naming no
    execution, sent to its namespace from that run_workflow (else its start) to its end."""
    columns = t.workflow_commands.c
    start, end = execution.start_time, execution.end_time
    rows = conn.execute(sa.select(t.workflow_commands).where(
        columns.namespace == execution.namespace,
        sa.or_(columns.execution_id == execution.execution_id, columns.execution_id.is_(None)))
        .order_by(columns.position)).all()
    started_by = None
    for row in rows:
        if (row.msg_type == "run_workflow" and row.execution_id is None
                and execution.workflow is not None and row.workflow_name == execution.workflow
                and start is not None and row.time <= start
                and (started_by is None or row.time >= started_by.time)):
            started_by = row
    since = started_by.time if started_by is not None else start
    chosen = [row for row in rows if row.execution_id == execution.execution_id
              or row is started_by
              or (row.execution_id is None and row.msg_type != "run_workflow"
                  and since is not None and row.time >= since
                  and (end is None or row.time <= end))]
    chosen.sort(key=lambda row: (row.time, row.position))
    return [{"position": row.position, "time": row.time, "msg_type": row.msg_type,
             "workflow_name": row.workflow_name, "execution_id": row.execution_id,
             "sender": row.sender} for row in chosen]
