"""The FastMon agent: samples STFs into TF files and says when a run's sampling is complete.

The sampling decision and TF range of an STF come from a generator seeded by (seed, STF
filename), so they do not depend on the order messages arrive in. ``sampling_complete`` waits for
``end_run`` and every STF of the run, so it is ``decided`` (agents/base.py): its id is the run's,
its time the latest of those inputs'.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, ClassVar

from agents.base import Agent, Output, Send, derive_id, latest
from agents.config import param
from eventstore.envelope import Event

log = logging.getLogger("swf.agent.fastmon")


@dataclass(frozen=True, slots=True)
class Sample:
    tf_filename: str
    tf_first: int
    tf_last: int

    @property
    def tf_count(self) -> int:
        return self.tf_last - self.tf_first + 1


def tf_filename(stf_filename: str, k: int) -> str:
    return f"{PurePosixPath(stf_filename).stem}_tf_{k:03d}.tf"


def sample_stf(params: dict[str, Any] | None, stf_filename: str) -> list[Sample]:
    """The TF samples taken from one STF: none when it is not sampled."""
    params = params or {}
    rng = random.Random(derive_id(params.get("seed", 0), stf_filename))
    if not rng.random() < float(param(params, "fast_processing.stf_sampling_rate")):
        return []
    tf_count = int(param(params, "fastmon.tf_count_per_stf"))
    length = min(tf_count, max(1, round(float(param(params, "fastmon.tf_size_fraction"))
                                        * tf_count)))
    samples = []
    for k in range(1, int(param(params, "fastmon.tf_files_per_stf")) + 1):
        first = rng.randrange(0, tf_count - length + 1)
        samples.append(Sample(tf_filename(stf_filename, k), first, first + length - 1))
    return samples


@dataclass
class _Run:
    params: dict[str, Any] = field(default_factory=dict)
    stfs: set[str] = field(default_factory=set)
    samples: int = 0
    total: int | None = None  # from end_run
    complete: bool = False
    execution_id: str | None = None
    inputs_at: str | None = None  # the latest time of end_run and the STFs handled


@dataclass
class FastMonAgent(Agent):
    agent_type: ClassVar[str] = "fastmon"
    runs: dict[int | None, _Run] = field(default_factory=dict, init=False, repr=False)

    def handle(self, event: Event) -> list[Output]:
        data = event.data or {}
        kind = event.msg_type
        if kind == "run_imminent":
            self._run(event).params = data.get("workflow_params") or {}
            return []
        if kind == "stf_ready":
            if data.get("filename") is None:  # upstream's per-run "data ready": no file
                return []
            return self._on_stf_ready(event, data)
        if kind == "end_run":
            run = self._run(event)
            if not run.complete:
                run.inputs_at = latest(run.inputs_at, event.time)
            total = data.get("total_stf_files")
            run.total = total if total is not None else len(run.stfs)
            return self._maybe_complete(event, run)
        return []

    def _run(self, event: Event) -> _Run:
        run = self.runs.get(event.run_id)
        if run is None:
            run = self.runs[event.run_id] = _Run()
        if run.execution_id is None:
            run.execution_id = event.execution_id
        return run

    def _on_stf_ready(self, event: Event, data: dict[str, Any]) -> list[Output]:
        run = self._run(event)
        filename = data["filename"]
        if filename in run.stfs:
            return []  # redelivered
        run.stfs.add(filename)
        run.inputs_at = latest(run.inputs_at, event.time)
        outputs: list[Output] = []
        if data.get("error") or not data.get("checksum"):
            log.warning("STF %s of run %s is not readable (%s): not sampled", filename,
                        event.run_id, data.get("error") or "no checksum")
        else:
            for sample in sample_stf(run.params, filename):
                run.samples += 1
                outputs.append(Send(self.message(
                    "tf_file_registered", event, key=sample.tf_filename,
                    tf_filename=sample.tf_filename, stf_filename=filename,
                    tf_first=sample.tf_first, tf_last=sample.tf_last,
                    tf_count=sample.tf_count)))
        return outputs + self._maybe_complete(event, run)

    def _maybe_complete(self, event: Event, run: _Run) -> list[Output]:
        """After end_run, once every STF of the run is handled: how many samples to expect."""
        if run.complete or run.total is None or len(run.stfs) < run.total:
            return []
        run.complete = True
        return [Send(self.decided("sampling_complete", execution_id=run.execution_id,
                                  run_id=event.run_id, time=run.inputs_at or event.time,
                                  stf_count=len(run.stfs), sample_count=run.samples))]
