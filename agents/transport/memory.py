"""The in-process bus behind the ``Transport`` interface: live hosts in one process, no broker.

Delivery rules as on ActiveMQ with the project's configuration: a topic message goes to every
subscription of the topic; a queue message to one consumer (round robin); a durable subscription
keeps what arrives while its client is away; a message delivered but not acked goes back (to
the subscription, or to the queue) when its client closes, flagged ``redelivered``.

With a ``store`` every message is appended before it is delivered, under the destination it was
sent to: the bus records as the recorder does, so hosts that ack after recording make progress.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.transport.broker import Delivery
from eventstore.envelope import Incoming

from . import Outgoing, TransportClosed


@dataclass
class _Message:
    message_id: str
    destination: str
    body: bytes
    headers: dict[str, str]


@dataclass(eq=False)
class _Sub:
    destination: str
    key: tuple[str, str] | None  # (client_id, durable_name) for durable subscriptions
    client: MemoryTransport | None = None
    backlog: deque[tuple[_Message, bool]] = field(default_factory=deque)
    unacked: dict[str, _Message] = field(default_factory=dict)


class MemoryBroker:
    def __init__(self, store: Any = None) -> None:
        self.store = store
        self.published = 0
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._topics: dict[str, list[_Sub]] = {}
        self._durable: dict[tuple[str, str], _Sub] = {}
        self._queues: dict[str, deque[tuple[_Message, bool]]] = {}
        self._consumers: dict[str, list[_Sub]] = {}
        self._turn: dict[str, int] = {}

    def transport(self, client_id: str | None = None) -> MemoryTransport:
        return MemoryTransport(self, client_id)

    def publish(self, destination: str, body: bytes, headers: dict[str, str] | None = None
                ) -> None:
        with self._lock:
            number = next(self._ids)
            full = {"message-id": f"ID:memory-{number}", "destination": destination,
                    **(headers or {})}
            message = _Message(full["message-id"], destination, body, full)
            if self.store is not None:
                self.store.append([Incoming(destination, body, dict(full))])
            self.published += 1
            if destination.startswith("/queue/"):
                self._queues.setdefault(destination, deque()).append((message, False))
                self._dispatch_queue(destination)
            else:
                for sub in list(self._topics.get(destination, ())):
                    sub.backlog.append((message, False))
                    self._drain(sub)

    # -- called by transports (under the lock) -------------------------------------------------

    def _attach(self, client: MemoryTransport, destination: str, durable_name: str | None) -> _Sub:
        if destination.startswith("/queue/"):
            sub = _Sub(destination, None, client)
            self._consumers.setdefault(destination, []).append(sub)
            return sub
        key = (client.client_id or "", durable_name) if durable_name else None
        found = self._durable.get(key) if key else None
        if found is None:
            sub = _Sub(destination, key)
            self._topics.setdefault(destination, []).append(sub)
            if key:
                self._durable[key] = sub
        else:
            sub = found
        sub.client = client
        return sub

    def _start(self, sub: _Sub) -> None:
        if sub.destination.startswith("/queue/"):
            self._dispatch_queue(sub.destination)
        else:
            self._drain(sub)

    def _drain(self, sub: _Sub) -> None:
        while sub.client is not None and sub.client.running and sub.backlog:
            message, redelivered = sub.backlog.popleft()
            self._hand(sub, message, redelivered)

    def _dispatch_queue(self, destination: str) -> None:
        waiting = self._queues.get(destination)
        consumers = [sub for sub in self._consumers.get(destination, ())
                     if sub.client is not None and sub.client.running]
        while waiting and consumers:
            turn = self._turn.get(destination, 0) % len(consumers)
            self._turn[destination] = turn + 1
            message, redelivered = waiting.popleft()
            self._hand(consumers[turn], message, redelivered)

    def _hand(self, sub: _Sub, message: _Message, redelivered: bool) -> None:
        client = sub.client
        assert client is not None
        ack_id = f"{message.message_id}/{id(sub)}"
        sub.unacked[ack_id] = message
        headers = dict(message.headers)
        if redelivered:
            headers["redelivered"] = "true"
        client.deliver(Delivery(message.destination, headers, message.body, ack_id, 1), sub)

    def _ack(self, sub: _Sub, ack_id: str) -> None:
        sub.unacked.pop(ack_id, None)

    def _detach(self, sub: _Sub) -> None:
        returned = [(message, True) for message in sub.unacked.values()]
        sub.unacked.clear()
        sub.client = None
        if sub.destination.startswith("/queue/"):
            self._consumers[sub.destination].remove(sub)
            self._queues.setdefault(sub.destination, deque()).extendleft(reversed(returned))
            self._dispatch_queue(sub.destination)
        elif sub.key is not None:  # durable: keep it, with what was not acked in front
            sub.backlog.extendleft(reversed(returned))
        else:
            self._topics[sub.destination].remove(sub)


class MemoryTransport:
    def __init__(self, broker: MemoryBroker, client_id: str | None) -> None:
        self.broker = broker
        self.client_id = client_id
        self.running = False
        self._wanted: list[tuple[str, str | None]] = []
        self._subs: list[_Sub] = []
        self._on_delivery: Callable[[Delivery], None] | None = None
        self._ready = threading.Event()

    def subscribe(self, destination: str, *, durable_name: str | None = None) -> None:
        self._wanted.append((destination, durable_name))

    def start(self, on_delivery: Callable[[Delivery], None] | None = None) -> None:
        self._on_delivery = on_delivery
        with self.broker._lock:
            self._subs = [self.broker._attach(self, destination, durable)
                          for destination, durable in self._wanted]
            self.running = True
            for sub in self._subs:
                self.broker._start(sub)
        self._ready.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def send(self, messages: Sequence[Outgoing], *, timeout: float | None = None) -> None:
        if not self.running:
            raise TransportClosed("memory transport closed")
        for destination, body, headers in messages:
            self.broker.publish(destination, body, dict(headers or {}))

    def ack(self, delivery: Delivery) -> bool:
        with self.broker._lock:
            for sub in self._subs:
                if delivery.ack_id in sub.unacked:
                    self.broker._ack(sub, delivery.ack_id)
                    return True
        return False

    def close(self) -> None:
        with self.broker._lock:
            self.running = False
            for sub in self._subs:
                self.broker._detach(sub)
            self._subs = []
        self._ready.clear()

    def deliver(self, delivery: Delivery, sub: _Sub) -> None:
        if self._on_delivery is not None:
            self._on_delivery(delivery)
