"""The embedded run is a pure function of its store: the same seed and configuration give
byte-identical bodies from any working directory, user ($USER) or data directory; the local
DDM and batch state live in the store's own data directory (beside its file by default), so
stores never share it; nothing is written into the working directory unless asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from eventstore.store import EventStore

SWF = [sys.executable, "-c", "from swf.cli import run; run()"]
# Both workflows: files, slices and workers; DDM datasets and batch tasks.
RUNS = (("fast_processing", "fast_processing.stf_count=3", "workers.failure_fraction=0.15"),
        ("prompt_processing", "prompt_processing.stf_count=3"))


def swf(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {key: value for key, value in os.environ.items()
               if key not in ("SWF_DB", "SWF_DATA", "SWF_USER", "SWF_CONFIG")}
    return subprocess.run([*SWF, *args], cwd=cwd, env={**environ, **env}, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120, check=False)


def run_both(cwd: Path, *extra: str, **env: str) -> None:
    for workflow, *options in RUNS:
        settings = [part for option in options for part in ("--set", option)]
        done = swf("run", workflow, "--seed", "5", "--json", *settings, *extra, cwd=cwd, **env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert orjson.loads(done.stdout)["status"] == "completed"


def bodies(url: str) -> list[tuple[str, bytes]]:
    with EventStore(url, read_only=True) as store:
        return [(event.destination, event.body) for event in store.read_raw()]


@pytest.mark.slow
def test_bodies_do_not_depend_on_directory_user_or_data_directory(tmp_path) -> None:
    first, second = tmp_path / "alice-home", tmp_path / "bob-home"
    first.mkdir()
    second.mkdir()
    # The default store (./swf.db) and data directory (beside it), as USER=alice...
    run_both(first, USER="alice", LOGNAME="alice")
    # ... and an explicit data directory elsewhere, as USER=bob.
    elsewhere = tmp_path / "mounted" / "data"
    run_both(second, USER="bob", LOGNAME="bob", SWF_DATA=str(elsewhere))
    one = bodies(f"sqlite:///{first / 'swf.db'}")
    two = bodies(f"sqlite:///{second / 'swf.db'}")
    assert len(one) > 200 and one == two
    text = b"\n".join(body for _, body in one)
    for leak in (b"alice", b"bob", str(tmp_path).encode(), b"file://"):
        assert leak not in text
    assert b'"execution_id":"prompt_processing-swf-0001"' in text  # the user is a setting
    assert (first / "swf-data" / "100001" / "swf.100001.000001.stf").is_file()
    assert (elsewhere / "100002" / "swf.100002.000001.stf").is_file()
    assert not (second / "swf-data").exists()


@pytest.mark.slow
def test_two_fresh_stores_in_one_directory_keep_their_own_state(tmp_path) -> None:
    for name in ("a", "b"):  # before: the second failed closing its dataset (shared catalog)
        done = swf("run", "prompt_processing", "--db", f"sqlite:///{name}.db", "--json",
                   cwd=tmp_path, SWF_USER="ann")
        assert done.returncode == 0, done.stdout + done.stderr
        summary = orjson.loads(done.stdout)
        assert [d["state"] for d in summary["datasets"]] == ["closed"]
        assert [task["task_id"] for task in summary["tasks"]] == [1]  # its own executor
        assert (tmp_path / f"{name}-data" / "ddm").is_dir()
    # A data directory is claimed by the first store that used it; another store is refused.
    refused = swf("run", "--db", "sqlite:///c.db", "--data-dir", "a-data", cwd=tmp_path)
    assert refused.returncode == 2
    assert "a-data belongs to another store" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_no_command_writes_into_the_working_directory_unless_asked(tmp_path) -> None:
    cwd, stores = tmp_path / "source-tree", tmp_path / "stores"
    cwd.mkdir()
    stores.mkdir()
    done = swf("run", "--db", f"sqlite:///{stores / 'x.db'}", "--set",
               "fast_processing.stf_count=1", cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert list(cwd.iterdir()) == []
    assert (stores / "x-data" / "100001").is_dir()


def test_a_store_without_a_file_needs_a_data_directory(pg_url, tmp_path) -> None:
    done = swf("run", "--db", pg_url, cwd=tmp_path)
    assert done.returncode == 2
    assert "give a data directory (--data-dir, $SWF_DATA or [agent] data_dir" in done.stderr
    with EventStore(pg_url) as store:
        assert store.head() == 0  # refused before anything was recorded
