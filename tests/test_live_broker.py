"""Live mode on a real ActiveMQ broker: `swf record` and every agent in its own process, runs
started with `swf run --broker`, and the failures the live mode must survive.

One broker serves the module, and one set of processes per store (SQLite, then PostgreSQL);
each test runs one execution on them and checks it against the same execution run embedded
(same ids, start time, config and seed), re-drives it (`swf-replay ID --agents`: no
divergence), and holds every message the agents' processes say the broker confirmed against the
store: none lost, none stored twice. Waits are on real conditions (the store, the processes'
audit files), bounded.
"""

from __future__ import annotations

import signal
import time
import uuid
from contextlib import ExitStack
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from conftest import fresh_pg_schema

from eventstore.envelope import SLICE_QUEUE, TOPIC
from eventstore.schema import events

pytest.register_assert_rewrite("broker")
from broker import (  # noqa: E402
    FAST,
    Cluster,
    allocation_of,
    assert_redrives_clean,
    decisions,
    embedded_twin,
    projected,
    publish,
    stored_ids,
    wait_for,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]
pytest_plugins = ["broker"]  # the module-scoped ``broker`` fixture

AGENTS = ("daq", "data", "fastmon", "fast_processing", "worker")
SEED = 7


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres",
                                                              marks=pytest.mark.postgres)])
def cluster(request, broker, tmp_path_factory):
    with ExitStack() as stack:
        db_url = stack.enter_context(fresh_pg_schema()) if request.param == "postgres" else ""
        # Names of their own per store: the broker keeps each durable subscription's
        # backlog, which must not reach the other store's processes.
        user = "tester" if not db_url else "tester_pg"
        cluster = Cluster(broker, tmp_path_factory.mktemp(f"live-{request.param}"),
                          db_url=db_url, user=user, recorder_name=f"swf-recorder-{user}")
        stack.callback(cluster.stop_all)
        cluster.start_recorder()
        cluster.start_agents(AGENTS)
        yield cluster


def settings(options: tuple[str, ...]) -> list[str]:
    return [part for option in options for part in ("--set", option)]


def start_run(cluster: Cluster, options: tuple[str, ...]) -> tuple[Any, str]:
    """``swf run --broker`` in the background, and the id of the execution it started."""
    head = cluster.store.head()
    proc = cluster.run("--seed", str(SEED), *settings(options))
    columns = events.c

    def started() -> str | None:
        with cluster.store.engine.connect() as conn:
            return conn.execute(sa.select(columns.execution_id).where(
                columns.position > head, columns.msg_type == "run_imminent")).scalar()

    return proc, wait_for(started, "the run to start")


def count(cluster: Cluster, execution_id: str, msg_type: str) -> int:
    return len(stored_ids(cluster.store.engine, execution_id=execution_id, msg_type=msg_type))


def twin_of(cluster: Cluster, execution_id: str, options: tuple[str, ...], tmp_path) -> Any:
    return embedded_twin(tmp_path / f"twin-{uuid.uuid4().hex[:6]}.db",
                         allocation_of(cluster.store, execution_id), *options, seed=SEED,
                         user=cluster.user)


def assert_sent_stored_once(cluster: Cluster) -> tuple[int, int]:
    """Every message an agent sent (the broker confirmed it) is in the store exactly once;
    returns (distinct msg_ids sent, rows stored for them)."""
    sent = set(cluster.sent())
    assert sent

    def all_stored() -> bool:
        return not sent - set(_stored(cluster, sent))

    wait_for(all_stored, "every sent message to be stored")
    stored = _stored(cluster, sent)
    assert len(stored) == len(set(stored)) == len(sent)
    return len(sent), len(stored)


def _stored(cluster: Cluster, ids: set[str]) -> list[str]:
    found: list[str] = []
    chunk = list(ids)
    with cluster.store.engine.connect() as conn:
        for start in range(0, len(chunk), 500):
            found += conn.execute(sa.select(events.c.event_id).where(
                events.c.event_id.in_(chunk[start:start + 500]))).scalars().all()
    return found


def _logged(cluster: Cluster, text: str) -> int:
    """How many times the cluster's processes logged ``text`` so far."""
    return sum(path.read_text(errors="replace").count(text)
               for path in cluster.root.glob("*.log"))


def assert_all_alive(cluster: Cluster) -> None:
    dead = [name for name in ("recorder", *AGENTS) if not cluster.alive(name)]
    assert not dead, f"processes died: {dead}\n{cluster.log_text()}"


def test_every_agent_in_its_own_process_matches_the_embedded_run(cluster, tmp_path) -> None:
    summary = cluster.finish(cluster.run("--seed", str(SEED), *settings(FAST)))
    assert summary["status"] == "completed", cluster.log_text()
    assert (summary["stf_count"], summary["slices_completed"]) == (10, 150)
    execution = summary["execution_id"]
    twin = twin_of(cluster, execution, FAST, tmp_path)
    assert projected(cluster.store, execution) == projected(twin, execution)
    assert decisions(cluster.store, execution) == decisions(twin, execution)
    assert_redrives_clean(cluster.store, execution)
    assert_sent_stored_once(cluster)
    from projections import queries

    agents = {row["name"]: row for row in queries.agents(cluster.store,
                                                         namespace="torre2")}
    pids = {cluster.procs[name].pid for name in AGENTS}
    mine = f"-agent-{cluster.user}"
    assert {row["pid"] for row in agents.values() if row["name"].endswith(mine)} == pids
    twin.close()


def test_a_recorder_killed_again_and_again_loses_nothing(cluster, tmp_path) -> None:
    long = (*FAST, "fast_processing.stf_count=30")  # 450 slices: time for five kills
    proc, execution = start_run(cluster, long)
    kills = 5
    for kill in range(kills):
        wait_for(lambda n=kill: count(cluster, execution, "slice_result") >= 30 * (n + 1),
                 "progress in the store", 60)
        assert proc.poll() is None, "the run ended before the recorder was killed 5 times"
        cluster.kill("recorder", signal.SIGKILL)
        sent = len(cluster.sent())
        wait_for(lambda n=sent: len(cluster.sent()) >= n + 10,
                 "the agents to go on sending while the recorder is down")
        cluster.start_recorder()
    summary = cluster.finish(proc)
    assert summary["status"] == "completed", cluster.log_text()
    twin = twin_of(cluster, execution, long, tmp_path)
    # The recorder's deaths change nothing the agents decide, nor their order.
    assert decisions(cluster.store, execution) == decisions(twin, execution)
    assert projected(cluster.store, execution) == projected(twin, execution)
    assert_redrives_clean(cluster.store, execution)
    sent, stored = assert_sent_stored_once(cluster)
    print(f"\n(a) recorder SIGKILLed {kills} times during run {execution} "
          f"({summary['slices_completed']} slices) on {cluster.store.backend}: {sent} msg_ids "
          f"in the agents' sent logs, {stored} stored, each exactly once")
    twin.close()


def test_a_broker_restart_mid_run_is_survived(cluster, broker, tmp_path) -> None:
    proc, execution = start_run(cluster, FAST)
    wait_for(lambda: count(cluster, execution, "tf_file_registered") >= 3, "three samples")
    before = count(cluster, execution, "slice_result")
    lost = _logged(cluster, "lost connection")
    restart = time.monotonic()
    broker.restart()
    down = time.monotonic() - restart
    summary = cluster.finish(proc)
    assert summary["status"] == "completed", cluster.log_text()
    assert_all_alive(cluster)
    twin = twin_of(cluster, execution, FAST, tmp_path)
    assert decisions(cluster.store, execution) == decisions(twin, execution)
    assert projected(cluster.store, execution) == projected(twin, execution)
    assert_redrives_clean(cluster.store, execution)
    sent, stored = assert_sent_stored_once(cluster)
    reconnects = _logged(cluster, "lost connection") - lost
    print(f"\n(c) broker restarted ({down:.1f} s) during run {execution} on "
          f"{cluster.store.backend} after {before} of {summary['slices_completed']} slice "
          f"results: run {summary['status']}; {sent} msg_ids in the agents' sent logs, "
          f"{stored} stored, each exactly once; {reconnects} lost connections logged")
    twin.close()


def test_malformed_and_foreign_messages_change_nothing(cluster, broker, tmp_path) -> None:
    proc, execution = start_run(cluster, FAST)
    wait_for(lambda: count(cluster, execution, "stf_ready") >= 2, "the run to be under way")
    run_id = allocation_of(cluster.store, execution).run_id
    tag = uuid.uuid4().hex[:8]
    not_json = f"not JSON {tag} {{".encode()
    bad_types = orjson.dumps({"msg_type": "stf_gen", "msg_id": f"types-{tag}",
                              "namespace": "torre2", "execution_id": execution,
                              "run_id": run_id, "sender": "intruder", "filename": 42})
    unknown = orjson.dumps({"msg_type": "no_such_type", "msg_id": f"unknown-{tag}",
                            "namespace": "torre2", "run_id": run_id})
    binary = b"\x00\xff slice? " + tag.encode()
    foreign_end = orjson.dumps({"msg_type": "end_run", "msg_id": f"foreign-{tag}",
                                "namespace": "elsewhere", "execution_id": execution,
                                "run_id": run_id, "sender": "intruder",
                                "total_stf_files": 0})
    foreign_slice = orjson.dumps({"msg_type": "slice", "msg_id": f"foreign-slice-{tag}",
                                  "namespace": "elsewhere", "run_id": run_id,
                                  "slice_id": 0, "tf_filename": "x.tf", "start": 0, "end": 1})
    publish(broker.url, [(TOPIC, not_json), (TOPIC, bad_types), (TOPIC, unknown),
                         (SLICE_QUEUE, binary), (TOPIC, foreign_end),
                         (SLICE_QUEUE, foreign_slice)])
    summary = cluster.finish(proc)
    assert summary["status"] == "completed", cluster.log_text()
    assert_all_alive(cluster)
    with cluster.store.engine.connect() as conn:
        rows = {bytes(row.body): row for row in conn.execute(sa.select(
            events.c.body, events.c.event_id, events.c.reject_reason, events.c.namespace,
            events.c.destination).where(events.c.body.in_(
                [not_json, bad_types, unknown, binary, foreign_end, foreign_slice])))}
    assert len(rows) == 6  # each stored, byte for byte
    for body in (not_json, bad_types, unknown, binary):
        assert rows[body].reject_reason, body
    assert "not JSON" in rows[not_json].reject_reason
    assert rows[not_json].event_id.startswith("broker:")  # no msg_id: the broker's id
    assert "filename" in rows[bad_types].reject_reason
    assert "unknown msg_type" in rows[unknown].reject_reason
    assert rows[binary].destination == SLICE_QUEUE  # the monitor copy, under the queue's name
    assert rows[foreign_end].reject_reason is None and rows[foreign_end].namespace == "elsewhere"
    assert rows[foreign_slice].destination == SLICE_QUEUE
    assert any("stf_gen" in error for error in summary["errors"])  # the rejected one is shown
    twin = twin_of(cluster, execution, FAST, tmp_path)
    assert projected(cluster.store, execution, "torre2") == projected(twin, execution)
    assert decisions(cluster.store, execution) == decisions(twin, execution)
    assert_redrives_clean(cluster.store, execution)
    # The foreign messages made rows of their own namespace, and only there.
    foreign = projected(cluster.store, execution, "elsewhere")
    assert [row["phase"] for row in foreign["runs"]] == ["completed"]
    assert len(foreign["slices"]) == 1
    twin.close()


def test_an_agent_killed_mid_run_resumes_from_the_store(cluster, tmp_path) -> None:
    proc, execution = start_run(cluster, FAST)
    wait_for(lambda: count(cluster, execution, "slice") >= 45, "three samples sliced")
    cluster.kill("fast_processing", signal.SIGKILL)
    samples = count(cluster, execution, "tf_file_registered")
    wait_for(lambda: count(cluster, execution, "tf_file_registered") >= samples + 2,
             "samples to arrive while it is down")
    cluster.start_agent("fast_processing")
    summary = cluster.finish(proc)
    assert summary["status"] == "completed", cluster.log_text()
    twin = twin_of(cluster, execution, FAST, tmp_path)
    assert decisions(cluster.store, execution) == decisions(twin, execution)
    assert projected(cluster.store, execution) == projected(twin, execution)
    assert_redrives_clean(cluster.store, execution)
    assert_sent_stored_once(cluster)
    twin.close()


def test_swf_stop_ends_a_live_run_and_swf_status_sees_it_running(cluster, tmp_path) -> None:
    long = (*FAST, "fast_processing.stf_count=40")  # 33 s unless stopped: time to stop it
    proc, execution = start_run(cluster, long)
    wait_for(lambda: count(cluster, execution, "stf_gen") >= 2, "two STFs")
    status = cluster.swf("status", "--json")
    assert status.returncode == 0, status.stderr
    report = orjson.loads(status.stdout)
    ours = {row["name"]: row for row in report["agents"]
            if row["name"].endswith(f"-agent-{cluster.user}")}
    assert len(ours) == len(AGENTS) and {row["state"] for row in ours.values()} == {"alive"}
    assert execution in {row["execution_id"] for row in report["open_executions"]}
    recording = report["recording"]
    assert recording["sampled"] > 0 and 0 <= recording["lag_max_s"] < 5  # broker -> store
    stopped = cluster.swf("stop", execution)
    assert stopped.returncode == 0 and "sent to the broker" in stopped.stderr, stopped.stderr
    summary = cluster.finish(proc)
    assert summary["status"] == "terminated", cluster.log_text()
    assert 2 <= summary["stf_count"] < 40
    (stop,) = [event.body for event in cluster.store.read(execution_id=execution,
                                                          msg_types=["stop_workflow"])]
    twin = embedded_twin(tmp_path / f"twin-{uuid.uuid4().hex[:6]}.db",
                         allocation_of(cluster.store, execution), *long, seed=SEED,
                         user=cluster.user, inputs=(stop,))
    assert decisions(cluster.store, execution) == decisions(twin, execution)
    assert projected(cluster.store, execution) == projected(twin, execution)
    assert_redrives_clean(cluster.store, execution)
    assert_sent_stored_once(cluster)
    twin.close()


def test_a_run_no_daq_agent_takes_fails_naming_it(cluster) -> None:
    began = time.monotonic()
    done = cluster.swf("run", "--broker", cluster.broker.url, "--user", "nobody",
                       "--start-timeout", "4", *settings(FAST))
    assert time.monotonic() - began < 30
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert "warning: no live daq_simulator-agent-nobody in namespace torre2 (never heard " \
           "of): start `swf agent daq`" in lines
    assert lines[-1].startswith("Error: no daq agent took fast_processing-nobody-0001 within "
                                "4 s: daq_simulator-agent-nobody is not running on ")
