"""The embedded runtime: all agents in one process, an in-process bus, a simulated clock.

Pending deliveries wait in a heap ordered by (time, sequence). The loop takes everything due at
the earliest time, executes the due adapter commands (their replies join the batch), appends the
batch to the store in one transaction, and only then hands each newly stored event to its
subscribers, in a fixed agent order; their outputs go back on the heap. Time only moves when the
heap says so (``realtime`` additionally waits for the wall clock), so a run is a pure function
of the store's prior contents, the config and the seed.

Delivery rules: a topic message goes to every agent subscribed to it; a queue message to one
consumer (round robin); and every agent also receives its own messages, which is how an agent
learns the outcome of a command it issued (the worker pool frees a worker on its own
``slice_result``).

An agent may withdraw what it scheduled (``Agent.still_due``: a stopped DAQ's schedule); the
loop asks it when the item comes due. A ``--realtime`` run (``controls``) also looks in the
store, while it waits, for stops another process appended (``swf stop``) and delivers them.

Programmatic use::

    runtime = prepare(store, load_workflow("fast_processing"), seed=1, data_dir=tmp)
    runtime.publish(message, destination=TOPIC)    # optional: inject messages (timed by their
                                                  # timestamp, or ``at``)
    runtime.observe = callback                     # optional: sees each stored event after its
                                                  # delivery; may ``publish`` more (mid-run)
    result = runtime.run()                         # -> ExecutionResult
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import time as wallclock
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson

from agents.base import Adapter, Agent, Command, Output, Send
from agents.config import WorkflowConfig, param
from agents.daq import DaqSimulator
from agents.dataroot import resolve_data_root
from agents.defaults import DEFAULT_USER
from agents.heartbeat import LogCapture, LogContext, heartbeat
from agents.registry import AdapterSettings, create_adapter, create_agent, workflow_agents
from eventstore.envelope import TOPIC, Event, Incoming, format_time, parse_time
from eventstore.reservations import EMPTY_STORE_START

log = logging.getLogger("swf.runtime")

CONTROL_TYPES = ("stop_workflow",)  # what a realtime run takes from the store while it runs
CONTROL_POLL = 0.1  # wall seconds between a realtime run's looks for them
_SEND, _COMMAND, _TICK = 0, 1, 2
_FINAL_SLICE = frozenset(("completed", "failed"))


@dataclass(slots=True)
class Progress:
    sim_time: str
    events: int
    stf_files: int
    slices_done: int
    slices: int


@dataclass
class ExecutionResult:
    execution_id: str | None
    run_id: int | None
    workflow: str | None
    namespace: str | None
    start_time: str
    end_time: str
    events: int  # newly stored
    duplicates: int
    errors: int  # agent or adapter exceptions (each also recorded as an agent_log)
    counts: dict[str, int] = field(default_factory=dict)  # stored events by msg_type
    wall_seconds: float = 0.0


class EmbeddedRuntime:
    def __init__(self, store: Any, agents: Sequence[Agent],
                 adapters: Mapping[str, Adapter] | Callable[[str], Adapter], *,
                 start_time: str = EMPTY_STORE_START, execution_id: str | None = None,
                 run_id: int | None = None, workflow: str | None = None,
                 heartbeat_interval: float | None = 60.0, realtime: bool = False,
                 speed: float = 1.0, strict: bool = False,
                 progress: Callable[[Progress], None] | None = None,
                 progress_interval: float = 0.1, controls: bool = False) -> None:
        self.store = store
        self.agents = list(agents)
        self.start_time = _normal(start_time)
        self.now = self.start_time
        self.execution_id, self.run_id, self.workflow = execution_id, run_id, workflow
        self.heartbeat_interval = heartbeat_interval
        self.realtime, self.speed, self.strict = realtime, speed, strict
        self.controls = controls and realtime  # look for stops in the store while waiting
        self.progress, self.progress_interval = progress, progress_interval
        self._adapters: dict[str, Adapter] = dict(adapters) if isinstance(adapters, Mapping) \
            else {}
        self._adapter_factory = adapters if callable(adapters) else None
        self._heap: list[tuple[str, int, int, Any, Any, Agent | None]] = []
        self._seq = itertools.count()
        self._work = 0  # non-tick items on the heap: the execution is active while > 0
        self._by_name = {agent.name: agent for agent in self.agents}
        # Agents that may withdraw what they scheduled (``Agent.still_due``): asked when due.
        self._withdrawing = {agent.name for agent in self.agents
                             if type(agent).still_due is not Agent.still_due}
        self._topic_subscribers: dict[str, list[Agent]] = {}
        self._queue_consumers: dict[str, itertools.cycle[Agent]] = {}
        for agent in self.agents:
            for destination in getattr(agent, "subscriptions", (TOPIC,)):
                self._topic_subscribers.setdefault(destination, []).append(agent)
        for destination, subscribers in self._topic_subscribers.items():
            if destination.startswith("/queue/"):
                self._queue_consumers[destination] = itertools.cycle(subscribers)
        self._capture = LogCapture()
        self.counts: Counter[str] = Counter()
        self.slices_done = 0
        self.events = self.duplicates = self.errors = 0
        self._started = False
        self._control_mark: int | None = None  # store position of the last look for stops
        self._controls_seen: set[str] = set()
        self.params: dict[str, Any] = {}  # the execution's workflow_params (set by ``prepare``)
        # Called with each stored event after its delivery: tests inject messages mid-run from
        # here (``publish``), e.g. a late, duplicated or malformed message right after a fact.
        self.observe: Callable[[Event], None] | None = None

    # -- feeding the bus -----------------------------------------------------------------------

    def publish(self, message: dict[str, Any], destination: str = TOPIC, *,
                at: str | None = None) -> None:
        """Inject a message: stored and delivered at ``at``, else at its own timestamp, else now
        (never earlier than now). The body is stored exactly as given."""
        when = at or message.get("timestamp")
        try:
            key = _normal(when) if isinstance(when, str) else self.now
        except ValueError:
            key = self.now
        self._push(key, _SEND, message, destination, None)

    def submit(self, outputs: Iterable[Output], issuer: Agent | None, default_time: str) -> None:
        """Queue an agent's outputs: Sends at their timestamp, Commands when due (``at``)."""
        for output in outputs:
            if isinstance(output, Send):
                when = output.message.get("timestamp") or default_time
                self._push(_key(when), _SEND, output.message, output.destination, issuer)
            elif isinstance(output, Command):
                self._push(_key(output.at or default_time), _COMMAND, output, None, issuer)
            else:
                raise TypeError(f"agent output must be Send or Command, got {output!r}")

    def _push(self, when: str, kind: int, item: Any, destination: Any, issuer: Agent | None,
              seq: int | None = None) -> None:
        if when < self.now:
            when = self.now  # nothing is delivered in the past
        if kind != _TICK:
            self._work += 1
        heapq.heappush(self._heap, (when, next(self._seq) if seq is None else seq, kind, item,
                                    destination, issuer))

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> ExecutionResult:
        """Run until nothing is pending; then the agents' exit heartbeats. Returns the summary."""
        wall_start = wallclock.perf_counter()
        root = logging.getLogger()
        root.addHandler(self._capture)
        try:
            with self._write_group():
                if not self._started:
                    self._started = True
                    self._heartbeats(self.start_time, "READY", front=True)
                    if self.heartbeat_interval:
                        self._push(self._tick_time(1), _TICK, 1, None, None)
                self._loop(wall_start)
                self._heartbeats(self.now, "EXITED")
                self._heartbeat_off = True
                self._loop(wall_start)
        finally:
            root.removeHandler(self._capture)
        self._report(force=True)
        return ExecutionResult(
            execution_id=self.execution_id, run_id=self.run_id, workflow=self.workflow,
            namespace=self.agents[0].namespace if self.agents else None,
            start_time=self.start_time, end_time=self.now, events=self.events,
            duplicates=self.duplicates, errors=self.errors, counts=dict(self.counts),
            wall_seconds=wallclock.perf_counter() - wall_start)

    _heartbeat_off = False
    _last_report = 0.0

    def _write_group(self) -> AbstractContextManager[Any]:
        """Group commit of the run's appends (``EventStore.write_group``): one append per
        simulated instant, each committed on its own, was most of a long run's time. The
        appends, their events and positions are the same; a commit falls between instants only,
        so a crash leaves the store as a run committing every instant could have left it, at an
        earlier instant. A realtime run commits each instant: it waits on the wall clock and
        looks for stops another process appends meanwhile."""
        group = getattr(self.store, "write_group", None)
        return nullcontext() if self.realtime or group is None else group()

    def _loop(self, wall_start: float) -> None:
        heap = self._heap
        while heap:
            before, now = self.now, heap[0][0]
            if self.realtime and self._wait_until(now, wall_start):
                continue  # a stop came in meanwhile: what is due next may have changed
            self.now = now
            batch: list[tuple[dict[str, Any], str]] = []
            tick = None
            while heap and heap[0][0] == now:
                _, _, kind, item, destination, issuer = heapq.heappop(heap)
                if kind == _SEND:
                    self._work -= 1
                    if self._due(issuer, item):
                        batch.append((item, destination))
                elif kind == _COMMAND:
                    self._work -= 1
                    if not self._due(issuer, item.reply):
                        continue
                    reply = self._execute(item, issuer)
                    if reply is not None:
                        batch.append((reply, item.destination))
                else:
                    tick = item
            batch.extend((message, TOPIC) for message in self._capture.take())
            if batch:
                self._append_and_deliver(batch)
            if tick is not None:
                # Periodic heartbeats while the execution has work pending; a tick that finds
                # nothing to do ends the ticking and does not move the clock.
                if self._work and not self._heartbeat_off:
                    beats: list[tuple[dict[str, Any], str]] = []
                    self._heartbeats(now, "PROCESSING", into=beats)
                    self._append_and_deliver(beats)
                    self._push(self._tick_time(tick + 1), _TICK, tick + 1, None, None)
                elif not batch:
                    self.now = before
            self._report()

    def _due(self, issuer: Agent | None, message: dict[str, Any]) -> bool:
        return issuer is None or issuer.name not in self._withdrawing \
            or issuer.still_due(message)

    def _append_and_deliver(self, batch: list[tuple[dict[str, Any], str]]) -> None:
        dumps = orjson.dumps
        result = self.store.append([Incoming(destination, dumps(message))
                                    for message, destination in batch])
        self.duplicates += len(result.duplicates)
        self.events += len(result.events)
        observe = self.observe
        for event in result.events:
            self._count(event)
            if event.msg_type in CONTROL_TYPES:
                self._controls_seen.add(event.event_id)
            self._deliver(event)
            if observe is not None:
                observe(event)
        logs = self._capture.take()
        if logs:
            self.submit([Send(message) for message in logs], None, self.now)

    def _deliver(self, event: Event) -> None:
        destination = event.destination
        consumers = self._queue_consumers.get(destination)
        if consumers is not None:
            targets: Iterable[Agent] = (next(consumers),)
        else:
            targets = self._topic_subscribers.get(destination, ())
        own = self._by_name.get(event.sender) if event.sender else None
        for agent in targets:
            self._hand(agent, event)
            if agent is own:
                own = None
        if own is not None:
            self._hand(own, event)

    def _hand(self, agent: Agent, event: Event) -> None:
        if not agent.accepts(event):
            return
        self._capture.context = LogContext(agent, event.event_id, event.time, event.execution_id,
                                           event.run_id)
        try:
            outputs = agent.handle(event)
        except Exception:
            if self.strict:
                raise
            self.errors += 1
            logging.getLogger(f"swf.agent.{agent.agent_type}").exception(
                "%s failed on %s %s", agent.name, event.msg_type, event.event_id)
            outputs = []
        finally:
            self._capture.context = None
        if outputs:
            agent.emitted += len(outputs)
            self.submit(outputs, agent, event.time)

    def _execute(self, command: Command, issuer: Agent | None) -> dict[str, Any] | None:
        reply = command.reply
        if issuer is not None:
            self._capture.context = LogContext(
                issuer, str(reply.get("msg_id")), self.now, reply.get("execution_id"),
                reply.get("run_id"))
        try:
            return self._adapter(command.adapter).execute(command)
        except Exception:
            if self.strict:
                raise
            self.errors += 1
            logging.getLogger(f"swf.adapter.{command.adapter}").exception(
                "adapter %s failed on %s", command.adapter, command.action)
            return None
        finally:
            self._capture.context = None

    def _adapter(self, name: str) -> Adapter:
        adapter = self._adapters.get(name)
        if adapter is None:
            if self._adapter_factory is None:
                raise LookupError(f"no adapter {name!r} in this runtime")
            adapter = self._adapters[name] = self._adapter_factory(name)
        return adapter

    # -- heartbeats, clock, progress -----------------------------------------------------------

    def _heartbeats(self, when: str, state: str, *, into: list | None = None,
                    front: bool = False) -> None:
        for index, agent in enumerate(self.agents):
            message = heartbeat(agent, time=when, operational_state=state,
                                execution_id=self.execution_id, run_id=self.run_id)
            if into is not None:
                into.append((message, TOPIC))
            else:  # ``front``: before anything else due at the same time
                self._push(when, _SEND, message, TOPIC, agent,
                           seq=index - len(self.agents) if front else None)

    def _tick_time(self, number: int) -> str:
        assert self.heartbeat_interval
        return format_time(parse_time(self.start_time)
                           + timedelta(seconds=number * self.heartbeat_interval))

    def _wait_until(self, when: str, wall_start: float) -> bool:
        """Sleep until ``when`` on the wall clock, looking for stops meanwhile; True when one
        was delivered (and the wait cut short)."""
        due = (parse_time(when) - parse_time(self.start_time)).total_seconds() / self.speed
        while True:
            if self.controls and self._take_controls():
                return True
            delay = due - (wallclock.perf_counter() - wall_start)
            if delay <= 0:
                return False
            if not self.controls:
                wallclock.sleep(delay)
                return False
            wallclock.sleep(min(delay, CONTROL_POLL))

    def _take_controls(self) -> bool:
        """Deliver the stops another process (``swf stop``) appended to the store for this
        namespace since the last look: a realtime run is long enough to be stopped."""
        if not self.agents:
            return False
        if self._control_mark is None:
            self._control_mark = self.store.head()
            return False
        delivered = False
        for event in self.store.read(after=self._control_mark, msg_types=CONTROL_TYPES,
                          namespace=self.agents[0].namespace):
            self._control_mark = event.position
            if event.event_id in self._controls_seen:
                continue  # stored by this runtime: delivered already
            self._controls_seen.add(event.event_id)
            self._count(event)
            self._deliver(event)
            delivered = True
        return delivered

    def _count(self, event: Event) -> None:
        kind = event.msg_type or "(rejected)"
        self.counts[kind] += 1
        if kind == "slice_result" and event.data and event.data.get("status") in _FINAL_SLICE:
            self.slices_done += 1

    def _report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        moment = wallclock.perf_counter()
        if not force and moment - self._last_report < self.progress_interval:
            return
        self._last_report = moment
        self.progress(Progress(self.now, self.events, self.counts.get("stf_gen", 0),
                               self.slices_done, self.counts.get("slice", 0)))


# -- executions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Allocation:
    execution_id: str
    run_id: int
    start_time: str


def allocate(store: Any, workflow: str, user: str, start_time: str | None = None) -> Allocation:
    """Execution id, run number and start time, reserved in the store (atomically: concurrent
    runs on one store never share them) and derived from its contents, not the clock: the same
    store contents give the same ids and times."""
    reservation = store.reserve_execution(workflow, user, start_time)
    return Allocation(reservation.execution_id, reservation.run_number, reservation.start_time)


def prepare(store: Any, config: WorkflowConfig, *, seed: int = 0,
            data_dir: str | os.PathLike[str] | None = None, start_time: str | None = None,
            user: str | None = None, agent_types: Sequence[str] | None = None,
            adapters: Mapping[str, Adapter] | None = None, realtime: bool = False,
            speed: float = 1.0, strict: bool = False,
            progress: Callable[[Progress], None] | None = None,
            adapter_settings: AdapterSettings | None = None) -> EmbeddedRuntime:
    """A runtime loaded with one execution of ``config``: ids allocated from the store, agents
    created (``agent_types``: a chosen subset, default: the workflow's), the DAQ's schedule on
    the heap (when the DAQ is among the agents). Call ``.run()`` on it.

    ``user`` names the agents and the execution (default ``DEFAULT_USER``: never the login
    name, so runs do not depend on who starts them); ``data_dir`` is the store's data directory
    (default: beside its SQLite file; agents/dataroot.py). Raises DataRootError."""
    user = user or DEFAULT_USER
    data_path = resolve_data_root(data_dir, store)
    allocation = allocate(store, config.workflow, user, start_time)
    namespace = str(config.get("testbed.namespace"))
    types = list(agent_types) if agent_types is not None else workflow_agents(config.enabled)
    agents = []
    for agent_type in types:
        agents.append(create_agent(agent_type, f"{agent_type}-agent-{user}", namespace))
    fixed = dict(adapters or {})

    def adapter(name: str) -> Adapter:
        return fixed[name] if name in fixed else create_adapter(name, data_path, config.params,
                                                                adapter_settings)

    runtime = EmbeddedRuntime(
        store, agents, adapter, start_time=allocation.start_time,
        execution_id=allocation.execution_id, run_id=allocation.run_id,
        workflow=config.workflow,
        heartbeat_interval=float(param(config.params, "runtime.heartbeat_interval")),
        realtime=realtime, speed=speed, strict=strict, progress=progress, controls=realtime)
    runtime.params = {**config.params, "seed": seed}
    for agent in agents:
        if isinstance(agent, DaqSimulator):
            runtime.submit(agent.start(execution_id=allocation.execution_id,
                                       run_id=allocation.run_id, workflow=config.workflow,
                                       params=runtime.params, start_time=allocation.start_time),
                           agent, allocation.start_time)
    return runtime


def run_workflow(store: Any, config: WorkflowConfig, **options: Any) -> ExecutionResult:
    """Prepare and run one execution to completion (see ``prepare`` for the options)."""
    return prepare(store, config, **options).run()


def _normal(text: str) -> str:
    return format_time(parse_time(text))


def _key(text: str) -> str:
    """A heap key: times compare as strings only in the one format (fast path: already in it)."""
    return text if len(text) == 27 and text[19] == "." and text[-1] == "Z" else _normal(text)


__all__ = ["EmbeddedRuntime", "ExecutionResult", "Progress", "allocate", "prepare",
           "run_workflow"]
