"""The DAQ simulator: turns one execution's parameters into the run's timed schedule.

``start`` is a pure function of (execution, run, workflow, parameters, start time): it returns
every message of the run up front, each stamped with its future time, and the runtime delivers
them when (simulated or wall) time gets there. STF files are written by the "files" adapter when
their time comes; its reply is the ``stf_gen`` message, so the file write is a recorded fact.
File names and URLs are relative to the data directory (agents/dataroot.py): ``{run}/{name}``.

A ``stop_workflow`` naming one of its executions (or none: all of them) ends that run early, at
the stop's time: ``end_run`` then, with a ``reason`` and the STFs scheduled until then, and what
the schedule had after it is withdrawn (``still_due``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

from agents.base import Agent, Command, Output, Send
from agents.config import param
from eventstore.envelope import TOPIC, Event, format_time, parse_time


def stf_filename(run_id: int, sequence: int) -> str:
    return f"swf.{run_id}.{sequence:06d}.stf"


def dataset_name(run_id: int) -> str:
    return f"swf.{run_id}.run"


@dataclass(slots=True)
class _Schedule:
    run_id: int
    due: list[tuple[str, str, str]]  # (time, msg_type, msg_id) of every message, in time order
    stopped_at: str | None = None  # the stop's time, once stopped

    @property
    def end_time(self) -> str:
        return self.due[-1][0]


@dataclass
class DaqSimulator(Agent):
    agent_type: ClassVar[str] = "daq_simulator"
    schedules: dict[str, _Schedule] = field(default_factory=dict, init=False, repr=False)
    withdrawn: set[str] = field(default_factory=set, init=False, repr=False)  # msg_ids

    def handle(self, event: Event) -> list[Output]:
        """The DAQ drives the run; it only reacts to being stopped."""
        if event.msg_type == "stop_workflow":
            return self._stop(event)
        return []

    def still_due(self, message: dict[str, Any]) -> bool:
        return message.get("msg_id") not in self.withdrawn

    def _stop(self, event: Event) -> list[Output]:
        outputs: list[Output] = []
        for execution_id, schedule in self.schedules.items():
            if event.execution_id not in (None, execution_id) or schedule.stopped_at is not None \
                    or event.time >= schedule.end_time:
                continue  # another execution's stop, or a run that is over
            schedule.stopped_at = event.time
            self.withdrawn.update(msg_id for time, _type, msg_id in schedule.due
                                  if time > event.time)
            sent = sum(1 for time, msg_type, _id in schedule.due
                       if msg_type == "stf_gen" and time <= event.time)
            outputs.append(Send(self.decided(
                "end_run", execution_id=execution_id, run_id=schedule.run_id, time=event.time,
                key="stopped", state="beam", substate="not_ready", total_stf_files=sent,
                reason=f"stopped by {event.msg_type} {event.event_id} from "
                       f"{event.sender or 'an unnamed sender'}")))
        return outputs

    def start(self, *, execution_id: str, run_id: int, workflow: str, params: dict[str, Any],
              start_time: str) -> list[Output]:
        """The whole schedule of one run, as Sends and file-writing Commands with future times."""
        t0 = parse_time(start_time)
        stf_count = int(param(params, f"{workflow}.stf_count", workflow))
        periods = int(param(params, f"{workflow}.physics_period_count", workflow))
        delay = float(param(params, "daq.imminent_delay"))
        interval = float(param(params, "daq.stf_interval"))
        standby = float(param(params, "daq.standby_duration"))
        size = int(param(params, "daq.stf_size_bytes"))
        seed = params.get("seed", 0)

        def message(msg_type: str, offset: float, key: object = "", **payload: Any
                    ) -> dict[str, Any]:
            return self.decided(msg_type, execution_id=execution_id, run_id=run_id,
                                time=format_time(t0 + timedelta(seconds=offset)), key=key,
                                **payload)

        outputs: list[Output] = [Send(message(
            "run_imminent", 0.0, state="beam", substate="not_ready", workflow=workflow,
            workflow_params=params, dataset=dataset_name(run_id)))]
        t = delay
        outputs.append(Send(message("start_run", t, state="run", substate="physics")))
        sequence = 0
        for period in range(periods):
            if period:
                t += interval
                outputs.append(Send(message(
                    "pause_run", t, period, state="run", substate="standby",
                    reason=f"standby after physics period {period}")))
                t += standby
                outputs.append(Send(message(
                    "resume_run", t, period, state="run", substate="physics")))
            for _ in range(stf_count):
                t += interval
                sequence += 1
                name = stf_filename(run_id, sequence)
                path = f"{run_id}/{name}"  # relative to the data directory, as a URL too
                reply = message("stf_gen", t, sequence, filename=name, sequence=sequence,
                                file_url=path, state="run", substate="physics")
                outputs.append(Command(
                    "files", "write_stf",
                    {"path": path, "size": size, "seed": seed, "filename": name},
                    reply=reply, destination=TOPIC, at=reply["timestamp"]))
        t += interval
        outputs.append(Send(message("end_run", t, state="beam", substate="not_ready",
                                    total_stf_files=sequence)))
        self.schedules[execution_id] = _Schedule(run_id, [
            (item["timestamp"], item["msg_type"], item["msg_id"])
            for item in (output.message if isinstance(output, Send) else output.reply
                         for output in outputs)])
        return outputs
