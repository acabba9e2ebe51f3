"""The embedded runtime: ordering, store-before-delivery, queues, commands, heartbeats, logs,
injection, id and time allocation from the store, realtime pacing."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import runtime as runtime_module
from agents.base import Adapter, Agent, Command, Output, Send, shift
from agents.config import load_workflow
from agents.runtime import EmbeddedRuntime, allocate, prepare
from eventstore.envelope import RESULT_QUEUE, SLICE_QUEUE, TOPIC, Event
from eventstore.store import EventStore

T0 = "2026-01-01T00:00:00.000000Z"
NS = "test"


@pytest.fixture
def store(sqlite_url):
    with EventStore(sqlite_url) as opened:
        yield opened


def msg(msg_type: str, msg_id: str, time: str = T0, run_id: int = 1, **payload: Any
        ) -> dict[str, Any]:
    return {"msg_type": msg_type, "msg_id": msg_id, "namespace": NS, "execution_id": "e-1",
            "run_id": run_id, "sender": "tester", "timestamp": time, **payload}


@dataclass
class Recorder(Agent):
    """Records what it is handed (and the store head at that moment); reacts as told."""

    agent_type: ClassVar[str] = "recorder"
    subscriptions: ClassVar[tuple[str, ...]] = (TOPIC,)
    store: Any = None
    react: Any = None
    seen: list[tuple[str, str, str, int]] = field(default_factory=list)

    def handle(self, event: Event) -> list[Output]:
        head = self.store.head() if self.store is not None else 0
        self.seen.append((event.msg_type or "", event.event_id, event.time, head - event.position))
        return list(self.react(self, event)) if self.react else []


@dataclass
class QueueReader(Recorder):
    subscriptions: ClassVar[tuple[str, ...]] = (SLICE_QUEUE,)


class Echo(Adapter):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def execute(self, command: Command) -> dict[str, Any]:
        self.calls.append(command.params["name"])
        return {**command.reply, "status": "completed"}


def messages_of(store: EventStore) -> list[dict[str, Any]]:
    return [event.data for event in store.read() if event.data]


def test_events_are_stored_before_delivery_in_time_order(store) -> None:
    agent = Recorder("rec", NS, store=store)
    runtime = EmbeddedRuntime(store, [agent], {}, start_time=T0, heartbeat_interval=None)
    runtime.publish(msg("start_run", "b", shift(T0, 2)))
    runtime.publish(msg("run_imminent", "a", shift(T0, 1)))
    runtime.publish(msg("end_run", "c", shift(T0, 2)))
    runtime.publish(msg("pause_run", "early", "2025-01-01T00:00:00Z"))  # clamped to now
    result = runtime.run()
    handled = [(kind, eid) for kind, eid, _, _ in agent.seen if kind != "agent_heartbeat"]
    assert handled == [("pause_run", "early"), ("run_imminent", "a"), ("start_run", "b"),
                       ("end_run", "c")]
    assert all(lag >= 0 for *_, lag in agent.seen)  # the event was stored when handed over
    assert result.end_time == shift(T0, 2)
    assert result.counts["start_run"] == 1 and result.errors == 0


def test_queue_goes_to_one_consumer_and_agents_get_their_own_messages(store) -> None:
    def produce(agent: Recorder, event: Event) -> list[Output]:
        if event.msg_type != "run_imminent":
            return []
        return [Send(agent.message("slice", event, key=i, slice_id=i, tf_filename="x.tf",
                                   start=i, end=i), SLICE_QUEUE) for i in range(4)]

    producer = Recorder("producer", NS, react=produce)
    readers = [QueueReader("r1", NS), QueueReader("r2", NS)]
    runtime = EmbeddedRuntime(store, [producer, *readers], {}, heartbeat_interval=None)
    runtime.publish(msg("run_imminent", "go"))
    runtime.run()
    slices = [[eid for kind, eid, *_ in reader.seen if kind == "slice"] for reader in readers]
    assert len(slices[0]) == 2 and len(slices[1]) == 2 and not set(slices[0]) & set(slices[1])
    own = [kind for kind, *_ in producer.seen]
    assert own.count("slice") == 4  # its own queue messages come back to it
    assert sum(1 for event in store.read() if event.destination == SLICE_QUEUE) == 4


def test_commands_run_when_due_and_their_reply_is_delivered_at_that_time(store) -> None:
    adapter = Echo()

    def work(agent: Recorder, event: Event) -> list[Output]:
        if event.msg_type != "slice":
            return []
        reply = agent.message("slice_result", event, time=shift(event.time, 30),
                              slice_id=0, tf_filename="x.tf", status=None)
        return [Command("echo", "run", {"name": event.event_id}, reply=reply,
                        destination=RESULT_QUEUE, at=reply["timestamp"])]

    worker = QueueReader("worker", NS, react=work)
    runtime = EmbeddedRuntime(store, [worker], {"echo": adapter}, heartbeat_interval=None)
    runtime.publish(msg("slice", "s1", slice_id=0, tf_filename="x.tf", start=0, end=1),
                    SLICE_QUEUE)
    runtime.publish(msg("start_run", "later", shift(T0, 10)))
    runtime.run()
    assert adapter.calls == ["s1"]
    results = [m for m in messages_of(store) if m["msg_type"] == "slice_result"]
    assert [(r["status"], r["timestamp"]) for r in results] == [("completed", shift(T0, 30))]
    # the reply went to the result queue, and back to its issuer
    assert [kind for kind, *_ in worker.seen if kind != "agent_heartbeat"] == [
        "slice", "slice_result"]


def test_heartbeats_start_periodic_and_exit(store) -> None:
    agent = Recorder("rec", NS)
    runtime = EmbeddedRuntime(store, [agent], {}, execution_id="e-1", run_id=7,
                              heartbeat_interval=60.0)
    runtime.publish(msg("start_run", "a", shift(T0, 150)))
    runtime.run()
    beats = [m for m in messages_of(store) if m["msg_type"] == "agent_heartbeat"]
    assert [(b["operational_state"], b["timestamp"]) for b in beats] == [
        ("READY", T0), ("PROCESSING", shift(T0, 60)), ("PROCESSING", shift(T0, 120)),
        ("EXITED", shift(T0, 150))]
    assert {(b["pid"], b["hostname"], b["agent_type"], b["execution_id"]) for b in beats} == {
        (0, "embedded", "recorder", "e-1")}


def test_warnings_and_crashes_become_agent_logs(store) -> None:
    def moody(agent: Recorder, event: Event) -> list[Output]:
        if event.msg_type == "start_run":
            logging.getLogger("swf.agent.recorder").warning("odd %s", event.event_id)
            logging.getLogger("swf.agent.recorder").info("not recorded")
        if event.msg_type == "end_run":
            raise RuntimeError("boom")
        return []

    runtime = EmbeddedRuntime(store, [Recorder("rec", NS, react=moody)], {},
                              heartbeat_interval=None)
    runtime.publish(msg("start_run", "a", shift(T0, 5)))
    runtime.publish(msg("end_run", "b", shift(T0, 6)))
    result = runtime.run()
    logs = [m for m in messages_of(store) if m["msg_type"] == "agent_log"]
    assert [(m["level"], m["timestamp"], m["sender"]) for m in logs] == [
        ("WARNING", shift(T0, 5), "rec"), ("ERROR", shift(T0, 6), "rec")]
    assert logs[0]["message"] == "odd a"
    assert "RuntimeError: boom" in logs[1]["message"]
    assert result.errors == 1

    strict = EmbeddedRuntime(store, [Recorder("rec2", NS, react=moody)], {}, strict=True,
                             heartbeat_interval=None)
    strict.publish(msg("end_run", "c", shift(T0, 9)))
    with pytest.raises(RuntimeError, match="boom"):
        strict.run()


def test_other_namespaces_and_rejected_messages_are_stored_not_delivered(store) -> None:
    agent = Recorder("rec", NS)
    runtime = EmbeddedRuntime(store, [agent], {}, heartbeat_interval=None)
    runtime.publish({**msg("start_run", "x"), "namespace": "elsewhere"})
    runtime.publish({"msg_type": "no_such_type", "msg_id": "bad", "timestamp": T0})
    runtime.run()
    assert [kind for kind, *_ in agent.seen] == ["agent_heartbeat", "agent_heartbeat"]
    assert store.head() == 4  # both, and the agent's start and exit heartbeats


def test_ids_and_start_time_are_allocated_from_the_store(store) -> None:
    first = allocate(store, "fast_processing", "ann")
    assert first.execution_id == "fast_processing-ann-0001"
    assert first.run_id == 100001 and first.start_time == T0
    runtime = EmbeddedRuntime(store, [], {}, heartbeat_interval=None)
    runtime.publish(msg("end_run", "z", "2026-01-01T00:02:37.5Z", run_id=100001,
                        execution_id=first.execution_id) | {
                            "execution_id": first.execution_id})
    runtime.run()
    second = allocate(store, "fast_processing", "ann")
    assert second.execution_id == "fast_processing-ann-0002"
    assert second.run_id == 100002
    assert second.start_time == "2026-01-01T00:04:00.000000Z"
    assert allocate(store, "fastXprocessing", "ann").execution_id.endswith("-0001")
    assert allocate(store, "fast_processing", "ann", "2027-05-01T10:00:00+02:00").start_time \
        == "2027-05-01T08:00:00.000000Z"


def test_realtime_waits_for_the_wall_clock(store, monkeypatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(runtime_module.wallclock, "sleep", waits.append)
    runtime = EmbeddedRuntime(store, [Recorder("rec", NS)], {}, realtime=True, speed=2.0,
                              heartbeat_interval=None)
    runtime.publish(msg("start_run", "a", shift(T0, 4)))
    runtime.publish(msg("end_run", "b", shift(T0, 10)))
    runtime.run()
    assert len(waits) >= 2
    assert 1.5 < waits[0] <= 2.0 and 4.5 < waits[1] <= 5.0  # simulated seconds / speed


def test_prepare_runs_a_chosen_subset_of_agents(store, tmp_path) -> None:
    config = load_workflow("fast_processing", ["fast_processing.stf_count=2"])
    runtime = prepare(store, config, seed=3, data_dir=tmp_path, user="ann",
                      agent_types=["daq_simulator", "data"], strict=True)
    assert [agent.agent_type for agent in runtime.agents] == ["daq_simulator", "data"]
    result = runtime.run()
    assert result.execution_id == "fast_processing-ann-0001"
    assert result.counts["stf_ready"] == 2
    assert "tf_file_registered" not in result.counts


def test_messages_injected_mid_run_and_duplicates(store) -> None:
    agent = Recorder("rec", NS)
    runtime = EmbeddedRuntime(store, [agent], {}, heartbeat_interval=None)
    first = msg("start_run", "a", shift(T0, 5))

    def inject(event: Event) -> None:
        if event.event_id == "a":
            runtime.publish(first)  # redelivered: stored once, handed over once
            runtime.publish(msg("end_run", "late", shift(T0, 1)))  # in the past: now

    runtime.observe = inject
    runtime.publish(first)
    result = runtime.run()
    handled = [(eid, time) for kind, eid, time, _ in agent.seen if kind != "agent_heartbeat"]
    assert handled == [("a", shift(T0, 5)), ("late", shift(T0, 1))]
    assert result.duplicates == 1
    assert [e.event_id for e in store.read() if e.msg_type == "end_run"] == ["late"]


def test_prompt_processing_runs_in_the_embedded_runtime(store, tmp_path) -> None:
    pytest.importorskip("agents.processing")
    result = prepare(store, load_workflow("prompt_processing"), seed=1, data_dir=tmp_path,
                     user="ann", strict=True).run()
    assert [a for a in result.counts if a.startswith("run_")] == ["run_imminent", "run_processed"]
    outcomes = [e.data["status"] for e in store.read(msg_types=["run_processed"])]
    assert outcomes == ["completed"]
    assert result.counts["stf_ready"] == load_workflow("prompt_processing").get(
        "prompt_processing.stf_count")


class PerInstant:
    """The store without ``write_group``: the runtime commits every simulated instant."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name == "write_group":
            raise AttributeError(name)
        return getattr(self._store, name)


def test_grouped_commits_store_what_per_instant_commits_store(tmp_path) -> None:
    logs = []
    for name, wrap in (("grouped", lambda store: store), ("per-instant", PerInstant)):
        with EventStore(f"sqlite:///{tmp_path / name}.db") as store:
            run = prepare(wrap(store), load_workflow("fast_processing"), seed=3,
                          data_dir=tmp_path / name, strict=True).run()
            logs.append([(event.position, event.event_id, event.destination, event.body)
                         for event in store.read_raw()])
            assert run.events == len(logs[-1])
    assert logs[0] == logs[1] and len(logs[0]) > 400


def test_a_failing_run_keeps_what_it_appended(store) -> None:
    def crash(_agent: Agent, event: Event) -> list[Output]:
        if event.event_id == "b":
            raise RuntimeError("agent crash")
        return []

    runtime = EmbeddedRuntime(store, [Recorder("rec", NS, react=crash)], {}, start_time=T0,
                              heartbeat_interval=None, strict=True)
    runtime.publish(msg("run_imminent", "a", shift(T0, 1)))
    runtime.publish(msg("start_run", "b", shift(T0, 2)))
    with pytest.raises(RuntimeError):
        runtime.run()
    with EventStore(str(store.engine.url)) as other:  # committed: another connection sees them
        assert [e.event_id for e in other.read() if e.msg_type != "agent_heartbeat"] == ["a", "b"]


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.one_of(st.text(), st.integers(), st.floats(allow_nan=False), st.none()),
                      max_size=6))
def test_derived_ids_are_exactly_uuid5_of_their_parts(parts: list[object]) -> None:
    """derive_id builds uuid5's text without a UUID object: every id a run ever derived (and
    every fixture holds) must come out the same."""
    import uuid

    from agents.base import _ID_NAMESPACE, derive_id

    assert derive_id(*parts) == str(uuid.uuid5(_ID_NAMESPACE, "\x1f".join(map(str, parts))))
