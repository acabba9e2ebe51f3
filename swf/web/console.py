"""The console's state for one app: the store's data, the live hub, and two caches: rendered
reads (per state of the store) and the costly replay views (until an event of their execution
commits)."""

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
    value no longer current is refreshed by one request while the others keep the old one."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._values: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._flights: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T],
            current: Callable[[float, T], bool] | None = None,
            keep: Callable[[T], bool] | None = None) -> T:
        """The value of ``key``, computed at most once at a time. ``current(stored_at, value)``
        says whether a kept value may still be used (default: always); one that may not is
        recomputed by the first request to see it while the others still get it. ``keep``
        says whether a computed value is kept at all."""
        def usable(entry: tuple[float, Any] | None) -> bool:
            return entry is not None and (current is None or current(*entry))

        with self._lock:
            entry = self._values.get(key)
            if entry is not None:
                self._values.move_to_end(key)
                if usable(entry):
                    return entry[1]
            flight = self._flights.setdefault(key, threading.Lock())
        if entry is not None and not flight.acquire(blocking=False):
            return entry[1]  # being refreshed: the old one
        if entry is None:
            flight.acquire()
        try:
            with self._lock:
                latest = self._values.get(key)
            if latest is not entry and usable(latest):
                return latest[1]  # type: ignore[index]  # computed meanwhile (not None)
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
            key, lambda: _frozen(build()),
            current=lambda stored_at, _value: time.monotonic() - stored_at <= FRESH,
            keep=lambda frozen: len(frozen[1]) <= KEPT_BODY)
        return Response(body, status_code=status, media_type=media_type)

    def _view(self, key: tuple[Hashable, ...], execution_id: str,
              compute: Callable[[], T]) -> T:
        """A replay view of an execution, computed again once events of it commit. While one
        request computes the new one (a big execution's diagram takes seconds), others get the
        previous one: at most one computation per view at a time."""
        version = self.hub.version(execution_id)
        _version, value = self.cache.get(
            key, lambda: (version, compute()),
            current=lambda _stored_at, kept: kept[0] == version)
        return value

    def state_at(self, execution_id: str, until: str) -> dict[str, Any]:
        return self._view(("state", execution_id, until), execution_id,
                          lambda: self.data.state_at(execution_id, until))

    def drift(self, execution_id: str) -> dict[str, Any]:
        return self._view(("drift", execution_id), execution_id,
                          lambda: self.data.drift(execution_id))

    def mermaid(self, execution_id: str) -> str:
        return self._view(("mermaid", execution_id), execution_id,
                          lambda: self.data.mermaid(execution_id))

    def timeline(self, execution_id: str, namespace: str | None) -> dict[str, Any]:
        return self._view(("timeline", execution_id, namespace), execution_id,
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
    console: Console = request.app.state.console
    return console
