"""Helpers for prompt-processing runs against external backends (Rucio, PanDA) in tests.

Not a test module: imported by test_rucio_adapter, test_panda_adapter and test_prompt_external
(``tests/`` is on ``sys.path``, as for ``servers``).
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agents.base import shift
from agents.config import WorkflowConfig, load_workflow
from agents.runtime import EmbeddedRuntime, prepare
from swf.settings import load_settings


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prompt_config(*overrides: str, ddm: dict[str, Any] | None = None,
                  batch: dict[str, Any] | None = None) -> WorkflowConfig:
    """The shipped prompt_processing workflow with ``--set`` overrides, plus ``[ddm]``/``[batch]``
    keys that only a workflow file can set (retry delays)."""
    config = load_workflow("prompt_processing", overrides)
    config.params["ddm"].update(ddm or {})
    config.params["batch"].update(batch or {})
    return config


def runtime(store: Any, data_dir: Path, config: WorkflowConfig, *,
            agent_types: list[str] | None = None) -> EmbeddedRuntime:
    """A strict runtime: an agent or adapter exception fails the test instead of being logged.
    Its adapters get the deployment settings of this environment, as `swf run`'s do."""
    return prepare(store, config, data_dir=data_dir, user="tester", strict=True,
                   agent_types=agent_types, adapter_settings=load_settings().adapter_settings())


def messages(store: Any, execution_id: str | None = None, msg_type: str | None = None
             ) -> list[dict[str, Any]]:
    return [event.data for event in store.read(execution_id=execution_id)
            if event.data and (msg_type is None or event.msg_type == msg_type)]


def only(items: Iterable[Any]) -> Any:
    items = list(items)
    assert len(items) == 1, items
    return items[0]


class Injector:
    """Upstream messages (DAQ, data agent) for a runtime that runs the processing agent only."""

    def __init__(self, runtime: EmbeddedRuntime, run: int) -> None:
        self.runtime, self.run = runtime, run
        self.count = itertools.count()

    def __call__(self, msg_type: str, seconds: float, sender: str = "daq", **payload: Any
                 ) -> None:
        self.runtime.publish({
            "msg_type": msg_type, "msg_id": f"{self.runtime.execution_id}-{next(self.count)}",
            "namespace": self.runtime.agents[0].namespace,
            "execution_id": self.runtime.execution_id, "run_id": self.run, "sender": sender,
            "timestamp": shift(self.runtime.start_time, seconds), **payload})

    def imminent(self) -> None:
        self("run_imminent", 0, workflow="prompt_processing",
             workflow_params=self.runtime.params, dataset=f"swf.{self.run}.run")

    def stf(self, seq: int, seconds: float, size: Any = 4096, checksum: Any = "1a2b3c4d"
            ) -> None:
        self("stf_ready", seconds, "data-1", filename=self.name(seq), size_bytes=size,
             checksum=checksum, file_url=f"file:///data/{self.name(seq)}", sequence=seq)

    def end(self, seconds: float, total: int) -> None:
        self("end_run", seconds, total_stf_files=total)

    def name(self, seq: int) -> str:
        return f"swf.{self.run}.{seq:06d}.stf"
