"""follow() under concurrent writers: every event exactly once, in strictly increasing position.

The writers also race on a shared set of messages, so the same event_id is appended by several
writers at once: it must be stored once and reported as a duplicate to the others.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

from eventstore.envelope import Incoming
from eventstore.store import EventStore

WRITERS = 4
PER_WRITER = 2000
SHARED = 200
TIMEOUT = 120.0


def _messages(writer: int) -> list[Incoming]:
    own = [Incoming.of({"msg_type": "stf_gen", "msg_id": f"w{writer}-{i}", "run_id": writer,
                        "execution_id": "follow", "filename": f"w{writer}.{i:06d}.stf"})
           for i in range(PER_WRITER)]
    shared = [Incoming.of({"msg_type": "stf_gen", "msg_id": f"shared-{i}", "run_id": 99,
                           "execution_id": "follow", "filename": f"s.{i:06d}.stf"})
              for i in range(SHARED)]
    mixed = own + shared
    rng = random.Random(writer)
    rng.shuffle(mixed)
    return mixed


def write(url: str, writer: int, start: Any, results: Any) -> None:
    """One writer: append its messages in small random batches; report what it stored."""
    rng = random.Random(1000 + writer)
    messages = _messages(writer)
    stored: list[str] = []
    duplicates: list[str] = []
    try:
        with EventStore(url) as store:
            start.wait(TIMEOUT)
            at = 0
            while at < len(messages):
                size = rng.randint(1, 40)
                result = store.append(messages[at:at + size])
                stored += [event.event_id for event in result.events]
                duplicates += result.duplicates
                at += size
    except Exception as problem:  # report it instead of leaving the test waiting
        results.put((writer, None, [repr(problem)]))
        raise
    results.put((writer, stored, duplicates))


def _follow_into(store: EventStore, stop: threading.Event, seen: queue.Queue) -> None:
    for event in store.follow(0, stop=stop, poll_interval=0.01):
        seen.put((event.position, event.event_id))


def _run(url: str, start_writers: Callable[[], Any], results: Any) -> None:
    with EventStore(url) as store:  # migrate once before the writers race
        stop = threading.Event()
        seen: queue.Queue = queue.Queue()
        follower = threading.Thread(target=_follow_into, args=(store, stop, seen), daemon=True)
        follower.start()
        try:
            finish = start_writers()
            reports = [results.get(timeout=TIMEOUT) for _ in range(WRITERS)]
            failures = [problem for _w, stored, problem in reports if stored is None]
            assert not failures, failures
            finish()
            total = sum(len(stored) for _w, stored, _d in reports)
            followed = [seen.get(timeout=TIMEOUT) for _ in range(total)]
        finally:
            stop.set()
            follower.join(TIMEOUT)
        assert not follower.is_alive()
        assert seen.empty()  # nothing beyond what the writers stored
        positions = [position for position, _id in followed]
        assert all(a < b for a, b in zip(positions, positions[1:], strict=False))
        written = [event_id for _w, stored, _d in reports for event_id in stored]
        assert len(written) == len(set(written)) == WRITERS * PER_WRITER + SHARED
        assert sorted(event_id for _p, event_id in followed) == sorted(written)
        assert [(e.position, e.event_id) for e in store.read()] == followed
        for writer, stored, duplicates in reports:
            assert set(stored) | set(duplicates) == {
                m.event_id for m in store.read() if m.run_id in (writer, 99)}
            assert not set(stored) & set(duplicates)


@pytest.mark.postgres
@pytest.mark.slow
def test_follow_sees_every_event_once_with_writer_processes(pg_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    processes = [context.Process(target=write, args=(pg_url, n, start, results))
                 for n in range(WRITERS)]

    def start_writers() -> Callable[[], None]:
        for process in processes:
            process.start()
        start.set()

        def finish() -> None:
            for process in processes:
                process.join(TIMEOUT)
                assert process.exitcode == 0

        return finish

    try:
        _run(pg_url, start_writers, results)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()


@pytest.mark.slow
def test_follow_sees_every_event_once_with_writer_threads(sqlite_url: str) -> None:
    start = threading.Event()
    results: queue.Queue = queue.Queue()
    threads = [threading.Thread(target=write, args=(sqlite_url, n, start, results), daemon=True)
               for n in range(WRITERS)]

    def start_writers() -> Callable[[], None]:
        for thread in threads:
            thread.start()
        start.set()

        def finish() -> None:
            for thread in threads:
                thread.join(TIMEOUT)
                assert not thread.is_alive()

        return finish

    _run(sqlite_url, start_writers, results)
