"""The upstream ePIC testbed's traffic, as its agents put it on the wire.

Each function below plays one run of an upstream workflow and returns every message its agents
send, as ``Wire`` records: the destination, the STOMP headers of the SEND frame, the body bytes
and the moment it is sent, each built the way the sending code builds it (``origin`` cites that
code, ``repo:path:lines``, at the snapshots listed in ``notes/upstream-wire-formats.md``). Bodies
are encoded as the senders encode them (``json.dumps``), key order included; times are stamped
in each sender's convention (naive local, naive UTC, aware UTC, compact, epoch).

Deterministic: the same arguments give the same bytes (ids that upstream draws from uuid4 or
``random`` come from a generator seeded here). ``delivered`` adds what the broker adds on
delivery (``message-id``, ``timestamp``), ``import_lines`` writes ``swf import`` lines.

Nothing here is upstream's code: the messages are rebuilt from the shapes its code sends.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import orjson

EPICTOPIC = "/topic/epictopic"
WORKERS = "/topic/panda.workers"
SLICES = "/topic/panda.slices"
RESULTS = "/topic/panda.results"
TRANSFORMER = "/topic/panda.transformer"
SLICES_TRANSFORMER = "/queue/panda.slices.transformer"
CONTROL = "/queue/workflow_control"
DAQSIM_TOPIC = "epictopic"  # the legacy DAQ simulator's bare destination
TTL = str(12 * 3600 * 1000)
START = datetime(2026, 7, 23, 14, 0, tzinfo=UTC)

# Where each kind of message is built (swf-testbed unless named); see the module docstring.
ORIGINS = {
    "runner": "swf-testbed:workflows/stf_datataking.py:105-281 (sent by "
              "swf-common-lib:src/swf_common_lib/base_agent.py:635-666)",
    "prompt_runner": "swf-testbed:workflows/prompt_processing.py:137-327",
    "stf_ready_file": "swf-testbed:example_agents/example_data_agent.py:251-298",
    "stf_ready_run": "swf-testbed:agents/data_agent.py:184-201,391-393",
    "tf_file_registered": "swf-testbed:example_agents/example_fastmon_utils.py:85-206, "
                          "example_agents/example_fastmon_agent.py:59-72,159-180",
    "run_imminent_worker": "swf-testbed:example_agents/fast_processing_agent.py:361-405,226-271",
    "slice": "swf-testbed:example_agents/fast_processing_agent.py:643-742,226-271",
    "end_run_copy": "swf-testbed:example_agents/fast_processing_agent.py:480-526,226-271",
    "create_workflow_task": "swf-panda-workers:lib/swf_panda_workers/prompt/handlers/"
                            "workerhandler.py:23-82,299-313 (brokers/activemq.py:215-245)",
    "adjust_worker": "swf-panda-workers:lib/swf_panda_workers/prompt/handlers/"
                     "workerhandler.py:85-119,158-254",
    "close_workflow_task": "swf-panda-workers:lib/swf_panda_workers/prompt/handlers/"
                           "workerhandler.py:122-151,367-397",
    "stop_transformer": "swf-panda-workers:lib/swf_panda_workers/prompt/handlers/"
                        "workerhandler.py:367-384",
    "idds": "swf-panda-workers:lib/swf_panda_workers/prompt/handlers/workerhandler.py:344-365,"
            "432-524 (the consumer: iDDS, the sender, is outside these repositories)",
    "slice_result": "swf-transform:lib/swf_transform/prompt/transformer.py:370-421, "
                    "payload_process.py:110-153, brokers/activemq.py:668-720",
    "heartbeat": "swf-transform:lib/swf_transform/prompt/brokers/activemq.py:353-379,411-442",
    "control": "swf-testbed:workflows/send_workflow_command.py:110-145",
    "monitor_heartbeat": "swf-monitor:src/monitor_app/activemq_processor.py:68-108 (the form "
                         "the monitor reads as a bus heartbeat; no current sender)",
    "daqsim": "swf-daqsim-agent:daq/daq.py:205-288,385-432,496-528",
}


PRODUCERS = {"runner": "runner", "prompt_runner": "runner", "stf_ready_file": "data",
             "stf_ready_run": "data", "tf_file_registered": "fastmon",
             "run_imminent_worker": "fast_processing", "slice": "fast_processing",
             "end_run_copy": "fast_processing", "create_workflow_task": "transceiver",
             "adjust_worker": "transceiver", "close_workflow_task": "transceiver",
             "stop_transformer": "transceiver", "idds": "idds", "slice_result": "transformer",
             "heartbeat": "transformer"}


@dataclass(frozen=True, slots=True)
class Wire:
    """One message as an upstream agent sends it."""

    destination: str
    headers: dict[str, str]
    body: bytes
    sent: datetime  # aware UTC: when it leaves the sender (the broker's timestamp)
    origin: str  # ORIGINS key
    msg_type: str  # for listings (the body's, or what the body implies)

    @property
    def producer(self) -> str:
        """Who sends it: a broker keeps one producer's messages to one destination in order,
        and nothing else."""
        return PRODUCERS.get(self.origin, self.origin)

    def triple(self) -> tuple[str, dict[str, str], bytes]:
        return self.destination, dict(self.headers), self.body


@dataclass(frozen=True, slots=True)
class Testbed:
    """The deployment a run happens in."""

    namespace: str = "torre2"
    user: str = "wenauseic"
    local_zone: str = "America/New_York"  # the hosts' zone: naive local stamps are in it
    host: str = "pandaserver02.sdcc.bnl.gov"
    worker_host: str = "spar0101.sdcc.bnl.gov"
    agent_ids: dict[str, int] = field(default_factory=lambda: {
        "daq_simulator": 484, "data": 481, "fastmon": 482, "fast_processing": 483,
        "panda-worker": 485})

    def agent(self, agent_type: str) -> str:
        """BaseAgent's name (base_agent.py:193-196)."""
        return f"{agent_type.lower()}-agent-{self.user}-{self.agent_ids[agent_type.lower()]}"

    @property
    def zone(self) -> tzinfo:
        return ZoneInfo(self.local_zone)


@dataclass(frozen=True, slots=True)
class DaqTiming:
    """workflows/daq_state_machine.toml (seconds)."""

    no_beam_not_ready_delay: float = 5
    beam_not_ready_delay: float = 5
    beam_ready_delay: float = 2
    beam_not_ready_end_delay: float = 5
    broadcast_delay: float = 1
    stf_interval: float = 2.0
    stf_generation_time: float = 0.1
    standby_duration: float = 2


# -- time stamps in each sender's convention --------------------------------------------------


def naive_local(moment: datetime, zone: tzinfo) -> str:
    """``datetime.now().isoformat()`` on a host in ``zone``."""
    return moment.astimezone(zone).replace(tzinfo=None).isoformat()


def naive_utc(moment: datetime) -> str:
    """``datetime.utcnow().isoformat()``."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat()


def aware_utc(moment: datetime) -> str:
    """``datetime.now(timezone.utc).isoformat()``."""
    return moment.astimezone(UTC).isoformat()


def _at(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)


# -- senders ---------------------------------------------------------------------------------


class _Senders:
    """The send paths of the upstream agents (headers and encoding), collecting Wires."""

    def __init__(self, testbed: Testbed, seed: int) -> None:
        self.testbed = testbed
        self.wires: list[Wire] = []
        self.rng = random.Random(seed)

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def add(self, destination: str, headers: dict[str, str], body: bytes, sent: datetime,
            origin: str, msg_type: str) -> None:
        self.wires.append(Wire(destination, headers, body, sent, origin, msg_type))

    def base_agent(self, agent_type: str, destination: str, message: dict[str, Any],
                   sent: datetime, origin: str, namespace: str | None = None) -> None:
        """BaseAgent.send_message: injects sender and namespace, json.dumps, no headers
        (swf-common-lib base_agent.py:654-666)."""
        message["sender"] = self.testbed.agent(agent_type)
        message["namespace"] = namespace or self.testbed.namespace
        self.add(destination, {}, json.dumps(message).encode(), sent, origin,
                 message["msg_type"])

    def fast_processing(self, destination: str, message: dict[str, Any], sent: datetime,
                        origin: str, current_run: str, headers: dict[str, str] | None = None
                        ) -> None:
        """FastProcessingAgent.send_message (fast_processing_agent.py:226-271)."""
        message["sender"] = self.testbed.agent("Fast_Processing")
        message["namespace"] = self.testbed.namespace
        if "created_at" not in message:
            message["created_at"] = naive_utc(sent)
        run_id = message.get("run_id") or current_run
        stomp = {"persistent": "false", "vo": "eic",
                 "msg_type": message.get("msg_type", "unknown"),
                 "namespace": message.get("namespace", "default"),
                 "run_id": str(run_id) if run_id else "none"}
        stomp.update(headers or {})
        self.add(destination, stomp, json.dumps(message).encode(), sent, origin,
                 message["msg_type"])

    def panda_workers(self, destination: str, message: dict[str, Any], headers: dict[str, str],
                      sent: datetime, origin: str) -> None:
        """swf-panda-workers Publisher.publish: namespace injected into the headers,
        json.dumps(default=str), content-type (brokers/activemq.py:215-245)."""
        send = dict(headers)
        send.setdefault("namespace", self.testbed.namespace)
        send["content-type"] = "application/json"
        self.add(destination, send, json.dumps(message, default=str).encode(), sent, origin,
                 message["msg_type"])


# -- the workflow runner's DAQ schedule ------------------------------------------------------


def _runner_schedule(stf_count: int, periods: int, timing: DaqTiming
                     ) -> list[tuple[str, float]]:
    """(msg_type, simulation time) of the runner's broadcasts, as WorkflowExecutor.execute
    advances SimPy time (stf_datataking.py:25-103; every broadcast takes 0.1 s)."""
    now: float = 0
    out: list[tuple[str, float]] = []
    now += timing.no_beam_not_ready_delay
    out.append(("run_imminent", now))
    now += 0.1 + timing.broadcast_delay + timing.beam_not_ready_delay + timing.beam_ready_delay
    for period in range(periods):
        out.append(("start_run" if period == 0 else "resume_run", now))
        now += 0.1 + timing.broadcast_delay
        for index in range(stf_count):
            out.append(("stf_gen", now))
            now += 0.1 + timing.stf_generation_time
            if index < stf_count - 1:
                now += timing.stf_interval
        if period < periods - 1:
            out.append(("pause_run", now))
            now += 0.1 + timing.broadcast_delay + timing.standby_duration
    out.append(("end_run", now))
    return out


_STAMPS = {"run_imminent": ("beam", "not_ready"), "start_run": ("run", "physics"),
           "pause_run": ("run", "standby"), "resume_run": ("run", "physics"),
           "stf_gen": ("run", "physics")}


def _runner_messages(senders: _Senders, *, execution_id: str, run: str, start: datetime,
                     stf_count: int, periods: int, timing: DaqTiming, prompt: str | None
                     ) -> list[tuple[dict[str, Any], datetime]]:
    """The runner's broadcasts (stf_datataking.py:105-281; with ``prompt`` the dataset
    container of prompt_processing.py:142-153). Returns (message, time) of each."""
    zone = senders.testbed.zone
    sequence = 0
    sent: list[tuple[dict[str, Any], datetime]] = []
    for msg_type, tick in _runner_schedule(stf_count, periods, timing):
        moment = _at(start, tick)
        message: dict[str, Any] = {"msg_type": msg_type, "namespace": senders.testbed.namespace,
                                   "execution_id": execution_id, "run_id": run}
        if msg_type == "stf_gen":
            sequence += 1
            message["filename"] = f"swf.{run}.{sequence:06d}.stf"
            message["sequence"] = sequence
        message["timestamp"] = naive_local(moment, zone)
        message["simulation_tick"] = tick
        if msg_type in _STAMPS:
            message["state"], message["substate"] = _STAMPS[msg_type]
        if msg_type == "pause_run":
            message["reason"] = "Brief standby period"
        if msg_type == "end_run":
            message["total_stf_files"] = sequence
        if msg_type == "run_imminent" and prompt is not None:
            message["dataset"] = f"swf.{run}.run"
            message["container"] = prompt
        senders.base_agent("DAQ_Simulator", EPICTOPIC, message, moment,
                           "prompt_runner" if prompt is not None else "runner")
        sent.append((json.loads(senders.wires[-1].body), moment))
    return sent


def _execution_id(workflow: str, user: str, sequence: int) -> str:
    """workflow_runner.py:369-401."""
    return f"{workflow}-{user}-{sequence:04d}"


# -- runs of each workflow -------------------------------------------------------------------


def stf_datataking_run(*, run: int = 102001, sequence: int = 101, start: datetime = START,
                       stf_count: int = 5, periods: int = 1, timing: DaqTiming = DaqTiming(),
                       testbed: Testbed = Testbed(), seed: int = 1) -> list[Wire]:
    """workflows/stf_datataking.py with stf_datataking_default.toml: the runner alone."""
    senders = _Senders(testbed, seed)
    _runner_messages(senders, execution_id=_execution_id("stf_datataking", testbed.user,
                                                          sequence),
                     run=str(run), start=start, stf_count=stf_count, periods=periods,
                     timing=timing, prompt=None)
    return _in_time_order(senders.wires)


def prompt_processing_run(*, run: int = 102002, sequence: int = 102, start: datetime = START,
                          stf_count: int = 3, timing: DaqTiming = DaqTiming(),
                          testbed: Testbed = Testbed(), seed: int = 2,
                          container: str = "/tmp") -> list[Wire]:
    """workflows/prompt_processing.py with prompt_processing.toml: the runner (run_imminent
    names the dataset) and the data agent's one per-run "data ready" stf_ready, sent once the
    first file is attached to the Rucio dataset. The prompt processing agent submits its PanDA
    task by REST; it sends nothing on the bus."""
    senders = _Senders(testbed, seed)
    execution_id = _execution_id("prompt_processing", testbed.user, sequence)
    sent = _runner_messages(senders, execution_id=execution_id, run=str(run), start=start,
                            stf_count=stf_count, periods=1, timing=timing, prompt=container)
    first_file = next(moment for message, moment in sent if message["msg_type"] == "stf_gen")
    ready = {"namespace": testbed.namespace, "sender": testbed.agent("DATA"), "req_id": 1,
             "msg_type": "stf_ready", "run_id": str(run), "execution_id": execution_id}
    senders.base_agent("DATA", EPICTOPIC, ready, first_file + timedelta(seconds=1.5),
                       "stf_ready_run")
    return _in_time_order(senders.wires)


@dataclass(frozen=True, slots=True)
class FastProcessing:
    """The knobs of a fast processing run (upstream defaults where they exist)."""

    stf_count: int = 2  # fast_processing_default.toml says 10
    tf_files_per_stf: int = 2  # example_fastmon_agent.py:176 says 7
    tf_count_per_stf: int = 1000
    tf_size_fraction: float = 0.15
    num_tf_per_slice: int = 20  # fast_processing_agent.py:439 defaults to 2
    target_worker_count: int = 30
    slice_processing_time: float = 30
    worker_rampup_time: float = 300
    worker_rampdown_time: float = 60
    failed_slices: int = 1  # results that fail without a slice identity
    adjust: bool = True  # one adjust_worker/adjusted_worker pair


def fast_processing_run(*, run: int = 102003, sequence: int = 103, start: datetime = START,
                        knobs: FastProcessing = FastProcessing(),
                        timing: DaqTiming = DaqTiming(), testbed: Testbed = Testbed(),
                        seed: int = 3) -> list[Wire]:
    """workflows/fast_processing_default.toml: runner, example data agent, FastMon, fast
    processing agent, PanDA workers transceiver, iDDS and transformers, one run."""
    senders = _Senders(testbed, seed)
    rng = senders.rng
    ns = testbed.namespace
    run_id = str(run)
    execution_id = _execution_id("fast_processing", testbed.user, sequence)
    daq = _runner_messages(senders, execution_id=execution_id, run=run_id, start=start,
                           stf_count=knobs.stf_count, periods=1, timing=timing, prompt=None)
    host = testbed.worker_host.split(".")[0]
    transformer_id = f"{ns}.ResultPublisher.{host}.{senders.uuid()[:8]}"  # activemq.py:353-355
    idds = {"request_id": 7001, "transform_id": 7002, "workload_id": 7003}
    end_time = start
    failures = knobs.failed_slices
    results: list[datetime] = []
    for message, moment in daq:
        kind = message["msg_type"]
        if kind == "run_imminent":
            _worker_broadcast(senders, message, moment, execution_id, knobs, idds)
        elif kind == "stf_gen":
            ready_at = moment + timedelta(seconds=0.15)
            ready = _file_ready(senders, message, ready_at)
            for index, sample in enumerate(_samples(rng, ready, knobs)):
                registered_at = ready_at + timedelta(seconds=0.3 * (index + 1))
                tf_message = _tf_registered(senders, ready, sample, registered_at)
                for slice_index, piece in enumerate(_slices(sample, knobs)):
                    sliced_at = registered_at + timedelta(seconds=0.2 + 0.01 * slice_index)
                    body = _slice(senders, piece, tf_message, execution_id, run_id, sliced_at)
                    done_at = sliced_at + timedelta(seconds=knobs.slice_processing_time
                                                    + 0.5 * len(results))
                    fail = failures > 0 and slice_index == 1
                    failures -= fail
                    _slice_result(senders, body, transformer_id, done_at, fail)
                    results.append(done_at)
        elif kind == "end_run":
            end_time = moment
            _end_of_run(senders, message, moment, execution_id, run_id, idds)
    if knobs.adjust and results:
        _adjust(senders, run_id, results[len(results) // 2] + timedelta(seconds=0.05), idds,
                knobs)
    # The transformer's liveness heartbeats, every 30 s on each connected destination.
    beat = start + timedelta(seconds=30)
    last = max([end_time, *results])
    while beat <= last:
        for destination in (TRANSFORMER, RESULTS, SLICES_TRANSFORMER):
            _transformer_heartbeat(senders, transformer_id, destination, beat)
        beat += timedelta(seconds=30)
    return _in_time_order(senders.wires)


def _worker_broadcast(senders: _Senders, imminent: dict[str, Any], moment: datetime,
                      execution_id: str, knobs: FastProcessing, idds: dict[str, int]) -> None:
    """run_imminent_worker, the transceiver's create_workflow_task and iDDS's answer."""
    content = dict(imminent)
    content.update({"execution_id": execution_id, "core_count": knobs.target_worker_count,
                    "target_worker_count": knobs.target_worker_count,
                    "slice_processing_time": knobs.slice_processing_time,
                    "worker_rampup_time": knobs.worker_rampup_time,
                    "worker_rampdown_time": knobs.worker_rampdown_time})
    at = moment + timedelta(seconds=0.2)
    worker = {"msg_type": "run_imminent_worker", "run_id": imminent["run_id"],
              "created_at": naive_utc(at), "content": content}
    senders.fast_processing(WORKERS, worker, at, "run_imminent_worker", imminent["run_id"])
    forwarded = json.loads(senders.wires[-1].body)
    created = at + timedelta(seconds=0.05)
    panda = _panda_attributes()
    now = aware_utc(created)
    year, month, day = created.strftime("%Y"), created.strftime("%m"), created.strftime("%d")
    scope, tag = panda.get("scope", f"EIC_{year}"), panda.get("transform_tag", "fastproc")
    site = forwarded["content"].get("site") or panda.get("site", "")
    workflow = {
        "scope": scope, "name": f"{scope}_{tag}_{site}_{year}{month}{day}",
        "requester": panda.get("username", "EIC"), "username": panda.get("username", "EIC"),
        "transform_tag": tag, "cloud": panda.get("cloud", ""),
        "campaign": panda.get("campaign", ""),
        "campaign_scope": f"{panda.get('campaign', '')}_{year}",
        "campaign_group": f"{panda.get('campaign', '')}_{year}_{month}",
        "campaign_tag": panda.get("campaign_tag", ""),
        "content": {**forwarded["content"], "run_id": forwarded["run_id"], "created_at": now,
                    "core_count": forwarded["content"].get("num_cores_per_worker")
                    or forwarded["content"].get("core_count"),
                    "memory_per_core": forwarded["content"].get("num_ram_per_core")
                    or forwarded["content"].get("memory_per_core"),
                    "site": site, "panda_attributes": panda}}
    message = {"msg_type": "create_workflow_task", "run_id": forwarded["run_id"],
               "created_at": now, "content": {"run_id": forwarded["run_id"], "created_at": now,
                                              "workflow": workflow}}
    senders.panda_workers(WORKERS, message, _workers_headers("create_workflow_task",
                                                             forwarded["run_id"]),
                          created, "create_workflow_task")
    answered = created + timedelta(seconds=1.0)
    senders.add(WORKERS, {"msg_type": "created_workflow_task", "run_id": forwarded["run_id"],
                          "namespace": senders.testbed.namespace},
                json.dumps({"msg_type": "created_workflow_task", "run_id": forwarded["run_id"],
                            "created_at": aware_utc(answered),
                            "content": dict(idds)}).encode(),
                answered, "idds", "created_workflow_task")


def _panda_attributes() -> dict[str, Any]:
    """The panda: block of swf-panda-workers config/swf_panda_workers.yaml."""
    return {"vo": "wlcg", "queue": "BNL_PanDA_1", "site": "BNL-OSG", "cloud": "US",
            "working_group": "EIC", "priority": 900, "core_count": 1, "ram_count": 4000,
            "num_workers": 1, "max_walltime": 3600, "max_attempt": 3, "idle_timeout": 120,
            "username": "EICFast", "task_type": "EICFast", "processing_type": "EICFast",
            "transform_tag": "fastproc", "requester": "panda-worker", "campaign": "testbed",
            "campaign_tag": "test"}


def _workers_headers(msg_type: str, run_id: Any) -> dict[str, str]:
    """The transceiver's headers (workerhandler.py:74-80 and alike); ttl is sent as text."""
    return {"persistent": "true", "ttl": TTL, "vo": "eic", "msg_type": msg_type,
            "run_id": str(run_id)}


def _file_ready(senders: _Senders, stf_gen: dict[str, Any], moment: datetime
                ) -> dict[str, Any]:
    """The example data agent's per-file stf_ready: the runner's stf_gen has no file_url,
    checksum, size, start or end, so those are null (example_data_agent.py:251-298)."""
    message = {"msg_type": "stf_ready", "namespace": senders.testbed.namespace,
               "filename": stf_gen["filename"], "run_id": stf_gen["run_id"],
               "file_url": stf_gen.get("file_url"), "checksum": stf_gen.get("checksum"),
               "size_bytes": stf_gen.get("size_bytes"), "start": stf_gen.get("start"),
               "end": stf_gen.get("end"), "state": stf_gen.get("state"),
               "substate": stf_gen.get("substate"), "sequence": stf_gen.get("sequence"),
               "simulation_tick": stf_gen.get("simulation_tick"),
               "processed_by": senders.testbed.agent("DATA")}
    senders.base_agent("DATA", EPICTOPIC, message, moment, "stf_ready_file")
    return json.loads(senders.wires[-1].body)


def _samples(rng: random.Random, stf: dict[str, Any], knobs: FastProcessing
             ) -> list[dict[str, Any]]:
    """simulate_tf_subsamples (example_fastmon_utils.py:85-132)."""
    tf_count = stf.get("tf_count") or knobs.tf_count_per_stf
    width = tf_count // knobs.tf_files_per_stf
    base = stf.get("filename", "unknown").rsplit(".", 1)[0]
    samples = []
    for index in range(knobs.tf_files_per_stf):
        first_of = index * width
        last_of = first_of + width - 1 if index < knobs.tf_files_per_stf - 1 else tf_count - 1
        size = last_of - first_of + 1
        sub = max(1, min(int(size * knobs.tf_size_fraction * rng.gauss(1.0, 0.1)), size))
        latest = last_of - sub + 1
        tf_first = rng.randint(first_of, latest) if latest > first_of else first_of
        samples.append({"tf_filename": f"{base}_tf_{index + 1:03d}.tf", "tf_first": tf_first,
                        "tf_last": tf_first + sub - 1, "tf_count": sub,
                        "file_size_bytes": sub})
    return samples


def _tf_registered(senders: _Senders, stf: dict[str, Any], sample: dict[str, Any],
                   moment: datetime) -> dict[str, Any]:
    """create_tf_message over the monitor's FastMonFile echo (example_fastmon_utils.py:176-206):
    execution_id comes from the per-file stf_ready, which has none."""
    message = {"msg_type": "tf_file_registered", "namespace": stf.get("namespace"),
               "run_id": stf.get("run_id"), "execution_id": stf.get("execution_id"),
               "processed_by": senders.testbed.agent("fastmon"), "tf_file_id": senders.uuid(),
               "tf_filename": sample["tf_filename"], "tf_first": sample["tf_first"],
               "tf_last": sample["tf_last"], "tf_count": sample["tf_count"],
               "file_size_bytes": sample["file_size_bytes"],
               "stf_filename": stf.get("stf_filename") or stf.get("filename"),
               "status": "registered",
               "timestamp": naive_local(moment, senders.testbed.zone)}
    senders.base_agent("fastmon", EPICTOPIC, message, moment, "tf_file_registered")
    return json.loads(senders.wires[-1].body)


def _slices(sample: dict[str, Any], knobs: FastProcessing) -> list[dict[str, Any]]:
    """_create_tf_slices (fast_processing_agent.py:643-704)."""
    pieces = []
    base = sample["tf_filename"].rsplit(".", 1)[0]
    for index in range(math.ceil(sample["tf_count"] / knobs.num_tf_per_slice)):
        first = sample["tf_first"] + index * knobs.num_tf_per_slice
        last = min(first + knobs.num_tf_per_slice - 1, sample["tf_last"])
        pieces.append({"slice_id": index, "tf_first": first, "tf_last": last,
                       "tf_count": last - first + 1, "tf_filename": f"{base}_slice_{index:03d}.tf"})
    return pieces


def _slice(senders: _Senders, piece: dict[str, Any], sample: dict[str, Any], execution_id: str,
           run_id: str, moment: datetime) -> dict[str, Any]:
    """_send_slice_to_queue (fast_processing_agent.py:706-742)."""
    message = {"msg_type": "slice", "run_id": run_id, "created_at": naive_utc(moment),
               "content": {"run_id": run_id, "execution_id": execution_id,
                           "req_id": senders.uuid(), "filename": sample["stf_filename"],
                           "tf_filename": piece["tf_filename"], "slice_id": piece["slice_id"],
                           "start": piece["tf_first"], "end": piece["tf_last"],
                           "tf_count": piece["tf_count"], "state": "queued", "substate": "new"}}
    senders.fast_processing(SLICES, message, moment, "slice", run_id,
                            {"persistent": "true", "ttl": TTL})
    return json.loads(senders.wires[-1].body)


def _slice_result(senders: _Senders, slice_message: dict[str, Any], client_id: str,
                  moment: datetime, fail: bool) -> None:
    """The transformer's result (transformer.py:370-421) for the fake payload
    (payload_process.py:110-153); a failure carries no result, so no slice identity."""
    content = slice_message["content"]
    started = moment - timedelta(seconds=29.5)
    if fail:
        result: dict[str, Any] = {"state": False, "result": None,
                                  "error": "eicrecon exited with status 139 (Segmentation "
                                           "fault)"}
    else:
        tf_stem = content["tf_filename"].rsplit(".", 1)[0]
        processed = dict(content)
        processed.update({
            "processed": True, "actual_processing_time": 29.5, "output_file": None,
            "output_filename": f"{tf_stem}_run_{content['run_id']}_slice_{content['slice_id']}"
                               f"_s{content['start']}_e{content['end']}.edm4eic.root",
            "state": "processed"})
        result = {"state": True, "result": processed, "error": None}
    message = {"msg_type": "slice_result", "run_id": slice_message["run_id"],
               "created_at": naive_utc(moment),
               "content": {"requested_at": slice_message.get("created_at"),
                           "processing_start_at": naive_utc(started),
                           "processed_at": naive_utc(moment),
                           "state": "failed" if fail else "done",
                           "hostname": senders.testbed.worker_host,
                           "panda_server_url": None, "panda_task_id": "31415",
                           "panda_id": "9265358", "harvester_id": "979",
                           "result": result}}
    headers = {"persistent": "true", "ttl": TTL, "vo": "eic", "msg_type": "slice_result",
               "run_id": str(message["run_id"]), "client-id": client_id,
               "namespace": senders.testbed.namespace, "id": client_id, "ack": "auto"}
    senders.add(RESULTS, headers, json.dumps(message).encode(), moment, "slice_result",
                "slice_result")


def _transformer_heartbeat(senders: _Senders, internal_id: str, destination: str,
                           moment: datetime) -> None:
    message = {"msg_type": "heartbeat", "internal_id": internal_id,
               "namespace": senders.testbed.namespace, "timestamp": moment.timestamp()}
    headers = {"persistent": "false", "vo": "eic", "msg_type": "heartbeat",
               "namespace": senders.testbed.namespace, "client-id": internal_id,
               "id": internal_id, "ack": "auto"}
    senders.add(destination, headers, json.dumps(message).encode(), moment, "heartbeat",
                "heartbeat")


def _adjust(senders: _Senders, run_id: str, moment: datetime, idds: dict[str, int],
            knobs: FastProcessing) -> None:
    """The transceiver scales workers 1.2x on a slow slice_result (workerhandler.py:158-254)
    and iDDS confirms with adjusted_worker (read at workerhandler.py:432-487)."""
    cores = int(knobs.target_worker_count * 1.2)
    now = aware_utc(moment)
    message = {"msg_type": "adjust_worker", "run_id": run_id, "created_at": now,
               "content": {"run_id": run_id, "created_at": now, **idds, "core_count": cores,
                           "memory_per_core": None, "site": "BNL-OSG"}}
    senders.panda_workers(WORKERS, message, _workers_headers("adjust_worker", run_id), moment,
                          "adjust_worker")
    answered = moment + timedelta(seconds=1.0)
    senders.add(WORKERS, {"msg_type": "adjusted_worker", "run_id": run_id,
                          "namespace": senders.testbed.namespace},
                json.dumps({"msg_type": "adjusted_worker", "run_id": run_id,
                            "created_at": aware_utc(answered),
                            "content": {**idds, "core_count": cores, "site": "BNL-OSG",
                                        "status": "adjusted"}}).encode(),
                answered, "idds", "adjusted_worker")


def _end_of_run(senders: _Senders, end_run: dict[str, Any], moment: datetime,
                execution_id: str, run_id: str, idds: dict[str, int]) -> None:
    """The fast processing agent forwards end_run to the workers; the transceiver answers
    each end_run it hears (both) with stop_transformer and close_workflow_task; iDDS closes."""
    at = moment + timedelta(seconds=0.2)
    content = dict(end_run)
    content.update({"execution_id": execution_id})
    copy = {"msg_type": "end_run", "run_id": run_id, "created_at": naive_utc(at),
            "content": content}
    senders.fast_processing(WORKERS, copy, at, "end_run_copy", run_id)
    for trigger, heard in ((end_run, moment), (json.loads(senders.wires[-1].body), at)):
        stop_at = heard + timedelta(seconds=0.05)
        stop = {"msg_type": "stop_transformer", "run_id": run_id,
                "created_at": aware_utc(stop_at),
                "content": {"requested_at": trigger.get("created_at")}}
        senders.panda_workers(TRANSFORMER, stop, _workers_headers("stop_transformer", run_id),
                              stop_at, "stop_transformer")
        close_at = stop_at + timedelta(seconds=0.01)
        now = aware_utc(close_at)
        close = {"msg_type": "close_workflow_task", "run_id": run_id, "created_at": now,
                 "content": {"run_id": run_id, "created_at": now, **idds}}
        senders.panda_workers(WORKERS, close, _workers_headers("close_workflow_task", run_id),
                              close_at, "close_workflow_task")
    closed_at = at + timedelta(seconds=1.5)
    senders.add(WORKERS, {"msg_type": "closed_workflow_task", "run_id": run_id,
                          "namespace": senders.testbed.namespace},
                json.dumps({"msg_type": "closed_workflow_task", "run_id": run_id,
                            "created_at": aware_utc(closed_at),
                            "content": {**idds, "status": "closed"}}).encode(),
                closed_at, "idds", "closed_workflow_task")


# -- other senders ---------------------------------------------------------------------------


def _control(message: dict[str, Any], moment: datetime) -> Wire:
    """send_workflow_command.py: no headers, json.dumps."""
    return Wire(CONTROL, {}, json.dumps(message).encode(), moment, "control",
                message["msg_type"])


def control_commands(*, workflow: str = "fast_processing", config: str | None = None,
                     at: datetime = START - timedelta(seconds=3), testbed: Testbed = Testbed()
                     ) -> list[Wire]:
    """``send_workflow_command run`` at ``at`` and ``... status`` a second later
    (send_workflow_command.py:110-123,137-145)."""
    zone, ns = testbed.zone, testbed.namespace
    status_at = at + timedelta(seconds=1)
    return [_control({"msg_type": "run_workflow", "namespace": ns, "workflow_name": workflow,
                      "config": config, "realtime": True, "params": {},
                      "timestamp": naive_local(at, zone)}, at),
            _control({"msg_type": "status_request", "namespace": ns,
                      "timestamp": naive_local(status_at, zone)}, status_at)]


def stop_workflow(at: datetime, execution_id: str | None = None,
                  testbed: Testbed = Testbed()) -> Wire:
    """``send_workflow_command stop [--execution-id]`` (send_workflow_command.py:125-135)."""
    message: dict[str, Any] = {"msg_type": "stop_workflow", "namespace": testbed.namespace,
                               "timestamp": naive_local(at, testbed.zone)}
    if execution_id:
        message["execution_id"] = execution_id
    return _control(message, at)


def stray_result(at: datetime, testbed: Testbed = Testbed()) -> Wire:
    """The transformer's answer to a message that is not a slice (its own heartbeat, which it
    publishes to its slice queue): a failure with no run, no request, no error text
    (transformer.py:392-421)."""
    client_id = f"{testbed.namespace}.ResultPublisher.{testbed.worker_host.split('.')[0]}.0c0ffee0"
    message = {"msg_type": "slice_result", "run_id": None, "created_at": naive_utc(at),
               "content": {"requested_at": None, "processing_start_at": naive_utc(at),
                           "processed_at": naive_utc(at), "state": "failed",
                           "hostname": testbed.worker_host, "panda_server_url": None,
                           "panda_task_id": None, "panda_id": None, "harvester_id": None,
                           "result": {"state": False, "result": None, "error": None}}}
    headers = {"persistent": "true", "ttl": TTL, "vo": "eic", "msg_type": "slice_result",
               "run_id": "None", "client-id": client_id, "namespace": testbed.namespace,
               "id": client_id, "ack": "auto"}
    return Wire(RESULTS, headers, json.dumps(message).encode(), at, "slice_result",
                "slice_result")


def monitor_heartbeat(agent_name: str, at: datetime, status: str = "OK") -> Wire:
    """A heartbeat in the only form swf-monitor's recorder reads from the bus: a body with
    agent_name and status and no msg_type (activemq_processor.py:68-108)."""
    return Wire(EPICTOPIC, {}, json.dumps({"agent_name": agent_name, "status": status}).encode(),
                at, "monitor_heartbeat", "agent_heartbeat")


def daqsim_run(*, run: int = 7, start: datetime = START, stf_count: int = 3,
               testbed: Testbed = Testbed(), seed: int = 4) -> list[Wire]:
    """The legacy DAQ simulator (swf-daqsim-agent daq/daq.py), which writes its STF files:
    int run_id, compact local times, ``ad:`` + decimal Adler-32, ``size``, bare destination,
    ``persistent: true``; no namespace, sender or execution."""
    rng = random.Random(seed)
    zone = testbed.zone
    headers = {"persistent": "true"}
    wires = []
    compact = "%Y%m%d%H%M%S"
    run_start = start.astimezone(zone).strftime(compact)

    def send(message: dict[str, Any], moment: datetime) -> None:
        wires.append(Wire(DAQSIM_TOPIC, dict(headers), json.dumps(message).encode(), moment,
                          "daqsim", message["msg_type"]))

    send({"msg_type": "run_imminent", "req_id": 1, "run_id": run, "timestamp": run_start,
          "dataset": f"swf.{run:06d}.run",
          "run_conditions": {"beam_energy": "5 GeV", "magnetic_field": "1.5T",
                             "detector_config": "physics", "bunch_structure": "216x216"}},
         start)
    send({"msg_type": "start_run", "req_id": 1, "run_id": run, "ts": run_start}, start)
    moment = start
    for number in range(stf_count):
        interval = rng.uniform(1.0, 2.0)
        end = moment + timedelta(seconds=interval)
        local, local_end = moment.astimezone(zone), end.astimezone(zone)
        metadata = {"run_id": run, "state": "run", "substate": "physics",
                    "filename": f"swf.{run:06d}.{number:06d}.stf",
                    "start": local.strftime(compact + "%f"),
                    "end": local_end.strftime(compact + "%f")}
        metadata["checksum"] = f"ad:{rng.getrandbits(32)}"
        metadata["size"] = 137
        metadata["msg_type"] = "stf_gen"
        metadata["req_id"] = 1
        send(metadata, moment)
        moment = end
    send({"msg_type": "end_run", "req_id": 1, "run_id": run,
          "ts": moment.astimezone(zone).strftime(compact)}, moment)
    return wires


# -- delivery --------------------------------------------------------------------------------


def _in_time_order(wires: Iterable[Wire]) -> list[Wire]:
    return sorted(wires, key=lambda wire: wire.sent)


def delivered(wires: Sequence[Wire], first_id: int = 1, *, broker_time: bool = True
              ) -> list[tuple[str, dict[str, str], bytes]]:
    """The messages as a recorder receives them: the SEND headers plus the broker's
    ``message-id`` and (``broker_time``) ``timestamp`` in epoch milliseconds."""
    out = []
    for number, wire in enumerate(wires, first_id):
        headers = dict(wire.headers)
        headers["message-id"] = f"ID:upstream-{number}"
        if broker_time:
            headers["timestamp"] = str(round(wire.sent.timestamp() * 1000))
        out.append((wire.destination, headers, wire.body))
    return out


def import_lines(messages: Iterable[tuple[str, dict[str, str], bytes]]) -> bytes:
    """``swf import`` lines (the wrapper form: destination, headers, body as text)."""
    return b"".join(orjson.dumps({"destination": destination, "headers": headers,
                                  "body": body.decode()}) + b"\n"
                    for destination, headers, body in messages)
