"""``swf run prompt_processing`` against a real Rucio server and the PanDA API server.

``--set ddm.backend=rucio --set batch.backend=panda`` must print the same summary as the
embedded run, naming the Rucio dataset and the PanDA task; the execution it records must replay
without calling either server.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner, Result

from agents.batch.local import LocalExecutor
from agents.batch.panda import PandaBatch
from agents.ddm.local import LocalCatalog
from agents.ddm.rucio import RucioCatalog
from agents.registry import Misconfigured, create_adapter

if TYPE_CHECKING:
    from servers import PandaTestServer, RucioServer

pytest_plugins = ["servers"]  # rucio_server, panda_server

REPO = Path(__file__).resolve().parent.parent
SUMMARY_KEYS = {"execution_id", "workflow", "namespace", "status", "phase", "runs", "datasets",
                "tasks", "errors", "start_time", "end_time", "duration_s"}


def swf(*args: str) -> Result:
    from swf.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def external_run(rucio_server: RucioServer, scope: str, db: str, data: Path, *extra: str
                 ) -> Result:
    return swf("run", "prompt_processing", "--set", "ddm.backend=rucio",
               "--set", "batch.backend=panda",
               "--set", f"ddm.rucio_config={rucio_server.config_file}",
               "--set", f"processing.scope={scope}", "--db", db, "--data-dir", str(data), *extra)


@pytest.fixture
def scope(rucio_server: RucioServer) -> str:
    name = f"e.{uuid.uuid4().hex[:12]}"
    rucio_server.client().add_scope("root", name)
    return name


@pytest.fixture
def recorded(rucio_server: RucioServer, panda_server: PandaTestServer, scope: str,
             sqlite_url: str, tmp_path: Path) -> dict[str, Any]:
    """One external run, recorded in ``sqlite_url``: its JSON summary."""
    result = external_run(rucio_server, scope, sqlite_url, tmp_path / "data", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first run installs the Rucio server
def test_swf_run_against_rucio_and_panda(rucio_server: RucioServer,
                                         panda_server: PandaTestServer, scope: str,
                                         recorded: dict[str, Any], sqlite_url: str,
                                         tmp_path: Path) -> None:
    run = recorded["runs"][0]
    dataset = f"swf.{run}.run"
    assert recorded["status"] == "completed" and recorded["errors"] == []
    assert recorded["datasets"] == [{"run_number": run, "scope": scope, "name": dataset,
                                     "state": "closed", "file_count": 5,
                                     "size_bytes": 5 * 4096}]
    assert recorded["tasks"] == [{"run_number": run, "task_id": 1, "status": "done"}]
    # the same summary as the embedded run (only the backends differ)
    embedded = swf("run", "prompt_processing", "--db", f"{sqlite_url}.embedded", "--data-dir",
                   str(tmp_path / "embedded"), "--json")
    assert set(json.loads(embedded.output)) == set(recorded) >= SUMMARY_KEYS
    # what the servers hold
    admin = rucio_server.client()
    assert admin.get_did(scope, dataset)["open"] is False
    files = list(admin.list_files(scope, dataset))
    assert len(files) == 5 and {f["bytes"] for f in files} == {4096}
    task = panda_server.server.state.tasks[1]
    assert task.params["dsForIN"] == f"{scope}:{dataset}"
    # swf query tasks shows the PanDA task id
    shown = swf("query", "tasks", "--json", "--db", sqlite_url)
    (row,) = json.loads(shown.output)
    assert (row["task_id"], row["status"], row["input_dataset"], row["run_number"]) == (
        1, "done", f"{scope}:{dataset}", run)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(importlib.util.find_spec("replay.cli") is None,
                    reason="replay not yet available")
def test_replay_of_an_external_run_calls_neither_server(
        panda_server: PandaTestServer, recorded: dict[str, Any], sqlite_url: str,
        tmp_path: Path) -> None:
    panda_server.server.stop()
    # In a fresh process whose adapters refuse to run: any call to the outside fails the replay.
    script = (
        "import sys\n"
        "import agents.registry, agents.ddm.rucio, agents.batch.panda\n"
        "def refuse(*args, **kwargs):\n"
        "    raise AssertionError('the replay called an adapter')\n"
        "agents.registry.create_adapter = refuse\n"
        "agents.ddm.rucio.RucioCatalog.execute = refuse\n"
        "agents.batch.panda.PandaBatch.execute = refuse\n"
        "from replay.cli import main\n"
        "sys.argv = ['swf-replay', *sys.argv[1:]]\n"
        "sys.exit(main())\n")
    done = subprocess.run(
        [sys.executable, "-c", script, recorded["execution_id"], "--agents", "--db", sqlite_url],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
        text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "processing" in done.stdout  # the processing agent was among those re-driven


# --- backend selection (no servers) -------------------------------------------------------------


def test_backends_are_chosen_by_the_workflow(tmp_path: Path) -> None:
    assert isinstance(create_adapter("ddm", tmp_path), LocalCatalog)
    assert isinstance(create_adapter("batch", tmp_path, {"batch": {"backend": "local"}}),
                      LocalExecutor)
    rucio = create_adapter("ddm", tmp_path, {"ddm": {"backend": "rucio", "rse": "X_DISK"}})
    assert isinstance(rucio, RucioCatalog) and rucio.settings.rse == "X_DISK"
    panda = create_adapter("batch", tmp_path, {"batch": {
        "backend": "panda", "panda_url": "http://panda.example:8080/server/panda"}})
    assert isinstance(panda, PandaBatch)
    assert panda.settings.url == "http://panda.example:8080/server/panda"
    assert isinstance(create_adapter("batch", tmp_path, {"batch": {"backend": "slurm"}}),
                      Misconfigured)


def test_a_misconfigured_backend_fails_the_run_with_a_reason(sqlite_url: str,
                                                             tmp_path: Path) -> None:
    result = swf("run", "prompt_processing", "--set", "ddm.backend=rucoi", "--db", sqlite_url,
                 "--data-dir", str(tmp_path / "data"), "--json")
    assert result.exit_code == 1
    summary = json.loads(result.output)
    assert summary["status"] == "failed"
    assert any("configuration error: [ddm] backend = 'rucoi' is not one of 'local', 'rucio'"
               in error for error in summary["errors"])
