"""The console's state for one app: the store's data, the live hub, and caches of the costly
replay views (kept until an event of their execution commits)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from .data import ConsoleData
from .live import Hub

T = TypeVar("T")
CACHE_SIZE = 128
RESPONSES = 256  # rendered reads kept
KEPT_BODY = 256 * 1024  # bytes; a larger answer (a long API page) is rendered for each request
# Seconds a rendered read is reused while the store does not change: only what depends on the
# wall clock (agents going stale, a running execution's age) can differ meanwhile, and an open
# page refreshes on commits only anyway.
FRESH = 5.0


class Cache:
    """A small LRU with single flight: concurrent requests for a missing value wait for one
    computation instead of each repeating it (50 viewers of one page cost one render), and a
    value past its age is refreshed by one request while the others keep the old one."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._values: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._flights: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T], max_age: float | None = None,
            keep: Callable[[T], bool] | None = None) -> T:
        """The value of ``key``; one computation at a time per key. A value older than
        ``max_age`` is recomputed by the first request to see it while the others still get
        the old one (no request waits on a refresh it does not need)."""
        with self._lock:
            entry = self._values.get(key)
            if entry is not None:
                self._values.move_to_end(key)
                if max_age is None or time.monotonic() - entry[0] <= max_age:
                    return entry[1]  # type: ignore[no-any-return]
            flight = self._flights.setdefault(key, threading.Lock())
        if entry is not None and not flight.acquire(blocking=False):
            return entry[1]  # type: ignore[no-any-return]  # being refreshed: the old one
        if entry is None:
            flight.acquire()
        try:
            with self._lock:
                current = self._values.get(key)
            if current is not None and current is not entry and (
                    max_age is None or time.monotonic() - current[0] <= max_age):
                return current[1]  # type: ignore[no-any-return]  # computed while we waited
            value = compute()
            if keep is not None and not keep(value):
                return value
            with self._lock:
                self._values[key] = (time.monotonic(), value)
                self._values.move_to_end(key)
                while len(self._values) > self.size:
                    self._values.popitem(last=False)
            return value
        finally:
            flight.release()
            with self._lock:
                if self._flights.get(key) is flight and not flight.locked():
                    del self._flights[key]


class Console:
    def __init__(self, data: ConsoleData, hub: Hub) -> None:
        self.data = data
        self.hub = hub
        self.cache = Cache()
        self.responses = Cache(RESPONSES)

    def respond(self, request: Request, build: Callable[[], Response]) -> Response:
        """The response to a read, computed once per state of the store: reused until an event
        commits (the hub's head moves) or, for what depends on the wall clock (agents going
        stale, a running execution's age), for FRESH seconds."""
        key = (request.url.path, request.url.query, self.hub.head)
        status, body, media_type = self.responses.get(
            key, lambda: _frozen(build()), max_age=FRESH,
            keep=lambda frozen: len(frozen[1]) <= KEPT_BODY)
        return Response(body, status_code=status, media_type=media_type)

    def _versioned(self, kind: str, execution_id: str, *args: Hashable) -> tuple[Hashable, ...]:
        return (kind, execution_id, self.hub.version(execution_id), *args)

    def state_at(self, execution_id: str, until: str) -> dict[str, Any]:
        return self.cache.get(self._versioned("state", execution_id, until),
                              lambda: self.data.state_at(execution_id, until))

    def drift(self, execution_id: str) -> dict[str, Any]:
        return self.cache.get(self._versioned("drift", execution_id),
                              lambda: self.data.drift(execution_id))

    def mermaid(self, execution_id: str) -> str:
        return self.cache.get(self._versioned("mermaid", execution_id),
                              lambda: self.data.mermaid(execution_id))

    def timeline(self, execution_id: str, namespace: str | None) -> dict[str, Any]:
        return self.cache.get(self._versioned("timeline", execution_id, namespace),
                              lambda: self.data.timeline(execution_id, namespace))

    def status(self) -> dict[str, Any]:
        recorder = self.data.recorder()
        return {"store": self.data.url_text, "backend": self.data.backend,
                "head": recorder["head"], "recorder": recorder,
                "projections": self.data.projections(),
                "live_clients": len(self.hub.subscribers)}


def _frozen(response: Response) -> tuple[int, bytes, str | None]:
    return response.status_code, bytes(response.body), response.media_type


def console_of(request: Request) -> Console:
    return request.app.state.console  # type: ignore[no-any-return]
