"""The recorder's failure figures, on a real ActiveMQ and real PostgreSQL, each test printing its
counts (run with -s to read them):

- two recorders (each its own durable subscriptions) on one PostgreSQL store, one of them
  SIGKILLed again and again: every message the sender's broker confirmed is stored exactly once;
- a private PostgreSQL server, started by the test, stopped mid-run and started again: the
  recorder holds its acks, keeps heart-beating (the broker never drops it), resumes, and loses
  nothing;
- 2,000 fuzzed malformed messages through STOMP with valid ones interleaved: the recorder
  alive, every message stored once (malformed ones with a reason, valid ones as valid), the
  projections and `swf query` still working.

The private server runs as the ``postgres`` user when the tests run as root (initdb refuses
root): its directory is handed to that user and initdb/pg_ctl go through ``runuser``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from conftest import fresh_pg_schema
from fuzz_messages import malformed, valid

from eventstore.envelope import SLICE_QUEUE, TOPIC
from eventstore.schema import events

pytest.register_assert_rewrite("broker")
from broker import Cluster, Proxy, free_port, publish, wait_for  # noqa: E402

pytestmark = [pytest.mark.broker, pytest.mark.slow]
pytest_plugins = ["broker"]  # the module-scoped ``broker`` fixture


def heartbeat(msg_id: str) -> bytes:
    return orjson.dumps({"msg_type": "agent_heartbeat", "msg_id": msg_id, "namespace": "fail",
                         "sender": "sender", "agent_type": "test", "status": "OK",
                         "hostname": "h" * 100})


class Sender(threading.Thread):
    """Publishes heartbeats in chunks until stopped (or ``total`` sent); ``sent`` holds the
    msg_ids the broker confirmed: the sent log to hold the store against."""

    def __init__(self, url: str, tag: str, *, chunk: int = 200, total: int | None = None,
                 pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.url, self.tag, self.chunk, self.total, self.pause = url, tag, chunk, total, pause
        self.sent: list[str] = []
        self.stop = threading.Event()
        self.problem: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set() and (self.total is None or len(self.sent) < self.total):
                ids = [f"{self.tag}-{len(self.sent) + i}" for i in range(self.chunk)]
                # every fifth message on a work queue: recorded from its monitor copy
                publish(self.url, [(SLICE_QUEUE if i % 5 == 0 else TOPIC, heartbeat(msg_id))
                                   for i, msg_id in enumerate(ids)])
                self.sent += ids
                self.stop.wait(self.pause)  # the sending rate, not a synchronisation
        except BaseException as problem:  # noqa: BLE001 - reported by the test
            self.problem = problem

    def finish(self) -> list[str]:
        self.stop.set()
        self.join(60)
        assert self.problem is None, self.problem
        return self.sent


def stored_count(engine: sa.Engine, prefix: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(
            events.c.event_id.like(f"{prefix}-%"))).scalar_one()


def assert_stored_exactly_once(engine: sa.Engine, sent: list[str], prefix: str) -> int:
    """Every sent msg_id is stored, once; returns how many rows carry the prefix."""
    wait_for(lambda: stored_count(engine, prefix) >= len(sent), "every sent message stored", 60)
    with engine.connect() as conn:
        stored = list(conn.execute(sa.select(events.c.event_id).where(
            events.c.event_id.like(f"{prefix}-%"))).scalars())
    assert len(stored) == len(set(stored)) == len(set(sent)) == len(sent)
    assert set(stored) == set(sent)
    return len(stored)


def summary(cluster: Cluster, key: str) -> str:
    """The last `swf record` summary line in the logs of ``key`` (printed on SIGTERM)."""
    lines = [line for path in sorted(cluster.root.glob(f"{key}.*.log"))
             for line in path.read_text(errors="replace").splitlines()
             if line.startswith("recorded ")]
    return lines[-1] if lines else "(no summary)"


# -- (b) two recorders, one killed again and again -------------------------------------------------


@pytest.mark.postgres
def test_two_recorders_on_one_store_one_killed_again_and_again_lose_nothing(broker,
                                                                           tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]
    total, kills = 12_000, 5
    with fresh_pg_schema() as url:
        steady = Cluster(broker, tmp_path / "a", db_url=url, recorder_name=f"ha-a-{tag}")
        victim = Cluster(broker, tmp_path / "b", db_url=url, recorder_name=f"ha-b-{tag}")
        try:
            steady.start_recorder()
            victim.start_recorder()
            sender = Sender(broker.url, f"ha-{tag}", total=total)
            sender.start()
            for kill in range(kills):
                wait_for(lambda k=kill: stored_count(steady.store.engine, f"ha-{tag}")
                         >= total * (k + 1) / (kills + 2), "progress", 60)
                victim.kill("recorder", signal.SIGKILL)
                victim.start_recorder()
            sent = sender.finish()
            stored = assert_stored_exactly_once(steady.store.engine, sent, f"ha-{tag}")
            assert steady.alive("recorder") and victim.alive("recorder")
        finally:
            steady.stop_all()
            victim.stop_all()
        steady_line, victim_line = summary(steady, "recorder"), summary(victim, "recorder")
    print(f"\n(b) HA: {len(sent)} sent, {stored} stored exactly once; recorder B SIGKILLed "
          f"{kills} times; A: {steady_line}; B's last: {victim_line}")
    absorbed = [int(n) for n in re.findall(r"\((\d+) duplicates absorbed", steady_line
                                           + victim_line)]
    assert len(absorbed) == 2 and sum(absorbed) > 0  # both stored what the other had too


# -- (d) a private PostgreSQL stopped and started mid-run ------------------------------------------


def postgres_bindir() -> Path:
    found = shutil.which("pg_config")
    if found:
        bindir = Path(subprocess.run([found, "--bindir"], capture_output=True, text=True,
                                     check=True).stdout.strip())
        if (bindir / "pg_ctl").is_file():
            return bindir
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0)
    if candidates:
        return candidates[-1].parent
    if os.environ.get("CI"):
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found")
    pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")


@dataclass
class PrivatePostgres:
    bindir: Path
    root: Path
    port: int
    as_user: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=60, cwd=self.root)

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.root / "data"), "-U",
                  "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-l",
                  str(self.root / "server.log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
                  "start")

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast",
                  "-w", "stop")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    bindir = postgres_bindir()
    root = Path(tempfile.mkdtemp(prefix="swf-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the server runs as the postgres user
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    server = PrivatePostgres(bindir, root, free_port(), as_user)
    try:
        server.init()
        server.start()
        yield server
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m",
                        "immediate", "stop"], capture_output=True, check=False, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


OUTAGE = 20.0  # seconds: long enough for several of the recorder's heart-beats (every 5 s)


def test_a_database_outage_mid_run_holds_acks_keeps_the_connection_and_loses_nothing(
        broker, tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]
    with private_postgres() as server:
        cluster = Cluster(broker, tmp_path / "outage", db_url=server.url,
                          recorder_name=f"outage-{tag}")
        tap = Proxy(broker.port, record=True)
        cluster.env["SWF_BROKER"] = tap.url  # the recorder's connection goes through the tap
        try:
            cluster.start_recorder()
            sender = Sender(broker.url, f"out-{tag}", chunk=100, pause=0.05)
            sender.start()
            wait_for(lambda: stored_count(cluster.store.engine, f"out-{tag}") >= 1000,
                     "1000 stored")
            server.stop()
            down = time.monotonic()
            sent_before = len(sender.sent)
            # The outage lasts OUTAGE seconds (the experiment's parameter), while the sender
            # goes on; the recorder must stay connected through it.
            wait_for(lambda: time.monotonic() - down >= OUTAGE and cluster.alive("recorder"),
                     "the outage to last", OUTAGE + 10, every=0.5)
            sent_during = len(sender.sent) - sent_before
            assert cluster.alive("recorder")
            server.start()
            outage = time.monotonic() - down
            # What the recorder wrote to the broker during the outage (after the acks of its
            # last commit had a second to go out): heart-beats only, no ack.
            during = tap.written(down + 1.0, down + OUTAGE, f"outage-{tag}")
            cluster.store.engine.dispose()  # the test's own connections died with the server
            wait_for(lambda: stored_count(cluster.store.engine, f"out-{tag}")
                     >= sent_before + sent_during, "the recorder to resume", 60)
            sent = sender.finish()
            stored = assert_stored_exactly_once(cluster.store.engine, sent, f"out-{tag}")
            assert cluster.alive("recorder")
        finally:
            cluster.stop_all()
            tap.close()
    log = "".join(path.read_text(errors="replace") for path in cluster.root.glob("*.log"))
    retries = log.count("the store is unavailable")
    lost = log.count("lost connection")
    beats, acks = during.count(b"\n"), during.count(b"ACK")
    print(f"\n(d) PostgreSQL outage of {outage:.1f} s: {len(sent)} sent ({sent_during} during "
          f"the outage), {stored} stored exactly once; {retries} append retries; written to "
          f"the broker meanwhile: {beats} heart-beats, {acks} "
          f"acks, {len(during)} bytes; {lost} broker connections lost; "
          f"{summary(cluster, 'recorder')}")
    assert retries >= 2 and lost == 0  # retried, and the broker kept it connected
    assert during and during.strip(b"\n") == b""  # heart-beats went on, acks were held


# -- (e) fuzzed malformed messages through STOMP --------------------------------------------------

MALFORMED = 2000


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres",
                                                          marks=pytest.mark.postgres)])
def test_fuzzed_malformed_messages_through_stomp_are_each_stored_once(broker, tmp_path,
                                                                      store) -> None:
    from eventstore.store import EventStore
    from projections import queries
    from projections.projector import Projector

    rng = random.Random(20261128)
    bodies: list[bytes] = []
    good: list[str] = []
    runs: set[int] = set()
    serial = 0
    while len(bodies) - len(good) < MALFORMED:
        if rng.random() < 0.2:
            message = valid(serial)
            good.append(message["msg_id"])
            if message["msg_type"] != "agent_log":
                runs.add(message["run_id"])
            bodies.append(orjson.dumps(message))
        else:
            bodies.append(malformed(rng, serial))
        serial += 1
    with fresh_pg_schema() if store == "postgres" else _nothing() as url:
        cluster = Cluster(broker, tmp_path / "fuzz", db_url=url or "",
                          recorder_name=f"fuzz-{uuid.uuid4().hex[:8]}")
        try:
            cluster.start_recorder()
            head = cluster.store.head()
            for start in range(0, len(bodies), 250):
                publish(broker.url, [(TOPIC, body) for body in bodies[start:start + 250]])

            def rows() -> list[tuple[bytes, str, str | None]]:
                with cluster.store.engine.connect() as conn:
                    return [(bytes(body), event_id, reason) for body, event_id, reason in
                            conn.execute(sa.select(events.c.body, events.c.event_id,
                                                   events.c.reject_reason).where(
                                events.c.position > head,  # not the recorder's own messages:
                                sa.or_(events.c.namespace.is_(None),
                                       events.c.namespace != "swf-recorder")))]

            wait_for(lambda: len(rows()) >= len(bodies), "every message stored", 60)
            stored = rows()
            assert cluster.alive("recorder"), cluster.log_text()
            assert sorted(body for body, _, _ in stored) == sorted(bodies)  # each once, intact
            valid_ids = sorted(event_id for _, event_id, reason in stored if reason is None)
            assert valid_ids == sorted(good)
            rejected = [reason for _, _, reason in stored if reason is not None]
            assert len(rejected) == MALFORMED and all(rejected)
            with EventStore(cluster.db_url) as reader:
                Projector(reader).catch_up()
                assert [run["run_number"] for run in queries.runs(reader, namespace="fuzz")] \
                    == sorted(runs)
            for command in (["query", "runs"], ["query", "rejected", "--limit", "5"],
                            ["query", "execution", "fuzz-0001"]):
                shown = cluster.swf(*command)
                assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
            cluster.kill("recorder", signal.SIGTERM)
            assert cluster.procs["recorder"].returncode == 0
        finally:
            cluster.stop_all()
    print(f"\n(e) STOMP fuzz on {store}: {len(bodies)} messages ({MALFORMED} malformed, "
          f"{len(good)} valid) stored once each: {len(stored) - len(rejected)} valid, "
          f"{len(rejected)} rejected with a reason; {summary(cluster, 'recorder')}")


@contextmanager
def _nothing() -> Iterator[str]:
    yield ""
