"""The PanDA worker pool: ``target_worker_count`` workers take slices from the slice queue.

Every decision is a function of the log, never of how two streams happen to interleave:

- The worker of a slice is a function of the slice alone: the slices of one sample go to
  consecutive workers from an offset derived from the sample's name, and each retry moves to the
  next worker (``worker_for``).
- Each worker takes its slices first in first out, in the order the slice queue delivered them
  (the order the log holds them in). A slice starts once it is there and the worker's previous
  slice has its final result (the pool sees its own results: the runtime hands every agent its
  own messages). The start is one decision with two inputs, so it does not depend on which came
  last: its ids derive from the slice, its time is the later of the slice's and that result's.

A started worker reports ``processing`` and runs the payload (a "payload" Command whose reply,
the final ``slice_result``, is due ``slice_processing_time`` later).
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agents.base import Agent, Command, Output, Send, derive_id, shift
from agents.config import param
from eventstore.envelope import RESULT_QUEUE, SLICE_QUEUE, TOPIC, Event

log = logging.getLogger("swf.agent.worker")
_FINAL = ("completed", "failed")
# A run's settings, looked up once: worker count, processing time, payload command and timeout,
# failure knobs (``_failure_knobs``).
_Settings = tuple[int, float, str, float, tuple[int, float, Any]]


def injected_failure(params: dict[str, Any] | None, tf_filename: str, slice_id: int,
                     retry: int) -> bool:
    """Whether the failure knobs make this attempt fail: seeded, independent of timing."""
    return _fails(_failure_knobs(params or {}), tf_filename, slice_id, retry)


def _failure_knobs(params: dict[str, Any]) -> tuple[int, float, Any]:
    """(fail_attempts, failure_fraction, seed) of a run's parameters."""
    return (int(param(params, "workers.fail_attempts")),
            float(param(params, "workers.failure_fraction")), params.get("seed", 0))


def _fails(knobs: tuple[int, float, Any], tf_filename: str, slice_id: int, retry: int) -> bool:
    attempts, fraction, seed = knobs
    if retry < attempts:
        return True
    if fraction <= 0.0:
        return False
    # The top 53 bits of a derived UUID: a uniform draw in [0, 1) that only depends on the attempt.
    draw = int(derive_id(seed, tf_filename, slice_id, retry).replace("-", ""), 16) >> 75
    return draw / float(1 << 53) < fraction


def worker_name(index: int) -> str:
    return f"worker-{index:02d}"


def worker_for(tf_filename: str, slice_id: int, retry: int, workers: int) -> int:
    """The worker (1..workers) of one attempt at a slice: a sample's slices on consecutive
    workers from an offset derived from its name, each retry on the next one."""
    return (_sample_offset(tf_filename) + slice_id + retry) % max(1, workers) + 1


@functools.lru_cache(maxsize=1024)  # a sample's slices come together: one derivation each
def _sample_offset(tf_filename: str) -> int:
    return int(derive_id("worker", tf_filename).replace("-", "")[:8], 16)


@dataclass(slots=True)
class _Worker:
    waiting: deque[Event] = field(default_factory=deque)  # slices not started, FIFO
    busy: tuple[str, int, int] | None = None  # (tf_filename, slice_id, retry) running
    free_at: str | None = None  # time of the final result of its last slice


@dataclass
class WorkerPool(Agent):
    agent_type: ClassVar[str] = "worker"
    subscriptions: ClassVar[tuple[str, ...]] = (TOPIC, SLICE_QUEUE)  # run_imminent: params
    params: dict[int | None, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    _workers: dict[int, _Worker] = field(default_factory=dict, init=False, repr=False)
    _seen: set[tuple[int | None, str, int, int]] = field(default_factory=set, init=False,
                                                          repr=False)
    _cache: dict[int | None, _Settings] = field(default_factory=dict, init=False, repr=False)

    def handle(self, event: Event) -> list[Output]:
        data = event.data or {}
        kind = event.msg_type
        if kind == "run_imminent":
            self.params[event.run_id] = data.get("workflow_params") or {}
            self._cache.pop(event.run_id, None)
        elif kind == "slice":
            key = (event.run_id, data["tf_filename"], data["slice_id"], data["retry"])
            if key in self._seen:
                return []
            self._seen.add(key)
            count = self._settings(event.run_id)[0]
            index = worker_for(data["tf_filename"], data["slice_id"], data["retry"], count)
            worker = self._workers.setdefault(index, _Worker())
            worker.waiting.append(event)
            return self._next(index, worker)
        elif kind == "slice_result" and event.sender == self.name and data["status"] in _FINAL:
            return self._release(event, data)
        return []

    def _release(self, event: Event, data: dict[str, Any]) -> list[Output]:
        index = int(str(data.get("worker") or "").rpartition("-")[2] or 0)
        worker = self._workers.get(index)
        if worker is None or worker.busy != (data["tf_filename"], data["slice_id"],
                                             data.get("retry")):
            return []  # not the slice this worker holds (a redelivered result)
        worker.busy, worker.free_at = None, event.time
        return self._next(index, worker)

    def _next(self, index: int, worker: _Worker) -> list[Output]:
        """Start the worker's next slice if it is free and one is waiting."""
        if worker.busy is not None or not worker.waiting:
            return []
        work = worker.waiting.popleft()
        start = work.time if worker.free_at is None or work.time >= worker.free_at \
            else worker.free_at
        return self._start(index, worker, work, start)

    def _start(self, index: int, worker: _Worker, work: Event, start: str) -> list[Output]:
        """Worker ``index`` starts the slice ``work`` at ``start``."""
        data = work.data or {}
        _count, duration, command_line, timeout, knobs = self._settings(work.run_id)
        name, slice_id, retry = data["tf_filename"], data["slice_id"], data["retry"]
        worker.busy = (name, slice_id, retry)
        label = worker_name(index)
        fields = {"slice_id": slice_id, "tf_filename": name, "worker": label, "retry": retry,
                  "error": None}
        started = self.message("slice_result", work, time=start,
                               key=("processing", (name, slice_id, retry)),
                               status="processing", **fields)
        finish = shift(start, duration)
        result = self.message("slice_result", work, time=finish,
                              key=("slice_result", (name, slice_id, retry, "result")),
                              status=None, **fields)
        command = Command("payload", "run_slice", {
            "tf_filename": name, "stf_filename": data.get("stf_filename"),
            "slice_id": slice_id, "start": data["start"], "end": data["end"],
            "retry": retry, "run_id": work.run_id, "worker": label,
            "inject_failure": _fails(knobs, name, slice_id, retry),
            "payload_command": command_line,
            "timeout": timeout,
        }, reply=result, destination=RESULT_QUEUE, at=finish)
        return [Send(started, RESULT_QUEUE), command]

    def _settings(self, run_id: int | None) -> _Settings:
        settings = self._cache.get(run_id)
        if settings is None:
            params = self.params.get(run_id, {})  # a run never announced: the defaults
            settings = self._cache[run_id] = (
                int(param(params, "fast_processing.target_worker_count")),
                float(param(params, "fast_processing.slice_processing_time")),
                str(param(params, "workers.payload_command")),
                float(param(params, "workers.payload_timeout")),
                _failure_knobs(params))
        return settings
