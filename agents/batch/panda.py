"""PanDA as the ``batch`` adapter: one prun-style task per run through the real ``pandaclient``.

``submit_task`` turns the processing agent's parameters into prun's task parameters with
``pandaclient.PrunScript.main(True, args, dry_mode=True)`` (what ``prun`` itself would send),
runs the payload with the run metadata in ``SWF_*`` environment variables (as the local executor
does) and registers it with ``Client.insertTaskParams(params, properErrorCode=True)``; the
``jediTaskID`` comes from the server's message. ``status`` is ``Client.getTaskStatus``. The reply
templates are completed with the same fields as ``LocalExecutor``'s (``task_id``, ``status``,
``error``), so a submission is ``submitted`` and the task's states come from the polls.

``pandaclient`` is awkward to embed, and each quirk is handled here, never by a dead agent:
- ``import pandaclient.Client`` resolves the cache server by DNS unless
  ``PANDA_BEHIND_REAL_LB`` is set (it is set before the lazy import) and reads the server URLs
  once, at import; the adapter points the module at its own URL before every call, under one
  process-wide lock (prun also rewrites ``sys.argv`` and ``RUCIO_ACCOUNT``: both restored);
- every failure reaches us as ``(255, None)``: ``hello()`` then tells an unreachable server from
  a refused token (``authentication failed: ...``) from a live server that refused the call;
- a failed OIDC login ends in ``sys.exit(255)``: the ``SystemExit`` becomes ``authentication
  failed: ...``;
- its messages go to stdout (``No valid grid proxy certificate found``, which would corrupt
  ``swf run --json``): stdout is captured during calls and its logger is forwarded at DEBUG.

Server: ``[batch] panda_url`` of the workflow, else the deployment's (``PandaSettings``, built by
the application shell from its ``[panda]`` settings or ``PANDA_URL_SSL``/``PANDA_URL``; see
swf/settings.py). Authentication is pandaclient's own: it reads ``PANDA_AUTH``,
``PANDA_AUTH_VO``, ``PANDA_AUTH_ID_TOKEN``, ``OIDC_AUTH_*``, ``PANDA_CONFIG_ROOT`` or an X.509 proxy
from the environment itself. Tokens never appear in replies or logs. Failed submissions are
retried with bounded exponential backoff (``agents.retry``), never after an auth refusal.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import orjson

from agents.base import Adapter, Command
from agents.batch import FAILED, SUBMITTED, UNKNOWN
from agents.retry import RetryPolicy, Transient, retry_call

log = logging.getLogger(__name__)
_CLIENT_LOG = logging.getLogger("swf.panda.client")

OUTPUT_FILE = "myout.txt"
BUILTIN_EXEC = f'echo "$SWF_METADATA" > {OUTPUT_FILE}'  # the placeholder payload, as locally
_TASK_ID = re.compile(r"jediTaskID=(\d+)")
_AUTH_HINT = re.compile(r"(?i)auth|token|forbidden|denied|credential|certificate|\b40[13]\b")
_BEARER = re.compile(r"(?i)\bbearer\s+(?!token\b)[\w.~+/=-]{8,}")
_TOKEN_VARIABLES = ("PANDA_AUTH_ID_TOKEN", "OIDC_AUTH_ID_TOKEN")
_PRUN_ENV = ("RUCIO_ACCOUNT", "RUCIO_APPID")  # prun overwrites them in os.environ
_LOCK = threading.RLock()  # pandaclient's server URLs (and prun's argv) are process-global


@dataclass(frozen=True)
class PandaSettings:
    url: str | None = None  # PANDA_URL_SSL: where pandaclient sends its API calls
    plain_url: str | None = None  # PANDA_URL
    attempts: int = 3  # tries per submission (not after an auth refusal)
    retry_delay: float = 1.0  # first backoff; doubles per retry
    max_delay: float = 8.0

    def __repr__(self) -> str:
        """The dataclass's repr without a password in a server URL."""
        url, plain = (_public_url(value) if value else value for value in (self.url,
                                                                           self.plain_url))
        return (f"PandaSettings(url={url!r}, plain_url={plain!r}, attempts={self.attempts!r}, "
                f"retry_delay={self.retry_delay!r}, max_delay={self.max_delay!r})")

    def for_workflow(self, section: Mapping[str, Any] | None) -> PandaSettings:
        """These settings under a workflow's ``[batch]`` section: ``panda_url`` (both URLs) and
        the retry options ``attempts``, ``retry_delay``, ``max_delay``."""
        section = section or {}
        values: dict[str, Any] = {}
        explicit = str(section.get("panda_url") or "").strip()
        if explicit:
            values.update(url=explicit, plain_url=explicit)
        for key, kind in (("attempts", int), ("retry_delay", float), ("max_delay", float)):
            value = section.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                values[key] = kind(value)
            elif value not in (None, ""):
                log.warning("batch.%s = %r is not usable; ignored", key, value)
        return replace(self, **values)

    @property
    def where(self) -> str:
        return _public_url(self.url) if self.url else "(pandaclient's default server)"


class PandaBatch(Adapter):
    """Adapter ``batch`` backed by a PanDA server: actions submit_task and status."""

    def __init__(self, settings: PandaSettings, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._sleep = sleep

    def execute(self, command: Command) -> dict[str, Any]:
        reply = dict(command.reply)
        submit = command.action == "submit_task"
        capture = _Capture()
        try:
            if submit:
                reply.update(self._submit(command.params, capture))
            elif command.action == "status":
                reply.update(self._status(command.params, capture))
            else:
                reply.update(status=UNKNOWN, error=f"unknown batch action {command.action!r}")
        except SystemExit as exc:  # pandaclient's way of reporting a failed (OIDC) login
            reply.update(status=FAILED if submit else UNKNOWN,
                         error=f"authentication failed: pandaclient exited with status "
                               f"{exc.code} talking to {self.settings.where}"
                               f"{capture.reason()}")
        except _Unavailable as exc:
            reply.update(status=FAILED if submit else UNKNOWN,
                         error=f"configuration error: {exc}")
        except Exception as exc:  # noqa: BLE001 - never let the outside world kill the agent
            log.exception("pandaclient failed on %s", command.action)
            reply.update(status=FAILED if submit else UNKNOWN,
                         error=f"pandaclient error: {type(exc).__name__}: {_scrub(str(exc))}")
        if reply.get("error"):
            log.warning("batch %s failed: %s", command.action, reply["error"])
        return reply

    # --- actions ---------------------------------------------------------------------------

    def _submit(self, params: Mapping[str, Any], capture: _Capture) -> dict[str, Any]:
        with _session(self.settings, capture) as (client, prun):
            try:
                task = _task_parameters(prun, params)
            except (SystemExit, ValueError) as exc:
                code = f" (prun stopped with status {exc.code})" \
                    if isinstance(exc, SystemExit) else ""
                return {"task_id": None, "status": FAILED,
                        "error": f"invalid task parameters{code}: {_first(exc)}"
                                 f"{capture.reason()}"}
            policy = RetryPolicy(attempts=max(1, self.settings.attempts),
                                 initial=self.settings.retry_delay,
                                 maximum=self.settings.max_delay)
            tries = 0

            def attempt() -> dict[str, Any]:
                nonlocal tries
                tries += 1
                status, output = client.insertTaskParams(task, properErrorCode=True)
                if status == 0 and isinstance(output, tuple | list) and len(output) == 2:
                    return self._registered(task["taskName"], output, retried=tries > 1)
                kind, text = _diagnose(client, "insertTaskParams", status, output,
                                       self.settings.where)
                if kind == "auth":  # never retried: the same credentials would fail again
                    return {"task_id": None, "status": FAILED, "error": text}
                raise Transient(text)  # an answer lost on the way is adopted by the retry

            def again(number: int, delay: float, problem: BaseException) -> None:
                log.warning("batch submit_task: %s; retrying in %.2f s (attempt %d of %d)",
                            problem, delay, number, policy.attempts)

            try:
                return retry_call(attempt, policy, sleep=self._sleep, before_retry=again)
            except Transient as problem:
                return {"task_id": None, "status": FAILED, "error": str(problem)}

    def _registered(self, name: str, output: Any, *, retried: bool) -> dict[str, Any]:
        code, message = output
        message = str(message)
        found = _TASK_ID.search(message)
        if code in (0, 3) and found:
            task_id = int(found.group(1))
            if message.startswith("reactivation"):  # a finished task of this name: re-executed
                log.warning("task %s: %s", name, message)
            log.info("task %d (%s) submitted to %s", task_id, name, self.settings.where)
            return {"task_id": task_id, "status": SUBMITTED, "error": None}
        if code in (1, 2) and found and retried:
            # An earlier try reached the server although its answer was lost: our own task.
            log.warning("task %s: registered by an earlier attempt: %s", name, message)
            return {"task_id": int(found.group(1)), "status": SUBMITTED, "error": None}
        return {"task_id": None, "status": FAILED,
                "error": f"PanDA refused the task (code {code}): {message}"}

    def _status(self, params: Mapping[str, Any], capture: _Capture) -> dict[str, Any]:
        task_id = params.get("task_id")
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            return {"status": UNKNOWN, "error": f"task_id must be an integer, got {task_id!r}"}
        with _session(self.settings, capture) as (client, _):
            status, value = client.getTaskStatus(task_id)
            if status == 0 and isinstance(value, str) and value:
                return {"task_id": task_id, "status": value, "error": None}
            kind, text = _diagnose(client, f"getTaskStatus({task_id})", status, value,
                                   self.settings.where)
            if kind == "alive":
                text = f"task {task_id} unknown to the PanDA server {self.settings.where}: " \
                       f"getTaskStatus answered ({status}, {value!r})"
            return {"task_id": task_id, "status": UNKNOWN, "error": text}


# --- pandaclient, embedded ---------------------------------------------------------------------


@dataclass
class _Capture:
    """What pandaclient printed or logged during one command (its only error channel)."""

    stdout: io.StringIO = field(default_factory=io.StringIO)
    records: list[str] = field(default_factory=list)

    def reason(self) -> str:
        lines = [line.strip() for line in (*self.records, *self.stdout.getvalue().splitlines())
                 if line.strip() and line.strip() != "NoneType: None"]
        return f": {_scrub(lines[-1])[:300]}" if lines else ""


class _Forward(logging.Handler):
    """pandaclient's own logger (it prints to stdout): into ours at DEBUG, and the capture."""

    capture: _Capture | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = _scrub(record.getMessage())
        if self.capture is not None and record.levelno >= logging.WARNING:
            self.capture.records.append(text)
        _CLIENT_LOG.debug("%s: %s", record.levelname, text)


_FORWARD = _Forward()


@contextlib.contextmanager
def _session(settings: PandaSettings, capture: _Capture) -> Iterator[tuple[Any, Any]]:
    """``(pandaclient.Client, pandaclient.PrunScript)`` pointed at our server, output captured."""
    with _LOCK, contextlib.redirect_stdout(capture.stdout):
        _FORWARD.capture = capture
        try:
            client, prun = _load()
            _point(client, settings)
            yield client, prun
        finally:
            _FORWARD.capture = None
            printed = _scrub(capture.stdout.getvalue()).strip()
            if printed:
                _CLIENT_LOG.debug("pandaclient printed: %s", printed)


def _load() -> tuple[Any, Any]:
    # Without it the import resolves PANDACACHE_URL by DNS and fails on a machine without network
    # (it also stops pandaclient replacing our host name by a resolved one on every call).
    os.environ.setdefault("PANDA_BEHIND_REAL_LB", "1")
    panda_log = logging.getLogger("panda-client")
    if _FORWARD not in panda_log.handlers:
        # Ours alone (pandaclient adds a stdout handler only to a logger without any).
        panda_log.handlers = [_FORWARD]
        panda_log.propagate = False
        panda_log.setLevel(logging.DEBUG)
    try:
        from pandaclient import Client, PrunScript
    except ImportError as exc:
        raise _Unavailable(f"pandaclient is not installed ({exc}); pip install 'swf[panda]'") \
            from None
    except OSError as exc:  # e.g. socket.gaierror from its import-time DNS look-up
        raise _Unavailable(f"pandaclient could not be imported: {type(exc).__name__}: {exc}") \
            from None
    return Client, PrunScript


class _Unavailable(Exception):
    """pandaclient cannot be loaded: a configuration problem, reported as such."""


def _point(client: Any, settings: PandaSettings) -> None:
    for url, base, path in ((settings.url, "baseURLSSL", "server_base_path_ssl"),
                            (settings.plain_url, "baseURL", "server_base_path")):
        if url:
            parts = urlsplit(url)
            setattr(client, base, url)
            setattr(client, path, f"{parts.scheme}://{parts.netloc}/api/v1")


def _diagnose(client: Any, call: str, status: Any, output: Any, where: str) -> tuple[str, str]:
    """Why a call failed: ``alive`` (the server answered is_alive), ``auth`` or ``unreachable``,
    with a one-line text for the reply."""
    answer = f"{call} answered ({status}, {_scrub(repr(output))[:200]})"
    alive, message = client.hello()
    message = _scrub(str(message or "")).replace("Communication issue: ", "")[:300]
    if alive == 0:
        return "alive", f"refused (HTTP error): PanDA server {where}: {answer}"
    if _AUTH_HINT.search(message):
        return "auth", f"authentication failed: PanDA server {where} refused the request: " \
                       f"{message}"
    return "unreachable", (f"unreachable: PanDA server {where}: {answer} (unreachable or "
                           f"refused, HTTP error); is_alive: {message or 'no answer'}")


def _task_parameters(prun: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """prun's task parameters for the agent's (prun option names), built by prun itself."""
    in_ds, out_ds = params.get("inDS"), params.get("outDS") or params.get("taskName")
    if not isinstance(in_ds, str) or not in_ds or not isinstance(out_ds, str) or not out_ds:
        raise ValueError(f"inDS and outDS must be non-empty strings, got {in_ds!r}, {out_ds!r}")
    args = ["--exec", _exec_line(params), "--inDS", in_ds, "--outDS", out_ds,
            "--outputs", str(params.get("outputs") or OUTPUT_FILE),
            "--nJobs", str(params.get("nJobs") or 1)]
    for option in ("vo", "site", "prodSourceLabel", "workingGroup"):
        if params.get(option):
            args += [f"--{option}", str(params[option])]
    if params.get("noBuild", True):
        args.append("--noBuild")
    saved_argv, saved_env = sys.argv[:], {name: os.environ.get(name) for name in _PRUN_ENV}
    try:
        task = prun.main(True, args, dry_mode=True)
    finally:
        sys.argv[:] = saved_argv
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if not isinstance(task, dict) or not task.get("taskName"):
        raise ValueError(f"prun built no task parameters from {args!r}")
    return task


def _exec_line(params: Mapping[str, Any]) -> str:
    """The payload with the run metadata exported as ``SWF_*`` variables, as the local executor
    runs it (prun URL-encodes the line; the worker decodes and runs it in a shell)."""
    found = params.get("metadata")
    metadata: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    payload = params.get("exec", params.get("payload"))
    if not payload or payload == "builtin":
        payload = BUILTIN_EXEC
    if not isinstance(payload, str):
        raise ValueError(f"exec must be a shell command string, got {payload!r}")
    env = {"SWF_INPUT_DATASET": str(params.get("inDS") or ""),
           "SWF_OUTPUT_DATASET": str(params.get("outDS") or ""),
           "SWF_METADATA": orjson.dumps(dict(metadata), option=orjson.OPT_SORT_KEYS).decode()}
    for key, value in metadata.items():
        if isinstance(value, str | int | float) and not isinstance(value, bool) \
                and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
            env[f"SWF_{str(key).upper()}"] = str(value)
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
    return f"export {exports}; {payload}"


def _scrub(text: str) -> str:
    """No bearer token (nor the configured token values) in anything we keep."""
    text = _BEARER.sub("Bearer ***", text)
    for name in _TOKEN_VARIABLES:
        secret = os.environ.get(name)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _first(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _public_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()
    return url


__all__ = ["PandaBatch", "PandaSettings"]
