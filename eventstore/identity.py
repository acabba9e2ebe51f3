"""The one rule for what a message becomes when stored: its event_id and its execution.

The store's append, the live host (which must know a delivery's event_id and execution before
the recorder stores it) and the fixture loader (which checks a fixture's ids) all come here, so
they cannot disagree:

- ``as_stored``: a message as the store holds it - examined by the catalog, its indexed values
  made storable, its ``event_id`` - still without position and inferred execution.
- ``as_rejected``: a message the store could not hold as examined (an append of it alone
  failed on a value, not on the database being away), kept as rejected with that reason: body
  and headers as received, every text column made storable, nothing else derived.
- ``event_id``: the sender's ``msg_id``, else the broker's ``message-id`` header, else a hash
  of destination and body; an id longer than an indexed column holds is hashed.
- ``RunExecutions``: an event that lacks ``execution_id`` but has a ``run_id`` belongs to the
  execution of the latest earlier event of the same (namespace, run) that carried one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import tzinfo

from .catalog import SCHEMA_VERSION, Verdict, examine
from .envelope import Event
from .schema import COLUMN_LIMIT

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_BACKSLASH = ord("\\")

RunKey = tuple[str | None, int]  # (namespace, run_id)


def event_id(msg_id: str | None, headers: dict[str, str], destination: str, body: bytes) -> str:
    """Idempotency key: the sender's msg_id, else the broker message-id, else a content hash."""
    if msg_id:
        ident = str(msg_id)
    else:
        broker_id = headers.get("message-id")
        if broker_id:
            ident = f"broker:{broker_id}"
        else:
            digest = hashlib.blake2b(destination.encode() + b"\0" + body, digest_size=16)
            ident = f"sha:{digest.hexdigest()}"
    if len(ident) > COLUMN_LIMIT:  # a cut would merge distinct ids: hash instead
        ident = f"long:{hashlib.blake2b(ident.encode(), digest_size=16).hexdigest()}"
    return ident


def as_stored(destination: str, headers: dict[str, str], body: bytes, recorded_at: str,
              expected_namespace: str | None = None, sender_zone: tzinfo | None = None
              ) -> Event:
    """The message as the store holds it (position 0; execution not inferred yet, see
    ``RunExecutions``). The body is kept as received; ``data`` is the catalog's reading, with
    header-only envelope fields and naive sender times (read in ``sender_zone``, default UTC,
    checked against the broker's time) resolved now."""
    if type(body) is not bytes:
        body = bytes(body)
    verdict = examine(body, destination, expected_namespace, headers, sender_zone)
    run_id = verdict.run_id
    canonical = verdict.canonical
    # Rarely true; ordered cheapest first. A backslash is searched as an int: a memchr, where
    # bytes `in` bytes first tries the needle as an int and raises and drops a TypeError.
    if (len(body) > COLUMN_LIMIT or (_BACKSLASH in body and b"\\u0000" in body)
            or "\x00" in destination
            or (run_id is not None and not _INT64_MIN <= run_id <= _INT64_MAX)):
        destination = _storable(verdict, destination)
        run_id = verdict.run_id
        canonical = False  # its columns may no longer be the body's values
    return Event(0, event_id(verdict.msg_id, headers, destination, body), recorded_at,
                 destination, headers, body, verdict.msg_type, verdict.namespace,
                 verdict.execution_id, run_id, verdict.sender, verdict.sent_at,
                 verdict.schema_version, verdict.reason, verdict.data, canonical)


def as_rejected(destination: str, headers: dict[str, str], body: bytes, recorded_at: str,
                reason: str) -> Event:
    """The message stored as rejected with ``reason``, whatever it holds: the event_id it would
    have had (so a redelivery is absorbed as a duplicate), cleaned of what no text column can
    hold; no run, execution or sender time."""
    if type(body) is not bytes:
        body = bytes(body)
    try:
        msg_id = examine(body, destination, None, headers).msg_id
    except Exception:  # noqa: BLE001 - the catalog is total; this only guards the rejection
        msg_id = None
    ident = _clean(event_id(msg_id, headers, destination, body))
    return Event(0, ident, recorded_at, _clean(destination), headers, body, None, None, None,
                 None, None, None, SCHEMA_VERSION, _clean(reason)[:4 * COLUMN_LIMIT], None)


def _clean(text: str) -> str:
    """Text any backend's text column holds: no NUL, no lone surrogate."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _storable(verdict: Verdict, destination: str) -> str:
    """Make the extracted columns storable on every backend, so no message can fail an append
    (and, redelivered, block a recorder forever): PostgreSQL text cannot hold NUL (JSON can, as
    \\u0000), btree entries are limited to ~2.7 kB, and run_id is a 64-bit column. The body is
    untouched; only what is indexed is adjusted. Returns the destination, cleaned likewise."""
    for name in ("msg_id", "msg_type", "namespace", "execution_id", "sender", "reason"):
        value = getattr(verdict, name)
        if value is None:
            continue
        value = value.replace("\x00", "\ufffd")
        if len(value) > COLUMN_LIMIT and name not in ("msg_id", "reason"):  # ids: see event_id
            value = value[:COLUMN_LIMIT]
        setattr(verdict, name, value)
    if verdict.run_id is not None and not _INT64_MIN <= verdict.run_id <= _INT64_MAX:
        verdict.reason = verdict.reason or f"run_id {verdict.run_id} does not fit in 64 bits"
        verdict.run_id = None
        verdict.data = None
    return destination.replace("\x00", "\ufffd")


class RunExecutions:
    """Which execution each (namespace, run) belongs to, as far as seen: the execution of the
    run's latest event that carried one. ``lookup`` (optional) is asked on a miss, e.g. the
    store for its latest stored event of the run; its answers are kept, "none" too."""

    def __init__(self, lookup: Callable[[str | None, int], str | None] | None = None, *,
                 limit: int | None = None) -> None:
        self._known: dict[RunKey, str] = {}
        self._unknown: set[RunKey] = set()
        self._lookup = lookup
        self._limit = limit  # forget everything beyond this many runs (a long-lived cache)

    def note(self, namespace: str | None, run_id: int | None, execution_id: str | None) -> None:
        """An event of this run carried this execution (later events supersede it)."""
        if run_id is None or execution_id is None:
            return
        known = self._known
        if self._limit is not None and len(known) >= self._limit:
            known.clear()
        known[(namespace, run_id)] = execution_id
        self._unknown.discard((namespace, run_id))

    def get(self, namespace: str | None, run_id: int) -> str | None:
        """The run's execution as far as known (the lookup asked at most once per run)."""
        key = (namespace, run_id)
        found = self._known.get(key)
        if found is None and self._lookup is not None and key not in self._unknown:
            found = self._lookup(namespace, run_id)
            if found is None:
                self._unknown.add(key)
            else:
                self._known[key] = found
        return found

    def resolve(self, event: Event) -> bool:
        """Note the event's execution, or give it its run's; False when it has a run but no
        execution is known for it (the event is left without one)."""
        run_id = event.run_id
        if run_id is None:
            return True
        if event.execution_id is not None:
            self.note(event.namespace, run_id, event.execution_id)
            return True
        found = self.get(event.namespace, run_id)
        if found is None:
            return False
        set_execution(event, found)
        return True


def set_execution(event: Event, execution_id: str) -> None:
    """Give an event its inferred execution, in the column and in the normalized message."""
    event.execution_id = execution_id
    if event.data is not None and event.data.get("execution_id") is None:
        event.data["execution_id"] = execution_id
