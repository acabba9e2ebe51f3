"""Projections: each counter and status transition, the orders a real broker delivers, namespaces,
checkpoints, rebuild vs catch-up, and the audit queries; on SQLite and PostgreSQL."""

from __future__ import annotations

import operator
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eventstore import catalog
from eventstore.envelope import RESULT_QUEUE, SLICE_QUEUE, TOPIC, Incoming, format_time
from eventstore.reads import Packed, Reads, Snapshot
from eventstore.store import EventStore
from projections import derive, queries, source
from projections import tables as t
from projections.derive import snapshot
from projections.fold import Fold
from projections.projector import NAMES, Projector

NS, EX, RUN = "torre2", "fast_processing-0001", 101993
STF = [f"swf.{RUN}.{seq:06d}.stf" for seq in range(1, 6)]
TF = [f"swf.{RUN}.{seq:06d}_tf_001.tf" for seq in range(1, 6)]
BASE = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def at(second: float) -> str:
    return format_time(BASE + timedelta(seconds=second))


class Env:
    """A store, its projector, and a message factory with a clock advancing a second a message."""

    def __init__(self, url: str) -> None:
        self.store = EventStore(url)
        self.projector = Projector(self.store)
        self.engine = self.store.engine
        self.serial = 0

    def msg(self, msg_type: str, *, run: int | None = RUN, ns: str | None = NS,
            ex: str | None = EX, sender: str = "agent-1", time: float | None = None,
            **payload: Any) -> dict[str, Any]:
        self.serial += 1
        message = {"msg_type": msg_type, "msg_id": f"m-{self.serial}", "namespace": ns,
                   "execution_id": ex, "run_id": run, "sender": sender,
                   "timestamp": at(self.serial if time is None else time), **payload}
        return {key: value for key, value in message.items() if value is not None or
                key in payload}

    def send(self, *messages: dict[str, Any]) -> int:
        destination = {"slice": SLICE_QUEUE, "slice_result": RESULT_QUEUE}
        result = self.store.append(Incoming.of(m, destination.get(m["msg_type"], TOPIC))
                                   for m in messages)
        return self.projector.catch_up() if result.events else 0

    def again(self, message: dict[str, Any]) -> dict[str, Any]:
        """The same message re-sent under a new id (a duplicate the store cannot see)."""
        self.serial += 1
        return {**message, "msg_id": f"m-{self.serial}"}

    def rows(self, table: sa.Table, **where: Any) -> list[dict[str, Any]]:
        statement = sa.select(table).where(*(table.c[k] == v for k, v in where.items()))
        with self.engine.connect() as conn:
            rows = conn.execute(statement.order_by(*table.primary_key.columns)).all()
        return [dict(row._mapping) for row in rows]

    def one(self, table: sa.Table, **where: Any) -> dict[str, Any]:
        rows = self.rows(table, **where)
        assert len(rows) == 1, rows
        return rows[0]

    def run_row(self, ns: str = NS, run: int = RUN) -> dict[str, Any]:
        return self.one(t.run_state, namespace=ns, run_number=run)

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        with self.engine.connect() as conn:
            return {table.name: [tuple(row) for row in conn.execute(
                sa.select(table).order_by(*table.primary_key.columns))]
                for tables in (t.PROJECTIONS.values()) for table in tables}

    # the usual messages of one run
    def start(self, ns: str = NS, ex: str = EX, run: int = RUN) -> list[dict[str, Any]]:
        return [self.msg("run_imminent", ns=ns, ex=ex, run=run, workflow="fast_processing",
                         workflow_params={"stf_count": 2}, state="beam",
                         substate="not_ready"),
                self.msg("start_run", ns=ns, ex=ex, run=run, state="run", substate="physics")]

    def stf(self, i: int, **kw: Any) -> list[dict[str, Any]]:
        return [self.msg("stf_gen", filename=STF[i], sequence=i + 1, state="run",
                         substate="physics", file_url=f"file:///e0/{STF[i]}", **kw),
                self.msg("stf_ready", filename=STF[i], sequence=i + 1, size_bytes=1000 + i,
                         checksum=f"ad:{i + 10:08x}", file_url=f"file:///e1/{STF[i]}", **kw)]

    def sample(self, i: int, **kw: Any) -> dict[str, Any]:
        return self.msg("tf_file_registered", tf_filename=TF[i], stf_filename=STF[i],
                        tf_first=1, tf_last=20, tf_count=20, **kw)

    def slice(self, i: int, slice_id: int, retry: int = 0, **kw: Any) -> dict[str, Any]:
        return self.msg("slice", slice_id=slice_id, tf_filename=TF[i], stf_filename=STF[i],
                        start=slice_id * 10 + 1, end=slice_id * 10 + 10, tf_count=10,
                        retry=retry, **kw)

    def result(self, i: int, slice_id: int, status: str, retry: int | None = 0,
               **kw: Any) -> dict[str, Any]:
        payload = {"slice_id": slice_id, "tf_filename": TF[i], "status": status,
                   "worker": f"worker-{slice_id}", **kw}
        if retry is not None:
            payload["retry"] = retry
        if status == "failed":
            payload.setdefault("error", "payload exit 1")
        return self.msg("slice_result", **payload)


@pytest.fixture
def env(db_url: str) -> Iterator[Env]:
    environment = Env(db_url)
    yield environment
    environment.store.close()


@pytest.fixture
def sqlite_env(sqlite_url: str) -> Iterator[Env]:
    """For what only SQLite does (packed reads: PostgreSQL reads rows)."""
    environment = Env(sqlite_url)
    yield environment
    environment.store.close()


def counters(row: dict[str, Any]) -> tuple[int, ...]:
    return tuple(row[name] for name in (
        "stf_count", "stf_samples_received", "slices_created", "slices_queued",
        "slices_processing", "slices_completed", "slices_failed"))


# -- run state ---------------------------------------------------------------------------------

def test_run_phases_follow_the_daq_and_never_leave_completed(env: Env) -> None:
    imminent, start = env.start()
    env.send(imminent)
    row = env.run_row()
    assert (row["phase"], row["state"], row["substate"]) == ("imminent", "beam", "not_ready")
    assert row["state_changed_at"] == imminent["timestamp"]
    assert row["execution_id"] == EX
    env.send(start)
    assert env.run_row()["phase"] == "physics"
    pause = env.msg("pause_run", reason="beam loss", state="run", substate="standby")
    env.send(pause)
    row = env.run_row()
    assert (row["phase"], row["substate"], row["state_changed_at"]) == (
        "standby", "standby", pause["timestamp"])
    resume = env.msg("resume_run", state="run", substate="physics")
    env.send(resume)
    assert (env.run_row()["phase"], env.run_row()["state_changed_at"]) == (
        "physics", resume["timestamp"])
    end = env.msg("end_run", total_stf_files=0, state="run", substate="end")
    env.send(end)
    row = env.run_row()
    assert (row["phase"], row["substate"], row["total_stf_files"]) == ("completed", "end", 0)
    # Late messages: a resume and a stf_gen stamped after the end change neither phase nor state.
    env.send(env.msg("resume_run", state="run", substate="physics"), *env.stf(0))
    row = env.run_row()
    assert (row["phase"], row["state"], row["substate"]) == ("completed", "run", "end")
    assert row["state_changed_at"] == end["timestamp"]
    assert row["stf_count"] == 1  # the late file still counts


def test_phase_follows_event_time_not_arrival_order(env: Env) -> None:
    imminent, start = env.start()
    pause = env.msg("pause_run", state="run", substate="standby")
    resume = env.msg("resume_run", state="run", substate="physics")
    env.send(start, imminent, resume, pause)  # delivered out of order
    row = env.run_row()
    assert (row["phase"], row["state_changed_at"], row["substate"]) == (
        "physics", resume["timestamp"], "physics")


def test_end_run_has_the_last_word_on_run_state_in_any_order(env: Env) -> None:
    imminent, start = env.start()
    end = env.msg("end_run", state="run", substate="end")
    late = env.msg("stf_gen", filename=STF[0], state="run", substate="physics")  # after the end
    env.send(imminent, start, late, end)  # ... but delivered before it
    row = env.run_row()
    assert (row["phase"], row["substate"], row["state_changed_at"]) == (
        "completed", "end", end["timestamp"])


# -- counters ----------------------------------------------------------------------------------

def test_each_counter_follows_the_facts_and_duplicates_count_once(env: Env) -> None:
    env.send(*env.start())
    assert counters(env.run_row()) == (0, 0, 0, 0, 0, 0, 0)
    gen, ready = env.stf(0)
    env.send(gen, env.again(gen))
    assert counters(env.run_row())[0] == 1
    env.send(ready, *env.stf(1))
    assert counters(env.run_row())[:2] == (2, 0)
    sample = env.sample(0)
    env.send(sample, env.again(sample))
    assert counters(env.run_row())[:2] == (2, 1)
    slices = [env.slice(0, k) for k in range(4)]
    env.send(*slices, env.again(slices[0]))
    assert counters(env.run_row()) == (2, 1, 4, 4, 0, 0, 0)
    env.send(env.result(0, 0, "processing"), env.result(0, 1, "processing"))
    assert counters(env.run_row()) == (2, 1, 4, 2, 2, 0, 0)
    done = env.result(0, 0, "completed")
    env.send(done, env.again(done), env.result(0, 1, "failed"))
    assert counters(env.run_row()) == (2, 1, 4, 2, 0, 1, 1)
    env.send(env.result(0, 2, "completed"), env.result(0, 3, "completed"))
    row = env.run_row()
    assert counters(row) == (2, 1, 4, 0, 0, 3, 1)
    assert row["slice_retries"] == 0
    # The table of slices agrees with the counters.
    statuses = [piece["status"] for piece in env.rows(t.tf_slices)]
    assert sorted(statuses) == ["completed"] * 3 + ["failed"]
    execution = env.one(t.executions, execution_id=EX)
    assert (execution["stf_count"], execution["stf_samples_received"],
            execution["slices_created"], execution["slices_completed"],
            execution["slices_failed"]) == (2, 1, 4, 3, 1)


def test_slice_and_file_statuses_move_with_their_slices(env: Env) -> None:
    env.send(*env.start(), *env.stf(0), *env.stf(1))
    assert {row["status"] for row in env.rows(t.stf_files)} == {"registered"}
    env.send(env.sample(0), env.sample(1))
    assert env.one(t.tf_samples, tf_filename=TF[0])["status"] == "registered"
    env.send(env.slice(0, 0), env.slice(0, 1))
    assert env.one(t.tf_samples, tf_filename=TF[0])["status"] == "processing"
    assert env.one(t.stf_files, filename=STF[0])["status"] == "processing"
    assert env.one(t.tf_slices, slice_id=0)["status"] == "queued"
    processing = env.result(0, 0, "processing")
    env.send(processing)
    piece = env.one(t.tf_slices, slice_id=0)
    assert (piece["status"], piece["worker"], piece["updated_at"]) == (
        "processing", "worker-0", processing["timestamp"])
    env.send(env.result(0, 0, "completed"))
    assert env.one(t.tf_samples, tf_filename=TF[0])["status"] == "processing"  # slice 1 open
    env.send(env.result(0, 1, "completed"))
    assert env.one(t.tf_samples, tf_filename=TF[0])["status"] == "processed"
    assert env.one(t.stf_files, filename=STF[0])["status"] == "processed"
    assert env.one(t.stf_files, filename=STF[1])["status"] == "registered"


def test_a_report_never_moves_a_slice_back(env: Env) -> None:
    env.send(*env.start(), env.slice(0, 0))
    completed = env.result(0, 0, "completed")
    env.send(completed, env.result(0, 0, "processing"))  # the late 'processing'
    piece = env.one(t.tf_slices, slice_id=0)
    assert piece["status"] == "completed"
    assert env.run_row()["slices_completed"] == 1
    env.send(env.result(0, 0, "failed"))  # and a completed slice is terminal
    assert env.one(t.tf_slices, slice_id=0)["status"] == "completed"


def test_failed_slices_are_retried_and_fail_for_good_after_three_retries(env: Env) -> None:
    env.send(*env.start(), *env.stf(0), env.sample(0), env.slice(0, 0), env.slice(0, 1))
    env.send(env.result(0, 0, "failed", retry=0))
    piece = env.one(t.tf_slices, slice_id=0)
    assert (piece["status"], piece["retries"], piece["final"]) == ("failed", 0, False)
    assert env.one(t.stf_files)["status"] == "processing"  # not failed: it will be retried
    for retry in (1, 2, 3):
        env.send(env.slice(0, 0, retry=retry))
        piece = env.one(t.tf_slices, slice_id=0)
        assert (piece["status"], piece["retries"]) == ("queued", retry)
        assert env.run_row()["slices_queued"] == 2
        env.send(env.result(0, 0, "failed", retry=retry))
    piece = env.one(t.tf_slices, slice_id=0)
    assert (piece["status"], piece["retries"], bool(piece["final"])) == ("failed", 3, True)
    row = env.run_row()
    assert (row["slices_failed"], row["slice_retries"]) == (1, 3)
    assert env.one(t.tf_samples)["status"] == "failed"
    assert env.one(t.stf_files)["status"] == "failed"
    # A stale report of an earlier attempt changes nothing.
    env.send(env.result(0, 0, "completed", retry=1))
    assert env.one(t.tf_slices, slice_id=0)["status"] == "failed"


def test_a_retried_slice_can_complete(env: Env) -> None:
    env.send(*env.start(), env.slice(0, 0), env.result(0, 0, "failed"))
    env.send(env.slice(0, 0, retry=1), env.result(0, 0, "completed", retry=None))
    piece = env.one(t.tf_slices, slice_id=0)
    assert (piece["status"], piece["retries"], bool(piece["final"])) == ("completed", 1, False)
    assert counters(env.run_row())[2:] == (1, 0, 0, 1, 0)
    assert queries.execution_summary(env.store, EX)["slice_retries"] == 1


# -- arrival orders ----------------------------------------------------------------------------

def test_stf_ready_before_stf_gen_gives_the_same_row(db_url: str) -> None:
    first, second = Env(db_url), None
    try:
        gen, ready = first.stf(0)
        first.send(*first.start(), gen, ready)
        in_order = first.one(t.stf_files)
        # The same two messages in the other order, in a namespace of their own.
        second = first
        imminent, start = first.start(ns="other")
        first.send(imminent, start, {**ready, "namespace": "other", "msg_id": "r2"},
                   {**gen, "namespace": "other", "msg_id": "g2"})
        reversed_row = first.one(t.stf_files, namespace="other")
        assert {**reversed_row, "namespace": NS} == in_order
        assert in_order["file_url"] == ready["file_url"]  # the data agent's registration wins
        assert in_order["checksum"] == "0000000a"
        assert (in_order["generated_at"], in_order["ready_at"]) == (gen["timestamp"],
                                                                    ready["timestamp"])
    finally:
        (second or first).store.close()


def test_samples_and_results_after_end_run_still_count(env: Env) -> None:
    env.send(*env.start(), *env.stf(0), env.msg("end_run", total_stf_files=1))
    env.send(env.sample(0), env.slice(0, 0), env.result(0, 0, "completed"))
    row = env.run_row()
    assert row["phase"] == "completed"
    assert counters(row) == (1, 1, 1, 0, 0, 1, 0)
    assert env.one(t.stf_files)["status"] == "processed"


def test_an_unknown_slice_result_is_kept_reported_and_merged_later(env: Env) -> None:
    env.send(*env.start())
    orphan = env.result(0, 7, "completed")
    env.send(orphan)
    kept = env.one(t.unmatched_results)
    assert (kept["tf_filename"], kept["slice_id"], kept["status"]) == (TF[0], 7, "completed")
    assert env.rows(t.tf_slices) == []
    assert env.run_row()["slices_created"] == 0
    summary = queries.execution_summary(env.store, EX)
    assert any("unknown slice" in error and f"{TF[0]}#7" in error for error in summary["errors"])
    env.send(env.slice(0, 7))  # the slice message shows up after all
    assert env.rows(t.unmatched_results) == []
    piece = env.one(t.tf_slices)
    assert (piece["status"], piece["worker"], piece["created_at"]) == (
        "completed", "worker-7", orphan["timestamp"])
    assert counters(env.run_row())[2:] == (1, 0, 0, 1, 0)
    summary = queries.execution_summary(env.store, EX)
    assert not any("unknown slice" in error for error in summary["errors"])


def test_a_foreign_namespace_touches_nothing_of_ours(env: Env) -> None:
    env.send(*env.start(), *env.stf(0), env.slice(0, 0))
    before = env.dump()
    # Same run number, same file names, even the same execution id - another namespace.
    env.send(*env.start(ns="elsewhere"),
             env.msg("stf_gen", ns="elsewhere", filename=STF[0], sequence=1),
             env.msg("slice_result", ns="elsewhere", slice_id=0, tf_filename=TF[0],
                     status="failed", retry=0),
             env.msg("end_run", ns="elsewhere"),
             env.msg("run_processed", ns="elsewhere", status="failed"))
    after = env.dump()
    for name, rows in before.items():
        ours = [row for row in after[name] if NS in row]
        assert ours == rows, name
    assert env.run_row()["phase"] == "physics"
    assert env.run_row(ns="elsewhere")["phase"] == "completed"
    mine = queries.runs(env.store, namespace=NS)
    assert [row["namespace"] for row in mine] == [NS]
    assert queries.execution_summary(env.store, EX, namespace=NS)["status"] == "running"
    with pytest.raises(queries.AmbiguousExecution):
        queries.execution_summary(env.store, EX)


def test_messages_without_namespace_get_rows_of_their_own(env: Env) -> None:
    env.send(*env.start(ns=None))
    row = queries.runs(env.store)[0]
    assert (row["namespace"], row["phase"]) == (None, "physics")


def test_rejected_messages_are_skipped_and_reported(env: Env) -> None:
    bad = env.msg("stf_gen", sequence=1)  # no filename: rejected by the catalog
    env.send(*env.start(), bad)
    assert env.rows(t.stf_files) == []
    summary = queries.execution_summary(env.store, EX)
    assert any("rejected" in error and "filename" in error for error in summary["errors"])


# -- executions --------------------------------------------------------------------------------

def test_execution_status_is_derived_from_run_processed(env: Env) -> None:
    other = RUN + 1
    env.send(*env.start(), *env.start(run=other))
    execution = queries.executions(env.store)[0]
    assert (execution["status"], execution["runs"], execution["run_count"]) == (
        "running", [RUN, other], 2)
    assert execution["workflow"] == "fast_processing"
    assert execution["parameters"] == {"stf_count": 2}
    env.send(env.msg("end_run"), env.msg("run_processed", status="completed"))
    assert queries.executions(env.store)[0]["status"] == "running"  # one run to go
    last = env.msg("run_processed", run=other, status="failed", error="task 7 failed")
    env.send(env.msg("end_run", run=other), last)
    execution = queries.executions(env.store)[0]
    assert (execution["status"], execution["end_time"]) == ("failed", last["timestamp"])
    assert execution["start_time"] == at(1)
    summary = queries.execution_summary(env.store, EX)
    assert summary["duration_s"] == 6.0  # from the first message to `last`, the 7th
    assert "run 101994 failed: task 7 failed" in summary["errors"]


def test_execution_completed_when_all_runs_completed(env: Env) -> None:
    env.send(*env.start(), env.msg("end_run"))
    summary = queries.execution_summary(env.store, EX, now=at(100))
    assert (summary["status"], summary["end_time"], summary["duration_s"]) == (
        "running", None, 99.0)  # running: its age at `now`
    env.send(env.msg("run_processed", status="completed"))
    summary = queries.execution_summary(env.store, EX)
    assert (summary["status"], summary["phase"]) == ("completed", "completed")
    assert summary["end_time"] == at(env.serial)


# -- DDM, PanDA, agents, logs ------------------------------------------------------------------

def test_a_rerun_that_finds_its_dataset_closed_shows_it_closed(env: Env) -> None:
    ddm = {"scope": "group.daq", "dataset": f"swf.{RUN}.run"}
    env.send(*env.start(), env.msg("dataset_opened", **ddm, outcome="exists", is_open=False,
                                   error="DataIdentifierAlreadyExists: swf.run"))
    assert env.one(t.datasets)["state"] == "closed"
    env.send(env.msg("dataset_opened", **ddm, outcome="exists", is_open=True))
    assert env.one(t.datasets)["state"] == "closed"  # order-independent: closed stays closed


def test_datasets_change_only_on_ok_outcomes(env: Env) -> None:
    ddm = {"scope": "group.daq", "dataset": f"swf.{RUN}.run"}
    env.send(*env.start(), env.msg("dataset_opened", **ddm, outcome="ok"))
    assert env.one(t.datasets)["state"] == "open"
    env.send(env.msg("file_attached", **ddm, name=STF[0], size_bytes=100, checksum="0000000a",
                     outcome="ok"),
             env.msg("file_attached", **ddm, name=STF[0], size_bytes=100, outcome="duplicate"),
             env.msg("file_attached", **ddm, name=STF[1], size_bytes=50, outcome="ok"),
             env.msg("file_attached", **ddm, name=STF[2], size_bytes=70, outcome="error",
                     error="InvalidObject: bad checksum"))
    dataset = env.one(t.datasets)
    assert (dataset["file_count"], dataset["size_bytes"], dataset["error"]) == (
        2, 150, "InvalidObject: bad checksum")
    assert [row["name"] for row in env.rows(t.dataset_files)] == STF[:2]
    env.send(env.msg("dataset_closed", **ddm, outcome="ok", file_count=2, size_bytes=150),
             env.msg("dataset_opened", **ddm, outcome="ok"))  # a late reply reopens nothing
    assert env.one(t.datasets)["state"] == "closed"
    summary = queries.execution_summary(env.store, EX)
    assert summary["datasets"] == [{"run_number": RUN, "scope": "group.daq",
                                    "name": f"swf.{RUN}.run", "state": "closed",
                                    "file_count": 2, "size_bytes": 150}]
    assert any("bad checksum" in error for error in summary["errors"])
    assert queries.datasets(env.store, status="closed")[0]["execution_id"] == EX


def test_panda_tasks_follow_the_latest_status(env: Env) -> None:
    env.send(*env.start(),
             env.msg("panda_task_submitted", task_id=None, status="failed",
                     error="no site", input_dataset="group.daq:swf.1.run"))
    failed = env.one(t.panda_tasks)
    assert (failed["task_id"], failed["status"], failed["error"]) == (None, "failed", "no site")
    env.send(env.msg("panda_task_submitted", task_id=42, status="submitted",
                     input_dataset="group.daq:swf.1.run"))
    late = env.msg("panda_task_status", task_id=42, status="running", time=env.serial - 0.5)
    env.send(env.msg("panda_task_status", task_id=42, status="finished"), late)
    task = env.one(t.panda_tasks, task_id=42)
    assert (task["status"], task["input_dataset"]) == ("finished", "group.daq:swf.1.run")
    summary = queries.execution_summary(env.store, EX)
    assert summary["tasks"] == [{"run_number": RUN, "task_id": None, "status": "failed"},
                                {"run_number": RUN, "task_id": 42, "status": "finished"}]
    assert any("no site" in error for error in summary["errors"])


def test_agents_are_exited_when_their_heartbeat_is_stale(env: Env) -> None:
    beat = {"agent_type": "data", "status": "OK", "operational_state": "READY", "pid": 11,
            "hostname": "node1"}
    env.send(env.msg("agent_heartbeat", run=None, ex=None, sender="data-1", time=0, **beat),
             env.msg("agent_heartbeat", run=None, ex=None, sender="data-1", time=100,
                     **{**beat, "operational_state": "BUSY"}),
             env.msg("agent_heartbeat", run=None, ex=None, sender="data-1", time=50, **beat),
             env.msg("agent_heartbeat", run=None, ex=None, sender="fastmon-1", time=10,
                     **{**beat, "agent_type": "fastmon"}))
    rows = {row["name"]: row for row in queries.agents(env.store, now=at(100 + 179))}
    assert rows["data-1"]["status"] == "OK"
    assert rows["data-1"]["operational_state"] == "BUSY"  # the latest heartbeat by time
    assert rows["data-1"]["last_heartbeat"] == at(100)
    assert rows["fastmon-1"]["status"] == "EXITED"  # 269 s of silence
    later = queries.agents(env.store, now=at(100 + 181))
    assert {row["status"] for row in later} == {"EXITED"}
    assert [row["name"] for row in queries.agents(env.store, status="OK", now=at(200))] == [
        "data-1"]


def test_logs_keep_every_record_and_errors_reach_the_summary(env: Env) -> None:
    env.send(*env.start(),
             env.msg("agent_log", level="WARNING", message="slow", module="data"),
             env.msg("agent_log", level="ERROR", message="disk full", module="data",
                     sender="data-1"),
             env.msg("agent_log", level="ERROR", message="other", ns="elsewhere"))
    assert len(queries.logs(env.store, namespace=NS)) == 2
    assert [row["message"] for row in queries.logs(env.store, level="error",
                                                   namespace=NS)] == ["disk full"]
    assert [row["message"] for row in queries.logs(env.store, limit=1)] == ["other"]
    errors = queries.execution_summary(env.store, EX, namespace=NS)["errors"]
    assert [error for error in errors if "disk full" in error] == [
        f"{at(4)} ERROR data-1: disk full"]
    assert not any("other" in error for error in errors)


# -- queries -----------------------------------------------------------------------------------

def test_query_filters(env: Env) -> None:
    env.send(*env.start(), *env.stf(0), *env.stf(1), *env.stf(2))
    env.send(*env.start(ex="ex-2", run=RUN + 1))
    assert [row["sequence"] for row in queries.stf_files(env.store, execution_id=EX)] == [
        1, 2, 3]
    assert queries.stf_files(env.store, execution_id="ex-2") == []
    assert [row["sequence"] for row in queries.stf_files(env.store, since=at(5),
                                                         until=at(7))] == [2, 3]
    assert len(queries.stf_files(env.store, limit=2)) == 2
    assert queries.stf_files(env.store, run=RUN + 1) == []
    assert [row["execution_id"] for row in queries.executions(env.store)] == [EX, "ex-2"]
    assert [row["execution_id"] for row in queries.executions(env.store, limit=1)] == ["ex-2"]
    assert [row["run_number"] for row in queries.runs(env.store, status="physics")] == [
        RUN, RUN + 1]
    assert queries.runs(env.store, execution_id="ex-2")[0]["run_number"] == RUN + 1
    assert queries.execution_summary(env.store, "nope") is None


# -- checkpoints, catch-up, rebuild ------------------------------------------------------------

def scenario(env: Env) -> list[dict[str, Any]]:
    ddm = {"scope": "group.daq", "dataset": f"swf.{RUN}.run"}
    messages = [*env.start(), env.msg("dataset_opened", **ddm, outcome="ok")]
    for i in range(3):
        messages += [*env.stf(i), env.sample(i)]
        messages += [env.slice(i, k) for k in range(3)]
        messages += [env.result(i, k, "completed" if k else "failed") for k in range(3)]
        messages.append(env.msg("file_attached", **ddm, name=STF[i], size_bytes=5,
                                outcome="ok"))
    messages += [env.slice(0, 0, retry=1), env.result(0, 0, "processing", retry=1),
                 env.result(4, 9, "processing"), env.msg("end_run", total_stf_files=3),
                 env.msg("agent_heartbeat", run=None, sender="w", agent_type="worker"),
                 env.msg("agent_log", level="ERROR", message="x"),
                 env.msg("dataset_closed", **ddm, outcome="ok"),
                 env.msg("panda_task_submitted", task_id=5, status="submitted"),
                 env.msg("run_processed", status="completed")]
    return messages


@pytest.mark.parametrize("batch", [1, 4, 1000])
def test_catch_up_in_batches_equals_rebuild(env: Env, batch: int) -> None:
    messages = scenario(env)
    env.projector.batch_size = batch
    for start in range(0, len(messages), 7):
        env.send(*messages[start:start + 7])
    incremental = env.dump()
    assert env.projector.rebuild() == len(messages)
    assert env.dump() == incremental
    assert {row["lag"] for row in env.projector.status()} == {0}


def test_a_consuming_render_gives_the_same_rows_and_leaves_the_fold_without_slices(
        env: Env) -> None:
    env.send(*scenario(env))
    kept, consumed = Fold(), Fold()
    for event in env.store.read():
        kept.apply(event)
        consumed.apply(event)
    rows = derive.render(kept, NAMES, fresh=True).upserts
    assert rows[t.tf_slices] and rows[t.unmatched_results]  # announced slices and unmatched
    assert derive.render(consumed, NAMES, fresh=True, consume=True).upserts == rows
    assert kept.slices and not consumed.slices and not consumed.sample_slices
    assert all(run.slices for run in kept.runs.values())
    assert not any(run.slices for run in consumed.runs.values())


# Every field the catalog or the fold reads, with values that mean something to either.
_FIELDS = sorted({name for spec in catalog.CATALOG.values() for name in spec}
                 | {"agent_type", "hostname", "worker", "workflow", "state", "status"})
_VALUES = st.one_of(st.none(), st.integers(0, 50), st.sampled_from(
    ["x", "a.tf", "a.stf", "a_slice_001.tf", "completed", "failed", "processing", "queued",
     "0000000f", "host-1", "run", "physics", "open", "closed"]))


@settings(max_examples=1000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages=st.lists(st.tuples(st.sampled_from(sorted(catalog.CATALOG)),
                                   st.dictionaries(st.sampled_from(_FIELDS), _VALUES,
                                                   max_size=6)),
                         min_size=1, max_size=4))
@example(messages=[("heartbeat", {})])  # the agent_type the catalog fills in
@example(messages=[("slice", {"slice_id": 1, "tf_filename": "a.tf", "start": 0, "end": 9}),
                   ("slice_result", {"slice_id": 1, "tf_filename": "a.tf",
                                     "status": "completed", "hostname": "host-1"})])
def test_a_body_folded_as_parsed_folds_as_the_catalog_reads_it(messages) -> None:
    """A rebuild folds a body ``needs_normalization`` passes as parsed, absent fields absent;
    the catalog's reading of it (``examine``) must fold to the same rows."""
    examined, parsed = [], []
    for position, (msg_type, fields) in enumerate(messages, 1):
        message = {"msg_type": msg_type, "namespace": "ns", "execution_id": "exe-1",
                   "run_id": 5, "sender": "agent", **fields, "msg_id": f"m-{position}",
                   "timestamp": f"2026-01-01T00:00:0{position}.000000Z"}
        verdict = catalog.examine(orjson.dumps(message))
        if verdict.data is None:
            continue
        as_parsed = (verdict.data if catalog.needs_normalization(
            message, catalog.SCHEMA_VERSION, verdict.sent_at) else orjson.loads(
                orjson.dumps(message)))
        envelope = (position, msg_type, verdict.namespace or "", verdict.execution_id,
                    verdict.run_id, verdict.sender, verdict.sent_at)
        examined.append((*envelope, verdict.data))
        parsed.append((*envelope, as_parsed))
    folds = Fold(), Fold()
    folds[0].feed(examined)
    folds[1].feed(parsed)
    assert snapshot(folds[1], changed_only=False) == snapshot(folds[0], changed_only=False)


def test_rebuild_of_one_projection_leaves_the_others(env: Env) -> None:
    env.send(*scenario(env))
    before = env.dump()
    with env.engine.begin() as conn:  # damage two tables
        conn.execute(t.tf_slices.update().values(status="bogus"))
        conn.execute(t.run_state.delete())
    env.projector.rebuild(["tf_slices"])
    after = env.dump()
    assert after["tf_slices"] == before["tf_slices"]
    assert after["run_state"] == []  # not rebuilt
    env.projector.rebuild(["run_state"])
    assert env.dump() == before
    with pytest.raises(ValueError, match="unknown projection"):
        env.projector.rebuild(["nope"])


def test_a_projection_left_behind_is_rebuilt_by_catch_up(env: Env) -> None:
    env.send(*scenario(env))
    before = env.dump()
    with env.engine.begin() as conn:  # as if the datasets projection had just been added
        conn.execute(t.datasets.delete())
        conn.execute(t.dataset_files.delete())
        conn.execute(t.projection_checkpoints.delete().where(
            t.projection_checkpoints.c.name == "datasets"))
    assert env.projector.checkpoints()["datasets"] == 0
    env.projector.catch_up()
    assert env.dump() == before
    assert len(set(env.projector.checkpoints().values())) == 1


def test_a_failed_write_applies_nothing(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    messages = scenario(env)
    env.send(*messages[:10])
    before, marks = env.dump(), env.projector.checkpoints()
    real_write = Projector._write

    def crash(self: Projector, conn: sa.Connection, changes: Any, fresh: bool) -> None:
        real_write(self, conn, changes, fresh)  # the rows are written...
        raise RuntimeError("power cut")  # ...but the transaction never commits

    monkeypatch.setattr(Projector, "_write", crash)
    with pytest.raises(RuntimeError):
        env.send(*messages[10:])
    assert env.dump() == before
    assert env.projector.checkpoints() == marks
    monkeypatch.setattr(Projector, "_write", real_write)
    env.projector.catch_up()
    caught_up = env.dump()
    env.projector.rebuild()
    assert env.dump() == caught_up


def test_a_concurrent_catch_up_never_applies_an_event_twice(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    messages = scenario(env)
    env.send(*messages[:5])
    env.store.append(Incoming.of(m, SLICE_QUEUE if m["msg_type"] == "slice" else TOPIC)
                     for m in messages[5:])
    rival = Projector(env.store)
    real_render = derive.render
    raced: list[int] = []

    def render_after_a_rival(*args: Any, **kwargs: Any) -> Any:
        if not raced:  # between our read and our write, another process catches up
            raced.append(-1)
            raced[0] = rival.catch_up()
        return real_render(*args, **kwargs)

    monkeypatch.setattr(derive, "render", render_after_a_rival)  # the projector imports it
    assert env.projector.catch_up() == 0  # it found the work done and applied nothing
    assert raced == [len(messages) - 5]
    caught_up = env.dump()
    env.projector.rebuild()
    assert env.dump() == caught_up


def test_status_reports_checkpoint_head_and_lag(env: Env) -> None:
    env.send(*env.start())
    env.store.append([Incoming.of(env.msg("end_run")), Incoming(TOPIC, b"not json")])
    status = {row["name"]: row for row in env.projector.status()}
    assert set(status) == set(NAMES)
    assert status["run_state"] == {"name": "run_state", "position": 2, "head": 4, "lag": 2}
    assert env.projector.catch_up() == 1  # the rejected one is skipped, yet covered
    assert {row["lag"] for row in env.projector.status()} == {0}


def test_applying_events_twice_changes_nothing(env: Env) -> None:
    messages = scenario(env)
    env.send(*messages)
    fold = Fold()
    for event in env.store.read():
        fold.apply(event)
    once = snapshot(fold, changed_only=False)
    assert once["tf_slices"] and once["run_state"]
    for event in list(env.store.read()):
        fold.apply(event)
    assert snapshot(fold, changed_only=False) == once


def test_slices_share_the_strings_they_have_in_common(env: Env) -> None:
    # A rebuild holds every slice in memory: a copy of each name and word per slice, as parsed
    # from its own message, was a fifth of it.
    env.send(*env.start(), *env.stf(0), env.sample(0), env.slice(0, 0), env.slice(0, 1),
             env.result(0, 0, "completed", worker="worker-a"),
             env.result(0, 1, "completed", worker="worker-a"))
    fold = Fold()
    for event in env.store.read():
        fold.apply(event)
    first, second = (fold.slices[key] for key in sorted(fold.slices, key=lambda key: key[3]))
    for name in ("ns", "run", "tf_filename", "stf_filename", "status", "worker"):
        assert getattr(first, name) == getattr(second, name), name
        assert getattr(first, name) is getattr(second, name), name
    for key, piece in fold.slices.items():
        assert key[:3] == (piece.ns, piece.run, piece.tf_filename)
        assert all(map(operator.is_, key[:3], (piece.ns, piece.run, piece.tf_filename)))
    # a body trusted as canonical is not type-checked again: names that are no text are kept
    odd = Fold()
    odd.handlers["slice_result"](NS, EX, RUN, at(1), {"slice_id": 1, "tf_filename": 7,
                                                      "status": "completed", "worker": 8})
    assert odd.slices[(NS, RUN, 7, 1)].worker == 8


def test_snapshot_shows_the_rows_each_event_changed(env: Env) -> None:
    env.store.append([Incoming.of(m) for m in (*env.start(), *env.stf(0))])
    fold = Fold()
    changed = []
    for event in env.store.read():
        fold.apply(event)
        changed.append({name: len(rows) for name, rows in snapshot(fold).items() if rows})
    assert changed[0] == {"executions": 1, "run_state": 1}
    assert changed[2] == {"executions": 1, "run_state": 1, "stf_files": 1}
    assert not any(snapshot(fold).values())  # nothing changed since
    whole = snapshot(fold, changed_only=False)
    assert whole["stf_files"][0]["filename"] == STF[0]
    assert whole["run_state"][0]["stf_count"] == 1


# -- read path ---------------------------------------------------------------------------------

def test_projector_reads_upstream_forms_like_the_store(env: Env) -> None:
    """The projector's fast read path must fold exactly what store.read() normalizes."""
    upstream_result = {"msg_type": "slice_result", "msg_id": "u-1", "namespace": NS,
                       "run_id": str(RUN), "timestamp": "2025-03-01T08:00:30+00:00",
                       "content": {"state": "done", "result": {"result": {
                           "slice_id": 0, "tf_filename": TF[0]}}}}
    env.send(*env.start(), env.slice(0, 0),
             {**env.msg("stf_ready", filename=STF[0], checksum="AD:0000ABCD"), "size": 77},
             {**env.msg("end_run"), "total_files": 1, "run_id": str(RUN)},
             env.msg("file_attached", scope="s", dataset="d", name="f", checksum="",
                     outcome="ok"),
             upstream_result)
    fast = env.dump()
    fold = Fold()
    for event in env.store.read():
        fold.apply(event)
    expected = snapshot(fold, changed_only=False)
    for name, rows in expected.items():
        assert sorted(fast[name], key=repr) == sorted(
            (tuple(row.values()) for row in rows), key=repr), name
    stf = env.one(t.stf_files)
    assert (stf["size_bytes"], stf["checksum"]) == (77, "0000abcd")
    assert env.run_row()["total_stf_files"] == 1
    assert env.one(t.tf_slices)["status"] == "completed"


def upstream_forms(env: Env) -> list[dict[str, Any]]:
    """The scenario with bodies the catalog must normalize among the canonical ones."""
    return [*scenario(env),
            {"msg_type": "slice_result", "msg_id": "u-1", "namespace": NS, "run_id": str(RUN),
             "timestamp": "2025-03-01T08:00:30+00:00",
             "content": {"state": "done", "result": {"result": {"slice_id": 1,
                                                                "tf_filename": TF[1]}}}},
            {**env.msg("stf_ready", filename=STF[0], checksum="AD:0000ABCD"), "size": 77},
            {**env.msg("end_run"), "total_files": 3, "run_id": str(RUN)}]


def test_a_rebuild_from_packed_chunks_equals_one_from_rows(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    messages = upstream_forms(env)
    env.send(*messages)
    monkeypatch.setattr(source, "CHUNK", 4)
    packed = []
    real = Reads.fold_packed

    def counted(self: Reads, after: int, until: int, limit: int) -> Packed | None:
        chunk = real(self, after, until, limit)
        packed.append(chunk)
        return chunk

    monkeypatch.setattr(Reads, "fold_packed", counted)
    assert env.projector.rebuild() == len(messages)
    from_packed = env.dump()
    if env.engine.dialect.name == "sqlite":
        assert len(packed) > len(messages) // 4 and all(packed)
    monkeypatch.setattr(Reads, "fold_packed", lambda self, after, until, limit: None)
    assert env.projector.rebuild() == len(messages)
    assert env.dump() == from_packed


def test_a_packed_chunk_is_read_in_one_statement_without_a_transaction_of_its_own(
        sqlite_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each call into SQLite hands the GIL back, and a read-ahead thread waits to take it
    again while the fold runs: a packed chunk is read in one driver statement, with no BEGIN
    and COMMIT around it (a rebuild of 1M events began 1,000 transactions for its reads)."""
    env = sqlite_env
    messages = upstream_forms(env)
    env.send(*messages)
    begun: list[None] = []
    statements: list[str] = []
    sa.event.listen(env.engine, "begin", lambda _conn: begun.append(None))
    sa.event.listen(env.engine, "before_cursor_execute",
                    lambda _conn, _cursor, sql, *_args: statements.append(sql))

    def transactions(chunk_size: int) -> int:
        monkeypatch.setattr(source, "CHUNK", chunk_size)
        begun.clear()
        assert env.projector.rebuild() == len(messages)
        return len(begun)

    in_one_chunk = transactions(len(messages))
    assert transactions(2) == in_one_chunk  # 23 chunks: no transaction more
    assert not any("group_concat" in sql for sql in statements)  # (past SQLAlchemy)
    with env.store.snapshot() as view:
        top = view.head()
    assert env.store.fold_packed(0, top, top) is not None
    with env.engine.connect() as conn:
        assert not conn.in_transaction()
        packed = Snapshot(conn).fold_packed(0, top, top)
        assert packed is not None and packed.size == len(messages)
        assert not conn.in_transaction()  # (its own read, ended with the statement)


def test_a_round_of_the_fold_is_as_long_read_packed_as_read_in_rows(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory budget counts time in rounds of the fold (``spill.WINDOW``): a chunk of
    ``source.CHUNK`` events, whether SQLite packs it or PostgreSQL sends it as rows."""
    messages = scenario(env)
    env.send(*messages)
    monkeypatch.setattr(source, "CHUNK", 4)
    rounds: list[int] = []
    real = source.fold_chunk

    def counted(fold: Fold, view: Reads, chunk: Any) -> int:
        rounds.append(real(fold, view, chunk))
        return rounds[-1]

    monkeypatch.setattr(source, "fold_chunk", counted)
    assert env.projector.rebuild() == len(messages)
    full, rest = divmod(len(messages), 4)
    assert rounds == [4] * full + [rest] * (rest > 0)


def test_packed_slices_and_results_come_as_the_fields_the_fold_reads(sqlite_env: Env) -> None:
    """A marked slice or slice_result with a run is packed as its msg_type, namespace and the
    fields of ``reads.SLICE_FIELDS`` or ``RESULT_FIELDS`` (extracted by SQLite; a missing one
    null), every other body whole; and the two fold alike, a failure naming no slice too."""
    from eventstore import reads

    env = sqlite_env
    messages = [*upstream_forms(env),
                env.msg("slice_result", status="failed", error="lost", worker="w-9"),
                env.msg("slice", slice_id=7, tf_filename=TF[1], start=1, end=2)]
    env.send(*messages)
    top = env.store.head()
    chunk = env.store.fold_packed(0, top, top)
    assert chunk is not None
    rows, bodies = orjson.loads(chunk.rows), orjson.loads(chunk.bodies)
    stored, _covered = env.store.fold_rows(0, top, top)
    fields = {"slice": reads.SLICE_FIELDS, "slice_result": reads.RESULT_FIELDS}
    as_fields = set()
    for row, body, (_position, run, *_rest, whole, marked) in zip(rows, bodies, stored,
                                                                  strict=True):
        original = orjson.loads(whole)
        if marked and run is not None and original["msg_type"] in fields:
            as_fields.add(original["msg_type"] if original.get("slice_id") is not None
                          else "failure naming no slice")
            assert body == [original["msg_type"], original.get("namespace"),
                            *(original.get(name) for name in fields[original["msg_type"]])]
        else:
            assert body == original
        assert row[0] == _position
    assert as_fields == {"slice", "slice_result", "failure naming no slice"}
    from_chunk, from_rows = Fold(), Fold()
    source.fold_chunk(from_chunk, env.store, chunk)
    source.fold_rows(from_rows, env.store, stored)
    assert snapshot(from_chunk, changed_only=False) == snapshot(from_rows, changed_only=False)
    assert from_rows.runs[(NS, RUN)].failures  # (the failure was folded, both ways)


def test_the_fold_reads_of_a_slice_and_a_result_what_the_packed_fields_hold() -> None:
    """``Fold.slice_fields`` and ``result_fields`` take the packed fields in their order."""
    import inspect

    from eventstore import reads

    for method, names in ((Fold.slice_fields, reads.SLICE_FIELDS),
                          (Fold.result_fields, reads.RESULT_FIELDS)):
        assert list(inspect.signature(method).parameters)[5:] == list(names), method


def test_bodies_sqlite_cannot_read_are_packed_whole(
        sqlite_env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from eventstore import reads

    env = sqlite_env
    messages = scenario(env)
    env.send(*messages)
    top = env.store.head()
    monkeypatch.setattr(reads, "_FIELDS_BODY", "json_extract('{', '$.x')")  # malformed JSON
    with env.store.snapshot() as view:
        chunk = view.fold_packed(0, top, top)
    assert chunk is not None and chunk.size == len(messages)
    stored, _covered = env.store.fold_rows(0, top, top)
    assert orjson.loads(chunk.bodies) == [orjson.loads(row[5]) for row in stored]
    assert "bodies read whole" in caplog.text


def _marks(env: Env) -> dict[str, int | None]:
    with env.engine.connect() as conn:
        return dict(conn.exec_driver_sql("SELECT event_id, canonical FROM events").all())


def test_canonical_bodies_are_marked_at_append(env: Env) -> None:
    """What the catalog finds in its canonical shape is marked with today's revision; an
    upstream form, a rejected message, are not."""
    canonical = env.msg("start_run")
    upstream = {**env.msg("end_run"), "total_files": 3}
    rejected = {**env.msg("stf_gen"), "filename": 7}
    env.send(canonical, upstream, rejected)
    revision = catalog.canonical_revision()
    assert revision is not None
    assert _marks(env) == {canonical["msg_id"]: revision, upstream["msg_id"]: None,
                           rejected["msg_id"]: None}


def test_nothing_is_marked_where_the_catalog_code_cannot_be_read(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from eventstore import postgres, sqlite

    for module in (sqlite, postgres):
        monkeypatch.setattr(module, "canonical_revision", lambda: None)
    message = env.msg("start_run")
    env.send(message)
    assert _marks(env) == {message["msg_id"]: None}


@pytest.mark.parametrize("packed", [True, False])
def test_a_marked_row_skips_the_shape_check_and_a_stale_mark_does_not(
        env: Env, monkeypatch: pytest.MonkeyPatch, packed: bool) -> None:
    messages = upstream_forms(env)
    env.send(*messages)
    if not packed:
        monkeypatch.setattr(Reads, "fold_packed", lambda self, after, until, limit: None)
    checked: list[str] = []
    real = source.needs_normalization

    def counted(message: dict[str, Any], version: int, stored_time: str | None = None) -> bool:
        checked.append(message.get("msg_id", "?"))
        return real(message, version, stored_time)

    monkeypatch.setattr(source, "needs_normalization", counted)
    assert env.projector.rebuild() == len(messages)
    marked = env.dump()
    unmarked = {m["msg_id"] for m in messages} - {
        ident for ident, mark in _marks(env).items() if mark is not None}
    assert sorted(checked) == sorted(unmarked)  # the upstream forms among them, not all
    assert {m["msg_id"] for m in messages[-3:]} <= unmarked and len(unmarked) < len(messages)
    with env.engine.begin() as conn:  # marks of other rules (an older catalog): unknown
        conn.exec_driver_sql("UPDATE events SET canonical = canonical + 1")
    checked.clear()
    assert env.projector.rebuild() == len(messages)
    assert len(checked) == len(messages)
    assert env.dump() == marked


def test_a_packed_chunk_that_does_not_parse_is_read_row_by_row(env: Env) -> None:
    messages = upstream_forms(env)
    env.send(*messages)
    top = env.store.head()
    rows, _covered = env.store.fold_rows(0, top, top)
    expected = Fold()
    assert source.fold_rows(expected, env.store, rows) == len(messages)
    broken = Packed(0, top, len(rows), b"[", b"[")  # (a body that would not embed)
    fold = Fold()
    assert source.fold_chunk(fold, env.store, broken) == len(messages)
    assert snapshot(fold, changed_only=False) == snapshot(expected, changed_only=False)


def test_a_packed_chunk_out_of_order_is_folded_in_position_order(env: Env) -> None:
    messages = [*env.start(), env.slice(0, 0), env.result(0, 0, "processing"),
                env.result(0, 0, "completed")]
    env.send(*messages)
    top = env.store.head()
    rows, _covered = env.store.fold_rows(0, top, top)
    reversed_rows = [[*row[:5], None, row[6]] for row in reversed(rows)]
    bodies = b"[" + b",".join(bytes(row[5]) for row in reversed(rows)) + b"]"
    fold = Fold()
    chunk = Packed(0, top, len(rows), orjson.dumps(reversed_rows), bodies)
    assert source.fold_chunk(fold, env.store, chunk) == len(messages)
    assert fold.position == top
    assert [row["status"] for row in snapshot(fold)["tf_slices"]] == ["completed"]


def interleaved(env: Env, others: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the execution's messages, and those with ``others`` events of another execution
    after each): its span of the log dense (others=1) or sparse (others=2)."""
    mine = upstream_forms(env)
    sent: list[dict[str, Any]] = []
    for message in mine:
        sent.append(message)
        sent += [env.msg("agent_log", ex="other-0001", run=RUN + 1, level="INFO", message="o")
                 for _ in range(others)]
    return mine, sent


@pytest.mark.parametrize("others", [1, 2])
def test_an_execution_read_in_packed_chunks_folds_as_one_read_in_rows(
        env: Env, monkeypatch: pytest.MonkeyPatch, others: int) -> None:
    from replay import rebuild
    from replay.source import Limit, Scope

    mine, sent = interleaved(env, others)
    env.send(*sent)
    monkeypatch.setattr(source, "CHUNK", 4)
    chunks: list[Any] = []
    real = Reads.execution_chunks

    def spied(self: Reads, *args: Any) -> Iterator[Any]:
        for chunk in real(self, *args):
            chunks.append(chunk)
            yield chunk

    def folded() -> tuple[dict[str, Any], int]:
        with env.store.snapshot() as view:
            fold, count = rebuild.fold_execution(view, Scope(EX), Limit(position=view.head()))
        return snapshot(fold, changed_only=False), count

    monkeypatch.setattr(Reads, "execution_chunks", spied)
    from_packed, count = folded()
    assert count == len(mine)
    if env.engine.dialect.name == "sqlite":
        assert len(chunks) > len(mine) // 4
        assert all(isinstance(chunk, Packed) and chunk.size for chunk in chunks)
    monkeypatch.setattr(Reads, "execution_chunks",
                        lambda self, execution_id, limit, packed: self.execution_rows(
                            execution_id, limit))
    assert folded() == (from_packed, count)


def test_a_packed_execution_chunk_that_does_not_parse_is_read_row_by_row(env: Env) -> None:
    mine, sent = interleaved(env, 1)
    env.send(*sent)
    top = env.store.head()
    rows, _covered = env.store.fold_rows(0, top, top)
    expected = Fold()
    assert source.fold_rows(expected, env.store, [row for row in rows if row[4] == EX]) == len(
        mine)
    broken = Packed(0, top, len(mine), b"[", b"[", EX)  # (a body that would not embed)
    fold = Fold()
    assert source.fold_chunk(fold, env.store, broken) == len(mine)
    assert snapshot(fold, changed_only=False) == snapshot(expected, changed_only=False)


def test_migrations_match_the_table_definitions(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = EventStore(db_url)
    try:
        Projector(store)
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "include_name": lambda name, type_, parents: (
                    type_ != "table" or name in t.metadata.tables)})
            assert compare_metadata(context, t.metadata) == []
    finally:
        store.close()


def test_a_rebuild_read_ahead_by_a_thread_equals_a_serial_one(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    messages = scenario(env)
    env.send(*messages)
    monkeypatch.setattr(source, "CHUNK", 3)  # many chunks through the thread's queue
    monkeypatch.setattr(source, "READ_AHEAD_MIN", 10**9)
    assert env.projector.rebuild() == len(messages)
    serial = env.dump()
    threads = []
    real = source.read_ahead

    def counted(chunks: Any) -> Any:
        threads.append(chunks)
        return real(chunks, 2)

    monkeypatch.setattr(source, "READ_AHEAD_MIN", 1)
    monkeypatch.setattr(source, "read_ahead", counted)
    assert env.projector.rebuild() == len(messages)
    assert len(threads) == 1
    assert env.dump() == serial


def test_read_ahead_hands_on_the_reader_error_and_stops_a_reader_left_early() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise RuntimeError("disk gone")

    got = []
    with pytest.raises(RuntimeError, match="disk gone"):
        for item in source.read_ahead(failing()):
            got.append(item)
    assert got == [1]

    produced = []

    def endless() -> Iterator[int]:
        number = 0
        while True:
            number += 1
            produced.append(number)
            yield number

    before = {thread.name for thread in threading.enumerate()}
    chunks = source.read_ahead(endless(), depth=2)
    assert [next(chunks), next(chunks)] == [1, 2]
    chunks.close()  # the consumer stops: the reader must stop too
    assert "swf-read-ahead" not in {thread.name for thread in threading.enumerate()} - before
    assert len(produced) <= 2 + 2 + 1  # read, queued (depth), one waiting to be queued
