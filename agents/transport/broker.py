"""What every broker client of the project shares: where the broker is and how to log in
(``BrokerConfig``), a received message (``Delivery``), reconnect backoff, and which destinations
the pipeline records.

``BrokerConfig`` is a plain value: the application shell (swf/settings.py) builds it from the
command line, the environment and the config file. Credentials are kept out of ``repr`` and
``address``, so logging a config or an error never shows them.

    stomp://HOST:PORT          plain TCP
    stomp+ssl://HOST:PORT      TLS (also ``stomp+tls://``, ``ssl://``, ``stomps://``)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agents.transport.destinations import queue_of

DEFAULT_PORT = 61613
PLAIN_SCHEMES = frozenset({"stomp", "tcp"})
TLS_SCHEMES = frozenset({"stomp+ssl", "stomp+tls", "ssl", "stomps"})


class BrokerConfigError(ValueError):
    """A broker URL or setting is unusable; the message is one line and holds no secret."""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where the broker is and how to log in (``from_url`` reads a stomp:// URL)."""

    host: str
    port: int = DEFAULT_PORT
    tls: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_certs: str | None = None
    cert_file: str | None = None
    key_file: str | None = field(default=None, repr=False)
    verify: bool = True
    vhost: str | None = None

    @property
    def address(self) -> str:
        """The broker's URL without credentials: the one form that appears in logs."""
        return f"{'stomp+ssl' if self.tls else 'stomp'}://{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.address

    @classmethod
    def from_url(cls, url: str, **options: Any) -> BrokerConfig:
        """The broker at ``url`` (credentials in its userinfo are used unless ``options`` give
        ``user``/``password``); ``options`` set the other fields, None meaning the default."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in PLAIN_SCHEMES | TLS_SCHEMES:
            raise BrokerConfigError(f"not a STOMP broker URL: {without_secret(url)!r} "
                                    "(expected stomp://HOST:PORT or stomp+ssl://HOST:PORT)")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise BrokerConfigError(f"bad port in broker URL {without_secret(url)!r}") from None
        if not parts.hostname:
            raise BrokerConfigError(f"no host in broker URL {without_secret(url)!r}")
        values = {"user": parts.username, "password": parts.password,
                  **{key: value for key, value in options.items() if value is not None}}
        return cls(host=parts.hostname, port=port, tls=scheme in TLS_SCHEMES, **values)


def without_secret(url: str) -> str:
    """``url`` without the password its userinfo may hold (for messages and reprs)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


@dataclass(slots=True)
class Delivery:
    """One MESSAGE frame as received. ``generation`` numbers the connection it came on: an ack
    id is only valid on that connection, so acks of an earlier generation are dropped (the
    broker redelivers those messages, and their event_id makes the repeat harmless).
    ``discarded``: body bytes the consumer did not keep, the frame being over its size bound
    (``body`` is then only the body's first bytes)."""

    destination: str
    headers: dict[str, str]
    body: bytes
    ack_id: str | None
    generation: int
    discarded: int = 0

    @property
    def redelivered(self) -> bool:
        return self.headers.get("redelivered") == "true"


def recorded_destination(delivery: Delivery) -> str:
    """Where the message was sent: a copy topic's message is stored under its work queue (the
    naming convention of agents/transport/destinations.py, which every broker follows, whether
    or not it also says ``original-destination``)."""
    return queue_of(delivery.destination) or delivery.destination


class Backoff:
    """Exponential reconnect delays with jitter: initial, x2 each failure, capped; reset on
    success. Jitter keeps a fleet of agents from reconnecting in lockstep after a restart."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0, jitter: float = 0.2) -> None:
        self.initial, self.maximum, self.jitter = initial, maximum, jitter
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self.maximum, self._next * 2)
        return delay * (1.0 + random.random() * self.jitter)  # noqa: S311 - not crypto

    def reset(self) -> None:
        self._next = self.initial


def escape_header(value: str) -> str:
    """STOMP 1.2 header value escaping (for frames other than CONNECT)."""
    return (value.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
            .replace(":", "\\c"))


_UNESCAPE = {"\\\\": "\\", "\\r": "\r", "\\n": "\n", "\\c": ":"}


def unescape_header(value: str) -> str:
    if "\\" not in value:
        return value
    if "\\\\" not in value:  # every backslash starts an escape: replace them in C
        return value.replace("\\c", ":").replace("\\n", "\n").replace("\\r", "\r")
    out, index = [], 0
    while index < len(value):
        pair = value[index:index + 2]
        if pair in _UNESCAPE:
            out.append(_UNESCAPE[pair])
            index += 2
        else:
            out.append(value[index])
            index += 1
    return "".join(out)


def one_line(problem: BaseException, limit: int = 500) -> str:
    """An exception as one line of at most ``limit`` characters: for reasons a supervisor or an
    operator reads (a multi-line message would break the one-line contract)."""
    text = str(problem) or type(problem).__name__
    return " ".join(text.split())[:limit]
