"""The console's cache of rendered reads: one computation for concurrent misses, the old value
while one request refreshes it, and large values not kept."""

from __future__ import annotations

import threading

from swf.web.console import Cache

WAIT = 10.0


def test_concurrent_misses_compute_once() -> None:
    cache = Cache()
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def compute() -> str:
        calls.append(1)
        started.set()
        assert release.wait(WAIT)
        return "page"

    results: list[str] = []
    first = threading.Thread(target=lambda: results.append(cache.get("k", compute)))
    first.start()
    assert started.wait(WAIT)
    others = [threading.Thread(target=lambda: results.append(cache.get("k", compute)))
              for _ in range(5)]
    for thread in others:
        thread.start()
    release.set()
    for thread in (first, *others):
        thread.join(WAIT)
    assert results == ["page"] * 6 and len(calls) == 1


def test_an_old_value_is_served_while_one_request_refreshes_it() -> None:
    cache = Cache()
    assert cache.get("k", lambda: "old") == "old"
    started, release = threading.Event(), threading.Event()

    def refresh() -> str:
        started.set()
        assert release.wait(WAIT)
        return "new"

    refreshed: list[str] = []
    def outdated(_stored_at: float, value: str) -> bool:
        return value != "old"

    refresher = threading.Thread(target=lambda: refreshed.append(
        cache.get("k", refresh, current=outdated)))
    refresher.start()
    assert started.wait(WAIT)
    # Meanwhile another reader neither waits nor computes: it gets the old value.
    assert cache.get("k", lambda: "not computed", current=outdated) == "old"
    release.set()
    refresher.join(WAIT)
    assert refreshed == ["new"]
    assert cache.get("k", lambda: "not computed") == "new"


def test_values_not_kept_are_computed_each_time() -> None:
    cache = Cache()
    calls: list[int] = []

    def compute() -> str:
        calls.append(1)
        return "x" * 10

    for _ in range(3):
        assert cache.get("big", compute, keep=lambda value: len(value) < 5) == "x" * 10
    assert len(calls) == 3


def test_the_least_recently_used_value_goes_first() -> None:
    cache = Cache(size=2)
    cache.get("a", lambda: 1)
    cache.get("b", lambda: 2)
    cache.get("a", lambda: 0)  # used: b is now the oldest
    cache.get("c", lambda: 3)
    assert cache.get("a", lambda: -1) == 1
    assert cache.get("b", lambda: -2) == -2  # evicted, computed again
