"""The local PanDA API server (tests/panda_api_server.py, a test double) with the real pandaclient.

What the PanDA adapter relies on, as returned by panda-client 2.2.0's ``pandaclient.Client``:

* ``hello()`` -> ``(0, "")``; unreachable -> ``(255, "Communication issue: <error>")``.
* ``insertTaskParams(params, properErrorCode=True)`` -> ``(0, (0, "succeeded. new jediTaskID=N"))``;
  a still-active task of the same name (``uniqueTaskName``) -> ``(0, (2, "jediTaskID=N is in the
  <state> state for outDS=..."))``; the name of a finished task -> ``(0, (0, "reactivation
  accepted. jediTaskID=N ..."))`` (JEDI code 3, but the client reports 0); a server error ->
  ``(0, (4, "failed to register task"))``.
* ``getTaskStatus(N)`` -> ``(0, "<status>")``; an unknown task -> ``(255, None)``.
* ``getPandaIDsWithTaskID(N)`` -> ``(0, [PandaID, ...])``.
* ``killTask(N)`` -> ``(0, (True, 0))``; refused -> ``(0, (False, "<message>"))``.
* No server, or a 403 (token rejected): every decorated call -> ``(255, None)``.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from panda_api_server import DEFAULT_STEPS

if TYPE_CHECKING:
    from servers import PandaTestServer

pytest_plugins = ["servers"]  # the panda_server and panda_server_factory fixtures

REPO = Path(__file__).resolve().parent.parent

TERMINAL = {"done", "finished", "failed", "aborted", "cancelled", "closed", "broken", "exhausted"}
MAX_POLLS = 50


@pytest.fixture
def client(panda_server: PandaTestServer) -> Any:
    """``pandaclient.Client``, imported (lazily) with the environment pointing at the server."""
    from servers import require

    client = require("pandaclient.Client")
    assert client.server_base_path_ssl == panda_server.api_url
    return client


def task_params(name: str, **extra: Any) -> dict[str, Any]:
    params = {
        "taskName": name,
        "uniqueTaskName": True,
        "vo": "epic",
        "prodSourceLabel": "test",
        "site": "E1_BNL",
        "workingGroup": "EIC",
    }
    params.update(extra)
    return params


def submit(client: Any, params: dict[str, Any]) -> int:
    status, (code, message) = client.insertTaskParams(params, properErrorCode=True)
    assert (status, code) == (0, 0), message
    assert message.startswith("succeeded. new jediTaskID=")
    return int(message.rsplit("=", 1)[1])


def poll_until_terminal(client: Any, task_id: int) -> list[str]:
    seen = []
    for _ in range(MAX_POLLS):
        status, value = client.getTaskStatus(task_id)
        assert status == 0, value
        seen.append(value)
        if value in TERMINAL:
            return seen
    raise AssertionError(f"task {task_id} not terminal after {MAX_POLLS} polls: {seen}")


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the calls the pipeline makes -------------------------------------------------------------


def test_hello(client: Any) -> None:
    assert client.hello() == (0, "")


def test_prun_task_is_registered_and_runs_to_done(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pandaclient import PrunScript

    monkeypatch.chdir(tmp_path)
    (tmp_path / "payload.sh").write_text("#!/bin/sh\necho done > myout.txt\n")
    args = [
        "--exec", "./payload.sh",
        "--inDS", "group.daq:swf.100001.run",
        "--outDS", "user.tester.swf.100001.processed",
        "--outputs", "myout.txt",
        "--nJobs", "1",
        "--vo", "epic", "--site", "E1_BNL", "--prodSourceLabel", "test",
        "--workingGroup", "EIC", "--noBuild",
    ]  # fmt: skip
    saved_argv = sys.argv[:]
    try:
        params = PrunScript.main(True, args, dry_mode=True)
    finally:
        sys.argv[:] = saved_argv
    assert params["taskName"] == "user.tester.swf.100001.processed/"
    assert params["uniqueTaskName"] is True

    assert client.insertTaskParams(params, properErrorCode=True) == (
        0,
        (0, "succeeded. new jediTaskID=1"),
    )
    assert client.getPandaIDsWithTaskID(1) == (0, [])
    assert poll_until_terminal(client, 1) == list(DEFAULT_STEPS)
    assert client.getTaskStatus(1) == (0, "done")  # terminal states stay

    status, job_ids = client.getPandaIDsWithTaskID(1)
    assert status == 0 and len(job_ids) == 1
    status, jobs = client.getJobStatus(job_ids)
    assert status == 0
    assert jobs[0].PandaID == job_ids[0]
    assert jobs[0].jediTaskID == 1
    assert jobs[0].jobStatus == "finished"


def test_task_ids_are_sequential(client: Any) -> None:
    assert submit(client, task_params("user.t.a/")) == 1
    assert submit(client, task_params("user.t.b/")) == 2


def test_failing_task_ends_failed(
    panda_server_factory: Callable[..., PandaTestServer], client: Any
) -> None:
    panda_server_factory(fail_tasks_matching=("bad",), steps=("registered", "running", "done"))
    good = submit(client, task_params("user.t.good/"))
    bad = submit(client, task_params("user.t.bad/"))
    assert poll_until_terminal(client, good) == ["registered", "running", "done"]
    assert poll_until_terminal(client, bad) == ["registered", "running", "failed"]
    _, job_ids = client.getPandaIDsWithTaskID(bad)
    _, jobs = client.getJobStatus(job_ids)
    assert [j.jobStatus for j in jobs] == ["failed"]


def test_duplicate_task_name_while_active_is_jedi_code_2(client: Any) -> None:
    params = task_params("user.t.dup/")
    task_id = submit(client, params)
    status, (code, message) = client.insertTaskParams(params, properErrorCode=True)
    assert (status, code) == (0, 2)
    assert message.startswith(f"jediTaskID={task_id} is in the registered state for outDS=")


def test_duplicate_name_of_finished_task_is_accepted_as_reactivation(client: Any) -> None:
    params = task_params("user.t.again/")
    task_id = submit(client, params)
    poll_until_terminal(client, task_id)
    # JEDI answers code 3 ("accepted for incremental execution"); the client reports 0
    status, (code, message) = client.insertTaskParams(params, properErrorCode=True)
    assert (status, code) == (0, 0)
    assert message == (
        f"reactivation accepted. jediTaskID={task_id} (currently in done state) "
        "will be re-executed with old and/or new input"
    )
    assert poll_until_terminal(client, task_id)[-1] == "done"


def test_without_unique_task_name_there_is_no_duplicate_check(client: Any) -> None:
    params = task_params("user.t.same/", uniqueTaskName=False)
    assert submit(client, params) != submit(client, params)


def test_incomplete_task_parameters_are_a_server_error(client: Any) -> None:
    assert client.insertTaskParams({"taskName": "x"}, properErrorCode=True) == (
        0,
        (4, "failed to register task"),
    )


def test_kill_task(client: Any) -> None:
    task_id = submit(client, task_params("user.t.kill/"))
    assert client.killTask(task_id) == (0, (True, 0))
    assert poll_until_terminal(client, task_id) == ["aborting", "aborted"]
    assert client.killTask(task_id) == (
        0,
        (
            False,
            "Command rejected: the kill command is not accepted if the task is in aborted status ",
        ),
    )
    assert client.killTask(999) == (0, (False, "jediTaskID=999 not found"))


def test_unknown_task_status_is_255(client: Any) -> None:
    assert client.getTaskStatus(999) == (255, None)
    assert client.getPandaIDsWithTaskID(999) == (0, [])


def test_standalone_jobs(client: Any) -> None:
    from pandaclient.JobSpec import JobSpec

    job = JobSpec()
    job.jobName = "swf.job.1"
    job.prodSourceLabel = "user"
    job.computingSite = "E1_BNL"
    job.jobDefinitionID = 7
    status, out = client.submitJobs([job])
    assert status == 0
    assert len(out) == 1 and out[0][1] == 7
    panda_id = out[0][0]
    seen = []
    for _ in range(MAX_POLLS):
        status, jobs = client.getJobStatus([panda_id])
        assert status == 0
        seen.append(jobs[0].jobStatus)
        if seen[-1] in TERMINAL:
            break
    assert seen == ["defined", "activated", "running", "finished"]
    assert client.killJobs([panda_id, 424242]) == (0, [False, False])


def test_kill_jobs_of_a_task(client: Any) -> None:
    task_id = submit(client, task_params("user.t.jobs/"))
    job_ids: list[int] = []
    for _ in range(MAX_POLLS):
        client.getTaskStatus(task_id)
        _, job_ids = client.getPandaIDsWithTaskID(task_id)
        if job_ids:
            break
    assert job_ids
    assert client.killJobs(job_ids) == (0, [True])
    _, jobs = client.getJobStatus(job_ids)
    assert jobs[0].jobStatus == "cancelled"


# -- failures the adapter must survive ------------------------------------------------------


def test_unreachable_server(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from servers import point_pandaclient_at

    point_pandaclient_at(f"http://127.0.0.1:{closed_port()}/server/panda", monkeypatch)
    status, message = client.hello()
    assert status == 255 and message.startswith("Communication issue: ")
    assert client.insertTaskParams(task_params("user.t.x/"), properErrorCode=True) == (255, None)
    assert client.getTaskStatus(1) == (255, None)
    assert client.getPandaIDsWithTaskID(1) == (255, None)
    assert client.killTask(1) == (255, None)


def test_required_token(
    panda_server_factory: Callable[..., PandaTestServer],
    client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "test-token-" + os.urandom(4).hex()
    panda_server_factory(require_token=token)
    params = task_params("user.t.auth/")

    # no credentials: 403, which the client turns into 255 like a network failure
    assert client.hello() == (
        255,
        "Communication issue: ERROR : Token authentication failed. "
        "no bearer token in the Authorization header",
    )
    assert client.insertTaskParams(params, properErrorCode=True) == (255, None)
    assert client.getTaskStatus(1) == (255, None)

    monkeypatch.setenv("PANDA_AUTH", "oidc")
    monkeypatch.setenv("PANDA_AUTH_VO", "epic")
    monkeypatch.setenv("PANDA_AUTH_ID_TOKEN", "not-" + token)
    assert client.hello()[0] == 255
    assert client.insertTaskParams(params, properErrorCode=True) == (255, None)

    monkeypatch.setenv("PANDA_AUTH_ID_TOKEN", token)
    assert client.hello() == (0, "")
    assert submit(client, params) == 1
    assert client.getTaskStatus(1) == (0, "registered")


# -- the wire protocol itself ---------------------------------------------------------------


def http(url: str, body: Any = None, method: str | None = None) -> tuple[int, str, str]:
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.headers.get_content_type(), reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get_content_type(), err.read().decode()


def test_reply_envelope(panda_server: PandaTestServer) -> None:
    api = panda_server.api_url
    status, ctype, text = http(f"{api}/system/is_alive")
    assert (status, ctype) == (200, "application/json")
    assert json.loads(text) == {"success": True, "message": "", "data": None}

    body = {"task_parameters": task_params("user.t.wire/"), "parent_tid": None}
    _, _, text = http(f"{api}/task/submit", body)
    assert json.loads(text) == {
        "success": True,
        "message": "succeeded. new jediTaskID=1",
        "data": 1,
    }
    _, _, text = http(f"{api}/task/get_status?task_id=1")
    assert json.loads(text) == {"success": True, "message": "", "data": "registered"}
    _, _, text = http(f"{api}/task/submit", body)
    reply = json.loads(text)
    assert (reply["success"], reply["data"]) == (False, 2)


def test_protocol_errors(panda_server: PandaTestServer) -> None:
    api = panda_server.api_url
    assert http(f"{api}/task/no_such_method") == (
        403,
        "text/plain",
        "ERROR : method no_such_method is forbidden",
    )
    status, ctype, _ = http(f"{api}/task/submit", b"{not json", method="POST")
    assert (status, ctype) == (500, "text/plain")

    _, _, text = http(f"{api}/task/get_status?task_id=x")
    assert json.loads(text) == {
        "success": False,
        "message": "jediTaskID must be an integer",
        "data": None,
    }
    _, _, text = http(f"{api}/task/kill", {"task_id": "1"})
    assert json.loads(text)["message"] == "Type error: 'task_id' must be of type int, got str."
    _, _, text = http(f"{api}/task/get_status", {"task_id": 1})
    assert json.loads(text)["message"] == "expecting GET, received POST"
    _, _, text = http(f"{api}/task/get_status")
    assert json.loads(text)["message"] == "Argument error: missing a required argument: 'task_id'"
    _, _, text = http(f"{api}/job/get_description", {"job_ids": [12345]})
    assert json.loads(text) == {"success": True, "message": "", "data": [None]}


# -- the command line ---------------------------------------------------------------------------


def test_command_line_server_and_clean_shutdown() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANDA")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "panda_api_server", "--port", "0",
         "--steps", "registered,done", "--log-level", "WARNING"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )  # fmt: skip
    try:
        line = ""
        deadline = time.monotonic() + 30
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while not line and time.monotonic() < deadline and proc.poll() is None:
                if sel.select(timeout=0.5):
                    line = proc.stdout.readline().strip()
        assert line.startswith("PANDA_URL=http://127.0.0.1:"), (line, proc.poll())
        base = line.split("=", 1)[1]
        api = base.split("/server/", 1)[0] + "/api/v1"
        body = {"task_parameters": task_params("user.t.cli/"), "parent_tid": None}
        assert json.loads(http(f"{api}/task/submit", body)[2])["data"] == 1
        polls = [json.loads(http(f"{api}/task/get_status?task_id=1")[2])["data"] for _ in "abc"]
        assert polls == ["registered", "done", "done"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
