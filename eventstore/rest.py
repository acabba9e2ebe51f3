"""Upstream's REST calls on its monitor, read as events (the catalog's REST half).

Upstream's agents keep state through swf-monitor's REST API (``notes/upstream-wire-formats.md``
section 4); ``swf serve`` answers those calls itself and appends every accepted write to the
store like a bus message:

- destination ``rest:METHOD PATH``: the method and the path as requested, ids included
  (``rest:PATCH /api/run-states/102001/``);
- the body exactly as received (a POST without payload has an empty body);
- headers: ``timestamp`` (when the server received it, epoch milliseconds: the broker's header
  of the same name), ``user-agent``, ``remote-addr`` and what the server resolved that the
  payload does not say: ``namespace``, ``run_id``, ``execution_id`` of the run or execution the
  call concerns, ``allocated`` (the value an id allocation claims), ``stf_filename`` (the STF
  file a file id names), ``tf_filename`` and ``slice_id`` (the slice a slice id names).
  Credentials are never among them.

``read(method, path, body, headers)`` maps one call to a ``Reading``: its msg_type (one per
endpoint and method, ``REST_TYPES``), the envelope, and the payload in the catalog's field names
(``rest_stf_file`` carries ``filename`` and ``size_bytes`` as ``stf_ready`` does, ``rest_slice``
``start``/``end`` as ``slice`` does), so the projections fold a fact the same whichever channel
brought it. ``Refused`` carries the reason a call is malformed; the catalog stores it rejected.

Idempotence: the message id (hence the event id) of a write is a function of its natural key
and its payload (``rest:stf_file:<file id>:<payload digest>``), so a retried POST is a duplicate
the store absorbs. Definitions and namespaces are keyed by their natural key alone (the first
one wins, as upstream's unique constraints and get_or_create make it); heartbeats by the agent,
the payload and the minute they arrived in (one agent's identical heartbeats within a minute
are one fact). The ids upstream's clients get back (``file_id``, ``tf_file_id``, a slice's
``id``) are derived from the natural key too (``file_id``, ``tf_file_id``, ``slice_pk``): a
retry is answered with the same id, and a later call naming that id is resolved by it.

This module imports nothing of ours: the catalog calls it for ``rest:`` destinations.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

PREFIX = "rest:"
SCHEMA_VERSION = 101  # a REST payload, read with its destination (bus messages: 1)
_UUIDS = uuid.UUID("7d0b2a6e-5c3f-4e61-9a57-2f1f3c7a9e10")  # namespace of our uuid5 ids
NAME = 255  # characters: upstream's longest name field (and within our name columns)
ID = 100  # upstream's instance, namespace, execution and user names
_INT = (int,)
_STR = (str,)
_DICT = (dict,)
_NUMBER = (int, float)
SLICE_STATUSES = frozenset({"processing", "completed", "failed"})


class Refused(Exception):
    """The call is malformed; the message is the reason (stored with the event)."""


@dataclass(slots=True)
class Reading:
    """One call as the catalog needs it. ``run`` is raw (int or text); ``stamp`` the payload's
    own time of the fact, if any (else the receive time counts); ``times`` names fields of
    ``data`` holding sender times to put in the store's one form."""

    msg_type: str
    msg_id: str
    data: dict[str, Any]
    namespace: str | None = None
    execution_id: str | None = None
    run: Any = None
    sender: str | None = None
    stamp: Any = None
    times: tuple[str, ...] = ()
    needs_run: bool = False


# -- ids ------------------------------------------------------------------------------------


def digest(body: bytes) -> str:
    """The payload's part of a message id."""
    return hashlib.blake2b(body, digest_size=12).hexdigest()


def _hash(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=12).hexdigest()


def number(*parts: str) -> int:
    """A positive integer id (below 2**53: exact in any JSON reader) for a natural key."""
    value = int.from_bytes(hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest(),
                           "big") >> 11
    return value or 1


def file_id(stf_filename: str) -> str:
    """An STF file's ``file_id`` (upstream: a UUID primary key; its filename is unique)."""
    return str(uuid.uuid5(_UUIDS, f"stf_file\0{stf_filename}"))


def tf_file_id(tf_filename: str) -> str:
    """A TF sample's ``tf_file_id`` (a UUID; its filename is unique)."""
    return str(uuid.uuid5(_UUIDS, f"tf_file\0{tf_filename}"))


def slice_pk(tf_filename: str, slice_id: int) -> int:
    """A TF slice's ``id``: unique per (TF sample, slice_id), upstream's unique pair."""
    return number("slice", tf_filename, str(slice_id))


def definition_pk(workflow_name: str, version: str) -> int:
    return number("workflow_definition", workflow_name, version)


def claim_id(kind: str, value: int) -> str:
    """The message id of an id allocation: a value can be claimed once (the store's unique
    event id makes the claim atomic)."""
    return f"{PREFIX}{kind}:{value}"


def created_prefix(kind: str, key: str) -> str:
    """The common start of the message ids of every create of one natural key: the store
    finds what an id names by it (``Reads.with_id_prefix``)."""
    return f"{PREFIX}{kind}:{key}:"


def heartbeat_prefix(instance_name: str) -> str:
    """The common start of the message ids of one agent's heartbeats."""
    return f"{PREFIX}heartbeat:{_hash(instance_name)}:"


def execution_key(execution_id: str) -> str:
    """The natural key part of an execution's message ids."""
    return _hash(execution_id)


def sample_of(tf_filename: str) -> str:
    """The TF sample a slice file belongs to (``X_slice_000.tf`` -> ``X.tf``)."""
    match = _SLICE_NAME.match(tf_filename)
    return match.group(1) + (match.group(2) or "") if match else tf_filename


_SLICE_NAME = re.compile(r"(.+)_slice_[0-9]+(\.[^./_]*)?\Z")


# -- payload checks ---------------------------------------------------------------------------


def _field(payload: dict[str, Any], name: str, kinds: tuple[type, ...],
           required: bool = False, *, limit: int | None = None, bits: int = 53) -> Any:
    """A payload field of one of ``kinds`` (bool is no number), None when absent or null
    (required: refused, in upstream's words). Text is at most ``limit`` characters and free of
    NUL, integers fit ``bits``: upstream's IntegerField 31, else 53 (exact in every JSON
    reader)."""
    value = payload.get(name)
    if value is None:
        if required:
            raise Refused(f"{name}: This field is required.")
        return None
    kind = type(value)
    if kind not in kinds:
        names = " or ".join({int: "an integer", float: "a number", str: "a string",
                             dict: "an object", bool: "a boolean", list: "an array"}[kind]
                            for kind in kinds)
        raise Refused(f"{name}: must be {names}, got {type(value).__name__} "
                      f"{_short(repr(value))}")
    if kind is str:
        if limit is not None and len(value) > limit:
            raise Refused(f"{name}: Ensure this field has no more than {limit} characters.")
        if "\x00" in value:
            raise Refused(f"{name}: Null characters are not allowed.")
    elif kind is int and not -(1 << bits) <= value < (1 << bits):
        raise Refused(f"{name}: {value} is out of range (at most {bits} bits)")
    return value


def _run_field(payload: dict[str, Any], name: str, required: bool = True) -> Any:
    """A run number as upstream's IntegerField takes it: an int or a string of digits, 32
    bits."""
    value = _field(payload, name, (int, str), required, bits=31)
    if type(value) is str and not (value.isascii() and value.isdigit() and len(value) <= 10
                                   and int(value) < 1 << 31):
        raise Refused(f"{name}: A valid integer is required, got {_short(repr(value))}")
    return value


def _text_of(payload: dict[str, Any] | None, name: str) -> str | None:
    """An optional name inside a nested object (metadata, extra_data): ignored when it is not
    one (not text, longer than a name, holding NUL)."""
    if payload is None:
        return None
    value = payload.get(name)
    if type(value) is not str or not value or len(value) > NAME or "\x00" in value:
        return None
    return value


def _header(headers: dict[str, str], name: str) -> str | None:
    value = headers.get(name)
    return value if type(value) is str and value else None


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


# -- the endpoints ----------------------------------------------------------------------------

Reader = Callable[[dict[str, Any], dict[str, str], dict[str, str], bytes], Reading]


@dataclass(frozen=True, slots=True)
class Route:
    """One upstream monitor endpoint: the calls it matches and how they are read."""

    method: str
    path: str  # after /api/, with {id} for the path parameter
    msg_type: str
    read: Reader
    bodyless: bool = False  # the client sends no payload
    runless: bool = True
    fields: dict[str, str] = field(default_factory=dict)  # the normalized data, documented


def _allocated(headers: dict[str, str], kind: str) -> int:
    value = _header(headers, "allocated")
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 18:
        raise Refused(f"{kind}: no allocated value (ids are allocated by the server)")
    return int(value)


def _agent_id(payload: dict[str, Any], _params: dict[str, str], headers: dict[str, str],
              _body: bytes) -> Reading:
    """POST /api/state/next-agent-id/ (swf-common-lib api_utils.py:78-118)."""
    value = _allocated(headers, "agent_id")
    return Reading("rest_agent_id", claim_id("agent_id", value), {"agent_id": value})


def _run_number(payload: dict[str, Any], _params: dict[str, str], headers: dict[str, str],
                _body: bytes) -> Reading:
    """POST /api/state/next-run-number/ (api_utils.py:121-154): the claim names the run."""
    value = _allocated(headers, "run_number")
    return Reading("rest_run_number", claim_id("run_number", value), {"run_number": value},
                   run=value)


def _execution_sequence(payload: dict[str, Any], _params: dict[str, str],
                        headers: dict[str, str], _body: bytes) -> Reading:
    """POST /api/state/next-workflow-execution-id/ (swf-testbed workflow_runner.py:372-401)."""
    value = _allocated(headers, "execution_sequence")
    return Reading("rest_execution_sequence", claim_id("execution_sequence", value),
                   {"sequence": value,
                    "workflow_name": _field(payload, "workflow_name", _STR, limit=200)})


def _namespace(payload: dict[str, Any], _params: dict[str, str], _headers: dict[str, str],
               _body: bytes) -> Reading:
    """POST /api/namespaces/ensure/ (api_utils.py:183-192; swf-monitor views.py:2447-2497):
    get-or-create, so the first one of a name is the fact."""
    name = _field(payload, "name", _STR, True, limit=ID)
    owner = _field(payload, "owner", _STR, True, limit=ID)
    return Reading("rest_namespace", f"{PREFIX}namespace:{_hash(name)}",
                   {"name": name, "owner": owner,
                    "description": _field(payload, "description", _STR)}, namespace=name)


def _heartbeat(payload: dict[str, Any], _params: dict[str, str], headers: dict[str, str],
               body: bytes) -> Reading:
    """POST /api/systemagents/heartbeat/ (base_agent.py:719-832; swf-monitor views.py:266-304).
    The receive time is the heartbeat's time."""
    instance = _field(payload, "instance_name", _STR, True, limit=ID)
    received = _header(headers, "timestamp")
    minute = int(received) // 60_000 if received is not None and received.isdigit() else 0
    data = {"agent_type": _field(payload, "agent_type", _STR, limit=ID) or "other",
            "status": _field(payload, "status", _STR, limit=40) or "OK",
            "operational_state": _field(payload, "operational_state", _STR, limit=40),
            "pid": _field(payload, "pid", _INT, bits=31),
            "hostname": _field(payload, "hostname", _STR, limit=ID),
            "description": _field(payload, "description", _STR),
            "mq_connected": _field(payload, "mq_connected", (bool,)),
            "workflow_enabled": _field(payload, "workflow_enabled", (bool,))}
    return Reading("rest_heartbeat",
                   f"{PREFIX}heartbeat:{_hash(instance)}:{minute}:{digest(body)}", data,
                   namespace=_field(payload, "namespace", _STR, limit=ID), sender=instance)


def _subscriber(payload: dict[str, Any], _params: dict[str, str], _headers: dict[str, str],
                body: bytes) -> Reading:
    """POST /api/subscribers/ (base_agent.py:851-877)."""
    name = _field(payload, "subscriber_name", _STR, True, limit=NAME)
    return Reading("rest_subscriber", created_prefix("subscriber", _hash(name)) + digest(body),
                   {"subscriber_name": name,
                    "description": _field(payload, "description", _STR),
                    "is_active": _field(payload, "is_active", (bool,)),
                    "fraction": _field(payload, "fraction", _NUMBER)})


def _log(payload: dict[str, Any], _params: dict[str, str], _headers: dict[str, str],
         body: bytes) -> Reading:
    """POST /api/logs/ (swf-common-lib rest_logging.py:56-80): one log record; its context is
    ``extra_data`` (execution_id, run_id, workflow_name, username)."""
    instance = _field(payload, "instance_name", _STR, True, limit=ID)
    stamp = _field(payload, "timestamp", _STR, True)
    message = _field(payload, "message", _STR, True)
    levelno = _field(payload, "level", _INT, bits=31)
    levelname = _field(payload, "levelname", _STR, True, limit=20)
    extra = _field(payload, "extra_data", _DICT)
    run = extra.get("run_id") if extra is not None else None
    if not (type(run) is int or (type(run) is str and run.isascii() and run.isdigit())):
        run = None  # a test's "single-..." run id: the record is kept, its run is not
    data = {"level": levelname, "levelno": levelno,
            "message": message, "module": _field(payload, "module", _STR, limit=NAME),
            "funcname": _field(payload, "funcname", _STR, limit=NAME),
            "lineno": _field(payload, "lineno", _INT),
            "app_name": _field(payload, "app_name", _STR, limit=ID),
            "process": _field(payload, "process", _INT),
            "thread": _field(payload, "thread", _INT), "extra_data": extra}
    return Reading("rest_log", f"{PREFIX}log:{digest(body)}", data,
                   execution_id=_text_of(extra, "execution_id"), run=run, sender=instance,
                   stamp=stamp)


def _definition(payload: dict[str, Any], _params: dict[str, str], _headers: dict[str, str],
                _body: bytes) -> Reading:
    """POST /api/workflow-definitions/ (workflow_runner.py:403-479): (name, version) is unique
    upstream and a definition immutable, so the first one is the fact."""
    name = _field(payload, "workflow_name", _STR, True, limit=200)
    version = _field(payload, "version", _STR, True, limit=50)
    pk = definition_pk(name, version)
    data = {"definition_id": pk, "workflow_name": name, "version": version,
            "workflow_type": _field(payload, "workflow_type", _STR, True, limit=ID),
            "definition": _field(payload, "definition", _STR, True),
            "parameter_values": _field(payload, "parameter_values", _DICT) or {},
            "created_by": _field(payload, "created_by", _STR, True, limit=ID)}
    return Reading("rest_workflow_definition", f"{PREFIX}workflow_definition:{pk}", data)


def _execution(payload: dict[str, Any], _params: dict[str, str], _headers: dict[str, str],
               body: bytes) -> Reading:
    """POST /api/workflow-executions/ (workflow_runner.py:481-548)."""
    execution_id = _field(payload, "execution_id", _STR, True, limit=ID)
    parameters = _field(payload, "parameter_values", _DICT, True)
    workflow = parameters.get("workflow")
    data = {"workflow": _text_of(workflow if type(workflow) is dict else None, "name"),
            "parameters": parameters,
            "workflow_definition": _field(payload, "workflow_definition", _INT),
            "status": _field(payload, "status", _STR, limit=50) or "pending",
            "executed_by": _field(payload, "executed_by", _STR, True, limit=ID),
            "start_time": _field(payload, "start_time", _STR, True),
            "end_time": _field(payload, "end_time", _STR)}
    return Reading("rest_execution",
                   created_prefix("execution", execution_key(execution_id)) + digest(body), data,
                   namespace=_field(payload, "namespace", _STR, limit=ID),
                   execution_id=execution_id,
                   stamp=data["start_time"], times=("start_time", "end_time"))


def _execution_update(payload: dict[str, Any], params: dict[str, str],
                      _headers: dict[str, str], body: bytes) -> Reading:
    """PATCH /api/workflow-executions/{id}/ (workflow_runner.py:648-661): the runner's own word
    on how its execution ended."""
    execution_id = params["id"]
    if len(execution_id) > ID:
        raise Refused(f"no workflow execution {_short(execution_id)!r}")
    data = {"status": _field(payload, "status", _STR, limit=50),
            "end_time": _field(payload, "end_time", _STR)}
    return Reading("rest_execution_update",
                   f"{PREFIX}execution_update:{_hash(execution_id)}:{digest(body)}", data,
                   execution_id=execution_id, stamp=data["end_time"], times=("end_time",))


_COUNTERS = ("active_worker_count", "stf_samples_received", "slices_created", "slices_queued",
             "slices_processing", "slices_completed", "slices_failed")


def _run_state_data(payload: dict[str, Any], required: bool) -> dict[str, Any]:
    data = {"phase": _field(payload, "phase", _STR, required, limit=20),
            "state": _field(payload, "state", _STR, required, limit=20),
            "substate": _field(payload, "substate", _STR, limit=20),
            "target_worker_count": _field(payload, "target_worker_count", _INT, required,
                                          bits=31)}
    for name in _COUNTERS:  # the agent's read-modify-write copies: checked, not folded
        _field(payload, name, _INT, bits=31)
    return data


def _run_state(payload: dict[str, Any], _params: dict[str, str], _headers: dict[str, str],
               body: bytes) -> Reading:
    """POST /api/run-states/ (workflow_runner.py:663-711): the runner creates the run's state
    before it announces the run; ``metadata.execution_id`` names its execution."""
    run = _run_field(payload, "run_number")
    stamp = _field(payload, "state_changed_at", _STR, True)
    metadata = _field(payload, "metadata", _DICT)
    return Reading("rest_run_state", created_prefix("run_state", str(run)) + digest(body),
                   _run_state_data(payload, True),
                   execution_id=_text_of(metadata, "execution_id"), run=run, stamp=stamp,
                   needs_run=True)


def _run_state_update(payload: dict[str, Any], params: dict[str, str],
                      _headers: dict[str, str], body: bytes) -> Reading:
    """PATCH /api/run-states/{run}/ (fast_processing_agent.py:598-641)."""
    run = _path_run(params["id"])
    return Reading("rest_run_state_update",
                   f"{PREFIX}run_state_update:{run}:{digest(body)}",
                   _run_state_data(payload, False), run=run,
                   stamp=_field(payload, "state_changed_at", _STR), needs_run=True)


def _path_run(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise Refused(f"{_short(text)!r} is not a run number")
    return int(text)


def _run(payload: dict[str, Any], _params: dict[str, str], _headers: dict[str, str],
         body: bytes) -> Reading:
    """POST /api/runs/ (example_data_agent.py:56-89). The answer's ``run_id`` is the run
    number."""
    run = _run_field(payload, "run_number")
    data = {"start_time": _field(payload, "start_time", _STR, True),
            "end_time": _field(payload, "end_time", _STR),
            "run_conditions": _field(payload, "run_conditions", _DICT)}
    return Reading("rest_run", created_prefix("run", str(run)) + digest(body), data, run=run,
                   stamp=data["start_time"], needs_run=True)


def _run_update(payload: dict[str, Any], params: dict[str, str], _headers: dict[str, str],
                body: bytes) -> Reading:
    """PATCH /api/runs/{run_id}/ (example_data_agent.py:91-110)."""
    run = _path_run(params["id"])
    data = {"end_time": _field(payload, "end_time", _STR)}
    return Reading("rest_run_update", f"{PREFIX}run_update:{run}:{digest(body)}", data, run=run,
                   stamp=data["end_time"], needs_run=True)


def _stf_file(payload: dict[str, Any], _params: dict[str, str], _headers: dict[str, str],
              body: bytes) -> Reading:
    """POST /api/stf-files/ (example_data_agent.py:112-165): the data agent registers a file
    (the same fact as its per-file stf_ready)."""
    run = _run_field(payload, "run")
    name = _field(payload, "stf_filename", _STR, True, limit=NAME)
    metadata = _field(payload, "metadata", _DICT)
    sequence = metadata.get("sequence") if metadata is not None else None
    size = _field(payload, "file_size_bytes", _INT)
    if size is not None and size < 0:
        raise Refused("file_size_bytes: must not be negative")
    data = {"filename": name, "size_bytes": size,
            "checksum": _field(payload, "checksum", _STR, limit=64),
            "sequence": sequence if type(sequence) is int and 0 <= sequence < 1 << 31 else None,
            "status": _field(payload, "status", _STR, limit=20),
            "machine_state": _field(payload, "machine_state", _STR, limit=64)}
    return Reading("rest_stf_file", created_prefix("stf_file", file_id(name)) + digest(body),
                   data, run=run, sender=_text_of(metadata, "created_by"), needs_run=True)


def _stf_file_update(payload: dict[str, Any], params: dict[str, str],
                     headers: dict[str, str], body: bytes) -> Reading:
    """PATCH /api/stf-files/{file_id}/ (example_data_agent.py:167-189): the server resolved the
    file the id names."""
    name = _header(headers, "stf_filename")
    if name is None:
        raise Refused(f"file_id {_short(params['id'])!r} names no registered STF file")
    metadata = _field(payload, "metadata", _DICT)
    data = {"filename": name, "status": _field(payload, "status", _STR, limit=20)}
    return Reading("rest_stf_file_update",
                   f"{PREFIX}stf_file_update:{_hash(params['id'])}:{digest(body)}", data,
                   sender=_text_of(metadata, "processed_by"), needs_run=True)


def _tf_file(payload: dict[str, Any], _params: dict[str, str], headers: dict[str, str],
             body: bytes) -> Reading:
    """POST /api/fastmon-files/ (example_fastmon_utils.py:139-172): one TF sample of an STF
    file (the same fact as tf_file_registered); the run is the STF file's."""
    stf = _field(payload, "stf_file", _STR, True, limit=NAME)
    name = _field(payload, "tf_filename", _STR, True, limit=NAME)
    if _header(headers, "run_id") is None:
        raise Refused(f"stf_file: Object with stf_filename={_short(stf)} does not exist.")
    data = {"tf_filename": name, "stf_filename": stf,
            "tf_first": _field(payload, "tf_first", _INT, bits=31),
            "tf_last": _field(payload, "tf_last", _INT, bits=31),
            "tf_count": _field(payload, "tf_count", _INT, bits=31),
            "file_size_bytes": _field(payload, "file_size_bytes", _INT),
            "status": _field(payload, "status", _STR, limit=20)}
    if data["tf_count"] is not None and data["tf_count"] < 0:
        raise Refused("tf_count: must not be negative")
    metadata = _field(payload, "metadata", _DICT)
    return Reading("rest_tf_file", created_prefix("tf_file", tf_file_id(name)) + digest(body),
                   data, sender=_text_of(metadata, "agent_name"), needs_run=True)


def _slice(payload: dict[str, Any], _params: dict[str, str], _headers: dict[str, str],
           body: bytes) -> Reading:
    """POST /api/tf-slices/ (fast_processing_agent.py:643-704): its ``tf_filename`` is the
    slice's own file name; its sample is ``fastmon_file`` when given, else the name's stem
    (the same fact as the slice message)."""
    run = _run_field(payload, "run_number")
    slice_id = _field(payload, "slice_id", _INT, True, bits=31)
    own = _field(payload, "tf_filename", _STR, True, limit=NAME)
    sample = _field(payload, "fastmon_file", _STR, limit=NAME) or sample_of(own)
    metadata = _field(payload, "metadata", _DICT)
    data = {"slice_id": slice_id, "tf_filename": sample, "slice_filename": own,
            "stf_filename": _field(payload, "stf_filename", _STR, limit=NAME),
            "start": _field(payload, "tf_first", _INT, True, bits=31),
            "end": _field(payload, "tf_last", _INT, True, bits=31),
            "tf_count": _field(payload, "tf_count", _INT, True, bits=31),
            "retry": _field(payload, "retries", _INT, bits=31) or 0,
            "status": _field(payload, "status", _STR, limit=20)}
    if data["tf_count"] < 0 or data["retry"] < 0:
        raise Refused("tf_count and retries must not be negative")
    return Reading("rest_slice",
                   created_prefix("slice", str(slice_pk(sample, slice_id))) + digest(body),
                   data, execution_id=_text_of(metadata, "execution_id"), run=run,
                   sender=_text_of(metadata, "created_by"), needs_run=True)


def _slice_update(payload: dict[str, Any], params: dict[str, str], headers: dict[str, str],
                  body: bytes) -> Reading:
    """PATCH /api/tf-slices/{id}/ (fast_processing_agent.py:770-849): a worker's result, as the
    agent copies it. The slice is the one the result itself names (``metadata.result.result``
    is a copy of the slice message): the id the agent patches comes from an ambiguous lookup
    (run and slice_id, which restarts in every sample). Without that copy, the slice the
    server resolved from the id."""
    status = _field(payload, "status", _STR, limit=20)
    metadata = _field(payload, "metadata", _DICT) or {}
    result = metadata.get("result")
    inner = result.get("result") if type(result) is dict else None
    inner = inner if type(inner) is dict else {}
    own = inner.get("tf_filename")
    slice_id = inner.get("slice_id")
    run: Any = inner.get("run_id")
    sample: str | None
    if (type(own) is str and 0 < len(own) <= NAME and "\x00" not in own
            and type(slice_id) is int and -(1 << 31) <= slice_id < 1 << 31):
        sample = sample_of(own)
    else:
        sample, number_text = _header(headers, "tf_filename"), _header(headers, "slice_id")
        if sample is None or number_text is None or not number_text.lstrip("-").isdigit():
            raise Refused(f"id {_short(params['id'])!r} names no registered TF slice")
        slice_id, own, run = int(number_text), None, None
    if not (type(run) is int or (type(run) is str and run.isascii() and run.isdigit())):
        run = None  # then the server's run_id header
    data = {"slice_id": slice_id, "tf_filename": sample, "slice_filename": own,
            "status": status if status in SLICE_STATUSES else None, "reported": status,
            "worker": _text_of(metadata, "worker_hostname"), "error": None,
            "retry": None, "panda_task_id": _text_of(metadata, "panda_task_id"),
            "panda_id": _text_of(metadata, "panda_id")}
    if type(result) is dict and type(result.get("error")) is str:
        data["error"] = result["error"].replace("\x00", "\ufffd")
    return Reading("rest_slice_update",
                   f"{PREFIX}slice_update:{_hash(params['id'])}:{digest(body)}", data,
                   execution_id=_text_of(inner, "execution_id"), run=run,
                   stamp=_field(payload, "processed_at", _STR), needs_run=True)


def _state_event(payload: dict[str, Any], _params: dict[str, str], _headers: dict[str, str],
                 body: bytes) -> Reading:
    """POST /api/system-state-events/ (fast_processing_agent.py:753-768)."""
    run = _run_field(payload, "run_number")
    event_data = _field(payload, "event_data", _DICT, True)
    data = {"event_type": _field(payload, "event_type", _STR, True, limit=50),
            "state": _field(payload, "state", _STR, True, limit=20),
            "substate": _field(payload, "substate", _STR, limit=20), "event_data": event_data}
    return Reading("rest_state_event", f"{PREFIX}state_event:{digest(body)}", data,
                   execution_id=_text_of(event_data, "execution_id"), run=run,
                   stamp=_field(payload, "timestamp", _STR, True), needs_run=True)


ROUTES: tuple[Route, ...] = (
    Route("POST", "state/next-agent-id/", "rest_agent_id", _agent_id, bodyless=True,
          fields={"agent_id": "int"}),
    Route("POST", "state/next-run-number/", "rest_run_number", _run_number, bodyless=True,
          fields={"run_number": "bigint"}),
    Route("POST", "state/next-workflow-execution-id/", "rest_execution_sequence",
          _execution_sequence, bodyless=True, fields={"sequence": "int", "workflow_name": "str"}),
    Route("POST", "namespaces/ensure/", "rest_namespace", _namespace,
          fields={"name": "str", "owner": "str", "description": "str"}),
    Route("POST", "systemagents/heartbeat/", "rest_heartbeat", _heartbeat,
          fields={"agent_type": "str", "status": "str", "operational_state": "str",
                  "pid": "int", "hostname": "str", "description": "str",
                  "mq_connected": "bool", "workflow_enabled": "bool"}),
    Route("POST", "subscribers/", "rest_subscriber", _subscriber,
          fields={"subscriber_name": "str", "description": "str", "is_active": "bool",
                  "fraction": "float"}),
    Route("POST", "logs/", "rest_log", _log,
          fields={"level": "str", "levelno": "int", "message": "str", "module": "str",
                  "funcname": "str", "lineno": "int", "app_name": "str", "process": "int",
                  "thread": "int", "extra_data": "dict"}),
    Route("POST", "workflow-definitions/", "rest_workflow_definition", _definition,
          fields={"definition_id": "bigint", "workflow_name": "str", "version": "str",
                  "workflow_type": "str", "definition": "str", "parameter_values": "dict",
                  "created_by": "str"}),
    Route("POST", "workflow-executions/", "rest_execution", _execution,
          fields={"workflow": "str", "parameters": "dict", "workflow_definition": "int",
                  "status": "str", "executed_by": "str", "start_time": "str",
                  "end_time": "str"}),
    Route("PATCH", "workflow-executions/{id}/", "rest_execution_update", _execution_update,
          fields={"status": "str", "end_time": "str"}),
    Route("POST", "run-states/", "rest_run_state", _run_state, runless=False,
          fields={"phase": "str", "state": "str", "substate": "str",
                  "target_worker_count": "int"}),
    Route("PATCH", "run-states/{id}/", "rest_run_state_update", _run_state_update,
          runless=False, fields={"phase": "str", "state": "str", "substate": "str",
                                 "target_worker_count": "int"}),
    Route("POST", "runs/", "rest_run", _run, runless=False,
          fields={"start_time": "str", "end_time": "str", "run_conditions": "dict"}),
    Route("PATCH", "runs/{id}/", "rest_run_update", _run_update, runless=False,
          fields={"end_time": "str"}),
    Route("POST", "stf-files/", "rest_stf_file", _stf_file, runless=False,
          fields={"filename": "str", "size_bytes": "bigint", "checksum": "str",
                  "sequence": "int", "status": "str", "machine_state": "str"}),
    Route("PATCH", "stf-files/{id}/", "rest_stf_file_update", _stf_file_update,
          runless=False, fields={"filename": "str", "status": "str"}),
    Route("POST", "fastmon-files/", "rest_tf_file", _tf_file, runless=False,
          fields={"tf_filename": "str", "stf_filename": "str", "tf_first": "bigint",
                  "tf_last": "bigint", "tf_count": "int", "file_size_bytes": "bigint",
                  "status": "str"}),
    Route("POST", "tf-slices/", "rest_slice", _slice, runless=False,
          fields={"slice_id": "int", "tf_filename": "str", "slice_filename": "str",
                  "stf_filename": "str", "start": "bigint", "end": "bigint",
                  "tf_count": "int", "retry": "int", "status": "str"}),
    Route("PATCH", "tf-slices/{id}/", "rest_slice_update", _slice_update, runless=False,
          fields={"slice_id": "int", "tf_filename": "str", "slice_filename": "str",
                  "status": "str", "reported": "str", "worker": "str", "error": "str",
                  "retry": "int"}),
    Route("POST", "system-state-events/", "rest_state_event", _state_event, runless=False,
          fields={"event_type": "str", "state": "str", "substate": "str",
                  "event_data": "dict"}),
)
REST_TYPES: frozenset[str] = frozenset(route.msg_type for route in ROUTES)
RUNLESS_TYPES: frozenset[str] = frozenset(route.msg_type for route in ROUTES if route.runless)


def destination(method: str, path: str) -> str:
    """The destination a call is stored under."""
    return f"{PREFIX}{method} {path}"


def match(destination_text: str) -> tuple[Route, dict[str, str]]:
    """The endpoint a destination names, and its path parameters; Refused for none."""
    method, _, path = destination_text[len(PREFIX):].partition(" ")
    for route, pattern in _patterns():
        if route.method == method:
            found = pattern.match(path)
            if found is not None:
                return route, found.groupdict()
    raise Refused(f"no upstream monitor endpoint {_short(method)} {_short(path)}")


@cache
def _patterns() -> tuple[tuple[Route, re.Pattern[str]], ...]:
    """Each route with its path's regular expression, compiled on the first call: every
    process that opens a store imports this module, few of them read REST calls (~1 ms)."""
    return tuple((route, re.compile("/api/" + route.path.replace("{id}", "(?P<id>[^/]+)")
                                    + r"\Z")) for route in ROUTES)


def payload_of(route: Route, body: bytes, loads: Callable[[bytes], Any]) -> dict[str, Any]:
    """The JSON object a call carries ({} for an empty body where the client sends none)."""
    if not body.strip():
        if route.bodyless:
            return {}
        raise Refused("empty body: a JSON object was expected")
    try:
        payload = loads(body)
    except ValueError as problem:
        raise Refused(f"not JSON: {problem}") from None
    if type(payload) is not dict:
        raise Refused(f"a JSON {type(payload).__name__}, not an object")
    return payload


def read(route: Route, params: dict[str, str], payload: dict[str, Any],
         headers: dict[str, str], body: bytes) -> Reading:
    """One call as an event's parts; Refused with the reason when it is malformed."""
    reading = route.read(payload, params, headers, body)
    reading.needs_run = not route.runless
    return reading
