"""Agent heartbeats, and agents' WARNING+ log records turned into ``agent_log`` messages."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from agents.base import Agent, derive_id

# Embedded agents share one process; a pid or hostname would make two runs differ.
EMBEDDED_PID, EMBEDDED_HOST = 0, "embedded"


def heartbeat(agent: Agent, *, time: str, operational_state: str, execution_id: str | None,
              run_id: int | None, status: str = "OK", pid: int = EMBEDDED_PID,
              hostname: str = EMBEDDED_HOST) -> dict[str, Any]:
    return {
        "msg_type": "agent_heartbeat",
        "msg_id": derive_id(execution_id, agent.name, "agent_heartbeat", time, operational_state),
        "namespace": agent.namespace,
        "execution_id": execution_id,
        "run_id": run_id,
        "sender": agent.name,
        "timestamp": time,
        "agent_type": agent.agent_type,
        "status": status,
        "operational_state": operational_state,
        "pid": pid,
        "hostname": hostname,
    }


@dataclass(slots=True)
class LogContext:
    """What the runtime is doing when a record is logged: which agent, for which cause."""

    agent: Agent
    cause_id: str
    time: str
    execution_id: str | None
    run_id: int | None
    count: int = 0


class LogCapture(logging.Handler):
    """A root-logger handler that turns WARNING+ records logged while an agent handles an event
    (or while an adapter runs its command) into that agent's ``agent_log`` messages."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.context: LogContext | None = None
        self.messages: list[dict[str, Any]] = []
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        context = self.context
        if context is None or threading.get_ident() != self._thread:
            return
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            problem = record.exc_info[1]
            text = f"{text}: {type(problem).__name__}: {problem}"
        agent = context.agent
        context.count += 1
        self.messages.append({
            "msg_type": "agent_log",
            "msg_id": derive_id(context.cause_id, agent.name, "agent_log", context.count),
            "namespace": agent.namespace,
            "execution_id": context.execution_id,
            "run_id": context.run_id,
            "sender": agent.name,
            "timestamp": context.time,
            "level": record.levelname,
            "message": text,
            "module": record.name,
        })

    def take(self) -> list[dict[str, Any]]:
        messages, self.messages = self.messages, []
        return messages
