"""Execution ids and run numbers are reserved atomically in the store: concurrent runs on one
store (separate processes, SQLite and PostgreSQL) never share one, and nothing the log has seen
(an import, an upstream run) is handed out again."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from eventstore.envelope import Incoming
from eventstore.errors import ReadOnlyStore
from eventstore.store import EventStore

SWF = [sys.executable, "-c", "from swf.cli import run; run()"]
SMALL = ("fast_processing.stf_count=2", "fast_processing.slices_per_sample=2")
RUNS = 8


@pytest.mark.slow
def test_concurrent_runs_in_separate_processes_get_distinct_ids(db_url, tmp_path) -> None:
    env = {**os.environ, "SWF_DB": db_url, "SWF_DATA": str(tmp_path / "data"),
           "SWF_USER": "ann"}
    env.pop("SWF_CONFIG", None)
    with EventStore(db_url):  # the schema exists, so the runs race for ids, not for migration
        pass
    args = [part for option in SMALL for part in ("--set", option)]
    procs = [subprocess.Popen([*SWF, "run", "--json", *args], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL) for _ in range(RUNS)]
    summaries = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        summaries.append(orjson.loads(out))
    ids = {summary["execution_id"] for summary in summaries}
    runs = {run for summary in summaries for run in summary["runs"]}
    assert ids == {f"fast_processing-ann-{n:04d}" for n in range(1, RUNS + 1)}
    assert runs == set(range(100001, 100001 + RUNS))
    assert {summary["status"] for summary in summaries} == {"completed"}
    assert {summary["stf_count"] for summary in summaries} == {2}


def test_a_reservation_never_reuses_what_the_log_has_seen(db_url) -> None:
    with EventStore(db_url) as store:
        first = store.reserve_execution("fast_processing", "ann")
        assert (first.execution_id, first.run_number, first.start_time) == (
            "fast_processing-ann-0001", 100001, "2026-01-01T00:00:00.000000Z")
        # Appended without a reservation (an import): the next id and run number pass them.
        store.append([Incoming.of({
            "msg_type": "run_imminent", "msg_id": "imported", "namespace": "torre2",
            "execution_id": "fast_processing-ann-0002", "run_id": 200000,
            "sender": "upstream", "timestamp": "2026-03-01T10:00:30Z"})])
        second = store.reserve_execution("fast_processing", "ann")
        assert (second.execution_id, second.run_number, second.start_time) == (
            "fast_processing-ann-0003", 200001, "2026-03-01T10:02:00.000000Z")
        # Reserved but not yet used: still taken.
        third = store.reserve_execution("fast_processing", "ann")
        assert (third.execution_id, third.run_number) == ("fast_processing-ann-0004", 200002)
        assert third.start_time > second.start_time
        other = store.reserve_execution("prompt_processing", "ann", "2027-05-01T10:00:00+02:00")
        assert (other.execution_id, other.run_number, other.start_time) == (
            "prompt_processing-ann-0001", 200003, "2027-05-01T08:00:00.000000Z")


def test_a_read_only_store_reserves_nothing(sqlite_url) -> None:
    with EventStore(sqlite_url) as store:
        assert store.store_id() == store.store_id()  # given once, then the same
    with EventStore(sqlite_url, read_only=True) as store, pytest.raises(ReadOnlyStore):
        store.reserve_execution("fast_processing", "ann")
