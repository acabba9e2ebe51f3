"""From fold state to rows: derive statuses and counters of what changed, render table rows.

Derived values are recomputed from the facts (the per-slice statuses, the sets of files and
samples) of each changed record at flush time, so a duplicate or a late message can never make a
counter drift.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from operator import add, attrgetter
from typing import Any

import orjson
import sqlalchemy as sa

from . import tables as t
from .fold import FINAL_STATUSES, Fold
from .records import (
    ATTEMPT,
    MAX_RETRIES,
    RANK,
    ExecRec,
    RunRec,
    SampleRec,
    SliceRec,
    StfRec,
)

Rows = list[tuple[Any, ...]]


class Changes:
    """Rows to upsert and keys to delete, per table, for one flush."""

    def __init__(self) -> None:
        self.upserts: dict[sa.Table, Rows] = {}
        self.deletes: dict[sa.Table, Rows] = {}

    def count(self) -> int:
        return sum(map(len, self.upserts.values())) + sum(map(len, self.deletes.values()))


_created = attrgetter("created_at")
_updated = attrgetter("updated_at")


def _pieces_status(pieces: Iterable[SliceRec], updated_at: str | None,
                   waiting: bool = False) -> tuple[str, str | None]:
    """(status, latest update) of a sample or STF file from its slices: failed once any slice
    failed for good, processed when all are terminal, processing while some are not."""
    seen = failed = False
    done = not waiting
    for piece in pieces:
        seen = True
        status = piece.status
        if status == "failed" and piece.retries >= MAX_RETRIES:
            failed = True
        elif status != "completed":
            done = False
        if updated_at is None or piece.updated_at > updated_at:  # type: ignore[operator]
            updated_at = piece.updated_at
    if failed:
        return "failed", updated_at
    if not seen:
        return "registered", updated_at
    return ("processed" if done else "processing"), updated_at


def everything(fold: Fold) -> None:
    """Mark every record changed (a rebuild writes them all)."""
    fold.d_runs.update(fold.runs.values())
    fold.d_execs.update(fold.execs.values())
    fold.d_stfs.update(fold.stfs.values())
    fold.d_samples.update(fold.samples.values())
    fold.d_slices.update(fold.slices.values())
    fold.d_datasets.update(fold.datasets.values())
    for dataset in fold.datasets.values():
        dataset.dirty_files.update(dataset.files)
    fold.d_tasks.update(fold.tasks.values())
    fold.d_agents.update(fold.agents.values())
    for run in fold.runs.values():
        if run.workflow_task is not None:
            fold.d_wtasks.add(run.workflow_task)
        for (time, worker), value in run.failures.items():
            fold.new_failures[(run.ns, run.run, time, worker)] = (run.run, run.ns, time, worker,
                                                                   *value)
    fold.d_requests.update(fold.requests)
    fold.d_commands.update(fold.commands)
    fold.d_definitions.update(fold.definitions)


def settle(fold: Fold, fresh: bool = False
           ) -> tuple[set[SampleRec], set[StfRec], set[ExecRec]]:
    """Recompute the derived fields of every record the batch touched, directly or through its
    slices; returns the samples, STF files and executions whose rows must be rewritten.
    ``fresh``: the fold was never flushed, so every record is in its dirty set already."""
    stf_keys = fold.d_stf_keys
    samples = set(fold.d_samples)
    runs = fold.d_runs
    sample_keys = set()
    every_run = fold.runs
    changed: Iterable[SliceRec] = fold.d_slices
    if fresh:  # every slice is changed: each run's announced ones at once, the rest one by one
        for run in every_run.values():
            if run.slices:
                first = min(map(_created, run.slices))
                last = max(map(_updated, run.slices))
                if first < run.created_at:
                    run.created_at = first
                if last > run.updated_at:
                    run.updated_at = last
        changed = [p for p in fold.slices.values() if not p.announced]
    for p in changed:
        run = every_run[(p.ns, p.run)]  # its first/last times include its slices' (Fold._slice)
        if p.created_at < run.created_at:  # type: ignore[operator]
            run.created_at = p.created_at
        if p.updated_at > run.updated_at:  # type: ignore[operator]
            run.updated_at = p.updated_at
        if not fresh:
            runs.add(run)
            sample_keys.add((p.ns, p.run, p.tf_filename))
            if p.stf_filename:
                stf_keys.add((p.ns, p.run, p.stf_filename))
    samples.update(fold.samples[key] for key in sample_keys if key in fold.samples)
    for sample in samples:
        if sample.stf_filename is not None:
            stf_keys.add((sample.ns, sample.run, sample.stf_filename))
        sample.status, sample.updated_at = _pieces_status(
            fold.sample_slices.get((sample.ns, sample.run, sample.tf_filename), ()),
            sample.updated_at)
    stfs = set(fold.d_stfs)
    if not fresh:
        stfs.update(fold.stfs[key] for key in stf_keys if key in fold.stfs)
    for stf in stfs:
        _stf_status(fold, stf)
    execs = set(fold.d_execs)
    for run in runs:
        _run_counts(run)
        if run.execution_id is not None:
            execs.add(fold.execs[(run.ns, run.execution_id)])
    return samples, stfs, execs


def _stf_status(fold: Fold, stf: StfRec) -> None:
    pieces: list[SliceRec] = []
    waiting = False  # a registered sample has no slice yet
    for tf_filename in fold.stf_samples.get((stf.ns, stf.run, stf.filename), ()):
        key = (stf.ns, stf.run, tf_filename)
        listed = fold.sample_slices.get(key)
        if listed:
            pieces.extend(listed)
        elif key in fold.samples:
            waiting = True
    stf.status, stf.updated_at = _pieces_status(pieces, stf.updated_at, waiting)


def _run_counts(run: RunRec) -> None:
    if not run.full:
        return
    counts = (len(run.stfs), len(run.samples), len(run.slices), *tally(run.slices))
    spilled = run.spilled
    run.counts = counts if spilled is None else tuple(map(add, counts, spilled))


def tally(pieces: Iterable[SliceRec]) -> tuple[int, int, int, int, int]:
    """Slices queued, processing, completed, failed (any other status), and their retries."""
    queued = processing = completed = failed = retries = 0
    for piece in pieces:
        status = piece.status
        if status == "completed":
            completed += 1
        elif status == "processing":
            processing += 1
        elif status == "queued":
            queued += 1
        else:
            failed += 1
        retries += piece.retries
    return queued, processing, completed, failed, retries


def stf_row(s: StfRec) -> tuple[Any, ...]:
    return (s.run, s.ns, s.filename, s.sequence, s.size_bytes, s.checksum, s.file_url,
            s.status, s.generated_at, s.ready_at, s.created_at, s.updated_at)


def sample_row(s: SampleRec) -> tuple[Any, ...]:
    return (s.run, s.ns, s.tf_filename, s.stf_filename, s.tf_first, s.tf_last, s.tf_count,
            s.status, s.created_at, s.updated_at)


def slice_row(p: SliceRec) -> tuple[Any, ...]:
    """An announced slice's tf_slices row."""
    status = p.status
    return (p.run, p.ns, p.tf_filename, p.slice_id, status, p.retries, p.worker, p.error,
            p.created_at, p.updated_at, p.stf_filename, p.start, p.end, p.tf_count,
            status == "failed" and p.retries >= MAX_RETRIES)


def stf_rec(row: Sequence[Any]) -> StfRec:
    """The record of an stf_files row (``stf_row``'s inverse)."""
    (number, ns, filename, sequence, size_bytes, checksum, file_url, status, generated_at,
     ready_at, created_at, updated_at) = row
    stf = StfRec(ns, number, filename, created_at)
    (stf.sequence, stf.size_bytes, stf.checksum, stf.file_url, stf.status, stf.generated_at,
     stf.ready_at, stf.updated_at) = (sequence, size_bytes, checksum, file_url, status,
                                      generated_at, ready_at, updated_at)
    return stf


def sample_rec(row: Sequence[Any]) -> SampleRec:
    """The record of a tf_samples row (``sample_row``'s inverse)."""
    (number, ns, tf_filename, stf_filename, tf_first, tf_last, tf_count, status, created_at,
     updated_at) = row
    sample = SampleRec(ns, number, tf_filename, created_at)
    (sample.stf_filename, sample.tf_first, sample.tf_last, sample.tf_count, sample.status,
     sample.updated_at) = (stf_filename, tf_first, tf_last, tf_count, status, updated_at)
    return sample


def slice_rec(row: Sequence[Any]) -> SliceRec:
    """The record of a tf_slices row (``slice_row``'s inverse) or of an unmatched_results one
    (the same first ten columns)."""
    number, ns, tf_filename, slice_id, status, retries, worker, error, created, updated = row[:10]
    piece = SliceRec(ns, number, tf_filename, slice_id, created)
    piece.status, piece.retries, piece.worker, piece.error, piece.updated_at = (
        status, retries, worker, error, updated)
    piece.order = retries * ATTEMPT + RANK[status]
    if len(row) > 10:
        piece.stf_filename, piece.start, piece.end, piece.tf_count = row[10:14]
    return piece


def render(fold: Fold, names: Collection[str], fresh: bool = False, consume: bool = False
           ) -> Changes:
    """Settle the batch and render the rows of the projections ``names`` (``fresh``: see
    ``settle``). ``consume`` (with ``fresh``): the fold is discarded afterwards, so each slice
    leaves it as its row is made; the fold's slices and their rows, the bulk of each, are then
    never in memory at once (a rebuild's peak)."""
    samples, stfs, execs = settle(fold, fresh)
    changes = Changes()
    up = changes.upserts
    if "executions" in names:
        stops, starts = fold.stops, fold.daq_starts
        up[t.executions] = [_exec_row(e, stops.get(e.ns),
                                      starts.get((e.ns, e.daq_sender)) if e.daq_sender else None)
                            for e in execs]
    if "run_state" in names:
        up[t.run_state] = [_run_row(r) for r in fold.d_runs]
    if "stf_files" in names:
        up[t.stf_files] = list(map(stf_row, fold.stfs.values() if fresh else stfs))
    if "tf_samples" in names:
        up[t.tf_samples] = list(map(sample_row, fold.samples.values() if fresh else samples))
    if "tf_slices" in names:
        _slice_rows(fold, changes, fresh, consume)
        up[t.failed_results] = list(fold.new_failures.values())
    if "datasets" in names:
        _dataset_rows(fold, changes)
    if "panda_tasks" in names:
        up[t.panda_tasks] = [
            (k.run, k.ns, k.task_key, k.task_id, fold.runs[(k.ns, k.run)].execution_id,
             k.input_dataset, k.status, k.error, k.submitted_at, k.updated_at)
            for k in fold.d_tasks]
    if "agents" in names:
        up[t.agents] = [(a.ns, a.name, a.agent_type, a.status, a.operational_state, a.pid,
                         a.hostname, a.first_seen, a.last_heartbeat) for a in fold.d_agents]
    if "logs" in names:
        up[t.logs] = list(fold.new_logs.values())
    if "workflow_tasks" in names:
        runs = fold.runs
        up[t.workflow_tasks] = [
            (w.run, w.ns, runs[(w.ns, w.run)].execution_id, w.state, w.status, w.task_name,
             w.scope, w.site, w.request_id, w.transform_id, w.workload_id, w.target_workers,
             w.requested_cores, w.memory_per_core, w.adjusted_cores, w.announced_at,
             w.requested_at, w.ids_at, w.adjusted_at, w.status_at, w.stop_requested_at,
             w.closed_at, w.created_at, w.updated_at) for w in fold.d_wtasks]
        up[t.worker_requests] = [fold.requests[key] for key in fold.d_requests]
    if "commands" in names:
        up[t.workflow_commands] = [fold.commands[key] for key in fold.d_commands]
    if "workflow_definitions" in names:
        up[t.workflow_definitions] = [fold.definitions[key] for key in fold.d_definitions]
    return changes


def flushed(fold: Fold) -> None:
    """The rendered rows are committed: remember where slices live, start a clean batch."""
    for piece in fold.d_slices:
        piece.in_db = "slice" if piece.announced else "unmatched"
    for dataset in fold.d_datasets:
        dataset.dirty_files.clear()
    fold.clear_dirty()


def execution_status(e: ExecRec, runs: list[RunRec],
                     stops: dict[int, tuple[str, str | None]] | None,
                     starts: dict[str, str] | None = None) -> tuple[str, str | None]:
    """(status, end time) of an execution, from its own facts.

    A run is over when run_processed says how it went, or - a run our DAQ did not announce, so
    nobody will send run_processed (upstream's) - when it ended (end_run): completed then, as
    upstream's runner marks it; its end is its last fact. An execution of our own DAQ is over
    only by run_processed (a stop ends its run early: its outcome says terminated). An upstream
    execution that is not over is terminated by a stop_workflow naming it, or naming none in its
    namespace after it started (upstream's runner stops the execution it is running); it is
    failed once its runner started another (it runs one workflow at a time: this one ended
    without end_run, as when the runner's workflow raised); else it is running. What upstream's
    runner declared over REST (completed, terminated or failed, when its workflow returned, was
    stopped or raised) is its own word on that and outranks all of this.
    """
    if e.declared_status in FINAL_STATUSES:
        return e.declared_status, e.declared_end or e.declared_at
    ends: list[tuple[str, str]] = []
    for run in runs:
        if run.outcome is not None:
            ends.append((run.outcome, run.processed_at))  # type: ignore[arg-type]
        elif not run.expects_outcome and run.phase == "completed":
            ends.append(("completed", run.updated_at))  # type: ignore[arg-type]
        else:
            break
    else:
        if runs:  # failed over terminated (ended early by a stop), over completed
            outcomes = {o for o, _at in ends}
            status = "failed" if "failed" in outcomes else \
                "terminated" if "terminated" in outcomes else "completed"
            return status, max(at for _o, at in ends)
    if any(run.expects_outcome for run in runs):
        return "running", None  # our own agents say how it ended (run_processed), a stop too
    stopped_at = left_at = None
    if stops:
        start = min((run.created_at for run in runs if run.created_at is not None), default=None)
        stopped_at = min((time for time, named in stops.values()
                          if named == e.execution_id
                          or (named is None and start is not None and time >= start)),
                         default=None)
    if starts and e.started_at is not None:
        left_at = min((time for other, time in starts.items()
                       if other != e.execution_id and time > e.started_at), default=None)
    if stopped_at is not None and (left_at is None or stopped_at <= left_at):
        return "terminated", stopped_at
    if left_at is not None:  # whatever came first ended it
        return "failed", max((run.updated_at for run in runs if run.updated_at is not None),
                             default=e.started_at)
    return "running", None


def _exec_row(e: ExecRec, stops: dict[int, tuple[str, str | None]] | None,
              runner_starts: dict[str, str] | None) -> tuple[Any, ...]:
    runs = sorted(e.runs, key=_run_number)
    totals = [0] * 8
    for run in runs:
        for i, value in enumerate(run.counts):
            totals[i] += value
    status, end_time = execution_status(e, runs, stops, runner_starts)
    starts = [run.created_at for run in runs if run.created_at is not None]
    if e.declared_start is not None:
        starts.append(e.declared_start)
    updates = [run.updated_at for run in runs if run.updated_at is not None]
    parameters = (None if e.parameters is None
                  else orjson.dumps(e.parameters, option=orjson.OPT_SORT_KEYS).decode())
    stf_count, samples, created, _queued, _processing, completed, failed, _retries = totals
    return (e.ns, e.execution_id, e.workflow, parameters, status,
            min(starts) if starts else None, end_time,
            orjson.dumps([run.run for run in runs]).decode(), len(runs), stf_count, samples,
            created, completed, failed, max(updates) if updates else None, e.daq_sender,
            e.started_at, e.declared_status, e.declared_at, e.declared_start, e.declared_end,
            e.executed_by, e.definition_id)


def _run_number(run: RunRec) -> int:
    return run.run


def _run_row(r: RunRec) -> tuple[Any, ...]:
    return (r.run, r.ns, r.execution_id, r.phase, r.state, r.substate, r.state_at,
            r.total_stf_files, *r.counts, r.outcome, r.outcome_error, r.processed_at,
            r.state_changed_at, r.created_at, r.updated_at, r.failure_count, r.expects_outcome)


def _slice_rows(fold: Fold, changes: Changes, fresh: bool, consume: bool = False) -> None:
    announced: Rows = []
    unmatched: Rows = []
    gone: Rows = []
    # A fresh fold writes every slice: in creation order, which is nearly key order (cheap to
    # sort for the insert), unlike a set's.
    pieces: Iterable[SliceRec]
    if not fresh:
        pieces = fold.d_slices
    elif consume:
        pieces = _taken(fold)
    else:
        pieces = fold.slices.values()
    for p in pieces:
        if p.announced:
            announced.append(slice_row(p))
            if p.in_db == "unmatched":
                gone.append((p.run, p.ns, p.tf_filename, p.slice_id))
        else:
            unmatched.append((p.run, p.ns, p.tf_filename, p.slice_id, p.status, p.retries,
                              p.worker, p.error, p.created_at, p.updated_at))
    changes.upserts[t.tf_slices] = announced
    changes.upserts[t.unmatched_results] = unmatched
    if gone:
        changes.deletes[t.unmatched_results] = gone


def _taken(fold: Fold) -> Iterator[SliceRec]:
    """Every slice in creation order, each dropped from the fold as it is given (the fold is
    left without slices; its derived values were settled before)."""
    for run in fold.runs.values():
        run.slices = []
    fold.sample_slices.clear()
    fold.d_slices.clear()
    slices = fold.slices
    for key in list(slices):
        yield slices.pop(key)


def _dataset_rows(fold: Fold, changes: Changes) -> None:
    rows: Rows = []
    files: Rows = []
    for d in fold.d_datasets:
        size = sum(f.size_bytes or 0 for f in d.files.values())
        rows.append((d.run, d.ns, d.scope, d.name, fold.runs[(d.ns, d.run)].execution_id,
                     d.state, len(d.files), size, d.error, d.error_at, d.opened_at,
                     d.closed_at, d.created_at, d.updated_at))
        for name in d.dirty_files:
            f = d.files[name]
            files.append((d.run, d.ns, d.scope, d.name, name, f.size_bytes, f.checksum,
                          f.attached_at))
    changes.upserts[t.datasets] = rows
    changes.upserts[t.dataset_files] = files


def snapshot(fold: Fold, changed_only: bool = True) -> dict[str, list[dict[str, Any]]]:
    """The fold's rows as ``{table: [row dicts in key order]}``, without a database (replay,
    stepping): those changed since the last call (which it then marks unchanged), or all."""
    if not changed_only:
        everything(fold)
    changes = render(fold, tuple(t.PROJECTIONS))
    flushed(fold)
    tables: dict[str, list[dict[str, Any]]] = {}
    for table, rows in changes.upserts.items():
        width = len(table.primary_key.columns)
        names = [str(column.name) for column in table.columns]
        tables[table.name] = [dict(zip(names, row, strict=True))
                              for row in sorted(rows, key=lambda row: row[:width])]
    return tables
