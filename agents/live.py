"""The live agent host: one agent in its own process, on a broker, in real time.

The agent's code is the same as in the embedded runtime; the host supplies what the embedded
loop does there:

- **Time.** A Send whose ``timestamp`` lies in the future is published when the wall clock gets
  there; a Command with ``at`` runs then. The host stamps nothing itself: decisions derive their
  times from their causes. Only heartbeats and host-level logs carry the wall clock.
- **Delivery.** Messages arrive on the transport's thread and are queued (it never blocks); one
  agent thread handles them in arrival order. The agent also receives its own messages (how the
  worker pool learns its slice is done): each is handed back right after the broker confirmed
  it, and the broker's copy is then recognized as a repeat.
- **Commands** run on per-adapter thread pools off the agent thread (one thread per adapter keeps
  e.g. DDM calls in order; payloads run in parallel); their replies come back to the agent thread
  and are published like any Send.
- **Exactly-once effects.** A redelivered message (same event_id) is not handled again. A message
  the agent acts on is acked only once it is in the store (the recorder wrote it) and its
  immediate outputs were confirmed by the broker: whatever the host had acked, a restarted host
  finds in the store. (After ``record_wait`` seconds without the recorder it is acked anyway,
  with a warning: a stalled pipeline helps nobody.) A message it ignores is acked at once.
- **Resume.** On start the host replays the store's events of the executions still open through
  the agent, with the outputs discarded, rebuilding its decision state without a second source of
  truth. Outputs of that replay that are missing from the store were never sent (or never
  recorded): they are sent now, or scheduled when they lie in the future (a DAQ restarted
  mid-run sends the rest of its schedule). Then the durable subscriptions deliver what arrived
  meanwhile.
- **Withdrawn outputs.** A Send or Command scheduled for later is published only if the agent
  still wants it when its time comes (``Agent.still_due``: a stopped DAQ's schedule is not).
- **Heartbeats** every ``heartbeat_interval`` seconds with the real pid and hostname, READY at
  start, EXITED at a clean stop, and one as soon as the agent handles the first message of an
  execution (so ``swf run --broker`` sees at once that the DAQ took its run); WARNING+ log
  records become ``agent_log`` messages.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from agents.base import Adapter, Agent, Command, Output, Send, derive_id
from agents.config import WorkflowConfig
from agents.daq import DaqSimulator
from agents.defaults import DEFAULT_USER
from agents.heartbeat import LogContext, heartbeat
from agents.runtime import Allocation, allocate
from agents.transport import Delivery, SendRefused, Transport, TransportClosed
from eventstore.envelope import TOPIC, Event, parse_time, utc_now
from eventstore.identity import RunExecutions, as_stored

log = logging.getLogger("swf.live")

ACK_POLL = 0.05  # seconds between checks of which handled messages the recorder stored
RECORD_WAIT = 120.0  # seconds a handled message waits for the recorder before it is acked anyway
SEND_HEADERS = {"content-type": "application/json"}
_QUIET_LOGGERS = ("swf.transport", "swf.broker", "stomp.py", "swf.live")
_STOP = object()
AdapterFactory = Callable[[str, "dict[str, Any] | None"], Adapter]  # (name, workflow params)


@dataclass
class HostStats:
    handled: int = 0  # events handed to the agent (deliveries and its own messages)
    duplicates: int = 0  # deliveries of an event already handled
    sent: int = 0
    acked: int = 0
    errors: int = 0  # agent or adapter exceptions (each also an agent_log)
    replayed: int = 0  # events replayed from the store at start
    resent: int = 0  # outputs of the replay that the store lacked (sent or scheduled anew)


@dataclass
class LiveDaq(DaqSimulator):
    """The DAQ simulator as a live agent: a ``run_imminent`` that names it as sender (``swf run
    --broker`` sends it) starts that run's schedule, which ``DaqSimulator.start`` computes from
    the run_imminent's own fields, so the schedule is the embedded run's."""

    def handle(self, event: Event) -> list[Output]:
        if event.msg_type != "run_imminent" or event.sender != self.name:
            return super().handle(event)
        data = event.data or {}
        if event.execution_id in self.schedules or event.execution_id is None \
                or event.run_id is None:
            return []
        schedule = self.start(execution_id=event.execution_id, run_id=event.run_id,
                              workflow=str(data.get("workflow") or "fast_processing"),
                              params=data.get("workflow_params") or {}, start_time=event.time)
        return [output for output in schedule
                if not (isinstance(output, Send) and output.message["msg_id"] == event.event_id)]


class LogRelay(logging.Handler):
    """WARNING+ records as ``agent_log`` messages. Inside a handler or adapter call (a context
    set on that thread) the message is derived from the cause, as in the embedded runtime;
    elsewhere it carries the wall clock. Transport problems stay local: they concern the very
    connection the log would travel on."""

    def __init__(self, agent: Agent, pid: int, hostname: str) -> None:
        super().__init__(logging.WARNING)
        self.agent, self.pid, self.hostname = agent, pid, hostname
        self.muted = False
        self._local = threading.local()
        self._out: deque[dict[str, Any]] = deque()
        self._numbers = itertools.count(1)

    def set_context(self, context: LogContext | None) -> None:
        self._local.context = context

    def emit(self, record: logging.LogRecord) -> None:
        if self.muted or record.name.startswith(_QUIET_LOGGERS):
            return
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            problem = record.exc_info[1]
            text = f"{text}: {type(problem).__name__}: {problem}"
        agent = self.agent
        context: LogContext | None = getattr(self._local, "context", None)
        if context is not None:
            context.count += 1
            msg_id = derive_id(context.cause_id, agent.name, "agent_log", context.count)
            when, execution_id, run_id = context.time, context.execution_id, context.run_id
        else:
            when, execution_id, run_id = utc_now(), None, None
            msg_id = derive_id(agent.name, self.pid, self.hostname, "agent_log", when,
                               next(self._numbers))
        self._out.append({
            "msg_type": "agent_log", "msg_id": msg_id, "namespace": agent.namespace,
            "execution_id": execution_id, "run_id": run_id, "sender": agent.name,
            "timestamp": when, "level": record.levelname, "message": text,
            "module": record.name})

    def take(self) -> list[dict[str, Any]]:
        taken = []
        while self._out:
            taken.append(self._out.popleft())
        return taken


class RecentIds:
    """The event ids already handled, forgetting the oldest half beyond ``limit``: a repeat (a
    redelivery, an own message coming back) follows its original closely, so old ids would only
    cost memory in an agent that runs for months."""

    def __init__(self, limit: int = 500_000) -> None:
        self.limit = limit
        self._ids: dict[str, None] = {}

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        if len(self._ids) > self.limit:
            for old in list(itertools.islice(self._ids, len(self._ids) // 2)):
                del self._ids[old]

    def update(self, event_ids: Iterable[str]) -> None:
        for event_id in event_ids:
            self.add(event_id)


class LiveHost:
    """Hosts one agent on a transport, with the store as its memory. See the module docstring."""

    def __init__(self, agent: Agent, transport: Transport, store: Any,
                 adapters: AdapterFactory | Mapping[str, Adapter], *,
                 heartbeat_interval: float | None = 60.0,
                 adapter_threads: Mapping[str, int] | None = None, durable: bool = True,
                 ack_poll: float = ACK_POLL, record_wait: float = RECORD_WAIT,
                 sent_log: str | os.PathLike[str] | None = None) -> None:
        self.agent = agent
        self.transport = transport
        self.store = store
        self.heartbeat_interval = heartbeat_interval
        self.adapter_threads = {"payload": 32, **(adapter_threads or {})}
        self.durable = durable
        self.ack_poll = ack_poll
        self.record_wait = record_wait
        # An audit trail: one "msg_id destination" line per message the broker confirmed.
        self._sent_log = open(sent_log, "a", encoding="utf-8") if sent_log else None  # noqa: SIM115
        self.subscriptions: tuple[str, ...] = tuple(getattr(agent, "subscriptions", (TOPIC,)))
        self.stats = HostStats()
        self.pid, self.hostname = os.getpid(), socket.gethostname()
        self._adapter_source = adapters
        self._adapters: dict[tuple[str, bytes], Adapter] = {}
        self._params: dict[str | None, dict[str, Any]] = {}  # execution -> workflow_params
        self._adapter_lock = threading.Lock()
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Output]] = []
        self._order = itertools.count()
        self._seen = RecentIds()
        self._awaiting: list[tuple[str, Delivery, float]] = []  # handled, not yet acked
        self._running_commands = 0
        self._resume: list[Output] = []
        self._runs = RunExecutions()  # run -> execution, for messages that name only a run
        self._joined = RecentIds(10_000)  # executions whose first message this host handled
        self._execution: str | None = None  # latest seen, for heartbeats
        self._run: int | None = None
        self._relay = LogRelay(agent, self.pid, self.hostname)
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._next_ack_check = 0.0
        self._store_trouble = False  # told once per outage, not at every ack poll

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Rebuild from the store, subscribe, and start handling (returns at once)."""
        self.rebuild()
        for destination in self.subscriptions:
            durable = self.durable and destination.startswith("/topic/")
            self.transport.subscribe(destination, durable_name=(
                f"{self.agent.name}.{destination.strip('/').replace('/', '.')}"
                if durable else None))
        logging.getLogger().addHandler(self._relay)
        self.transport.start(self._receive)
        self._thread = threading.Thread(target=self._main, name=f"agent-{self.agent.name}",
                                        daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.transport.wait_ready(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop handling, say EXITED, close the transport. Unacked messages are redelivered to
        the next start, which recognizes those already handled."""
        self._inbox.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
        logging.getLogger().removeHandler(self._relay)
        self.transport.close()
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        if self._sent_log is not None:
            self._sent_log.close()

    @property
    def stopped(self) -> threading.Event:
        return self._stopped

    # -- rebuild -------------------------------------------------------------------------------

    def rebuild(self) -> int:
        """Replay the open executions' events through the agent (outputs discarded), and keep
        the outputs the store lacks to send once started. Returns how many events were replayed."""
        pending: list[Output] = []
        with self._quiet():
            for event in self._history():
                if event.event_id in self._seen:
                    continue
                self._seen.add(event.event_id)
                if not self._relevant(event) or not self.agent.accepts(event):
                    continue
                self._track(event)
                if event.execution_id is not None:
                    self._joined.add(event.execution_id)
                try:
                    pending.extend(self.agent.handle(event))
                except Exception:  # noqa: BLE001 - a replay failure is counted, not fatal
                    self.stats.errors += 1
                self.stats.replayed += 1
        present = self.store.stored_ids({_output_id(output) for output in pending})
        self._resume = [output for output in pending if _output_id(output) not in present
                        and self.agent.still_due(_message(output))]
        self.stats.resent = len(self._resume)
        if self.stats.replayed:
            log.info("%s: replayed %d stored events; %d outputs to send", self.agent.name,
                     self.stats.replayed, len(self._resume))
        return self.stats.replayed

    def _history(self) -> Iterator[Event]:
        """Events of this namespace's executions that have not finished (no run_processed)."""
        namespace = self.agent.namespace
        streams = [self.store.read(execution_id=execution_id, namespace=namespace)
                   for execution_id in self.store.open_executions(namespace)]
        return heapq.merge(*streams, key=lambda event: event.position)

    def _relevant(self, event: Event) -> bool:
        return event.destination in self.subscriptions or event.sender == self.agent.name

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """A replay re-makes old decisions: their log records were sent the first time."""
        previous = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(previous)

    # -- the agent thread ----------------------------------------------------------------------

    def _receive(self, delivery: Delivery) -> None:  # transport thread: hand off, never block
        self._inbox.put(delivery)

    def _main(self) -> None:
        try:
            self._beat("READY")
            next_beat = time.monotonic() + (self.heartbeat_interval or 0)
            resume, self._resume = self._resume, []
            self._after_send(self._dispatch(resume))
            while True:
                item = self._next_item()
                if item is _STOP:
                    break
                if item is not None:
                    self._process(item)
                    for _ in range(100):  # a burst: handle it before the periodic chores
                        try:
                            item = self._inbox.get(block=False)
                        except queue.Empty:
                            break
                        if item is _STOP:
                            self._inbox.put(_STOP)
                            break
                        self._process(item)
                self._run_due()
                self._check_acks()
                self._flush_logs()
                if self.heartbeat_interval and time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat_interval
                    self._beat("PROCESSING" if self._busy() else "READY")
            self._flush_logs()
            self._beat("EXITED", timeout=5.0)
        except TransportClosed:
            log.info("%s: transport closed", self.agent.name)
        except Exception:  # noqa: BLE001 - the host must say why it died
            log.exception("%s: agent host failed", self.agent.name)
        finally:
            self._stopped.set()

    def _next_item(self) -> Any:
        now = time.monotonic()
        waits = [0.5]
        if self._timers:
            waits.append(self._timers[0][0] - time.time())
        if self._awaiting:
            waits.append(self._next_ack_check - now)
        try:
            return self._inbox.get(timeout=max(0.0, min(waits)))
        except queue.Empty:
            return None

    def _process(self, item: Any) -> None:
        if isinstance(item, Delivery):
            self._on_delivery(item)
        else:
            command, reply = item
            self._running_commands -= 1
            if reply is None:
                self.stats.errors += 1
            else:
                self._after_send(self._publish([(command.destination, reply)]))

    def _on_delivery(self, delivery: Delivery) -> None:
        event = self._event_of(delivery.destination, delivery.headers, delivery.body)
        if not self.agent.accepts(event):
            # Invalid or of another namespace: it changes nothing here, so a restart does not
            # need it from the store, and holding it back would only block the subscription.
            self.stats.acked += self.transport.ack(delivery)
            return
        self._awaiting.append((event.event_id, delivery, time.monotonic()))
        if event.event_id in self._seen:
            self.stats.duplicates += 1
            return
        self._seen.add(event.event_id)
        self._handle_chain(event)

    def _handle_chain(self, first: Event) -> None:
        """Handle an event, then the agent's own messages it caused, breadth first."""
        work = deque([first])
        while work:
            event = work.popleft()
            if not self.agent.accepts(event):
                continue
            self._track(event)
            sent = self._dispatch(self._decide(event))
            work.extend(self._own(sent))
            if event.execution_id is not None and event.execution_id not in self._joined \
                    and event.msg_type not in _RUNLESS:
                self._joined.add(event.execution_id)
                self._beat("PROCESSING")  # "I am in this execution", at once

    def _decide(self, event: Event) -> list[Output]:
        agent = self.agent
        self._relay.set_context(LogContext(agent, event.event_id, event.time,
                                           event.execution_id, event.run_id))
        try:
            outputs = agent.handle(event)
        except Exception:  # noqa: BLE001 - recorded as an agent_log, the host goes on
            self.stats.errors += 1
            logging.getLogger(f"swf.agent.{agent.agent_type}").exception(
                "%s failed on %s %s", agent.name, event.msg_type, event.event_id)
            outputs = []
        finally:
            self._relay.set_context(None)
        self.stats.handled += 1
        agent.emitted += len(outputs)
        return outputs

    def _dispatch(self, outputs: Iterable[Output]) -> list[tuple[str, dict[str, Any]]]:
        """Publish the Sends due now (returned), schedule the rest, start due Commands."""
        now = time.time()
        due: list[tuple[str, dict[str, Any]]] = []
        for output in outputs:
            if isinstance(output, Send):
                when = _epoch(output.message.get("timestamp"), now)
                if when <= now:
                    due.append((output.destination, output.message))
                else:
                    heapq.heappush(self._timers, (when, next(self._order), output))
            elif isinstance(output, Command):
                when = _epoch(output.at, now)
                if when <= now:
                    self._execute(output)
                else:
                    heapq.heappush(self._timers, (when, next(self._order), output))
            else:
                raise TypeError(f"agent output must be Send or Command, got {output!r}")
        return self._publish(due)

    def _run_due(self) -> None:
        now = time.time()
        due: list[Output] = []
        while self._timers and self._timers[0][0] <= now:
            output = heapq.heappop(self._timers)[2]
            if self.agent.still_due(_message(output)):
                due.append(output)
        if due:
            self._after_send(self._dispatch(due))

    def _publish(self, messages: list[tuple[str, dict[str, Any]]]
                 ) -> list[tuple[str, dict[str, Any]]]:
        if not messages:
            return []
        dumps = orjson.dumps
        try:
            self.transport.send([(destination, dumps(message), SEND_HEADERS)
                                 for destination, message in messages])
        except SendRefused as problem:
            self.stats.errors += 1
            log.error("%s: the broker refused messages: %s", self.agent.name, problem)
            return []
        self.stats.sent += len(messages)
        self._note_sent(messages)
        return messages

    def _note_sent(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        if self._sent_log is not None:
            self._sent_log.write("".join(f"{message.get('msg_id')} {destination}\n"
                                         for destination, message in messages))
            self._sent_log.flush()

    def _own(self, sent: list[tuple[str, dict[str, Any]]]) -> list[Event]:
        """The agent's own sent messages as events to hand back to it (each once)."""
        own = []
        for destination, message in sent:
            event = self._event_of(destination, {}, orjson.dumps(message))
            if event.event_id not in self._seen:
                self._seen.add(event.event_id)
                own.append(event)
        return own

    def _after_send(self, sent: list[tuple[str, dict[str, Any]]]) -> None:
        for event in self._own(sent):
            self._handle_chain(event)

    # -- commands ------------------------------------------------------------------------------

    def _execute(self, command: Command) -> None:
        pool = self._pools.get(command.adapter)
        if pool is None:
            pool = self._pools[command.adapter] = ThreadPoolExecutor(
                max_workers=self.adapter_threads.get(command.adapter, 1),
                thread_name_prefix=f"adapter-{command.adapter}")
        self._running_commands += 1
        pool.submit(self._run_command, command)

    def _run_command(self, command: Command) -> None:  # adapter thread
        reply = command.reply
        self._relay.set_context(LogContext(
            self.agent, str(reply.get("msg_id")), str(reply.get("timestamp") or command.at
                                                      or utc_now()),
            reply.get("execution_id"), reply.get("run_id")))
        result = None
        try:
            result = self._adapter(command.adapter, reply.get("execution_id")).execute(command)
        except Exception:  # noqa: BLE001 - recorded as an agent_log
            logging.getLogger(f"swf.adapter.{command.adapter}").exception(
                "adapter %s failed on %s", command.adapter, command.action)
        finally:
            self._relay.set_context(None)
            self._inbox.put((command, result))

    def _adapter(self, name: str, execution_id: str | None) -> Adapter:
        """The adapter for a command of an execution: its workflow parameters choose and
        configure the backend (``[ddm]``, ``[batch]``), so adapters are shared per setting."""
        source = self._adapter_source
        if isinstance(source, Mapping):
            return source[name]
        params = self._params.get(execution_id)
        key = (name, orjson.dumps((params or {}).get(name), option=orjson.OPT_SORT_KEYS))
        with self._adapter_lock:
            adapter = self._adapters.get(key)
            if adapter is None:
                adapter = self._adapters[key] = source(name, params)
            return adapter

    # -- acks, logs, heartbeats ----------------------------------------------------------------

    def _check_acks(self) -> None:
        """Ack the handled deliveries whose event the store holds (see the module docstring)."""
        now = time.monotonic()
        if not self._awaiting or now < self._next_ack_check:
            return
        self._next_ack_check = now + self.ack_poll
        try:
            stored = self.store.stored_ids({event_id for event_id, _, _ in self._awaiting})
        except Exception as problem:  # noqa: BLE001 - the store may be briefly unavailable
            if not self._store_trouble:
                self._store_trouble = True
                log.warning("%s: cannot check the store (%s); acks are held until it answers",
                            self.agent.name, str(problem).splitlines()[0] if str(problem)
                            else type(problem).__name__)
            return
        if self._store_trouble:
            self._store_trouble = False
            log.warning("%s: the store answers again; acking what it holds", self.agent.name)
        waiting, overdue = [], 0
        for item in self._awaiting:
            if item[0] in stored or now - item[2] > self.record_wait:
                overdue += item[0] not in stored
                self.stats.acked += self.transport.ack(item[1])
            else:
                waiting.append(item)
        self._awaiting = waiting
        if overdue:
            # Liveness over completeness: the recorder's durable subscription still gets these
            # messages; only a restart of this agent before it does would miss them.
            log.warning("%s: acked %d handled messages the store still lacks after %.0f s: "
                        "is the recorder running?", self.agent.name, overdue, self.record_wait)

    def _flush_logs(self) -> None:
        messages = self._relay.take()
        if messages:
            self._seen.update(message["msg_id"] for message in messages)
            self._publish([(TOPIC, message) for message in messages])

    def _beat(self, state: str, timeout: float | None = None) -> None:
        message = heartbeat(self.agent, time=utc_now(), operational_state=state,
                            execution_id=self._execution, run_id=self._run, pid=self.pid,
                            hostname=self.hostname)
        self._seen.add(message["msg_id"])
        if timeout is None:
            self._publish([(TOPIC, message)])
            return
        try:
            self.transport.send([(TOPIC, orjson.dumps(message), SEND_HEADERS)], timeout=timeout)
            self._note_sent([(TOPIC, message)])
        except (TimeoutError, TransportClosed, SendRefused):
            log.info("%s: could not say %s", self.agent.name, state)

    def _busy(self) -> bool:
        return bool(self._timers or self._running_commands or self._awaiting)

    # -- events --------------------------------------------------------------------------------

    def _event_of(self, destination: str, headers: dict[str, str], body: bytes) -> Event:
        """A received message as the store will hold it (same event_id, and the execution
        inferred from its run as far as this host has seen it), without a position."""
        # The store's sender zone: a naive sender time must read as the recorder stores it.
        event = as_stored(destination, headers, body, utc_now(),
                          sender_zone=self.store.sender_zone)
        self._runs.resolve(event)
        return event

    def _track(self, event: Event) -> None:
        if event.msg_type == "run_imminent" and event.data is not None:
            self._params[event.execution_id] = event.data.get("workflow_params") or {}
        if event.execution_id is not None and event.msg_type not in _RUNLESS:
            self._execution, self._run = event.execution_id, event.run_id
            self._runs.note(event.namespace, event.run_id, event.execution_id)


_RUNLESS = frozenset({"agent_heartbeat", "agent_log", "stop_workflow"})


def daq_name(user: str) -> str:
    """The DAQ agent's instance name, as the embedded runtime names it."""
    return f"daq_simulator-agent-{user}"


def request_run(transport: Transport, store: Any, config: WorkflowConfig, *, seed: int = 0,
                user: str | None = None, daq: str | None = None,
                start_time: str | None = None) -> Allocation:
    """Start one execution on live agents: allocate its id and run number from the store (as
    ``swf run`` does), then send the run_imminent that the DAQ agent ``daq`` turns into the run's
    schedule. The start time is the wall clock (the edge of the system), unless given."""
    user = user or DEFAULT_USER
    allocation = allocate(store, config.workflow, user, start_time or utc_now())
    simulator = DaqSimulator(daq or daq_name(user), str(config.get("testbed.namespace")))
    first = simulator.start(execution_id=allocation.execution_id, run_id=allocation.run_id,
                            workflow=config.workflow, params={**config.params, "seed": seed},
                            start_time=allocation.start_time)[0]
    assert isinstance(first, Send) and first.message["msg_type"] == "run_imminent"
    transport.send([(first.destination, orjson.dumps(first.message), SEND_HEADERS)])
    return allocation


def _message(output: Output) -> dict[str, Any]:
    """A Send's message, or the reply a Command will publish."""
    return output.message if isinstance(output, Send) else output.reply


def _output_id(output: Output) -> str:
    return str(_message(output).get("msg_id") or "")


def _epoch(text: Any, default: float) -> float:
    if not isinstance(text, str):
        return default
    try:
        return parse_time(text).timestamp()
    except ValueError:
        return default
