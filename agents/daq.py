"""The DAQ simulator: turns one execution's parameters into the run's timed schedule.

``start`` is a pure function of (execution, run, workflow, parameters, start time): it returns
every message of the run up front, each stamped with its future time, and the runtime delivers
them when (simulated or wall) time gets there. STF files are written by the "files" adapter when
their time comes; its reply is the ``stf_gen`` message, so the file write is a recorded fact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from agents.base import Agent, Command, Output, Send, derive_id
from agents.config import param
from eventstore.envelope import TOPIC, Event, format_time, parse_time


def stf_filename(run_id: int, sequence: int) -> str:
    return f"swf.{run_id}.{sequence:06d}.stf"


def dataset_name(run_id: int) -> str:
    return f"swf.{run_id}.run"


@dataclass
class DaqSimulator(Agent):
    agent_type: ClassVar[str] = "daq_simulator"
    data_dir: str = "swf-data"  # where STF files go; file_url points into it

    def handle(self, event: Event) -> list[Output]:
        return []  # the DAQ drives the run; it reacts to nothing

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
        run_dir = Path(self.data_dir).absolute() / str(run_id)

        def message(msg_type: str, offset: float, key: object = "", **payload: Any
                    ) -> dict[str, Any]:
            return {
                "msg_type": msg_type,
                "msg_id": derive_id(execution_id, run_id, self.name, msg_type, key),
                "namespace": self.namespace,
                "execution_id": execution_id,
                "run_id": run_id,
                "sender": self.name,
                "timestamp": format_time(t0 + timedelta(seconds=offset)),
                **payload,
            }

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
                path = run_dir / name
                reply = message("stf_gen", t, sequence, filename=name, sequence=sequence,
                                file_url=path.as_uri(), state="run", substate="physics")
                outputs.append(Command(
                    "files", "write_stf",
                    {"path": str(path), "size": size, "seed": seed, "filename": name},
                    reply=reply, destination=TOPIC, at=reply["timestamp"]))
        t += interval
        outputs.append(Send(message("end_run", t, state="beam", substate="not_ready",
                                    total_stf_files=sequence)))
        return outputs
