"""``swf record`` at start: what it records, the probes that prove each work queue is copied to the
topic it records it from, the ready signal, and the recorders in ``swf status``. On the real
broker: with deploy/activemq/activemq.xml the probes pass; on a broker without one queue's copy
``swf record`` fails within 30 s naming that queue, unless told to record topics only."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.recorder_probe import NAMESPACE, heartbeat_message, probe_message
from agents.transport.broker import Delivery, recorded_destination
from agents.transport.destinations import (
    DEFAULT_DESTINATIONS,
    DestinationError,
    copy_configuration,
    copy_topic,
    queue_of,
    recording,
)
from eventstore.catalog import examine
from eventstore.envelope import RESULT_QUEUE, SLICE_QUEUE, TOPIC

pytest.register_assert_rewrite("broker")
from broker import (  # noqa: E402
    BROKER_SH,
    Cluster,
    publish,
    running_broker,
    stored_ids,
    wait_for,
)

pytest_plugins = ["broker"]  # the module-scoped ``broker`` fixture
CONTROL = "/queue/workflow_control"
TRANSFORMER = "/queue/panda.slices.transformer"  # upstream's transformer heart-beats on it
QUEUES = (SLICE_QUEUE, RESULT_QUEUE, TRANSFORMER, CONTROL)

# -- the destinations ------------------------------------------------------------------------------


def test_the_default_list_records_our_and_upstreams_destinations() -> None:
    plan = recording()
    assert plan.topics == (TOPIC, "/topic/panda.workers", "/topic/panda.slices",
                           "/topic/panda.results", "/topic/panda.transformer")
    assert plan.queues == QUEUES
    assert set(plan.subscriptions) == {*plan.topics, "/topic/monitor.panda.transformer.slices",
                                       "/topic/monitor.panda.results.fastprocessing",
                                       "/topic/monitor.panda.slices.transformer",
                                       "/topic/monitor.workflow_control"}
    more = recording(["/queue/canary.ops", "/topic/x", TOPIC, "/queue/canary.ops"])
    assert more.queues == (*plan.queues, "/queue/canary.ops") and more.topics[-1] == "/topic/x"
    assert recording(["/queue/canary.ops"], topics_only=True) == recording(topics_only=True)
    assert recording(topics_only=True).queues == ()
    for bad in ("epictopic", "/topic/", "/queue/a.>", "/topic/monitor.panda.slices",
                "/temp-queue/x"):
        with pytest.raises(DestinationError):
            recording([bad])


def test_a_copy_is_stored_under_its_queue_and_the_missing_configuration_is_spelled_out() -> None:
    for queue in (*(d for d in DEFAULT_DESTINATIONS if d.startswith("/queue/")), "/queue/q.x"):
        assert queue_of(copy_topic(queue)) == queue
        copy = Delivery(copy_topic(queue), {}, b"{}", None, 0)
        assert recorded_destination(copy) == queue
    assert queue_of(TOPIC) is None and queue_of("/topic/monitor.") is None
    assert recorded_destination(Delivery(TOPIC, {}, b"{}", None, 0)) == TOPIC
    text = copy_configuration([CONTROL])
    assert ('<compositeQueue name="workflow_control" forwardOnly="false">' in text
            and '<topic physicalName="monitor.workflow_control"/>' in text)
    assert ("<address>/queue/workflow_control</address>" in text
            and "<forwarding-address>/topic/monitor.workflow_control</forwarding-address>" in text
            and "<exclusive>false</exclusive>" in text)


def test_probes_and_recorder_heartbeats_are_valid_runless_messages() -> None:
    probe = examine(orjson.dumps(probe_message("rec", CONTROL)), CONTROL)
    assert probe.reason is None and probe.msg_type == "recorder_probe"
    assert (probe.namespace, probe.run_id, probe.sender) == (NAMESPACE, None, "rec")
    beat = examine(orjson.dumps(heartbeat_message("rec", "READY")), "/topic/swf.recorder.rec")
    assert beat.reason is None and beat.data is not None
    assert beat.data["agent_type"] == "recorder"
    assert examine(b'{"msg_type":"recorder_probe","msg_id":"p","namespace":"n"}').reason \
        == "recorder_probe is missing required field 'queue'"


# -- on the broker ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stock_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A broker whose configuration does not copy /queue/workflow_control (as a stock one)."""
    xml = (BROKER_SH.parent / "activemq.xml").read_text()
    start = xml.index('<compositeQueue name="workflow_control"')
    end = xml.index("</compositeQueue>", start) + len("</compositeQueue>")
    config = tmp_path_factory.mktemp("stock-config") / "activemq.xml"
    config.write_text(xml[:start] + xml[end:])
    yield from running_broker(tmp_path_factory, config)


def record(cluster: Cluster, *args: str, ready: Path | None = None
           ) -> tuple[subprocess.Popen, Path, Path]:
    """``swf record`` with a ready file and a name of its own, in the background."""
    ready = ready or cluster.root / f"ready.{uuid.uuid4().hex[:6]}"
    proc = cluster.spawn("recorder", "record", "--name", f"rec-{uuid.uuid4().hex[:8]}",
                         "--ready-file", str(ready), *args)
    log = max(cluster.root.glob("recorder.*.log"), key=lambda path: path.stat().st_mtime)
    return proc, ready, log


def started(proc: subprocess.Popen, ready: Path, log: Path) -> Any:
    def written() -> bool:
        assert proc.poll() is None, log.read_text()
        return ready.exists()

    wait_for(written, "the ready file")
    return orjson.loads(ready.read_bytes())


def status(cluster: Cluster) -> dict[str, Any]:
    result = cluster.swf("status", "--json", "--namespace", "torre2")
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


@pytest.mark.broker
def test_the_probes_pass_on_the_deployed_configuration_and_ready_follows(broker,
                                                                         tmp_path) -> None:
    cluster = Cluster(broker, tmp_path / "ok")
    extra = f"/topic/extra.{uuid.uuid4().hex[:6]}"
    try:
        proc, ready, log = record(cluster, "--destination", extra)
        info = started(proc, ready, log)
        assert info["queues"] == list(QUEUES)
        assert info["topics"][-1] == extra and info["pid"] == proc.pid
        text = log.read_text()
        # the topics (the extra one included), the queues' copies, its own heartbeat topic
        subscriptions = len(info["topics"]) + len(QUEUES) + 1
        assert (f"recording {broker.url} as {info['name']}: {subscriptions} durable "
                f"subscriptions established") in text
        assert text.index("established") < text.index("each probe arrived") < \
            text.index(f"ready: wrote {ready}")
        store = cluster.store

        def probes() -> list[Any]:
            return [event for event in store.read(msg_types=["recorder_probe"])
                    if event.sender == info["name"]]

        wait_for(lambda: len(probes()) == len(QUEUES), "the probes' copies recorded")
        assert sorted(event.destination for event in probes()) == sorted(info["queues"])
        assert all(event.valid and event.namespace == NAMESPACE for event in probes())
        publish(broker.url, [(extra, orjson.dumps({  # a destination added with --destination
            "msg_type": "agent_log", "msg_id": f"extra-{uuid.uuid4()}", "namespace": "torre2",
            "sender": "x", "level": "INFO", "message": "hello"}))])
        wait_for(lambda: list(store.read(msg_types=["agent_log"])), "the extra destination")

        (recorder,) = [row for row in status(cluster)["recorders"]
                       if row["name"] == info["name"]]  # listed whatever --namespace says
        assert recorder["state"] == "alive" and recorder["pid"] == proc.pid
        assert recorder["lag_s"] is not None and 0 <= recorder["lag_s"] < 5

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not ready.exists()  # a ready file means: recording now
        (recorder,) = [row for row in status(cluster)["recorders"]
                       if row["name"] == info["name"]]
        assert (recorder["state"], recorder["operational_state"]) == ("exited", "EXITED")
    finally:
        cluster.stop_all()


@pytest.mark.broker
def test_probes_expire_and_are_ignored_by_the_agents_that_take_them(broker, tmp_path) -> None:
    """A probe left in a queue is not persistent and expires; our agents ignore it (another
    namespace), as upstream's BaseAgent does (see agents/recorder_probe.py)."""
    from agents.base import Agent
    from eventstore.identity import as_stored

    cluster = Cluster(broker, tmp_path / "expiry")
    try:
        proc, ready, log = record(cluster)
        name = started(proc, ready, log)["name"]
        (probe,) = wait_for(lambda: [
            event for event in cluster.store.read(msg_types=["recorder_probe"])
            if event.sender == name and event.destination == CONTROL], "the probe recorded")
    finally:
        cluster.stop_all()
    assert probe.headers.get("persistent") != "true"  # the broker says so of persistent ones
    expires = int(probe.headers["expires"]) / 1000
    assert time.time() < expires < time.time() + 301
    seen = as_stored(CONTROL, probe.headers, probe.body, probe.recorded_at)
    assert not Agent("worker-agent-x", "torre2").accepts(seen)


@pytest.mark.broker
def test_a_queue_without_its_copy_fails_the_start_within_30_s_naming_it(stock_broker,
                                                                        tmp_path) -> None:
    cluster = Cluster(stock_broker, tmp_path / "stock")
    ready = cluster.root / "ready"
    ready.write_text("left by an earlier run")  # removed at start: it must not count
    began = time.monotonic()
    proc, ready, log = record(cluster, ready=ready)
    try:
        code = proc.wait(30)
    finally:
        cluster.stop_all()
    assert time.monotonic() - began < 30
    text = log.read_text()
    assert code == 1 and not ready.exists(), text
    assert (f"Error: the broker at {stock_broker.url} does not copy /queue/workflow_control "
            f"to the topic swf records it from") in text
    assert '<compositeQueue name="workflow_control" forwardOnly="false">' in text
    assert "/queue/panda.transformer.slices" not in text.partition("Error:")[2].splitlines()[0]
    assert "swf record --topics-only" in text


@pytest.mark.broker
def test_topics_only_starts_on_that_broker_with_a_warning(stock_broker, tmp_path) -> None:
    cluster = Cluster(stock_broker, tmp_path / "topics")
    try:
        proc, ready, log = record(cluster, "--topics-only")
        info = started(proc, ready, log)
        assert info["queues"] == []
        assert (f"warning: --topics-only: messages sent to {', '.join(QUEUES)} are not "
                "recorded") in log.read_text()
        msg_id = f"topic-{uuid.uuid4()}"
        publish(stock_broker.url, [(TOPIC, orjson.dumps({
            "msg_type": "agent_log", "msg_id": msg_id, "namespace": "torre2", "sender": "x",
            "level": "INFO", "message": "hello"}))])
        wait_for(lambda: stored_ids(cluster.store.engine, event_id=msg_id), "the topic message")
    finally:
        cluster.stop_all()
