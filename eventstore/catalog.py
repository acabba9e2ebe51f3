"""The message catalog: every msg_type, its fields, validation and normalization.

``examine`` turns a raw message into a ``Verdict``: the indexed envelope columns, and either the
normalized message (``data``) or a precise ``reason`` it was rejected. It never raises on bad
input. Normalization folds the upstream testbed's variants into one shape (DESIGN section 4);
since the store keeps raw bodies and re-examines them on read, a later change of this catalog is
an upcaster here, never a data migration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from .envelope import format_time, parse_time

SCHEMA_VERSION = 1
MAX_BODY_BYTES = 1 << 20  # larger bodies are stored but rejected unread

STR, INT, FLOAT, DICT, LIST, BOOL = "str", "int", "float", "dict", "list", "bool"
_KIND_NAMES = {STR: "a string", INT: "an integer", FLOAT: "a number", DICT: "an object",
               LIST: "an array", BOOL: "a boolean"}


@dataclass(frozen=True, slots=True)
class Field:
    kind: str
    required: bool = False
    nullable: bool = True


def _req(kind: str) -> Field:
    return Field(kind, required=True, nullable=False)


def _opt(kind: str) -> Field:
    return Field(kind)


_RUN_STATE = {"state": _opt(STR), "substate": _opt(STR)}
_DDM = {"scope": _req(STR), "dataset": _req(STR), "outcome": _opt(STR), "error": _opt(STR)}

# msg_type -> payload fields beyond the envelope. Unlisted fields pass through untouched.
CATALOG: dict[str, dict[str, Field]] = {
    "run_imminent": {**_RUN_STATE, "workflow": _opt(STR), "workflow_params": _opt(DICT),
                     "dataset": _opt(STR)},
    "start_run": dict(_RUN_STATE),
    "stf_gen": {**_RUN_STATE, "filename": _req(STR), "sequence": _opt(INT),
                "file_url": _opt(STR)},
    "pause_run": {**_RUN_STATE, "reason": _opt(STR)},
    "resume_run": dict(_RUN_STATE),
    "end_run": {**_RUN_STATE, "total_stf_files": _opt(INT), "reason": _opt(STR)},
    "stf_ready": {"filename": _req(STR), "file_url": _opt(STR), "checksum": _opt(STR),
                  "size_bytes": _opt(INT), "sequence": _opt(INT)},
    "tf_file_registered": {"tf_filename": _req(STR), "stf_filename": _req(STR),
                           "tf_first": _req(INT), "tf_last": _req(INT), "tf_count": _opt(INT)},
    "slice": {"slice_id": _req(INT), "tf_filename": _req(STR), "stf_filename": _opt(STR),
              "start": _req(INT), "end": _req(INT), "tf_count": _opt(INT), "retry": _opt(INT)},
    "slice_result": {"slice_id": _req(INT), "tf_filename": _opt(STR), "status": _req(STR),
                     "worker": _opt(STR), "error": _opt(STR), "retry": _opt(INT)},
    "dataset_opened": dict(_DDM),
    "file_attached": {**_DDM, "name": _req(STR), "size_bytes": _opt(INT),
                      "checksum": _opt(STR)},
    "dataset_closed": {**_DDM, "file_count": _opt(INT), "size_bytes": _opt(INT),
                       "reason": _opt(STR)},
    "panda_task_submitted": {"task_id": _opt(INT), "status": _req(STR),
                             "input_dataset": _opt(STR), "error": _opt(STR),
                             "metadata": _opt(DICT)},
    "panda_task_status": {"task_id": _opt(INT), "status": _req(STR), "error": _opt(STR)},
    # Not in the upstream catalog: explicit completion facts, so an execution's status is derived
    # from the log instead of being repaired by hand when a run goes quiet.
    "sampling_complete": {"stf_count": _req(INT), "sample_count": _req(INT)},
    "run_processed": {"status": _req(STR), "slices_completed": _opt(INT),
                      "slices_failed": _opt(INT), "task_id": _opt(INT), "error": _opt(STR)},
    "agent_heartbeat": {"agent_type": _req(STR), "status": _opt(STR),
                        "operational_state": _opt(STR), "pid": _opt(INT), "hostname": _opt(STR)},
    "agent_log": {"level": _req(STR), "message": _req(STR), "module": _opt(STR)},
    # Upstream's workflow control (/queue/workflow_control); `swf stop` sends it on the topic,
    # naming the execution the DAQ is to end early.
    "stop_workflow": {"source": _opt(STR)},
}

# Messages that belong to no run; every other type needs a run_id.
RUNLESS = frozenset({"agent_heartbeat", "agent_log", "stop_workflow"})
SLICE_STATUSES = frozenset({"processing", "completed", "failed"})
RUN_OUTCOMES = frozenset({"completed", "failed", "terminated"})
ENVELOPE_STRINGS = ("msg_id", "namespace", "execution_id", "sender")
_UPSTREAM_RESULT_STATES = {"done": "completed", "finished": "completed", "completed": "completed",
                           "failed": "failed", "error": "failed", "processing": "processing",
                           "running": "processing", "started": "processing"}


_TYPES = {STR: (str,), INT: (int,), FLOAT: (int, float), DICT: (dict,), LIST: (list,),
          BOOL: (bool,)}  # exact types: bool is not an int here
# Per msg_type, the field checks flattened into tuples: examine() is on every hot path.
_CHECKS = {msg_type: tuple((name, _TYPES[spec.kind], spec.required, spec.kind)
                           for name, spec in fields.items())
           for msg_type, fields in CATALOG.items()}
_ENVELOPE_FIELDS = ("msg_type", "msg_id", "namespace", "execution_id", "run_id", "sender",
                    "timestamp")
_FIELD_NAMES = {msg_type: (*_ENVELOPE_FIELDS, *fields) for msg_type, fields in CATALOG.items()}
_CHECKSUMMED = frozenset({"stf_ready", "file_attached"})
_NON_NEGATIVE = frozenset({"size_bytes", "total_stf_files", "sequence", "tf_count"})
_CANONICAL_CHECKSUM = re.compile(r"[0-9a-f]{8}\Z")
_SHORT_HEX = re.compile(r"[0-9a-fA-F]{1,8}\Z")
_CANONICAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")


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


class Rejected(Exception):
    """Internal: raised with the reason a message is invalid."""


def examine(body: bytes, destination: str = "", expected_namespace: str | None = None
            ) -> Verdict:
    """Validate and normalize one raw message. Never raises."""
    verdict = Verdict()
    try:
        message = _decode(body)
        _read_envelope(message, verdict)
        data = _normalize(message, destination, verdict)
        if expected_namespace is not None and verdict.namespace != expected_namespace:
            raise Rejected(
                f"namespace {verdict.namespace!r} is not this store's {expected_namespace!r}")
        verdict.data = data
    except Rejected as problem:
        verdict.reason = str(problem)
        verdict.data = None
    return verdict


def needs_normalization(message: dict[str, Any], schema_version: int) -> bool:
    """Would ``examine`` change this parsed body beyond filling absent fields with None?

    False for the canonical shape our own senders write. A reader of a body that was valid when
    stored under this schema version can then skip the catalog: ``complete(message)`` gives the
    same ``data`` as ``examine`` at a fraction of the cost. Kept beside the rules it mirrors.
    """
    if (schema_version != SCHEMA_VERSION or "content" in message or "size" in message
            or "total_files" in message or "created_at" in message or "run_number" in message):
        return True
    get = message.get
    if type(get("run_id")) is not int and get("run_id") is not None:
        return True
    stamp = get("timestamp")
    if stamp is not None and (type(stamp) is not str or not _CANONICAL_TIME.match(stamp)):
        return True
    if "" in (get("msg_id"), get("namespace"), get("execution_id"), get("sender")):
        return True
    msg_type = get("msg_type")
    if msg_type in _CHECKSUMMED:
        checksum = get("checksum")
        return checksum is not None and not _CANONICAL_CHECKSUM.match(checksum)
    return msg_type == "slice" and get("retry") is None


def complete(message: dict[str, Any]) -> dict[str, Any]:
    """Fill the absent catalog and envelope fields of a canonical message with None (in place)."""
    for name in _FIELD_NAMES[message["msg_type"]]:
        if name not in message:
            message[name] = None
    return message


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
    return message


def _read_envelope(message: dict[str, Any], verdict: Verdict) -> None:
    """Fill the envelope columns; tolerate what can be tolerated, reject what cannot."""
    get = message.get
    msg_type = get("msg_type")
    content = get("content")
    if type(content) is not dict:
        content = None
    if type(msg_type) is str:
        verdict.msg_type = msg_type
    verdict.msg_id = _envelope_string(message, content, "msg_id")
    verdict.namespace = _envelope_string(message, content, "namespace")
    verdict.execution_id = _envelope_string(message, content, "execution_id")
    verdict.sender = _envelope_string(message, content, "sender")
    run_id = get("run_id")
    if run_id is None:
        run_id = get("run_number")
        if run_id is None and content is not None:
            run_id = content.get("run_id")
    verdict.run_id = run_id if type(run_id) is int else _run_number(run_id)
    stamp = get("timestamp")
    if stamp is None:
        stamp = get("created_at")
    if stamp is not None:
        verdict.sent_at = _canonical_time(stamp)
    if msg_type is None:
        raise Rejected("missing msg_type")
    if type(msg_type) is not str:
        raise Rejected(f"msg_type must be a string, got {_describe(msg_type)}")
    if msg_type not in CATALOG:
        raise Rejected(f"unknown msg_type {msg_type!r}")
    if verdict.run_id is None and msg_type not in RUNLESS:
        raise Rejected(f"{msg_type} needs a run_id")


def _envelope_string(message: dict[str, Any], content: dict[str, Any] | None,
                     name: str) -> str | None:
    value = message.get(name)
    if value is None and content is not None:
        value = content.get(name)
    if value is None or type(value) is str:
        return value or None
    raise Rejected(f"{name} must be a string, got {_describe(value)}")


def _canonical_time(stamp: Any) -> str:
    """Our own senders already write the canonical form: keep it without a parse/format."""
    if type(stamp) is not str:
        raise Rejected(f"timestamp must be an ISO-8601 string, got {_describe(stamp)}")
    if _CANONICAL_TIME.match(stamp):
        return stamp
    try:
        return format_time(parse_time(stamp))
    except ValueError:
        raise Rejected(f"timestamp {stamp!r} is not an ISO-8601 time") from None


def _run_number(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Rejected(f"run_id must be an integer or a string of digits, got {_describe(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise Rejected(f"run_id must be an integer or a string of digits, got {_describe(value)}")


def _normalize(message: dict[str, Any], destination: str, verdict: Verdict) -> dict[str, Any]:
    msg_type = verdict.msg_type
    assert msg_type is not None
    data = dict(message)
    if type(data.get("content")) is dict:
        _unwrap_upstream(data, msg_type)
    if "size" in data or "total_files" in data:
        _apply_aliases(data)
    for name, types, required, kind in _CHECKS[msg_type]:
        value = data.get(name)
        if value is None:
            if required:
                raise Rejected(f"{msg_type} is missing required field {name!r}")
            data[name] = None
        elif type(value) not in types:
            raise Rejected(f"{msg_type}.{name} must be {_KIND_NAMES[kind]}, "
                           f"got {_describe(value)}")
        elif kind is INT and value < 0 and name in _NON_NEGATIVE:
            raise Rejected(f"{name} must not be negative, got {value}")
        elif kind is FLOAT:
            data[name] = float(value)
    finish = _FINISH.get(msg_type)
    if finish is not None:
        finish(data)
    data.update(msg_type=msg_type, msg_id=verdict.msg_id, namespace=verdict.namespace,
                execution_id=verdict.execution_id, run_id=verdict.run_id,
                sender=verdict.sender, timestamp=verdict.sent_at)
    if "created_at" in data:
        del data["created_at"]
    if "run_number" in data:
        del data["run_number"]
    return data


def _finish_checksum(data: dict[str, Any]) -> None:
    data["checksum"] = _normalize_checksum(data["checksum"])


def _finish_slice(data: dict[str, Any]) -> None:
    if data["retry"] is None:
        data["retry"] = 0


def _finish_slice_result(data: dict[str, Any]) -> None:
    if data["status"] not in SLICE_STATUSES:
        raise Rejected(f"slice_result status {data['status']!r} is not one of "
                       f"{', '.join(sorted(SLICE_STATUSES))}")


def _finish_run_processed(data: dict[str, Any]) -> None:
    if data["status"] not in RUN_OUTCOMES:
        raise Rejected(f"run_processed status {data['status']!r} is not completed, failed or "
                       f"terminated")


# Type-specific normalization after the generic field checks.
_FINISH = {"stf_ready": _finish_checksum, "file_attached": _finish_checksum,
           "slice": _finish_slice, "slice_result": _finish_slice_result,
           "run_processed": _finish_run_processed}


def _dict_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _unwrap_upstream(data: dict[str, Any], msg_type: str) -> None:
    """Fold the upstream testbed's ``content``-wrapped slice and slice_result forms."""
    content: dict[str, Any] = data.pop("content")
    if msg_type == "slice":
        for name, value in content.items():
            data.setdefault(name, value)
        if "stf_filename" not in data and "filename" in data:
            data["stf_filename"] = data.pop("filename")
    elif msg_type == "slice_result":
        outer = _dict_or_empty(content.get("result"))
        inner = _dict_or_empty(outer.get("result"))
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
        data.pop("state", None)
    else:
        for name, value in content.items():
            data.setdefault(name, value)


def _apply_aliases(data: dict[str, Any]) -> None:
    if "size_bytes" not in data and "size" in data:
        data["size_bytes"] = data.pop("size")
    if "total_stf_files" not in data and "total_files" in data:
        data["total_stf_files"] = data.pop("total_files")


def _normalize_checksum(value: str | None) -> str | None:
    """``ad:<hex>``, plain hex or empty -> lowercase hex (or None). Malformed text is kept as is:
    judging it is the catalog's (Rucio's) job, and its rejection is a recorded outcome."""
    if value is None or _CANONICAL_CHECKSUM.match(value):
        return value
    text = value.strip()
    if text[:3].lower() == "ad:":
        text = text[3:]
    if not text:
        return None
    if _SHORT_HEX.match(text):
        return text.lower().zfill(8)
    return text


def _describe(value: Any) -> str:
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"
