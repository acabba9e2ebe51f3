"""The STOMP transport of live agents, on stomp.py.

- Sends are persistent (``persistent:true``) and confirmed: every SEND carries a receipt, and
  ``send`` returns only once the broker answered each one (ActiveMQ answers after storing a
  persistent message). A send interrupted by a lost connection is sent again after the
  reconnect; a message that was in fact stored twice is absorbed downstream by its msg_id.
- Subscriptions use ``client-individual`` acks. Topic subscriptions with a ``durable_name`` are
  durable (the connection's ``client-id`` plus ``activemq.subscriptionName``), so messages sent
  while the agent is down wait for it.
- A supervisor thread reconnects with exponential backoff (jittered) and resubscribes whenever
  the connection is lost (broker restart, network drop, heart-beat timeout).
- ``on_delivery`` runs on stomp.py's receive thread: the host hands the work off at once.
- An ack names a message of one connection only: acks of an earlier connection are dropped (the
  broker redelivers those messages, and the host recognizes the repeat).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import stomp

from agents.transport.broker import Backoff, BrokerConfig, Delivery

from . import Outgoing, SendRefused, TransportClosed

log = logging.getLogger("swf.transport.stomp")

DEFAULT_PREFETCH = 1000
_PASSCODE = re.compile(r"(passcode:)[^\\'\"\s,\]]*")


class _RedactPasscode(logging.Filter):
    """stomp.py logs every frame it sends at DEBUG, CONNECT's passcode included (its own
    redaction misses the bytes form): the password must not reach a log at any level."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "passcode" in text:
            record.msg, record.args = _PASSCODE.sub(r"\1********", text), ()
        return True


logging.getLogger("stomp.py").addFilter(_RedactPasscode())
_OK = ""  # receipt state: confirmed (None: still pending; other text: the broker's refusal)


@dataclass(frozen=True, slots=True)
class _Subscription:
    destination: str
    durable_name: str | None


class StompTransport:
    """One logical STOMP client (at most one ``client-id``) that outlives its connections."""

    def __init__(self, config: BrokerConfig, *, client_id: str | None = None,
                 heartbeat: float = 10.0, prefetch: int = DEFAULT_PREFETCH,
                 connect_timeout: float = 10.0, backoff: Backoff | None = None,
                 name: str = "swf") -> None:
        self.config = config
        self.client_id = client_id
        self.heartbeat_ms = int(heartbeat * 1000)
        self.prefetch = prefetch
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self.name = name
        self.connections = 0
        self._subscriptions: list[_Subscription] = []
        self._on_delivery: Callable[[Delivery], None] | None = None
        self._cond = threading.Condition()
        self._conn: Any = None
        self._generation = 0
        self._connected = False  # connected and subscribed: sends may go out
        self._receipts: dict[str, str | None] = {}
        self._numbers = itertools.count(1)
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._ready = threading.Event()
        self._supervisor: threading.Thread | None = None

    # -- the Transport interface ---------------------------------------------------------------

    def subscribe(self, destination: str, *, durable_name: str | None = None) -> None:
        if durable_name and not self.client_id:
            raise ValueError("a durable subscription needs a client_id")
        self._subscriptions.append(_Subscription(destination, durable_name))

    def start(self, on_delivery: Callable[[Delivery], None] | None = None) -> None:
        self._on_delivery = on_delivery
        self._supervisor = threading.Thread(target=self._supervise, name=f"{self.name}-stomp",
                                            daemon=True)
        self._supervisor.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def send(self, messages: Sequence[Outgoing], *, timeout: float | None = None) -> None:
        """Send and wait for the broker's receipts; resend after a reconnect what was not
        confirmed. Raises SendRefused (the broker said no), TimeoutError, TransportClosed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = list(messages)
        refused: list[str] = []
        while pending:
            conn, generation = self._connection(deadline)
            receipts: list[str] = []
            try:
                for destination, body, headers in pending:
                    receipt = self._new_receipt()
                    receipts.append(receipt)
                    frame_headers = {"persistent": "true", **(headers or {}), "receipt": receipt}
                    conn.send(destination, body, headers=frame_headers)
            except Exception as problem:  # noqa: BLE001 - stomp.py raises whatever the socket did
                log.warning("%s: send failed (%s); resending after reconnect", self.name,
                            str(problem) or type(problem).__name__)
                self._lost(generation)
            states = self._await_receipts(receipts, generation, deadline)
            still = []
            for index, message in enumerate(pending):
                state = states[index] if index < len(states) else None
                if state is None:
                    still.append(message)
                elif state != _OK:
                    refused.append(f"{message[0]}: {state}")
            pending = still
        if refused:
            raise SendRefused("; ".join(refused))

    def ack(self, delivery: Delivery) -> bool:
        with self._cond:
            conn, generation = self._conn, self._generation
        if conn is None or delivery.generation != generation or not delivery.ack_id:
            return False
        try:
            conn.ack(delivery.ack_id)
            return True
        except Exception:  # noqa: BLE001 - the connection just died; the broker redelivers
            return False

    def close(self, timeout: float = 5.0) -> None:
        self._closing.set()
        self._wake.set()
        with self._cond:
            conn, self._conn = self._conn, None
            self._connected = False
            self._cond.notify_all()
        self._ready.clear()
        if conn is not None:
            _disconnect(conn)
        if self._supervisor is not None:
            self._supervisor.join(timeout)

    # -- connection management -----------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._closing.is_set():
            if not self._ready.is_set():
                try:
                    self._connect()
                    self.backoff.reset()
                except Exception as problem:  # noqa: BLE001 - any failure: back off and retry
                    if self._closing.is_set():
                        break
                    delay = self.backoff.next()
                    log.warning("%s: cannot connect to %s (%s); retrying in %.1f s", self.name,
                                self.config.address, str(problem) or type(problem).__name__, delay)
                    self._closing.wait(delay)
                    continue
            self._wake.wait()
            self._wake.clear()

    def _connect(self) -> None:
        config = self.config
        with self._cond:
            generation = self._generation + 1
        host = (config.host, config.port)
        # One stomp.py connection per attempt: its objects are not meant to be restarted. Its own
        # retry loop is disabled (one attempt, no sleep); this class does the backoff.
        conn = stomp.Connection12([host], heartbeats=(self.heartbeat_ms, self.heartbeat_ms),
                                  auto_decode=False, reconnect_attempts_max=1,
                                  reconnect_sleep_initial=0.0, reconnect_sleep_max=0.0,
                                  timeout=self.connect_timeout, vhost=config.vhost,
                                  try_loopback_connect=False, keepalive=True)
        if config.tls:
            conn.set_ssl(for_hosts=[host], key_file=config.key_file, cert_file=config.cert_file,
                         ca_certs=config.ca_certs, verify=config.verify)
        listener = _Listener(self, generation)
        conn.set_listener("swf", listener)
        try:
            conn.connect(username=config.user, passcode=config.password, wait=False,
                         headers={"client-id": self.client_id} if self.client_id else {})
            if not listener.connected.wait(self.connect_timeout) or listener.error:
                raise ConnectionError(listener.error or "no CONNECTED frame from the broker")
            with self._cond:
                self._conn, self._generation = conn, generation
            receipts = []
            for index, subscription in enumerate(self._subscriptions):
                receipt = self._new_receipt()
                receipts.append(receipt)
                headers = {"receipt": receipt, "activemq.prefetchSize": str(self.prefetch)}
                if subscription.durable_name:
                    headers["activemq.subscriptionName"] = subscription.durable_name
                conn.subscribe(subscription.destination, id=f"s{index}",
                               ack="client-individual", headers=headers)
            states = self._await_receipts(receipts, generation,
                                          time.monotonic() + self.connect_timeout)
            if any(state != _OK for state in states):
                raise ConnectionError(f"subscription refused: {states}")
        except BaseException:
            with self._cond:
                if self._conn is conn:
                    self._conn = None
            _disconnect(conn)
            raise
        with self._cond:
            self._connected = True
            self._cond.notify_all()
        self.connections += 1
        self._ready.set()
        log.info("%s: connected to %s (connection %d)", self.name, config.address,
                 self.connections)

    def _connection(self, deadline: float | None) -> tuple[Any, int]:
        with self._cond:
            while not self._connected:
                if self._closing.is_set():
                    raise TransportClosed(f"{self.name}: transport closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"{self.name}: not connected to {self.config.address}")
                self._cond.wait(remaining if remaining is not None else 1.0)
            return self._conn, self._generation

    def _new_receipt(self) -> str:
        receipt = f"{self.name}-{next(self._numbers)}"
        with self._cond:
            self._receipts[receipt] = None
        return receipt

    def _await_receipts(self, receipts: list[str], generation: int, deadline: float | None
                        ) -> list[str | None]:
        """Each receipt's state once all arrived, or the connection was lost, or time is up."""
        with self._cond:
            while True:
                states = [self._receipts.get(receipt) for receipt in receipts]
                if all(state is not None for state in states):
                    break
                if self._generation != generation or not (self._conn is not None) \
                        or self._closing.is_set():
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining if remaining is not None else 1.0)
            for receipt in receipts:
                self._receipts.pop(receipt, None)
        if self._closing.is_set() and any(state is None for state in states):
            raise TransportClosed(f"{self.name}: transport closed")
        return states

    # -- called from stomp.py's threads ------------------------------------------------------

    def _receipt(self, receipt: str | None, refusal: str | None) -> None:
        with self._cond:
            if receipt in self._receipts:
                self._receipts[receipt] = refusal or _OK
                self._cond.notify_all()

    def _lost(self, generation: int) -> None:
        with self._cond:
            if generation != self._generation or (self._conn is None and not self._connected):
                return
            conn, self._conn = self._conn, None
            self._connected = False
            self._cond.notify_all()
        self._ready.clear()
        if not self._closing.is_set():
            log.warning("%s: lost connection to %s; reconnecting", self.name,
                        self.config.address)
        if conn is not None:
            threading.Thread(target=_disconnect, args=(conn,), daemon=True).start()
        self._wake.set()

    def _deliver(self, frame: Any, generation: int) -> None:
        headers = dict(frame.headers)
        body = frame.body if isinstance(frame.body, bytes) else (frame.body or "").encode()
        on_delivery = self._on_delivery
        if on_delivery is not None:
            on_delivery(Delivery(headers.get("destination", ""), headers, body,
                                 headers.get("ack"), generation))


class _Listener(stomp.ConnectionListener):
    def __init__(self, owner: StompTransport, generation: int) -> None:
        self.owner = owner
        self.generation = generation
        self.connected = threading.Event()
        self.error: str | None = None

    def on_connected(self, frame: Any) -> None:
        self.connected.set()

    def on_message(self, frame: Any) -> None:
        self.owner._deliver(frame, self.generation)

    def on_receipt(self, frame: Any) -> None:
        self.owner._receipt(frame.headers.get("receipt-id"), None)

    def on_error(self, frame: Any) -> None:
        text = frame.headers.get("message") or "broker error"
        receipt = frame.headers.get("receipt-id")
        if receipt:
            self.owner._receipt(receipt, text)
        else:
            log.warning("%s: broker error: %s", self.owner.name, text)
            self.error = text
            self.connected.set()  # wake a connect waiting for CONNECTED

    def on_heartbeat_timeout(self) -> None:
        log.warning("%s: no heart-beat from the broker", self.owner.name)

    def on_disconnected(self) -> None:
        self.owner._lost(self.generation)


def _disconnect(conn: Any) -> None:
    """Close a stomp.py connection without waiting on a broker that may be gone."""
    with contextlib.suppress(Exception):
        if conn.is_connected():
            conn.disconnect()
    with contextlib.suppress(Exception):
        conn.transport.disconnect_socket()
