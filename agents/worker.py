"""The PanDA worker pool: ``target_worker_count`` workers take slices from the slice queue.

A free worker reports ``processing`` and runs the payload (a "payload" Command whose reply, the
final ``slice_result``, is due ``slice_processing_time`` later). The pool sees its own results
come back (the runtime hands every agent its own messages), frees the worker and gives it the
next queued slice, first in first out.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agents.base import Agent, Command, Output, Send, derive_id, shift
from agents.config import param
from eventstore.envelope import RESULT_QUEUE, SLICE_QUEUE, TOPIC, Event

log = logging.getLogger("swf.agent.worker")
_FINAL = ("completed", "failed")


def injected_failure(params: dict[str, Any] | None, tf_filename: str, slice_id: int,
                     retry: int) -> bool:
    """Whether the failure knobs make this attempt fail: seeded, independent of timing."""
    params = params or {}
    if retry < int(param(params, "workers.fail_attempts")):
        return True
    fraction = float(param(params, "workers.failure_fraction"))
    if fraction <= 0.0:
        return False
    # The top 53 bits of a derived UUID: a uniform draw in [0, 1) that only depends on the attempt.
    draw = int(derive_id(params.get("seed", 0), tf_filename, slice_id, retry)
               .replace("-", ""), 16) >> 75
    return draw / float(1 << 53) < fraction


def worker_name(index: int) -> str:
    return f"worker-{index:02d}"


@dataclass
class WorkerPool(Agent):
    agent_type: ClassVar[str] = "worker"
    subscriptions: ClassVar[tuple[str, ...]] = (TOPIC, SLICE_QUEUE)  # run_imminent: params
    params: dict[int | None, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    size: int = field(default=0, init=False)
    _free: list[int] = field(default_factory=list, init=False, repr=False)  # heap of indexes
    _busy: dict[int, tuple[str, int, int]] = field(default_factory=dict, init=False, repr=False)
    _waiting: deque[Event] = field(default_factory=deque, init=False, repr=False)
    _seen: set[tuple[int | None, str, int, int]] = field(default_factory=set, init=False,
                                                          repr=False)
    _cache: dict[int | None, tuple[float, str, float]] = field(default_factory=dict, init=False,
                                                                repr=False)

    def handle(self, event: Event) -> list[Output]:
        data = event.data or {}
        kind = event.msg_type
        if kind == "run_imminent":
            params = data.get("workflow_params") or {}
            self.params[event.run_id] = params
            self._cache.pop(event.run_id, None)
            self._grow(int(param(params, "fast_processing.target_worker_count")))
        elif kind == "slice":
            key = (event.run_id, data["tf_filename"], data["slice_id"], data["retry"])
            if key in self._seen:
                return []
            self._seen.add(key)
            if not self.size:  # slices from a run we never saw announced
                self._grow(int(param({}, "fast_processing.target_worker_count")))
            if not self._free:
                self._waiting.append(event)
                return []
            return self._assign(heapq.heappop(self._free), event, event)
        elif kind == "slice_result" and event.sender == self.name and data["status"] in _FINAL:
            return self._release(event, data)
        return []

    def _grow(self, size: int) -> None:
        for index in range(self.size + 1, size + 1):
            heapq.heappush(self._free, index)
        self.size = max(self.size, size)

    def _release(self, event: Event, data: dict[str, Any]) -> list[Output]:
        index = int(str(data.get("worker") or "").rpartition("-")[2] or 0)
        if self._busy.get(index) != (data["tf_filename"], data["slice_id"], data.get("retry")):
            return []  # not the slice this worker holds (a redelivered result)
        del self._busy[index]
        if self._waiting:
            return self._assign(index, self._waiting.popleft(), event)
        heapq.heappush(self._free, index)
        return []

    def _assign(self, index: int, work: Event, cause: Event) -> list[Output]:
        """Worker ``index`` starts the slice ``work`` at the time of ``cause``."""
        data = work.data or {}
        params = self.params.get(work.run_id, {})
        duration, command_line, timeout = self._settings(work.run_id, params)
        name, slice_id, retry = data["tf_filename"], data["slice_id"], data["retry"]
        self._busy[index] = (name, slice_id, retry)
        worker = worker_name(index)
        fields = {"slice_id": slice_id, "tf_filename": name, "worker": worker, "retry": retry,
                  "error": None}
        started = self._for_run(work, cause, "processing", (name, slice_id, retry),
                                status="processing", **fields)
        finish = shift(cause.time, duration)
        result = self._for_run(work, cause, "slice_result", (name, slice_id, retry, "result"),
                               time=finish, status=None, **fields)
        command = Command("payload", "run_slice", {
            "tf_filename": name, "stf_filename": data.get("stf_filename"),
            "slice_id": slice_id, "start": data["start"], "end": data["end"],
            "retry": retry, "run_id": work.run_id, "worker": worker,
            "inject_failure": injected_failure(params, name, slice_id, retry),
            "payload_command": command_line,
            "timeout": timeout,
        }, reply=result, destination=RESULT_QUEUE, at=finish)
        return [Send(started, RESULT_QUEUE), command]

    def _settings(self, run_id: int | None, params: dict[str, Any]) -> tuple[float, str, float]:
        settings = self._cache.get(run_id)
        if settings is None:
            settings = self._cache[run_id] = (
                float(param(params, "fast_processing.slice_processing_time")),
                str(param(params, "workers.payload_command")),
                float(param(params, "workers.payload_timeout")))
        return settings

    def _for_run(self, work: Event, cause: Event, msg_type: str, key: object, *,
                 time: str | None = None, **payload: Any) -> dict[str, Any]:
        """A message about ``work``'s run, caused by ``cause`` (which may be of another run)."""
        message = self.message("slice_result", cause, time=time, key=(msg_type, key), **payload)
        message["execution_id"], message["run_id"] = work.execution_id, work.run_id
        return message
