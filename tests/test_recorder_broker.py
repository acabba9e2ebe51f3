"""The recorder on a real ActiveMQ broker: every destination of the pipeline recorded once,
work queues left to their consumers, nothing lost while it is down or killed, bodies kept byte
for byte."""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid

import orjson
import pytest
import stomp

from agents.recorder import BrokerRecorder
from agents.transport.broker import Backoff
from agents.transport.stomp import StompTransport
from eventstore.envelope import RESULT_QUEUE, SLICE_QUEUE, TOPIC
from eventstore.store import EventStore
from swf.settings import broker_config

pytest.register_assert_rewrite("broker")
from broker import Cluster, Proxy, publish, self_signed, stored_ids, wait_for  # noqa: E402

pytestmark = [pytest.mark.broker, pytest.mark.slow]
pytest_plugins = ["broker"]  # the module-scoped ``broker`` fixture


def heartbeat(msg_id: str, pad: int = 150) -> bytes:
    """A ~300-byte message of the catalog."""
    return orjson.dumps({"msg_type": "agent_heartbeat", "msg_id": msg_id, "namespace": "rec",
                         "execution_id": None, "run_id": None, "sender": "bench",
                         "timestamp": "2026-01-01T00:00:00.000000Z", "agent_type": "bench",
                         "status": "OK", "operational_state": "READY", "pid": 1,
                         "hostname": "h" * pad})


@pytest.fixture
def recorder(broker, sqlite_url):
    """An in-process recorder with a name of its own (so its own durable subscriptions)."""
    store = EventStore(sqlite_url)
    name = f"rec-{uuid.uuid4().hex[:8]}"
    started: list[BrokerRecorder] = []

    def start() -> BrokerRecorder:
        recorder = BrokerRecorder(store, broker_config(broker.url), name=name)
        recorder.start()
        assert recorder.wait_ready(30)
        started.append(recorder)
        return recorder

    yield start, store
    for recorder in started:
        recorder.stop()
    store.close()


def drain(broker_url: str, destination: str, count: int) -> list[bytes]:
    """Consume ``count`` messages of a queue, as its worker would."""
    got: list[bytes] = []
    done = threading.Event()

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame) -> None:  # noqa: ANN001
            got.append(frame.body)
            conn.ack(frame.headers["ack"])
            if len(got) >= count:
                done.set()

    config = broker_config(broker_url)
    conn = stomp.Connection12([(config.host, config.port)], auto_decode=False)
    conn.set_listener("l", Listener())
    conn.connect(wait=True)
    conn.subscribe(destination, id="work", ack="client-individual")
    done.wait(30)
    conn.disconnect()
    return got


def test_every_destination_is_recorded_once_and_queues_keep_their_work(broker,
                                                                        recorder) -> None:
    start, store = recorder
    start()
    tag = uuid.uuid4().hex[:8]
    sent = {destination: [heartbeat(f"{tag}-{destination}-{i}") for i in range(20)]
            for destination in (TOPIC, SLICE_QUEUE, RESULT_QUEUE)}
    publish(broker.url, [(d, b) for d, bodies in sent.items() for b in bodies])
    wait_for(lambda: len(list(store.read(namespace="rec"))) == 60, "60 stored")
    for destination in (SLICE_QUEUE, RESULT_QUEUE):  # the work is still there for its consumer
        assert drain(broker.url, destination, 20) == sent[destination]
    events = list(store.read(namespace="rec"))
    assert {(e.destination, e.body) for e in events} == \
        {(d, b) for d, bodies in sent.items() for b in bodies}
    assert all(e.headers["message-id"].startswith("ID:") for e in events)
    publish(broker.url, [(TOPIC, sent[TOPIC][0])])  # the same msg_id again: absorbed
    marker = heartbeat(f"{tag}-marker")
    publish(broker.url, [(TOPIC, marker)])
    wait_for(lambda: stored_ids(store.engine, event_id=f"{tag}-marker"), "the marker")
    assert len(list(store.read(namespace="rec"))) == 61


def test_what_is_sent_while_the_recorder_is_down_is_recorded_when_it_returns(
        broker, recorder) -> None:
    start, store = recorder
    start().stop()  # its durable subscriptions exist from now on
    tag = uuid.uuid4().hex[:8]
    bodies = [heartbeat(f"{tag}-{i}") for i in range(200)]
    publish(broker.url, [(TOPIC if i % 2 else SLICE_QUEUE, b) for i, b in enumerate(bodies)])
    start()
    wait_for(lambda: len(list(store.read(namespace="rec"))) == 200, "all 200 stored")
    drain(broker.url, SLICE_QUEUE, 100)


def test_odd_bodies_are_stored_byte_for_byte_and_rejected(broker, recorder) -> None:
    start, store = recorder
    start()
    bodies = [b"\x00\x01binary\xff\xfe", b"", b"[1, 2]", b"x" * 100_000,
              b'{"msg_type": "agent_log", "msg_id": 5}']
    publish(broker.url, [(TOPIC, body) for body in bodies])
    wait_for(lambda: len(list(store.read(valid=False))) == len(bodies), "all stored")
    stored = {event.body: event for event in store.read(valid=False)}
    assert set(stored) == set(bodies)
    assert all(event.reject_reason for event in stored.values())


def test_a_recorder_killed_mid_stream_loses_nothing_and_stores_nothing_twice(
        broker, tmp_path) -> None:
    cluster = Cluster(broker, tmp_path / "kill")
    total = 12_000
    try:
        cluster.start_recorder()
        tag = uuid.uuid4().hex[:8]
        ids = [f"{tag}-{i}" for i in range(total)]
        sender = threading.Thread(target=publish, args=(broker.url, [
            (SLICE_QUEUE if i % 5 == 0 else TOPIC, heartbeat(msg_id))
            for i, msg_id in enumerate(ids)]))
        sender.start()

        def stored() -> int:
            return len(stored_ids(cluster.store.engine, namespace="rec"))

        for fraction in (0.15, 0.4, 0.65):
            wait_for(lambda f=fraction: stored() >= f * total, f"{fraction:.0%} stored", 120)
            cluster.kill("recorder", signal.SIGKILL)
            cluster.start_recorder()
        sender.join(120)
        wait_for(lambda: stored() >= total, "everything stored", 120)
        assert sorted(stored_ids(cluster.store.engine, namespace="rec")) == sorted(ids)
    finally:
        cluster.stop_all()
    drain(broker.url, SLICE_QUEUE, total // 5)


def test_tls_with_credentials_that_are_never_logged(broker, sqlite_url, tmp_path,
                                                    caplog) -> None:
    certificate = self_signed(tmp_path)
    proxy = Proxy(broker.port, certificate)
    secret = f"pw-{uuid.uuid4().hex}"
    env = {"SWF_STOMP_USER": "swf", "SWF_STOMP_PASSWORD": secret,
           "SWF_STOMP_CA_CERTS": str(tmp_path / "cert.pem")}
    config = broker_config(proxy.url, environ=env)
    assert config.tls and config.password == secret
    caplog.set_level(logging.DEBUG)
    store = EventStore(sqlite_url)
    recorder = BrokerRecorder(store, config, name=f"tls-{uuid.uuid4().hex[:8]}")
    sender = StompTransport(config, name="tls-sender")
    try:
        recorder.start()
        assert recorder.wait_ready(30)
        sender.start()
        ids = [f"tls-{uuid.uuid4()}" for _ in range(50)]
        sender.send([(TOPIC, heartbeat(msg_id), None) for msg_id in ids], timeout=30)
        wait_for(lambda: len(list(store.read(namespace="rec"))) == 50, "50 stored over TLS")
        assert sorted(e.event_id for e in store.read(namespace="rec")) == sorted(ids)
    finally:
        sender.close()
        recorder.stop()
        proxy.close()
        store.close()
    assert caplog.records and secret not in caplog.text


def test_swf_record_runs_on_upstreams_activemq_variables_alone(broker, tmp_path) -> None:
    """No SWF_BROKER nor SWF_STOMP_*: ACTIVEMQ_HOST/PORT/USE_SSL, the CA file and the
    credentials take `swf record` over TLS to the broker, and the password is never shown."""
    certificate = self_signed(tmp_path)
    proxy = Proxy(broker.port, certificate)
    secret = f"pw-{uuid.uuid4().hex}"
    cluster = Cluster(broker, tmp_path / "cluster")
    for name in [name for name in cluster.env if name.startswith(("SWF_STOMP_", "ACTIVEMQ_"))]:
        del cluster.env[name]
    del cluster.env["SWF_BROKER"]
    name = f"amq-{uuid.uuid4().hex[:8]}"  # a durable subscription of its own
    config = tmp_path / "swf.toml"
    config.write_text(f'[recorder]\nname = "{name}"\n')
    cluster.env.update(ACTIVEMQ_HOST="127.0.0.1", ACTIVEMQ_PORT=str(proxy.port),
                       ACTIVEMQ_USE_SSL="true", ACTIVEMQ_SSL_CA_CERTS=str(tmp_path / "cert.pem"),
                       ACTIVEMQ_USER="upstream", ACTIVEMQ_PASSWORD=secret,
                       SWF_CONFIG=str(config))
    try:
        cluster.start_recorder()  # its probes, sent on the plain port, are stored
        ids = [f"amq-{uuid.uuid4()}" for _ in range(20)]
        publish(broker.url, [(TOPIC, heartbeat(msg_id)) for msg_id in ids])
        wait_for(lambda: len(stored_ids(cluster.store.engine, namespace="rec")) == 20,
                 "20 stored through the TLS proxy")
        assert sorted(stored_ids(cluster.store.engine, namespace="rec")) == sorted(ids)
    finally:
        cluster.stop_all()
        proxy.close()
    log = "".join(path.read_text() for path in (tmp_path / "cluster").glob("recorder.*.log"))
    assert f"recording stomp+ssl://127.0.0.1:{proxy.port} as {name}" in log
    assert secret not in log


def test_tls_refuses_a_server_it_cannot_verify(broker, sqlite_url, tmp_path) -> None:
    proxy = Proxy(broker.port, self_signed(tmp_path))
    store = EventStore(sqlite_url)
    recorder = BrokerRecorder(store, broker_config(proxy.url, environ={}), name="untrusting",
                              backoff=Backoff(0.05, 0.1))
    try:
        recorder.start()
        assert not recorder.wait_ready(1.5)  # the self-signed certificate is not trusted
        assert recorder.consumer.connections == 0
    finally:
        recorder.stop()
        proxy.close()
        store.close()


def test_network_drops_lose_nothing_for_sender_or_recorder(broker, sqlite_url) -> None:
    proxy = Proxy(broker.port)
    config = broker_config(proxy.url)
    store = EventStore(sqlite_url)
    recorder = BrokerRecorder(store, config, name=f"drop-{uuid.uuid4().hex[:8]}",
                              backoff=Backoff(0.05, 0.5))
    sender = StompTransport(config, name="drop-sender", backoff=Backoff(0.05, 0.5))
    total = 6000
    ids = [f"drop-{uuid.uuid4()}" for _ in range(total)]
    try:
        recorder.start()
        assert recorder.wait_ready(30)
        sender.start()

        def send() -> None:
            for start in range(0, total, 200):
                sender.send([(TOPIC, heartbeat(msg_id), None)
                             for msg_id in ids[start:start + 200]], timeout=60)

        thread = threading.Thread(target=send)
        thread.start()

        def stored() -> int:
            return len(stored_ids(store.engine, namespace="rec"))

        for fraction in (0.3, 0.6):
            wait_for(lambda f=fraction: stored() >= f * total, f"{fraction:.0%} stored", 60)
            proxy.cut()
        thread.join(120)
        wait_for(lambda: stored() >= total, "everything stored", 60)
        assert sorted(stored_ids(store.engine, namespace="rec")) == sorted(ids)
        # Everything can be stored before the recorder's last reconnect: what it had received
        # but not acknowledged is stored, and the broker refuses its client id until it notices
        # the dead connection. So wait for the reconnects rather than read them at once.
        wait_for(lambda: recorder.consumer.connections >= 3 and sender.connections >= 2,
                 "the recorder and the sender reconnected after the cuts", 60)
    finally:
        sender.close()
        recorder.stop()
        proxy.close()
        store.close()


def test_an_unexpected_error_in_the_consumer_is_reported_not_swallowed(broker) -> None:
    """A consumer whose I/O thread dies tells its owner why, once, in one line, so `swf record`
    can exit non-zero for a supervisor instead of going on as if alive."""
    from agents.transport.consumer import StompConsumer, Subscription

    told: list[str] = []
    fatal = threading.Event()

    def explode(_delivery) -> None:  # noqa: ANN001
        raise RuntimeError("boom in on_message\n  and a second line")

    def on_fatal(reason: str) -> None:
        told.append(reason)
        fatal.set()

    name = f"fatal-{uuid.uuid4().hex[:8]}"
    consumer = StompConsumer(broker_config(broker.url), [Subscription(TOPIC, f"{name}.sub")],
                             explode, client_id=name, name=name, on_fatal=on_fatal)
    consumer.start()
    try:
        assert consumer.ready.wait(30)
        publish(broker.url, [(TOPIC, heartbeat("fatal-1"))])
        assert fatal.wait(30), "the consumer's death was not reported"
        assert len(told) == 1 and "\n" not in told[0]
        assert told[0].endswith("boom in on_message and a second line")
        assert not consumer.ready.is_set()
    finally:
        consumer.close()


def test_a_refused_subscribe_is_retried_with_backoff_not_hammered(broker) -> None:
    """ActiveMQ accepts the CONNECT, then answers a SUBSCRIBE with a selector it cannot parse
    with an ERROR frame and closes: each reconnect waits longer than the one before."""
    from agents.transport.consumer import StompConsumer, Subscription

    name = f"refused-{uuid.uuid4().hex[:8]}"
    consumer = StompConsumer(broker_config(broker.url), [Subscription(TOPIC, selector="((")],
                             lambda _delivery: None, client_id=name, name=name,
                             backoff=Backoff(0.1, 5.0, jitter=0.0))
    started = time.monotonic()
    consumer.start()
    try:
        wait_for(lambda: consumer.refusals >= 4, "four refusals")
        elapsed = time.monotonic() - started
    finally:
        consumer.close()
    print(f"refused SUBSCRIBE: {consumer.refusals} refusals on {consumer.connections} "
          f"connections in {elapsed:.2f} s")
    assert elapsed >= 0.1 + 0.2 + 0.4  # three waits between four refusals, doubling
    assert consumer.connections <= consumer.refusals + 1 and not consumer.ready.is_set()


def test_the_issues_bad_messages_are_stored_rejected_and_recording_goes_on(broker,
                                                                            recorder) -> None:
    start, store = recorder
    started = start()
    tag = uuid.uuid4().hex[:8]
    unicode_run = orjson.dumps({"msg_type": "stf_ready", "run_id": "²", "filename": "x",
                                "msg_id": f"sup-{tag}"})
    huge = orjson.dumps({"msg_type": "slice", "msg_id": f"huge-{tag}", "run_id": 1,
                         "slice_id": 18446744073709551615, "tf_filename": "t", "start": 0,
                         "end": 1})
    bare = b'{"msg_type":"stf_ready","run_id":"\xc2\xb2","filename":"x"}'  # the issue's own
    publish(broker.url, [(TOPIC, unicode_run), (TOPIC, huge), (TOPIC, bare),
                         (TOPIC, heartbeat(f"after-{tag}"))])
    wait_for(lambda: stored_ids(store.engine, event_id=f"after-{tag}"), "the message after")
    rows = {e.body: e.reject_reason for e in store.read(valid=False)}
    print("issue's bad messages:", rows, started.stats)
    assert "run_id" in rows[unicode_run] and "run_id" in rows[bare]
    assert "slice_id" in rows[huge] and "out of range" in rows[huge]
    assert started.stats.store_errors == 0  # the catalog's verdict: no append failed


def test_an_oversized_body_is_stored_rejected_and_acked_not_redelivered(broker, sqlite_url
                                                                         ) -> None:
    store = EventStore(sqlite_url)
    name = f"big-{uuid.uuid4().hex[:8]}"
    config = broker_config(broker.url)
    big = b'{"msg_type":"agent_log","pad":"' + b"x" * 300_000 + b'"}'
    tag = uuid.uuid4().hex[:8]
    try:
        first = BrokerRecorder(store, config, name=name, max_body=100_000)
        first.start()
        assert first.wait_ready(30)
        publish(broker.url, [(TOPIC, big), (TOPIC, heartbeat(f"small-{tag}"))])
        wait_for(lambda: first.stats.acked >= 2, "both acked")
        first.stop()
        (kept,) = list(store.read(valid=False))
        assert kept.body == big[:64 << 10] and kept.event_id.startswith("broker:ID:")
        assert f"body of {len(big)} bytes is over the recorder's bound of 100000 bytes" \
            in kept.reject_reason
        second = BrokerRecorder(store, config, name=name, max_body=100_000)  # same durable subs
        second.start()
        assert second.wait_ready(30)
        publish(broker.url, [(TOPIC, heartbeat(f"marker-{tag}"))])
        wait_for(lambda: stored_ids(store.engine, event_id=f"marker-{tag}"), "the marker")
        second.stop()
        print("oversized:", first.stats, second.stats)
        assert second.stats.received == 1 and first.stats.oversized == 1  # not redelivered
    finally:
        store.close()
