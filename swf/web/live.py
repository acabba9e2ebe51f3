"""Live updates: one follower of the store shared by every client.

A follower thread reads ``store.follow`` into a bounded queue; a publisher thread takes what
has arrived, catches the projections up (so a page refreshed on the notice shows the new state)
and hands one notice per batch to every subscriber's queue in the event loop. A notice says
which positions, executions, runs and message types the batch held, with the first rows of the
batch for the live message stream. A subscriber too slow to keep up loses its oldest notices
and is told how many events they covered.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import orjson

from .data import ConsoleData, message_row

log = logging.getLogger(__name__)

ROWS_PER_NOTICE = 200  # message rows a notice carries (the stream page shows the newest)
BATCH_MAX = 5000  # events gathered into one notice at most
SUBSCRIBER_QUEUE = 256  # notices waiting for a slow client before the oldest are dropped
INBOX = 10_000  # events between the follower and the publisher (backpressure beyond)
STREAM_COLUMNS = ("position", "time", "msg_type", "sender", "run_id", "execution_id",
                  "namespace", "destination", "status")


@dataclass(slots=True)
class Notice:
    """One committed batch, encoded once for every client."""

    head: int
    events: int
    data: str  # the JSON sent as the SSE event's data


class Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Notice] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self.missed = 0  # events covered by notices dropped for this subscriber


class Hub:
    def __init__(self, data: ConsoleData, *, poll_interval: float = 0.05) -> None:
        self.data = data
        self.poll_interval = poll_interval
        self.subscribers: set[Subscriber] = set()
        self.head = 0  # last position announced
        self.projected = 0  # position the projections were caught up to with it
        self.versions: dict[str, int] = {}  # execution_id -> its last position seen
        self.delivered = 0  # notices handed to subscribers (benchmarks)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._inbox: queue.Queue[Any] = queue.Queue(maxsize=INBOX)
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.head = self.data.head()
        self._threads = [
            threading.Thread(target=self._follow, name="swf-console-follow", daemon=True),
            threading.Thread(target=self._publish, name="swf-console-publish", daemon=True)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
            if thread.is_alive():
                log.warning("%s did not stop in time", thread.name)

    def version(self, execution_id: str) -> int:
        """Changes whenever an event of the execution commits (cache keys)."""
        return self.versions.get(execution_id, 0)

    # -- subscribers (event loop only) -------------------------------------------------------

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber()
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def _deliver(self, notice: Notice) -> None:
        for subscriber in list(self.subscribers):
            waiting = subscriber.queue
            while waiting.full():
                subscriber.missed += waiting.get_nowait().events
            waiting.put_nowait(notice)
            self.delivered += 1

    # -- threads -----------------------------------------------------------------------------

    def _follow(self) -> None:
        after = self.head
        while not self._stop.is_set():
            try:
                for event in self.data.follow(after, self._stop):
                    while not self._stop.is_set():
                        try:
                            self._inbox.put(event, timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    after = event.position
            except Exception:  # the store went away for a moment: follow again from there
                log.exception("following the store failed; retrying")
                self._stop.wait(1.0)

    def _publish(self) -> None:
        self._catch_up()  # what was committed before the console started
        while not self._stop.is_set():
            try:
                first = self._inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            self._catch_up()
            self._announce(batch)

    def _catch_up(self) -> None:
        try:
            self.data.catch_up()
        except Exception:  # pages then show the lag; the next batch tries again
            log.exception("catching the projections up failed")

    def _announce(self, batch: list[Any]) -> None:
        executions: dict[str, int] = {}
        runs: set[int] = set()
        kinds: Counter[str] = Counter()
        for event in batch:
            if event.execution_id is not None:
                executions[event.execution_id] = event.position
            if event.run_id is not None:
                runs.add(event.run_id)
            kinds[event.msg_type or "(rejected)"] += 1
        self.versions.update(executions)
        last = batch[-1].position
        shown = batch[-ROWS_PER_NOTICE:]
        rows = []
        for event in shown:
            row = message_row(event)
            rows.append({name: row[name] for name in STREAM_COLUMNS})
        payload = {"head": last, "first": batch[0].position, "events": len(batch),
                   "executions": sorted(executions), "runs": sorted(runs),
                   "msg_types": dict(sorted(kinds.items())), "rows": rows,
                   "omitted": len(batch) - len(shown), "sent": time.time()}
        self.head = last
        notice = Notice(last, len(batch), orjson.dumps(payload).decode())
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with suppress(RuntimeError):  # the loop closed meanwhile: shutting down
                loop.call_soon_threadsafe(self._deliver, notice)
