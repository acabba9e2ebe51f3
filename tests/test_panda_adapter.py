"""The PanDA ``batch`` adapter (agents/batch/panda.py) with the real ``pandaclient``.

The server is the project's PanDA API v1 server (``panda_server`` fixtures, one per test): task
states advance one step per ``getTaskStatus`` poll, so a run's status events are known exactly.
The DDM side of these runs is the embedded catalog.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson
import pytest
from click.testing import CliRunner
from panda_api_server import DEFAULT_STEPS
from prompt_runs import closed_port, messages, only, prompt_config, runtime

from agents.base import Command
from agents.batch.panda import PandaBatch, PandaSettings
from swf.settings import load_settings

if TYPE_CHECKING:
    from servers import PandaTestServer

pytest_plugins = ["servers"]  # the panda_server and panda_server_factory fixtures

TOKEN = "s3cret-token-value-0123456789"


@pytest.fixture(autouse=True)
def _panda_config_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pandaclient's OIDC token cache defaults to the working directory: keep it private."""
    monkeypatch.setenv("PANDA_CONFIG_ROOT", str(tmp_path / "panda-config"))


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Any]:
    from eventstore.store import EventStore

    with EventStore(sqlite_url) as opened:
        yield opened


def panda_workflow(*overrides: str, **batch: Any) -> Any:
    return prompt_config("batch.backend=panda", *overrides,
                         batch={"retry_delay": 0, **batch})


def deployed(section: dict[str, Any] | None = None) -> PandaSettings:
    """The settings `swf run` would give the adapter in this environment (PANDA_URL...)."""
    return load_settings().panda_settings().for_workflow(section)


def batch(adapter: PandaBatch, action: str, **params: Any) -> dict[str, Any]:
    return adapter.execute(Command("batch", action, params, reply={"msg_id": "test"}))


def task_request(run: int = 100001, **extra: Any) -> dict[str, Any]:
    """The processing agent's submit_task parameters."""
    out = f"user.swf.swf.{run}.processed"
    return {"taskName": out, "inDS": f"group.daq:swf.{run}.run", "outDS": out, "vo": "epic",
            "site": "E1_BNL", "prodSourceLabel": "test", "workingGroup": "EIC",
            "exec": "builtin", "nJobs": 1, "noBuild": True,
            "metadata": {"run_number": run, "execution_id": "exec-1"}, **extra}


def exec_line(server: PandaTestServer, task_id: int) -> str:
    """The payload command the task runs, as the worker decodes it."""
    parameters = server.server.state.tasks[task_id].params["jobParameters"]
    start = next(i for i, p in enumerate(parameters) if p.get("value") == '-p "')
    return unquote(parameters[start + 1]["value"])


def statuses(store: Any, execution_id: str) -> list[str]:
    return [m["status"] for m in messages(store, execution_id, "panda_task_status")]


# --- whole runs: the processing agent with the PanDA adapter ----------------------------------


def test_one_task_per_run_with_each_status_recorded(
        panda_server: PandaTestServer, store: Any, sqlite_url: str, tmp_path: Path) -> None:
    executions = []
    for attempt in range(2):
        run = runtime(store, tmp_path / f"data{attempt}", panda_workflow())
        assert run.run().errors == 0
        executions.append((run.execution_id, run.run_id))
    for task_id, (execution, run_number) in enumerate(executions, start=1):
        submitted = only(messages(store, execution, "panda_task_submitted"))
        assert (submitted["task_id"], submitted["status"], submitted["error"]) == (
            task_id, "submitted", None)
        assert statuses(store, execution) == list(DEFAULT_STEPS)  # every poll, every state
        done = only(messages(store, execution, "run_processed"))
        assert (done["status"], done["task_id"], done["error"]) == ("completed", task_id, None)
        task = panda_server.server.state.tasks[task_id]
        assert task.name == f"user.swf.swf.{run_number}.processed/"
        assert (task.params["dsForIN"], task.params["vo"], task.params["site"]) == (
            f"group.daq:swf.{run_number}.run", "epic", "E1_BNL")
        payload = exec_line(panda_server, task_id)  # the run metadata travels with the task
        assert f"SWF_RUN_NUMBER={run_number} " in payload
        assert f"SWF_EXECUTION_ID={execution} " in payload
        assert payload.endswith('; echo "$SWF_METADATA" > myout.txt')
    assert sorted(panda_server.server.state.tasks) == [1, 2]  # one task per run, no more

    from swf.cli import main

    shown = CliRunner().invoke(main, ["query", "tasks", "--json", "--db", sqlite_url],
                               catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    rows = sorted(json.loads(shown.output), key=lambda row: row["task_id"])
    assert [(r["task_id"], r["status"], r["execution_id"], r["input_dataset"]) for r in rows] == [
        (task_id, "done", execution, f"group.daq:swf.{run_number}.run")
        for task_id, (execution, run_number) in enumerate(executions, start=1)]


def test_failing_task_fails_the_run(panda_server_factory: Callable[..., PandaTestServer],
                                    store: Any, tmp_path: Path) -> None:
    panda_server_factory(fail_tasks_matching=("processed",), steps=("registered", "running",
                                                                    "done"))
    run = runtime(store, tmp_path / "data", panda_workflow())
    assert run.run().errors == 0
    assert statuses(store, run.execution_id) == ["registered", "running", "failed"]
    done = only(messages(store, run.execution_id, "run_processed"))
    assert (done["status"], done["error"]) == ("failed", "task 1 failed")


def test_unreachable_panda_is_a_recorded_error_and_the_agent_keeps_running(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{closed_port()}/server/panda"
    run = runtime(store, tmp_path / "data", panda_workflow(f"batch.panda_url={url}"))
    assert run.run().errors == 0  # strict runtime: nothing raised
    submitted = only(messages(store, run.execution_id, "panda_task_submitted"))
    assert submitted["task_id"] is None
    assert submitted["error"].startswith(
        f"unreachable: PanDA server {url}: insertTaskParams answered (255, None) (unreachable "
        f"or refused, HTTP error); is_alive: ")
    done = only(messages(store, run.execution_id, "run_processed"))
    assert done["status"] == "failed"
    assert done["error"] == f"task submission failed: {submitted['error']}"
    beats = messages(store, run.execution_id, "agent_heartbeat")
    assert beats[-1]["operational_state"] == "EXITED"


def test_server_lost_while_polling_fails_the_run_after_three_unknowns(
        panda_server: PandaTestServer, store: Any, tmp_path: Path) -> None:
    url = panda_server.base_url
    run = runtime(store, tmp_path / "data", panda_workflow())

    def stop_after_submission(event: Any) -> None:
        if event.msg_type == "panda_task_submitted":
            panda_server.server.stop()

    run.observe = stop_after_submission
    assert run.run().errors == 0
    polled = messages(store, run.execution_id, "panda_task_status")
    assert [m["status"] for m in polled] == ["unknown"] * 3
    assert all(m["error"].startswith(f"unreachable: PanDA server {url}: "
                                     f"getTaskStatus(1) answered (255, None)") for m in polled)
    done = only(messages(store, run.execution_id, "run_processed"))
    assert done["status"] == "failed"
    assert done["error"].startswith("task 1 status unknown 3 times in a row: unreachable: ")


def test_auth_failure_through_the_agent(panda_server_factory: Callable[..., PandaTestServer],
                                        store: Any, tmp_path: Path) -> None:
    panda_server_factory(require_token=TOKEN)
    run = runtime(store, tmp_path / "data", panda_workflow())
    assert run.run().errors == 0
    done = only(messages(store, run.execution_id, "run_processed"))
    assert done["status"] == "failed"
    assert done["error"].startswith("task submission failed: authentication failed: PanDA "
                                    "server ")
    assert "Token authentication failed" in done["error"]


# --- the adapter, command by command ----------------------------------------------------------


@pytest.mark.parametrize(("auth", "expected"), [
    ({}, "refused the request: ERROR : Token authentication failed. no bearer token in the "
         "Authorization header"),
    ({"PANDA_AUTH": "oidc", "PANDA_AUTH_VO": "epic", "PANDA_AUTH_ID_TOKEN": "wrong-token-12345"},
     "refused the request: ERROR : Token authentication failed. invalid token"),
    ({"PANDA_AUTH": "oidc", "PANDA_AUTH_VO": "epic"},  # no token: device flow, then sys.exit
     "pandaclient exited with status 255"),
    ({"PANDA_AUTH": "oidc"},  # no VO: sys.exit before any request
     "pandaclient exited with status 255"),
])
def test_authentication_failures_are_replies(
        panda_server_factory: Callable[..., PandaTestServer], monkeypatch: pytest.MonkeyPatch,
        auth: dict[str, str], expected: str) -> None:
    server = panda_server_factory(require_token=TOKEN)
    for name, value in auth.items():
        monkeypatch.setenv(name, value)
    adapter = PandaBatch(deployed(), sleep=pytest.fail)  # auth: never retried
    for reply in (batch(adapter, "submit_task", **task_request()),
                  batch(adapter, "status", task_id=1)):
        assert reply["error"].startswith("authentication failed: ")
        assert expected in reply["error"]
        assert server.base_url in reply["error"]
        assert "wrong-token-12345" not in reply["error"]
    assert server.server.state.tasks == {}
    # the right token is accepted: the failures above were about the credentials
    monkeypatch.setenv("PANDA_AUTH", "oidc")
    monkeypatch.setenv("PANDA_AUTH_VO", "epic")
    monkeypatch.setenv("PANDA_AUTH_ID_TOKEN", TOKEN)
    accepted = batch(adapter, "submit_task", **task_request())
    assert (accepted["task_id"], accepted["error"]) == (1, None)
    assert TOKEN not in orjson.dumps(accepted).decode()


def test_unknown_task_and_bad_requests_are_replies(panda_server: PandaTestServer) -> None:
    adapter = PandaBatch(deployed())
    assert batch(adapter, "status", task_id=42) == {
        "msg_id": "test", "task_id": 42, "status": "unknown",
        "error": f"task 42 unknown to the PanDA server {panda_server.base_url}: getTaskStatus "
                 f"answered (255, None)"}
    assert batch(adapter, "status", task_id="42")["error"] == (
        "task_id must be an integer, got '42'")
    assert batch(adapter, "kill")["error"] == "unknown batch action 'kill'"
    missing = batch(adapter, "submit_task", **task_request(inDS=None))
    assert (missing["status"], missing["error"]) == (
        "failed", "invalid task parameters: inDS and outDS must be non-empty strings, got None, "
                  "'user.swf.swf.100001.processed'")


def test_same_task_name_while_active_is_refused_and_after_done_reactivated(
        panda_server: PandaTestServer) -> None:
    adapter = PandaBatch(deployed())
    assert batch(adapter, "submit_task", **task_request())["task_id"] == 1
    again = batch(adapter, "submit_task", **task_request())
    assert again["task_id"] is None
    assert again["error"].startswith("PanDA refused the task (code 2): jediTaskID=1 is in the "
                                     "registered state")
    while batch(adapter, "status", task_id=1)["status"] != "done":
        pass
    reactivated = batch(adapter, "submit_task", **task_request())
    assert (reactivated["task_id"], reactivated["error"]) == (1, None)
    assert sorted(panda_server.server.state.tasks) == [1]


def test_a_lost_submission_answer_adopts_the_task_instead_of_a_second_one(
        panda_server: PandaTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from pandaclient import Client

    real = Client.insertTaskParams
    answers: list[Any] = []

    def lossy(*args: Any, **kwargs: Any) -> Any:
        answer = real(*args, **kwargs)  # the server registers the task...
        answers.append(answer)
        return (255, None) if len(answers) == 1 else answer  # ...but the first answer is lost

    monkeypatch.setattr(Client, "insertTaskParams", lossy)
    delays: list[float] = []
    adapter = PandaBatch(deployed({"retry_delay": 0.5}), sleep=delays.append)
    reply = batch(adapter, "submit_task", **task_request())
    assert (reply["task_id"], reply["status"], reply["error"]) == (1, "submitted", None)
    assert answers[1][1][0] == 2  # the retry met our own task, still active
    assert delays == [0.5]
    assert sorted(panda_server.server.state.tasks) == [1]


def test_unreachable_submission_is_retried_with_backoff() -> None:
    url = f"http://127.0.0.1:{closed_port()}/server/panda"
    delays: list[float] = []
    settings = PandaSettings(url=url, attempts=4, retry_delay=1.0, max_delay=3.0)
    reply = batch(PandaBatch(settings, sleep=delays.append), "submit_task", **task_request())
    assert reply["status"] == "failed" and reply["error"].startswith(f"unreachable: PanDA "
                                                                     f"server {url}: ")
    assert delays == [1.0, 2.0, 3.0]


def test_pandaclient_leaves_stdout_argv_and_environment_alone(
        panda_server: PandaTestServer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RUCIO_ACCOUNT", "mine")
    monkeypatch.delenv("RUCIO_APPID", raising=False)
    argv = list(sys.argv)
    adapter = PandaBatch(deployed())
    assert batch(adapter, "submit_task", **task_request())["task_id"] == 1
    assert batch(adapter, "status", task_id=7)["status"] == "unknown"
    out = capsys.readouterr().out
    assert out == ""  # no "No valid grid proxy certificate found", no prun warnings
    assert sys.argv == argv
    assert os.environ["RUCIO_ACCOUNT"] == "mine" and "RUCIO_APPID" not in os.environ


def test_missing_pandaclient_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandaclient", None)
    reply = batch(PandaBatch(PandaSettings()), "submit_task", **task_request())
    assert reply["status"] == "failed"
    assert reply["error"].startswith("configuration error: pandaclient is not installed")


def test_import_time_dns_does_not_stop_the_agent(panda_server: PandaTestServer,
                                                 tmp_path: Path) -> None:
    """A fresh process, PANDA_BEHIND_REAL_LB unset and a cache server that does not resolve:
    pandaclient alone dies at import; through the adapter it just works."""
    env = {key: value for key, value in os.environ.items()
           if key != "PANDA_BEHIND_REAL_LB" and not key.startswith(("PANDA_AUTH", "OIDC_"))}
    env.update(PANDA_URL=panda_server.base_url, PANDA_URL_SSL=panda_server.base_url,
               PANDACACHE_URL="https://no-such-host.invalid/server/panda",
               PANDA_CONFIG_ROOT=str(tmp_path))
    script = (
        "import json\n"
        "from agents.base import Command\n"
        "from agents.batch.panda import PandaBatch\n"
        "from swf.settings import load_settings\n"
        "from tests_request import request\n"
        "reply = PandaBatch(load_settings().panda_settings()).execute(\n"
        "    Command('batch', 'submit_task', request, reply={}))\n"
        "print(json.dumps(reply))\n")
    (tmp_path / "tests_request.py").write_text(f"request = {task_request()!r}\n")
    repo = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join([str(repo), str(tmp_path)])
    alone = subprocess.run([sys.executable, "-c", "import pandaclient.Client"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
    assert alone.returncode != 0 and "socket.gaierror" in alone.stderr
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "task_id": 1, "status": "submitted", "error": None}
