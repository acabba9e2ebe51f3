"""A lean STOMP 1.2 consumer for the recorder: durable subscriptions, ``client-individual`` acks
written a batch at a time, heart-beats, reconnect with backoff and resubscription.

Why not stomp.py here: its receive path (regex frame parsing, listener dispatch) and one
``sendall`` per ACK cap a durable subscriber at about 7k msg/s on this 2-core machine, below the
recorder's 10k msg/s target, while the broker itself delivers about 30k msg/s. This client parses
frames out of 256 kB reads and writes all the acks of a committed batch in one write. The
agents, which mostly send and need receipts, use stomp.py (agents/transport/stomp.py).

One thread per consumer does all its I/O: it connects, subscribes, parses, hands each MESSAGE
to ``on_message`` and, after each read, calls ``on_idle`` (the recorder hands what was read to
its writer thread there), which says when it wants to be called again. Its socket is
non-blocking and written only as far as the broker reads: blocked in a write while the broker is
blocked writing to us, neither side would read again. While ``accepting`` says no, the socket is
not read, but heart-beats and acks still go out. ``ack`` and ``wake`` may be called from any
thread.

What is not STOMP (a content-length that is not ASCII digits, a body not ended by NUL, a header
block over MAX_HEADER) is a ``ProtocolError``: the connection is dropped and opened again after a
backoff, as after an ERROR frame; the backoff is reset only once every subscription is
confirmed. A body over MAX_BODY is read past (``FrameReader``). Any other error in the I/O
thread ends the consumer and is reported once to ``on_fatal``.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agents.transport.broker import (
    Backoff,
    BrokerConfig,
    Delivery,
    escape_header,
    one_line,
    unescape_header,
)

log = logging.getLogger("swf.broker.consumer")

RECV_BYTES = 1 << 18
# Frame bounds. ActiveMQ's own STOMP limits are 1000 headers of 10 kB and 100 MB bodies; the
# header bound is above what it can send (so a stock broker never trips it); the body bound is
# far above what the pipeline sends: a larger body is read past, not held (see FrameReader).
MAX_HEADER = 16 << 20
MAX_BODY = 16 << 20
KEEP = 64 << 10  # bytes of an oversized body kept, to show what it was
_EOL, _CR = 10, 13


class BrokerRefused(Exception):
    """The broker answered with an ERROR frame (bad credentials, client-id in use...)."""


@dataclass(frozen=True, slots=True)
class Subscription:
    destination: str
    durable_name: str | None = None  # activemq.subscriptionName: survives disconnects
    ack: str = "client-individual"
    prefetch: int | None = None  # activemq.prefetchSize: unacked messages the broker may push
    selector: str | None = None  # a JMS selector: only matching messages are delivered

    def headers(self, sub_id: str) -> dict[str, str]:
        headers = {"destination": self.destination, "id": sub_id, "ack": self.ack}
        if self.durable_name:
            headers["activemq.subscriptionName"] = self.durable_name
        if self.prefetch:
            headers["activemq.prefetchSize"] = str(self.prefetch)
        if self.selector:
            headers["selector"] = self.selector
        return headers


# (command, headers, body, discarded): ``discarded`` counts body bytes over the bound that were
# read past and dropped (``body`` then holds only the first KEEP bytes).
Frame = tuple[str, dict[str, str], bytes, int]
# A frame whose body is over the bound: (command, headers, content-length or None: up to NUL).
_Big = tuple[str, dict[str, str], "int | None"]


class ProtocolError(Exception):
    """The broker sent something that is not STOMP: the connection cannot be trusted further."""


def encode_frame(command: str, headers: dict[str, str], body: bytes = b"", *,
                 escape: bool = True) -> bytes:
    lines = [command]
    for name, value in headers.items():
        lines.append(f"{escape_header(name)}:{escape_header(value)}" if escape
                     else f"{name}:{value}")
    head = ("\n".join(lines) + "\n\n").encode()
    return head + body + b"\x00"


def parse_frames(buf: bytes, max_header: int = MAX_HEADER, max_body: int = MAX_BODY
                 ) -> tuple[list[Frame], int, int, _Big | None]:
    """Complete frames at the start of ``buf``; the offset where parsing stopped; how many bytes
    from there the next frame needs at least (0: unknown); and, when parsing stopped at a frame
    whose body is over ``max_body``, that frame (the offset is then its body's start).

    Heart-beat EOLs between frames are skipped; ``content-length`` bodies may hold NUL bytes
    and must be followed by one. Raises ``ProtocolError`` for what STOMP does not allow: a
    content-length that is not ASCII digits, a body not ended by NUL, a header block over
    ``max_header`` bytes."""
    frames: list[Frame] = []
    pos, size = 0, len(buf)
    find = buf.find
    while pos < size:
        first = buf[pos]
        if first == _EOL:
            pos += 1
            continue
        if first == _CR:
            if pos + 1 >= size:
                break
            if buf[pos + 1] == _EOL:
                pos += 2
                continue
        head_end = find(b"\n\n", pos, pos + max_header + 2)
        if head_end < 0:
            head_end = find(b"\n\r\n", pos, pos + max_header + 3)
            if head_end < 0:
                if size - pos > max_header:
                    raise ProtocolError(f"a frame's header block is over {max_header} bytes")
                break
            body_start = head_end + 3
        else:
            crlf = find(b"\n\r\n", pos, head_end + 1)  # only before the \n\n: stays linear
            if crlf >= 0:
                head_end, body_start = crlf, crlf + 3
            else:
                body_start = head_end + 2
        text = buf[pos:head_end].decode("utf-8", "replace")
        lines = text.split("\n")
        if "\r" in text:
            lines = [line.rstrip("\r") for line in lines]
        command = lines[0]
        escaped = command != "CONNECTED"  # CONNECT/CONNECTED headers are not escaped
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if escaped and "\\" in line:
                name, value = unescape_header(name), unescape_header(value)
            if name not in headers:  # STOMP 1.2: the first of repeated headers wins
                headers[name] = value
        length_text = headers.get("content-length")
        if length_text is not None:
            if not (length_text.isascii() and length_text.isdigit()):
                raise ProtocolError(f"{command} frame with content-length "
                                    f"{length_text[:20]!r}: not a number")
            length = int(length_text)
            if length > max_body:
                return frames, body_start, 0, (command, headers, length)
            body_end = body_start + length
            if body_end >= size:
                return frames, pos, body_end + 1 - pos, None
            if buf[body_end] != 0:
                raise ProtocolError(f"{command} frame: no NUL after its content-length body "
                                    f"of {length} bytes")
        else:
            body_end = find(b"\x00", body_start, body_start + max_body + 1)
            if body_end < 0:
                if size - body_start > max_body:
                    return frames, body_start, 0, (command, headers, None)
                break
        frames.append((command, headers, buf[body_start:body_end], 0))
        pos = body_end + 1
    return frames, pos, 0, None


class FrameReader:
    """Frames out of a byte stream, each bounded: a header block over ``max_header`` bytes is a
    ``ProtocolError``; a body over ``max_body`` is read past (its first ``keep`` bytes kept, the
    rest dropped as it arrives, its NUL checked) and comes out as one frame that says how much
    was dropped. So no frame holds more than the bounds in memory, and an oversized MESSAGE can
    still be stored (as rejected) and acked instead of being redelivered forever."""

    def __init__(self, max_header: int = MAX_HEADER, max_body: int = MAX_BODY,
                 keep: int = KEEP) -> None:
        self.max_header, self.max_body, self.keep = max_header, max_body, min(keep, max_body)
        self._chunks: list[bytes] = []
        self._have = 0  # bytes in _chunks
        self._need = 0  # bytes the incomplete frame in _chunks needs at least
        self._ready: list[Frame] = []  # parsed, not handed out yet
        self._big: _Big | None = None  # the oversized frame being read past
        self._kept = bytearray()
        self._left: int | None = 0  # its body bytes still to come (None: up to a NUL)
        self._dropped = 0

    @property
    def buffered(self) -> bool:
        return bool(self._have or self._ready)

    def unread(self, frames: list[Frame]) -> None:
        """Frames to hand out first on the next ``feed``."""
        self._ready[:0] = frames

    def feed(self, data: bytes) -> list[Frame]:
        frames, self._ready = self._ready, []
        while data:
            if self._big is not None:
                data = self._skip(data, frames)
                continue
            self._chunks.append(data)
            self._have += len(data)
            data = b""
            if self._have < self._need:
                break
            buf = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
            parsed, pos, self._need, big = parse_frames(buf, self.max_header, self.max_body)
            frames += parsed
            rest = buf[pos:]
            if big is not None:
                self._big, self._left, self._kept, self._dropped = big, big[2], bytearray(), 0
                self._chunks, self._have, self._need = [], 0, 0
                data = rest
            else:
                self._chunks, self._have = ([rest] if rest else []), len(rest)
        return frames

    def _skip(self, data: bytes, frames: list[Frame]) -> bytes:
        """Read past the oversized frame's body; returns what follows it."""
        if self._left is None:  # no content-length: the body ends at the first NUL
            end = data.find(b"\x00")
            body, after = (data, b"") if end < 0 else (data[:end], data[end:])
        else:
            body, after = data[:self._left], data[self._left:]
            self._left -= len(body)
        room = self.keep - len(self._kept)
        if room > 0:
            self._kept += body[:room]
        self._dropped += max(0, len(body) - max(room, 0))
        if not after or (self._left is not None and self._left > 0):
            return after
        if after[0] != 0:
            raise ProtocolError("oversized frame: no NUL after its content-length body")
        assert self._big is not None
        command, headers, _length = self._big
        frames.append((command, headers, bytes(self._kept), self._dropped))
        self._big = None
        return after[1:]


class StompConsumer:
    """One logical consumer (one ``client-id``) that stays subscribed until ``close``."""

    def __init__(self, config: BrokerConfig, subscriptions: Sequence[Subscription],
                 on_message: Callable[[Delivery], None], *, client_id: str | None = None,
                 on_idle: Callable[[], float | None] | None = None,
                 heartbeat: float = 10.0, connect_timeout: float = 10.0,
                 backoff: Backoff | None = None, name: str = "consumer",
                 on_fatal: Callable[[str], None] | None = None,
                 accepting: Callable[[], bool] | None = None,
                 max_header: int = MAX_HEADER, max_body: int = MAX_BODY) -> None:
        self.config = config
        # False: the owner holds enough; the socket is not read (heart-beats and acks still go
        # out) until it says True again and calls ``wake``.
        self.accepting = accepting
        self.max_header, self.max_body = max_header, max_body
        self.protocol_errors = 0
        self.refusals = 0  # ERROR frames received
        self.on_fatal = on_fatal  # told once, with a one-line reason, when the consumer gives up
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.on_idle = on_idle  # -> seconds until it wants to run again (None: no hurry)
        self.client_id = client_id
        self.heartbeat_ms = int(heartbeat * 1000)
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self.name = name
        self.ready = threading.Event()  # connected, and every subscription confirmed
        self.generation = 0
        self.connections = 0
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._outbox: deque[tuple[int, bytes]] = deque()  # frames to write, by connection
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_write.setblocking(False)
        self._wanted: set[str] = set()  # subscription receipts still to come
        self._send_every: float | None = None  # heart-beat to send, seconds (negotiated)
        self._silence: float | None = None  # no byte for this long: the broker is gone

    # -- public --------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-io", daemon=True)
        self._thread.start()

    def ack(self, deliveries: Iterable[Delivery]) -> int:
        """Queue the acks of deliveries of the current connection as one write; returns how
        many. Deliveries of an earlier connection are skipped: the broker redelivers them."""
        generation = self.generation
        frames = [b"ACK\nid:%s\n\n\x00" % escape_header(d.ack_id).encode()
                  for d in deliveries if d.generation == generation and d.ack_id]
        if frames:
            self._queue(generation, b"".join(frames))
        return len(frames)

    def wake(self) -> None:
        """Have the I/O thread look again (e.g. at ``accepting``)."""
        self._wake()

    def close(self, timeout: float = 5.0) -> None:
        self._closing.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        for end in (self._wake_read, self._wake_write):
            end.close()

    # -- connection ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._connect_loop()
        except Exception as problem:  # noqa: BLE001 - a dead I/O thread must not look alive
            reason = f"{self.name}: stopped by an unexpected error: {one_line(problem)}"
            log.error("%s", reason, exc_info=True)
            self.ready.clear()
            if self.on_fatal is not None:
                self.on_fatal(reason)

    def _connect_loop(self) -> None:
        while not self._closing.is_set():
            try:
                sock, reader, generation = self._open()
            except (OSError, BrokerRefused, ProtocolError) as problem:
                if self._closing.is_set():
                    break
                self._count(problem)
                delay = self.backoff.next()
                log.warning("%s: cannot connect to %s (%s); retrying in %.1f s", self.name,
                            self.config.address, one_line(problem), delay)
                self._closing.wait(delay)
                continue
            reason = "closed"
            try:
                self._serve(sock, reader, generation)
            except (OSError, BrokerRefused, ProtocolError) as problem:
                self._count(problem)
                reason = one_line(problem)
            finally:
                self.ready.clear()
                _shut(sock)
            if not self._closing.is_set():
                # The backoff is reset only once a connection got all its subscriptions: a
                # broker that accepts the CONNECT but refuses a SUBSCRIBE (an ERROR frame, then
                # it closes) is not hammered with reconnects.
                delay = self.backoff.next()
                log.warning("%s: lost connection to %s (%s); reconnecting in %.1f s", self.name,
                            self.config.address, reason, delay)
                self._closing.wait(delay)

    def _count(self, problem: BaseException) -> None:
        if isinstance(problem, ProtocolError):
            self.protocol_errors += 1
        elif isinstance(problem, BrokerRefused):
            self.refusals += 1

    def _open(self) -> tuple[socket.socket, FrameReader, int]:
        """Connect (blocking, bounded by connect_timeout), CONNECT, queue the SUBSCRIBEs."""
        config = self.config
        sock = socket.create_connection((config.host, config.port), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if config.tls:
                sock = tls_context(config).wrap_socket(sock, server_hostname=config.host)
            headers = {"accept-version": "1.2", "host": config.vhost or config.host,
                       "heart-beat": f"{self.heartbeat_ms},{self.heartbeat_ms}"}
            if self.client_id:
                headers["client-id"] = self.client_id
            if config.user is not None:
                headers["login"] = config.user
            if config.password is not None:
                headers["passcode"] = config.password
            sock.sendall(encode_frame("CONNECT", headers, escape=False))
            reader = FrameReader(self.max_header, self.max_body)
            command, answer, body, _dropped = _first_frame(sock, reader)
            if command != "CONNECTED":
                raise BrokerRefused(_error_text(answer, body))
            self._negotiate(answer.get("heart-beat", "0,0"))
            self.connections += 1
            self.generation += 1
            generation = self.generation
            self._outbox.clear()  # frames for an earlier connection mean nothing here
            self._wanted = set()
            for index, subscription in enumerate(self.subscriptions):
                receipt = f"sub-{generation}-{index}"
                self._wanted.add(receipt)
                self._queue(generation, encode_frame(
                    "SUBSCRIBE", {**subscription.headers(f"s{index}"), "receipt": receipt}))
            if not self._wanted:
                self.backoff.reset()
                self.ready.set()
            return sock, reader, generation
        except BaseException:
            _shut(sock)
            raise

    def _negotiate(self, server: str) -> None:
        """Heart-beats as STOMP 1.2 negotiates them; a silent broker is taken for gone."""
        try:
            server_send, server_want = (int(part) for part in server.split(","))
        except ValueError:
            server_send = server_want = 0
        mine = self.heartbeat_ms
        self._send_every = max(mine, server_want) / 1000 if mine and server_want else None
        expect = max(mine, server_send) / 1000 if mine and server_send else 0.0
        self._silence = expect * 2 + 1.0 if expect else None

    def _serve(self, sock: socket.socket, reader: FrameReader, generation: int) -> None:
        """The connection's one I/O loop: non-blocking reads and writes on one thread (a TLS
        socket must not be read and written concurrently), so it never sits in a write while
        the broker sits in one too. While the owner is not ``accepting``, the socket is not
        read: TCP and the broker's prefetch window hold what comes, and heart-beats and acks
        still go out, so the broker keeps the connection."""
        on_message, on_idle, closing = self.on_message, self.on_idle, self._closing
        accepting = self.accepting
        silence, beat_every = self._silence, self._send_every
        sock.setblocking(False)
        out = bytearray()
        now = heard = wrote = time.monotonic()
        received: bytes | None = b""
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while not closing.is_set():
                reading = accepting is None or accepting()
                if received or (reading and reader.buffered):
                    for command, headers, body, dropped in reader.feed(received or b""):
                        if command == "MESSAGE":
                            on_message(Delivery(headers.get("destination", ""), headers, body,
                                                headers.get("ack"), generation, dropped))
                        elif command == "RECEIPT":
                            self._receipt(headers.get("receipt-id", ""))
                        elif command == "ERROR":
                            raise BrokerRefused(_error_text(headers, body))
                    received = None
                    reading = accepting is None or accepting()
                waits = [on_idle() if on_idle is not None else None, silence]
                while self._outbox:
                    queued_for, data = self._outbox.popleft()
                    if queued_for == generation:
                        out += data
                if beat_every is not None:
                    if not out and now - wrote >= beat_every / 2:
                        out += b"\n"
                    waits.append(beat_every / 2)
                events = (selectors.EVENT_READ if reading else 0) \
                    | (selectors.EVENT_WRITE if out else 0)
                if events:
                    selector.modify(sock, events)
                else:
                    selector.unregister(sock)
                timeout = 0.0 if reading and _tls_pending(sock) else \
                    min((w for w in waits if w is not None), default=None)
                ready = {key.fd: mask for key, mask in selector.select(timeout)}
                if not events:
                    selector.register(sock, selectors.EVENT_READ)
                now = time.monotonic()
                if self._wake_read.fileno() in ready:
                    with contextlib.suppress(BlockingIOError):
                        self._wake_read.recv(4096)
                mask = ready.get(sock.fileno(), 0)
                if out and mask & selectors.EVENT_WRITE:
                    with contextlib.suppress(BlockingIOError, ssl.SSLWantWriteError,
                                             ssl.SSLWantReadError):
                        del out[:sock.send(out)]
                        wrote = now
                if not reading:
                    heard = now  # the broker is not listened to meanwhile: not judged either
                elif mask & selectors.EVENT_READ or _tls_pending(sock):
                    received = _receive(sock)
                    if received == b"":
                        raise ConnectionError("connection closed by the broker")
                    if received:
                        heard = now
                elif silence is not None and now - heard > silence:
                    raise ConnectionError("no heart-beat from the broker")
            while self._outbox:  # the acks queued last, before the DISCONNECT
                queued_for, data = self._outbox.popleft()
                if queued_for == generation:
                    out += data
            _goodbye(sock, bytes(out))

    def _receipt(self, receipt: str) -> None:
        self._wanted.discard(receipt)
        if not self._wanted and not self.ready.is_set():
            log.info("%s: subscribed on %s", self.name, self.config.address)
            self.backoff.reset()
            self.ready.set()

    def _queue(self, generation: int, data: bytes) -> None:
        self._outbox.append((generation, data))
        if threading.current_thread() is not self._thread:
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_write.send(b"!")


def _receive(sock: socket.socket) -> bytes | None:
    """Bytes read (b"" when the peer closed), or None when nothing could be read yet."""
    try:
        return sock.recv(RECV_BYTES)
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return None


def _tls_pending(sock: socket.socket) -> bool:
    """TLS may hold decrypted bytes that select() cannot see."""
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


def _goodbye(sock: socket.socket, rest: bytes) -> None:
    """On close: what was queued (acks), then DISCONNECT; best effort, briefly."""
    with contextlib.suppress(OSError):
        sock.setblocking(True)
        sock.settimeout(1.0)
        sock.sendall(rest + b"DISCONNECT\n\n\x00")


def tls_context(config: BrokerConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ca_certs)
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.cert_file:
        context.load_cert_chain(config.cert_file, config.key_file or None)
    return context


def _first_frame(sock: socket.socket, reader: FrameReader) -> Frame:
    while True:
        data = sock.recv(RECV_BYTES)
        if not data:
            raise ConnectionError("connection closed during CONNECT")
        frames = reader.feed(data)
        if frames:
            # Anything after the first frame (unlikely before SUBSCRIBE) is kept for the reader.
            reader.unread(frames[1:])
            return frames[0]


def _error_text(headers: dict[str, str], body: bytes) -> str:
    text = headers.get("message") or body.decode("utf-8", "replace").strip().splitlines()[0:1]
    return f"broker error: {text if isinstance(text, str) else ''.join(text) or 'no message'}"


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
