"""Agent types and adapters by name. Imports are lazy, so a missing optional part (or one still
being written) only fails when it is actually used."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from agents.base import Adapter, Agent

# agent type -> "module:Class". The order is the delivery order within one event.
AGENT_TYPES: dict[str, str] = {
    "daq_simulator": "agents.daq:DaqSimulator",
    "data": "agents.data:DataAgent",
    "fastmon": "agents.fastmon:FastMonAgent",
    "fast_processing": "agents.fast_processing:FastProcessingAgent",
    "worker": "agents.worker:WorkerPool",
    "processing": "agents.processing:ProcessingAgent",
}


def _files(data_dir: Path) -> Adapter:
    from agents.files import FilesAdapter
    return FilesAdapter()


def _payload(data_dir: Path) -> Adapter:
    from agents.payload import PayloadAdapter
    return PayloadAdapter()


def _ddm(data_dir: Path) -> Adapter:
    from agents.ddm.local import LocalCatalog
    return LocalCatalog(data_dir / "ddm")


def _batch(data_dir: Path) -> Adapter:
    from agents.batch.local import LocalExecutor
    return LocalExecutor(data_dir / "batch")


# adapter name -> factory(data_dir), for the embedded defaults.
ADAPTERS: dict[str, Callable[[Path], Adapter]] = {
    "files": _files,
    "payload": _payload,
    "ddm": _ddm,
    "batch": _batch,
}


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


def create_adapter(name: str, data_dir: Path) -> Adapter:
    try:
        factory = ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown adapter {name!r}; known: {', '.join(ADAPTERS)}") from None
    return factory(data_dir)


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
