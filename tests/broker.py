"""A real ActiveMQ broker, and live-mode processes on it, for tests.

Load it as a plugin in a test module (pytest puts ``tests/`` on ``sys.path``)::

    pytest_plugins = ["broker"]

``broker`` (module scope): deploy/activemq/broker.sh starts a broker from the Debian package in a
temporary directory on free ports and stops it after the module (skipped when the package is
missing; a failure under CI). ``Broker.restart()`` keeps its data: durable subscriptions and
persistent messages survive.

``Cluster`` runs ``swf record`` and ``swf agent NAME`` as subprocesses against one broker and one
store (``swf run --broker`` too), with their output in log files, and waits on real conditions:
the recorder wrote its ready file (subscribed, the queue copies proven), each agent's READY
heartbeat from its own pid is in the store.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
BROKER_SH = REPO / "deploy" / "activemq" / "broker.sh"
ACTIVEMQ_JAR = Path(os.environ.get("ACTIVEMQ_HOME", "/usr/share/activemq")) / "bin" / "activemq.jar"
WAIT = 30.0  # seconds any single condition may take before a test gives up
SWF = [sys.executable, "-c", "from swf.cli import run; run()"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(*args: str, check: bool = True, timeout: float = 120,
               config: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SWF_BROKER_CONFIG": str(config)} if config is not None else None
    proc = subprocess.run(
        ["bash", str(BROKER_SH), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"broker.sh {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@dataclass
class Broker:
    directory: Path
    port: int
    openwire_port: int
    pid: int = 0
    config: Path | None = None  # the broker's XML (default: deploy/activemq/activemq.xml)

    @property
    def url(self) -> str:
        return f"stomp://127.0.0.1:{self.port}"

    def start(self) -> None:
        out = run_script("start", str(self.directory), str(self.port), str(self.openwire_port),
                         config=self.config)
        self.pid = int(out.stdout.strip().splitlines()[-1])

    def stop(self) -> subprocess.CompletedProcess:
        return run_script("stop", str(self.directory))

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from running_broker(tmp_path_factory)


def running_broker(tmp_path_factory: pytest.TempPathFactory, config: Path | None = None
                   ) -> Iterator[Broker]:
    """A broker on free ports (with ``config`` instead of deploy/activemq/activemq.xml), stopped
    after the yield."""
    if not ACTIVEMQ_JAR.is_file():
        msg = f"{ACTIVEMQ_JAR} missing: run deploy/activemq/broker.sh install"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    b = Broker(tmp_path_factory.mktemp("activemq"), free_port(), free_port(), config=config)
    try:
        b.start()
        yield b
    finally:
        # always stop, also when start or a test failed; stop is idempotent
        run_script("stop", str(b.directory), check=False)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT,
             every: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy (returned) or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    """Send raw bodies (persistent), confirmed by the broker before returning."""
    from agents.transport.stomp import StompTransport
    from swf.settings import broker_config

    transport = StompTransport(broker_config(url), name=f"test-{uuid.uuid4().hex[:6]}")
    transport.start()
    try:
        transport.send([(destination, body, None) for destination, body in messages],
                       timeout=WAIT)
    finally:
        transport.close()


def stored_ids(engine: sa.Engine, **where: Any) -> list[str]:
    from eventstore.schema import events

    query = sa.select(events.c.event_id)
    for name, value in where.items():
        query = query.where(events.c[name] == value)
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


@dataclass
class Cluster:
    """``swf record`` and ``swf agent`` processes sharing one broker, store and data dir (the
    store: a SQLite file in ``root`` unless ``db_url`` names another)."""

    broker: Broker
    root: Path
    user: str = "tester"
    heartbeat: float = 1.0
    db_url: str = ""
    recorder_name: str | None = None  # `swf record --name` (default: the settings')
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_url = self.db_url or f"sqlite:///{self.root / 'swf.db'}"
        self.data_dir = self.root / "data"
        self.env = {**os.environ, "SWF_BROKER": self.broker.url, "SWF_DB": self.db_url,
                    "SWF_DATA": str(self.data_dir), "SWF_USER": self.user,
                    "PYTHONUNBUFFERED": "1"}
        self.env.pop("SWF_CONFIG", None)
        from eventstore.store import EventStore

        self.store = EventStore(self.db_url)
        self._logs = 0

    # -- processes -----------------------------------------------------------------------------

    def spawn(self, key: str, *args: str, stdout: Path | None = None) -> subprocess.Popen:
        self._logs += 1
        log = (self.root / f"{key}.{self._logs}.log").open("wb")
        out = stdout.open("wb") if stdout is not None else None
        proc = subprocess.Popen([*SWF, *args], env=self.env, cwd=self.root,
                                stdin=subprocess.DEVNULL, stdout=out or log,
                                stderr=log if out else subprocess.STDOUT)
        log.close()
        if out is not None:
            out.close()
        self.procs[key] = proc
        return proc

    def swf(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """A ``swf`` command in the cluster's environment, to completion."""
        return subprocess.run([*SWF, *args], env=self.env, cwd=self.root, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=timeout, check=False)

    def start_recorder(self) -> subprocess.Popen:
        named = ("--name", self.recorder_name) if self.recorder_name else ()
        ready = self.root / f"recorder.{self._logs + 1}.ready"
        proc = self.spawn("recorder", "-v", "record", *named, "--ready-file", str(ready))
        self.wait_recorder(proc, ready)
        return proc

    def start_agent(self, name: str) -> subprocess.Popen:
        return self.spawn(name, "agent", name, "--heartbeat-interval", str(self.heartbeat),
                          "--sent-log", str(self.root / f"{name}.sent"))

    def sent(self) -> list[str]:
        """The msg_ids every agent process so far said the broker confirmed (repeats kept)."""
        return [line.split()[0] for path in sorted(self.root.glob("*.sent"))
                for line in path.read_text().splitlines() if line.strip()]

    def start_agents(self, names: tuple[str, ...]) -> None:
        for name in names:
            self.start_agent(name)
        for name in names:
            self.wait_agent(name)

    def kill(self, key: str, signum: int = signal.SIGKILL) -> None:
        proc = self.procs[key]
        proc.send_signal(signum)
        proc.wait(WAIT)

    def alive(self, key: str) -> bool:
        return self.procs[key].poll() is None

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.store.close()

    def log_text(self) -> str:
        return "\n".join(f"== {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in sorted(self.root.glob("*.log")))

    # -- conditions ----------------------------------------------------------------------------

    def wait_recorder(self, proc: subprocess.Popen, ready: Path) -> None:
        """The recorder is subscribed (and the queue copies proven) once it wrote its ready
        file."""
        def written() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"swf record exited {proc.returncode}:\n{self.log_text()}")
            return ready.exists()

        wait_for(written, "the recorder's ready file")

    def wait_agent(self, name: str) -> None:
        """An agent is up once its READY heartbeat (sent after subscribing) is stored."""
        from eventstore.schema import events

        pid = self.procs[name].pid
        columns = events.c

        def ready() -> bool:
            if self.procs[name].poll() is not None:
                raise AssertionError(f"agent {name} exited:\n{self.log_text()}")
            with self.store.engine.connect() as conn:
                bodies = conn.execute(sa.select(columns.body).where(
                    columns.msg_type == "agent_heartbeat",
                    columns.sender.like(f"%-agent-{self.user}"))).scalars().all()
            return any(orjson.loads(body).get("pid") == pid
                       and orjson.loads(body).get("operational_state") == "READY"
                       for body in bodies)

        wait_for(ready, f"agent {name} to say READY")

    # -- runs ----------------------------------------------------------------------------------

    def run(self, *options: str, timeout: float = 120) -> subprocess.Popen:
        """``swf run --broker`` in the background; ``finish`` collects its JSON summary."""
        self._summary = self.root / f"run.{self._logs + 1}.json"
        return self.spawn("run", "run", "--broker", self.broker.url, "--json",
                          "--timeout", str(timeout), *options, stdout=self._summary)

    def finish(self, proc: subprocess.Popen, timeout: float = 180) -> dict[str, Any]:
        proc.wait(timeout)
        text = self._summary.read_bytes()
        if not text.strip():
            raise AssertionError(f"swf run printed no summary:\n{self.log_text()}")
        return orjson.loads(text)


# -- comparing a live execution with its embedded twin ---------------------------------------------

PROJECTIONS = ("executions", "runs", "stf_files", "tf_samples", "slices", "unmatched_results",
               "datasets", "tasks", "logs")
NOT_DECISIONS = frozenset({"agent_heartbeat", "agent_log"})  # carry the wall clock, pid, host
# A 9 s run (every decision is a function of the log, so the pace changes nothing decided).
FAST = ("daq.stf_interval=0.8", "daq.imminent_delay=0.2",
        "fast_processing.slice_processing_time=0.4")


def timeless(row: dict[str, Any]) -> dict[str, Any]:
    """A projection row without its time columns (and the store-specific position)."""
    return {name: value for name, value in row.items()
            if not (name.endswith(("_at", "_time")) or name in
                    ("time", "first_seen", "last_heartbeat", "position", "duration_s"))}


def projected(store: Any, execution_id: str, namespace: str | None = None
              ) -> dict[str, list[dict[str, Any]]]:
    """Every projection's rows of the execution, caught up, without time columns."""
    from projections import Projector, queries

    Projector(store).catch_up()
    return {name: [timeless(row) for row in queries.query(
        store, name, execution_id=execution_id, namespace=namespace)]
        for name in PROJECTIONS}


def decisions(store: Any, execution_id: str, namespace: str = "torre2") -> list[str]:
    """The msg_ids of the execution's valid messages in its namespace that decisions made
    (sorted)."""
    from eventstore.schema import events

    columns = events.c
    with store.engine.connect() as conn:
        return sorted(conn.execute(sa.select(columns.event_id).where(
            columns.execution_id == execution_id, columns.namespace == namespace,
            columns.reject_reason.is_(None),
            columns.msg_type.not_in(NOT_DECISIONS))).scalars())


def allocation_of(store: Any, execution_id: str) -> Any:
    """The live execution's id, run and start time, read back from its run_imminent."""
    from agents.runtime import Allocation

    (imminent,) = store.read(execution_id=execution_id, msg_types=["run_imminent"])
    return Allocation(execution_id, imminent.run_id, imminent.sent_at)


def embedded_twin(path: Path, allocation: Any, *options: str, seed: int, user: str,
                  workflow: str = "fast_processing", inputs: tuple[bytes, ...] = ()) -> Any:
    """The same execution (ids, start time, config, seed) run embedded into a fresh store (with
    its own data directory, beside it: the bodies do not depend on it); ``inputs``: recorded
    messages of other senders (a stop) published into it at their times."""
    from unittest import mock

    from agents.config import load_workflow
    from agents.runtime import prepare
    from eventstore.store import EventStore

    store = EventStore(f"sqlite:///{path}")
    with mock.patch("agents.runtime.allocate", return_value=allocation):
        runtime = prepare(store, load_workflow(workflow, options), seed=seed, user=user,
                          strict=True)
    for body in inputs:
        runtime.publish(orjson.loads(body))
    runtime.run()
    return store


def recorded(store: Any, execution_id: str, msg_type: str) -> list[Any]:
    """The execution's stored events of one type."""
    return list(store.read(execution_id=execution_id, msg_types=[msg_type]))


def assert_redrives_clean(store: Any, execution_id: str) -> dict[str, Any]:
    """``swf-replay ID --agents`` on the store: today's agents, handed the recorded inputs in
    the log's order, emit exactly the recorded messages (every decision a function of the log,
    whatever order the live streams interleaved in)."""
    from click.testing import CliRunner

    from replay.cli import main

    url = store.engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(main, [execution_id, "--db", url, "--agents", "--json"],
                                catch_exceptions=False)
    report = orjson.loads(result.stdout_bytes)
    assert result.exit_code == 0 and report["divergence"] is None, result.stdout
    assert report["compared"] > 0 and "daq_simulator" in report["agents"].values()
    return report


def outline(store: Any, execution_id: str
            ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """The projections without the worker each slice ran on, and how many messages of each type
    decisions made: for runs whose pace decides something (how many polls a task takes)."""
    from collections import Counter

    from eventstore.schema import events

    tables = projected(store, execution_id)
    for name in ("slices", "unmatched_results"):
        tables[name] = [{k: v for k, v in row.items() if k != "worker"} for row in tables[name]]
    columns = events.c
    with store.engine.connect() as conn:
        kinds = Counter(conn.execute(sa.select(columns.msg_type).where(
            columns.execution_id == execution_id, columns.namespace == "torre2",
            columns.reject_reason.is_(None),
            columns.msg_type.not_in(NOT_DECISIONS))).scalars())
    return tables, dict(kinds)


# -- a proxy in front of the broker: TLS, and network drops ----------------------------------------


def self_signed(folder: Path) -> Path:
    """A self-signed certificate and key for 127.0.0.1 (PEM, in one file); skips without
    openssl."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    pem = folder / "server.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    pem.write_text((folder / "cert.pem").read_text() + (folder / "key.pem").read_text())
    return pem


class Proxy:
    """Forwards TCP connections to the broker, optionally terminating TLS with ``certificate``.
    ``cut()`` drops every open connection at once, as a network failure would. With ``record``,
    it notes what clients write (time, connection number, bytes), so a test can see which
    bytes one client wrote during a window (``written``: heart-beats, acks)."""

    def __init__(self, target_port: int, certificate: Path | None = None,
                 record: bool = False) -> None:
        import ssl
        import threading

        self.target_port = target_port
        self.record = record
        self.sent: list[tuple[float, int, bytes]] = []
        self.connections = 0
        self.context = None
        if certificate is not None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(str(certificate))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cuts = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'stomp+ssl' if self.context else 'stomp'}://127.0.0.1:{self.port}"

    def written(self, start: float, end: float, client_id: str) -> bytes:
        """What the connections whose CONNECT names ``client_id`` wrote in [start, end]
        (``record`` only)."""
        sent = list(self.sent)
        mine = {number for _, number, data in sent
                if data.startswith(b"CONNECT") and f"client-id:{client_id}\n".encode() in data}
        return b"".join(data for at, number, data in sent
                        if number in mine and start <= at <= end)

    def cut(self) -> None:
        with self._lock:
            doomed, self._open = self._open, []
            self.cuts += 1
        for sock in doomed:
            _close(sock)

    def close(self) -> None:
        self._closed = True
        _close(self.listener)
        self.cut()

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._pump, args=(client, self.connections),
                             daemon=True).start()

    def _pump(self, client: socket.socket, number: int) -> None:
        import select
        import ssl

        upstream = None
        try:
            if self.context is not None:
                client = self.context.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open += [client, upstream]
            peer = {client: upstream, upstream: client}
            while not self._closed:
                pending = isinstance(client, ssl.SSLSocket) and client.pending()
                ready = [client] if pending else select.select([client, upstream], [], [],
                                                               0.5)[0]
                for source in ready:
                    data = source.recv(1 << 16)
                    if not data:
                        return
                    if self.record and source is client:
                        self.sent.append((time.monotonic(), number, data))
                    peer[source].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            _close(client)
            if upstream is not None:
                _close(upstream)


def _close(sock: socket.socket) -> None:
    import contextlib

    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
