"""The fast processing agent: cuts TF samples into slices for the PanDA workers, re-queues
failed slices (up to ``MAX_RETRIES`` times) and says when a run is fully processed.

State is per run and keyed by facts (sample name, slice id, attempt), so a redelivered message
changes nothing and a sample that arrives after ``end_run`` is still sliced. ``run_processed``
waits for several inputs (the samples, every slice's final result, ``sampling_complete``), so
it is ``decided``: its id is the run's, its time the latest of those inputs' (agents/base.py).
A run the DAQ ended early (``end_run`` with a ``reason``: ``swf stop``) is ``terminated``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agents.base import Agent, Output, Send, latest
from agents.config import param
from eventstore.envelope import RESULT_QUEUE, SLICE_QUEUE, TOPIC, Event

log = logging.getLogger("swf.agent.fast_processing")
MAX_RETRIES = 3


def tile_range(first: int, last: int, parts: int) -> list[tuple[int, int]]:
    """Split [first, last] into ``parts`` contiguous ranges (sizes differ by at most one; fewer
    parts when the range is shorter than ``parts``)."""
    count = last - first + 1
    if count <= 0 or parts <= 0:
        return []
    parts = min(parts, count)
    base, extra = divmod(count, parts)
    tiles, start = [], first
    for index in range(parts):
        end = start + base + (1 if index < extra else 0) - 1
        tiles.append((start, end))
        start = end + 1
    return tiles


@dataclass
class _Slice:
    message: dict[str, Any]  # the latest slice message sent (its retry is the current attempt)
    status: str = "queued"  # queued/processing/completed/failed (failed = for good)

    @property
    def retry(self) -> int:
        return int(self.message["retry"])


@dataclass
class _Run:
    params: dict[str, Any] = field(default_factory=dict)
    samples: set[str] = field(default_factory=set)
    slices: dict[tuple[str, int], _Slice] = field(default_factory=dict)
    ended: bool = False
    expected_samples: int | None = None  # from sampling_complete
    completed: int = 0
    failed: int = 0
    done: bool = False
    stopped: bool = False  # the DAQ ended the run early (end_run with a reason)
    execution_id: str | None = None
    inputs_at: str | None = None  # the latest time of the inputs that advanced the run


@dataclass
class FastProcessingAgent(Agent):
    agent_type: ClassVar[str] = "fast_processing"
    subscriptions: ClassVar[tuple[str, ...]] = (TOPIC, RESULT_QUEUE)
    runs: dict[int | None, _Run] = field(default_factory=dict, init=False, repr=False)

    def handle(self, event: Event) -> list[Output]:
        data = event.data or {}
        kind = event.msg_type
        if kind == "run_imminent":
            self._run(event).params = data.get("workflow_params") or {}
        elif kind == "tf_file_registered":
            return self._slice_sample(event, data)
        elif kind == "slice_result":
            return self._on_result(event, data)
        elif kind == "end_run":
            run = self._advanced(event)
            run.ended = True
            run.stopped = run.stopped or bool(data.get("reason"))
            return self._maybe_done(event)
        elif kind == "sampling_complete":
            run = self._advanced(event)
            run.ended = True  # sampling completes only after end_run
            run.expected_samples = data["sample_count"]
            return self._maybe_done(event)
        return []

    def _run(self, event: Event) -> _Run:
        run = self.runs.get(event.run_id)
        if run is None:
            run = self.runs[event.run_id] = _Run()
        if run.execution_id is None:
            run.execution_id = event.execution_id
        return run

    def _advanced(self, event: Event) -> _Run:
        """The event's run, noting the event as an input of its completion."""
        run = self._run(event)
        run.inputs_at = latest(run.inputs_at, event.time)
        return run

    def _slice_sample(self, event: Event, data: dict[str, Any]) -> list[Output]:
        run = self._run(event)
        name = data["tf_filename"]
        if name in run.samples:
            return []
        self._advanced(event)
        run.samples.add(name)
        parts = int(param(run.params, "fast_processing.slices_per_sample"))
        outputs: list[Output] = []
        for slice_id, (start, end) in enumerate(tile_range(data["tf_first"], data["tf_last"],
                                                           parts)):
            message = self.message(
                "slice", event, key=(name, slice_id, 0), slice_id=slice_id, tf_filename=name,
                stf_filename=data["stf_filename"], start=start, end=end,
                tf_count=end - start + 1, retry=0)
            run.slices[(name, slice_id)] = _Slice(message)
            outputs.append(Send(message, SLICE_QUEUE))
        return outputs + self._maybe_done(event)

    def _on_result(self, event: Event, data: dict[str, Any]) -> list[Output]:
        run = self._run(event)
        key = (data.get("tf_filename") or "", data["slice_id"])
        state = run.slices.get(key)
        if state is None:
            log.warning("slice_result for unknown slice %s/%s of run %s", key[0], key[1],
                        event.run_id)
            return []
        retry = data.get("retry")
        if state.status in ("completed", "failed") or (retry is not None
                                                         and retry != state.retry):
            return []  # a stale or redelivered result
        status = data["status"]
        if status == "processing":
            state.status = "processing"
            return []
        self._advanced(event)
        if status == "completed":
            state.status = "completed"
            run.completed += 1
            return self._maybe_done(event)
        if state.retry < MAX_RETRIES:
            attempt = state.retry + 1
            message = self.message("slice", event, key=(key[0], key[1], attempt),
                                   **{**_payload(state.message), "retry": attempt})
            state.message, state.status = message, "queued"
            return [Send(message, SLICE_QUEUE)]
        state.status = "failed"
        run.failed += 1
        log.warning("slice %s/%s of run %s failed after %d retries: %s", key[0], key[1],
                    event.run_id, MAX_RETRIES, data.get("error") or "no error given")
        return self._maybe_done(event)

    def _maybe_done(self, event: Event) -> list[Output]:
        run = self._run(event)
        if (run.done or not run.ended or run.expected_samples is None
                or len(run.samples) < run.expected_samples
                or run.completed + run.failed < len(run.slices)):
            return []
        run.done = True
        status = "failed" if run.failed else "terminated" if run.stopped else "completed"
        return [Send(self.decided(
            "run_processed", execution_id=run.execution_id, run_id=event.run_id,
            time=run.inputs_at or event.time, status=status, slices_completed=run.completed,
            slices_failed=run.failed))]


_ENVELOPE = ("msg_type", "msg_id", "namespace", "execution_id", "run_id", "sender", "timestamp")


def _payload(message: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in message.items() if name not in _ENVELOPE}
