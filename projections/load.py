"""Incremental catch-up: bring the rows a batch of events will touch back into fold records.

A run is loaded whole (its row and every row of its files, samples, slices, datasets and tasks),
because its counters and statuses are derived from all of them; an execution is loaded with the
rows (only) of its other runs, whose stored counters it sums. Everything a later event compares
against is a column, so a loaded record folds on exactly like one that never left memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from eventstore import rest

from . import tables as t
from .derive import sample_rec, slice_rec, stf_rec
from .fold import CONTROL, EXECUTION_FACTS, HEARTBEATS, LOGS, Fold, Item
from .records import (
    AgentRec,
    DatasetRec,
    ExecRec,
    FileRec,
    RunRec,
    SliceRec,
    TaskRec,
    WorkflowTaskRec,
)

KEYS_PER_QUERY = 400  # (run_number, namespace) pairs per IN: 800 bound parameters
# Statuses a stop or a runner's next execution may still change (derive.execution_status);
# "failed" also comes from run_processed: loaded then too, and derived as before.
UNFINISHED = ("running", "terminated", "failed")
# Folded without their run (fold.Fold.runless) even when they name one.
RUNLESS_FOLDED = HEARTBEATS | CONTROL | LOGS | rest.RUNLESS_TYPES


def preload(conn: sa.Connection, fold: Fold, items: Sequence[Item]) -> None:
    """Load every stored row the events ``items`` may change and the fold does not hold yet."""
    if fold.complete:
        return
    runs: set[tuple[str, int]] = set()
    execs: set[tuple[str, str]] = set()
    agents: set[tuple[str, str]] = set()
    stopping: set[str] = set()  # namespaces with a new stop_workflow
    runners: set[tuple[str, str]] = set()  # upstream runners that announced a run
    for _position, msg_type, ns, execution_id, run, sender, _time, data in items:
        if (msg_type == "run_imminent" and sender is not None
                and type(data.get("workflow_params")) is not dict):
            runners.add((ns, sender))
        if run is not None and msg_type not in RUNLESS_FOLDED:
            runs.add((ns, run))
            if execution_id is not None:
                execs.add((ns, execution_id))
        elif msg_type in HEARTBEATS:
            agents.add((ns, sender or ""))
        elif msg_type == "stop_workflow":
            stopping.add(ns)
            if execution_id is not None:
                execs.add((ns, execution_id))
        elif msg_type in EXECUTION_FACTS and execution_id is not None:
            execs.add((ns, execution_id))
    if not fold.checked_stops:
        load_stops(conn, fold)
        fold.checked_stops = True
    if not fold.checked_daq:
        load_runner_starts(conn, fold)
        fold.checked_daq = True
    columns = t.executions.c
    for ns, sender in sorted(runners):  # their earlier executions may be over now
        execs |= set(_select_where(conn, t.executions, ("namespace", "execution_id"),
                                   (columns.namespace == ns) & (columns.daq_sender == sender)
                                   & columns.status.in_(UNFINISHED)))
    if stopping:  # the executions a stop may concern: those its runs did not end
        execs |= set(_select_where(conn, t.executions, ("namespace", "execution_id"),
                                   t.executions.c.namespace.in_(sorted(stopping))
                                   & t.executions.c.status.in_(UNFINISHED)))
    runs -= fold.checked_runs
    if runs:
        load_runs(conn, fold, runs)
        fold.checked_runs |= runs
    execs.update((fold.runs[key].ns, fold.runs[key].execution_id)  # type: ignore[misc]
                 for key in runs if key in fold.runs and fold.runs[key].execution_id)
    execs -= fold.checked_execs
    if execs:
        load_execs(conn, fold, execs)
        fold.checked_execs |= execs
    agents -= fold.checked_agents
    if agents:
        load_agents(conn, fold, agents)
        fold.checked_agents |= agents


def _select_where(conn: sa.Connection, table: sa.Table, columns: Sequence[str],
                  where: Any) -> Iterator[tuple[Any, ...]]:
    for row in conn.execute(sa.select(*(table.c[name] for name in columns)).where(where)):
        yield tuple(row)


def load_stops(conn: sa.Connection, fold: Fold) -> None:
    """Every stop_workflow fact (few: one per stopped execution); executions' status depends
    on them."""
    commands = t.workflow_commands.c
    for position, time, ns, execution_id in conn.execute(
            sa.select(commands.position, commands.time, commands.namespace,
                      commands.execution_id).where(commands.msg_type == "stop_workflow")):
        fold.stops.setdefault(ns, {})[position] = (time, execution_id)


def load_runner_starts(conn: sa.Connection, fold: Fold) -> None:
    """When each upstream runner started each of its executions (one row per execution)."""
    columns = t.executions.c
    for ns, sender, execution_id, started_at in conn.execute(
            sa.select(columns.namespace, columns.daq_sender, columns.execution_id,
                      columns.started_at).where(columns.daq_sender.is_not(None))):
        if started_at is not None:
            fold.daq_starts.setdefault((ns, sender), {})[execution_id] = started_at


def _chunks(keys: Iterable[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    keys = sorted(keys)
    for start in range(0, len(keys), KEYS_PER_QUERY):
        yield keys[start:start + KEYS_PER_QUERY]


def _select(conn: sa.Connection, table: sa.Table, columns: Sequence[str],
            keys: Iterable[tuple[Any, ...]]) -> Iterator[sa.Row[Any]]:
    key_columns = sa.tuple_(*(table.c[name] for name in columns))
    for chunk in _chunks(keys):
        yield from conn.execute(sa.select(table).where(key_columns.in_(chunk)))


def _run_rec(fold: Fold, row: Any) -> RunRec:
    key = (row.namespace, row.run_number)
    run = fold.runs.get(key)
    if run is None:
        run = fold.runs[key] = RunRec(row.namespace, row.run_number, row.created_at)
        run.full = False
        execution = fold.execs.get((row.namespace, row.execution_id))
        if execution is not None:
            execution.runs.add(run)
    run.execution_id = row.execution_id
    run.phase, run.state, run.substate, run.state_at = (row.phase, row.state, row.substate,
                                                        row.state_at)
    run.total_stf_files = row.total_stf_files
    run.outcome, run.outcome_error, run.processed_at = (row.outcome, row.outcome_error,
                                                        row.processed_at)
    run.state_changed_at, run.created_at, run.updated_at = (row.state_changed_at,
                                                            row.created_at, row.updated_at)
    run.counts = (row.stf_count, row.stf_samples_received, row.slices_created, row.slices_queued,
                  row.slices_processing, row.slices_completed, row.slices_failed,
                  row.slice_retries)
    run.expects_outcome = bool(row.expects_outcome)
    run.stored_failures = row.unmatched_failures
    return run


def load_runs(conn: sa.Connection, fold: Fold, keys: set[tuple[str, int]]) -> None:
    """Load runs whole (their children too); runs only known by their row become full."""
    pairs = [(run, ns) for ns, run in keys]
    for row in _select(conn, t.run_state, ("run_number", "namespace"), pairs):
        run = _run_rec(fold, row)
        if not run.full:
            run.full = True
    runs = fold.runs
    for row in _select(conn, t.stf_files, ("run_number", "namespace"), pairs):
        stf = stf_rec(row)
        fold.stfs[(stf.ns, stf.run, stf.filename)] = stf
        runs[(stf.ns, stf.run)].stfs.append(stf)
    for row in _select(conn, t.tf_samples, ("run_number", "namespace"), pairs):
        sample = sample_rec(row)
        fold.samples[(sample.ns, sample.run, sample.tf_filename)] = sample
        runs[(sample.ns, sample.run)].samples.append(sample)
        if sample.stf_filename is not None:
            fold.link(sample.ns, sample.run, sample.stf_filename, sample.tf_filename)
    for row in _select(conn, t.tf_slices, ("run_number", "namespace"), pairs):
        piece = _slice_rec(fold, row, "slice")
        fold.announce(runs[(piece.ns, piece.run)], piece)
        if piece.stf_filename is not None:
            fold.link(piece.ns, piece.run, piece.stf_filename, piece.tf_filename)
    for row in _select(conn, t.unmatched_results, ("run_number", "namespace"), pairs):
        _slice_rec(fold, row, "unmatched")
    datasets: dict[tuple[str, int, str, str], DatasetRec] = {}
    for row in _select(conn, t.datasets, ("run_number", "namespace"), pairs):
        dataset = DatasetRec(row.namespace, row.run_number, row.scope, row.name, row.created_at)
        (dataset.state, dataset.error, dataset.error_at, dataset.opened_at, dataset.closed_at,
         dataset.updated_at) = (row.state, row.error, row.error_at, row.opened_at,
                                row.closed_at, row.updated_at)
        key = (dataset.ns, dataset.run, dataset.scope, dataset.name)
        fold.datasets[key] = datasets[key] = dataset
        runs[(dataset.ns, dataset.run)].datasets.append(dataset)
    for row in _select(conn, t.dataset_files, ("run_number", "namespace"), pairs):
        owner = datasets[(row.namespace, row.run_number, row.scope, row.dataset)]
        owner.files[row.name] = FileRec(row.name, row.size_bytes, row.checksum, row.attached_at)
    for row in _select(conn, t.failed_results, ("run_number", "namespace"), pairs):
        runs[(row.namespace, row.run_number)].failures[(row.time, row.worker)] = (
            row.error, row.panda_task_id, row.panda_id)
    for row in _select(conn, t.workflow_tasks, ("run_number", "namespace"), pairs):
        work = WorkflowTaskRec(row.namespace, row.run_number, row.created_at)
        for name in WorkflowTaskRec.__slots__[2:]:
            setattr(work, name, getattr(row, name))
        runs[(work.ns, work.run)].workflow_task = work
    for row in _select(conn, t.panda_tasks, ("run_number", "namespace"), pairs):
        task = TaskRec(row.namespace, row.run_number, row.task_key)
        (task.task_id, task.input_dataset, task.status, task.error, task.submitted_at,
         task.updated_at) = (row.task_id, row.input_dataset, row.status, row.error,
                             row.submitted_at, row.updated_at)
        fold.tasks[(task.ns, task.run, task.task_key)] = task
        runs[(task.ns, task.run)].tasks.append(task)


def _slice_rec(fold: Fold, row: Any, where: str) -> SliceRec:
    piece = slice_rec(row)
    piece.in_db = where
    fold.slices[(piece.ns, piece.run, piece.tf_filename, piece.slice_id)] = piece
    return piece


def load_execs(conn: sa.Connection, fold: Fold, keys: set[tuple[str, str]]) -> None:
    """Load executions and the rows of all their runs (runs not loaded whole keep their
    stored counters, which is all an execution needs of them)."""
    for row in _select(conn, t.executions, ("namespace", "execution_id"), keys):
        if (row.namespace, row.execution_id) in fold.execs:
            continue
        execution = fold.execs[(row.namespace, row.execution_id)] = ExecRec(
            row.namespace, row.execution_id)
        execution.workflow = row.workflow
        execution.daq_sender, execution.started_at = row.daq_sender, row.started_at
        (execution.declared_status, execution.declared_at, execution.declared_start,
         execution.declared_end, execution.executed_by, execution.definition_id) = (
            row.declared_status, row.declared_at, row.declared_start, row.declared_end,
            row.executed_by, row.definition_id)
        execution.parameters = None if row.parameters is None else orjson.loads(row.parameters)
    for row in _select(conn, t.run_state, ("namespace", "execution_id"), keys):
        run = fold.runs.get((row.namespace, row.run_number))
        if run is None:
            run = _run_rec(fold, row)
        fold.execution(row.namespace, row.execution_id).runs.add(run)


def load_agents(conn: sa.Connection, fold: Fold, keys: set[tuple[str, str]]) -> None:
    for row in _select(conn, t.agents, ("namespace", "name"), keys):
        agent = AgentRec(row.namespace, row.name, row.first_seen)
        (agent.agent_type, agent.status, agent.operational_state, agent.pid, agent.hostname,
         agent.last_heartbeat) = (row.agent_type, row.status, row.operational_state, row.pid,
                                  row.hostname, row.last_heartbeat)
        fold.agents[(agent.ns, agent.name)] = agent
