"""``--agents``: re-drive today's agent code with an execution's recorded inputs.

Which agents: every sender whose recorded ``agent_heartbeat`` names an agent type of the
registry is re-created fresh (same name, same namespace); any other sender (an upstream agent,
an injector, an unknown type) is a recorded input only.

How: the execution's events are handed over in position order, exactly as the embedded runtime
delivered them (``runtime._deliver``): a topic event to every agent subscribed to it, a queue
event to one consumer (round robin), and every agent also gets its own messages - which is how
the outcomes of external systems (DDM, PanDA, the payload, file stats: adapter replies, recorded
as the agent's own messages) reach it. The DAQ simulator reacts to nothing; its whole schedule is
``DaqSimulator.start`` of the recorded run_imminent, compared when that run_imminent comes up.
Adapters are never constructed and commands never executed: their replies are taken from the log.

What is compared: each message an agent emits is matched to the recorded one by ``msg_id``
(``derive_id`` of cause, agent, type and key) and both are normalized by the catalog.

- ``Send``: the whole message must be equal (and go to the same destination).
- ``Command``: the agent decides the reply template; the adapter fills in the rest. A field is
  adapter-filled when the template leaves it open: absent, None, or (``status``) the batch
  placeholder ``"unknown"``; those fields are taken from the recorded reply, every other field
  must be equal. Blind spot: a field the current code newly leaves open (or drops) is taken from
  the log, so that change is not seen.
- A recorded message of a re-driven agent that the current code does not emit is a divergence,
  and so is an emitted message that was never recorded. A live log may hold a message before
  one of its causes (the recorder takes the topic and each queue copy on subscriptions of
  their own, whose backlogs interleave freely after a restart), so a recorded message not
  emitted yet is awaited: a divergence only if nothing emits it by the end of the log. An
  emitted message due later than its cause (a schedule, a timer) that was never recorded is
  judged at the end too: a divergence if the agent still wants it (``Agent.still_due``: a
  stopped DAQ withdraws the rest of its schedule) and the log reaches its time.
- ``agent_heartbeat`` and ``agent_log`` messages that the agents' decisions did not emit are the
  runtime's (periodic heartbeats, captured log records) and are not compared; a heartbeat an
  agent emits as a decision (the processing agent's close-deadline wake-up) is.

Agents start fresh at the execution's first event, so a decision that depends on an earlier
execution (an agent process that outlived it, in live mode) shows as a divergence.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from agents.base import Agent, Command, Output, Send
from agents.daq import DaqSimulator
from agents.registry import AGENT_TYPES, create_agent
from eventstore.catalog import examine
from eventstore.envelope import (
    RESULT_MONITOR_TOPIC,
    RESULT_QUEUE,
    SLICE_MONITOR_TOPIC,
    SLICE_QUEUE,
    TOPIC,
    Event,
)

log = logging.getLogger(__name__)

RUNTIME_TYPES = frozenset({"agent_heartbeat", "agent_log"})
PLACEHOLDER_STATUS = "unknown"  # agents.batch.UNKNOWN: "not known yet", the adapter's to fill
# The recorder sees queue traffic on the broker's monitor copies; deliver it as the queue.
_QUEUE_OF = {SLICE_MONITOR_TOPIC: SLICE_QUEUE, RESULT_MONITOR_TOPIC: RESULT_QUEUE}
# Loggers agent code logs to: captured during the re-drive (the runtime turned them into
# agent_log messages, which are not compared), so they do not reach the console.
_AGENT_LOGGERS = ("swf.agent", "agents")


def queue_of(destination: str) -> str:
    return _QUEUE_OF.get(destination, destination)


@dataclass(slots=True)
class Divergence:
    kind: str  # "differs" | "not_recorded" | "not_emitted"
    agent: str
    agent_type: str
    input: Event | None  # the input event (for not_emitted: its most likely cause)
    expected: Event | None  # the recorded message
    actual: dict[str, Any] | None  # the emitted message (a command's reply: completed)
    destination: str | None  # where the emitted message goes
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # expected, actual
    candidate: Event | None = None  # not_recorded: a recorded message it may stand for
    command: str | None = None  # "adapter action" when the message is a command's reply
    filled: list[str] = field(default_factory=list)  # reply fields taken from the log


@dataclass(slots=True)
class Report:
    execution_id: str
    events: int = 0
    agents: dict[str, str] = field(default_factory=dict)  # name -> agent type
    inputs: dict[str, int] = field(default_factory=dict)  # other senders -> messages
    unknown_types: dict[str, str] = field(default_factory=dict)  # sender -> heartbeat type
    emitted: int = 0
    compared: int = 0  # distinct emitted messages matched to recorded ones
    not_compared: dict[str, int] = field(default_factory=dict)  # msg_type -> count
    divergence: Divergence | None = None


@dataclass(slots=True)
class _Emission:
    cause: Event
    msg_type: str


class _Stop(Exception):
    pass


def identify(events: Iterable[Event]) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """(name -> (agent type, namespace) for re-drivable senders, sender -> type for heartbeats
    of types the registry does not know), from the recorded heartbeats (first one wins)."""
    known: dict[str, tuple[str, str]] = {}
    unknown: dict[str, str] = {}
    for event in events:
        if event.msg_type != "agent_heartbeat" or not event.valid or not event.sender:
            continue
        name = event.sender
        if name in known or name in unknown:
            continue
        agent_type = str((event.data or {}).get("agent_type") or "")
        if agent_type in AGENT_TYPES:
            known[name] = (agent_type, event.namespace or "")
        else:
            unknown[name] = agent_type
    return known, unknown


def _order(item: tuple[str, tuple[str, str]]) -> tuple[int, str]:
    return list(AGENT_TYPES).index(item[1][0]), item[0]


class _Bus:
    """The runtime's delivery rules over a fixed set of agents."""

    def __init__(self, agents: list[Agent]) -> None:
        self.by_name = {agent.name: agent for agent in agents}
        self.topics: dict[str, list[Agent]] = {}
        for agent in agents:
            for destination in getattr(agent, "subscriptions", (TOPIC,)):
                self.topics.setdefault(destination, []).append(agent)
        self.queues = {destination: itertools.cycle(subscribers)
                       for destination, subscribers in self.topics.items()
                       if destination.startswith("/queue/")}

    def targets(self, event: Event) -> list[Agent]:
        destination = queue_of(event.destination)
        consumers = self.queues.get(destination)
        targets = [next(consumers)] if consumers is not None else list(
            self.topics.get(destination, ()))
        own = self.by_name.get(event.sender or "")
        if own is not None and own not in targets:
            targets.append(own)
        return targets


class Redrive:
    def __init__(self, execution_id: str, events: list[Event]) -> None:
        self.events = events
        self.report = Report(execution_id, events=len(events))
        known, unknown = identify(events)
        self.report.unknown_types = dict(sorted(unknown.items()))
        self.types = {name: agent_type for name, (agent_type, _ns) in known.items()}
        self.agents: list[Agent] = []
        for name, (agent_type, namespace) in sorted(known.items(), key=_order):
            self.agents.append(create_agent(agent_type, name, namespace))
        self.report.agents = {agent.name: self.types[agent.name] for agent in self.agents}
        inputs = Counter(event.sender or "(no sender)" for event in events
                         if event.sender not in self.types)
        self.report.inputs = dict(sorted(inputs.items()))
        self.bus = _Bus(self.agents)
        self.recorded = {event.event_id: event for event in events}
        self.emitted: dict[str, _Emission] = {}
        # Emitted, due later than their cause, not recorded: judged at the end (see above).
        self.pending: dict[str, tuple[Agent, Event, Output, str]] = {}
        self.last_input: dict[str, Event] = {}
        # Recorded, not emitted yet (see above): event_id -> (the event, its likely cause).
        self.awaited: dict[str, tuple[Event, Event | None]] = {}
        self.started: set[tuple[str, str | None, int | None]] = set()

    def run(self, progress: Callable[[int], None] | None = None) -> Report:
        with _captured_logs():
            try:
                for event in self.events:
                    self._step(event)
                    if progress is not None:
                        progress(1)
                self._judge_pending()
                self._judge_awaited()
            except _Stop:
                pass
        self.report.not_compared = dict(sorted(self.report.not_compared.items()))
        return self.report

    # -- one recorded event --------------------------------------------------------------------

    def _step(self, event: Event) -> None:
        sender = event.sender or ""
        if sender in self.types and self.types[sender] == "daq_simulator" \
                and event.msg_type == "run_imminent" and event.valid:
            self._schedule(event)
        if sender in self.types:
            self._check_recorded(event)
        for agent in self.bus.targets(event):
            if not agent.accepts(event):
                continue
            self.last_input[agent.name] = event
            outputs = agent.handle(event)
            for output in outputs:
                self._check_emitted(agent, event, output)

    def _schedule(self, event: Event) -> None:
        """The DAQ's run: its whole schedule, from the recorded run_imminent's fields."""
        key = (event.sender or "", event.execution_id, event.run_id)
        if key in self.started:
            return
        self.started.add(key)
        daq = self.bus.by_name[event.sender or ""]
        assert isinstance(daq, DaqSimulator)
        data = event.data or {}
        outputs = daq.start(execution_id=str(event.execution_id), run_id=int(event.run_id or 0),
                            workflow=str(data.get("workflow")),
                            params=data.get("workflow_params") or {}, start_time=event.time)
        for output in outputs:
            self._check_emitted(daq, event, output)

    def _check_recorded(self, event: Event) -> None:
        """A re-driven agent's recorded message must have been emitted before it was recorded."""
        if event.event_id in self.emitted:
            return
        if event.msg_type in RUNTIME_TYPES:
            counts = self.report.not_compared
            counts[event.msg_type] = counts.get(event.msg_type, 0) + 1
            return
        self.awaited[event.event_id] = (event, self._cause_of(event))

    def _judge_awaited(self) -> None:
        """Recorded messages nothing emitted by the end of the log: the first is a divergence."""
        if self.awaited:
            event, cause = min(self.awaited.values(), key=lambda item: item[0].position)
            name = event.sender or ""
            self._diverge(Divergence("not_emitted", name, self.types[name], cause, event, None,
                                     None))

    def _cause_of(self, event: Event) -> Event | None:
        """The most likely cause of a recorded message nobody emitted: the cause of the latest
        matched message of the same agent, type and time before it, else the agent's last
        input before it."""
        best: Event | None = None
        for emission_id, emission in self.emitted.items():
            recorded = self.recorded.get(emission_id)
            if (recorded is not None and recorded.sender == event.sender
                    and recorded.msg_type == event.msg_type and recorded.time == event.time
                    and recorded.position < event.position
                    and (best is None or emission.cause.position > best.position)):
                best = emission.cause
        return best or self.last_input.get(event.sender or "")

    def _check_emitted(self, agent: Agent, cause: Event, output: Output,
                       judged: bool = False) -> None:
        if isinstance(output, Send):
            message, command = output.message, None
        elif isinstance(output, Command):
            message, command = output.reply, output
        else:
            raise TypeError(f"agent output must be Send or Command, got {output!r}")
        self.report.emitted += 1
        msg_id = str(message.get("msg_id") or "")
        if msg_id in self.emitted:  # emitted again (a redelivery): the store keeps one
            return
        self.awaited.pop(msg_id, None)
        agent_type = self.types[agent.name]
        recorded = self.recorded.get(msg_id)
        destination = output.destination
        described = f"{command.adapter} {command.action}" if command is not None else None
        if recorded is None:
            due = str((command.at if command is not None else None)
                      or message.get("timestamp") or "")
            if due > cause.time and not judged:
                self.pending[msg_id] = (agent, cause, output, due)
                return
            self._diverge(Divergence("not_recorded", agent.name, agent_type, cause, None,
                                     message, destination,
                                     candidate=self._candidate(agent, message, cause),
                                     command=described))
        assert recorded is not None
        actual, filled = complete(message, recorded) if command is not None else (message, [])
        expected_data, actual_data = normal(recorded.body, recorded.destination), normal(
            orjson.dumps(actual), destination)
        fields = differences(expected_data, actual_data)
        if recorded.sender != agent.name:
            fields["sender"] = (recorded.sender, agent.name)
        if queue_of(recorded.destination) != queue_of(destination):
            fields["(destination)"] = (recorded.destination, destination)
        if fields:
            self._diverge(Divergence("differs", agent.name, agent_type, cause, recorded, actual,
                                     destination, fields, command=described, filled=filled))
        self.emitted[msg_id] = _Emission(cause, str(message.get("msg_type")))
        self.report.compared += 1

    def _judge_pending(self) -> None:
        """Messages due later than their cause that were never recorded: a divergence when the
        agent still wants them and the log reaches their time."""
        end = max((event.time for event in self.events), default="")
        for agent, cause, output, due in sorted(self.pending.values(), key=lambda item: item[3]):
            message = output.message if isinstance(output, Send) else output.reply
            if due <= end and agent.still_due(message):
                self.pending.clear()
                self._check_emitted(agent, cause, output, judged=True)

    def _candidate(self, agent: Agent, message: dict[str, Any], cause: Event) -> Event | None:
        """For an emitted message with no recorded twin: the first recorded message of the same
        agent and type after its cause that nothing emitted (probably the same message under a
        different id)."""
        for event in self.events:
            if (event.position > cause.position and event.sender == agent.name
                    and event.msg_type == message.get("msg_type")
                    and event.event_id not in self.emitted):
                return event
        return None

    def _diverge(self, divergence: Divergence) -> None:
        self.report.divergence = divergence
        raise _Stop


def complete(template: dict[str, Any], recorded: Event) -> tuple[dict[str, Any], list[str]]:
    """A command's reply template completed with the adapter-filled fields of the recorded
    reply (fields the template leaves open: absent, None, or a placeholder status), and the
    names of the fields taken from the log."""
    try:
        raw = orjson.loads(recorded.body)
    except orjson.JSONDecodeError:
        raw = None
    if not isinstance(raw, dict):
        return dict(template), []
    completed, filled = {}, []
    for name, value in template.items():
        open_field = value is None or (name == "status" and value == PLACEHOLDER_STATUS)
        if open_field and name in raw:
            completed[name] = raw[name]
            filled.append(name)
        else:
            completed[name] = value
    for name, value in raw.items():
        if name not in completed:
            completed[name] = value
            filled.append(name)
    return completed, sorted(filled)


def normal(body: bytes, destination: str) -> dict[str, Any]:
    """The catalog's normalized message (what decisions and projections see)."""
    verdict = examine(body, destination)
    if verdict.data is not None:
        return verdict.data
    return {"(rejected)": verdict.reason}


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {name: (expected.get(name), actual.get(name))
            for name in sorted(expected.keys() | actual.keys())
            if name not in expected or name not in actual or expected[name] != actual[name]}


@contextmanager
def _captured_logs() -> Iterator[Counter[str]]:
    counts: Counter[str] = Counter()

    class _Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            counts[record.levelname] += 1

    handler = _Count(logging.WARNING)
    saved = []
    for name in _AGENT_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate))
        logger.propagate = False
        logger.addHandler(handler)
    try:
        yield counts
    finally:
        for logger, propagate in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate


def redrive(execution_id: str, events: list[Event],
            progress: Callable[[int], None] | None = None) -> Report:
    return Redrive(execution_id, events).run(progress)


__all__ = ["Divergence", "Redrive", "Report", "complete", "identify", "queue_of", "redrive"]
