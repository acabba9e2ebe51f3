"""A whole upstream run over both channels: the REST calls upstream's agents make on their
monitor, interleaved with the bus messages they send, in their order.

``fast_processing_exchange`` plays one fast processing run of upstream's testbed: the agents'
start-up (id allocation, subscriber registration, heartbeats, log records), the workflow
runner's execution (sequence, definition, namespace, execution record, run number, run state,
its DAQ broadcasts, the execution's end) and how the data, FastMon and fast processing agents
react to each message (their monitor calls, then their own messages), with the transformers'
results and the PanDA workers' answers. It is a generator: it yields each step, a ``Call`` (to
the monitor) or a ``Wire`` (to the broker, ``replay.upstream``'s), and is sent back the
``Answer`` of each call, because the clients use what the monitor answers: the agent id makes
the agent's name, the run number and execution id go into every message, FastMon copies the
TF file the monitor echoes into its ``tf_file_registered``, the fast processing agent patches
the slice id a lookup gives. ``play`` drives it with a function per channel.

``Call.dropped`` marks a call whose answer the client never sees (a connection reset after the
server handled it): the client's retry follows as the next call (swf-common-lib
api_utils.py:13-75 retries connection errors, 404 and 5xx). Calls made through
``api_request_with_retry`` are ``retried``: ``play`` repeats them on 404 and 5xx as it does.

Payloads are built as the sending code builds them (each ``Call.origin`` cites it,
``repo:path:lines`` at the snapshots of ``notes/upstream-wire-formats.md``), encoded as
``requests`` encodes ``json=`` (``json.dumps``); times in each sender's convention. Nothing here
is upstream's code. Deterministic: the same arguments and answers give the same steps.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from .upstream import (
    CONTROL,
    EPICTOPIC,
    RESULTS,
    START,
    DaqTiming,
    FastProcessing,
    Testbed,
    Wire,
    _control,
    _end_of_run,
    _file_ready,
    _runner_messages,
    _samples,
    _Senders,
    _slice,
    _slice_result,
    _worker_broadcast,
    naive_local,
)

RESULTS_QUEUE = "/queue/panda.results.fastprocessing"
RETRYABLE = frozenset({404, 500, 502, 503, 504})  # api_utils.py:14
TRIES = 7  # the first try and six retries (api_utils.py:13)
WORKFLOW = "stf_datataking"  # testbed.toml [workflow] name, config fast_processing_default
CONFIG = "fast_processing_default"
VERSION = "1.0"
DEFINITION = "fast_processing"  # fast_processing_default.toml [workflow] name
LOG_ORIGIN = "swf-common-lib:src/swf_common_lib/rest_logging.py:56-80"
BASE = "swf-common-lib:src/swf_common_lib/base_agent.py"
RUNNER = "swf-testbed:workflows/workflow_runner.py"
DATA = "swf-testbed:example_agents/example_data_agent.py"
FASTMON = "swf-testbed:example_agents/example_fastmon_agent.py"
FASTMON_UTILS = "swf-testbed:example_agents/example_fastmon_utils.py"
FAST = "swf-testbed:example_agents/fast_processing_agent.py"
# Which agent each BaseAgent type is, its subscriptions, and the module its log records name.
AGENTS = {"DAQ_Simulator": ([CONTROL], "workflow_runner"),
          "DATA": ([EPICTOPIC], "example_data_agent"),
          "fastmon": ([EPICTOPIC], "example_fastmon_agent"),
          "Fast_Processing": ([EPICTOPIC, RESULTS_QUEUE], "fast_processing_agent")}
PIDS = {"DAQ_Simulator": 4101, "DATA": 4102, "fastmon": 4103, "Fast_Processing": 4104}


@dataclass(frozen=True, slots=True)
class Call:
    """One call on the monitor as an upstream client makes it."""

    method: str
    path: str  # under the monitor's URL, query string included
    body: bytes | None  # what ``requests`` sends for ``json=`` (None: no body)
    caller: str  # the agent's name (or its type before it has one)
    origin: str  # where the calling code is
    token: bool = True  # BaseAgent's session sends ``Authorization: Token``; the log handler not
    retried: bool = True  # through api_request_with_retry (the runner's own calls are not)
    dropped: bool = False  # the server handles it; the client sees a connection error
    sent: datetime = START

    @property
    def payload(self) -> Any:
        return None if self.body is None else json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # 0: no answer (the connection dropped)
    json: Any = None


class ClientError(AssertionError):
    """An answer the upstream client could not have used (it would have failed there)."""


Exchange = Generator["Call | Wire", "Answer | None", None]


def play(exchange: Exchange, call: Callable[[Call], Answer], send: Callable[[Wire], None],
         ) -> list[Call | Wire]:
    """Drive an exchange: ``call`` performs a call (a dropped one too: its answer is then
    thrown away), ``send`` puts a message on the bus. Retried calls are repeated on 404 and
    5xx as api_request_with_retry does (without its sleeps). Returns every step taken."""
    steps: list[Call | Wire] = []
    try:
        step = next(exchange)
        while True:
            steps.append(step)
            if isinstance(step, Wire):
                send(step)
                step = exchange.send(None)
                continue
            answer = call(step)
            tries = 1
            while step.retried and answer.status in RETRYABLE and tries < TRIES:
                answer = call(step)
                tries += 1
            step = exchange.send(Answer(0) if step.dropped else answer)
    except StopIteration:
        return steps


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def _expect(answer: Answer | None, call: Call, *codes: int) -> Any:
    if answer is None or answer.status not in codes:
        status = None if answer is None else answer.status
        raise ClientError(f"{call.caller}: {call.method} {call.path} answered {status} "
                          f"{None if answer is None else answer.json!r}; the client needs "
                          f"{'/'.join(map(str, codes))}")
    return answer.json


@dataclass(order=True)
class _Delivery:
    """A bus message reaching its consumers at ``at``."""

    at: datetime
    order: int
    message: dict[str, Any] = field(compare=False)
    destination: str = field(compare=False)
    wire: Wire | None = field(default=None, compare=False)  # the runner's, sent then


@dataclass
class _Run:
    """What the agents keep between messages."""

    testbed: Testbed
    start: datetime
    knobs: FastProcessing
    timing: DaqTiming
    senders: _Senders
    names: dict[str, str] = field(default_factory=dict)  # agent type -> name
    execution_id: str = ""
    run: str = ""
    monitor_run_id: Any = None
    file_ids: dict[str, str] = field(default_factory=dict)  # STF name -> file_id
    params: dict[str, Any] = field(default_factory=dict)  # the fast processing agent's
    slice_ids: dict[tuple[str, int], Any] = field(default_factory=dict)
    counter: int = 0
    pending: list[_Delivery] = field(default_factory=list)
    drops: set[str] = field(default_factory=set)  # call kinds whose first answer is lost
    transformer: str = ""
    failures: int = 0
    results: int = 0

    def local(self, moment: datetime) -> str:
        return naive_local(moment, self.testbed.zone)

    def deliver(self, message: dict[str, Any], destination: str, at: datetime,
                wire: Wire | None = None) -> None:
        self.counter += 1
        heapq.heappush(self.pending, _Delivery(at, self.counter, message, destination, wire))

    def call(self, kind: str, method: str, path: str, payload: Any, caller: str, origin: str,
             at: datetime, **options: Any) -> Iterator[Call]:
        """The call, preceded by a copy whose answer is lost when ``kind`` is to be dropped
        (the client's retry is the second)."""
        body = None if payload is None else _json(payload)
        step = Call(method, path, body, caller, origin, sent=at, **options)
        if kind in self.drops:
            self.drops.discard(kind)
            yield replace(step, dropped=True)
        yield step


def _log(run: _Run, agent_type: str, message: str, at: datetime, *, level: str = "INFO",
         func: str = "on_message", line: int = 1, extra: dict[str, Any] | None = None
         ) -> Iterator[Call]:
    """A record through RestLogHandler.emit: its own session, no token, no retry; extra_data
    keeps execution_id, workflow_name, run_id and username only (rest_logging.py:56-80)."""
    name = run.names.get(agent_type, agent_type)
    kept = {key: value for key, value in (extra or {}).items()
            if key in ("execution_id", "workflow_name", "run_id", "username")}
    numbers = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}
    record = {"app_name": "base_agent", "instance_name": name, "timestamp": run.local(at),
              "level": numbers[level], "levelname": level, "message": message,
              "module": AGENTS[agent_type][1], "funcname": func, "lineno": line,
              "process": PIDS[agent_type], "thread": 140000000000000 + PIDS[agent_type],
              "extra_data": kept or None}
    yield Call("POST", "/api/logs/", _json(record), name, LOG_ORIGIN, token=False,
               retried=False, sent=at)


def _context(run: _Run, **more: Any) -> dict[str, Any]:
    """BaseAgent._log_extra (base_agent.py:272-288)."""
    return {"username": run.testbed.user, "execution_id": run.execution_id or None,
            "run_id": run.run or None, **more}


def _heartbeat(run: _Run, agent_type: str, state: str, at: datetime, *,
               workflow: dict[str, Any] | None = None) -> Iterator[Call]:
    """send_heartbeat / send_enhanced_heartbeat (base_agent.py:719-798)."""
    name = run.names[agent_type]
    payload: dict[str, Any] = {"instance_name": name, "agent_type": agent_type, "status": "OK",
                               "description": f"{agent_type} agent. MQ: connected",
                               "mq_connected": True, "pid": PIDS[agent_type],
                               "hostname": run.testbed.host, "operational_state": state}
    if workflow is not None:
        payload["description"] = ". ".join([f"{agent_type} agent", "MQ: connected",
                                            *(f"{key}: {value}"
                                              for key, value in workflow.items())])
        payload.update(workflow_enabled=True,
                       current_stf_count=workflow.get("active_tasks", 0),
                       total_stf_processed=workflow.get("completed_tasks", 0))
    payload["namespace"] = run.testbed.namespace
    yield from run.call("heartbeat", "POST", "/api/systemagents/heartbeat/", payload, name,
                        f"{BASE}:719-798", at)


def _start_agent(run: _Run, agent_type: str, at: datetime) -> Exchange:
    """BaseAgent.__init__ and run(): the id (retried until it comes, api_utils.py:78-118),
    the subscriptions registered, READY, the first heartbeat."""
    call = Call("POST", "/api/state/next-agent-id/", None, agent_type, f"{BASE}:183-196",
                sent=at)
    agent_id = _expect((yield call), call, 200)
    if agent_id.get("status") != "success":
        raise ClientError(f"{agent_type}: next-agent-id said {agent_id!r}")
    run.names[agent_type] = f"{agent_type.lower()}-agent-{run.testbed.user}-{agent_id['agent_id']}"
    name = run.names[agent_type]
    if agent_type == "DAQ_Simulator":  # the runner beats once connected (workflow_runner.py:242)
        yield from _heartbeat(run, agent_type, "STARTING", at)
        yield from _log(run, agent_type, f"WorkflowRunner initialized and connected to ActiveMQ: "
                        f"{name}", at, func="__init__", line=244)
    if agent_type == "fastmon":
        yield from _log(run, agent_type, "Fast Monitor Agent initialized successfully", at,
                        func="__init__", line=45)
    for queue in AGENTS[agent_type][0]:
        payload = {"subscriber_name": f"{name}-{queue}",
                   "description": f"{agent_type} agent subscribing to {queue}",
                   "is_active": True, "fraction": 1.0}
        call = Call("POST", "/api/subscribers/", _json(payload), name, f"{BASE}:851-877",
                    sent=at)
        answer = yield call
        if answer is None or not (200 <= answer.status < 300 or (
                answer.status == 400 and "already exists" in json.dumps(answer.json).lower()
                and "subscriber" in json.dumps(answer.json).lower())):
            _expect(answer, call, 201)  # any other answer ends the agent (base_agent.py:879)
    yield from _heartbeat(run, agent_type, "READY", at)


KNOBS, TIMING, TESTBED = FastProcessing(), DaqTiming(), Testbed()
DROPS = frozenset({"stf_file", "tf_file", "slice"})


def fast_processing_exchange(*, start: datetime = START, knobs: FastProcessing = KNOBS,
                             timing: DaqTiming = TIMING, testbed: Testbed = TESTBED,
                             seed: int = 3, drops: frozenset[str] = DROPS) -> Exchange:
    """One fast processing run (workflows/fast_processing_default.toml run by stf_datataking)
    over both channels; ``drops``: the kinds of call ('stf_file', 'tf_file', 'slice',
    'slice_update', 'run', 'heartbeat') whose first answer is lost once."""
    run = _Run(testbed, start, knobs, timing, _Senders(testbed, seed), drops=set(drops))
    at = start - timedelta(seconds=10)
    for agent_type in AGENTS:
        yield from _start_agent(run, agent_type, at)
        at += timedelta(seconds=0.5)
    run.senders = _Senders(replace(testbed, agent_ids={
        agent_type.lower(): int(name.rsplit("-", 1)[1]) for agent_type, name
        in run.names.items()}), seed)
    host = testbed.worker_host.split(".")[0]
    run.transformer = f"{testbed.namespace}.ResultPublisher.{host}.{run.senders.uuid()[:8]}"
    run.failures = knobs.failed_slices
    # send_workflow_command run (send_workflow_command.py:110-123)
    yield _control({"msg_type": "run_workflow", "namespace": testbed.namespace,
                    "workflow_name": WORKFLOW, "config": CONFIG, "realtime": True,
                    "params": {}, "timestamp": run.local(at)}, at)
    yield from _runner_execution(run, at + timedelta(seconds=0.1))
    while run.pending:
        delivery = heapq.heappop(run.pending)
        yield from _react(run, delivery)
    # the workflow returned: its execution completed (workflow_runner.py:318,648-661)
    end = max(start, at) + timedelta(seconds=60)
    payload = {"status": "completed", "end_time": run.local(end)}
    call = Call("PATCH", f"/api/workflow-executions/{run.execution_id}/", _json(payload),
                run.names["DAQ_Simulator"], f"{RUNNER}:648-661", retried=False, sent=end)
    _expect((yield call), call, 200)


def _runner_execution(run: _Run, at: datetime) -> Exchange:
    """WorkflowRunner.run_workflow up to the simulation, and WorkflowExecutor.execute's
    run number and run state (workflow_runner.py:247-320,369-546,663-711;
    stf_datataking.py:25-35); then its broadcasts are scheduled."""
    testbed, name = run.testbed, run.names["DAQ_Simulator"]

    def own(method: str, path: str, body: bytes | None, origin: str) -> Call:
        """The runner's own ``requests`` calls: no retry, no timeout (:369-711)."""
        return Call(method, path, body, name, origin, retried=False, sent=at)
    call = own("POST", "/api/state/next-workflow-execution-id/",
               _json({"workflow_name": WORKFLOW}), f"{RUNNER}:369-401")
    sequence = _expect((yield call), call, 200).get("sequence", 1)
    run.execution_id = f"{WORKFLOW}-{testbed.user}-{sequence:04d}"
    query = "/api/workflow-definitions/?" + urlencode({"workflow_name": DEFINITION,
                                                       "version": VERSION})
    call = own("GET", query, None, f"{RUNNER}:403-411")
    found = _expect((yield call), call, 200)
    config = _config(testbed, run.knobs)
    if not (found if isinstance(found, list) else found.get("results")):
        payload = {"workflow_name": DEFINITION, "version": VERSION,
                   "workflow_type": "simulation",
                   "definition": "# the workflow's Python code: swf-testbed "
                                 "workflows/stf_datataking.py",
                   "parameter_values": {**config, "source": {
                       "org": "BNLNPPS", "repo": "swf-testbed",
                       "script_path": "workflows/stf_datataking.py", "branch": "main"}},
                   "created_by": testbed.user, "created_at": run.local(at)}
        call = own("POST", "/api/workflow-definitions/", _json(payload), f"{RUNNER}:435-479")
        _expect((yield call), call, 200, 201)
    call = own("GET", query, None, f"{RUNNER}:481-516")
    definitions = _expect((yield call), call, 200)
    listed = definitions if isinstance(definitions, list) else definitions.get("results", [])
    if not listed:
        raise ClientError(f"{name}: no workflow definition found: no execution record")
    call = Call("POST", "/api/namespaces/ensure/",
                _json({"name": testbed.namespace, "owner": testbed.user}), name,
                "swf-common-lib:src/swf_common_lib/api_utils.py:155-192", sent=at)
    _expect((yield call), call, 200)
    payload = {"execution_id": run.execution_id, "workflow_definition": listed[0]["id"],
               "namespace": testbed.namespace, "status": "running",
               "executed_by": testbed.user, "start_time": run.local(at),
               "parameter_values": {**config, "git_version": {"commit": "ab14c26a38d2",
                                                              "branch": "main"}}}
    call = own("POST", "/api/workflow-executions/", _json(payload), f"{RUNNER}:518-548")
    _expect((yield call), call, 200, 201)
    call = Call("POST", "/api/state/next-run-number/", None, name,
                "swf-common-lib:src/swf_common_lib/api_utils.py:121-150", sent=at)
    answer = _expect((yield call), call, 200)
    if answer.get("status") != "success":
        raise ClientError(f"{name}: next-run-number said {answer!r}")
    run.run = str(answer["run_number"])
    params = {**config["daq_state_machine"], **config["fast_processing"]}
    state = {"run_number": run.run, "phase": "initializing", "state": "imminent",
             "substate": "preparing", "target_worker_count": params["target_worker_count"],
             "active_worker_count": 0, "stf_samples_received": 0, "slices_created": 0,
             "slices_queued": 0, "slices_processing": 0, "slices_completed": 0,
             "slices_failed": 0, "state_changed_at": run.local(at),
             "metadata": {"execution_id": run.execution_id,
                          "stf_sampling_rate": params["stf_sampling_rate"],
                          "slices_per_sample": params["slices_per_sample"]}}
    call = own("POST", "/api/run-states/", _json(state), f"{RUNNER}:663-711")
    _expect((yield call), call, 200, 201)
    mark = len(run.senders.wires)
    sent = _runner_messages(run.senders, execution_id=run.execution_id, run=run.run,
                            start=run.start, stf_count=run.knobs.stf_count, periods=1,
                            timing=run.timing, prompt=None)
    for (message, moment), wire in zip(sent, run.senders.wires[mark:], strict=True):
        run.deliver(message, "runner", moment, wire)


def _config(testbed: Testbed, knobs: FastProcessing) -> dict[str, Any]:
    """fast_processing_default.toml with daq_state_machine.toml included and testbed.toml's
    [testbed] over it (workflow_runner.py:247-290,322-367)."""
    daq = {"no_beam_not_ready_delay": 5, "beam_not_ready_delay": 5, "beam_ready_delay": 2,
           "beam_not_ready_end_delay": 5, "broadcast_delay": 1, "stf_interval": 2.0,
           "stf_generation_time": 0.1, "physics_period_duration": 10,
           "physics_period_count": 2, "standby_duration": 2}
    fast = {"stf_count": 10, "physics_period_count": 1, "target_worker_count": 30,
            "stf_sampling_rate": 1.0, "slices_per_sample": 15, "slice_processing_time": 30,
            "worker_rampup_time": 300, "worker_rampdown_time": 60}
    # testbed.toml's [fast_processing] overrides: this run's knobs
    fast.update(stf_count=knobs.stf_count, num_tf_per_slice=knobs.num_tf_per_slice,
                target_worker_count=knobs.target_worker_count,
                slice_processing_time=knobs.slice_processing_time,
                worker_rampup_time=knobs.worker_rampup_time,
                worker_rampdown_time=knobs.worker_rampdown_time)
    return {"testbed": {"namespace": testbed.namespace},
            "workflow": {"name": DEFINITION, "version": VERSION,
                         "description": "Fast processing of TF slices by PanDA/iDDS"},
            "agents": {name: {"enabled": True} for name in ("data", "fastmon",
                                                            "fast_processing")},
            "daq_state_machine": daq, "fast_processing": fast}


def _emitted(run: _Run, mark: int) -> Iterator[Wire]:
    """The messages the builders added since ``mark``, and their deliveries."""
    for wire in run.senders.wires[mark:]:
        yield wire
        message = json.loads(wire.body)
        if wire.destination in (EPICTOPIC, RESULTS):
            run.deliver(message, wire.destination, wire.sent + timedelta(seconds=0.01))


def _react(run: _Run, delivery: _Delivery) -> Exchange:
    """What each agent does with one delivered message, in the order they get it."""
    message, at = delivery.message, delivery.at
    kind = message.get("msg_type")
    if delivery.wire is not None:  # the runner's own broadcast leaves now
        yield delivery.wire
        if kind == "run_imminent":
            yield from _log(run, "DAQ_Simulator", "Broadcasted run_imminent message", at,
                            func="broadcast_run_imminent", line=124,
                            extra={"execution_id": run.execution_id, "run_id": run.run})
        run.deliver(message, EPICTOPIC, at + timedelta(seconds=0.01))
        return
    if delivery.destination == RESULTS:
        yield from _fast_result(run, message, at)
        return
    yield from _data_agent(run, kind, message, at)
    yield from _fastmon(run, kind, message, at + timedelta(seconds=0.02))
    yield from _fast_processing(run, kind, message, at + timedelta(seconds=0.04))


# -- the example data agent (example_data_agent.py) ------------------------------------------------

def _data_agent(run: _Run, kind: str | None, message: dict[str, Any], at: datetime
                ) -> Exchange:
    name = run.names["DATA"]
    if kind == "run_imminent":
        yield from _log(run, "DATA", "Processing run_imminent message", at,
                        func="handle_run_imminent", line=205, extra=_context(run))
        yield from _log(run, "DATA", f"Creating run record {run.run} in monitor...", at,
                        func="create_run_record", line=57)
        payload = {"run_number": int(run.run), "start_time": run.local(at),
                   "run_conditions": message.get("run_conditions", {})}
        answer = None
        for call in run.call("run", "POST", "/api/runs/", payload, name, f"{DATA}:56-89", at):
            answer = yield call
        run.monitor_run_id = _expect(answer, call, 200, 201).get("run_id")
        yield from _log(run, "DATA", f"Run {run.run} registered in monitor with ID "
                        f"{run.monitor_run_id}", at, func="create_run_record", line=74)
    elif kind == "start_run":
        yield from _log(run, "DATA", "Processing start_run message", at,
                        func="handle_start_run", line=222, extra=_context(run))
        yield from _heartbeat(run, "DATA", "READY", at, workflow={
            "active_runs": 1, "active_files": len(run.file_ids),
            "completed_tasks": len(run.file_ids)})
    elif kind == "stf_gen":
        filename = message["filename"]
        yield from _log(run, "DATA", "Processing STF file", at, func="handle_stf_gen",
                        line=262, extra=_context(run))
        payload = {"run": run.monitor_run_id, "stf_filename": filename,
                   "file_size_bytes": message.get("size_bytes"),
                   "machine_state": message.get("state") or "unknown", "status": "registered",
                   "metadata": {"created_by": name, "substate": message.get("substate"),
                                "start": message.get("start"), "end": message.get("end"),
                                "sequence": message.get("sequence")}}
        answer = None
        for call in run.call("stf_file", "POST", "/api/stf-files/", payload, name,
                             f"{DATA}:112-165", at):
            answer = yield call
        run.file_ids[filename] = _expect(answer, call, 200, 201)["file_id"]
        yield from _log(run, "DATA", f"STF file {filename} registered with ID "
                        f"{run.file_ids[filename]}", at, func="register_stf_file", line=160)
        mark = len(run.senders.wires)
        _file_ready(run.senders, message, at + timedelta(seconds=0.1))
        yield from _emitted(run, mark)
        update = {"status": "processed",
                  "metadata": {"processed_by": name, "updated_at": run.local(at)}}
        call = Call("PATCH", f"/api/stf-files/{run.file_ids[filename]}/", _json(update), name,
                    f"{DATA}:167-189", sent=at)
        _expect((yield call), call, 200)
    elif kind == "end_run":
        update = {"end_time": run.local(at)}
        call = Call("PATCH", f"/api/runs/{run.monitor_run_id}/", _json(update), name,
                    f"{DATA}:91-110", sent=at)
        _expect((yield call), call, 200)
        yield from _heartbeat(run, "DATA", "READY", at, workflow={
            "active_runs": 1, "active_files": len(run.file_ids),
            "completed_tasks": len(run.file_ids)})
        yield from _log(run, "DATA", "Run ended", at, func="handle_end_run", line=247,
                        extra=_context(run))


# -- FastMon (example_fastmon_agent.py, example_fastmon_utils.py) ----------------------------------

def _fastmon(run: _Run, kind: str | None, message: dict[str, Any], at: datetime) -> Exchange:
    """Every message: a heartbeat; stf_ready: its TF samples registered, each announced."""
    yield from _heartbeat(run, "fastmon", "READY", at)
    if kind != "stf_ready":
        yield from _log(run, "fastmon", f"Ignoring unknown message type {kind}", at,
                        level="WARNING", func="on_message", line=104, extra=_context(run))
        return
    if not message.get("filename"):
        return
    name = run.names["fastmon"]
    yield from _log(run, "fastmon", "Processing stf_ready message", at,
                    func="sample_timeframes", line=114, extra=_context(run))
    registered = 0
    for index, sample in enumerate(_samples(run.senders.rng, message, run.knobs)):
        moment = at + timedelta(seconds=0.3 * (index + 1))
        payload = {"stf_file": message["filename"], "tf_filename": sample["tf_filename"],
                   "tf_first": sample["tf_first"], "tf_last": sample["tf_last"],
                   "tf_count": sample["tf_count"], "file_size_bytes": sample["file_size_bytes"],
                   "status": "registered",
                   "metadata": {"simulation": True, "created_from": message["filename"],
                                "tf_size_fraction": run.knobs.tf_size_fraction,
                                "agent_name": name, "state": message.get("state"),
                                "substate": message.get("substate"),
                                "start": message.get("start"), "end": message.get("end")}}
        answer = None
        for call in run.call("tf_file", "POST", "/api/fastmon-files/", payload, name,
                             f"{FASTMON_UTILS}:139-172", moment):
            answer = yield call
        tf_file = _expect(answer, call, 200, 201)
        registered += 1
        notice = {"msg_type": "tf_file_registered", "namespace": message.get("namespace"),
                  "run_id": message.get("run_id"), "execution_id": message.get("execution_id"),
                  "processed_by": name, "tf_file_id": tf_file.get("tf_file_id"),
                  "tf_filename": tf_file.get("tf_filename"),
                  "tf_first": tf_file.get("tf_first"), "tf_last": tf_file.get("tf_last"),
                  "tf_count": tf_file.get("tf_count"),
                  "file_size_bytes": tf_file.get("file_size_bytes"),
                  "stf_filename": message.get("stf_filename") or message.get("filename"),
                  "status": tf_file.get("status"), "timestamp": run.local(moment)}
        mark = len(run.senders.wires)
        run.senders.base_agent("fastmon", EPICTOPIC, notice, moment, "tf_file_registered")
        yield from _emitted(run, mark)
    yield from _log(run, "fastmon", f"Registered {registered} TF subsamples for STF file "
                    f"{message['filename']}", at, func="sample_timeframes", line=150,
                    extra=_context(run))


# -- the fast processing agent (fast_processing_agent.py) ------------------------------------------

def _fast_processing(run: _Run, kind: str | None, message: dict[str, Any], at: datetime
                     ) -> Exchange:
    name = run.names["Fast_Processing"]
    if not run.params and message.get("execution_id"):  # _update_run_context (:556-581)
        call = Call("GET", f"/api/workflow-executions/{message['execution_id']}/", None, name,
                    f"{FAST}:583-596", sent=at)
        run.params = _expect((yield call), call, 200).get("parameter_values", {})
        if "fast_processing" not in run.params:
            raise ClientError(f"{name}: the execution's parameter_values lack fast_processing")
    if kind == "run_imminent":
        yield from _log(run, "Fast_Processing", f"Run imminent: execution_id="
                        f"{run.execution_id}, run_id={run.run}", at, func="handle_run_imminent",
                        line=364, extra=_context(run))
        fast = run.params.get("fast_processing", {})
        yield from _system_event(run, "run_imminent", {
            "execution_id": run.execution_id,
            "target_worker_count": fast.get("target_worker_count", 0),
            "stf_sampling_rate": fast.get("stf_sampling_rate", 0),
            "slices_per_sample": fast.get("slices_per_sample", 0)}, at)
        mark = len(run.senders.wires)
        _worker_broadcast(run.senders, message, at, run.execution_id, run.knobs,
                          {"request_id": 7001, "transform_id": 7002, "workload_id": 7003})
        yield from _emitted(run, mark)
    elif kind == "start_run":
        yield from _run_state(run, {"phase": "physics", "state": "running",
                                    "substate": "physics"}, at)
        yield from _system_event(run, "start_run", {"execution_id": run.execution_id}, at)
    elif kind == "tf_file_registered":
        yield from _slices(run, message, at)
    elif kind == "end_run":
        yield from _run_state(run, {"phase": "completed", "state": "ended"}, at)
        yield from _system_event(run, "end_run", {"execution_id": run.execution_id}, at)
        mark = len(run.senders.wires)
        _end_of_run(run.senders, message, at, run.execution_id, run.run,
                    {"request_id": 7001, "transform_id": 7002, "workload_id": 7003})
        yield from _emitted(run, mark)


def _run_state(run: _Run, change: dict[str, Any], at: datetime) -> Exchange:
    """_update_run_state (:598-620)."""
    update = {"state_changed_at": run.local(at), **change}
    call = Call("PATCH", f"/api/run-states/{run.run}/", _json(update),
                run.names["Fast_Processing"], f"{FAST}:598-620", sent=at)
    _expect((yield call), call, 200)


def _system_event(run: _Run, event_type: str, event_data: dict[str, Any], at: datetime
                  ) -> Exchange:
    """_log_system_event (:744-768): its state comes from workflow_params, which has none."""
    event = {"timestamp": run.local(at), "run_number": run.run, "event_type": event_type,
             "state": run.params.get("state", "unknown"), "substate": run.params.get("substate"),
             "event_data": event_data}
    call = Call("POST", "/api/system-state-events/", _json(event),
                run.names["Fast_Processing"], f"{FAST}:753-768", sent=at)
    _expect((yield call), call, 200, 201)


def _slices(run: _Run, sample: dict[str, Any], at: datetime) -> Exchange:
    """handle_tf_file_registered (:420-462): slices created by REST, then sent, then the run
    state's counters read, incremented and written back (:622-641)."""
    name = run.names["Fast_Processing"]
    base = sample["tf_filename"].rsplit(".", 1)[0]
    per = run.params.get("fast_processing", {}).get("num_tf_per_slice", 2)  # (:437-439)
    created = []
    for index in range(math.ceil(sample["tf_count"] / per)):
        first = sample["tf_first"] + index * per
        last = min(first + per - 1, sample["tf_last"])
        piece = {"slice_id": index, "tf_first": first, "tf_last": last,
                 "tf_count": last - first + 1, "tf_filename": f"{base}_slice_{index:03d}.tf",
                 "stf_filename": sample["stf_filename"], "run_number": run.run,
                 "status": "queued", "retries": 0,
                 "metadata": {"execution_id": run.execution_id, "created_by": name}}
        answer = None
        for call in run.call("slice", "POST", "/api/tf-slices/", piece, name,
                             f"{FAST}:643-704", at):
            answer = yield call
        run.slice_ids[(sample["tf_filename"], index)] = _expect(answer, call, 200,
                                                                201).get("id")
        created.append(piece)
    for piece in created:
        sliced_at = at + timedelta(seconds=0.2 + 0.01 * piece["slice_id"])
        mark = len(run.senders.wires)
        body = _slice(run.senders, piece, sample, run.execution_id, run.run, sliced_at)
        yield from _emitted(run, mark)
        # a transformer takes it and answers (the first ones fail without naming the slice)
        done_at = sliced_at + timedelta(seconds=run.knobs.slice_processing_time
                                        + 0.5 * run.results)
        fail = run.failures > 0 and piece["slice_id"] == 1
        run.failures -= fail
        run.results += 1
        mark = len(run.senders.wires)
        _slice_result(run.senders, body, run.transformer, done_at, fail)
        yield from _emitted(run, mark)
    call = Call("GET", f"/api/run-states/{run.run}/", None, name, f"{FAST}:622-641", sent=at)
    current = _expect((yield call), call, 200)
    update = {"stf_samples_received": current.get("stf_samples_received", 0) + 1,
              "slices_created": current.get("slices_created", 0) + len(created),
              "slices_queued": current.get("slices_queued", 0) + len(created),
              "state_changed_at": run.local(at)}
    call = Call("PATCH", f"/api/run-states/{run.run}/", _json(update), name, f"{FAST}:622-641",
                sent=at)
    _expect((yield call), call, 200)
    yield from _system_event(run, "tf_file_processed", {
        "tf_filename": sample["tf_filename"], "stf_filename": sample["stf_filename"],
        "slices_created": len(created)}, at)


def _fast_result(run: _Run, message: dict[str, Any], at: datetime) -> Exchange:
    """handle_slice_result and _update_tfslice_from_result (:528-581,770-849): a result that
    names its slice (a success) is looked up by run and slice_id and patched."""
    name = run.names["Fast_Processing"]
    content = message.get("content", {})
    result = content.get("result")
    inner = result.get("result") if isinstance(result, dict) else None
    if isinstance(inner, dict) and inner.get("slice_id") is not None:
        query = "/api/tf-slices/?" + urlencode({"run_number": message.get("run_id"),
                                                "slice_id": inner["slice_id"]})
        call = Call("GET", query, None, name, f"{FAST}:816-821", sent=at)
        found = _expect((yield call), call, 200)
        if isinstance(found, list) and found and found[0].get("id"):
            update = {"status": "completed" if content.get("state") == "done"
                      or inner.get("processed") else "failed",
                      "processed_at": content.get("processed_at") or run.local(at),
                      "metadata": {"worker_hostname": content.get("hostname"),
                                   "panda_task_id": content.get("panda_task_id"),
                                   "panda_id": content.get("panda_id"),
                                   "harvester_id": content.get("harvester_id"),
                                   "processing_start_at": content.get("processing_start_at"),
                                   "result": result}}
            answer = None
            for call in run.call("slice_update", "PATCH", f"/api/tf-slices/{found[0]['id']}/",
                                 update, name, f"{FAST}:824-831", at):
                answer = yield call
            _expect(answer, call, 200)
    yield from _system_event(run, "slice_result", {
        "message": message, "state": content.get("state"),
        "results_received": run.results}, at)
