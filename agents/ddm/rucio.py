"""Rucio as the ``ddm`` adapter: the processing agent's catalog commands as rucio-clients calls.

Same actions and reply fields as ``LocalCatalog`` (add_dataset, attach, close, list_files,
set_metadata), so the agent cannot tell the two apart except by what a real server refuses:

- ``add_dataset`` -> ``add_dataset(scope, name, meta=...)`` (one call: Rucio refuses a bad
  metadata key without creating the dataset); an existing name -> outcome ``exists`` with the
  dataset's state, as the local catalog answers;
- ``attach`` -> ``attach_dids(scope, dataset, files, rse=RSE)`` in batches of at most 500: the
  server registers the replicas and attaches them in one transaction, so a closed dataset
  (``UnsupportedOperation``) leaves no stray replica behind. ``ignore_duplicate`` (a retried run)
  skips files already in the dataset and reports them as ``duplicate``;
- ``close`` -> ``set_status(open=False)``, then the totals from ``list_files``.

Transient failures (connection refused or timed out, HTTP 5xx) are retried with bounded
exponential backoff (``agents.retry``); refusals and authentication failures are not. Every
failure becomes ``outcome="error"`` with a one-line ``error`` that starts with what happened:
``unreachable: ...``, ``authentication failed: ...``, ``configuration error: ...`` or the Rucio
exception name (``DataIdentifierAlreadyExists: ...``, ``UnsupportedOperation: ...``,
``InvalidObject: invalid adler32 ...``). Nothing is raised out of ``execute``.

Client settings (``RucioSettings``) come from the deployment: the application shell builds them
from its ``[rucio]`` settings, the ``RUCIO_*`` variables and Rucio's own rucio.cfg (see
swf/settings.py). A workflow adds its ``[ddm]`` keys (``RucioSettings.for_workflow``): the
adapter options (rse, timeout, attempts, retry_delay, max_delay) and, when ``rucio_config`` names
a rucio.cfg, that file's ``[client]`` section alone in place of the deployment's client settings.
Passwords never appear in replies, reprs or logs.
Each catalog keeps its auth token in a private temporary directory: Rucio's default token cache
is keyed by account only, so a wrong password would otherwise ride on another client's token.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agents.base import Adapter, Command
from agents.ddm import DdmError, did, name_problem, replica_problem, scope_problem
from agents.retry import RetryPolicy, Transient, retry_call

log = logging.getLogger(__name__)
# rucio-clients logs every refused connection at ERROR on its own; our retry warnings and the
# reply say it once, so its logger stays quiet unless someone lowers this level on purpose.
_CLIENT_LOG = logging.getLogger("swf.rucio.client")
if _CLIENT_LOG.level == logging.NOTSET:
    _CLIENT_LOG.setLevel(logging.CRITICAL)

DEFAULT_RSE = "DAQ_DISK"
BATCH_SIZE = 500  # files per attach_dids call (SQLite servers hit an expression-depth limit)
_TRANSIENT_STATUS = re.compile(r"http status code: 5\d\d")
_BAD_VALUE = re.compile(r"'([^']*)' does not match")
_OUTAGES = ("unreachable:", "authentication failed:", "configuration error:", "server error:")
_FILE_KEYS = {"host": "rucio_host", "auth_host": "auth_host", "account": "account",
              "auth_type": "auth_type", "username": "username", "password": "password",
              "vo": "vo", "ca_cert": "ca_cert", "client_cert": "client_cert",
              "client_key": "client_key", "client_proxy": "client_x509_proxy"}


@dataclass(frozen=True)
class RucioSettings:
    """How to reach and authenticate to a Rucio server, plus the adapter's retry policy."""

    host: str | None = None
    auth_host: str | None = None
    account: str | None = None
    auth_type: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    vo: str | None = None
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    client_proxy: str | None = None
    rse: str = DEFAULT_RSE  # used when an attach command names none
    timeout: float = 60.0  # seconds per HTTP request
    attempts: int = 4  # tries per command for transient failures
    retry_delay: float = 0.5  # first backoff; doubles per retry
    max_delay: float = 8.0
    source: str = "defaults"  # where the client settings came from, for messages
    problem: str | None = None  # a configuration error found while resolving

    def __repr__(self) -> str:
        """The dataclass's repr without a password: neither the field nor one in a server URL."""
        shown = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name in ("host", "auth_host") and isinstance(value, str):
                value = _public_url(value)
            if spec.repr:
                shown.append(f"{spec.name}={value!r}")
        return f"RucioSettings({', '.join(shown)})"

    def for_workflow(self, section: Mapping[str, Any] | None) -> RucioSettings:
        """These settings under a workflow's ``[ddm]`` section: its adapter options, and the
        ``[client]`` section of the rucio.cfg it names in ``rucio_config`` (that file alone)."""
        section = section or {}
        base = self
        explicit = str(section.get("rucio_config") or "").strip()
        if explicit:
            try:
                client, problem = read_client_section(os.path.expanduser(explicit)), None
            except (OSError, configparser.Error) as exc:
                client, problem = {}, f"cannot read Rucio config {explicit}: {exc}"
            base = RucioSettings(**client, source=f"{explicit} ([ddm] rucio_config)",
                                 problem=problem)
        return replace(base, **_adapter_options(section))

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``rucio.client.Client`` (unset ones: rucio's own defaults)."""
        options: dict[str, Any] = {
            "rucio_host": self.host, "auth_host": self.auth_host or self.host,
            "account": self.account, "auth_type": self.auth_type, "vo": self.vo,
            "ca_cert": self.ca_cert, "timeout": self.timeout}
        kind = self.auth_type or "userpass"
        creds: dict[str, Any] = {}
        if kind == "userpass":
            creds = {"username": self.username, "password": self.password}
        elif kind == "x509":
            creds = {"client_cert": self.client_cert, "client_key": self.client_key}
        elif kind == "x509_proxy":
            creds = {"client_proxy": self.client_proxy}
        options["creds"] = {key: value for key, value in creds.items() if value} or None
        return {key: value for key, value in options.items() if value is not None}

    @property
    def where(self) -> str:
        """The server, for messages: no userinfo, so no password can slip into a reply."""
        return _public_url(self.host) if self.host else "(no Rucio host configured)"


class RucioCatalog(Adapter):
    """Adapter ``ddm`` backed by a Rucio server through rucio-clients."""

    def __init__(self, settings: RucioSettings, *,
                 sleep: Callable[[float], None] = time.sleep,
                 data_root: Path | None = None) -> None:
        self.settings = settings
        # Messages name files relative to the data directory; Rucio gets absolute URLs.
        self.data_root = data_root
        self._sleep = sleep
        self._client: Any = None
        self._deterministic: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._token_dir = tempfile.mkdtemp(prefix="swf-rucio-")  # mode 0700
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._token_dir, True)
        self._actions: dict[str, Callable[[Any, Mapping[str, Any], _Attempts],
                                          dict[str, Any]]] = {
            "add_dataset": self._add_dataset,
            "attach": self._attach,
            "close": self._close,
            "list_files": self._list_files,
            "set_metadata": self._set_metadata,
        }

    def close_connection(self) -> None:
        with self._lock:
            self._client = None
        self._cleanup()

    # --- the Adapter contract ------------------------------------------------------------

    def execute(self, command: Command) -> dict[str, Any]:
        reply = dict(command.reply)
        action = self._actions.get(command.action)
        if action is None:
            reply.update(outcome="error",
                         error=f"UnsupportedOperation: unknown ddm action {command.action!r}")
            return reply
        with self._lock:
            reply.update(self._run(command.action, action, command.params))
        error = reply.get("error") if reply.get("outcome") == "error" else None
        if error:  # recorded in the reply; the agent decides. Outages are worth a warning.
            (log.warning if error.startswith(_OUTAGES) else log.info)(
                "ddm %s failed: %s", command.action, error)
        return reply

    def _run(self, name: str, action: Callable[[Any, Mapping[str, Any], _Attempts],
                                               dict[str, Any]],
             params: Mapping[str, Any]) -> dict[str, Any]:
        """One command with retries: transient failures back off and try again."""
        if self.settings.problem:
            return {"outcome": "error", "error": f"configuration error: {self.settings.problem}"}
        try:
            _precheck(name, params)  # refused before any connection (and never retried)
        except DdmError as problem:
            return {"outcome": "error", "error": str(problem)}
        state = _Attempts()
        policy = RetryPolicy(attempts=max(1, self.settings.attempts),
                             initial=self.settings.retry_delay, maximum=self.settings.max_delay)

        def attempt() -> dict[str, Any]:
            try:
                return action(self._connect(), params, state)
            except DdmError as problem:
                return {"outcome": "error", "error": str(problem), **state.partial()}
            except Exception as exc:  # noqa: BLE001 - every outside failure becomes a reply
                transient, text = self._describe(exc, params)
                if transient:
                    raise Transient(text) from exc
                return {"outcome": "error", "error": text, **state.partial()}

        def again(number: int, delay: float, problem: BaseException) -> None:
            log.warning("ddm %s: %s; retrying in %.2f s (attempt %d of %d)", name, problem,
                        delay, number, policy.attempts)
            self._client = None  # a fresh session (and token) for the next try
            state.number += 1

        try:
            return retry_call(attempt, policy, sleep=self._sleep, before_retry=again)
        except Transient as problem:
            return {"outcome": "error", "error": f"{problem} (after {state.number + 1} attempts)",
                    **state.partial()}

    def _connect(self) -> Any:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> Any:
        """A ``rucio.client.Client`` (authenticating now) with this catalog's token cache."""
        if not self.settings.host:
            raise _ConfigurationError(
                "no Rucio host: set rucio_host in the [client] section of rucio.cfg "
                "([ddm] rucio_config or RUCIO_CONFIG) or RUCIO_HOST")
        if self.settings.auth_type == "userpass" and not (self.settings.username
                                                          and self.settings.password):
            raise _ConfigurationError(
                "userpass authentication needs a username and a password: [client] username "
                "and password in rucio.cfg, or RUCIO_USERNAME and RUCIO_PASSWORD_FILE")
        try:
            from rucio.client import Client
        except ImportError as exc:
            raise _ConfigurationError(
                f"rucio-clients is not installed ({exc}); pip install 'swf[rucio]'") from None
        client_class = _private_tokens(Client, self._token_dir)
        return client_class(**self.settings.client_options(), logger=_CLIENT_LOG)

    # --- actions (raise; ``_run`` turns failures into replies) ---------------------------

    def _add_dataset(self, client: Any, params: Mapping[str, Any], state: _Attempts
                     ) -> dict[str, Any]:
        from rucio.common.exception import DataIdentifierAlreadyExists

        scope, name = _did_of(params, named=True)
        metadata = dict(params.get("metadata") or {})
        try:
            client.add_dataset(scope, name, meta=metadata or None)
        except DataIdentifierAlreadyExists:
            # As the local catalog: Rucio's refusal as the error, plus whether the dataset is
            # still open, so a retried run can go on attaching to it.
            info = self._dataset(client, scope, name)
            count, size = self._totals(client, scope, name)
            return {"outcome": "exists",
                    "error": f"DataIdentifierAlreadyExists: data identifier "
                             f"'{did(scope, name)}' already exists",
                    "is_open": bool(info.get("open")), "file_count": count, "size_bytes": size}
        log.info("dataset %s added on %s", did(scope, name), self.settings.where)
        return {"outcome": "ok", "error": None, "is_open": True}

    def _attach(self, client: Any, params: Mapping[str, Any], state: _Attempts
                ) -> dict[str, Any]:
        scope, dataset = _did_of(params, named=False)
        rse = params.get("rse") or self.settings.rse
        replicas = _unique(_replica(file, self.data_root) for file in params["files"])
        if params.get("ignore_duplicate") and state.before is None:
            # Files already there are skipped without asking Rucio, so ask whether the dataset
            # still takes files: closed is a refusal (as Rucio's own), not "all duplicates".
            if not self._dataset(client, scope, dataset).get("open"):
                raise DdmError("UnsupportedOperation",
                               f"Data identifier '{did(scope, dataset)}' is closed")
            state.before = self._content(client, scope, dataset)
        before = state.before or set()
        if state.number:  # an earlier try may have attached files before it failed
            state.attached |= (self._content(client, scope, dataset) - before) & {
                replica["name"] for replica in replicas}
        pending = [r for r in replicas if r["name"] not in before | state.attached]
        with_pfn = bool(pending) and not self._is_deterministic(client, rse)
        for start in range(0, len(pending), BATCH_SIZE):
            chunk = pending[start:start + BATCH_SIZE]
            dids = [_did_entry(scope, replica, with_pfn) for replica in chunk]
            client.attach_dids(scope, dataset, dids, rse=rse)
            state.attached |= {replica["name"] for replica in chunk}
        if replicas and not state.attached:
            return {"outcome": "duplicate", "error": None, "attached": 0,
                    "reason": f"already attached to {did(scope, dataset)}; not registered again"}
        return {"outcome": "ok", "error": None, "attached": len(state.attached)}

    def _close(self, client: Any, params: Mapping[str, Any], state: _Attempts
               ) -> dict[str, Any]:
        scope, dataset = _did_of(params, named=False)
        # A retry after a lost answer finds the dataset closed by our own first try.
        if not (state.closing and not self._dataset(client, scope, dataset).get("open")):
            state.closing = True
            client.set_status(scope, dataset, open=False)
        count, size = self._totals(client, scope, dataset)
        log.info("dataset %s closed with %d files, %d bytes", did(scope, dataset), count, size)
        return {"outcome": "ok", "error": None, "file_count": count, "size_bytes": size}

    def _list_files(self, client: Any, params: Mapping[str, Any], state: _Attempts
                    ) -> dict[str, Any]:
        scope, dataset = _did_of(params, named=False)
        files = self._files(client, scope, dataset)
        return {"outcome": "ok", "error": None, "files": files, "file_count": len(files),
                "size_bytes": sum(file["bytes"] or 0 for file in files)}

    def _set_metadata(self, client: Any, params: Mapping[str, Any], state: _Attempts
                      ) -> dict[str, Any]:
        scope, name = _did_of(params, named=True)
        client.set_metadata(scope, name, params.get("key"), params.get("value"))
        return {"outcome": "ok", "error": None}

    # --- helpers -------------------------------------------------------------------------

    def _dataset(self, client: Any, scope: str, name: str) -> dict[str, Any]:
        info = client.get_did(scope, name)
        if info.get("type") not in (None, "DATASET"):
            raise DdmError("UnsupportedOperation", f"data identifier '{did(scope, name)}' is a "
                                                   f"{str(info['type']).lower()}, not a dataset")
        return info

    def _files(self, client: Any, scope: str, name: str) -> list[dict[str, Any]]:
        listed = [{"scope": f["scope"], "name": f["name"], "bytes": f.get("bytes"),
                   "adler32": f.get("adler32")} for f in client.list_files(scope, name)]
        return sorted(listed, key=lambda file: (file["scope"], file["name"]))

    def _totals(self, client: Any, scope: str, name: str) -> tuple[int, int]:
        files = self._files(client, scope, name)
        return len(files), sum(file["bytes"] or 0 for file in files)

    def _content(self, client: Any, scope: str, name: str) -> set[str]:
        return {item["name"] for item in client.list_content(scope, name)
                if item.get("scope") == scope}

    def _is_deterministic(self, client: Any, rse: str) -> bool:
        """Deterministic RSEs derive each path from the name (and refuse a different pfn)."""
        if rse not in self._deterministic:
            self._deterministic[rse] = bool(client.get_rse(rse).get("deterministic", True))
        return self._deterministic[rse]

    def _describe(self, exc: BaseException, params: Mapping[str, Any]) -> tuple[bool, str]:
        """(transient?, one-line error text) for a failed call."""
        where = self.settings.where
        if isinstance(exc, _ConfigurationError | configparser.Error):
            return False, f"configuration error: {exc}"
        kind, detail = type(exc).__name__, _detail(exc)
        if _is_unreachable(exc):
            return True, f"unreachable: Rucio server {where}: {detail}"
        if kind in ("CannotAuthenticate", "NoAuthInformation"):
            return False, (f"authentication failed: Rucio server {where} refused account "
                           f"{self.settings.account!r} ({self.settings.source}): {detail}")
        if kind in ("MissingClientParameter", "ConfigNotFound", "ClientProtocolNotFound",
                    "ClientProtocolNotSupported", "ConfigLoadingError"):
            return False, f"configuration error: {kind}: {detail}"
        if kind == "DatabaseException" or (kind == "RucioException"
                                           and _TRANSIENT_STATUS.search(detail)):
            return True, f"server error: Rucio server {where}: {kind}: {detail}"
        if kind == "InvalidObject" and "adler32" in str(exc):
            value = _BAD_VALUE.search(detail)
            shown = f" {value.group(1)!r}" if value else ""
            return False, f"InvalidObject: invalid adler32{shown} (Rucio: {detail})"
        if kind == "FileAlreadyExists":
            target = did(str(params.get("scope")), str(params.get("dataset")))
            return False, f"FileAlreadyExists: a file of this call is already attached to " \
                          f"'{target}'"
        if kind == "DataIdentifierAlreadyExists":
            target = did(str(params.get("scope")), str(params.get("name", params.get("dataset"))))
            return False, f"DataIdentifierAlreadyExists: data identifier '{target}' already exists"
        if _is_rucio(exc):
            return False, f"{kind}: {detail}"
        log.exception("unexpected failure talking to Rucio at %s", where)
        return False, f"{kind}: {detail}"


@dataclass
class _Attempts:
    """What one command learned across its tries (so a retry does not double-register)."""

    number: int = 0
    before: set[str] | None = None  # dataset content before the first attach try
    attached: set[str] = field(default_factory=set)
    closing: bool = False  # set_status was sent at least once

    def partial(self) -> dict[str, Any]:
        return {"attached": len(self.attached)} if self.attached else {}


class _ConfigurationError(Exception):
    """The client cannot even be built: nothing to retry."""


def _private_tokens(client_class: type, token_dir: str) -> type:
    """A Client subclass that keeps its token in ``token_dir`` whatever rucio.cfg says."""

    def _get_auth_tokens(self: Any) -> tuple[str | None, str, str, str]:
        suffix = "for_account_" + (self.account or "default")
        return (None, f"{token_dir}/{self.TOKEN_EXP_PREFIX}{suffix}",
                f"{token_dir}/{self.TOKEN_PREFIX}{suffix}", token_dir)

    members: dict[str, Any] = {"TOKEN_PATH_PREFIX": f"{token_dir}/.rucio_"}
    if hasattr(client_class, "_get_auth_tokens"):
        members["_get_auth_tokens"] = _get_auth_tokens
    return type("SwfRucioClient", (client_class,), members)


def _is_unreachable(exc: BaseException) -> bool:
    if type(exc).__name__ == "ServerConnectionException":
        return True
    try:
        from requests.exceptions import ConnectionError as RequestsConnectionError
        from requests.exceptions import Timeout
    except ImportError:  # pragma: no cover - requests comes with rucio-clients
        return isinstance(exc, ConnectionError | TimeoutError)
    return isinstance(exc, RequestsConnectionError | Timeout | ConnectionError | TimeoutError)


def _is_rucio(exc: BaseException) -> bool:
    return any(cls.__module__.startswith("rucio.") for cls in type(exc).__mro__)


def _detail(exc: BaseException) -> str:
    """Rucio's detail text (its ``args[0]``), first line only, bounded."""
    text = str(exc.args[0]) if getattr(exc, "args", None) else str(exc)
    text = text.replace("Details: ", "")
    if text.startswith("Problem validating"):  # jsonschema's message: keep its first line
        text = text.split("\n", 1)[0]
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return line[:300].rstrip(".") or type(exc).__name__


def _precheck(action: str, params: Mapping[str, Any]) -> None:
    """What the catalog would refuse anyway, refused here with the local catalog's words."""
    named = action in ("add_dataset", "set_metadata")
    _check_did(params.get("scope"),
               params.get("name", params.get("dataset")) if named else params.get("dataset"))
    if action == "attach":
        files = params.get("files")
        if not isinstance(files, list):
            raise DdmError("InvalidObject", f"files must be a list, got {files!r}")
        for file in files:
            _replica(file)


def _did_of(params: Mapping[str, Any], *, named: bool) -> tuple[str, str]:
    """(scope, name) of a command; ``_precheck`` has made sure both are valid strings."""
    name = params.get("name", params.get("dataset")) if named else params.get("dataset")
    return str(params.get("scope")), str(name)


def _check_did(scope: Any, name: Any) -> None:
    problem = scope_problem(scope) or name_problem(name)
    if problem:
        raise DdmError("InvalidObject", problem)


def _replica(file: Any, root: Path | None = None) -> dict[str, Any]:
    """Our file shape (name, size_bytes, checksum, file_url) or Rucio's (bytes, adler32, pfn),
    checked for what Rucio handles badly: a missing size is an HTTP 500 there and a missing
    checksum is accepted, while both are refusals here (as in the local catalog). A checksum's
    format is left to the server, whose ``InvalidObject`` is reported as such. A relative URL
    (ours: relative to the data directory) becomes an absolute one under ``root``."""
    if not isinstance(file, Mapping):
        raise DdmError("InvalidObject", f"a file must be an object, got {file!r}")
    pfn = file.get("pfn", file.get("file_url"))
    if root is not None and isinstance(pfn, str) and pfn and ":" not in pfn \
            and not pfn.startswith("/"):
        pfn = (root / pfn).absolute().as_uri()
    replica = {"name": file.get("name"),
               "bytes": file.get("bytes", file.get("size_bytes")),
               "adler32": file.get("adler32", file.get("checksum")),
               "pfn": pfn}
    checksum = replica["adler32"]
    probe = {**replica, "adler32": "00000000"} if isinstance(checksum, str) and checksum \
        else replica
    problem = replica_problem(probe)
    if problem:
        raise DdmError("InvalidObject", f"replica {replica['name']!r}: {problem}")
    return replica


def _unique(replicas: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same file twice in one call: once is enough."""
    seen: dict[str, dict[str, Any]] = {}
    for replica in replicas:
        seen.setdefault(replica["name"], replica)
    return list(seen.values())


def _did_entry(scope: str, replica: Mapping[str, Any], with_pfn: bool) -> dict[str, Any]:
    entry = {"scope": scope, "name": replica["name"], "bytes": replica["bytes"],
             "adler32": replica["adler32"]}
    if with_pfn and replica.get("pfn"):
        entry["pfn"] = replica["pfn"]
    return entry


def _public_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return parts._replace(netloc=netloc).geturl()
    return url


def read_client_section(path: str) -> dict[str, Any]:
    """The settings in the ``[client]`` section of a rucio.cfg, by ``RucioSettings`` field name."""
    parser = configparser.ConfigParser()  # as rucio-clients reads it (with interpolation)
    if parser.read(path) != [path]:
        raise OSError(f"{path} is missing or unreadable")
    if not parser.has_section("client"):
        return {}
    values = {key: parser.get("client", option) for key, option in _FILE_KEYS.items()
              if parser.has_option("client", option)}
    return {key: value.strip() for key, value in values.items() if value.strip()}


def _adapter_options(section: Mapping[str, Any]) -> dict[str, Any]:
    """``[ddm]`` keys of the adapter itself: rse, timeout, attempts, retry_delay, max_delay."""
    known: dict[str, Any] = {spec.name: spec.default for spec in fields(RucioSettings)}
    values: dict[str, Any] = {}
    for key in ("rse", "timeout", "attempts", "retry_delay", "max_delay"):
        value = section.get(key)
        if value is None or value == "":
            continue
        default = known[key]
        if isinstance(default, str) and isinstance(value, str):
            values[key] = value
        elif isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            values[key] = type(default)(value)
        else:
            log.warning("ddm.%s = %r is not usable; using %r", key, value, default)
    return values


__all__ = ["BATCH_SIZE", "RucioCatalog", "RucioSettings", "read_client_section"]
