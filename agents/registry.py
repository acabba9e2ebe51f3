"""Agent types and adapters by name. Imports are lazy, so a missing optional part (or one still
being written) only fails when it is actually used.

An adapter is made from two things: the deployment's settings for the external systems
(``AdapterSettings``: where Rucio and PanDA are and how to log in, built by the application
shell from its configuration) and the execution's workflow parameters (``[ddm]``, ``[batch]``:
which backend, and its options). ``swf run``, ``swf agent`` and the tests all go through
``create_adapter``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.base import Adapter, Agent, Command

if TYPE_CHECKING:
    from agents.batch.panda import PandaSettings
    from agents.ddm.rucio import RucioSettings

log = logging.getLogger(__name__)

# agent type -> "module:Class". The order is the delivery order within one event.
AGENT_TYPES: dict[str, str] = {
    "daq_simulator": "agents.daq:DaqSimulator",
    "data": "agents.data:DataAgent",
    "fastmon": "agents.fastmon:FastMonAgent",
    "fast_processing": "agents.fast_processing:FastProcessingAgent",
    "worker": "agents.worker:WorkerPool",
    "processing": "agents.processing:ProcessingAgent",
}


Params = Mapping[str, Any] | None  # the execution's resolved workflow parameters


@dataclass(frozen=True, slots=True)
class AdapterSettings:
    """The deployment's side of the external adapters (None: the adapter's defaults)."""

    rucio: RucioSettings | None = None
    panda: PandaSettings | None = None


NO_SETTINGS = AdapterSettings()


def _files(data_dir: Path, params: Params, settings: AdapterSettings) -> Adapter:
    from agents.files import FilesAdapter
    return FilesAdapter(data_dir)


def _payload(data_dir: Path, params: Params, settings: AdapterSettings) -> Adapter:
    from agents.payload import PayloadAdapter
    return PayloadAdapter()


def _ddm(data_dir: Path, params: Params, settings: AdapterSettings) -> Adapter:
    """``[ddm] backend``: ``local`` (the embedded catalog) or ``rucio``."""
    section = _section(params, "ddm")
    backend = section.get("backend") or "local"
    if backend == "local":
        from agents.ddm.local import LocalCatalog
        return LocalCatalog(data_dir / "ddm")
    if backend == "rucio":
        from agents.ddm.rucio import RucioCatalog, RucioSettings
        return RucioCatalog((settings.rucio or RucioSettings()).for_workflow(section),
                            data_root=data_dir)
    return Misconfigured(f"[ddm] backend = {backend!r} is not one of 'local', 'rucio'")


def _batch(data_dir: Path, params: Params, settings: AdapterSettings) -> Adapter:
    """``[batch] backend``: ``local`` (the embedded executor) or ``panda``."""
    section = _section(params, "batch")
    backend = section.get("backend") or "local"
    if backend == "local":
        from agents.batch.local import LocalExecutor
        return LocalExecutor(data_dir / "batch")
    if backend == "panda":
        from agents.batch.panda import PandaBatch, PandaSettings
        return PandaBatch((settings.panda or PandaSettings()).for_workflow(section))
    return Misconfigured(f"[batch] backend = {backend!r} is not one of 'local', 'panda'")


# adapter name -> factory(data_dir, workflow params, deployment settings); the embedded
# defaults unless the workflow chooses another backend.
ADAPTERS: dict[str, Callable[[Path, Params, AdapterSettings], Adapter]] = {
    "files": _files,
    "payload": _payload,
    "ddm": _ddm,
    "batch": _batch,
}


class Misconfigured(Adapter):
    """Stands in for an adapter the workflow configures wrongly: every command gets a reply
    with the configuration error (recorded, so the run fails with a reason, not silently)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        log.error("adapter misconfigured: %s", problem)

    def execute(self, command: Command) -> dict[str, Any]:
        reply = dict(command.reply)
        error = f"configuration error: {self.problem}"
        if command.adapter == "ddm":
            reply.update(outcome="error", error=error)
        else:
            reply.update(status="unknown" if command.action == "status" else "failed",
                         error=error)
        return reply


def _section(params: Params, name: str) -> Mapping[str, Any]:
    section = (params or {}).get(name)
    return section if isinstance(section, Mapping) else {}


def agent_class(agent_type: str) -> type[Agent]:
    try:
        target = AGENT_TYPES[agent_type]
    except KeyError:
        known = ", ".join(AGENT_TYPES)
        raise ValueError(f"unknown agent type {agent_type!r}; known: {known}") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def create_agent(agent_type: str, name: str, namespace: str) -> Agent:
    return agent_class(agent_type)(name, namespace)


def create_adapter(name: str, data_dir: Path, params: Params = None,
                   settings: AdapterSettings | None = None) -> Adapter:
    """The adapter ``name`` for an execution: ``params`` (its workflow parameters) choose the
    backend (``[ddm] backend``, ``[batch] backend``) and configure it, over the deployment's
    ``settings`` (default: none, so an external backend gets only the workflow's options)."""
    try:
        factory = ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown adapter {name!r}; known: {', '.join(ADAPTERS)}") from None
    return factory(data_dir, params, settings or NO_SETTINGS)


def workflow_agents(enabled: Callable[[str], bool]) -> list[str]:
    """The agent types a workflow runs: the DAQ always, the others as enabled in its config
    (the worker pool comes with the fast processing agent)."""
    types = ["daq_simulator"]
    for agent_type in ("data", "fastmon", "fast_processing"):
        if enabled(agent_type):
            types.append(agent_type)
    if enabled("fast_processing"):
        types.append("worker")
    if enabled("processing"):
        types.append("processing")
    return types
