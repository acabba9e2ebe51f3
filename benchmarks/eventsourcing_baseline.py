"""The ``eventsourcing`` library's SQLite recorders on the messages of an import file.

    <venv>/bin/python benchmarks/eventsourcing_baseline.py MESSAGES.jsonl DIRECTORY BATCH

Run by ``benchmarks/append.py`` in the benchmark's own virtualenv (the library is not a
dependency of swf). Each line of MESSAGES.jsonl is an import wrapper whose ``body`` is the
message's JSON text; each body is stored as one event of the aggregate named by its ``msg_id``
(version 1, topic its ``msg_type``), ``BATCH`` events per ``insert_events`` call (one
transaction). The ids and StoredEvents are prepared before the clock starts: the figures are
the recorders' own cost. Prints one JSON object: {recorder name: [events, seconds]}.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteDatastore,
)


def stored_events(path: Path) -> list[StoredEvent]:
    events = []
    with path.open("rb") as lines:
        for line in lines:
            body = json.loads(line)["body"]
            message = json.loads(body)
            events.append(StoredEvent(originator_id=uuid.UUID(message["msg_id"]),
                                      originator_version=1, topic=message["msg_type"],
                                      state=body.encode()))
    return events


def measure(recorder_class: type, database: Path, events: list[StoredEvent],
            batch: int) -> tuple[int, float]:
    datastore = SQLiteDatastore(str(database))
    recorder = recorder_class(datastore)
    recorder.create_table()
    began = time.perf_counter()
    for start in range(0, len(events), batch):
        recorder.insert_events(events[start:start + batch])
    seconds = time.perf_counter() - began
    datastore.close()
    return len(events), seconds


def main() -> None:
    path, directory, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    events = stored_events(path)
    results = {
        "application": measure(SQLiteApplicationRecorder, directory / "es_app.db", events,
                               batch),
        "aggregate": measure(SQLiteAggregateRecorder, directory / "es_agg.db", events, batch),
    }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
