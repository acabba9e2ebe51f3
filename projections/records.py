"""The fold's in-memory state: one small record per projected row, plus the indexes that link
them. Records are mutated in place by the fold and rendered to rows when a batch is flushed.

Every field that later events are compared against (times that order "latest wins" updates,
the slice attempt/rank) is a column too, so a record loaded back from its row folds on exactly
as if it had never left memory: incremental catch-up equals rebuild.
"""

from __future__ import annotations

from typing import Any

# Slice status ranks within one attempt: a later report never moves a slice back.
RANK = {"queued": 0, "processing": 1, "failed": 2, "completed": 3}
ATTEMPT = 4  # order = attempt * ATTEMPT + rank: one int compare decides if a report is newer
MAX_RETRIES = 3  # a slice failed on its 3rd retry is failed for good

RunKey = tuple[str, int]
ItemKey = tuple[str, int, str]  # (namespace, run_number, file name)


class RunRec:
    __slots__ = ("ns", "run", "execution_id", "phase", "state", "substate", "state_at",
                 "total_stf_files", "outcome", "outcome_error", "processed_at",
                 "state_changed_at", "created_at", "updated_at", "stfs", "samples", "slices",
                 "datasets", "tasks", "full", "counts", "expects_outcome", "failures",
                 "stored_failures", "workflow_task", "spilled")

    def __init__(self, ns: str, run: int, time: str | None) -> None:
        self.ns = ns
        self.run = run
        self.execution_id: str | None = None
        self.phase: str | None = None
        self.state: str | None = None
        self.substate: str | None = None
        self.state_at: str | None = None
        self.total_stf_files: int | None = None
        self.outcome: str | None = None
        self.outcome_error: str | None = None
        self.processed_at: str | None = None
        self.state_changed_at: str | None = None
        self.created_at = time
        self.updated_at = time
        self.stfs: list[StfRec] = []
        self.samples: list[SampleRec] = []
        self.slices: list[SliceRec] = []  # announced slices only (not unmatched results)
        self.datasets: list[DatasetRec] = []
        self.tasks: list[TaskRec] = []
        self.full = True  # False: only the run_state row is loaded (its counts are as stored)
        # stf, samples, slices created/queued/processing/completed/failed, retries
        self.counts: tuple[int, ...] = (0, 0, 0, 0, 0, 0, 0, 0)
        self.expects_outcome = False  # our DAQ announced it: run_processed will say how it went
        # Failed results naming no slice: (time, worker or '') -> (error, panda task, panda id)
        self.failures: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self.stored_failures = 0  # the row's count, while the run is not loaded whole
        self.workflow_task: WorkflowTaskRec | None = None
        # What of the run a rebuild moved out of memory (``spill.py``), added to its counts:
        # STF files, samples, slices, then slices queued/processing/completed/failed, retries.
        self.spilled: list[int] | None = None

    @property
    def failure_count(self) -> int:
        return len(self.failures) if self.full else self.stored_failures


class ExecRec:
    __slots__ = ("ns", "execution_id", "workflow", "parameters", "runs", "daq_sender",
                 "started_at", "declared_status", "declared_at", "declared_start",
                 "declared_end", "executed_by", "definition_id")

    def __init__(self, ns: str, execution_id: str) -> None:
        self.ns = ns
        self.execution_id = execution_id
        self.workflow: str | None = None
        self.parameters: Any = None
        self.runs: set[RunRec] = set()
        # An upstream execution: the runner that announced it, and when (its earliest
        # run_imminent). The runner runs one workflow at a time.
        self.daq_sender: str | None = None
        self.started_at: str | None = None
        # What upstream's runner said of it over REST (POST/PATCH /api/workflow-executions/):
        # its latest status and when, its start and end times, who ran it, its definition.
        self.declared_status: str | None = None
        self.declared_at: str | None = None
        self.declared_start: str | None = None
        self.declared_end: str | None = None
        self.executed_by: str | None = None
        self.definition_id: int | None = None


class StfRec:
    __slots__ = ("ns", "run", "filename", "sequence", "size_bytes", "checksum", "file_url",
                 "generated_at", "ready_at", "created_at", "updated_at", "status", "seen")

    def __init__(self, ns: str, run: int, filename: str, time: str | None) -> None:
        self.ns = ns
        self.run = run
        self.filename = filename
        self.sequence: int | None = None
        self.size_bytes: int | None = None
        self.checksum: str | None = None
        self.file_url: str | None = None
        self.generated_at: str | None = None
        self.ready_at: str | None = None
        self.created_at = time
        self.updated_at = time
        self.status = "registered"
        self.seen = 0  # the fold's round that last touched it (``Fold.round``)


class SampleRec:
    __slots__ = ("ns", "run", "tf_filename", "stf_filename", "tf_first", "tf_last", "tf_count",
                 "created_at", "updated_at", "status", "seen")

    def __init__(self, ns: str, run: int, tf_filename: str, time: str | None) -> None:
        self.ns = ns
        self.run = run
        self.tf_filename = tf_filename
        self.stf_filename: str | None = None
        self.tf_first: int | None = None
        self.tf_last: int | None = None
        self.tf_count: int | None = None
        self.created_at = time
        self.updated_at = time
        self.status = "registered"
        self.seen = 0


class SliceRec:
    __slots__ = ("ns", "run", "tf_filename", "slice_id", "stf_filename", "start", "end",
                 "tf_count", "status", "retries", "order", "worker", "error", "created_at",
                 "updated_at", "announced", "in_db", "seen")

    def __init__(self, ns: str, run: int, tf_filename: str, slice_id: int, time: str | None
                 ) -> None:
        self.ns = ns
        self.run = run
        self.tf_filename = tf_filename
        self.slice_id = slice_id
        self.stf_filename: str | None = None
        self.start: int | None = None
        self.end: int | None = None
        self.tf_count: int | None = None
        self.status = "queued"
        self.retries = 0
        self.order = -1  # nothing reported yet: any report is newer
        self.worker: str | None = None
        self.error: str | None = None
        self.created_at = time
        self.updated_at = time
        self.announced = False  # a `slice` message was seen (else: an unmatched result)
        self.in_db: str | None = None  # which table holds its row: None, "slice", "unmatched"
        self.seen = 0

    @property
    def final(self) -> bool:
        return self.status == "failed" and self.retries >= MAX_RETRIES


class FileRec:
    __slots__ = ("name", "size_bytes", "checksum", "attached_at")

    def __init__(self, name: str, size_bytes: int | None, checksum: str | None,
                 attached_at: str | None) -> None:
        self.name = name
        self.size_bytes = size_bytes
        self.checksum = checksum
        self.attached_at = attached_at


class DatasetRec:
    __slots__ = ("ns", "run", "scope", "name", "state", "error", "error_at", "opened_at",
                 "closed_at", "created_at", "updated_at", "files", "dirty_files")

    def __init__(self, ns: str, run: int, scope: str, name: str, time: str | None) -> None:
        self.ns = ns
        self.run = run
        self.scope = scope
        self.name = name
        self.state: str | None = None
        self.error: str | None = None
        self.error_at: str | None = None
        self.opened_at: str | None = None
        self.closed_at: str | None = None
        self.created_at = time
        self.updated_at = time
        self.files: dict[str, FileRec] = {}
        self.dirty_files: set[str] = set()


class TaskRec:
    __slots__ = ("ns", "run", "task_key", "task_id", "input_dataset", "status", "error",
                 "submitted_at", "updated_at")

    def __init__(self, ns: str, run: int, task_key: int) -> None:
        self.ns = ns
        self.run = run
        self.task_key = task_key
        self.task_id: int | None = task_key or None
        self.input_dataset: str | None = None
        self.status: str | None = None
        self.error: str | None = None
        self.submitted_at: str | None = None
        self.updated_at: str | None = None


# The PanDA/iDDS workflow task's progress: a later state never moves it back.
TASK_STATES = {"announced": 0, "requested": 1, "created": 2, "closing": 3, "closed": 4}


class WorkflowTaskRec:
    __slots__ = ("ns", "run", "state", "status", "task_name", "scope", "site", "request_id",
                 "transform_id", "workload_id", "target_workers", "requested_cores",
                 "memory_per_core", "adjusted_cores", "announced_at", "requested_at", "ids_at",
                 "adjusted_at", "status_at", "stop_requested_at", "closed_at", "created_at",
                 "updated_at")

    def __init__(self, ns: str, run: int, time: str | None) -> None:
        self.ns = ns
        self.run = run
        self.state: str | None = None
        self.status: str | None = None
        self.task_name: str | None = None
        self.scope: str | None = None
        self.site: str | None = None
        self.request_id: str | None = None
        self.transform_id: str | None = None
        self.workload_id: str | None = None
        self.target_workers: int | None = None
        self.requested_cores: int | None = None
        self.memory_per_core: float | None = None
        self.adjusted_cores: int | None = None
        self.announced_at: str | None = None
        self.requested_at: str | None = None
        self.ids_at: str | None = None
        self.adjusted_at: str | None = None
        self.status_at: str | None = None
        self.stop_requested_at: str | None = None
        self.closed_at: str | None = None
        self.created_at = time
        self.updated_at = time


class AgentRec:
    __slots__ = ("ns", "name", "agent_type", "status", "operational_state", "pid", "hostname",
                 "first_seen", "last_heartbeat")

    def __init__(self, ns: str, name: str, time: str | None) -> None:
        self.ns = ns
        self.name = name
        self.agent_type: str | None = None
        self.status: str | None = None
        self.operational_state: str | None = None
        self.pid: int | None = None
        self.hostname: str | None = None
        self.first_seen = time
        self.last_heartbeat: str | None = None
