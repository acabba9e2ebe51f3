"""The broker recorder: every message on the pipeline's destinations is appended to the event
store exactly once, and acknowledged to the broker only after the batch holding it committed.

    with EventStore(url) as store:
        recorder = BrokerRecorder(store, BrokerConfig.from_url("stomp://127.0.0.1:61613"))
        recorder.start()          # subscribes (durable, client-individual) and starts writing
        recorder.wait_ready(10)   # True once every subscription is confirmed
        ...
        recorder.stop()

Why nothing is lost and nothing is stored twice:
- The subscriptions are durable (a stable ``client-id`` and ``activemq.subscriptionName``), so
  what is sent while the recorder is down waits in the broker for it.
- A message is acked only after its batch committed. A crash before the commit leaves it unacked,
  so the broker redelivers it; a crash between commit and ack redelivers a stored message, and the
  store absorbs it by its ``event_id`` (the sender's ``msg_id``, else the broker ``message-id``).
- Work queues are not consumed (that would steal work): the broker copies each queue message to a
  monitor topic (deploy/activemq/activemq.xml), the recorder subscribes to that copy and stores it
  under the queue's name, with the same ``message-id``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.retry import RetryPolicy, retry_call
from agents.transport.broker import Backoff, BrokerConfig, Delivery, recorded_destination
from agents.transport.consumer import StompConsumer, Subscription
from agents.transport.destinations import RECORDED_DESTINATIONS
from eventstore.envelope import Incoming

log = logging.getLogger("swf.recorder")

DEFAULT_NAME = "swf-recorder"
BATCH_SIZE = 500
BATCH_WAIT = 0.02  # seconds a batch waits for more messages after its first
PREFETCH = 5000  # unacked messages per subscription the broker may push ahead
STATS_EVERY = 10.0
# A failed append is tried again until it succeeds or the recorder stops (a database outage must
# not end the recorder: the broker holds what comes meanwhile, unacked).
APPEND_RETRY = RetryPolicy(attempts=None, initial=0.2, maximum=5.0, jitter=0.2)
# Per-delivery STOMP headers: they differ between a message's deliveries and say nothing about
# the message, so they are not stored (the first stored copy wins anyway).
_DELIVERY_HEADERS = frozenset({"ack", "subscription", "content-length", "redelivered"})


@dataclass(slots=True)
class RecorderStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    acked: int = 0
    batches: int = 0
    store_errors: int = 0


def stored_message(delivery: Delivery) -> Incoming:
    """The message as the store keeps it: its original destination, its headers without the
    per-delivery ones (dropped from the delivery's own dict: the recorder owns it), the body
    untouched."""
    destination = recorded_destination(delivery)
    headers = delivery.headers
    pop = headers.pop
    for name in _DELIVERY_HEADERS:
        pop(name, None)
    return Incoming(destination, delivery.body, headers)


class Recorder:
    """Batches deliveries into store appends and acks each batch once it committed.

    Single-threaded by design: the consumer's reader calls ``add`` for each message and
    ``flush`` after each read, so parsing, storing and acking share one thread and never wait
    for each other's GIL turns (on two cores shared with the broker that halves the rate).
    While a batch is written, TCP and the broker's prefetch window hold what comes next.
    """

    def __init__(self, store: Any, ack: Callable[[list[Delivery]], int], *,
                 batch_size: int = BATCH_SIZE, batch_wait: float = BATCH_WAIT,
                 retry: RetryPolicy = APPEND_RETRY) -> None:
        self.store = store
        self.ack = ack
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.retry = retry
        self.stats = RecorderStats()
        self.stopping = threading.Event()  # ends a retry loop during a database outage
        self._pending: list[Delivery] = []
        self._since = 0.0
        self._next_stats = time.monotonic() + STATS_EVERY

    def add(self, delivery: Delivery) -> None:
        if not self._pending:
            self._since = time.monotonic()
        self._pending.append(delivery)

    def flush(self, force: bool = False, *, ack: bool = True) -> float | None:
        """Write every full batch, and the rest once it has waited ``batch_wait`` (at once with
        ``force``). Returns the seconds until the rest is due, None when nothing is pending."""
        size = self.batch_size
        while len(self._pending) >= size:
            batch, self._pending = self._pending[:size], self._pending[size:]
            self._commit(batch, ack)
        if self._pending:
            due = self._since + self.batch_wait - time.monotonic()
            if due > 0 and not force:
                return due
            batch, self._pending = self._pending, []
            self._commit(batch, ack)
        if time.monotonic() >= self._next_stats:
            self._next_stats = time.monotonic() + STATS_EVERY
            log.info("recorder: %s", self.stats)
        return None

    def _commit(self, batch: list[Delivery], ack: bool) -> None:
        stats = self.stats
        stats.received += len(batch)
        messages = [stored_message(delivery) for delivery in batch]

        def failed(_attempt: int, delay: float, problem: BaseException) -> None:
            stats.store_errors += 1
            log.error("recorder: append failed (%s); retrying in %.1f s", problem, delay)

        try:
            result = retry_call(lambda: self.store.append(messages), self.retry,
                                retry_on=Exception, sleep=self.stopping.wait,
                                stop=self.stopping, before_retry=failed)
        except Exception as problem:  # noqa: BLE001 - only when stopping: the broker redelivers
            stats.store_errors += 1
            log.error("recorder: %d messages not stored (%s); the broker will redeliver them",
                      len(batch), problem)
            return
        stats.batches += 1
        stats.stored += len(result.events)
        stats.duplicates += len(result.duplicates)
        stats.rejected += result.rejected
        if ack:
            stats.acked += self.ack(batch)


class BrokerRecorder:
    """The recorder on a STOMP broker: a durable ``client-individual`` subscription per recorded
    destination, all on one connection whose ``client-id`` is ``name``."""

    def __init__(self, store: Any, config: BrokerConfig, *, name: str = DEFAULT_NAME,
                 destinations: Sequence[str] = RECORDED_DESTINATIONS,
                 batch_size: int = BATCH_SIZE, batch_wait: float = BATCH_WAIT,
                 prefetch: int = PREFETCH, heartbeat: float = 10.0,
                 backoff: Backoff | None = None,
                 on_fatal: Callable[[str], None] | None = None) -> None:
        subscriptions = [Subscription(destination, subscription_name(name, destination),
                                      prefetch=prefetch) for destination in destinations]
        self.core = Recorder(store, self._ack, batch_size=batch_size, batch_wait=batch_wait)
        self.consumer = StompConsumer(config, subscriptions, self.core.add, client_id=name,
                                      on_idle=self.core.flush, heartbeat=heartbeat,
                                      backoff=backoff, name=name, on_fatal=on_fatal)

    @property
    def stats(self) -> RecorderStats:
        return self.core.stats

    def _ack(self, batch: list[Delivery]) -> int:
        return self.consumer.ack(batch)

    def start(self) -> None:
        self.consumer.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.consumer.ready.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Close the connection, then store what was received (its acks cannot go out any more:
        the broker redelivers those messages to the next start, as duplicates)."""
        self.core.stopping.set()
        self.consumer.close(timeout)
        self.core.flush(force=True, ack=False)
        log.info("recorder stopped: %s", self.stats)


def subscription_name(name: str, destination: str) -> str:
    """A durable subscription name per destination, free of STOMP-escaped characters."""
    return f"{name}.{destination.strip('/').replace('/', '.')}"
