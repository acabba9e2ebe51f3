"""The event envelope: what arrives (``Incoming``) and what is stored and read back (``Event``).

Every message seen on the bus becomes exactly one stored event. The raw body is kept byte for
byte; everything else on an ``Event`` is derived from it (and from the headers) at append time
(the indexed columns) or at read time (``data``, the catalog-normalized message).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

# The destinations the pipeline uses (DESIGN section 4).
TOPIC = "/topic/epictopic"
SLICE_QUEUE = "/queue/panda.transformer.slices"
RESULT_QUEUE = "/queue/panda.results.fastprocessing"
# Broker-side copies of the queues, so the recorder sees queue traffic without consuming it.
SLICE_MONITOR_TOPIC = "/topic/monitor.panda.transformer.slices"
RESULT_MONITOR_TOPIC = "/topic/monitor.panda.results.fastprocessing"


@dataclass(slots=True)
class Incoming:
    """A message as received from a transport (or an import file), before it is stored."""

    destination: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, message: dict[str, Any], destination: str = TOPIC, **headers: str) -> Incoming:
        """Encode a message dict the way our senders do (orjson, no whitespace)."""
        return cls(destination=destination, body=orjson.dumps(message), headers=dict(headers))


@dataclass(slots=True)
class Event:
    """One stored event. ``data`` is the normalized message (None when the event is rejected)."""

    position: int
    event_id: str
    recorded_at: str  # store clock, ISO-8601 UTC
    destination: str
    headers: dict[str, str]
    body: bytes
    msg_type: str | None
    namespace: str | None
    execution_id: str | None
    run_id: int | None
    sender: str | None
    sent_at: str | None  # sender's timestamp, ISO-8601 UTC, None when absent or unreadable
    schema_version: int
    reject_reason: str | None  # None means valid
    data: dict[str, Any] | None = None
    # Valid, and the body in the catalog's canonical shape when appended (``Verdict.canonical``)
    canonical: bool = False

    @property
    def valid(self) -> bool:
        return self.reject_reason is None

    @property
    def time(self) -> str:
        """The event's time for decisions and projections: the sender's stamp, else the store's."""
        return self.sent_at or self.recorded_at


def format_time(moment: datetime) -> str:
    """The one textual form of a time in this project: ISO-8601, UTC, microseconds, 'Z'.

    Written by ``isoformat``: the agents and the store format a time per message, and
    ``strftime`` goes through the C library and the locale codec (2-4x the cost). Before year
    1000 the C library's ``%Y`` has fewer than four digits; that text is kept as it was."""
    if moment.tzinfo is not UTC:
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment.year < 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"  # (drops "+00:00")


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 time (naive means UTC) into an aware datetime; ValueError if not one."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def utc_now() -> str:
    """The store clock. Only the store and transports call this, never decision code."""
    return format_time(datetime.now(UTC))
