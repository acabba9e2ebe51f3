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

Why nothing stops it:
- Appends run on a writer thread, not on the consumer's I/O thread: while the database is away
  the append is retried (acks held back), the I/O thread keeps heart-beating, and once the
  hand-off holds BACKLOG_MESSAGES (or BACKLOG_BYTES) it stops reading its socket; the broker's
  prefetch window (PREFETCH unacked per subscription) and TCP hold the rest.
- Only an outage (``eventstore.errors.is_outage``: connection lost or refused, server shutting
  down, database locked or busy) is retried. A batch that fails otherwise is split until the
  message at fault is alone, and that message is stored as rejected with the error as its reason.
- A body over the consumer's bound (MAX_BODY) is read past, stored rejected with its first bytes
  and acked. If even a rejected form cannot be stored, the store itself is broken: ``on_fatal``
  is told (``swf record`` exits 1) and nothing of that batch is acked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.defaults import BATCH_SIZE, BATCH_WAIT, PREFETCH, RECORDER_NAME
from agents.retry import RetryPolicy, Transient, retry_call
from agents.transport.broker import (
    Backoff,
    BrokerConfig,
    Delivery,
    one_line,
    recorded_destination,
)
from agents.transport.consumer import MAX_BODY, StompConsumer, Subscription
from agents.transport.destinations import RECORDED_DESTINATIONS
from eventstore.envelope import Incoming
from eventstore.errors import is_outage

log = logging.getLogger("swf.recorder")

# The writer's hand-off: past this many messages (or bytes of bodies) received and not yet
# stored, the consumer stops reading its socket until the writer catches up.
BACKLOG_MESSAGES = 8 * BATCH_SIZE
BACKLOG_BYTES = 64 << 20
STATS_EVERY = 10.0
# An append that failed because the database is away (is_outage) is tried again until it
# succeeds or the recorder stops: the broker holds what comes meanwhile, unacked.
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
    store_errors: int = 0  # failed appends: outages retried, and bad batches split
    unstorable: int = 0  # messages the database refused as examined, stored as rejected
    oversized: int = 0  # messages whose body was over the consumer's bound

    def summary(self) -> str:
        """One line for the end of ``swf record``."""
        line = (f"recorded {self.stored} events ({self.duplicates} duplicates absorbed, "
                f"{self.rejected} rejected")
        odd = [f"{count} {what}" for count, what in (
            (self.unstorable, "refused by the database as examined"),
            (self.oversized, "over the size bound")) if count]
        return line + (f", of which {' and '.join(odd)})" if odd else ")")


class RecorderFailed(Exception):
    """The store refused even a message's rejected form: not a message's fault, not an outage."""


class _Outage(Transient):
    """An append failed because the database is away: worth the same append again."""


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
    """Batches deliveries into store appends on a writer thread of its own, and acks each
    batch once it committed.

    The consumer's I/O thread only calls ``add`` for each message and ``flush`` after each read
    (which hands what it read to the writer in one go), so a slow or absent database never
    stops it: it goes on heart-beating and, once ``accepting`` says the hand-off is full, stops
    reading its socket (the broker's prefetch window and TCP hold the rest). Nothing is acked
    before it is committed.

    A failed append is told apart (``is_outage``): a database that is away is retried, the same
    batch, until it is back; any other failure is a message the store cannot hold as examined,
    so the batch is split until that message is alone, and it is stored as rejected with the
    reason (``EventStore.append_rejected``). No message can stop the log.
    """

    def __init__(self, store: Any, ack: Callable[[list[Delivery]], int], *,
                 batch_size: int = BATCH_SIZE, batch_wait: float = BATCH_WAIT,
                 retry: RetryPolicy = APPEND_RETRY, backlog_messages: int | None = None,
                 backlog_bytes: int = BACKLOG_BYTES, max_body: int | None = None,
                 wake: Callable[[], None] | None = None,
                 on_fatal: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.ack = ack
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.retry = retry
        self.backlog_messages = backlog_messages or max(BACKLOG_MESSAGES, 2 * batch_size)
        self.backlog_bytes = backlog_bytes
        self.max_body = max_body
        self.wake = wake  # tells the consumer to look at ``accepting`` again
        self.on_fatal = on_fatal
        self.stats = RecorderStats()
        self.stopping = threading.Event()  # ends a retry loop during a database outage
        self.acking = True  # False once the connection is closed: acks could not go out
        self._incoming: list[Delivery] = []  # the I/O thread's, until the next flush
        self._queue: deque[Delivery] = deque()  # handed to the writer, not taken yet
        self._since = 0.0  # when the oldest message in _queue was handed over
        self._held = 0  # messages handed over and not yet written (queued or in a batch)
        self._held_bytes = 0
        self._closing = False
        self._failed = False
        self._cond = threading.Condition()
        self._writer: threading.Thread | None = None
        self._next_stats = time.monotonic() + STATS_EVERY

    # -- the I/O thread's side -----------------------------------------------------------------

    def add(self, delivery: Delivery) -> None:
        self._incoming.append(delivery)

    def flush(self) -> float | None:
        """Hand what the last read brought to the writer (one lock, one wake-up per read).
        Returns None: the I/O thread has nothing to come back for."""
        incoming = self._incoming
        if incoming:
            self._incoming = []
            size = sum(len(delivery.body) for delivery in incoming)
            with self._cond:
                if not self._queue:
                    self._since = time.monotonic()
                self._queue.extend(incoming)
                self._held += len(incoming)
                self._held_bytes += size
                self._cond.notify()
        return None

    def accepting(self) -> bool:
        """False while the writer holds enough: the consumer then stops reading."""
        return self._held < self.backlog_messages and self._held_bytes < self.backlog_bytes

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="recorder-writer",
                                        daemon=True)
        self._writer.start()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything handed over was written (True), or ``timeout`` passed or the
        writer failed (False)."""
        self.flush()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._held and not self._failed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return not self._held and not self._failed

    def close(self, timeout: float = 10.0) -> None:
        """Write what was handed over (unless the database is away: ``stopping`` ends its
        retries; the broker redelivers those), then end the writer."""
        self.flush()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._writer is not None:
            self._writer.join(timeout)

    # -- the writer ----------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._commit(batch)
            except Exception as problem:  # noqa: BLE001 - a dead writer must not look alive
                self._fail(problem)
                return
            finally:
                with self._cond:
                    self._held -= len(batch)
                    self._held_bytes -= sum(len(delivery.body) for delivery in batch)
                    self._cond.notify_all()
                if self.wake is not None:
                    self.wake()
            if time.monotonic() >= self._next_stats:
                self._next_stats = time.monotonic() + STATS_EVERY
                log.info("recorder: %s", self.stats)

    def _fail(self, problem: BaseException) -> None:
        """The writer stops (nothing more is stored or acked); the owner is told once."""
        reason = f"recorder: writer stopped: {one_line(problem)}"
        log.error("%s", reason, exc_info=True)
        with self._cond:
            self._failed = True
            self._cond.notify_all()
        if self.on_fatal is not None:
            self.on_fatal(reason)

    def _next_batch(self) -> list[Delivery] | None:
        """The next batch: ``batch_size`` messages, or fewer once the oldest has waited
        ``batch_wait`` (at once when closing); None when closing with nothing left."""
        size = self.batch_size
        with self._cond:
            while True:
                queued = len(self._queue)
                if queued >= size or (queued and self._closing):
                    break
                if self._closing:
                    return None
                if queued:
                    due = self._since + self.batch_wait - time.monotonic()
                    if due <= 0:
                        break
                    self._cond.wait(due)
                else:
                    self._cond.wait()
            queue = self._queue
            batch = [queue.popleft() for _ in range(min(size, len(queue)))]
            self._since = time.monotonic()
            return batch

    def _commit(self, batch: list[Delivery]) -> None:
        stats = self.stats
        stats.received += len(batch)
        whole = [delivery for delivery in batch if not delivery.discarded]
        try:
            self._append([stored_message(delivery) for delivery in whole])
            for delivery in batch:
                if delivery.discarded:
                    stats.oversized += 1
                    size = len(delivery.body) + delivery.discarded
                    self._append_rejected(stored_message(delivery), (
                        f"body of {size} bytes is over the recorder's bound of "
                        f"{self.max_body or len(delivery.body)} bytes: only its first "
                        f"{len(delivery.body)} bytes are kept"))
        except _Outage as problem:  # only when stopping: the broker redelivers them
            log.error("recorder: %d messages not stored (%s); the broker will redeliver them",
                      len(batch), problem)
            return
        stats.batches += 1
        if self.acking:
            stats.acked += self.ack(batch)

    def _append(self, messages: list[Incoming]) -> None:
        """Store the messages; a part the database refuses (not an outage) is split until the
        message at fault is alone, which is then stored as rejected."""
        if not messages:
            return
        try:
            result = self._retried(lambda: self.store.append(messages))
        except _Outage:
            raise
        except Exception as problem:  # noqa: BLE001 - a message the store cannot hold
            self.stats.store_errors += 1
            if len(messages) > 1:
                middle = len(messages) // 2
                log.warning("recorder: an append of %d messages failed (%s); splitting it",
                            len(messages), one_line(problem))
                self._append(messages[:middle])
                self._append(messages[middle:])
                return
            self.stats.unstorable += 1
            self._append_rejected(messages[0], f"not storable as examined: "
                                               f"{type(problem).__name__}: {one_line(problem)}")
            return
        self._count(result)

    def _append_rejected(self, message: Incoming, reason: str) -> None:
        try:
            result = self._retried(lambda: self.store.append_rejected(message, reason))
        except _Outage:
            raise
        except Exception as problem:
            raise RecorderFailed(f"the store refused a message even as rejected "
                                 f"({one_line(problem)}); original problem: {reason}") \
                from problem
        log.warning("recorder: stored %s as rejected: %s", result.events[0].event_id
                    if result.events else "a repeat", reason)
        self._count(result)

    def _count(self, result: Any) -> None:
        stats = self.stats
        stats.stored += len(result.events)
        stats.duplicates += len(result.duplicates)
        stats.rejected += result.rejected

    def _retried(self, append: Callable[[], Any]) -> Any:
        stats = self.stats

        def attempt() -> Any:
            try:
                return append()
            except Exception as problem:
                if is_outage(problem):
                    raise _Outage(one_line(problem)) from problem
                raise

        def failed(_attempt: int, delay: float, problem: BaseException) -> None:
            stats.store_errors += 1
            log.error("recorder: the store is unavailable (%s); retrying in %.1f s, acks held",
                      problem, delay)

        return retry_call(attempt, self.retry, retry_on=_Outage, sleep=self.stopping.wait,
                          stop=self.stopping, before_retry=failed)


class BrokerRecorder:
    """The recorder on a STOMP broker: a durable ``client-individual`` subscription per recorded
    destination, all on one connection whose ``client-id`` is ``name``."""

    def __init__(self, store: Any, config: BrokerConfig, *, name: str = RECORDER_NAME,
                 destinations: Sequence[str] = RECORDED_DESTINATIONS,
                 batch_size: int = BATCH_SIZE, batch_wait: float = BATCH_WAIT,
                 prefetch: int = PREFETCH, heartbeat: float = 10.0,
                 backoff: Backoff | None = None,
                 on_fatal: Callable[[str], None] | None = None,
                 max_body: int = MAX_BODY) -> None:
        subscriptions = [Subscription(destination, subscription_name(name, destination),
                                      prefetch=prefetch) for destination in destinations]
        self._reading = True
        self.core = Recorder(store, self._ack, batch_size=batch_size, batch_wait=batch_wait,
                             max_body=max_body, wake=self._wake, on_fatal=on_fatal)
        self.consumer = StompConsumer(config, subscriptions, self.core.add, client_id=name,
                                      on_idle=self.core.flush, heartbeat=heartbeat,
                                      backoff=backoff, name=name, on_fatal=on_fatal,
                                      accepting=self._accepting, max_body=max_body)

    @property
    def stats(self) -> RecorderStats:
        return self.core.stats

    def _ack(self, batch: list[Delivery]) -> int:
        return self.consumer.ack(batch)

    def _accepting(self) -> bool:
        return self._reading and self.core.accepting()

    def _wake(self) -> None:
        self.consumer.wake()

    def start(self) -> None:
        self.core.start()
        self.consumer.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.consumer.ready.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading, let the writer store and ack what was received (for half of
        ``timeout`` at most: a database that is away holds it up), then close the connection.
        What was not acked by then the broker redelivers to the next start (the store absorbs
        what was stored already)."""
        self._reading = False
        self.consumer.wake()
        self.core.drain(timeout / 2)
        self.core.stopping.set()
        self.consumer.close(timeout)
        self.core.acking = False
        self.core.close(timeout)
        log.info("recorder stopped: %s", self.stats)


def subscription_name(name: str, destination: str) -> str:
    """A durable subscription name per destination, free of STOMP-escaped characters."""
    return f"{name}.{destination.strip('/').replace('/', '.')}"
