"""The embedded batch system: persistent task ids, payload runs, recorded statuses."""

from __future__ import annotations

import json

import pytest

from agents.base import Command
from agents.batch.local import LocalExecutor

META = {"run_number": 100, "execution_id": "exec-1", "file_count": 5, "size_bytes": 5000}


def params(payload: str = "builtin", **extra) -> dict:
    return {"taskName": "user.swf.swf.100.processed", "inDS": "group.daq:swf.100.run",
            "outDS": "user.swf.swf.100.processed", "exec": payload, "metadata": META, **extra}


def submit(executor: LocalExecutor, task_params: dict, msg_id: str = "s1") -> dict:
    template = {"msg_id": msg_id, "msg_type": "panda_task_submitted", "task_id": None,
                "status": "unknown", "error": None}
    return executor.execute(Command("batch", "submit_task", task_params, reply=template))


def status(executor: LocalExecutor, task_id) -> dict:
    template = {"msg_id": "p1", "msg_type": "panda_task_status", "status": "unknown"}
    return executor.execute(Command("batch", "status", {"task_id": task_id}, reply=template))


@pytest.fixture
def executor(tmp_path) -> LocalExecutor:
    return LocalExecutor(tmp_path / "batch")


def test_ids_count_from_one_and_persist(tmp_path):
    first = LocalExecutor(tmp_path / "batch")
    assert [submit(first, params(), f"s{i}")["task_id"] for i in range(3)] == [1, 2, 3]
    first.close_connection()
    second = LocalExecutor(tmp_path / "batch")
    assert submit(second, params(), "s9")["task_id"] == 4
    assert status(second, 2)["status"] == "finished"


def test_builtin_payload_writes_myout_with_run_metadata(executor):
    reply = submit(executor, params())
    assert (reply["task_id"], reply["status"], reply["error"]) == (1, "submitted", None)
    assert reply["msg_type"] == "panda_task_submitted"  # the template, completed
    assert status(executor, 1) | {"msg_id": None} == {
        "msg_id": None, "msg_type": "panda_task_status", "task_id": 1, "status": "finished",
        "error": None}
    out = json.loads((executor.task_dir(1) / "myout.txt").read_text())
    assert out["metadata"] == META and out["input_dataset"] == "group.daq:swf.100.run"


def test_same_request_twice_is_one_task(executor):
    assert submit(executor, params(), "same")["task_id"] == 1
    assert submit(executor, params(), "same")["task_id"] == 1
    assert submit(executor, params(), "other")["task_id"] == 2


def test_shell_payload_gets_metadata_in_environment(executor):
    reply = submit(executor, params('echo "$SWF_RUN_NUMBER $SWF_INPUT_DATASET $SWF_TASK_ID" '
                                    '> myout.txt'))
    assert status(executor, reply["task_id"])["status"] == "finished"
    text = (executor.task_dir(1) / "myout.txt").read_text().strip()
    assert text == "100 group.daq:swf.100.run 1"
    assert executor.task(1)["exit_code"] == 0


def test_failing_payload_is_recorded_with_its_exit_status_and_last_line(executor):
    submit(executor, params("echo starting; echo 'no input files' >&2; exit 3"))
    reply = status(executor, 1)
    assert reply["status"] == "failed"
    assert reply["error"] == "payload exited with status 3: no input files"
    assert executor.task(1)["exit_code"] == 3


def test_missing_payload_command_fails_the_task(executor):
    submit(executor, params("./no-such-payload.sh"))
    reply = status(executor, 1)
    assert reply["status"] == "failed" and "status 127" in reply["error"]


def test_payload_timeout_kills_it(tmp_path):
    executor = LocalExecutor(tmp_path / "batch", timeout=0.2)
    submit(executor, params("sleep 30"))
    reply = status(executor, 1)
    assert (reply["status"], reply["error"]) == ("failed", "payload timed out after 0.2 s")


def test_submission_without_a_task_name_is_refused(executor):
    reply = submit(executor, {"exec": "builtin"})
    assert (reply["task_id"], reply["status"]) == (None, "failed")
    assert "taskName" in reply["error"]


def test_status_of_unknown_task_and_bad_ids(executor):
    assert status(executor, 7) | {"msg_id": None} == {
        "msg_id": None, "msg_type": "panda_task_status", "task_id": 7, "status": "unknown",
        "error": "no such task 7"}
    assert status(executor, "7")["status"] == "unknown"
    unknown = executor.execute(Command("batch", "kill", {}, reply={"msg_id": "k"}))
    assert unknown["status"] == "unknown" and "kill" in unknown["error"]
