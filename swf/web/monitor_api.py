"""Upstream's monitor endpoints: what upstream's agents, workflow runner and REST log handler
call on swf-monitor (``notes/upstream-wire-formats.md`` section 4), answered by swf, so they run
unchanged against ``swf serve`` (``SWF_MONITOR_URL`` and ``SWF_MONITOR_HTTP_URL`` pointing here).

Writes: every accepted POST or PATCH is appended to the store as one event (``rest:METHOD PATH``,
the body as received, the receive time and what the server resolved as headers; see
``eventstore.rest``), which the projections fold with the bus messages of the same runs. A
malformed one is stored rejected with the reason and answered 400 with it. A retried POST is
the same event (its id derives from the payload's natural key and the payload), absorbed by the
store and answered as the first time. The ids the clients get back derive from natural keys:
``run_id`` is the run number, ``file_id``/``tf_file_id`` are UUIDs of the file names, a slice's
``id`` is a number of its sample and slice_id.

Reads: answered from the projections (caught up first, so an answer follows the calls before
it), in the shapes of upstream's serializers: the fields the clients read (a run state's
counters, an execution's ``parameter_values``, a definition's ``id``, a slice's ``id``) and the
others as far as the projections know them. Lists are plain JSON arrays (``/api/stf-files/``
pages only with ``?limit=``, as upstream).

Authentication: as upstream's clients send it (``Authorization: Token ...``, security.Guard);
``POST /api/logs/`` needs none from ``[console] log_networks`` (upstream's log handler sends
none). Responses and errors are JSON; the status codes are upstream's (201 created, 200 for
heartbeats of known agents, PATCHes, id allocations and namespaces, 404 for an id that names
nothing).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from eventstore import rest
from eventstore.envelope import Incoming

from . import data as d
from .console import console_of

router = APIRouter(prefix="/api", tags=["upstream monitor"])

RECORDED_HEADERS = ("user-agent", "content-type")  # besides what the server adds
_STF_RUN = re.compile(r"swf\.0*([0-9]{1,18})\.[0-9]+\.stf\Z")  # swf.{run}.{seq}.stf
Handler = Callable[[d.ConsoleData, str, bytes, dict[str, str]], tuple[int, Any]]


def _json(status: int, content: Any) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _problem(status: int, detail: str) -> tuple[int, Any]:
    return status, {"detail": detail}


NOT_FOUND = _problem(404, "Not found.")


# -- OpenAPI --------------------------------------------------------------------------------

# The request bodies as the catalog reads them (eventstore/rest.py): text without NUL, names
# within upstream's lengths, integers within upstream's IntegerField (31 bits) or exact in
# JSON (53); a field that is not required may be null (as absent). Times are text in ISO-8601,
# naive ones in the sender's zone (upstream's convention), checked by the catalog.
_TIME = {"type": "string", "description": "ISO-8601; naive: the sender's local time"}
_OBJECT: dict[str, Any] = {"type": "object"}


def _name(limit: int | None = rest.NAME) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "pattern": "^[^\\x00]*$"}
    if limit is not None:
        schema["maxLength"] = limit
    return schema


_TEXT = _name(None)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _int(bits: int = 53, minimum: int | None = None) -> dict[str, Any]:
    return {"type": "integer", "minimum": -(1 << bits) if minimum is None else minimum,
            "maximum": (1 << bits) - 1}


def _run_number() -> dict[str, Any]:
    return {"anyOf": [_int(31), {"type": "string", "pattern": "^[0-9]{1,9}$"}]}


def _body(properties: dict[str, Any], required: tuple[str, ...] = (), *,
          optional_body: bool = False) -> dict[str, Any]:
    schema = {"type": "object", "required": list(required), "properties": {
        name: value if name in required else _nullable(value)
        for name, value in properties.items()}}
    return {"requestBody": {"required": not optional_body,
                            "content": {"application/json": {"schema": schema}}}}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    texts = {200: "Done (the object as it is now).", 201: "Created (or a retry of it).",
             400: "Malformed: stored rejected; detail says why.",
             401: "The console has a token and the request did not carry it.",
             403: "A write while the console has no token configured.",
             404: "The id names nothing.", 413: "The request body is too large.",
             422: "A query parameter of the wrong type."}
    return {code: {"description": texts[code]} for code in (*codes, 401, 403, 413, 422)}


WRITE = _responses(200, 201, 400, 404)
READ = _responses(200, 400, 404)  # 400: a repeated parameter or a NUL (security.Guard)


# -- writes ---------------------------------------------------------------------------------


async def _write(request: Request, handler: Handler) -> Response:
    """Read the body, note the receive time (the broker's ``timestamp`` of a REST call) and the
    headers that matter (never credentials), and run the handler off the event loop."""
    body = await request.body()
    headers = {"timestamp": str(time.time_ns() // 1_000_000)}
    for name in RECORDED_HEADERS:
        value = request.headers.get(name)
        if value is not None:
            headers[name] = value
    if request.client is not None:
        headers["remote-addr"] = str(request.client.host)
    data = console_of(request).data
    path = request.url.path
    status, content = await anyio.to_thread.run_sync(handler, data, path, body, headers)
    return _json(status, content)


def _payload(body: bytes) -> dict[str, Any]:
    """The payload as far as it is an object (what resolving needs; the catalog judges it)."""
    try:
        payload = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        return {}
    return payload if type(payload) is dict else {}


def _digits(value: Any) -> int | None:
    if type(value) is int and 0 <= value < 1 << 63:
        return value
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


def _text(value: Any) -> str | None:
    return value if type(value) is str and value and len(value) <= rest.NAME else None


def _nested(payload: dict[str, Any], *path: str) -> Any:
    value: Any = payload
    for key in path:
        if type(value) is not dict:
            return None
        value = value.get(key)
    return value


def _resolve(data: d.ConsoleData, headers: dict[str, str], *, execution_id: Any = None,
             run: Any = None) -> None:
    """Name the namespace (and run) a call concerns in its headers, when the payload does not:
    the execution's, else the run's."""
    number = _digits(run)
    found = data.namespace_of(execution_id=_text(execution_id), run=number)
    if found is not None:
        headers["namespace"] = found


def _record(data: d.ConsoleData, method: str, path: str, body: bytes, headers: dict[str, str],
            answer: Callable[[dict[str, Any], bool], tuple[int, Any]]) -> tuple[int, Any]:
    """Append the call; answer 400 with the reason when it is malformed, else ``answer(the
    normalized call, whether it was new)``."""
    verdict, new = data.record_call(Incoming(rest.destination(method, path), body, headers))
    if verdict.data is None:
        return _problem(400, verdict.reason or "malformed")
    return answer(verdict.data, new)


def _echo(payload: dict[str, Any], **ids: Any) -> dict[str, Any]:
    return {**ids, **payload}


# --- ids -------------------------------------------------------------------------------------

def _allocate(kind: str, field: str) -> Handler:
    def handler(data: d.ConsoleData, path: str, body: bytes, headers: dict[str, str]
                ) -> tuple[int, Any]:
        payload = _payload(body)
        call = Incoming(rest.destination("POST", path), body, headers)
        try:
            value = data.reserve(kind, call, workflow_name=_text(payload.get("workflow_name")))
        except d.Refused as problem:
            return _problem(400, str(problem))
        return 200, {field: value, "status": "success"}
    return handler


@router.post("/state/next-agent-id/", responses=_responses(200, 400),
             openapi_extra=_body({}, optional_body=True))
async def next_agent_id(request: Request) -> Response:
    """The next agent id (every BaseAgent at start-up; swf-common-lib api_utils.py:78-118)."""
    return await _write(request, _allocate("agent_id", "agent_id"))


@router.post("/state/next-run-number/", responses=_responses(200, 400),
             openapi_extra=_body({}, optional_body=True))
async def next_run_number(request: Request) -> Response:
    """The next run number (the workflow runner; api_utils.py:121-154)."""
    return await _write(request, _allocate("run_number", "run_number"))


@router.post("/state/next-workflow-execution-id/", responses=_responses(200, 400),
             openapi_extra=_body({"workflow_name": _name(200)}, optional_body=True))
async def next_workflow_execution_id(request: Request) -> Response:
    """The next execution sequence number (workflow_runner.py:369-401)."""
    return await _write(request, _allocate("execution_sequence", "sequence"))


def _namespace(data: d.ConsoleData, path: str, body: bytes, headers: dict[str, str]
               ) -> tuple[int, Any]:
    def answer(call: dict[str, Any], new: bool) -> tuple[int, Any]:
        return 200, {"name": call["name"], "owner": call["owner"],
                     "description": call.get("description") or "", "created": new,
                     "status": "success"}
    return _record(data, "POST", path, body, headers, answer)


@router.post("/namespaces/ensure/", responses=_responses(200, 400),
             openapi_extra=_body({"name": _name(rest.ID), "owner": _name(rest.ID),
                                  "description": _TEXT}, ("name", "owner")))
async def ensure_namespace(request: Request) -> Response:
    """Get or create a namespace (api_utils.py:155-192): ``created`` is true the first time."""
    return await _write(request, _namespace)


# --- agents, subscribers, logs -------------------------------------------------------------

def _heartbeat(data: d.ConsoleData, path: str, body: bytes, headers: dict[str, str]
               ) -> tuple[int, Any]:
    def answer(call: dict[str, Any], _new: bool) -> tuple[int, Any]:
        first = data.first_heartbeat(call["sender"], call["msg_id"])
        return (201 if first else 200), _agent({
            "namespace": call["namespace"], "name": call["sender"],
            "agent_type": call["agent_type"], "status": call["status"],
            "operational_state": call["operational_state"], "pid": call["pid"],
            "hostname": call["hostname"], "first_seen": None,
            "last_heartbeat": call["timestamp"], "description": call["description"],
            "workflow_enabled": call["workflow_enabled"]})
    return _record(data, "POST", path, body, headers, answer)


@router.post("/systemagents/heartbeat/", responses=_responses(200, 201, 400),
             openapi_extra=_body({
                 "instance_name": _name(rest.ID), "agent_type": _name(rest.ID),
                 "status": _name(40), "description": _TEXT, "mq_connected": {"type": "boolean"},
                 "pid": _int(31), "hostname": _name(rest.ID), "operational_state": _name(40),
                 "namespace": _name(rest.ID), "workflow_enabled": {"type": "boolean"}},
                 ("instance_name",)))
async def heartbeat(request: Request) -> Response:
    """An agent registers and beats (base_agent.py:719-832): 201 for its first heartbeat."""
    return await _write(request, _heartbeat)


def _subscriber(data: d.ConsoleData, path: str, body: bytes, headers: dict[str, str]
                ) -> tuple[int, Any]:
    payload = _payload(body)

    def answer(call: dict[str, Any], _new: bool) -> tuple[int, Any]:
        return 201, _echo(payload, subscriber_id=rest.number("subscriber",
                                                             call["subscriber_name"]))
    return _record(data, "POST", path, body, headers, answer)


@router.post("/subscribers/", responses=_responses(201, 400),
             openapi_extra=_body({"subscriber_name": _name(), "description": _TEXT,
                                  "is_active": {"type": "boolean"},
                                  "fraction": {"type": "number"}},
                                 ("subscriber_name",)))
async def subscriber(request: Request) -> Response:
    """An agent's subscription (base_agent.py:851-877)."""
    return await _write(request, _subscriber)


def _log(data: d.ConsoleData, path: str, body: bytes, headers: dict[str, str]
         ) -> tuple[int, Any]:
    payload = _payload(body)
    extra = payload.get("extra_data")
    if type(extra) is dict:
        _resolve(data, headers, execution_id=extra.get("execution_id"), run=extra.get("run_id"))

    def answer(call: dict[str, Any], _new: bool) -> tuple[int, Any]:
        return 201, _echo(payload, id=rest.number("log", call["msg_id"]))
    return _record(data, "POST", path, body, headers, answer)


@router.post("/logs/", responses=_responses(201, 400),
             openapi_extra=_body({
                 "app_name": _name(rest.ID), "instance_name": _name(rest.ID),
                 "timestamp": _TIME, "level": _int(31), "levelname": _name(20),
                 "message": _TEXT, "module": _name(), "funcname": _name(), "lineno": _int(31),
                 "process": _int(31), "thread": _int(), "extra_data": _OBJECT},
                 ("instance_name", "timestamp", "message", "levelname")))
async def log_record(request: Request) -> Response:
    """One log record (swf-common-lib rest_logging.py:56-80); no token needed from
    ``[console] log_networks``."""
    return await _write(request, _log)


# --- workflow definitions and executions -----------------------------------------------------

def _definition_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["definition_id"], "workflow_name": row["workflow_name"],
            "version": row["version"], "workflow_type": row["workflow_type"],
            "definition": row["definition"],
            "parameter_values": orjson.loads(row["parameter_values"] or "{}"),
            "created_by": row["created_by"], "created_at": row["created_at"],
            "updated_at": row["created_at"]}


def _definition(data: d.ConsoleData, path: str, body: bytes, headers: dict[str, str]
                ) -> tuple[int, Any]:
    payload = _payload(body)

    def answer(call: dict[str, Any], _new: bool) -> tuple[int, Any]:
        return 201, _echo(payload, id=call["definition_id"])
    return _record(data, "POST", path, body, headers, answer)


@router.post("/workflow-definitions/", responses=_responses(201, 400),
             openapi_extra=_body({
                 "workflow_name": _name(200), "version": _name(50), "workflow_type": _name(rest.ID),
                 "definition": _TEXT, "parameter_values": _OBJECT,
                 "created_by": _name(rest.ID), "created_at": _TEXT},
                 ("workflow_name", "version", "workflow_type", "definition", "created_by")))
async def create_definition(request: Request) -> Response:
    """Register a workflow definition (workflow_runner.py:403-479): the first of a name and
    version is kept, as upstream's unique pair and immutable definitions make it."""
    return await _write(request, _definition)


@router.get("/workflow-definitions/", responses=READ)
def list_definitions(request: Request,
                     workflow_name: str | None = Query(None, max_length=200),
                     version: str | None = Query(None, max_length=50)) -> Response:
    where = {name: value for name, value in (("workflow_name", workflow_name),
                                             ("version", version)) if value}
    rows = console_of(request).data.monitor_rows("workflow_definitions", where=where,
                                                 order=("workflow_name", "version"))
    return _json(200, [_definition_row(row) for row in rows])


def _execution_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"execution_id": row["execution_id"], "workflow_definition": row["definition_id"],
            "namespace": row["namespace"],
            "parameter_values": orjson.loads(row["parameters"] or "{}"),
            "performance_metrics": None, "status": row["status"],
            "start_time": row["start_time"], "end_time": row["end_time"],
            "executed_by": row["executed_by"]}


def _execution(data: d.ConsoleData, path: str, body: bytes, headers: dict[str, str]
               ) -> tuple[int, Any]:
    payload = _payload(body)

    def answer(_call: dict[str, Any], _new: bool) -> tuple[int, Any]:
        return 201, payload
    return _record(data, "POST", path, body, headers, answer)


@router.post("/workflow-executions/", responses=_responses(201, 400),
             openapi_extra=_body({
                 "execution_id": _name(rest.ID), "workflow_definition": _int(),
                 "namespace": _name(rest.ID), "status": _name(50),
                 "executed_by": _name(rest.ID), "start_time": _TIME, "end_time": _TIME,
                 "parameter_values": _OBJECT},
                 ("execution_id", "executed_by", "start_time", "parameter_values")))
async def create_execution(request: Request) -> Response:
    """The runner's execution record (workflow_runner.py:481-548)."""
    return await _write(request, _execution)


def _execution_update(data: d.ConsoleData, path: str, body: bytes, headers: dict[str, str]
                      ) -> tuple[int, Any]:
    execution_id = path.rstrip("/").rsplit("/", 1)[-1]
    namespace = data.namespace_of(execution_id=execution_id)
    if namespace is None and not data.created("execution", rest.execution_key(execution_id)):
        return NOT_FOUND
    if namespace is not None:
        headers["namespace"] = namespace

    def answer(call: dict[str, Any], _new: bool) -> tuple[int, Any]:
        return 200, _echo(_payload(body), execution_id=execution_id)
    return _record(data, "PATCH", path, body, headers, answer)


@router.patch("/workflow-executions/{execution_id}/", responses=WRITE,
              openapi_extra=_body({"status": _name(50), "end_time": _TIME}))
async def update_execution(request: Request, execution_id: str) -> Response:
    """How the runner's execution ended (workflow_runner.py:648-661)."""
    return await _write(request, _execution_update)


@router.get("/workflow-executions/", responses=READ)
def list_executions(request: Request, status: str | None = Query(None, max_length=50),
                    namespace: str | None = Query(None, max_length=rest.ID),
                    executed_by: str | None = Query(None, max_length=rest.ID)) -> Response:
    where = {name: value for name, value in (("status", status), ("namespace", namespace),
                                             ("executed_by", executed_by)) if value}
    rows = console_of(request).data.monitor_rows("executions", where=where,
                                                 order=("start_time", "execution_id"))
    return _json(200, [_execution_row(row) for row in reversed(rows)])


@router.get("/workflow-executions/{execution_id}/", responses=READ)
def get_execution(request: Request, execution_id: str) -> Response:
    """An execution, with the ``parameter_values`` the fast processing agent reads
    (fast_processing_agent.py:583-596)."""
    rows = console_of(request).data.monitor_rows(
        "executions", where={"execution_id": execution_id}, order=("updated_at",))
    return _json(200, _execution_row(rows[-1])) if rows else _json(*NOT_FOUND)


# --- runs and run states ---------------------------------------------------------------------

def _run_state_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"run_number": row["run_number"], "phase": row["phase"], "state": row["state"],
            "substate": row["substate"], "target_worker_count": None, "active_worker_count": 0,
            "stf_samples_received": row["stf_samples_received"],
            "slices_created": row["slices_created"], "slices_queued": row["slices_queued"],
            "slices_processing": row["slices_processing"],
            "slices_completed": row["slices_completed"], "slices_failed": row["slices_failed"],
            "state_changed_at": row["state_changed_at"], "updated_at": row["updated_at"],
            "metadata": {"execution_id": row["execution_id"], "namespace": row["namespace"]}}


def _run_row(row: dict[str, Any]) -> dict[str, Any]:
    ended = row["state_changed_at"] if row["phase"] == "completed" else None
    return {"run_id": row["run_number"], "run_number": row["run_number"],
            "start_time": row["created_at"], "end_time": ended, "run_conditions": None}


def _latest(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One row of several namespaces' (a run number reused): the latest updated."""
    return max(rows, key=lambda row: row.get("updated_at") or "") if rows else None


def _run_call(method: str, field: str | None, run_of: Callable[[dict[str, Any], str], Any],
              answer: Callable[[dict[str, Any], str], tuple[int, Any]]) -> Handler:
    """A call about one run: resolve its namespace (its execution's, else the run's)."""
    def handler(data: d.ConsoleData, path: str, body: bytes, headers: dict[str, str]
                ) -> tuple[int, Any]:
        payload = _payload(body)
        execution_id = _nested(payload, "metadata", "execution_id") if field else None
        _resolve(data, headers, execution_id=execution_id, run=run_of(payload, path))
        return _record(data, method, path, body, headers,
                       lambda call, _new: answer({**payload, **call}, path))
    return handler


def _path_id(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


_RUN_STATE_BODY = {"run_number": _run_number(), "phase": _name(20), "state": _name(20),
                   "substate": _name(20), "target_worker_count": _int(31),
                   "active_worker_count": _int(31), "stf_samples_received": _int(31),
                   "slices_created": _int(31), "slices_queued": _int(31),
                   "slices_processing": _int(31), "slices_completed": _int(31),
                   "slices_failed": _int(31), "state_changed_at": _TIME, "metadata": _OBJECT}


@router.post("/run-states/", responses=_responses(201, 400),
             openapi_extra=_body(_RUN_STATE_BODY, ("run_number", "phase", "state",
                                                   "target_worker_count", "state_changed_at")))
async def create_run_state(request: Request) -> Response:
    """The runner creates the run's state before announcing it (workflow_runner.py:663-711)."""
    return await _write(request, _run_call(
        "POST", "metadata", lambda payload, _path: payload.get("run_number"),
        lambda merged, _path: (201, {**{key: merged.get(key) for key in _RUN_STATE_BODY},
                                     "run_number": merged["run_id"]})))


@router.patch("/run-states/{run_number}/", responses=WRITE,
              openapi_extra=_body({key: value for key, value in _RUN_STATE_BODY.items()
                                   if key != "run_number"}))
async def update_run_state(request: Request, run_number: str) -> Response:
    """The fast processing agent's run state updates (fast_processing_agent.py:598-641)."""
    return await _write(request, _run_call(
        "PATCH", None, lambda _payload, path: _path_id(path),
        lambda merged, path: (200, {**{key: merged.get(key) for key in _RUN_STATE_BODY
                                       if key in merged}, "run_number": int(_path_id(path))})))


@router.get("/run-states/", responses=READ)
def list_run_states(request: Request) -> Response:
    rows = console_of(request).data.monitor_rows("run_state", order=("run_number", "namespace"))
    return _json(200, [_run_state_row(row) for row in rows])


@router.get("/run-states/{run_number}/", responses=READ)
def get_run_state(request: Request, run_number: int) -> Response:
    """A run's state with its counters, derived from the run's facts (whichever channel
    brought them): what the fast processing agent increments from."""
    found = _latest(console_of(request).data.monitor_rows("run_state",
                                                          where={"run_number": run_number}))
    return _json(200, _run_state_row(found)) if found else _json(*NOT_FOUND)


_RUN_BODY = {"run_number": _run_number(), "start_time": _TIME, "end_time": _TIME,
             "run_conditions": _OBJECT}


@router.post("/runs/", responses=_responses(201, 400),
             openapi_extra=_body(_RUN_BODY, ("run_number", "start_time")))
async def create_run(request: Request) -> Response:
    """The data agent's run record (example_data_agent.py:56-89): ``run_id`` is the run
    number."""
    return await _write(request, _run_call(
        "POST", None, lambda payload, _path: payload.get("run_number"),
        lambda merged, _path: (201, {"run_id": merged["run_id"],
                                     "run_number": merged["run_id"],
                                     "start_time": merged.get("start_time"),
                                     "end_time": merged.get("end_time"),
                                     "run_conditions": merged.get("run_conditions")})))


@router.patch("/runs/{run_id}/", responses=WRITE,
              openapi_extra=_body({key: value for key, value in _RUN_BODY.items()
                                   if key != "run_number"}))
async def update_run(request: Request, run_id: str) -> Response:
    """The run's end (example_data_agent.py:91-110)."""
    return await _write(request, _run_call(
        "PATCH", None, lambda _payload, path: _path_id(path),
        lambda merged, _path: (200, {"run_id": merged["run_id"], "run_number": merged["run_id"],
                                     "end_time": merged.get("end_time")})))


@router.get("/runs/", responses=READ)
def list_runs(request: Request) -> Response:
    rows = console_of(request).data.monitor_rows("run_state", order=("run_number", "namespace"))
    return _json(200, [_run_row(row) for row in rows])


@router.get("/runs/{run_id}/", responses=READ)
def get_run(request: Request, run_id: int) -> Response:
    found = _latest(console_of(request).data.monitor_rows("run_state",
                                                          where={"run_number": run_id}))
    return _json(200, _run_row(found)) if found else _json(*NOT_FOUND)


# --- STF files, TF samples (fastmon files), slices ----------------------------------------------

def _stf_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"file_id": rest.file_id(row["filename"]), "run": row["run_number"],
            "machine_state": None, "stf_filename": row["filename"],
            "file_size_bytes": row["size_bytes"], "checksum": row["checksum"],
            "created_at": row["created_at"], "status": row["status"],
            "metadata": {"sequence": row["sequence"], "file_url": row["file_url"]},
            "workflow_id": None, "daq_state": None, "daq_substate": None,
            "workflow_status": None, "tf_count": None}


@router.post("/stf-files/", responses=_responses(201, 400),
             openapi_extra=_body({
                 "run": _run_number(), "stf_filename": _name(),
                 "file_size_bytes": _int(minimum=0), "checksum": _name(64),
                 "machine_state": _name(64), "status": _name(20), "metadata": _OBJECT},
                 ("run", "stf_filename")))
async def create_stf_file(request: Request) -> Response:
    """The data agent registers an STF file (example_data_agent.py:112-165); ``file_id``
    derives from its name."""
    return await _write(request, _run_call(
        "POST", None, lambda payload, _path: payload.get("run"),
        lambda merged, _path: (201, {**{key: merged.get(key) for key in (
            "run", "stf_filename", "file_size_bytes", "machine_state", "status", "metadata",
            "checksum")}, "file_id": rest.file_id(merged["filename"])})))


def _stf_update(data: d.ConsoleData, path: str, body: bytes, headers: dict[str, str]
                ) -> tuple[int, Any]:
    file_id = _path_id(path)
    created = data.created("stf_file", file_id) if len(file_id) <= 64 else []
    if not created:
        return NOT_FOUND
    first = created[-1]
    headers.update(stf_filename=first.data["filename"] if first.data else "",
                   run_id=str(first.run_id))
    if first.namespace is not None:
        headers["namespace"] = first.namespace

    def answer(call: dict[str, Any], _new: bool) -> tuple[int, Any]:
        return 200, _echo(_payload(body), file_id=file_id, stf_filename=call["filename"],
                          run=call["run_id"])
    return _record(data, "PATCH", path, body, headers, answer)


@router.patch("/stf-files/{file_id}/", responses=WRITE,
              openapi_extra=_body({"status": _name(20), "metadata": _OBJECT}))
async def update_stf_file(request: Request, file_id: str) -> Response:
    """The data agent's status word on its file (example_data_agent.py:167-189)."""
    return await _write(request, _stf_update)


@router.get("/stf-files/", responses=READ)
def list_stf_files(request: Request, stf_filename: str | None = Query(None, max_length=255),
                   run_number: int | None = Query(None, ge=0, le=(1 << 63) - 1),
                   status: str | None = Query(None, max_length=20),
                   limit: int | None = Query(None, ge=1, le=10_000),
                   offset: int = Query(0, ge=0, le=1_000_000)) -> Response:
    """STF files (a plain list; paged only with ``?limit=``, as upstream's views.py:357-407)."""
    where = {name: value for name, value in (("filename", stf_filename),
                                             ("run_number", run_number),
                                             ("status", status)) if value is not None}
    data = console_of(request).data
    if limit is None:
        rows = data.monitor_rows("stf_files", where=where, order=("run_number", "filename"))
        return _json(200, [_stf_row(row) for row in rows])
    rows = data.monitor_rows("stf_files", where=where, order=("run_number", "filename"),
                             limit=limit, offset=offset)
    total = data.monitor_count("stf_files", where=where)
    here = str(request.url.remove_query_params(["limit", "offset"]))
    link = "&" if "?" in here else "?"
    return _json(200, {
        "count": total,
        "next": f"{here}{link}limit={limit}&offset={offset + limit}"
        if offset + limit < total else None,
        "previous": f"{here}{link}limit={limit}&offset={max(0, offset - limit)}"
        if offset > 0 else None,
        "results": [_stf_row(row) for row in rows]})


@router.get("/stf-files/{file_id}/", responses=READ)
def get_stf_file(request: Request, file_id: str) -> Response:
    data = console_of(request).data
    created = data.created("stf_file", file_id) if len(file_id) <= 64 else []
    if not created or created[-1].data is None:
        return _json(*NOT_FOUND)
    rows = data.monitor_rows("stf_files", where={"run_number": created[-1].run_id,
                                                 "filename": created[-1].data["filename"]})
    return _json(200, _stf_row(rows[0])) if rows else _json(*NOT_FOUND)


def _tf_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"tf_file_id": rest.tf_file_id(row["tf_filename"]), "stf_file": row["stf_filename"],
            "tf_filename": row["tf_filename"], "file_size_bytes": row["tf_count"],
            "checksum": None, "status": row["status"], "metadata": None,
            "created_at": row["created_at"], "updated_at": row["updated_at"],
            "tf_count": row["tf_count"], "tf_first": row["tf_first"], "tf_last": row["tf_last"]}


def _tf_file(data: d.ConsoleData, path: str, body: bytes, headers: dict[str, str]
             ) -> tuple[int, Any]:
    """The TF sample's run is its STF file's: registered by REST (its create names the run),
    else known from the bus (the run in its name, looked up in the projection)."""
    payload = _payload(body)
    stf = _text(payload.get("stf_file"))
    if stf is not None:
        created = data.created("stf_file", rest.file_id(stf))
        if created:
            headers["run_id"] = str(created[-1].run_id)
            if created[-1].namespace is not None:
                headers["namespace"] = created[-1].namespace
        else:
            named = _STF_RUN.match(stf)
            rows = data.monitor_rows("stf_files", where={"run_number": int(named.group(1)),
                                                         "filename": stf}) if named else []
            if rows:
                headers["run_id"] = str(rows[0]["run_number"])
                if rows[0]["namespace"] is not None:
                    headers["namespace"] = rows[0]["namespace"]

    def answer(call: dict[str, Any], _new: bool) -> tuple[int, Any]:
        return 201, {"tf_file_id": rest.tf_file_id(call["tf_filename"]),
                     "stf_file": call["stf_filename"], "tf_filename": call["tf_filename"],
                     "tf_first": call["tf_first"], "tf_last": call["tf_last"],
                     "tf_count": call["tf_count"], "file_size_bytes": call["file_size_bytes"],
                     "checksum": payload.get("checksum"), "status": call["status"],
                     "metadata": payload.get("metadata")}
    return _record(data, "POST", path, body, headers, answer)


@router.post("/fastmon-files/", responses=_responses(201, 400),
             openapi_extra=_body({
                 "stf_file": _name(), "tf_filename": _name(), "tf_first": _int(31),
                 "tf_last": _int(31), "tf_count": _int(31, 0), "file_size_bytes": _int(),
                 "status": _name(20), "metadata": _OBJECT}, ("stf_file", "tf_filename")))
async def create_tf_file(request: Request) -> Response:
    """FastMon registers a TF sample (example_fastmon_utils.py:139-172); the answer is what
    it copies into its tf_file_registered message."""
    return await _write(request, _tf_file)


@router.get("/fastmon-files/", responses=READ)
def list_tf_files(request: Request, tf_filename: str | None = Query(None, max_length=255),
                  stf_filename: str | None = Query(None, max_length=255),
                  status: str | None = Query(None, max_length=20)) -> Response:
    where = {name: value for name, value in (("tf_filename", tf_filename),
                                             ("stf_filename", stf_filename),
                                             ("status", status)) if value is not None}
    rows = console_of(request).data.monitor_rows("tf_samples", where=where,
                                                 order=("run_number", "tf_filename"))
    return _json(200, [_tf_row(row) for row in rows])


def _slice_row(row: dict[str, Any]) -> dict[str, Any]:
    terminal = row["status"] in ("completed", "failed")
    return {"id": rest.slice_pk(row["tf_filename"], row["slice_id"]),
            "fastmon_file": row["tf_filename"], "slice_id": row["slice_id"],
            "tf_first": row["start"], "tf_last": row["end"], "tf_count": row["tf_count"],
            "run_number": row["run_number"], "status": row["status"],
            "retries": row["retries"], "metadata": None, "created_at": row["created_at"],
            "updated_at": row["updated_at"], "assigned_worker": row["worker"],
            "assigned_at": None, "completed_at": row["updated_at"] if terminal else None}


_SLICE_BODY = {"slice_id": _int(31), "tf_first": _int(31), "tf_last": _int(31),
               "tf_count": _int(31, 0), "tf_filename": _name(), "stf_filename": _name(),
               "run_number": _run_number(), "status": _name(20), "retries": _int(31, 0),
               "metadata": _OBJECT, "fastmon_file": _name()}


@router.post("/tf-slices/", responses=_responses(201, 400),
             openapi_extra=_body(_SLICE_BODY, ("slice_id", "tf_first", "tf_last", "tf_count",
                                               "tf_filename", "run_number")))
async def create_slice(request: Request) -> Response:
    """The fast processing agent's slice (fast_processing_agent.py:643-704); its ``id``
    derives from its sample and slice_id."""
    return await _write(request, _run_call(
        "POST", "metadata", lambda payload, _path: payload.get("run_number"),
        lambda merged, _path: (201, {**{key: merged.get(key) for key in _SLICE_BODY},
                                     "tf_filename": merged.get("slice_filename"),
                                     "fastmon_file": merged["tf_filename"],
                                     "id": rest.slice_pk(merged["tf_filename"],
                                                         merged["slice_id"])})))


def _slice_update(data: d.ConsoleData, path: str, body: bytes, headers: dict[str, str]
                  ) -> tuple[int, Any]:
    """The result names its slice (its copy of the slice message); else the id does."""
    payload = _payload(body)
    inner = _nested(payload, "metadata", "result", "result")
    if type(inner) is dict and type(inner.get("slice_id")) is int and _text(
            inner.get("tf_filename")):
        _resolve(data, headers, execution_id=inner.get("execution_id"),
                 run=inner.get("run_id"))
        if _digits(inner.get("run_id")) is None:
            return _problem(400, "metadata.result.result.run_id: a run number is required")
    else:
        pk = _path_id(path)
        created = data.created("slice", pk) if pk.isascii() and pk.isdigit() else []
        if not created or created[-1].data is None:
            return NOT_FOUND
        known = created[-1]
        headers.update(tf_filename=known.data["tf_filename"],  # type: ignore[index]
                       slice_id=str(known.data["slice_id"]),  # type: ignore[index]
                       run_id=str(known.run_id))
        if known.namespace is not None:
            headers["namespace"] = known.namespace

    def answer(call: dict[str, Any], _new: bool) -> tuple[int, Any]:
        return 200, {**payload, "id": rest.slice_pk(call["tf_filename"], call["slice_id"]),
                     "slice_id": call["slice_id"], "fastmon_file": call["tf_filename"],
                     "run_number": call["run_id"]}
    return _record(data, "PATCH", path, body, headers, answer)


@router.patch("/tf-slices/{slice_pk}/", responses=WRITE,
              openapi_extra=_body({"status": _name(20), "processed_at": _TIME,
                                   "metadata": _OBJECT}))
async def update_slice(request: Request, slice_pk: str) -> Response:
    """A worker's result, as the fast processing agent copies it (fast_processing_agent.py:
    770-849)."""
    return await _write(request, _slice_update)


@router.get("/tf-slices/", responses=READ)
def list_slices(request: Request, run_number: int | None = Query(None, ge=0,
                                                                le=(1 << 63) - 1),
                slice_id: int | None = Query(None, ge=-(1 << 31), le=(1 << 31) - 1),
                status: str | None = Query(None, max_length=20),
                fastmon_file: str | None = Query(None, max_length=255)) -> Response:
    """Slices, filtered as the fast processing agent asks (``?run_number=&slice_id=``)."""
    where = {name: value for name, value in (("run_number", run_number),
                                             ("slice_id", slice_id), ("status", status),
                                             ("tf_filename", fastmon_file))
             if value is not None}
    rows = console_of(request).data.monitor_rows("tf_slices", where=where,
                                                 order=("run_number", "tf_filename",
                                                        "slice_id"))
    return _json(200, [_slice_row(row) for row in rows])


# --- system state events, agents ------------------------------------------------------------

@router.post("/system-state-events/", responses=_responses(201, 400),
             openapi_extra=_body({
                 "timestamp": _TIME, "run_number": _run_number(), "event_type": _name(50),
                 "state": _name(20), "substate": _name(20), "event_data": _OBJECT},
                 ("timestamp", "run_number", "event_type", "state", "event_data")))
async def create_state_event(request: Request) -> Response:
    """The fast processing agent's event log (fast_processing_agent.py:753-768)."""
    return await _write(request, _state_event)


def _state_event(data: d.ConsoleData, path: str, body: bytes, headers: dict[str, str]
                 ) -> tuple[int, Any]:
    payload = _payload(body)
    _resolve(data, headers, execution_id=_nested(payload, "event_data", "execution_id"),
             run=payload.get("run_number"))

    def answer(call: dict[str, Any], _new: bool) -> tuple[int, Any]:
        return 201, _echo(payload, event_id=rest.number("state_event", call["msg_id"]))
    return _record(data, "POST", path, body, headers, answer)


def _agent(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": rest.number("agent", row["namespace"] or "", row["name"]),
            "instance_name": row["name"], "agent_type": row["agent_type"],
            "description": row.get("description") or "", "status": row["status"],
            "last_heartbeat": row["last_heartbeat"], "agent_url": None,
            "workflow_enabled": row.get("workflow_enabled"), "pid": row["pid"],
            "hostname": row["hostname"], "operational_state": row["operational_state"],
            "namespace": row["namespace"] or None, "metadata": None,
            "created_at": row["first_seen"], "updated_at": row["last_heartbeat"]}


@router.get("/systemagents/", responses=READ)
def list_agents(request: Request) -> Response:
    """The agents (base_agent.py:833-845 asks for them as a health check)."""
    rows = console_of(request).data.monitor_rows("agents", order=("namespace", "name"))
    return _json(200, [_agent(row) for row in rows])
