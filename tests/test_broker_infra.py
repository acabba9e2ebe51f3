"""Tests of the local ActiveMQ broker infrastructure in deploy/activemq/.

A broker is started with deploy/activemq/broker.sh in a temporary directory on a
free port, and stomp.py proves what the swf agents rely on:

* a message sent to a monitored work queue stays on the queue for its consumer
  and a copy reaches a durable subscriber of the ``monitor.<queue>`` topic;
* a durable topic subscriber (``client-id`` on CONNECT, ``activemq.subscriptionName``
  on SUBSCRIBE, ``ack: client-individual``) gets the persistent messages sent while
  it was away, also across a broker restart;
* broker.sh stops the broker.
"""

from __future__ import annotations

import queue
import socket
import threading
import uuid
from pathlib import Path

import pytest
import stomp

pytest.register_assert_rewrite("broker")  # before the import below: it is a plugin too
from broker import Broker, run_script  # noqa: E402

pytestmark = pytest.mark.broker

pytest_plugins = ["broker"]  # the module-scoped ``broker`` fixture

MONITORED_QUEUES = ("panda.transformer.slices", "panda.results.fastprocessing")
WAIT = 10.0  # seconds to wait for any single expected frame


class Collector(stomp.ConnectionListener):
    """Hands every frame over to the test thread through queues."""

    def __init__(self) -> None:
        self.messages: queue.Queue[stomp.utils.Frame] = queue.Queue()
        # receipt ids, or the ERROR frame if the broker refused a command
        self.receipts: queue.Queue[str | stomp.utils.Frame] = queue.Queue()
        self.errors: queue.Queue[stomp.utils.Frame] = queue.Queue()
        self.disconnected = threading.Event()

    def on_message(self, frame):
        self.messages.put(frame)

    def on_receipt(self, frame):
        self.receipts.put(frame.headers.get("receipt-id", ""))

    def on_error(self, frame):
        self.errors.put(frame)
        self.receipts.put(frame)

    def on_disconnected(self):
        self.disconnected.set()

    def wait_receipt(self, receipt: str, timeout: float = WAIT) -> None:
        while True:
            try:
                got = self.receipts.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no RECEIPT {receipt} within {timeout}s") from None
            if isinstance(got, stomp.utils.Frame):
                raise AssertionError(
                    f"ERROR instead of RECEIPT {receipt}: {got.headers.get('message')}"
                )
            if got == receipt:
                return

    def take(self, n: int, timeout: float = WAIT) -> list[stomp.utils.Frame]:
        frames = []
        for i in range(n):
            try:
                frames.append(self.messages.get(timeout=timeout))
            except queue.Empty:
                raise AssertionError(
                    f"got {i} of {n} messages; errors: {self.error_texts()}"
                ) from None
        return frames

    def assert_no_more(self, timeout: float = 0.5) -> None:
        try:
            extra = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected extra message: {extra.headers} {extra.body!r}")

    def error_texts(self) -> list[str]:
        out = []
        while not self.errors.empty():
            f = self.errors.get_nowait()
            out.append(f"{f.headers.get('message')}: {f.body}")
        return out


class Client:
    """One STOMP 1.2 connection with its collector."""

    def __init__(self, broker: Broker, client_id: str | None = None) -> None:
        self.conn = stomp.Connection12([("127.0.0.1", broker.port)], heartbeats=(0, 0))
        self.listener = Collector()
        self.conn.set_listener("collector", self.listener)
        headers = {"client-id": client_id} if client_id else {}
        self.conn.connect(wait=True, headers=headers)
        self._n = 0

    def _receipt(self) -> str:
        self._n += 1
        return f"r-{self._n}-{uuid.uuid4().hex[:8]}"

    def subscribe(
        self,
        destination: str,
        sub_id: str,
        *,
        durable_name: str | None = None,
        ack: str = "client-individual",
    ) -> None:
        headers = {}
        if durable_name:
            headers["activemq.subscriptionName"] = durable_name
        receipt = self._receipt()
        headers["receipt"] = receipt
        self.conn.subscribe(destination, id=sub_id, ack=ack, headers=headers)
        self.listener.wait_receipt(receipt)
        assert not self.listener.error_texts()

    def unsubscribe_durable(self, sub_id: str, durable_name: str) -> None:
        """Delete a durable subscription: ActiveMQ refuses ("Durable consumer is in use")
        while it has a consumer, so first close the consumer, then remove the subscription."""
        receipt = self._receipt()
        self.conn.unsubscribe(id=sub_id, headers={"receipt": receipt})
        self.listener.wait_receipt(receipt)
        receipt = self._receipt()
        self.conn.unsubscribe(
            id=sub_id, headers={"activemq.subscriptionName": durable_name, "receipt": receipt}
        )
        self.listener.wait_receipt(receipt)

    def send_all(self, destination: str, bodies: list[str], *, persistent: bool = True) -> None:
        """Send, and wait for the broker's receipt of the last one (frames are in order)."""
        for i, body in enumerate(bodies):
            headers = {"persistent": "true" if persistent else "false"}
            if i == len(bodies) - 1:
                receipt = self._receipt()
                headers["receipt"] = receipt
            self.conn.send(destination, body, content_type="application/json", headers=headers)
        if bodies:
            self.listener.wait_receipt(receipt)
        assert not self.listener.error_texts()

    def take_and_ack(self, n: int) -> list[str]:
        frames = self.listener.take(n)
        for f in frames:
            self.conn.ack(f.headers["ack"])
        return [f.body for f in frames]

    def close(self) -> None:
        if self.conn.is_connected():
            receipt = self._receipt()
            self.conn.disconnect(receipt=receipt)
            self.listener.disconnected.wait(WAIT)


def bodies(tag: str, n: int) -> list[str]:
    return [f'{{"tag": "{tag}", "seq": {i}, "payload": "{"x" * 64}"}}' for i in range(n)]


@pytest.mark.parametrize("queue_name", MONITORED_QUEUES)
def test_queue_message_is_copied_to_monitor_topic(broker: Broker, queue_name: str) -> None:
    tag = uuid.uuid4().hex
    msgs = bodies(tag, 5)
    monitor_client_id = f"monitor-{tag}"
    monitor = Client(broker, client_id=monitor_client_id)
    producer = Client(broker)
    consumer = None
    try:
        monitor.subscribe(f"/topic/monitor.{queue_name}", "mon", durable_name=f"mon-{tag}")
        # Send while no queue consumer exists: the copy must not take the message off the queue.
        producer.send_all(f"/queue/{queue_name}", msgs)

        assert monitor.take_and_ack(len(msgs)) == msgs
        monitor.listener.assert_no_more()

        consumer = Client(broker)
        consumer.subscribe(f"/queue/{queue_name}", "work")
        assert consumer.take_and_ack(len(msgs)) == msgs
        consumer.listener.assert_no_more()

        monitor.unsubscribe_durable("mon", f"mon-{tag}")
    finally:
        for c in (monitor, producer, consumer):
            if c is not None:
                c.close()


def test_unmonitored_queue_is_not_copied(broker: Broker) -> None:
    """Only the configured queues are mirrored: a plain queue behaves as usual."""
    tag = uuid.uuid4().hex
    spy = Client(broker)
    producer = Client(broker)
    consumer = Client(broker)
    try:
        spy.subscribe("/topic/monitor.swf.plain", "spy", ack="auto")
        consumer.subscribe("/queue/swf.plain", "work")
        producer.send_all("/queue/swf.plain", bodies(tag, 3))
        assert consumer.take_and_ack(3) == bodies(tag, 3)
        spy.listener.assert_no_more()
    finally:
        for c in (spy, producer, consumer):
            c.close()


def test_durable_subscriber_gets_messages_sent_while_away(broker: Broker) -> None:
    tag = uuid.uuid4().hex
    client_id, sub_name = f"epic-{tag}", f"epicsub-{tag}"
    producer = Client(broker)
    sub = Client(broker, client_id=client_id)
    try:
        sub.subscribe("/topic/epictopic", "epic", durable_name=sub_name)
        producer.send_all("/topic/epictopic", bodies(tag + "-online", 1))
        assert sub.take_and_ack(1) == bodies(tag + "-online", 1)
        sub.close()

        missed = bodies(tag + "-away", 20)
        producer.send_all("/topic/epictopic", missed)

        sub = Client(broker, client_id=client_id)
        sub.subscribe("/topic/epictopic", "epic", durable_name=sub_name)
        assert sub.take_and_ack(len(missed)) == missed
        sub.listener.assert_no_more()
        sub.unsubscribe_durable("epic", sub_name)
    finally:
        producer.close()
        sub.close()


def test_client_individual_unacked_messages_are_redelivered(broker: Broker) -> None:
    tag = uuid.uuid4().hex
    client_id, sub_name = f"epic-{tag}", f"epicsub-{tag}"
    producer = Client(broker)
    sub = Client(broker, client_id=client_id)
    try:
        sub.subscribe("/topic/epictopic", "epic", durable_name=sub_name)
        msgs = bodies(tag, 6)
        producer.send_all("/topic/epictopic", msgs)
        frames = sub.listener.take(len(msgs))
        assert [f.body for f in frames] == msgs
        # ack only the even ones, with a receipt on the last ack so they are settled
        evens = frames[0::2]
        for f in evens[:-1]:
            sub.conn.ack(f.headers["ack"])
        receipt = sub._receipt()
        sub.conn.ack(evens[-1].headers["ack"], receipt=receipt)
        sub.listener.wait_receipt(receipt)
        sub.close()

        sub = Client(broker, client_id=client_id)
        sub.subscribe("/topic/epictopic", "epic", durable_name=sub_name)
        assert sub.take_and_ack(3) == msgs[1::2]
        sub.listener.assert_no_more()
        sub.unsubscribe_durable("epic", sub_name)
    finally:
        producer.close()
        sub.close()


def test_persistent_messages_survive_broker_restart(broker: Broker) -> None:
    tag = uuid.uuid4().hex
    client_id, sub_name = f"epic-{tag}", f"epicsub-{tag}"
    sub = Client(broker, client_id=client_id)
    sub.subscribe("/topic/epictopic", "epic", durable_name=sub_name)
    sub.close()

    topic_msgs = bodies(tag + "-topic", 10)
    queue_msgs = bodies(tag + "-queue", 10)
    producer = Client(broker)
    producer.send_all("/topic/epictopic", topic_msgs)
    producer.send_all("/queue/panda.transformer.slices", queue_msgs)
    producer.close()

    old_pid = broker.pid
    broker.restart()
    assert broker.pid != old_pid

    sub = Client(broker, client_id=client_id)
    consumer = Client(broker)
    try:
        sub.subscribe("/topic/epictopic", "epic", durable_name=sub_name)
        assert sub.take_and_ack(len(topic_msgs)) == topic_msgs
        consumer.subscribe("/queue/panda.transformer.slices", "work")
        assert consumer.take_and_ack(len(queue_msgs)) == queue_msgs
        sub.unsubscribe_durable("epic", sub_name)
    finally:
        sub.close()
        consumer.close()


def test_status_and_stop_with_script(broker: Broker) -> None:
    status = run_script("status", str(broker.directory))
    assert f"pid {broker.pid}" in status.stdout

    broker.stop()

    status = run_script("status", str(broker.directory), check=False)
    assert status.returncode == 3, status.stdout + status.stderr
    assert not Path(f"/proc/{broker.pid}").exists() or _is_zombie(broker.pid)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", broker.port), timeout=2):
        pass
    # stopping again is a no-op
    run_script("stop", str(broker.directory))


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] in ("Z", "X")
    except OSError:
        return True
