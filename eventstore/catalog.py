"""The message catalog: every msg_type, its fields, validation and normalization.

``examine`` turns a raw message into a ``Verdict``: the indexed envelope columns, and either the
normalized message (``data``) or a precise ``reason`` it was rejected. It is total: whatever the
bytes, it returns a verdict and never raises. Normalization folds the upstream testbed's
variants into one shape (DESIGN section 4): every msg_type its agents send is known (see
``notes/upstream-wire-formats.md``), so "rejected" means malformed. Since the store keeps raw
bodies and re-examines them on read, a later change of this catalog is an upcaster here, never a
data migration; a rule that depends on configuration (the senders' time zone) is applied at
append and its result stored (``sent_at``), so a re-examination never depends on it.

Upstream conventions handled here:

- ``content`` wrappers (fast processing, transformer, PanDA workers), flattened into the
  message; a run-lifecycle message whose ``content`` is the same message type is a forwarded
  copy of another agent's message (the same fact, marked ``forwarded``);
- fields only in STOMP headers (``msg_type``, ``namespace``, ``run_id``; the transformer's
  ``client-id`` as its sender) fill the envelope when the body has no such key;
- times: ``timestamp``/``ts`` (naive means the sender's local zone, ``sender_zone``),
  ``created_at`` (naive means UTC: the senders that write it stamp ``utcnow()``), compact
  ``%Y%m%d%H%M%S[%f]`` and epoch seconds; a naive local time that is off the broker's
  ``timestamp`` header by a whole zone offset is corrected by it; a message without a time of
  its own takes the broker's;
- ``run_id`` as int or string of ASCII digits; ``size``/``total_files``/``run_number``
  aliases; ``processed_by``/``agent_name`` as the sender; ``ad:`` checksums (decimal Adler-32,
  the DAQ simulator's convention) and hex ones;
- slice file names (``..._tf_001_slice_000.tf``) joined to their TF sample;
- the per-run "data ready" ``stf_ready`` (no file name), failed worker results without a slice
  identity, bus heartbeats without a msg_type (``agent_name`` + ``status``).
"""

from __future__ import annotations

import functools
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import orjson

from . import envelope, rest
from .envelope import format_time

SCHEMA_VERSION = 1
MAX_BODY_BYTES = 1 << 20  # larger bodies are stored but rejected unread
MAX_DEPTH = 200  # nesting levels: much deeper data could not be re-encoded (orjson stops at 254)

STR, INT, BIGINT, FLOAT, DICT, LIST, BOOL, ID = ("str", "int", "bigint", "float", "dict", "list",
                                                 "bool", "id")
_KIND_NAMES = {STR: "a string", INT: "an integer", BIGINT: "an integer", FLOAT: "a number",
               DICT: "an object", LIST: "an array", BOOL: "a boolean",
               ID: "a string or an integer"}
# What the projection columns hold: INT fields go to 32-bit columns, BIGINT ones to 64-bit.
_INT_RANGE = {INT: (-(1 << 31), (1 << 31) - 1), BIGINT: (-(1 << 63), (1 << 63) - 1)}
_INT64_MIN, _INT64_MAX = _INT_RANGE[BIGINT]


@dataclass(frozen=True, slots=True)
class Field:
    kind: str
    required: bool = False
    nullable: bool = True
    fill: bool = True  # False: checked when present, not added as None (upstream-only fields)


def _req(kind: str) -> Field:
    return Field(kind, required=True, nullable=False)


def _opt(kind: str) -> Field:
    return Field(kind)


def _up(kind: str) -> Field:
    return Field(kind, fill=False)


_RUN_STATE = {"state": _opt(STR), "substate": _opt(STR)}
_DDM = {"scope": _req(STR), "dataset": _req(STR), "outcome": _opt(STR), "error": _opt(STR)}
# Fields the upstream workflow runner, data agents and DAQ simulator add to run messages.
_RUNNER = {"simulation_tick": _up(FLOAT), "req_id": _up(ID)}
_IDDS_IDS = {"request_id": _up(ID), "transform_id": _up(ID), "workload_id": _up(ID)}
_WORKERS = {"core_count": _up(INT), "memory_per_core": _up(FLOAT), "site": _up(STR)}

# msg_type -> payload fields beyond the envelope. Unlisted fields pass through untouched.
CATALOG: dict[str, dict[str, Field]] = {
    # -- run lifecycle: the DAQ (ours, upstream's workflow runner, the legacy DAQ simulator)
    "run_imminent": {**_RUN_STATE, "workflow": _opt(STR), "workflow_params": _opt(DICT),
                     "dataset": _opt(STR), **_RUNNER, "container": _up(STR),
                     "run_conditions": _up(DICT)},
    "start_run": {**_RUN_STATE, **_RUNNER},
    "stf_gen": {**_RUN_STATE, "filename": _req(STR), "sequence": _opt(INT),
                "file_url": _opt(STR), **_RUNNER, "checksum": _up(STR),
                "size_bytes": _up(BIGINT), "start": _up(STR), "end": _up(STR)},
    "pause_run": {**_RUN_STATE, "reason": _opt(STR), **_RUNNER},
    "resume_run": {**_RUN_STATE, **_RUNNER},
    "end_run": {**_RUN_STATE, "total_stf_files": _opt(INT), "reason": _opt(STR),
                **_RUNNER},
    # -- files: stf_ready per file, or (no filename) upstream's per-run "data ready"
    "stf_ready": {"filename": _opt(STR), "file_url": _opt(STR), "checksum": _opt(STR),
                  "size_bytes": _opt(BIGINT), "sequence": _opt(INT), **_RUN_STATE, **_RUNNER,
                  "processed_by": _up(STR), "start": _up(STR), "end": _up(STR)},
    "tf_file_registered": {"tf_filename": _req(STR), "stf_filename": _req(STR),
                           "tf_first": _req(BIGINT), "tf_last": _req(BIGINT),
                           "tf_count": _opt(INT), "tf_file_id": _up(ID),
                           "file_size_bytes": _up(BIGINT), "status": _up(STR),
                           "processed_by": _up(STR)},
    "slice": {"slice_id": _req(INT), "tf_filename": _req(STR), "stf_filename": _opt(STR),
              "start": _req(BIGINT), "end": _req(BIGINT), "tf_count": _opt(INT),
              "retry": _opt(INT), "slice_filename": _up(STR), "req_id": _up(ID),
              "state": _up(STR), "substate": _up(STR)},
    # slice_id is required unless the result failed (checked in _finish_slice_result).
    "slice_result": {"slice_id": _opt(INT), "tf_filename": _opt(STR), "status": _req(STR),
                     "worker": _opt(STR), "error": _opt(STR), "retry": _opt(INT),
                     "slice_filename": _up(STR), "hostname": _up(STR),
                     "panda_task_id": _up(ID), "panda_id": _up(ID), "harvester_id": _up(ID),
                     "requested_at": _up(STR), "processing_start_at": _up(STR),
                     "processed_at": _up(STR), "output_filename": _up(STR),
                     "actual_processing_time": _up(FLOAT)},
    # -- DDM and PanDA (our processing agent)
    "dataset_opened": dict(_DDM),
    "file_attached": {**_DDM, "name": _req(STR), "size_bytes": _opt(BIGINT),
                      "checksum": _opt(STR)},
    "dataset_closed": {**_DDM, "file_count": _opt(INT), "size_bytes": _opt(BIGINT),
                       "reason": _opt(STR)},
    "panda_task_submitted": {"task_id": _opt(BIGINT), "status": _req(STR),
                             "input_dataset": _opt(STR), "error": _opt(STR),
                             "metadata": _opt(DICT)},
    "panda_task_status": {"task_id": _opt(BIGINT), "status": _req(STR), "error": _opt(STR)},
    # Not in the upstream catalog: explicit completion facts, so an execution's status is derived
    # from the log instead of being repaired by hand when a run goes quiet.
    "sampling_complete": {"stf_count": _req(INT), "sample_count": _req(INT)},
    "run_processed": {"status": _req(STR), "slices_completed": _opt(INT),
                      "slices_failed": _opt(INT), "task_id": _opt(BIGINT), "error": _opt(STR)},
    "agent_heartbeat": {"agent_type": _req(STR), "status": _opt(STR),
                        "operational_state": _opt(STR), "pid": _opt(INT), "hostname": _opt(STR)},
    "agent_log": {"level": _req(STR), "message": _req(STR), "module": _opt(STR)},
    # `swf record` proves at start that each work queue is copied to the topic it records: one
    # through each queue (agents/recorder_probe.py); recorded like any message, projected nowhere.
    "recorder_probe": {"queue": _req(STR)},
    # -- upstream's fast processing agent, PanDA workers (transceiver) and iDDS
    "run_imminent_worker": {**_RUN_STATE, "dataset": _up(STR), "target_worker_count": _up(INT),
                            "core_count": _up(INT), "slice_processing_time": _up(FLOAT),
                            "worker_rampup_time": _up(FLOAT),
                            "worker_rampdown_time": _up(FLOAT), **_RUNNER},
    "create_workflow_task": {"task_name": _up(STR), "scope": _up(STR), **_WORKERS,
                             "target_worker_count": _up(INT), "workflow": _up(DICT)},
    "created_workflow_task": {**_IDDS_IDS, "status": _up(STR)},
    "adjust_worker": {**_IDDS_IDS, **_WORKERS},
    "adjusted_worker": {**_IDDS_IDS, **_WORKERS, "status": _up(STR)},
    "close_workflow_task": dict(_IDDS_IDS),
    "closed_workflow_task": {**_IDDS_IDS, **_WORKERS, "status": _up(STR)},
    "stop_transformer": {"requested_at": _up(STR)},
    # -- the transformer (swf-transform) and its heartbeats as iDDS/the transceiver read them
    "heartbeat": {"internal_id": _up(STR), "agent_type": _up(STR)},
    "transformer_heartbeat": {"hostname": _up(STR), "agent_type": _up(STR)},
    # -- workflow control (/queue/workflow_control)
    "run_workflow": {"workflow_name": _req(STR), "config": _up(STR), "realtime": _up(BOOL),
                     "params": _up(DICT), "duration": _up(FLOAT), "source": _up(STR)},
    "stop_workflow": {"source": _up(STR)},
    "status_request": {"source": _up(STR)},
    # -- other testbed traffic: recorded and listed, not projected
    "processing_complete": {"filename": _up(STR), "input_file_url": _up(STR),
                            "input_checksum": _up(STR), "input_size_bytes": _up(BIGINT),
                            "output_files": _up(LIST), "processing_time_ms": _up(FLOAT),
                            "processed_by": _up(STR), "simulation_tick": _up(FLOAT)},
    "fastmon_status": {"status": _up(STR), "message": _up(STR), "processed_by": _up(STR)},
    "workflow_completed": {"agent_name": _up(STR)},
    "workflow_failed": {"agent_name": _up(STR)},
    "workflow_status_response": {"agent_name": _up(STR)},
    "pong": {"agent": _up(STR), "pid": _up(INT)},
    "agent_control": {"command": _req(STR)},
}
# The production-operations and canary agents' requests and results (swf-monitor agents/):
# operations traffic, not the workflow's; known, recorded, no fields checked.
OPS_TYPES = frozenset({
    "fetch_payload_log", "submit_task", "submit_evgen_task", "panda_task_operation",
    "panda_task_operations", "rucio_snapshot_update", "evgen_rucio_update", "catalog_import",
    "questionnaire_match_update", "campaign_progress_refresh", "association_sweep",
    "catalog_sync", "questionnaire_import", "questionnaire_automatch", "sync_epicprod_inventory",
    "refresh_system_status", "capture_system_snap", "rucio_arrivals_sweep",
    "epic_prod_past_import", "file_events_measure", "delivery_daily_rebuild",
    "assessment_completed", "health_ping", "shutdown", "assess_refresh", "payload_log_ready",
    "prodtask_submitted", "prodtask_submit_failed", "prodtask_submit_unrecorded",
    "panda_task_operation_done", "epicprod_inventory_ready", "system_status_ready",
    "snapper_capture_ready", "rucio_snapshot_ready", "evgen_rucio_ready", "catalog_import_ready",
    "questionnaire_match_ready", "campaign_progress_ready", "canary_assess_complete"})
for _ops_type in OPS_TYPES:
    CATALOG[_ops_type] = {}
# swf-monitor's MCP tool swf_send_message lets a person send any msg_type (announcement,
# status, test, ...): recognized by its source, recorded as sent.
MCP_SOURCE = "mcp_send_message"

# Upstream's REST calls on its monitor (rest.py): one msg_type per endpoint and method, read
# from ``rest:`` destinations only; the fields are those of the normalized data.
for _route in rest.ROUTES:
    CATALOG[_route.msg_type] = {name: _up(kind) for name, kind in _route.fields.items()}

# Messages that belong to no run; every other type needs a run_id.
RUNLESS = frozenset({*rest.RUNLESS_TYPES, "agent_heartbeat", "agent_log", "recorder_probe",
                     "heartbeat", "transformer_heartbeat", "run_workflow", "stop_workflow",
                     "status_request", "processing_complete", "fastmon_status",
                     "workflow_completed", "workflow_failed", "workflow_status_response", "pong",
                     "agent_control",
                     *OPS_TYPES})
# Run-lifecycle messages: with a `content` of the same type they are forwarded copies.
LIFECYCLE = frozenset({"run_imminent", "start_run", "pause_run", "resume_run", "end_run",
                       "stf_gen"})
CONTROL_TYPES = ("run_workflow", "stop_workflow", "status_request")
SLICE_STATUSES = frozenset({"processing", "completed", "failed"})
RUN_OUTCOMES = frozenset({"completed", "failed", "terminated"})
ENVELOPE_STRINGS = ("msg_id", "namespace", "execution_id", "sender")
_UPSTREAM_RESULT_STATES = {"done": "completed", "finished": "completed", "completed": "completed",
                           "failed": "failed", "error": "failed", "processing": "processing",
                           "running": "processing", "started": "processing"}
# The bodies of swf-panda-workers and the agent-control queue carry no msg_type of their own
# forms: a body with `command` is an agent-control request (swf-testbed
# src/swf_testbed_cli/user_agent_manager.py); one with agent_name and status is a heartbeat as
# swf-monitor's recorder reads it (src/monitor_app/activemq_processor.py:68-108).
AGENT_COMMANDS = frozenset({"start_testbed", "stop_testbed", "restart", "status", "ping"})

_TYPES = {STR: (str,), INT: (int,), BIGINT: (int,), FLOAT: (int, float), DICT: (dict,),
          LIST: (list,), BOOL: (bool,), ID: (str, int)}  # exact types: bool is not an int here
_NON_NEGATIVE = frozenset({"size_bytes", "total_stf_files", "sequence", "tf_count",
                           "file_size_bytes", "input_size_bytes"})


def _bounds(name: str, kind: str) -> tuple[int | None, int | None]:
    """An integer field's bounds: its column's, and not negative for counts and sizes."""
    if kind not in _INT_RANGE:
        return None, None
    low, high = _INT_RANGE[kind]
    return (0 if name in _NON_NEGATIVE else low), high


# Per msg_type, the field checks flattened into tuples: examine() is on every hot path.
_CHECKS = {msg_type: tuple((name, _TYPES[spec.kind], spec.required, spec.kind,
                            *_bounds(name, spec.kind))
                           for name, spec in fields.items() if spec.fill)
           for msg_type, fields in CATALOG.items()}
# Fields only upstream senders write: checked when present (rarely), never added.
_EXTRA_CHECKS = {msg_type: tuple((name, _TYPES[spec.kind], spec.kind,
                                  *_bounds(name, spec.kind))
                                 for name, spec in fields.items() if not spec.fill)
                 for msg_type, fields in CATALOG.items()}
_ENVELOPE_FIELDS = ("msg_type", "msg_id", "namespace", "execution_id", "run_id", "sender",
                    "timestamp")
_FIELD_NAMES = {msg_type: (*_ENVELOPE_FIELDS, *(name for name, spec in fields.items()
                                                if spec.fill))
                for msg_type, fields in CATALOG.items()}
_CHECKSUMMED = frozenset({"stf_ready", "file_attached", "stf_gen"})
_SLICE_TYPES = frozenset({"slice", "slice_result"})
_CANONICAL_CHECKSUM = re.compile(r"[0-9a-f]{8}\Z")
_HEX = re.compile(r"[0-9a-fA-F]{1,8}\Z")
_DECIMAL = re.compile(r"[0-9]{1,10}\Z")
_CANONICAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")
_DIGITS = re.compile(r"[0-9]+\Z")
_COMPACT = re.compile(r"[0-9]{14}(?:[0-9]{6})?\Z")
_SLICE_NAME = re.compile(r"(.+)_slice_[0-9]+(\.[^./_]*)?\Z")
_ABSENT_HEADER = frozenset({"", "none", "None", "null", "unknown"})
# A naive local time off the broker's clock by a whole zone offset (a multiple of a quarter of
# an hour, up to 14 h) within this slack is corrected by that offset.
_QUARTER_S = 900
_MAX_OFFSET_S = 14 * 3600
_SLACK_S = 120
_EPOCH_MAX = 253402300799.0  # 9999-12-31T23:59:59Z


@dataclass(slots=True)
class Verdict:
    """What ``examine`` found. The envelope columns are filled as far as they could be read."""

    msg_type: str | None = None
    msg_id: str | None = None
    namespace: str | None = None
    execution_id: str | None = None
    run_id: int | None = None
    sender: str | None = None
    sent_at: str | None = None
    data: dict[str, Any] | None = None
    reason: str | None = None
    schema_version: int = SCHEMA_VERSION
    canonical: bool = False  # valid, and in the shape ``needs_normalization`` passes as it is


class Rejected(Exception):
    """Internal: raised with the reason a message is invalid."""


def examine(body: bytes, destination: str = "", expected_namespace: str | None = None,
            headers: dict[str, str] | None = None, sender_zone: tzinfo | None = None
            ) -> Verdict:
    """Validate and normalize one raw message (with its STOMP ``headers``, if any). Naive local
    times are read in ``sender_zone`` (default UTC). Never raises."""
    if destination.startswith(rest.PREFIX):
        return _examine_rest(body, destination, expected_namespace, headers, sender_zone)
    verdict = Verdict()
    try:
        message = _decode(body)
        content = _read_envelope(message, verdict, headers or None, sender_zone or UTC)
        # (the envelope only reads the message; a canonical stamp is its sent_at as it is)
        canonical = not needs_normalization(message, SCHEMA_VERSION, verdict.sent_at)
        data = _normalize(message, content, verdict)
        if expected_namespace is not None and verdict.namespace != expected_namespace:
            raise Rejected(
                f"namespace {verdict.namespace!r} is not this store's {expected_namespace!r}")
        verdict.data = data
        verdict.canonical = canonical
    except Rejected as problem:
        verdict.reason = str(problem)
        verdict.data = None
    except Exception as problem:  # noqa: BLE001 - the contract: a verdict, never an exception
        verdict.reason = f"unreadable message: {type(problem).__name__}: {_short(problem)}"
        verdict.data = None
    return verdict


def _examine_rest(body: bytes, destination: str, expected_namespace: str | None,
                  headers: dict[str, str] | None, sender_zone: tzinfo | None) -> Verdict:
    """A call on upstream's monitor REST API (``rest.py``): the endpoint gives the msg_type,
    the payload the fields, the server's headers the receive time and what it resolved."""
    verdict = Verdict(schema_version=rest.SCHEMA_VERSION)
    headers = headers or {}
    zone = sender_zone or UTC
    try:
        if len(body) > MAX_BODY_BYTES:
            raise Rejected(f"body is {len(body)} bytes, over the {MAX_BODY_BYTES}-byte limit")
        route, params = rest.match(destination)
        verdict.msg_type = route.msg_type
        payload = rest.payload_of(route, body, orjson.loads)
        if (len(body) > 2 * MAX_DEPTH and body.count(b"{") + body.count(b"[") > MAX_DEPTH
                and _depth(payload) > MAX_DEPTH):
            raise Rejected(f"nested deeper than {MAX_DEPTH} levels")
        reading = rest.read(route, params, payload, headers, body)
        verdict.msg_id = reading.msg_id
        verdict.namespace = reading.namespace or _header(headers, "namespace")
        verdict.execution_id = reading.execution_id or _header(headers, "execution_id")
        verdict.run_id = _run_number(reading.run if reading.run is not None
                                     else _header(headers, "run_id"))
        verdict.sender = reading.sender
        verdict.sent_at = _sent_at({} if reading.stamp is None else {"timestamp": reading.stamp},
                                   None, headers, zone)
        if reading.needs_run and verdict.run_id is None:
            raise Rejected(f"{route.msg_type} needs a run: the call names none the server "
                           f"could resolve")
        data = reading.data
        broker = _broker_time(headers)
        for name in reading.times:
            if data.get(name) is not None:
                data[name] = _time(data[name], zone, broker)
        data.update(msg_type=route.msg_type, msg_id=verdict.msg_id,
                    namespace=verdict.namespace, execution_id=verdict.execution_id,
                    run_id=verdict.run_id, sender=verdict.sender, timestamp=verdict.sent_at)
        if expected_namespace is not None and verdict.namespace != expected_namespace:
            raise Rejected(
                f"namespace {verdict.namespace!r} is not this store's {expected_namespace!r}")
        verdict.data = data
    except (rest.Refused, Rejected) as problem:
        verdict.reason = str(problem)
        verdict.data = None
    except Exception as problem:  # noqa: BLE001 - the contract: a verdict, never an exception
        verdict.reason = f"unreadable call: {type(problem).__name__}: {_short(problem)}"
        verdict.data = None
    return verdict


def resolve_zone(name: str | tzinfo | None) -> tzinfo:
    """The time zone naive sender times are read in: a tzinfo, an IANA name, or None (UTC).
    ValueError for an unknown name (a configuration error, reported at start)."""
    if name is None or name == "" or name == "UTC":
        return UTC
    if isinstance(name, tzinfo):
        return name
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


_UPSTREAM_KEYS = frozenset({"content", "created_at", "size", "total_files", "run_number", "ts"})
_TIME_HEADS: set[str] = set()  # "YYYY-MM-DDTHH:MM:SS." of stamps that matched _CANONICAL_TIME
_TIME_HEADS_MAX = 4096


def _canonical_time(stamp: str) -> bool:
    r"""``_CANONICAL_TIME.match(stamp)``, a third of the cost: the log's stamps share their
    seconds, so a head that matched once only needs its microseconds checked (isdecimal is
    the regex's ``\d``: Unicode category Nd)."""
    head = stamp[:20]
    if head in _TIME_HEADS:
        return len(stamp) == 27 and stamp[26] == "Z" and stamp[20:26].isdecimal()
    if _CANONICAL_TIME.match(stamp) is None:
        return False
    if len(_TIME_HEADS) >= _TIME_HEADS_MAX:
        _TIME_HEADS.clear()
    _TIME_HEADS.add(head)
    return True


def needs_normalization(message: dict[str, Any], schema_version: int,
                        stored_time: str | None = None) -> bool:
    """Would ``examine`` change this parsed body beyond filling absent fields with None?

    False for the canonical shape our own senders write. A reader of a body that was valid when
    stored under this schema version can then skip the catalog: ``complete(message)`` gives the
    same ``data`` as ``examine`` at a fraction of the cost. Kept beside the rules it mirrors.
    ``stored_time``: the event's stored time (``sent_at``, else ``recorded_at``), always in the
    canonical form: a timestamp equal to it needs no further check.
    """
    # Keys only upstream senders write (the keys view looks the few names up in the dict).
    if schema_version != SCHEMA_VERSION or not message.keys().isdisjoint(_UPSTREAM_KEYS):
        return True
    get = message.get
    run_id = get("run_id", "")  # absent: the headers may fill it
    if type(run_id) is not int and run_id is not None:
        return True
    stamp = get("timestamp")
    if stamp != stored_time and stamp is not None and (
            type(stamp) is not str or not _canonical_time(stamp)):
        return True
    if "" in (get("msg_id"), get("namespace", ""), get("execution_id"), get("sender", "")):
        return True  # empty, or (namespace, sender) absent: the headers may fill them
    msg_type = get("msg_type")
    if msg_type in _SLICE_TYPES:  # the most frequent first
        if msg_type == "slice":
            if get("retry") is None:
                return True
        elif get("worker") is None and type(get("hostname")) is str:
            return True  # the worker is the hostname (_finish_slice_result)
        name = get("tf_filename")
        return type(name) is str and "_slice_" in name  # a slice's own file name
    if msg_type in _CHECKSUMMED:
        checksum = get("checksum")
        return checksum is not None and not _CANONICAL_CHECKSUM.match(checksum)
    prepare = _PREPARE.get(msg_type) if type(msg_type) is str else None
    if prepare is not None:  # rare types: ask the rule itself whether it fills anything in
        prepared = dict(message)
        prepare(prepared)
        return prepared != message
    return msg_type not in CATALOG


@functools.cache
def canonical_revision() -> int | None:
    """What the store marks a canonical body with at append (``Verdict.canonical``), so a
    reader can skip ``needs_normalization`` (a third of a rebuild's decoding): a digest of the
    code that judges it - this module and the canonical time format. A mark is trusted only by
    the very rules that made it: after any edit of them, even of a comment, older marks are
    unknown (checked again, as unmarked rows are), never wrong. None where the code cannot be
    read: nothing is marked then, and no mark is trusted."""
    digest = 0
    for path in (__file__, envelope.__file__):
        try:
            with open(path, "rb") as source:
                digest = zlib.crc32(source.read(), digest)
        except (OSError, TypeError):
            return None
    return digest & 0x7FFFFFFF


def complete(message: dict[str, Any]) -> dict[str, Any]:
    """Fill the absent catalog and envelope fields of a canonical message with None (in place)."""
    for name in _FIELD_NAMES[message["msg_type"]]:
        if name not in message:
            message[name] = None
    return message


def sample_of(tf_filename: str) -> str:
    """The TF sample a slice file name belongs to (``X_slice_000.tf`` -> ``X.tf``); other names
    are returned unchanged."""
    match = _SLICE_NAME.match(tf_filename)
    return match.group(1) + (match.group(2) or "") if match else tf_filename


# -- reading ---------------------------------------------------------------------------------


def _decode(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise Rejected(f"body is {len(body)} bytes, over the {MAX_BODY_BYTES}-byte limit")
    if not body.strip():
        raise Rejected("empty body")
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as problem:
        raise Rejected(f"not JSON: {problem}") from None
    if not isinstance(message, dict):
        kind = "array" if isinstance(message, list) else type(message).__name__
        raise Rejected(f"a JSON {kind}, not an object")
    if (len(body) > 2 * MAX_DEPTH and body.count(b"{") + body.count(b"[") > MAX_DEPTH
            and _depth(message) > MAX_DEPTH):
        raise Rejected(f"nested deeper than {MAX_DEPTH} levels")
    return message


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest > MAX_DEPTH:
                return deepest
        children = node.values() if type(node) is dict else node
        for child in children:
            if type(child) is dict or type(child) is list:
                stack.append((child, level + 1))
    return deepest


def _read_envelope(message: dict[str, Any], verdict: Verdict, headers: dict[str, str] | None,
                   zone: tzinfo) -> dict[str, Any] | None:
    """Fill the envelope columns; tolerate what can be tolerated, reject what cannot. Returns
    the ``content`` object, if any."""
    get = message.get
    content = get("content")
    if type(content) is not dict:
        content = None
    msg_type = get("msg_type")
    if msg_type is None and "msg_type" not in message:
        msg_type = _implied_type(message, headers)
    if type(msg_type) is str:
        verdict.msg_type = msg_type
    forwarded = (content is not None and msg_type in LIFECYCLE
                 and content.get("msg_type") == msg_type)
    value = get("msg_id")  # our senders' case first, without the fallbacks
    verdict.msg_id = value if type(value) is str and value else _envelope_string(
        message, content, "msg_id")
    value = get("namespace")
    verdict.namespace = value if type(value) is str and value else _envelope_string(
        message, content, "namespace", headers)
    value = get("execution_id")
    verdict.execution_id = value if type(value) is str and value else _envelope_string(
        message, content, "execution_id")
    sender = get("sender")
    if type(sender) is str and sender:
        verdict.sender = sender  # our senders' case, without the fallbacks below
    else:
        verdict.sender = _sender(message, content, headers)
    run_id = get("run_id")
    if run_id is None:
        run_id = get("run_number")
        if run_id is None and content is not None:
            run_id = content.get("run_id")
        if run_id is None and headers is not None and "run_id" not in message:
            run_id = _header(headers, "run_id")
    if type(run_id) is int and _INT64_MIN <= run_id <= _INT64_MAX:
        verdict.run_id = run_id
    else:
        verdict.run_id = _run_number(run_id)
    stamp = get("timestamp")
    if type(stamp) is str and not forwarded and _canonical_time(stamp):
        verdict.sent_at = stamp  # canonical already: no parse, and no zone can apply
    else:
        verdict.sent_at = _sent_at(message, content if forwarded else None, headers, zone)
    if msg_type is None:
        raise Rejected("missing msg_type")
    if type(msg_type) is not str:
        raise Rejected(f"msg_type must be a string, got {_describe(msg_type)}")
    if msg_type not in CATALOG and get("source") != MCP_SOURCE:
        raise Rejected(f"unknown msg_type {_short(msg_type)!r}")
    if msg_type in rest.REST_TYPES:
        raise Rejected(f"{msg_type} is a call on the monitor's REST API: it is recorded from "
                       f"the {rest.PREFIX} destination of its endpoint only")
    # A failed worker result may name no run (the transformer consumed a non-slice message);
    # it is kept, and shown as an error without a run.
    if (verdict.run_id is None and msg_type not in RUNLESS and msg_type in CATALOG
            and not (msg_type == "slice_result" and _failed_result(message, content))):
        raise Rejected(f"{msg_type} needs a run_id")
    return content


def _implied_type(message: dict[str, Any], headers: dict[str, str] | None) -> str | None:
    """The type of a body without a msg_type key: from the headers, else from its form."""
    if headers is not None:
        implied = _header(headers, "msg_type")
        if implied is not None:
            return implied
    if "agent_name" in message and "status" in message:
        return "agent_heartbeat"
    if message.get("command") in AGENT_COMMANDS:
        return "agent_control"
    return None


def _header(headers: dict[str, str], name: str) -> str | None:
    value = headers.get(name)
    if type(value) is not str or value in _ABSENT_HEADER:
        return None
    return value


def _envelope_string(message: dict[str, Any], content: dict[str, Any] | None, name: str,
                     headers: dict[str, str] | None = None) -> str | None:
    value = message.get(name)
    if value is None and content is not None:
        value = content.get(name)
    if value is None and headers is not None and name not in message:
        value = _header(headers, name)
    if value is None or type(value) is str:
        return value or None
    raise Rejected(f"{name} must be a string, got {_describe(value)}")


def _sender(message: dict[str, Any], content: dict[str, Any] | None,
            headers: dict[str, str] | None) -> str | None:
    """``sender``, else the legacy ``processed_by``/``agent_name``, the heartbeat's
    ``internal_id``, the transformer's ``client-id`` header, a transformer heartbeat's id."""
    sender = _envelope_string(message, content, "sender")
    if sender is not None or "sender" in message:
        return sender
    get = message.get
    for name in ("processed_by", "agent_name", "internal_id"):
        value = get(name)
        if type(value) is str and value:
            return value
    if headers is not None:
        value = _header(headers, "client-id")
        if value is not None:
            return value
    if content is not None and type(content.get("id")) is str and content["id"]:
        return str(content["id"])
    return None


def _sent_at(message: dict[str, Any], forwarded: dict[str, Any] | None,
             headers: dict[str, str] | None, zone: tzinfo) -> str | None:
    """The sender's time in the one canonical form (see the module docstring)."""
    broker = _broker_time(headers) if headers is not None else None
    get = message.get
    if forwarded is not None:  # a copy: the original's time, so it is the same fact
        stamp = forwarded.get("timestamp")
        if stamp is not None:
            return _time(stamp, zone, broker)
    stamp = get("timestamp")
    if stamp is None:
        stamp = get("ts")
    if stamp is not None:
        return _time(stamp, zone, broker)
    stamp = get("created_at")
    if stamp is not None:
        return _time(stamp, UTC, None)
    return format_time(broker) if broker is not None else None


def _broker_time(headers: dict[str, str]) -> datetime | None:
    """The broker's ``timestamp`` header (epoch milliseconds), if present and sane."""
    value = headers.get("timestamp")
    if type(value) is not str or not value.isascii() or not value.isdigit() or len(value) > 14:
        return None
    seconds = int(value) / 1000
    if not 0 < seconds <= _EPOCH_MAX:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def _time(stamp: Any, zone: tzinfo, broker: datetime | None) -> str:
    """One sender time as canonical text; naive times are in ``zone``, then checked against
    the broker's clock."""
    if type(stamp) is str:
        if _CANONICAL_TIME.match(stamp):
            return stamp
        moment = _parse(stamp)
    elif type(stamp) in (int, float):  # epoch seconds (the transformer's heartbeat)
        if not 0 <= stamp <= _EPOCH_MAX:
            raise Rejected(f"timestamp {stamp!r} is out of range")
        moment = datetime.fromtimestamp(stamp, UTC)
    else:
        raise Rejected(f"timestamp must be an ISO-8601 string, got {_describe(stamp)}")
    naive = moment.tzinfo is None
    try:
        moment = moment.replace(tzinfo=zone).astimezone(UTC) if naive else moment.astimezone(UTC)
        if naive and broker is not None:
            moment = _on_broker_clock(moment, broker)
        text = format_time(moment)
    except (OverflowError, ValueError):
        raise Rejected(f"timestamp {_short(stamp)!r} is out of the representable range") \
            from None
    if not _CANONICAL_TIME.match(text):
        raise Rejected(f"timestamp {_short(stamp)!r} is out of the representable range")
    return text


def _parse(text: str) -> datetime:
    stripped = text.strip()
    if len(stripped) > 1 and stripped[0] == '"' == stripped[-1]:
        stripped = stripped[1:-1]  # a time JSON-encoded into a string (superseded simulator)
    try:
        if _COMPACT.match(stripped):  # the DAQ simulator's %Y%m%d%H%M%S[%f]
            return datetime.strptime(stripped, "%Y%m%d%H%M%S%f"  # noqa: DTZ007 - naive on
                                     if len(stripped) == 20 else "%Y%m%d%H%M%S")  # purpose
        if stripped.endswith("Z"):
            stripped = stripped[:-1] + "+00:00"
        return datetime.fromisoformat(stripped)
    except (ValueError, OverflowError):
        raise Rejected(f"timestamp {_short(text)!r} is not an ISO-8601 time") from None


def _on_broker_clock(moment: datetime, broker: datetime) -> datetime:
    """A naive local time read in the wrong zone is off the broker's clock by a whole zone
    offset: move it by that offset. Anything else (clock skew, a stale stamp) is kept."""
    delta = (broker - moment).total_seconds()
    if abs(delta) <= _SLACK_S:
        return moment
    offset = round(delta / _QUARTER_S) * _QUARTER_S
    if offset and abs(offset) <= _MAX_OFFSET_S and abs(delta - offset) <= _SLACK_S:
        return moment + timedelta(seconds=offset)
    return moment


def _run_number(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if type(value) is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
        raise Rejected(f"run_id {value} does not fit in 64 bits")
    if type(value) is str and _DIGITS.match(value):
        if len(value) <= 19 and int(value) <= _INT64_MAX:
            return int(value)
        raise Rejected(f"run_id {_short(value)} does not fit in 64 bits")
    raise Rejected(f"run_id must be an integer or a string of digits 0-9, got "
                   f"{_describe(value)}")


def _failed_result(message: dict[str, Any], content: dict[str, Any] | None) -> bool:
    status = message.get("status")
    if status is None and content is not None:
        status = content.get("state")
    return status in ("failed", "error")


# -- normalizing -----------------------------------------------------------------------------


def _normalize(message: dict[str, Any], content: dict[str, Any] | None, verdict: Verdict
               ) -> dict[str, Any]:
    msg_type = verdict.msg_type
    assert msg_type is not None
    data = dict(message)
    if content is not None:
        _unwrap_upstream(data, msg_type)
    if "size" in data or "total_files" in data:
        _apply_aliases(data)
    prepare = _PREPARE.get(msg_type)
    if prepare is not None:
        prepare(data)
    for name, types, required, kind, low, high in _CHECKS.get(msg_type, ()):
        value = data.get(name)
        if value is None:
            if required:
                raise Rejected(f"{msg_type} is missing required field {name!r}")
            data[name] = None
        elif type(value) not in types:
            raise Rejected(f"{msg_type}.{name} must be {_KIND_NAMES[kind]}, "
                           f"got {_describe(value)}")
        elif low is not None and not low <= value <= high:
            _out_of_range(msg_type, name, kind, value)
    for name, types, kind, low, high in _EXTRA_CHECKS.get(msg_type, ()):
        if name in data:
            value = data[name]
            if value is None:
                continue
            if type(value) not in types:
                raise Rejected(f"{msg_type}.{name} must be {_KIND_NAMES[kind]}, "
                               f"got {_describe(value)}")
            if low is not None and not low <= value <= high:
                _out_of_range(msg_type, name, kind, value)
    finish = _FINISH.get(msg_type)
    if finish is not None:
        finish(data)
    # One by one, not update(**...): half the cost, same order of new keys.
    data["msg_type"] = msg_type
    data["msg_id"] = verdict.msg_id
    data["namespace"] = verdict.namespace
    data["execution_id"] = verdict.execution_id
    data["run_id"] = verdict.run_id
    data["sender"] = verdict.sender
    data["timestamp"] = verdict.sent_at
    if "created_at" in data:
        del data["created_at"]
    if "run_number" in data:
        del data["run_number"]
    if "ts" in data:
        del data["ts"]
    return data


def _out_of_range(msg_type: str, name: str, kind: str, value: int) -> None:
    """Integers must fit their projection column (32 or 64 bits); counts are not negative."""
    if value < 0 and name in _NON_NEGATIVE:
        raise Rejected(f"{name} must not be negative, got {value}")
    low, high = _INT_RANGE[kind]
    raise Rejected(f"{msg_type}.{name} {value} is out of range ({low} to {high})")


def _unwrap_upstream(data: dict[str, Any], msg_type: str) -> None:
    """Flatten ``content``: the upstream fast processing agent, transformer and PanDA workers
    put the payload there; a lifecycle message whose content is its own type is a copy."""
    content: dict[str, Any] = data.pop("content")
    if msg_type == "slice":
        for name, value in content.items():
            data.setdefault(name, value)
        if "stf_filename" not in data and "filename" in data:
            data["stf_filename"] = data.pop("filename")
    elif msg_type == "slice_result":
        outer: dict[str, Any] = _object(content.get("result"))
        inner: dict[str, Any] = _object(outer.get("result"))
        for source in (inner, outer, content):
            for name, value in source.items():
                if not isinstance(value, dict):
                    data.setdefault(name, value)
        state = content.get("state") or inner.get("state")
        if "status" not in data or data["status"] == state:
            if isinstance(state, str) and state in _UPSTREAM_RESULT_STATES:
                data["status"] = _UPSTREAM_RESULT_STATES[state]
            elif inner.get("processed"):
                data["status"] = "completed"
        if "stf_filename" not in data and type(inner.get("filename")) is str:
            data["stf_filename"] = inner["filename"]
        for name in ("state", "result", "filename"):
            data.pop(name, None)
    elif msg_type in LIFECYCLE and content.get("msg_type") == msg_type:
        forwarder = data.get("sender")
        for name, value in content.items():
            data[name] = value  # the original's fields, not the forwarder's
        data["forwarded"] = True
        data["forwarded_by"] = forwarder
    else:
        for name, value in content.items():
            data.setdefault(name, value)


def _apply_aliases(data: dict[str, Any]) -> None:
    if "size_bytes" not in data and "size" in data:
        data["size_bytes"] = data.pop("size")
    if "total_stf_files" not in data and "total_files" in data:
        data["total_stf_files"] = data.pop("total_files")


def _prepare_create_workflow_task(data: dict[str, Any]) -> None:
    """The transceiver's request (swf-panda-workers workerhandler.py:23-82): its worker
    parameters are in ``workflow`` and ``workflow.content``."""
    workflow = data.get("workflow")
    if type(workflow) is not dict:
        return
    inner = _object(workflow.get("content"))
    for name, source, key in (("task_name", workflow, "name"), ("scope", workflow, "scope"),
                              ("site", inner, "site"), ("core_count", inner, "core_count"),
                              ("memory_per_core", inner, "memory_per_core"),
                              ("target_worker_count", inner, "target_worker_count")):
        if source.get(key) is not None:
            data.setdefault(name, source[key])


def _prepare_transformer(data: dict[str, Any]) -> None:
    data.setdefault("agent_type", "transformer")


def _prepare_agent_heartbeat(data: dict[str, Any]) -> None:
    if "agent_name" in data and data.get("agent_type") is None:
        data["agent_type"] = "Unknown"  # what swf-monitor records for such a heartbeat


# Type-specific preparation before the generic field checks.
_PREPARE = {"create_workflow_task": _prepare_create_workflow_task,
            "heartbeat": _prepare_transformer, "transformer_heartbeat": _prepare_transformer,
            "agent_heartbeat": _prepare_agent_heartbeat}


def _finish_checksum(data: dict[str, Any]) -> None:
    if data.get("checksum") is not None:
        data["checksum"] = _normalize_checksum(data["checksum"])


def _finish_slice(data: dict[str, Any]) -> None:
    if data["retry"] is None:
        data["retry"] = 0
    _join_sample(data)


def _join_sample(data: dict[str, Any]) -> None:
    name = data.get("tf_filename")
    if name is not None and "_slice_" in name:
        sample = sample_of(name)
        if sample != name:
            data["tf_filename"] = sample
            data.setdefault("slice_filename", name)


def _finish_slice_result(data: dict[str, Any]) -> None:
    if data["status"] not in SLICE_STATUSES:
        raise Rejected(f"slice_result status {_short(data['status'])!r} is not one of "
                       f"{', '.join(sorted(SLICE_STATUSES))}")
    if data["slice_id"] is None and data["status"] != "failed":
        raise Rejected("slice_result is missing required field 'slice_id'")
    if data["worker"] is None and type(data.get("hostname")) is str:
        data["worker"] = data["hostname"]
    _join_sample(data)


def _finish_run_processed(data: dict[str, Any]) -> None:
    if data["status"] not in RUN_OUTCOMES:
        raise Rejected(f"run_processed status {_short(data['status'])!r} is not completed, "
                       f"failed or terminated")


# Type-specific normalization after the generic field checks.
_FINISH = {"stf_ready": _finish_checksum, "file_attached": _finish_checksum,
           "stf_gen": _finish_checksum, "slice": _finish_slice,
           "slice_result": _finish_slice_result, "run_processed": _finish_run_processed}


def _normalize_checksum(value: str) -> str | None:
    """Adler-32 as 8 lowercase hex digits. ``ad:<decimal>`` is the DAQ simulator's form (it
    writes ``"ad:" + str(adler32)``, swf-daqsim-agent daq/daq.py:524); bare text is hex (Rucio,
    our agents). ``ad:`` followed by hex letters is read as hex. Malformed text is kept as is:
    judging it is the catalog's (Rucio's) job, and its rejection is a recorded outcome."""
    if _CANONICAL_CHECKSUM.match(value):
        return value
    text = value.strip()
    if not text:
        return None
    if text[:3].lower() == "ad:":
        text = text[3:].strip()
        if not text:
            return None
        if _DECIMAL.match(text) and int(text) <= 0xFFFFFFFF:
            return f"{int(text):08x}"
    if _HEX.match(text):
        return text.lower().zfill(8)
    return value


def _object(value: Any) -> dict[str, Any]:
    return value if type(value) is dict else {}


def _describe(value: Any) -> str:
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = f"({type(value).__name__} that cannot be shown)"
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _short(value: Any) -> str:
    text = value if type(value) is str else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
