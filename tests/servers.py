"""Real servers for integration tests: a local Rucio server and the local PanDA API server.

Load it as a plugin in a test module (or the root conftest) to get the fixtures; pytest puts
``tests/`` on ``sys.path`` (there is no ``tests/__init__.py``), so the module is ``servers``::

    pytest_plugins = ["servers"]

``rucio_server`` (session): ``deploy/rucio/server.sh install`` once, then ``start`` in a temporary
directory on a free port; yields a ``RucioServer`` (``host``, ``account``, ``username``,
``password``, ``rse``, ``client()`` for a ready ``rucio.client.Client`` with a token cache of its
own, ``env()`` for subprocesses) and stops the server at the end. When the install fails because
PyPI is unreachable the fixture skips, or fails when ``CI`` is set.

``panda_server`` (per test): an in-process ``PandaApiServer`` on a free port, with the
environment ``pandaclient`` needs pointed at it (``PANDA_URL``/``PANDA_URL_SSL``,
``PANDA_BEHIND_REAL_LB=1``, no ``PANDA_AUTH``); yields a ``PandaTestServer`` whose ``base_url``
is what ``PANDA_URL`` holds. ``panda_server_factory`` starts more, each with its own
``PandaServerConfig`` settings (``make(fail_tasks_matching=("bad",))``); the client follows the
most recent one. Both restore the environment and stop their servers afterwards.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from panda_api_server import PandaApiServer, PandaServerConfig

REPO = Path(__file__).resolve().parent.parent
RUCIO_SH = REPO / "deploy" / "rucio" / "server.sh"
RUCIO_INSTALL_TIMEOUT = 1200.0
RUCIO_START_TIMEOUT = 180.0

# what pip prints when it cannot reach the index
_OFFLINE_PATTERNS = re.compile(
    r"NewConnectionError|Temporary failure in name resolution|Network is unreachable"
    r"|Name or service not known|Failed to establish a new connection|ConnectTimeout"
    r"|ReadTimeoutError|No matching distribution found|Could not find a version that satisfies"
    r"|ProxyError|SSLError|Connection refused|Max retries exceeded",
)


class ServerSetupError(RuntimeError):
    """A server script failed; ``output`` holds its stdout and stderr."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(f"{message}\n{output}" if output else message)
        self.output = output


def _unavailable(reason: str) -> None:
    """Skip, or fail under CI, when an external prerequisite is missing."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def require(module: str) -> Any:
    """Import ``module``; skip (fail under CI) when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        _unavailable(f"{module} is not installed ({exc}); pip install -e '.[test]'")


def _run_rucio_sh(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["bash", str(RUCIO_SH), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise ServerSetupError(
            f"deploy/rucio/server.sh {' '.join(args)} exited {proc.returncode}",
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}",
        )
    return proc


# -- Rucio ----------------------------------------------------------------------------------------


def install_rucio_server() -> None:
    """The Rucio virtualenv (a no-op when installed); ServerSetupError on failure."""
    _run_rucio_sh("install", timeout=RUCIO_INSTALL_TIMEOUT)


def looks_offline(error: ServerSetupError) -> bool:
    return bool(_OFFLINE_PATTERNS.search(error.output))


@dataclass
class RucioServer:
    """One running instance of deploy/rucio/server.sh (see its header for the layout of DIR)."""

    directory: Path
    host: str
    account: str
    username: str
    password: str = field(repr=False)
    rse: str
    pid: int
    _tokens: int = field(default=0, repr=False)

    @property
    def auth_host(self) -> str:
        return self.host

    @property
    def password_file(self) -> Path:
        return self.directory / "credentials"

    @property
    def config_file(self) -> Path:
        return self.directory / "rucio.cfg"

    def client(self, **kwargs: Any) -> Any:
        """A new ``rucio.client.Client`` for this server, authenticated as root.

        Each client keeps its auth token under ``DIR/tokens/<n>/``: the default cache
        (``$TMPDIR/.rucio_<user>``, fixed at import time) is shared by every client of a user.
        """
        from rucio.client import Client

        self._tokens += 1
        token_dir = self.directory / "tokens" / f"{self._tokens}-{uuid.uuid4().hex[:8]}"
        token_dir.mkdir(parents=True, mode=0o700)
        isolated = type(
            "IsolatedTokenClient", (Client,), {"TOKEN_PATH_PREFIX": f"{token_dir}/.rucio_"}
        )
        options: dict[str, Any] = {
            "rucio_host": self.host,
            "auth_host": self.auth_host,
            "account": self.account,
            "auth_type": "userpass",
            "creds": {"username": self.username, "password": self.password},
        }
        options.update(kwargs)
        return isolated(**options)

    def env(self) -> dict[str, str]:
        """Environment for a subprocess client (the lines ``server.sh start`` prints)."""
        return {
            "RUCIO_HOST": self.host,
            "RUCIO_AUTH_HOST": self.auth_host,
            "RUCIO_ACCOUNT": self.account,
            "RUCIO_AUTH_TYPE": "userpass",
            "RUCIO_USERNAME": self.username,
            "RUCIO_PASSWORD_FILE": str(self.password_file),
            "SWF_RUCIO_CONFIG": str(self.config_file),
            "SWF_RUCIO_RSE": self.rse,
        }

    def stop(self) -> None:
        stop_rucio_server(self.directory)

    def restart(self) -> None:
        """Stop and start again on the same port and database."""
        self.stop()
        again = start_rucio_server(self.directory, port=int(self.host.rsplit(":", 1)[1]))
        self.pid = again.pid


def _parse_env(stdout: str) -> dict[str, str]:
    values = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            values[key] = value
    return values


def start_rucio_server(directory: Path, port: int = 0) -> RucioServer:
    """``server.sh start DIR PORT`` (0: a free port); the server must be installed."""
    proc = _run_rucio_sh("start", str(directory), str(port), timeout=RUCIO_START_TIMEOUT)
    env = _parse_env(proc.stdout)
    try:
        password = Path(env["RUCIO_PASSWORD_FILE"]).read_text().strip()
        return RucioServer(
            directory=Path(directory).resolve(),
            host=env["RUCIO_HOST"],
            account=env["RUCIO_ACCOUNT"],
            username=env["RUCIO_USERNAME"],
            password=password,
            rse=env["SWF_RUCIO_RSE"],
            pid=int(env["SWF_RUCIO_PID"]),
        )
    except (KeyError, ValueError, OSError) as exc:
        raise ServerSetupError(
            f"unexpected output of server.sh start ({exc})", proc.stdout
        ) from exc


def stop_rucio_server(directory: Path) -> None:
    _run_rucio_sh("stop", str(directory), timeout=60)


@pytest.fixture(scope="session")
def rucio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RucioServer]:
    require("rucio.client")
    try:
        install_rucio_server()
    except ServerSetupError as exc:
        if looks_offline(exc):
            tail = "\n".join(exc.output.strip().splitlines()[-6:])
            _unavailable(f"cannot install the Rucio server (PyPI unreachable?):\n{tail}")
        raise
    server = start_rucio_server(tmp_path_factory.mktemp("rucio-server"))
    try:
        yield server
    finally:
        server.stop()


# -- PanDA ----------------------------------------------------------------------------------------

PANDA_CLIENT_AUTH_VARS = (
    "PANDA_AUTH",
    "PANDA_AUTH_VO",
    "PANDA_AUTH_ID_TOKEN",
    "OIDC_AUTH_TOKEN_FILE",
    "OIDC_AUTH_ID_TOKEN",
    "OIDC_AUTH_VO",
)


@dataclass
class PandaTestServer:
    server: PandaApiServer

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/server/panda``: PANDA_URL and PANDA_URL_SSL."""
        return self.server.base_url

    @property
    def api_url(self) -> str:
        return self.server.api_url

    @property
    def config(self) -> PandaServerConfig:
        return self.server.config

    def env(self) -> dict[str, str]:
        """Environment for a pandaclient in a subprocess."""
        return {
            "PANDA_URL": self.base_url,
            "PANDA_URL_SSL": self.base_url,
            "PANDA_BEHIND_REAL_LB": "1",
        }

    def __str__(self) -> str:
        return self.base_url


def point_pandaclient_at(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment (and, when already imported, ``pandaclient.Client``'s URLs) for ``base_url``.

    ``pandaclient.Client`` reads PANDA_URL/PANDA_URL_SSL once, at import; a module imported for
    an earlier server keeps that server's URLs, so they are repointed here (and restored by
    ``monkeypatch``).
    """
    monkeypatch.setenv("PANDA_URL", base_url)
    monkeypatch.setenv("PANDA_URL_SSL", base_url)
    monkeypatch.setenv("PANDA_BEHIND_REAL_LB", "1")
    for name in PANDA_CLIENT_AUTH_VARS:
        monkeypatch.delenv(name, raising=False)
    client = sys.modules.get("pandaclient.Client")
    if client is not None:
        root = base_url.split("/server/", 1)[0]
        monkeypatch.setattr(client, "baseURL", base_url)
        monkeypatch.setattr(client, "baseURLSSL", base_url)
        monkeypatch.setattr(client, "server_base_path", f"{root}/api/v1")
        monkeypatch.setattr(client, "server_base_path_ssl", f"{root}/api/v1")


@pytest.fixture
def panda_server_factory(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., PandaTestServer]]:
    started: list[PandaApiServer] = []

    def make(**settings: Any) -> PandaTestServer:
        config = replace(PandaServerConfig(), **settings)
        server = PandaApiServer(config).start()
        started.append(server)
        point_pandaclient_at(server.base_url, monkeypatch)
        return PandaTestServer(server)

    try:
        yield make
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def panda_server(panda_server_factory: Callable[..., PandaTestServer]) -> PandaTestServer:
    return panda_server_factory()
