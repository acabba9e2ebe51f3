"""Transports: how a live agent host talks to the bus. Two implementations share one interface:

- ``stomp.StompTransport``: ActiveMQ over STOMP (stomp.py), for ``swf agent`` and ``swf run
  --broker``: persistent sends confirmed by receipts, durable subscriptions, heart-beats,
  reconnect with backoff and resubscription.
- ``memory.MemoryBroker``: the in-process bus with the same delivery rules (topics fan out,
  queues go to one consumer, unacked messages come back), which records every message in a store
  before delivering it, as the recorder would. For tests and single-process use.

The interface (``Transport``)::

    transport.subscribe(destination, durable_name=None)   # before start; kept over reconnects
    transport.start(on_delivery)     # connect; on_delivery(Delivery) is called on the
                                     # transport's thread and must not block
    transport.wait_ready(timeout)    # True once connected and subscribed
    transport.send([(destination, body, headers), ...])   # returns once the broker has them all
    transport.ack(delivery)          # after the work it caused is safe; False when the
                                     # ack could not go out (its connection is gone: the
                                     # broker redelivers the message)
    transport.close()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from agents.transport.broker import Delivery

Outgoing = tuple[str, bytes, Mapping[str, str] | None]  # destination, body, extra headers


class SendRefused(Exception):
    """The broker refused a message (an ERROR frame answered its receipt): resending is futile."""


class TransportClosed(Exception):
    """The transport was closed while a send was waiting."""


class Transport(Protocol):
    def subscribe(self, destination: str, *, durable_name: str | None = None) -> None: ...

    def start(self, on_delivery: Callable[[Delivery], None]) -> None: ...

    def wait_ready(self, timeout: float | None = None) -> bool: ...

    def send(self, messages: Sequence[Outgoing], *, timeout: float | None = None) -> None: ...

    def ack(self, delivery: Delivery) -> bool: ...

    def close(self) -> None: ...


__all__ = ["Delivery", "Outgoing", "SendRefused", "Transport", "TransportClosed"]
