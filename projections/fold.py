"""The fold: every projection's state, advanced one normalized event at a time.

Rules that make the fold order tolerant and idempotent (DESIGN section 5):

- Facts are kept as sets keyed by identity (a run's STF files, samples, slices), so a duplicate
  message adds nothing; counters and statuses are derived from those facts when a batch is
  flushed (``derive.py``), never incremented.
- "Latest wins" fields (run state, agent heartbeat, task status, dataset error) are replaced only
  by a message whose time is not older than the one they came from; first/last times are
  min/max. So applying any event a second time, at any point, changes nothing.
- A slice's status is the maximum of (attempt, rank) over its reports: queued < processing <
  failed < completed within an attempt, and a later attempt beats all of an earlier one. Order
  of arrival does not matter; a slice_result for an unannounced slice is kept (unmatched) and
  merges into the slice when its `slice` message arrives.
- A run's phase never leaves ``completed``; other phase changes follow event time, and run
  state stamps newer than end_run are ignored.

Handlers take the event's parts (cheap to pass, no Event needed), so the projector can feed rows
straight from the events table; ``apply`` feeds an ``Event``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import orjson

from eventstore.envelope import Event

from .records import (
    ATTEMPT,
    RANK,
    TASK_STATES,
    AgentRec,
    DatasetRec,
    ExecRec,
    FileRec,
    ItemKey,
    RunKey,
    RunRec,
    SampleRec,
    SliceRec,
    StfRec,
    TaskRec,
    WorkflowTaskRec,
)


class Recall(Protocol):
    """Brings back what a rebuild or replay moved out of the fold (``spill.Spill``)."""

    def recall_stf(self, fold: Fold, key: ItemKey) -> bool: ...

    def recall_sample(self, fold: Fold, key: ItemKey) -> bool: ...

# One event as the fold needs it: position, msg_type, namespace ('' for none), execution_id,
# run_number, sender, time, normalized data.
Item = tuple[int, str, str, str | None, int | None, str | None, str, dict[str, Any]]
Handler = Callable[[str, str | None, int, str, dict[str, Any]], None]  # ns, exec, run, time, data
LogRow = tuple[int, str, Any, str | None, Any, Any, str, str | None, int | None]
Row = tuple[Any, ...]

OPEN_OUTCOMES = frozenset({"ok", "exists"})  # 'exists': a retried run reuses its dataset
CONTROL = frozenset({"run_workflow", "stop_workflow", "status_request"})
HEARTBEATS = frozenset({"agent_heartbeat", "heartbeat", "transformer_heartbeat",
                        "rest_heartbeat"})
LOGS = frozenset({"agent_log", "rest_log"})
# Upstream's runner on its execution over REST (POST and PATCH /api/workflow-executions/).
EXECUTION_FACTS = frozenset({"rest_execution", "rest_execution_update"})
FINAL_STATUSES = frozenset({"completed", "terminated", "failed"})
# An upstream execution id names its workflow: {workflow}-{user}-{seq:04d}
# (swf-testbed workflows/workflow_runner.py:369-401).
_UPSTREAM_EXECUTION = re.compile(r"([a-z][a-z0-9_]*)-.+-[0-9]{4,}\Z")


class Fold:
    """All projections' state. ``complete`` means every row is in memory (a rebuild, or a fresh
    database): the projector then never needs to load rows before folding."""

    def __init__(self, complete: bool = True) -> None:
        self.complete = complete
        self.position = 0  # of the last event fed
        self.checkpoint = 0  # the projector's: the log position the flushed rows cover
        self.runs: dict[RunKey, RunRec] = {}
        self.execs: dict[tuple[str, str], ExecRec] = {}
        self.stfs: dict[ItemKey, StfRec] = {}
        self.samples: dict[ItemKey, SampleRec] = {}
        self.slices: dict[tuple[str, int, str, int], SliceRec] = {}
        self.sample_slices: dict[ItemKey, list[SliceRec]] = {}  # announced slices of a sample
        self.stf_samples: dict[ItemKey, set[str]] = {}  # tf files linked to an STF file
        self.datasets: dict[tuple[str, int, str, str], DatasetRec] = {}
        self.tasks: dict[tuple[str, int, int], TaskRec] = {}
        self.agents: dict[tuple[str, str], AgentRec] = {}
        # Rows that are facts of one message each (kept so every row can be rendered again).
        self.requests: dict[tuple[str, int, str, str], Row] = {}  # worker requests
        self.commands: dict[int, Row] = {}  # workflow control, by position
        # Upstream's workflow definitions: (name, version) -> row
        self.definitions: dict[tuple[str, str], Row] = {}
        # stop_workflow facts per namespace: position -> (time, execution_id or None)
        self.stops: dict[str, dict[int, tuple[str, str | None]]] = {}
        # Upstream executions per (namespace, runner): execution_id -> its start
        self.daq_starts: dict[tuple[str, str], dict[str, str]] = {}
        # What the projector has already looked up in the database (catch-up only).
        self.checked_runs: set[RunKey] = set()
        self.checked_execs: set[tuple[str, str]] = set()
        self.checked_agents: set[tuple[str, str]] = set()
        self.checked_stops = complete
        self.checked_daq = complete
        # A rebuild's or replay's fold may move settled STF files, their samples and slices, out of
        # memory (``spill.py``); each record notes the round (a chunk of the log) that last
        # touched it, and a record asked for again is brought back first.
        self.spill: Recall | None = None
        self.round = 0
        self.clear_dirty()

    @property
    def handlers(self) -> dict[str, Handler]:
        """msg_type -> handler, for every message type that belongs to a run. Built per call:
        a dict of bound methods kept on the fold would make it a reference cycle, and its
        millions of records garbage for the cyclic collector instead of reference counting."""
        return {
            "run_imminent": self._run_imminent, "start_run": self._physics,
            "resume_run": self._physics, "pause_run": self._standby, "end_run": self._end_run,
            "stf_gen": self._stf_gen, "stf_ready": self._stf_ready,
            "tf_file_registered": self._tf_registered, "slice": self._slice,
            "slice_result": self._slice_result, "dataset_opened": self._dataset_opened,
            "file_attached": self._file_attached, "dataset_closed": self._dataset_closed,
            "panda_task_submitted": self._task_submitted,
            "panda_task_status": self._task_status, "run_processed": self._run_processed,
            "sampling_complete": self._touch,
            # upstream's PanDA/iDDS workflow task of a run
            "run_imminent_worker": self._worker_announced,
            "create_workflow_task": self._task_requested,
            "created_workflow_task": self._task_created,
            "adjust_worker": self._workers_adjusted, "adjusted_worker": self._workers_adjusted,
            "close_workflow_task": self._task_closing,
            "closed_workflow_task": self._task_closed,
            "stop_transformer": self._transformers_stopped,
            # upstream's calls on its monitor's REST API: the same facts as their bus twins
            # (an STF file, a TF sample, a slice, a result counts once whichever channel or
            # both brought it); the run-state and run records only make the run known
            "rest_run_state": self._rest_run_state,
            "rest_run_state_update": self._rest_run_state_update,
            "rest_run": self._touch, "rest_run_update": self._touch,
            "rest_state_event": self._touch, "rest_stf_file": self._rest_stf_file,
            "rest_stf_file_update": self._rest_stf_touched,
            "rest_tf_file": self._tf_registered, "rest_slice": self._slice,
            "rest_slice_update": self._rest_slice_result,
        }

    def clear_dirty(self) -> None:
        self.d_runs: set[RunRec] = set()
        self.d_execs: set[ExecRec] = set()
        self.d_stfs: set[StfRec] = set()
        self.d_stf_keys: set[ItemKey] = set()  # STF files whose status may have changed
        self.d_samples: set[SampleRec] = set()
        self.d_slices: set[SliceRec] = set()
        self.d_datasets: set[DatasetRec] = set()
        self.d_tasks: set[TaskRec] = set()
        self.d_agents: set[AgentRec] = set()
        self.d_wtasks: set[WorkflowTaskRec] = set()
        self.d_requests: set[tuple[str, int, str, str]] = set()
        self.d_commands: set[int] = set()
        self.d_definitions: set[tuple[str, str]] = set()
        self.new_failures: dict[tuple[str, int, str, str], Row] = {}
        self.new_logs: dict[int, LogRow] = {}
        self._current: RunRec | None = None  # the last run touched (it is in d_runs)

    # -- feeding -------------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Fold one stored event (rejected ones only advance the position)."""
        if event.valid and event.data is not None and event.msg_type is not None:
            self.feed(((event.position, event.msg_type, event.namespace or "",
                        event.execution_id, event.run_id, event.sender, event.time,
                        event.data),))
        elif event.position > self.position:
            self.position = event.position

    def feed(self, items: Iterable[Item]) -> int:
        """Fold valid events in position order; returns how many were folded."""
        handlers = self.handlers
        count = 0
        position = self.position
        for position, msg_type, ns, execution_id, run, sender, time, data in items:
            handler = handlers.get(msg_type)
            if handler is not None and run is not None:
                handler(ns, execution_id, run, time, data)
            else:
                self.runless(position, msg_type, ns, execution_id, run, sender, time, data)
            count += 1
        if position > self.position:
            self.position = position
        return count

    def runless(self, position: int, msg_type: str, ns: str, execution_id: str | None,
                run: int | None, sender: str | None, time: str, data: dict[str, Any]) -> None:
        """Heartbeats, logs, workflow control, and what names no run (``handlers`` has every
        message type that belongs to a run)."""
        if msg_type in HEARTBEATS:
            self._heartbeat(ns, sender, time, data)
        elif msg_type in LOGS:
            self.new_logs[position] = (position, time, data.get("level"), sender,
                                       data.get("module"), data.get("message"), ns,
                                       execution_id, run)
        elif msg_type in CONTROL:
            self._command(position, msg_type, ns, execution_id, sender, time, data)
        elif msg_type in EXECUTION_FACTS and execution_id is not None:
            self._declared(msg_type, ns, execution_id, time, data)
        elif msg_type == "rest_workflow_definition":
            self._definition(time, data)
        elif msg_type == "slice_result" and run is None:  # a failure naming no run either
            self.new_logs[position] = (
                position, time, "ERROR", sender, "slice_result",
                f"failed worker result without a run or slice: {data.get('error')}", ns,
                execution_id, None)

    # -- records -------------------------------------------------------------------------------

    def _run(self, ns: str, number: int, execution_id: str | None, time: str) -> RunRec:
        run = self._current  # consecutive events are mostly of one run
        if run is None or run.run != number or run.ns != ns:
            run = self.runs.get((ns, number))
            if run is None:
                run = self.runs[(ns, number)] = RunRec(ns, number, time)
            self.d_runs.add(run)
            self._current = run
        if time > run.updated_at:  # type: ignore[operator]
            run.updated_at = time
        elif time < run.created_at:  # type: ignore[operator]
            run.created_at = time
        if execution_id is not None and run.execution_id is None:
            self.attach(run, execution_id)
        return run

    def attach(self, run: RunRec, execution_id: str) -> None:
        """Make ``run`` one of ``execution_id``'s runs (leaving any earlier execution)."""
        if run.execution_id is not None:
            old = self.execs.get((run.ns, run.execution_id))
            if old is not None:
                old.runs.discard(run)
                self.d_execs.add(old)
            self.d_datasets.update(run.datasets)  # their rows carry the execution id
            self.d_tasks.update(run.tasks)
            if run.workflow_task is not None:
                self.d_wtasks.add(run.workflow_task)
        run.execution_id = execution_id
        execution = self.execution(run.ns, execution_id)
        execution.runs.add(run)
        self.d_execs.add(execution)

    def execution(self, ns: str, execution_id: str) -> ExecRec:
        execution = self.execs.get((ns, execution_id))
        if execution is None:
            execution = self.execs[(ns, execution_id)] = ExecRec(ns, execution_id)
        return execution

    def _stf(self, run: RunRec, filename: str, time: str) -> StfRec:
        key = (run.ns, run.run, filename)
        stf = self.stfs.get(key)
        if stf is None and self.spill is not None and self.spill.recall_stf(self, key):
            stf = self.stfs[key]
        if stf is None:
            stf = self.stfs[key] = StfRec(run.ns, run.run, filename, time)
            run.stfs.append(stf)
        else:
            _widen(stf, time)
        stf.seen = self.round
        self.d_stfs.add(stf)
        return stf

    def announce(self, run: RunRec, piece: SliceRec) -> None:
        """A `slice` message made ``piece`` a slice of its run (it may have been unmatched)."""
        piece.announced = True
        run.slices.append(piece)
        sample_key = (piece.ns, piece.run, piece.tf_filename)
        listed = self.sample_slices.get(sample_key)
        if listed is None:
            self.sample_slices[sample_key] = [piece]
        else:
            listed.append(piece)

    def link(self, ns: str, run: int, stf_filename: str, tf_filename: str) -> None:
        key = (ns, run, stf_filename)
        if self.spill is not None and key not in self.stfs:
            self.spill.recall_stf(self, key)
        linked = self.stf_samples.get(key)
        if linked is None:
            self.stf_samples[key] = {tf_filename}
        else:
            linked.add(tf_filename)
        self.d_stf_keys.add(key)

    # -- run control ---------------------------------------------------------------------------

    def _touch(self, ns: str, execution_id: str | None, number: int, time: str,
               _data: dict[str, Any]) -> None:
        self._run(ns, number, execution_id, time)

    def _run_imminent(self, ns: str, execution_id: str | None, number: int, time: str,
                      data: dict[str, Any]) -> None:
        run = self._run(ns, number, None, time)
        # The run belongs to the execution its run_imminent names.
        if execution_id is not None and run.execution_id != execution_id:
            self.attach(run, execution_id)
        if type(data.get("workflow_params")) is dict:
            run.expects_outcome = True  # our DAQ: run_processed will follow
        if run.execution_id is not None:
            execution = self.execution(ns, run.execution_id)
            if data.get("workflow") is not None:
                execution.workflow = data["workflow"]
            elif execution.workflow is None:
                named = _UPSTREAM_EXECUTION.match(run.execution_id)
                execution.workflow = named.group(1) if named else None
            if data.get("workflow_params") is not None:
                execution.parameters = data["workflow_params"]
            elif not run.expects_outcome and type(data.get("sender")) is str:
                self._runner_started(execution, data["sender"], time)
            self.d_execs.add(execution)
        if run.phase is None:
            run.phase = "imminent"
            run.state_changed_at = time
        _run_state(run, data, time)

    def _physics(self, ns: str, execution_id: str | None, number: int, time: str,
                 data: dict[str, Any]) -> None:
        run = self._run(ns, number, execution_id, time)
        _phase(run, "physics", time)
        _run_state(run, data, time)

    def _standby(self, ns: str, execution_id: str | None, number: int, time: str,
                 data: dict[str, Any]) -> None:
        run = self._run(ns, number, execution_id, time)
        _phase(run, "standby", time)
        _run_state(run, data, time)

    def _end_run(self, ns: str, execution_id: str | None, number: int, time: str,
                 data: dict[str, Any]) -> None:
        run = self._run(ns, number, execution_id, time)
        if data.get("total_stf_files") is not None:
            run.total_stf_files = data["total_stf_files"]
        if run.phase == "completed" and time >= run.state_changed_at:  # type: ignore[operator]
            return  # (an earlier end - a REST record of it - yields to the DAQ's own)
        run.phase = "completed"
        run.state_changed_at = time
        state, substate = data.get("state"), data.get("substate")
        if state is not None or substate is not None:  # the run's last word, even over a
            run.state = state if state is not None else run.state  # later-stamped message
            run.substate = substate if substate is not None else run.substate
            run.state_at = time

    def _run_processed(self, ns: str, execution_id: str | None, number: int, time: str,
                       data: dict[str, Any]) -> None:
        run = self._run(ns, number, execution_id, time)
        if run.processed_at is None or time >= run.processed_at:
            run.outcome = data["status"]
            run.outcome_error = data.get("error")
            run.processed_at = time

    # -- files ---------------------------------------------------------------------------------

    def _stf_gen(self, ns: str, execution_id: str | None, number: int, time: str,
                 data: dict[str, Any]) -> None:
        run = self._run(ns, number, execution_id, time)
        stf = self._stf(run, data["filename"], time)
        if stf.generated_at is None or time < stf.generated_at:
            stf.generated_at = time
        # stf_ready (the data agent's registration) outranks stf_gen, whatever the order.
        overwrite = stf.ready_at is None
        for name in ("sequence", "file_url", "checksum", "size_bytes"):  # the last two: the
            # legacy DAQ simulator's
            value = data.get(name)
            if value is not None and (overwrite or getattr(stf, name) is None):
                setattr(stf, name, value)
        _run_state(run, data, time)

    def _stf_ready(self, ns: str, execution_id: str | None, number: int, time: str,
                   data: dict[str, Any]) -> None:
        run = self._run(ns, number, execution_id, time)
        filename = data.get("filename")  # optional: a canonical body may lack the key
        if filename is None:
            return  # upstream's per-run "data ready": a fact about the run only
        stf = self._stf(run, filename, time)
        if stf.ready_at is None or time < stf.ready_at:
            stf.ready_at = time
        for name in ("sequence", "file_url", "checksum", "size_bytes"):
            value = data.get(name)
            if value is not None:
                setattr(stf, name, value)

    def _tf_registered(self, ns: str, execution_id: str | None, number: int, time: str,
                       data: dict[str, Any]) -> None:
        run = self._run(ns, number, execution_id, time)
        name = data["tf_filename"]
        key = (ns, number, name)
        sample = self.samples.get(key)
        if sample is None and self.spill is not None and self.spill.recall_sample(self, key):
            sample = self.samples[key]
        if sample is None:
            sample = self.samples[key] = SampleRec(ns, number, name, time)
            run.samples.append(sample)
        else:
            _widen(sample, time)
        sample.seen = self.round
        stf_name = data["stf_filename"]
        if sample.stf_filename != stf_name:
            if sample.stf_filename is not None:
                self.stf_samples.get((ns, number, sample.stf_filename), set()).discard(name)
                self.d_stf_keys.add((ns, number, sample.stf_filename))
            sample.stf_filename = stf_name
            self.link(ns, number, stf_name, name)
            for piece in self.sample_slices.get(key, ()):
                if piece.stf_filename is None:
                    piece.stf_filename = stf_name
                    self.d_slices.add(piece)
        sample.tf_first = first = data["tf_first"]
        sample.tf_last = last = data["tf_last"]
        count = data.get("tf_count")
        if count is None and first is not None and last is not None:  # (a REST sample may
            count = last - first + 1  # name no range)
        sample.tf_count = count
        self.d_samples.add(sample)

    def _rest_stf_file(self, ns: str, execution_id: str | None, number: int, time: str,
                       data: dict[str, Any]) -> None:
        """POST /api/stf-files/: the data agent registers the file (as its stf_ready says)."""
        run = self._run(ns, number, execution_id, time)
        stf = self._stf(run, data["filename"], time)
        for name in ("sequence", "checksum", "size_bytes"):
            value = data.get(name)
            if value is not None:
                setattr(stf, name, value)

    def _rest_stf_touched(self, ns: str, execution_id: str | None, number: int, time: str,
                          data: dict[str, Any]) -> None:
        """PATCH /api/stf-files/{id}/: the agent's status word; the file's status is derived
        from its samples and slices, as for every file."""
        self._stf(self._run(ns, number, execution_id, time), data["filename"], time)

    def _rest_run_state(self, ns: str, execution_id: str | None, number: int, time: str,
                        _data: dict[str, Any]) -> None:
        """POST /api/run-states/: upstream's runner creates the run's record before announcing
        it, naming its execution. Phase and state then follow the DAQ's messages (the fast
        processing agent's run-state PATCHes mirror those: not folded a second time)."""
        run = self._run(ns, number, None, time)
        if execution_id is not None and run.execution_id != execution_id:
            self.attach(run, execution_id)
        if run.phase is None:
            run.phase = "imminent"
            run.state_changed_at = time
        elif run.phase == "imminent" and time < run.state_changed_at:  # type: ignore[operator]
            run.state_changed_at = time  # the earliest announcement, in any order

    def _rest_run_state_update(self, ns: str, execution_id: str | None, number: int,
                               time: str, data: dict[str, Any]) -> None:
        """PATCH /api/run-states/{run}/: the fast processing agent mirrors the DAQ's messages
        into the run's record. Only its end counts (the earliest end wins, in any order):
        the phase and state otherwise follow the DAQ's own messages."""
        run = self._run(ns, number, execution_id, time)
        if data.get("phase") == "completed" and (
                run.phase != "completed" or time < run.state_changed_at):  # type: ignore[operator]
            run.phase = "completed"
            run.state_changed_at = time

    # -- slices --------------------------------------------------------------------------------

    def _slice(self, ns: str, execution_id: str | None, number: int, time: str,
               data: dict[str, Any]) -> None:
        self.slice_fields(ns, execution_id, number, time, data["tf_filename"], data["slice_id"],
                          data.get("stf_filename"), data["start"], data["end"],
                          data.get("tf_count"), data.get("retry"))

    def slice_fields(self, ns: str, execution_id: str | None, number: int, time: str,
                     tf_filename: Any, slice_id: Any, stf_filename: Any, start: Any, end: Any,
                     tf_count: Any, retry: Any) -> None:
        """A `slice` message, by the fields the fold reads of it (``reads.SLICE_FIELDS``: a
        packed chunk carries them as SQLite extracted them)."""
        run = self._current  # hot path: the run's times follow from its slices' (derive.py)
        if (run is None or run.run != number or run.ns != ns
                or (execution_id is not None and run.execution_id is None)):
            run = self._run(ns, number, execution_id, time)
        if self.spill is not None and (ns, number, tf_filename) not in self.samples:
            self.spill.recall_sample(self, (ns, number, tf_filename))  # before it is linked
        key = (ns, number, tf_filename, slice_id)
        piece = self.slices.get(key)  # (inline: the two hottest handlers)
        if piece is None:  # (the run's ns and number, the names shared: see _shared)
            key = (run.ns, run.run, _shared(tf_filename), slice_id)
            piece = self.slices[key] = SliceRec(run.ns, run.run, key[2], slice_id, time)
        elif time > piece.updated_at:  # type: ignore[operator]
            piece.updated_at = time
        elif time < piece.created_at:  # type: ignore[operator]
            piece.created_at = time
        piece.seen = self.round
        self.d_slices.add(piece)
        if not piece.announced:
            self.announce(run, piece)
        if stf_filename != piece.stf_filename:
            sample = self.samples.get((ns, number, tf_filename))
            if stf_filename is None:
                stf_filename = sample.stf_filename if sample is not None else None
            if stf_filename is not None and stf_filename != piece.stf_filename:
                piece.stf_filename = stf_filename = _shared(stf_filename)
                if sample is None or sample.stf_filename != stf_filename:  # else linked already
                    self.link(ns, number, stf_filename, tf_filename)
        piece.start = start
        piece.end = end
        piece.tf_count = tf_count
        retry = retry or 0
        order = retry * ATTEMPT  # rank 0: queued
        if order > piece.order:  # a re-queue: a new attempt starts
            piece.order = order
            piece.status = "queued"
            piece.retries = retry
            piece.worker = None
            piece.error = None

    def _slice_result(self, ns: str, execution_id: str | None, number: int, time: str,
                      data: dict[str, Any]) -> None:
        slice_id = data.get("slice_id")  # optional: a canonical body may lack the key
        if slice_id is None:  # a failure without the slice's identity
            self._unmatched_failure(self._run(ns, number, execution_id, time), time, data)
            return
        self.result_fields(ns, execution_id, number, time, slice_id, data.get("tf_filename"),
                           data.get("retry"), data["status"], data.get("worker"),
                           data.get("error"))

    def result_fields(self, ns: str, execution_id: str | None, number: int, time: str,
                      slice_id: Any, tf_filename: Any, retry: Any, status: Any, worker: Any,
                      error: Any) -> None:
        """A `slice_result` naming its slice, by the fields the fold reads of it
        (``reads.RESULT_FIELDS``: a packed chunk carries them as SQLite extracted them)."""
        run = self._current  # hot path: the run's times follow from its slices' (derive.py)
        if (run is None or run.run != number or run.ns != ns
                or (execution_id is not None and run.execution_id is None)):
            run = self._run(ns, number, execution_id, time)
        key = (ns, number, tf_filename or "", slice_id)
        piece = self.slices.get(key)  # (inline: the two hottest handlers)
        if (piece is None and self.spill is not None
                and self.spill.recall_sample(self, (ns, number, key[2]))):
            piece = self.slices.get(key)
        if piece is None:
            key = (run.ns, run.run, _shared(key[2]), slice_id)
            piece = self.slices[key] = SliceRec(run.ns, run.run, key[2], slice_id, time)
        elif time > piece.updated_at:  # type: ignore[operator]
            piece.updated_at = time
        elif time < piece.created_at:  # type: ignore[operator]
            piece.created_at = time
        piece.seen = self.round
        self.d_slices.add(piece)
        if retry is None:  # no attempt given: it reports on the current one
            retry = piece.retries
        order = retry * ATTEMPT + RANK[status]
        if order > piece.order:
            piece.order = order
            piece.status = _intern(status)  # (a str: a key of RANK)
            piece.retries = retry
            if worker != piece.worker:  # (a slice's reports mostly name one worker)
                piece.worker = _shared(worker)
            piece.error = error

    def _rest_slice_result(self, ns: str, execution_id: str | None, number: int, time: str,
                           data: dict[str, Any]) -> None:
        """PATCH /api/tf-slices/{id}/: the agent's copy of a worker's result, for the slice the
        result names: the same fact as the slice_result (ranks make a repeat change nothing)."""
        if data.get("status") is None:  # a status word that is no slice status
            self._run(ns, number, execution_id, time)
            return
        self._slice_result(ns, execution_id, number, time, data)

    def _unmatched_failure(self, run: RunRec, time: str, data: dict[str, Any]) -> None:
        worker = data.get("worker") or ""
        run.failures[(time, worker)] = value = (data.get("error"), data.get("panda_task_id"),
                                                data.get("panda_id"))
        self.new_failures[(run.ns, run.run, time, worker)] = (run.run, run.ns, time, worker,
                                                               *value)

    # -- datasets and tasks --------------------------------------------------------------------

    def _dataset(self, ns: str, execution_id: str | None, number: int, time: str,
                 data: dict[str, Any]) -> tuple[DatasetRec, str | None]:
        run = self._run(ns, number, execution_id, time)
        key = (ns, number, data["scope"], data["dataset"])
        dataset = self.datasets.get(key)
        if dataset is None:
            dataset = self.datasets[key] = DatasetRec(ns, number, key[2], key[3], time)
            run.datasets.append(dataset)
        else:
            _widen(dataset, time)
        self.d_datasets.add(dataset)
        outcome = data.get("outcome")
        if outcome == "error" and (dataset.error_at is None or time >= dataset.error_at):
            dataset.error = data.get("error") or "error"
            dataset.error_at = time
        return dataset, outcome

    def _dataset_opened(self, ns: str, execution_id: str | None, number: int, time: str,
                        data: dict[str, Any]) -> None:
        dataset, outcome = self._dataset(ns, execution_id, number, time, data)
        if outcome == "exists" and data.get("is_open") is False:
            dataset.state = "closed"  # a re-run found its dataset closed already: it stays so
        elif outcome in OPEN_OUTCOMES:
            if dataset.state != "closed":
                dataset.state = "open"
            if dataset.opened_at is None or time < dataset.opened_at:
                dataset.opened_at = time

    def _file_attached(self, ns: str, execution_id: str | None, number: int, time: str,
                       data: dict[str, Any]) -> None:
        dataset, outcome = self._dataset(ns, execution_id, number, time, data)
        if outcome != "ok":  # 'duplicate': not attached twice; 'error': recorded above
            return
        name = data["name"]
        entry = dataset.files.get(name)
        if entry is None:
            dataset.files[name] = FileRec(name, data.get("size_bytes"), data.get("checksum"),
                                          time)
        else:
            if data.get("size_bytes") is not None:
                entry.size_bytes = data["size_bytes"]
            if data.get("checksum") is not None:
                entry.checksum = data["checksum"]
            if entry.attached_at is None or time < entry.attached_at:
                entry.attached_at = time
        dataset.dirty_files.add(name)

    def _dataset_closed(self, ns: str, execution_id: str | None, number: int, time: str,
                        data: dict[str, Any]) -> None:
        dataset, outcome = self._dataset(ns, execution_id, number, time, data)
        if outcome == "ok":
            dataset.state = "closed"
            if dataset.closed_at is None or time < dataset.closed_at:
                dataset.closed_at = time

    def _task(self, ns: str, execution_id: str | None, number: int, time: str,
              data: dict[str, Any]) -> TaskRec:
        run = self._run(ns, number, execution_id, time)
        task_key = data.get("task_id") or 0
        key = (ns, number, task_key)
        task = self.tasks.get(key)
        if task is None:
            task = self.tasks[key] = TaskRec(ns, number, task_key)
            run.tasks.append(task)
        if task.updated_at is None or time >= task.updated_at:
            task.status = data["status"]
            task.error = data.get("error")
            task.updated_at = time
        self.d_tasks.add(task)
        return task

    def _task_submitted(self, ns: str, execution_id: str | None, number: int, time: str,
                        data: dict[str, Any]) -> None:
        task = self._task(ns, execution_id, number, time, data)
        if task.submitted_at is None or time < task.submitted_at:
            task.submitted_at = time
        if data.get("input_dataset") is not None:
            task.input_dataset = data["input_dataset"]

    def _task_status(self, ns: str, execution_id: str | None, number: int, time: str,
                     data: dict[str, Any]) -> None:
        self._task(ns, execution_id, number, time, data)

    # -- the PanDA/iDDS workflow task (upstream) ----------------------------------------------

    def _workflow_task(self, ns: str, execution_id: str | None, number: int, time: str,
                       data: dict[str, Any], state: str | None) -> WorkflowTaskRec:
        run = self._run(ns, number, execution_id, time)
        task = run.workflow_task
        if task is None:
            task = run.workflow_task = WorkflowTaskRec(ns, number, time)
        else:
            _widen(task, time)
        if state is not None and (task.state is None
                                  or TASK_STATES[state] > TASK_STATES[task.state]):
            task.state = state
        if (data.get("request_id") is not None or data.get("transform_id") is not None
                or data.get("workload_id") is not None) and (task.ids_at is None
                                                             or time < task.ids_at):
            task.ids_at = time
            task.request_id = _text(data.get("request_id"))
            task.transform_id = _text(data.get("transform_id"))
            task.workload_id = _text(data.get("workload_id"))
        status = data.get("status")
        if status is not None and (task.status_at is None or time >= task.status_at):
            task.status = status
            task.status_at = time
        self.d_wtasks.add(task)
        return task

    def _request(self, ns: str, number: int, time: str, msg_type: str, data: dict[str, Any],
                 target: Any = None) -> None:
        key = (ns, number, time, msg_type)
        self.requests[key] = (number, ns, time, msg_type, target, data.get("core_count"),
                              data.get("memory_per_core"), data.get("site"), data.get("status"))
        self.d_requests.add(key)

    def _worker_announced(self, ns: str, execution_id: str | None, number: int, time: str,
                          data: dict[str, Any]) -> None:
        """run_imminent_worker: the fast processing agent tells the workers what the run needs
        (not a run_imminent: its content is one, forwarded)."""
        task = self._workflow_task(ns, execution_id, number, time, data, "announced")
        if task.announced_at is None or time < task.announced_at:
            task.announced_at = time
            task.target_workers = data.get("target_worker_count")
        self._request(ns, number, time, "run_imminent_worker", data,
                      data.get("target_worker_count"))

    def _task_requested(self, ns: str, execution_id: str | None, number: int, time: str,
                        data: dict[str, Any]) -> None:
        task = self._workflow_task(ns, execution_id, number, time, data, "requested")
        if task.requested_at is None or time < task.requested_at:
            task.requested_at = time
            task.requested_cores = data.get("core_count")
            task.memory_per_core = data.get("memory_per_core")
            task.site = data.get("site")
            task.task_name = data.get("task_name")
            task.scope = data.get("scope")
        self._request(ns, number, time, "create_workflow_task", data,
                      data.get("target_worker_count"))

    def _task_created(self, ns: str, execution_id: str | None, number: int, time: str,
                      data: dict[str, Any]) -> None:
        self._workflow_task(ns, execution_id, number, time, data, "created")

    def _workers_adjusted(self, ns: str, execution_id: str | None, number: int, time: str,
                          data: dict[str, Any]) -> None:
        """adjust_worker (the transceiver's request) and adjusted_worker (iDDS's answer)."""
        task = self._workflow_task(ns, execution_id, number, time, data, None)
        if data.get("core_count") is not None and (task.adjusted_at is None
                                                   or time >= task.adjusted_at):
            task.adjusted_cores = data["core_count"]
            task.adjusted_at = time
        self._request(ns, number, time, data["msg_type"], data)

    def _task_closing(self, ns: str, execution_id: str | None, number: int, time: str,
                      data: dict[str, Any]) -> None:
        self._workflow_task(ns, execution_id, number, time, data, "closing")

    def _task_closed(self, ns: str, execution_id: str | None, number: int, time: str,
                     data: dict[str, Any]) -> None:
        task = self._workflow_task(ns, execution_id, number, time, data, "closed")
        if task.closed_at is None or time < task.closed_at:
            task.closed_at = time

    def _transformers_stopped(self, ns: str, execution_id: str | None, number: int, time: str,
                              data: dict[str, Any]) -> None:
        task = self._workflow_task(ns, execution_id, number, time, data, None)
        if task.stop_requested_at is None or time < task.stop_requested_at:
            task.stop_requested_at = time

    def _runner_started(self, execution: ExecRec, sender: str, time: str) -> None:
        """An upstream runner announced ``execution``: the runner runs one workflow at a time
        (swf-testbed workflows/workflow_runner.py:747-755), so an earlier execution of it that
        never ended is over (derive.execution_status)."""
        if execution.daq_sender is None:
            execution.daq_sender = sender
        elif execution.daq_sender != sender:
            return
        if execution.started_at is not None and time >= execution.started_at:
            return
        execution.started_at = time
        key = (execution.ns, sender)
        self.daq_starts.setdefault(key, {})[execution.execution_id] = time
        self.d_execs.update(e for e in self.execs.values()
                            if e.ns == execution.ns and e.daq_sender == sender)

    # -- workflow control ------------------------------------------------------------------------

    def _command(self, position: int, msg_type: str, ns: str, execution_id: str | None,
                 sender: str | None, time: str, data: dict[str, Any]) -> None:
        params = data.get("params")
        self.commands[position] = (
            position, time, ns, msg_type, execution_id, data.get("workflow_name"), sender,
            data.get("config"), data.get("realtime"),
            None if params is None else orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
            .decode())
        self.d_commands.add(position)
        if msg_type == "stop_workflow":
            self.stops.setdefault(ns, {})[position] = (time, execution_id)
            # Which execution it stops is derived at flush (derive.execution_status).
            self.d_execs.update(e for e in self.execs.values() if e.ns == ns)

    # -- upstream's runner over REST -------------------------------------------------------------

    def _declared(self, msg_type: str, ns: str, execution_id: str, time: str,
                  data: dict[str, Any]) -> None:
        """What the runner says of its execution: created (with its parameters, definition,
        start) and how it ended. The latest word by time is its status."""
        execution = self.execution(ns, execution_id)
        if msg_type == "rest_execution":
            if data.get("workflow") is not None:
                execution.workflow = data["workflow"]
            execution.parameters = data.get("parameters")
            execution.executed_by = data.get("executed_by")
            execution.definition_id = data.get("workflow_definition")
            start = data.get("start_time")
            if start is not None and (execution.declared_start is None
                                      or start < execution.declared_start):
                execution.declared_start = start
        status = data.get("status")
        if status is not None and (execution.declared_at is None
                                   or time >= execution.declared_at):
            execution.declared_status = status
            execution.declared_at = time
            if status in FINAL_STATUSES:
                execution.declared_end = data.get("end_time") or time
        self.d_execs.add(execution)

    def _definition(self, time: str, data: dict[str, Any]) -> None:
        key = (data["workflow_name"], data["version"])
        self.definitions[key] = (
            key[0], key[1], data["definition_id"], data.get("workflow_type"),
            data.get("definition"),
            orjson.dumps(data.get("parameter_values"), option=orjson.OPT_SORT_KEYS).decode(),
            data.get("created_by"), time)
        self.d_definitions.add(key)

    # -- agents --------------------------------------------------------------------------------

    def _heartbeat(self, ns: str, sender: str | None, time: str, data: dict[str, Any]) -> None:
        key = (ns, sender or "")
        agent = self.agents.get(key)
        if agent is None:
            agent = self.agents[key] = AgentRec(ns, key[1], time)
        elif agent.first_seen is None or time < agent.first_seen:
            agent.first_seen = time
        if agent.last_heartbeat is None or time >= agent.last_heartbeat:
            agent.last_heartbeat = time
            agent.agent_type = data.get("agent_type")
            agent.status = data.get("status")
            agent.operational_state = data.get("operational_state")
            agent.pid = data.get("pid")
            agent.hostname = data.get("hostname")
        self.d_agents.add(agent)


_intern = sys.intern


def _shared(value: Any) -> Any:
    """One copy of a string many slices hold (a file name, a worker; statuses are interned
    directly): parsed anew from each body, every slice kept copies of its own, with the
    namespace and run number a quarter of a rebuild's memory. Interned
    (CPython frees an interned string no longer referenced); anything else as it is (a body
    trusted as canonical is not type-checked again)."""
    return _intern(value) if type(value) is str else value


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _widen(record: Any, time: str) -> None:
    """created_at/updated_at are the min/max event time: the same in any arrival order."""
    if record.created_at is None or time < record.created_at:
        record.created_at = time
    if record.updated_at is None or time > record.updated_at:
        record.updated_at = time


def _phase(run: RunRec, phase: str, time: str) -> None:
    """The latest run-control message by event time decides the phase (``state_changed_at`` is
    its time); ``imminent`` yields to any of them, ``completed`` to none."""
    current = run.phase
    if current == "completed":
        return
    if current is None or current == "imminent" or time >= run.state_changed_at:  # type: ignore[operator]
        run.phase = phase
        run.state_changed_at = time


def _run_state(run: RunRec, data: dict[str, Any], time: str) -> None:
    """state/substate: from the latest message that stamps them, but none newer than end_run
    (whose own stamp, if any, is then the last word): the same in any arrival order."""
    state, substate = data.get("state"), data.get("substate")
    if state is None and substate is None:
        return
    if run.phase == "completed" and time > run.state_changed_at:  # type: ignore[operator]
        return
    if run.state_at is None or time >= run.state_at:
        if state is not None:
            run.state = state
        if substate is not None:
            run.substate = substate
        run.state_at = time
