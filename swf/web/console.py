"""The console's state for one app: the store's data, the live hub, and caches of the costly
replay views (kept until an event of their execution commits)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from starlette.requests import Request

from .data import ConsoleData
from .live import Hub

T = TypeVar("T")
CACHE_SIZE = 128


class Cache:
    """A small LRU: a replay view is computed once per execution version."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]  # type: ignore[no-any-return]
        value = compute()  # outside the lock: two requests may compute it once each
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value


class Console:
    def __init__(self, data: ConsoleData, hub: Hub) -> None:
        self.data = data
        self.hub = hub
        self.cache = Cache()

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


def console_of(request: Request) -> Console:
    return request.app.state.console  # type: ignore[no-any-return]
