"""Operations: ``swf stop`` ends a run early (its DAQ sends end_run at the stop's time, the rest
of its schedule is withdrawn, the execution is derived ``terminated``, and the log still
re-drives clean), and ``swf status`` reports agents, recording, projection lag and open
executions. The live forms are in test_live.py and test_live_broker.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from agents.base import shift
from agents.config import load_workflow
from agents.runtime import prepare
from eventstore.envelope import Incoming
from eventstore.store import EventStore
from projections import queries
from projections.projector import Projector

pytest.register_assert_rewrite("broker")
from broker import assert_redrives_clean, recorded, wait_for  # noqa: E402

SWF = [sys.executable, "-c", "from swf.cli import run; run()"]
LONG = ("fast_processing.stf_count=10", "fast_processing.slices_per_sample=3")


def stop_message(execution_id: str, at: str, msg_id: str = "stop-1") -> dict[str, Any]:
    return {"msg_type": "stop_workflow", "msg_id": msg_id, "namespace": "torre2",
            "execution_id": execution_id, "sender": "swf-stop", "timestamp": at,
            "source": "swf stop"}


def swf(*args: str) -> Any:
    from swf.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_stop_ends_the_run_at_its_time_and_the_execution_is_terminated(db_url,
                                                                          tmp_path) -> None:
    with EventStore(db_url) as store:
        runtime = prepare(store, load_workflow("fast_processing", LONG), seed=3, user="ann",
                          data_dir=tmp_path / "data", strict=True)
        execution, t0 = str(runtime.execution_id), runtime.start_time
        # STFs are due at t0+4, 7, 10, 13, ...: a stop at t0+11 lets three through.
        runtime.publish(stop_message(execution, shift(t0, 11)))
        runtime.run()
        (end,) = recorded(store, execution, "end_run")
        assert end.data["total_stf_files"] == 3 and end.time == shift(t0, 11)
        assert end.data["reason"].startswith("stopped by stop_workflow stop-1 from swf-stop")
        assert len(recorded(store, execution, "stf_gen")) == 3  # the rest was withdrawn
        (done,) = recorded(store, execution, "run_processed")
        assert done.data["status"] == "terminated"
        Projector(store).catch_up()
        summary = queries.execution_summary(store, execution)
        assert (summary["status"], summary["stf_count"], summary["slices_completed"]) == (
            "terminated", 3, 9)
        assert summary["end_time"] == done.time
        if db_url.startswith("sqlite"):
            assert_redrives_clean(store, execution)


def test_a_stop_after_the_run_ended_changes_nothing(sqlite_url, tmp_path) -> None:
    with EventStore(sqlite_url) as store:
        runtime = prepare(store, load_workflow("fast_processing", LONG), seed=3, user="ann",
                          data_dir=tmp_path / "data", strict=True)
        execution = str(runtime.execution_id)
        runtime.publish(stop_message(execution, shift(runtime.start_time, 3600)))
        runtime.run()
        (end,) = recorded(store, execution, "end_run")
        assert end.data["reason"] is None and end.data["total_stf_files"] == 10
        Projector(store).catch_up()
        assert queries.execution_summary(store, execution)["status"] == "completed"
        assert_redrives_clean(store, execution)


@pytest.mark.slow
def test_swf_stop_stops_a_realtime_run_in_another_process(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'swf.db'}"
    env = {key: value for key, value in os.environ.items()
           if key not in ("SWF_DB", "SWF_DATA", "SWF_USER", "SWF_CONFIG", "SWF_BROKER")}
    options = [part for option in (*LONG, "daq.stf_interval=2",
                                   "fast_processing.slice_processing_time=1")
               for part in ("--set", option)]
    run = subprocess.Popen([*SWF, "run", "--db", url, "--realtime", "--speed", "4", "--json",
                            *options], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        with EventStore(url) as store:
            def stfs() -> list[Any]:
                return list(store.read(msg_types=["stf_gen"]))

            execution = wait_for(stfs, "two STFs", timeout=60)[0].execution_id
            wait_for(lambda: len(stfs()) >= 2, "two STFs", timeout=60)
            began = time.monotonic()
            stopped = swf("stop", execution, "--db", url)
            assert stopped.exit_code == 0, stopped.output
            assert "appended to the store" in stopped.output
            out, err = run.communicate(timeout=60)
            assert time.monotonic() - began < 20  # not the whole 20 s (simulated 80 s) run
            summary = orjson.loads(out)
            assert run.returncode == 1  # terminated: not completed
            assert summary["status"] == "terminated", err.decode()
            assert 2 <= summary["stf_count"] < 10
            (end,) = recorded(store, execution, "end_run")
            assert end.data["total_stf_files"] == summary["stf_count"]
            assert_redrives_clean(store, execution)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def test_swf_stop_refuses_what_is_not_running(sqlite_url, tmp_path) -> None:
    done = swf("run", "--db", sqlite_url, "--data-dir", str(tmp_path / "data"), "--set",
               "fast_processing.stf_count=1")
    assert done.exit_code == 0
    over = swf("stop", "fast_processing-swf-0001", "--db", sqlite_url)
    assert over.exit_code == 1
    assert "fast_processing-swf-0001 is completed: nothing to stop" in over.output
    unknown = swf("stop", "no-such-execution", "--db", sqlite_url)
    assert unknown.exit_code == 1 and "no execution 'no-such-execution'" in unknown.output


def test_swf_status_reports_agents_lag_and_open_executions(sqlite_url, tmp_path) -> None:
    done = swf("run", "--db", sqlite_url, "--data-dir", str(tmp_path / "data"), "--set",
               "fast_processing.stf_count=1")
    assert done.exit_code == 0
    with EventStore(sqlite_url) as store:
        store.append([Incoming.of({  # an execution announced, never finished
            "msg_type": "run_imminent", "msg_id": "open-1", "namespace": "torre2",
            "execution_id": "fast_processing-swf-0099", "run_id": 100099,
            "sender": "someone", "timestamp": "2026-01-01T01:00:00Z",
            "workflow": "fast_processing"})])
    result = swf("status", "--db", sqlite_url, "--json", "--now", "2026-01-01T01:01:00Z")
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert {agent["state"] for agent in report["agents"]} == {"exited"}  # said EXITED
    assert len(report["agents"]) == 5 and report["recorders"] == []
    assert {row["lag"] for row in report["projections"]} == {1}  # before its catch-up
    (opened,) = report["open_executions"]
    assert (opened["execution_id"], opened["runs"], opened["age_s"]) == (
        "fast_processing-swf-0099", [100099], 60.0)
    assert report["recording"]["head"] == report["projections"][0]["head"]
    again = orjson.loads(swf("status", "--db", sqlite_url, "--json").stdout)
    assert {row["lag"] for row in again["projections"]} == {0}
    text = swf("status", "--db", sqlite_url).stdout
    assert "open executions" in text and "fast_processing-swf-0099" in text


def test_not_alive_names_the_agents_a_live_run_lacks(sqlite_url, tmp_path) -> None:
    from swf.commands.live_commands import not_alive

    done = swf("run", "--db", sqlite_url, "--data-dir", str(tmp_path / "data"), "--set",
               "fast_processing.stf_count=1")
    assert done.exit_code == 0
    with EventStore(sqlite_url) as store:
        Projector(store).catch_up()
        warnings = not_alive(store, load_workflow("fast_processing"), "torre2",
                             "daq_simulator-agent-swf")
    assert len(warnings) == 5  # every agent said EXITED
    assert warnings[0].startswith("no live daq_simulator-agent-swf in namespace torre2 "
                                  "(last heard of at 2026-01-01T00:")
    assert warnings[0].endswith("start `swf agent daq`")
    assert any("start `swf agent worker`" in warning for warning in warnings)


def test_swf_status_lists_the_recorders_of_every_namespace_with_their_lag(sqlite_url) -> None:
    """A recorder's heartbeats (namespace swf-recorder) list it whatever --namespace says; its
    lag is how long its latest heartbeat took to be stored; silent 3 minutes, it is stale."""
    from agents.recorder_probe import heartbeat_message

    def beat(name: str, at: str, state: str = "READY") -> Incoming:
        return Incoming.of({**heartbeat_message(name, state), "timestamp": at},
                           f"/topic/swf.recorder.{name}")

    with EventStore(sqlite_url) as store:
        store.append([beat("rec-a", "2020-01-01T00:00:00Z"),
                      beat("rec-b", "2020-01-01T00:00:00Z"),
                      beat("rec-c", "2020-01-01T00:00:00Z", "EXITED")])
        store.append([beat("rec-a", "2020-01-01T00:05:00Z")])
        recorded_at = {event.sender: event.recorded_at
                       for event in store.read(msg_types=["agent_heartbeat"])}
    result = swf("status", "--db", sqlite_url, "--json", "--namespace", "torre2",
                 "--now", "2020-01-01T00:06:00Z")
    report = orjson.loads(result.stdout)
    assert report["agents"] == []
    rows = {row["name"]: row for row in report["recorders"]}
    assert {name: row["state"] for name, row in rows.items()} == {
        "rec-a": "alive", "rec-b": "stale", "rec-c": "exited"}
    lag = (queries.parse_time(recorded_at["rec-a"])
           - queries.parse_time("2020-01-01T00:05:00Z")).total_seconds()
    assert rows["rec-a"]["lag_s"] == round(lag, 3) and rows["rec-a"]["age_s"] == 60.0
    text = swf("status", "--db", sqlite_url, "--now", "2020-01-01T00:06:00Z").stdout
    assert "recorders (`swf record`" in text
    assert [line.split()[:2] for line in text.splitlines() if line.startswith("rec-b ")] == [
        ["rec-b", "stale"]]
