"""The live agent host on the in-process bus (no broker): real time, own messages, redelivery,
ack after recording, resume from the store after a restart, logs and heartbeats. The hosts and
the bus are the ones `swf agent` uses; only the transport differs. The runs are checked against
the same execution run embedded, and re-driven (`swf-replay ID --agents`), on SQLite and on
PostgreSQL."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from agents.base import Agent, Output, Send, shift
from agents.config import load_workflow
from agents.live import LiveDaq, LiveHost, request_run
from agents.registry import create_adapter, create_agent, workflow_agents
from agents.transport.memory import MemoryBroker
from eventstore.envelope import TOPIC, Event, utc_now
from eventstore.store import EventStore

pytest.register_assert_rewrite("broker")
from broker import (  # noqa: E402
    allocation_of,
    assert_redrives_clean,
    decisions,
    embedded_twin,
    outline,
    projected,
    stored_ids,
    wait_for,
)

USER = "tester"
SEED = 7
# A 4 s run.
FAST = ("daq.stf_interval=0.35", "daq.imminent_delay=0.1",
        "fast_processing.slice_processing_time=0.15")
NS = "torre2"


class Bus:
    """Live hosts of a workflow's agents on one in-process bus that records into ``store``."""

    def __init__(self, store: EventStore, data_dir: Path) -> None:
        self.store = store
        self.data_dir = data_dir
        self.broker = MemoryBroker(store)
        self.hosts: dict[str, LiveHost] = {}
        self.client = self.broker.transport()
        self.client.start()

    def start(self, agent_type: str) -> LiveHost:
        name = f"{agent_type}-agent-{USER}"
        if agent_type == "daq_simulator":
            agent: Agent = LiveDaq(name, NS)
        else:
            agent = create_agent(agent_type, name, NS)
        host = LiveHost(agent, self.broker.transport(f"swf.{name}"), self.store,
                        lambda adapter, params: create_adapter(adapter, self.data_dir, params),
                        heartbeat_interval=1.0)
        host.start()
        assert host.wait_ready(5)
        self.hosts[agent_type] = host
        return host

    def start_all(self, config: Any) -> None:
        for agent_type in workflow_agents(config.enabled):
            self.start(agent_type)

    def stop(self, agent_type: str) -> None:
        self.hosts.pop(agent_type).stop()

    def close(self) -> None:
        for agent_type in list(self.hosts):
            self.stop(agent_type)

    def finished(self, execution_id: str) -> dict[str, Any]:
        from projections import Projector, queries

        def done() -> dict[str, Any] | None:
            Projector(self.store).catch_up()
            summary = queries.execution_summary(self.store, execution_id)
            return summary if summary and summary["status"] != "running" else None

        return wait_for(done, f"execution {execution_id} to finish", every=0.1)


@pytest.fixture
def bus(db_url, tmp_path):
    store = EventStore(db_url)
    bus = Bus(store, tmp_path / "data")
    yield bus
    bus.close()
    store.close()


def count(store: EventStore, msg_type: str, execution_id: str) -> int:
    return sum(1 for _ in store.read(execution_id=execution_id, msg_types=[msg_type]))


@pytest.mark.slow
def test_live_hosts_match_the_embedded_run_in_real_time(bus, tmp_path) -> None:
    config = load_workflow("fast_processing", FAST)
    bus.start_all(config)
    allocation = request_run(bus.client, bus.store, config, seed=SEED, user=USER)
    summary = bus.finished(allocation.execution_id)
    assert summary["status"] == "completed" and summary["slices_completed"] == 150
    twin = embedded_twin(tmp_path / "twin.db", allocation_of(bus.store, allocation.execution_id),
                         *FAST, seed=SEED, user=USER)
    assert projected(bus.store, allocation.execution_id) == \
        projected(twin, allocation.execution_id)
    assert decisions(bus.store, allocation.execution_id) == \
        decisions(twin, allocation.execution_id)
    assert_redrives_clean(bus.store, allocation.execution_id)
    # Real time: nothing was published before its time (the bus records at publication).
    early = [event for event in bus.store.read(execution_id=allocation.execution_id)
             if event.sent_at and event.recorded_at < event.sent_at]
    assert early == []
    twin.close()


@pytest.mark.slow
def test_a_restarted_fast_processing_agent_resumes_its_run(bus, tmp_path) -> None:
    config = load_workflow("fast_processing", FAST)
    bus.start_all(config)
    allocation = request_run(bus.client, bus.store, config, seed=SEED, user=USER)
    execution = allocation.execution_id
    wait_for(lambda: count(bus.store, "slice", execution) >= 45, "three samples sliced")
    bus.stop("fast_processing")  # slices, results and samples pile up meanwhile
    wait_for(lambda: count(bus.store, "tf_file_registered", execution) >= 6, "more samples")
    host = bus.start("fast_processing")
    assert host.stats.replayed > 0
    assert bus.finished(execution)["status"] == "completed"
    twin = embedded_twin(tmp_path / "twin.db", allocation_of(bus.store, execution), *FAST,
                         seed=SEED, user=USER)
    # the restart changes nothing decided: same messages, same rows (workers included)
    assert decisions(bus.store, execution) == decisions(twin, execution)
    assert projected(bus.store, execution) == projected(twin, execution)
    assert_redrives_clean(bus.store, execution)
    twin.close()


@pytest.mark.slow
def test_a_restarted_daq_sends_the_rest_of_its_schedule(bus, tmp_path) -> None:
    config = load_workflow("fast_processing", FAST)
    bus.start_all(config)
    allocation = request_run(bus.client, bus.store, config, seed=SEED, user=USER)
    execution = allocation.execution_id
    wait_for(lambda: count(bus.store, "stf_gen", execution) >= 3, "three STFs")
    bus.stop("daq_simulator")
    host = bus.start("daq_simulator")
    assert host.stats.resent > 0  # the part of the schedule not yet in the store
    assert bus.finished(execution)["status"] == "completed"
    assert count(bus.store, "stf_gen", execution) == 10
    twin = embedded_twin(tmp_path / "twin.db", allocation_of(bus.store, execution), *FAST,
                         seed=SEED, user=USER)
    assert decisions(bus.store, execution) == decisions(twin, execution)
    assert projected(bus.store, execution) == projected(twin, execution)
    assert_redrives_clean(bus.store, execution)
    twin.close()


@pytest.mark.slow
def test_a_stop_ends_the_live_run_early_and_a_restarted_daq_keeps_to_it(bus, tmp_path) -> None:
    """``swf stop``'s message on the bus: the DAQ ends the run at the stop's time and withdraws
    the rest of its schedule, also after a restart (rebuilt from the store); the execution is
    terminated, and exactly what the same stop does to the embedded run."""
    options = (*FAST, "fast_processing.stf_count=30")  # 11 s unless stopped: time to stop it
    config = load_workflow("fast_processing", options)
    bus.start_all(config)
    allocation = request_run(bus.client, bus.store, config, seed=SEED, user=USER)
    execution = allocation.execution_id
    wait_for(lambda: count(bus.store, "stf_gen", execution) >= 2, "two STFs")
    stop = orjson.dumps({"msg_type": "stop_workflow", "msg_id": f"stop-{execution}",
                         "namespace": NS, "execution_id": execution, "sender": "swf-stop",
                         "timestamp": shift(utc_now(), 2.0), "source": "swf stop"})
    bus.client.send([(TOPIC, stop, None)])
    wait_for(lambda: count(bus.store, "stop_workflow", execution), "the stop to be stored")
    bus.stop("daq_simulator")  # the stop is its decision state now: kept across a restart
    bus.start("daq_simulator")
    summary = bus.finished(execution)
    assert summary["status"] == "terminated", summary["errors"]
    assert 2 <= summary["stf_count"] < 30
    (end,) = bus.store.read(execution_id=execution, msg_types=["end_run"])
    assert end.data["reason"] and end.data["total_stf_files"] == summary["stf_count"]
    twin = embedded_twin(tmp_path / "twin.db", allocation_of(bus.store, execution), *options,
                         seed=SEED, user=USER, inputs=(stop,))
    assert decisions(bus.store, execution) == decisions(twin, execution)
    assert projected(bus.store, execution) == projected(twin, execution)
    assert_redrives_clean(bus.store, execution)
    twin.close()


# -- the host's rules, with a probe agent ---------------------------------------------------------


@dataclass
class Probe(Agent):
    """Counts what it handles; on ``start_run`` answers with a message due ``delay`` later; on
    ``pause_run`` logs a warning; on ``resume_run`` fails."""

    agent_type: ClassVar[str] = "probe"
    delay: float = 0.3
    handled: list[str] = field(default_factory=list)

    def handle(self, event: Event) -> list[Output]:
        self.handled.append(event.event_id)
        if event.msg_type == "start_run":
            return [Send(self.message("end_run", event, time=shift(event.time, self.delay),
                                      total_stf_files=0))]
        if event.msg_type == "pause_run":
            logging.getLogger("swf.agent.probe").warning("paused: %s", event.event_id)
        if event.msg_type == "resume_run":
            raise RuntimeError("cannot resume")
        return []


def message(msg_type: str, msg_id: str, namespace: str = NS, **payload: Any) -> bytes:
    return orjson.dumps({"msg_type": msg_type, "msg_id": msg_id, "namespace": namespace,
                         "execution_id": "e-1", "run_id": 1, "sender": "tester",
                         "timestamp": utc_now(), **payload})


@pytest.fixture
def probe(tmp_path):
    store = EventStore(f"sqlite:///{tmp_path / 'probe.db'}")
    broker = MemoryBroker(store)
    agent = Probe("probe-1", NS)
    host = LiveHost(agent, broker.transport("swf.probe-1"), store, {}, heartbeat_interval=60.0)
    host.start()
    assert host.wait_ready(5)
    yield broker, host, agent, store
    host.stop()
    store.close()


def test_a_send_due_later_is_published_when_its_time_comes(probe) -> None:
    broker, host, agent, store = probe
    broker.publish(TOPIC, message("start_run", "go"))
    answer = wait_for(lambda: list(store.read(msg_types=["end_run"])), "the delayed answer")[0]
    (cause,) = store.read(msg_types=["start_run"])
    assert answer.sent_at == shift(cause.sent_at, agent.delay)
    assert answer.recorded_at >= answer.sent_at  # published at its time, not before
    assert answer.event_id in agent.handled  # and handed back to its sender


def test_a_redelivered_message_is_handled_once(probe) -> None:
    broker, host, agent, store = probe
    broker.publish(TOPIC, message("stf_gen", "twice", filename="a.stf"))
    broker.publish(TOPIC, message("stf_gen", "twice", filename="a.stf"))
    broker.publish(TOPIC, message("stf_gen", "marker", filename="b.stf"))
    wait_for(lambda: "marker" in agent.handled, "the deliveries to be handled (in order)")
    assert agent.handled.count("twice") == 1


def test_acks_wait_for_the_record_and_ignored_messages_go_at_once(tmp_path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'acks.db'}")
    broker = MemoryBroker()  # records nothing: the test plays the recorder
    agent = Probe("probe-1", NS)
    transport = broker.transport("swf.probe-1")
    host = LiveHost(agent, transport, store, {}, heartbeat_interval=60.0)
    host.start()
    try:
        body = message("stf_gen", "kept", filename="a.stf")
        broker.publish(TOPIC, body)
        broker.publish(TOPIC, message("stf_gen", "other", namespace="elsewhere",
                                      filename="b.stf"))
        broker.publish(TOPIC, b"not json")
        wait_for(lambda: host.stats.acked == 2, "the ignored messages to be acked")
        assert agent.handled == ["kept"]
        (sub,) = broker._topics[TOPIC]

        def unacked() -> list[bytes]:
            return [m.body for m in list(sub.unacked.values()) if m.body == body]

        assert unacked() == [body]  # handled, but not in the store yet
        from eventstore.envelope import Incoming

        store.append([Incoming(TOPIC, body)])
        wait_for(lambda: not unacked(), "the recorded message to be acked")
    finally:
        host.stop()
        store.close()


def test_warnings_and_failures_become_agent_logs_and_the_host_goes_on(probe) -> None:
    broker, host, agent, store = probe
    broker.publish(TOPIC, message("pause_run", "p"))
    broker.publish(TOPIC, message("resume_run", "r"))
    broker.publish(TOPIC, message("stf_gen", "after", filename="a.stf"))
    logs = wait_for(lambda: [e.data for e in store.read(msg_types=["agent_log"])
                             if e.sender == "probe-1"] if "after" in agent.handled else None,
                    "both logs")
    levels = sorted((log["level"], log["execution_id"]) for log in logs)
    assert levels == [("ERROR", "e-1"), ("WARNING", "e-1")]
    assert any("cannot resume" in log["message"] for log in logs)
    assert host.stats.errors == 1


def test_heartbeats_carry_the_process_and_say_exited_at_stop(tmp_path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'beats.db'}")
    broker = MemoryBroker(store)
    host = LiveHost(Probe("probe-1", NS), broker.transport("swf.probe-1"), store, {},
                    heartbeat_interval=0.1)
    host.start()
    wait_for(lambda: len(list(store.read(msg_types=["agent_heartbeat"]))) >= 3, "heartbeats")
    host.stop()
    beats = [event.data for event in store.read(msg_types=["agent_heartbeat"])]
    assert {(b["pid"], b["hostname"]) for b in beats} == {(os.getpid(), socket.gethostname())}
    assert beats[0]["operational_state"] == "READY"
    assert beats[-1]["operational_state"] == "EXITED"
    assert all(b["timestamp"] <= e.recorded_at for b, e in
               zip(beats, store.read(msg_types=["agent_heartbeat"]), strict=True))
    store.close()


@pytest.mark.slow
def test_open_executions_are_those_without_run_processed(bus) -> None:
    config = load_workflow("fast_processing", FAST)
    assert bus.store.open_executions(NS) == []
    bus.start_all(config)
    allocation = request_run(bus.client, bus.store, config, seed=SEED, user=USER)
    assert bus.store.open_executions(NS) == [allocation.execution_id]
    bus.finished(allocation.execution_id)
    assert bus.store.open_executions(NS) == []
    assert stored_ids(bus.store.engine, msg_type="run_processed")
    assert_redrives_clean(bus.store, allocation.execution_id)


@pytest.mark.slow
def test_a_host_started_after_the_run_replays_nothing(bus) -> None:
    config = load_workflow("fast_processing", FAST)
    bus.start_all(config)
    allocation = request_run(bus.client, bus.store, config, seed=SEED, user=USER)
    bus.finished(allocation.execution_id)
    bus.stop("fast_processing")
    host = bus.start("fast_processing")  # the execution is finished: nothing to resume
    assert (host.stats.replayed, host.stats.resent) == (0, 0)
    assert_redrives_clean(bus.store, allocation.execution_id)


@pytest.mark.slow
def test_prompt_processing_runs_live_with_timed_polls(bus, tmp_path) -> None:
    options = ("daq.stf_interval=0.2", "daq.imminent_delay=0.1", "processing.poll_interval=1")
    config = load_workflow("prompt_processing", options)
    bus.start_all(config)
    allocation = request_run(bus.client, bus.store, config, seed=SEED, user=USER)
    summary = bus.finished(allocation.execution_id)
    assert summary["status"] == "completed", summary["errors"]
    assert [(d["state"], d["file_count"]) for d in summary["datasets"]] == [("closed", 5)]
    assert [task["status"] for task in summary["tasks"]] == ["finished"]
    twin = embedded_twin(tmp_path / "twin.db", allocation_of(bus.store, allocation.execution_id),
                         *options, seed=SEED, user=USER, workflow="prompt_processing")
    assert_redrives_clean(bus.store, allocation.execution_id)
    live_kinds = outline(bus.store, allocation.execution_id)[1]
    twin_kinds = outline(twin, allocation.execution_id)[1]
    polls = "panda_task_status"  # how many polls it takes depends on the executor's pace
    assert {k: v for k, v in live_kinds.items() if k != polls} == \
        {k: v for k, v in twin_kinds.items() if k != polls}
    twin.close()


def test_recent_ids_forget_the_oldest_half_beyond_their_limit() -> None:
    from agents.live import RecentIds

    recent = RecentIds(limit=10)
    recent.update(str(i) for i in range(11))
    assert len(recent) == 6 and "0" not in recent and "10" in recent and "5" in recent


def test_a_store_outage_is_told_once_and_acks_resume_after_it(tmp_path, caplog) -> None:
    """While the store cannot be asked, acks are held and the agent says so once (not at every
    poll, 20 times a second); when it answers again, it says so and acks what it holds."""
    import logging
    import threading

    from eventstore.envelope import Incoming

    store = EventStore(f"sqlite:///{tmp_path / 'outage.db'}")
    broker = MemoryBroker()  # records nothing: the test plays the recorder
    host = LiveHost(Probe("probe-1", NS), broker.transport("swf.probe-1"), store, {},
                    heartbeat_interval=60.0)
    failing, polls = threading.Event(), []
    real = store.stored_ids

    def stored_ids(ids):  # noqa: ANN001, ANN202
        if failing.is_set():
            polls.append(1)
            raise RuntimeError("database is unavailable\nsecond line")
        return real(ids)

    store.stored_ids = stored_ids  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING, logger="swf.live")
    host.start()
    try:
        assert host.wait_ready(5)
        failing.set()
        body = message("stf_gen", "held", filename="a.stf")
        broker.publish(TOPIC, body)
        wait_for(lambda: len(polls) >= 5, "several polls of the unavailable store")
        assert host.stats.acked == 0
        store.append([Incoming(TOPIC, body)])
        failing.clear()
        wait_for(lambda: host.stats.acked == 1, "the recorded message to be acked")
    finally:
        host.stop()
        store.close()
    told = [r.getMessage() for r in caplog.records if "store" in r.getMessage()]
    assert told == ["probe-1: cannot check the store (database is unavailable); acks are held "
                    "until it answers", "probe-1: the store answers again; acking what it holds"]
