"""A small local PanDA server that speaks the PanDA API v1 wire protocol, for tests and development.

The real ``panda-server`` needs PostgreSQL with an unpublished schema and the JEDI daemons, so
swf tests the PanDA adapter with the unmodified ``pandaclient`` against this stand-in instead. It
mirrors what panda-server 1.0.4 does for the calls the pipeline makes (URL layout, request
decoding, reply envelope, error codes and messages) and keeps everything in memory:

============================  =====  =========================================================
path (under ``/api/v1``)      HTTP   reply ``data``
============================  =====  =========================================================
``/system/is_alive``          GET    null (message "")
``/task/submit``              POST   new jediTaskID; message ``succeeded. new jediTaskID=N``;
                                     on failure ``success`` false and the JEDI code in ``data``
                                     (2: an active task has this name, 4: server error), or
                                     code 3 (success) when the name belongs to a finished task
``/task/get_status``          GET    the task status string ("Task not found" is a failure)
``/task/get_job_ids``         GET    list of PandaIDs (empty before jobs exist)
``/task/kill``                POST   return code (0 registered, 2 not found, 4 wrong state)
``/job/submit``               POST   ``[[PandaID, jobDefinitionID, {...}], ...]``
``/job/get_description``      POST   job dicts (with ``Files``), null for unknown ids
``/job/kill``                 POST   list of booleans
============================  =====  =========================================================

Every reply is ``{"success": bool, "message": str, "data": ...}`` as JSON; datetimes are sent as
``{"__datetime__": iso}``. Unknown methods get ``403`` with a ``text/plain`` body, a body that is
not JSON ``500``, as on the real server.

Task progress is driven by polls, deterministically: a task is created in the first state of
``steps``; each ``get_status`` returns the current state and then moves the task one step on,
until the last. Tasks whose ``taskName`` contains a ``fail_tasks_matching`` substring end in
``failed`` instead of the last step. Jobs (``jobs_per_task`` per task) appear once the task
leaves the states before brokerage; their status follows the task's. A killed task goes
``aborting`` then ``aborted``. Standalone jobs from ``/job/submit`` advance one step of
``job_steps`` per ``get_description``.

Authentication: with ``require_token`` set, a request without ``Authorization: Bearer <token>``
(or with another token) gets ``403`` and ``ERROR : Token authentication failed. ...``, like a
request with a rejected token on the real server. (The real server answers a request with no
credentials at all with ``success: false`` and "SSL secure connection is required"; this
server stays on plain http, so it does not check for SSL.)

Run it with ``python -m panda_api_server --port 8080``, or in-process::

    with PandaApiServer(PandaServerConfig(port=0)) as server:
        server.base_url  # http://127.0.0.1:PORT/server/panda, for PANDA_URL and PANDA_URL_SSL
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import itertools
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger("swf.panda_api_server")

API_PREFIX = "/api/v1/"
DEFAULT_STEPS = ("registered", "defined", "ready", "running", "done")
DEFAULT_JOB_STEPS = ("defined", "activated", "running", "finished")

# panda-server's messages (pandaserver/api/v1/common.py, task_event_module.py)
MESSAGE_TASK_ID = "jediTaskID must be an integer"
MESSAGE_TASK_NOT_FOUND = "Task not found"
MESSAGE_SUBMIT_FAILED = "failed to register task"

# states after which a task takes no kill/finish command (sendCommandTaskPanda)
KILL_REJECTED_STATES = frozenset(
    {"finished", "done", "prepared", "broken", "aborted", "toabort", "aborting", "failed"}
)
# states in which a task of the same name may be resubmitted (insertTaskParamsPanda)
RESUBMITTABLE_STATES = frozenset({"finished", "failed", "aborted", "done", "exhausted"})
# task states before JEDI has generated jobs
PRE_JOB_STATES = frozenset(
    {"registered", "defined", "assigning", "ready", "pending", "topreprocess", "preprocessing"}
)
# task states in which no jobs are generated (jobs made earlier are kept)
NO_NEW_JOB_STATES = PRE_JOB_STATES | {
    "toabort",
    "aborting",
    "aborted",
    "broken",
    "toincexec",
    "rerefine",
}
# job status shown for a task state (jobs of a task in any other state are running)
JOB_STATUS_FOR_TASK = {
    "done": "finished",
    "finished": "finished",
    "failed": "failed",
    "broken": "failed",
    "exhausted": "failed",
    "aborting": "cancelled",
    "aborted": "cancelled",
    "toabort": "cancelled",
}
JOB_FINAL_STATES = frozenset({"finished", "failed", "cancelled", "closed"})


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _encode_special(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return {"__datetime__": obj.isoformat()}
    raise TypeError(f"Type not serializable for {obj!r} ({type(obj)})")


def response(success: bool, message: str = "", data: Any = None) -> dict[str, Any]:
    return {"success": success, "message": message, "data": data}


@dataclass(frozen=True)
class PandaServerConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    steps: tuple[str, ...] = DEFAULT_STEPS
    job_steps: tuple[str, ...] = DEFAULT_JOB_STEPS
    fail_tasks_matching: tuple[str, ...] = ()
    require_token: str | None = field(default=None, repr=False)
    jobs_per_task: int = 1
    user_name: str = "localuser"  # the compact DN the real server takes from the credentials
    first_task_id: int = 1
    first_panda_id: int = 1_000_001

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("steps must not be empty")
        if not self.job_steps:
            raise ValueError("job_steps must not be empty")
        if self.jobs_per_task < 0:
            raise ValueError("jobs_per_task must be >= 0")


@dataclass
class Job:
    panda_id: int
    job_definition_id: int
    job_name: str
    task_id: int | None
    prod_source_label: str
    computing_site: str | None
    created: datetime
    steps: list[str] = field(default_factory=list)  # standalone jobs only
    position: int = 0
    status_override: str | None = None  # set when the job itself was killed
    modified: datetime | None = None


@dataclass
class Task:
    task_id: int
    name: str
    user_name: str
    vo: str
    prod_source_label: str
    params: dict[str, Any]
    parent_tid: int | None
    steps: list[str]
    position: int = 0
    job_ids: list[int] = field(default_factory=list)
    created: datetime = field(default_factory=_now)
    modified: datetime = field(default_factory=_now)

    @property
    def status(self) -> str:
        return self.steps[self.position]


class PandaState:
    """All tasks and jobs, behind one lock."""

    def __init__(self, config: PandaServerConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.tasks: dict[int, Task] = {}
        self.jobs: dict[int, Job] = {}
        self._task_ids = itertools.count(config.first_task_id)
        self._panda_ids = itertools.count(config.first_panda_id)
        self._job_definition_ids = itertools.count(1)

    # -- helpers ---------------------------------------------------------------------------

    def _fails(self, name: str) -> bool:
        return any(s and s in name for s in self.config.fail_tasks_matching)

    def _path(self, name: str, steps: Sequence[str]) -> list[str]:
        path = list(steps)
        if self._fails(name):
            path[-1] = "failed"
        return path

    def _enter_state(self, task: Task) -> None:
        task.modified = _now()
        if task.status not in NO_NEW_JOB_STATES and not task.job_ids:
            definition_id = next(self._job_definition_ids)
            for i in range(self.config.jobs_per_task):
                panda_id = next(self._panda_ids)
                self.jobs[panda_id] = Job(
                    panda_id=panda_id,
                    job_definition_id=definition_id,
                    job_name=f"{task.name.rstrip('/')}.{task.task_id}.{i + 1}",
                    task_id=task.task_id,
                    prod_source_label=task.prod_source_label,
                    computing_site=task.params.get("site"),
                    created=_now(),
                )
                task.job_ids.append(panda_id)

    def _job_status(self, job: Job) -> str:
        if job.status_override:
            return job.status_override
        if job.task_id is None:
            return job.steps[job.position]
        task = self.tasks[job.task_id]
        return JOB_STATUS_FOR_TASK.get(task.status, "running")

    def _job_dict(self, job: Job) -> dict[str, Any]:
        status = self._job_status(job)
        return {
            "PandaID": job.panda_id,
            "jobDefinitionID": job.job_definition_id,
            "jobName": job.job_name,
            "jobStatus": status,
            "prodSourceLabel": job.prod_source_label,
            "computingSite": job.computing_site,
            "jediTaskID": job.task_id,
            "taskID": job.task_id,
            "creationTime": job.created,
            "modificationTime": job.modified or job.created,
            "transExitCode": 1 if status == "failed" else (0 if status == "finished" else None),
            "Files": [],
        }

    # -- task API --------------------------------------------------------------------------

    def submit_task(self, params: dict[str, Any], parent_tid: int | None) -> tuple[int, str]:
        """insertTaskParamsPanda(properErrorCode=True): (code, message)."""
        with self.lock:
            try:
                params = dict(params)
                params["userName"] = self.config.user_name
                params.setdefault("taskType", "anal")
                name = params["taskName"]
                vo = params["vo"]
                label = params["prodSourceLabel"]
            except (KeyError, TypeError) as exc:
                log.warning("task submission rejected: missing %s", exc)
                return 4, MESSAGE_SUBMIT_FAILED
            if params.get("uniqueTaskName") is True:
                same = [
                    t
                    for t in self.tasks.values()
                    if (t.vo, t.prod_source_label, t.user_name, t.name)
                    == (vo, label, self.config.user_name, name)
                ]
                if same:
                    old = max(same, key=lambda t: t.task_id)
                    if old.status not in RESUBMITTABLE_STATES:
                        return 2, (
                            f"jediTaskID={old.task_id} is in the {old.status} state for "
                            f"outDS={name}. You can re-submit the task with new parameters for "
                            "the same or another input once it goes into finished/failed/done. "
                            "Or you can retry the task once it goes into running/finished/"
                            "failed/done. Note that retry != resubmission according to "
                            "https://twiki.cern.ch/twiki/bin/view/PanDA/PandaJEDI"
                            "#Task_retry_and_resubmission "
                        )
                    previous = old.status
                    old.steps = ["toincexec", "rerefine", *self._path(name, self.config.steps)[1:]]
                    old.position = 0
                    self._enter_state(old)
                    return 3, (
                        f"reactivation accepted. jediTaskID={old.task_id} (currently in "
                        f"{previous} state) will be re-executed with old and/or new input"
                    )
            task = Task(
                task_id=next(self._task_ids),
                name=name,
                user_name=self.config.user_name,
                vo=vo,
                prod_source_label=label,
                params=params,
                parent_tid=parent_tid,
                steps=self._path(name, self.config.steps),
            )
            self.tasks[task.task_id] = task
            self._enter_state(task)
            log.info("task %d registered: %s", task.task_id, name)
            return 0, f"succeeded. new jediTaskID={task.task_id}"

    def poll_task_status(self, task_id: int) -> str | None:
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                return None
            status = task.status
            if task.position < len(task.steps) - 1:
                task.position += 1
                self._enter_state(task)
            return status

    def task_job_ids(self, task_id: int) -> list[int]:
        with self.lock:
            task = self.tasks.get(task_id)
            return list(task.job_ids) if task else []

    def kill_task(self, task_id: int) -> tuple[int, str]:
        """sendCommandTaskPanda(..., 'kill', properErrorCode=True): (code, message)."""
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                return 2, f"jediTaskID={task_id} not found"
            if task.status in KILL_REJECTED_STATES:
                return 4, (
                    "Command rejected: the kill command is not accepted if the task is in "
                    f"{task.status} status "
                )
            task.steps = [*task.steps[: task.position], "aborting", "aborted"]
            self._enter_state(task)
            return 0, (
                f"command=kill is registered for task ID {task_id}. "
                "will be executed in a few minutes"
            )

    # -- job API ---------------------------------------------------------------------------

    def submit_jobs(self, job_states: list[Any]) -> list[list[Any]]:
        """Standalone jobs from JobSpec states (positional arrays, files last)."""
        out: list[list[Any]] = []
        with self.lock:
            definition_id = next(self._job_definition_ids)
            for state in job_states:
                if not isinstance(state, list) or len(state) < 48:
                    raise ValueError("a job must be a JobSpec state array")
                name = state[19] if isinstance(state[19], str) else f"job.{definition_id}"
                label = state[12] if isinstance(state[12], str) else "user"
                steps = list(self.config.job_steps)
                if self._fails(name):
                    steps[-1] = "failed"
                panda_id = next(self._panda_ids)
                job_definition_id = state[1] if isinstance(state[1], int) else definition_id
                self.jobs[panda_id] = Job(
                    panda_id=panda_id,
                    job_definition_id=job_definition_id,
                    job_name=name,
                    task_id=None,
                    prod_source_label=label,
                    computing_site=state[47] if isinstance(state[47], str) else None,
                    created=_now(),
                    steps=steps,
                )
                out.append([panda_id, job_definition_id, {"jobsetID": None}])
        return out

    def describe_jobs(self, job_ids: list[Any]) -> list[dict[str, Any] | None]:
        with self.lock:
            result: list[dict[str, Any] | None] = []
            for job_id in job_ids:
                job = self.jobs.get(job_id) if isinstance(job_id, int) else None
                if job is None:
                    result.append(None)
                    continue
                result.append(self._job_dict(job))
                standalone = job.task_id is None and job.status_override is None
                if standalone and job.position < len(job.steps) - 1:
                    job.position += 1
                    job.modified = _now()
            return result

    def kill_jobs(self, job_ids: list[Any]) -> list[bool]:
        with self.lock:
            result = []
            for job_id in job_ids:
                job = self.jobs.get(job_id) if isinstance(job_id, int) else None
                if job is None or self._job_status(job) in JOB_FINAL_STATES:
                    result.append(False)
                    continue
                job.status_override = "cancelled"
                job.modified = _now()
                result.append(True)
            return result


# -- endpoints ----------------------------------------------------------------------------------


class _ApiError(Exception):
    """A failed request that still gets a 200 and a ``success: false`` envelope."""


def _as_int(name: str, value: Any, method: str) -> int:
    """Request validation of an ``int`` parameter, as panda-server's request_validation does."""
    if method == "GET":
        try:
            return int(float(value))
        except (TypeError, ValueError):
            raise _ApiError(
                f"Type error: '{name}' with value '{value}' could not be casted to type int "
                f"from {type(value).__name__}."
            ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _ApiError(f"Type error: '{name}' must be of type int, got {type(value).__name__}.")
    return value


def _as_int_list(name: str, value: Any, method: str) -> list[int]:
    if method == "GET":
        values = value if isinstance(value, list) else [value]
        return [_as_int(name, v, method) for v in values]
    if not isinstance(value, list):
        raise _ApiError(f"Type error: '{name}' must be of type list, got {type(value).__name__}.")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _ApiError(f"Type error: All elements in '{name}' must be int.")
    return value


def _bind(params: dict[str, Any], required: Sequence[str], optional: Sequence[str] = ()) -> None:
    allowed = set(required) | set(optional)
    for key in params:
        if key not in allowed:
            raise _ApiError(f"Argument error: got an unexpected keyword argument '{key}'")
    for key in required:
        if key not in params:
            raise _ApiError(f"Argument error: missing a required argument: '{key}'")


Handler = Callable[[PandaState, dict[str, Any], str], dict[str, Any]]


def _is_alive(state: PandaState, params: dict[str, Any], method: str) -> dict[str, Any]:
    _bind(params, ())
    return response(True)


def _task_submit(state: PandaState, params: dict[str, Any], method: str) -> dict[str, Any]:
    _bind(params, ("task_parameters",), ("parent_tid",))
    task_parameters = params["task_parameters"]
    if not isinstance(task_parameters, dict):
        raise _ApiError(
            "Type error: 'task_parameters' must be of type dict, got "
            f"{type(task_parameters).__name__}."
        )
    parent_tid = params.get("parent_tid")
    if parent_tid is not None:
        parent_tid = _as_int("parent_tid", parent_tid, method)
    code, message = state.submit_task(task_parameters, parent_tid)
    if code not in (0, 3):
        return response(False, message=message, data=code)
    match = re.search(r"jediTaskID=(\d+)", message)
    return response(True, message=message, data=int(match.group(1)) if match else None)


def _task_id(params: dict[str, Any]) -> int:
    try:
        return int(params["task_id"])
    except (TypeError, ValueError):
        raise _ApiError(MESSAGE_TASK_ID) from None


def _task_get_status(state: PandaState, params: dict[str, Any], method: str) -> dict[str, Any]:
    _bind(params, ("task_id",))
    status = state.poll_task_status(_task_id(params))
    if status is None:
        return response(False, message=MESSAGE_TASK_NOT_FOUND)
    return response(True, data=status)


def _task_get_job_ids(state: PandaState, params: dict[str, Any], method: str) -> dict[str, Any]:
    _bind(params, ("task_id",))
    task_id = _as_int("task_id", params["task_id"], method)
    return response(True, data=state.task_job_ids(task_id))


def _task_kill(state: PandaState, params: dict[str, Any], method: str) -> dict[str, Any]:
    _bind(params, ("task_id",), ("broadcast",))
    task_id = _as_int("task_id", params["task_id"], method)
    code, message = state.kill_task(task_id)
    return response(code == 0, message=message, data=code)


def _job_submit(state: PandaState, params: dict[str, Any], method: str) -> dict[str, Any]:
    _bind(params, ("jobs",))
    jobs = params["jobs"]
    if not isinstance(jobs, str):
        raise _ApiError(f"Type error: 'jobs' must be of type str, got {type(jobs).__name__}.")
    try:
        states = json.loads(jobs)
        if not isinstance(states, list):
            raise ValueError("not a list of jobs")
        if not states:
            return response(False, message="No jobs were submitted")
        return response(True, data=state.submit_jobs(states))
    except ValueError as exc:
        return response(False, message=f"Failed to deserialize jobs: {exc}")


def _job_get_description(state: PandaState, params: dict[str, Any], method: str) -> dict[str, Any]:
    _bind(params, ("job_ids",), ("timeout",))
    job_ids = _as_int_list("job_ids", params["job_ids"], method)
    return response(True, data=state.describe_jobs(job_ids))


def _job_kill(state: PandaState, params: dict[str, Any], method: str) -> dict[str, Any]:
    _bind(params, ("job_ids",), ("code", "use_email_as_id", "kill_options"))
    job_ids = _as_int_list("job_ids", params["job_ids"], method)
    return response(True, data=state.kill_jobs(job_ids))


# (module, method) -> (HTTP method required or None, handler)
ENDPOINTS: dict[tuple[str, str], tuple[str | None, Handler]] = {
    ("system", "is_alive"): ("GET", _is_alive),
    ("task", "submit"): ("POST", _task_submit),
    ("task", "get_status"): ("GET", _task_get_status),
    ("task", "get_job_ids"): ("GET", _task_get_job_ids),
    ("task", "kill"): ("POST", _task_kill),
    ("job", "submit"): ("POST", _job_submit),
    ("job", "get_description"): (None, _job_get_description),
    ("job", "kill"): ("POST", _job_kill),
}


class _RequestHandler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"
    server_version = "swf-panda-api/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain")

    def _send_json(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, default=_encode_special).encode()
        self._send(200, body, "application/json")

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def _authenticated(self) -> str | None:
        """None if the request may proceed, else why not."""
        token = self.server.config.require_token
        if token is None:
            return None
        header = self.headers.get("Authorization")
        if not header:
            return "no bearer token in the Authorization header"
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
            return "invalid token"
        return None

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        status_logged = 200
        try:
            if not split.path.startswith(API_PREFIX):
                status_logged = 404
                self._send_text(404, "not found")
                return
            fields = split.path[len(API_PREFIX) :].split("/")
            key = (fields[0], fields[1]) if len(fields) == 2 else ("", split.path)
            endpoint = ENDPOINTS.get(key)
            if endpoint is None:
                status_logged = 403
                self._send_text(403, f"ERROR : method {key[1]} is forbidden")
                return
            reason = self._authenticated()
            if reason is not None:
                status_logged = 403
                self._send_text(403, f"ERROR : Token authentication failed. {reason}")
                return
            required_method, handler = endpoint
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if self.command == "POST" and content_type == "application/json":
                try:
                    params = json.loads(body or b"{}")
                except ValueError as exc:
                    status_logged = 500
                    self._send_text(500, f"ERROR : received invalid JSON : {exc}")
                    return
                if not isinstance(params, dict):
                    params = {}
            else:
                source = split.query if self.command == "GET" else body.decode("utf-8", "replace")
                grouped: dict[str, list[str]] = {}
                for k, v in parse_qsl(source, keep_blank_values=True):
                    grouped.setdefault(k, []).append(v)
                params = {k: v[0] if len(v) == 1 else v for k, v in grouped.items()}
            if required_method and required_method != self.command:
                reply = response(
                    False, message=f"expecting {required_method}, received {self.command}"
                )
            else:
                try:
                    reply = handler(self.server.state, params, self.command)
                except _ApiError as exc:
                    reply = response(False, message=str(exc))
            self._send_json(reply)
        except Exception as exc:  # a bug here must not kill the server thread
            log.exception("request %s %s failed", self.command, self.path)
            status_logged = 500
            with contextlib.suppress(OSError):
                self._send_text(500, str(exc))
        finally:
            log.info("%s %s -> %d", self.command, split.path, status_logged)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, config: PandaServerConfig, state: PandaState) -> None:
        self.config = config
        self.state = state
        super().__init__((config.host, config.port), _RequestHandler)


class PandaApiServer:
    """The server in a background thread: ``start()``/``stop()`` or a ``with`` block."""

    def __init__(self, config: PandaServerConfig | None = None) -> None:
        self.config = config or PandaServerConfig()
        self.state = PandaState(self.config)
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What PANDA_URL / PANDA_URL_SSL are set to; the client derives ``/api/v1`` from it."""
        return f"{self.root_url}/server/panda"

    @property
    def api_url(self) -> str:
        return f"{self.root_url}/api/v1"

    def start(self) -> PandaApiServer:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._httpd = _HttpServer(self.config, self.state)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"panda-api-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("PanDA API server listening on %s", self.api_url)
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=10)
        self._httpd = self._thread = None
        log.info("PanDA API server stopped")

    def __enter__(self) -> PandaApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _steps(text: str) -> tuple[str, ...]:
    steps = tuple(s.strip() for s in text.split(",") if s.strip())
    if not steps:
        raise argparse.ArgumentTypeError("at least one state is needed")
    return steps


def parse_args(argv: Sequence[str] | None = None) -> PandaServerConfig:
    p = argparse.ArgumentParser(
        prog="python -m panda_api_server",
        description="Local PanDA API v1 server (in-memory) for swf tests and development.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed at start)")
    p.add_argument(
        "--steps",
        type=_steps,
        default=DEFAULT_STEPS,
        help="task states, one per get_status poll (default %(default)s)",
    )
    p.add_argument("--job-steps", type=_steps, default=DEFAULT_JOB_STEPS)
    p.add_argument(
        "--fail-tasks-matching",
        action="append",
        default=[],
        metavar="SUBSTRING",
        help="tasks (and standalone jobs) whose name contains it end in failed; repeatable",
    )
    p.add_argument(
        "--require-token",
        metavar="TOKEN",
        help="answer 403 to requests without 'Authorization: Bearer TOKEN'",
    )
    p.add_argument("--jobs-per-task", type=int, default=1)
    p.add_argument("--user-name", default="localuser")
    p.add_argument("--first-task-id", type=int, default=1)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return PandaServerConfig(
        host=args.host,
        port=args.port,
        steps=args.steps,
        job_steps=args.job_steps,
        fail_tasks_matching=tuple(args.fail_tasks_matching),
        require_token=args.require_token,
        jobs_per_task=args.jobs_per_task,
        user_name=args.user_name,
        first_task_id=args.first_task_id,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    server = PandaApiServer(config)
    server.start()
    stopped = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        stopped.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # the line tests and scripts wait for (with --port 0 it is the only way to learn the port)
    print(f"PANDA_URL={server.base_url}", flush=True)
    try:
        stopped.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
