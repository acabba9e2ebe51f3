"""``swf query ...`` and ``swf projections ...`` through the command line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from eventstore.envelope import SLICE_QUEUE, TOPIC, Incoming
from eventstore.store import EventStore
from swf.cli import main

NS, EX, RUN = "cli", "fast_processing-cli-1", 4242
STF = f"swf.{RUN}.000001.stf"
TF = f"swf.{RUN}.000001_tf_001.tf"


def message(serial: int, msg_type: str, **payload: Any) -> dict[str, Any]:
    return {"msg_type": msg_type, "msg_id": f"c-{serial}", "namespace": NS, "execution_id": EX,
            "run_id": RUN, "sender": "daq", "timestamp": f"2025-04-01T10:00:{serial:02d}Z",
            **payload}


EXECUTION = [
    ("run_imminent", {"workflow": "fast_processing", "state": "beam", "substate": "not_ready",
                      "workflow_params": {"fast_processing": {"stf_count": 1}}}),
    ("start_run", {"state": "run", "substate": "physics"}),
    ("stf_gen", {"filename": STF, "sequence": 1}),
    ("stf_ready", {"filename": STF, "sequence": 1, "size_bytes": 10, "checksum": "0000beef"}),
    ("tf_file_registered", {"tf_filename": TF, "stf_filename": STF, "tf_first": 1,
                            "tf_last": 20}),
    ("slice", {"slice_id": 0, "tf_filename": TF, "start": 1, "end": 10}),
    ("slice", {"slice_id": 1, "tf_filename": TF, "start": 11, "end": 20}),
    ("slice_result", {"slice_id": 0, "tf_filename": TF, "status": "completed", "retry": 0}),
    ("slice_result", {"slice_id": 1, "tf_filename": TF, "status": "failed", "retry": 0,
                      "error": "exit 3"}),
    ("end_run", {"total_stf_files": 1, "state": "run", "substate": "end"}),
    ("agent_heartbeat", {"agent_type": "daq", "status": "OK"}),
    ("agent_log", {"level": "ERROR", "message": "slice 1 failed", "module": "worker"}),
]


@pytest.fixture
def db(db_url: str) -> Iterator[str]:
    with EventStore(db_url) as store:
        store.append(Incoming.of(message(i, kind, **payload),
                                 SLICE_QUEUE if kind == "slice" else TOPIC)
                     for i, (kind, payload) in enumerate(EXECUTION, 1))
    yield db_url


def swf(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def as_json(*args: str) -> Any:
    result = swf(*args, "--json")
    assert result.exit_code == 0, result.output
    return orjson.loads(result.output)


def test_query_runs_json_is_keyed_by_design_column_names(db: str) -> None:
    rows = as_json("query", "runs", "--db", db)
    assert len(rows) == 1
    row = rows[0]
    assert {"run_number", "phase", "stf_count", "stf_samples_received", "slices_created",
            "slices_completed", "slices_failed", "execution_id"} <= set(row)
    assert (row["run_number"], row["phase"], row["stf_count"], row["stf_samples_received"],
            row["slices_created"], row["slices_completed"], row["slices_failed"]) == (
        RUN, "completed", 1, 1, 2, 1, 1)


def test_every_query_command_answers(db: str) -> None:
    expected = {"executions": 1, "runs": 1, "stf-files": 1, "tf-samples": 1, "slices": 2,
                "datasets": 0, "tasks": 0, "agents": 1, "logs": 1}
    for command, count in expected.items():
        rows = as_json("query", command, "--db", db)
        assert len(rows) == count, command
        table = swf("query", command, "--db", db)
        assert table.exit_code == 0, table.output
        assert ("(no rows)" in table.output) == (count == 0)
    executions = as_json("query", "executions", "--db", db)
    assert executions[0]["parameters"] == {"fast_processing": {"stf_count": 1}}
    assert executions[0]["runs"] == [RUN]


def test_query_filters_on_the_command_line(db: str) -> None:
    assert [r["slice_id"] for r in as_json("query", "slices", "--db", db, "--status",
                                           "failed")] == [1]
    assert as_json("query", "slices", "--db", db, "--execution-id", "other") == []
    assert len(as_json("query", "slices", "--db", db, "--run", str(RUN), "--limit", "1")) == 1
    assert as_json("query", "slices", "--db", db, "--namespace", "other") == []
    assert [r["slice_id"] for r in as_json("query", "slices", "--db", db, "--since",
                                           "2025-04-01T10:00:07Z")] == [1]
    assert as_json("query", "stf-files", "--db", db, "--until", "2025-04-01T10:00:02Z") == []
    assert as_json("query", "agents", "--db", db, "--now", "2025-04-01T11:00:00Z")[0][
        "status"] == "EXITED"
    assert as_json("query", "logs", "--db", db, "--level", "warning") == []
    bad = swf("query", "slices", "--db", db, "--since", "yesterday")
    assert bad.exit_code != 0


def test_query_execution_summary(db: str) -> None:
    summary = as_json("query", "execution", EX, "--db", db, "--now", "2025-04-01T10:01:00Z")
    assert (summary["status"], summary["phase"], summary["runs"], summary["stf_count"],
            summary["slices_created"], summary["slices_failed"]) == (
        "running", "completed", [RUN], 1, 2, 1)
    assert summary["duration_s"] == 59.0
    assert summary["errors"] == ["2025-04-01T10:00:12.000000Z ERROR daq: slice 1 failed"]
    readable = swf("query", "execution", EX, "--db", db)
    assert readable.exit_code == 0
    assert "slices_failed" in readable.output and "slice 1 failed" in readable.output
    missing = swf("query", "execution", "nope", "--db", db)
    assert missing.exit_code == 1
    assert "no execution 'nope'" in missing.output


def test_projections_status_rebuild_and_catch_up(db: str) -> None:
    status = as_json("projections", "status", "--db", db)
    assert {row["lag"] for row in status} == {len(EXECUTION)}  # nothing applied yet
    assert as_json("projections", "catch-up", "--db", db) == {"applied": len(EXECUTION)}
    assert {row["lag"] for row in as_json("projections", "status", "--db", db)} == {0}
    before = as_json("query", "slices", "--db", db)
    result = as_json("projections", "rebuild", "--db", db, "--name", "tf_slices")
    assert (result["projections"], result["events"]) == (["tf_slices"], len(EXECUTION))
    assert as_json("query", "slices", "--db", db) == before
    everything = swf("projections", "rebuild", "--db", db)
    assert everything.exit_code == 0 and "rebuilt executions" in everything.output
    assert swf("projections", "rebuild", "--db", db, "--name", "nope").exit_code == 2
