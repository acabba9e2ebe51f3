"""What every broker client of the project shares: where the broker is and how to log in
(``BrokerConfig``), a received message (``Delivery``), reconnect backoff, and which destinations
the pipeline records.

Credentials come from the environment (``SWF_STOMP_USER``, ``SWF_STOMP_PASSWORD``) or from the
``[broker]`` table of a TOML config file, never from the command line. They are kept out of
``repr`` and ``address``, so logging a config or an error never shows them.

    stomp://HOST:PORT          plain TCP
    stomp+ssl://HOST:PORT      TLS (also ``stomp+tls://``, ``ssl://``); the CA file, client
                               certificate and key, and ``verify`` come from the config file or
                               SWF_STOMP_CA_CERTS / SWF_STOMP_CERT_FILE / SWF_STOMP_KEY_FILE

Config file (``--config PATH.toml``; the agent and recorder sections live in the same file)::

    [broker]
    url = "stomp+ssl://broker.example.org:61612"
    user = "swf"
    password = "..."          # better: SWF_STOMP_PASSWORD in the environment
    ca_certs = "/etc/swf/ca.pem"
    verify = true
"""

from __future__ import annotations

import os
import random
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from eventstore.envelope import (
    RESULT_MONITOR_TOPIC,
    RESULT_QUEUE,
    SLICE_MONITOR_TOPIC,
    SLICE_QUEUE,
    TOPIC,
)

DEFAULT_PORT = 61613
PLAIN_SCHEMES = frozenset({"stomp", "tcp"})
TLS_SCHEMES = frozenset({"stomp+ssl", "stomp+tls", "ssl", "stomps"})

# What the recorder subscribes to: the topic, and the broker's copies of the two work queues
# (deploy/activemq/activemq.xml: composite queues forward a copy to these monitor topics).
RECORDED_DESTINATIONS = (TOPIC, SLICE_MONITOR_TOPIC, RESULT_MONITOR_TOPIC)
MONITORED_QUEUES = {SLICE_MONITOR_TOPIC: SLICE_QUEUE, RESULT_MONITOR_TOPIC: RESULT_QUEUE}


class BrokerConfigError(ValueError):
    """A broker URL or config file is unusable; the message is one line and holds no secret."""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
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


def broker_config(url: str | None = None, *, config_file: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> BrokerConfig:
    """The broker to use: ``url``, else the config file's ``[broker] url``, else $SWF_BROKER.
    Credentials and TLS files: the environment wins over the config file."""
    env = os.environ if environ is None else environ
    table = _broker_table(config_file)
    text = url or table.get("url") or env.get("SWF_BROKER")
    if not text:
        raise BrokerConfigError("no broker given: pass --broker stomp://HOST:PORT "
                                "(or set SWF_BROKER, or [broker] url in the config file)")
    parts = urlsplit(str(text))
    scheme = parts.scheme.lower()
    if scheme not in PLAIN_SCHEMES | TLS_SCHEMES:
        raise BrokerConfigError(f"not a STOMP broker URL: {_without_secret(str(text))!r} "
                                "(expected stomp://HOST:PORT or stomp+ssl://HOST:PORT)")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise BrokerConfigError(f"bad port in broker URL {_without_secret(str(text))!r}") from None
    if not parts.hostname:
        raise BrokerConfigError(f"no host in broker URL {_without_secret(str(text))!r}")

    def pick(env_name: str, key: str, default: Any = None) -> Any:
        return env.get(env_name) or table.get(key) or default

    verify = table.get("verify", True)
    if "SWF_STOMP_VERIFY" in env:
        verify = env["SWF_STOMP_VERIFY"].strip().lower() not in ("0", "false", "no", "off")
    return BrokerConfig(
        host=parts.hostname, port=port, tls=scheme in TLS_SCHEMES,
        user=pick("SWF_STOMP_USER", "user", parts.username),
        password=pick("SWF_STOMP_PASSWORD", "password", parts.password),
        ca_certs=pick("SWF_STOMP_CA_CERTS", "ca_certs"),
        cert_file=pick("SWF_STOMP_CERT_FILE", "cert_file"),
        key_file=pick("SWF_STOMP_KEY_FILE", "key_file"),
        verify=bool(verify), vhost=pick("SWF_STOMP_VHOST", "vhost"))


def read_config_file(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """A TOML config file as a dict ({} without a path)."""
    if path is None:
        return {}
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as problem:
        raise BrokerConfigError(f"cannot read config file {path}: {problem.strerror}") from None
    except tomllib.TOMLDecodeError as problem:
        raise BrokerConfigError(f"config file {path} is not valid TOML: {problem}") from None


def _broker_table(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    table = read_config_file(path).get("broker", {})
    if not isinstance(table, dict):
        raise BrokerConfigError(f"config file {path}: [broker] must be a table")
    return table


def _without_secret(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"***@{host}{port}").geturl()


@dataclass(slots=True)
class Delivery:
    """One MESSAGE frame as received. ``generation`` numbers the connection it came on: an ack
    id is only valid on that connection, so acks of an earlier generation are dropped (the
    broker redelivers those messages, and their event_id makes the repeat harmless)."""

    destination: str
    headers: dict[str, str]
    body: bytes
    ack_id: str | None
    generation: int

    @property
    def redelivered(self) -> bool:
        return self.headers.get("redelivered") == "true"


def recorded_destination(delivery: Delivery) -> str:
    """Where the message was sent: a monitor topic's copy names its original queue (ActiveMQ puts
    it in ``original-destination``; the mapping covers a broker that does not)."""
    queue = MONITORED_QUEUES.get(delivery.destination)
    if queue is None:
        return delivery.destination
    original = delivery.headers.get("original-destination")
    return original if original in MONITORED_QUEUES.values() else queue


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
