"""The embedded batch system: a local executor standing in for PanDA.

``submit_task`` registers a task (ids 1, 2, ... from a counter persisted in the work directory),
runs its payload to completion in a per-task directory and records the final status; like
PanDA's ``insertTaskParams`` the submission reply only says ``submitted`` with the new id, and
the outcome is read with ``status``. The payload is the task's ``exec``: ``builtin`` (or empty)
runs a placeholder that writes ``myout.txt`` with the run metadata; anything else is a shell
command run in the task directory with the run metadata in ``SWF_*`` environment variables.
Re-executing the same command (same reply ``msg_id``) returns the task it created: never a
second task for one request.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from agents.base import Adapter, Command
from agents.batch import FAILED, FINISHED, SUBMITTED, UNKNOWN

log = logging.getLogger(__name__)

DB_NAME = "tasks.db"
BUILTIN = "builtin"
OUTPUT_FILE = "myout.txt"
LOG_FILE = "payload.log"
DEFAULT_TIMEOUT = 3600.0  # seconds a payload command may run before it is killed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused
    request_id TEXT UNIQUE,                     -- the submitting command's reply msg_id
    name TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    exit_code INTEGER);
"""


class LocalExecutor(Adapter):
    """Adapter ``batch``: actions submit_task and status."""

    def __init__(self, workdir: Path | str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._conn = sqlite3.connect(self.workdir / DB_NAME, timeout=30, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(_SCHEMA)

    def close_connection(self) -> None:
        with self._lock:
            self._conn.close()

    def task_dir(self, task_id: int) -> Path:
        return self.workdir / "tasks" / str(task_id)

    # --- the Adapter contract ------------------------------------------------------------

    def execute(self, command: Command) -> dict[str, Any]:
        reply = dict(command.reply)
        try:
            if command.action == "submit_task":
                task_id, status, error = self.submit(command.params,
                                                     request_id=command.reply.get("msg_id"))
                reply.update(task_id=task_id, status=status, error=error)
            elif command.action == "status":
                status, error = self.status(command.params.get("task_id"))
                reply.update(task_id=command.params.get("task_id"), status=status, error=error)
            else:
                reply.update(status=UNKNOWN,
                             error=f"unknown batch action {command.action!r}")
        except (sqlite3.Error, OSError) as problem:  # the executor's own storage failed
            log.exception("local executor failed on %s", command.action)
            reply.update(status=UNKNOWN if command.action == "status" else FAILED,
                         error=f"local executor: {problem}")
        return reply

    # --- the executor ----------------------------------------------------------------------

    def submit(self, params: Mapping[str, Any], request_id: str | None = None
               ) -> tuple[int | None, str, str | None]:
        """Register and run one task; returns (task_id, "submitted", None) or a refusal."""
        name = params.get("taskName") or params.get("outDS")
        if not isinstance(name, str) or not name:
            return None, FAILED, "task parameters need a taskName or outDS"
        with self._lock, self._conn:
            if request_id is not None:
                row = self._conn.execute("SELECT task_id FROM tasks WHERE request_id=?",
                                         (request_id,)).fetchone()
                if row is not None:
                    log.info("task request %s already submitted as task %d", request_id, row[0])
                    return int(row[0]), SUBMITTED, None
            cursor = self._conn.execute(
                "INSERT INTO tasks (request_id, name, params, status) VALUES (?, ?, ?, ?)",
                (request_id, name, orjson.dumps(dict(params)).decode(), SUBMITTED))
            task_id = int(cursor.lastrowid or 0)
        log.info("task %d (%s) submitted", task_id, name)
        status, error, exit_code = self._run(task_id, params)
        with self._lock, self._conn:
            self._conn.execute("UPDATE tasks SET status=?, error=?, exit_code=? WHERE task_id=?",
                               (status, error, exit_code, task_id))
        # INFO even on failure: the status is recorded and polled; the agent reports it.
        log.info("task %d %s%s", task_id, status, f": {error}" if error else "")
        return task_id, SUBMITTED, None

    def status(self, task_id: Any) -> tuple[str, str | None]:
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            return UNKNOWN, f"task_id must be an integer, got {task_id!r}"
        with self._lock:
            row = self._conn.execute("SELECT status, error FROM tasks WHERE task_id=?",
                                     (task_id,)).fetchone()
        if row is None:
            return UNKNOWN, f"no such task {task_id}"
        return row[0], row[1]

    def task(self, task_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT task_id, name, params, status, error, exit_code "
                                     "FROM tasks WHERE task_id=?", (task_id,)).fetchone()
        if row is None:
            return None
        return {"task_id": row[0], "name": row[1], "params": orjson.loads(row[2]),
                "status": row[3], "error": row[4], "exit_code": row[5]}

    # --- payloads --------------------------------------------------------------------------

    def _run(self, task_id: int, params: Mapping[str, Any]) -> tuple[str, str | None, int | None]:
        directory = self.task_dir(task_id)
        directory.mkdir(parents=True, exist_ok=True)
        found = params.get("metadata")
        metadata: Mapping[str, Any] = found if isinstance(found, dict) else {}
        payload = params.get("exec", params.get("payload")) or BUILTIN
        if not isinstance(payload, str):
            return FAILED, f"payload must be a shell command string, got {payload!r}", None
        if payload == BUILTIN:
            document = {"task_id": task_id, "input_dataset": params.get("inDS"),
                        "output_dataset": params.get("outDS"), "metadata": metadata}
            (directory / OUTPUT_FILE).write_bytes(
                orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
            return FINISHED, None, 0
        return self._run_command(task_id, payload, directory, params, metadata)

    def _run_command(self, task_id: int, command: str, directory: Path,
                     params: Mapping[str, Any], metadata: Mapping[str, Any]
                     ) -> tuple[str, str | None, int | None]:
        env = dict(os.environ)
        env.update(_environment(task_id, directory, params, metadata))
        with open(directory / LOG_FILE, "wb") as output:
            # A session of its own, so a timeout can kill the whole payload, not just the shell.
            process = subprocess.Popen(command, shell=True, cwd=directory, env=env,
                                       stdin=subprocess.DEVNULL, stdout=output,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return FAILED, f"payload timed out after {self.timeout:g} s", None
        if code == 0:
            return FINISHED, None, 0
        tail = _last_line(directory / LOG_FILE)
        return FAILED, f"payload exited with status {code}" + (f": {tail}" if tail else ""), code


def _environment(task_id: int, directory: Path, params: Mapping[str, Any],
                 metadata: Mapping[str, Any]) -> dict[str, str]:
    env = {"SWF_TASK_ID": str(task_id), "SWF_TASK_DIR": str(directory),
           "SWF_INPUT_DATASET": str(params.get("inDS") or ""),
           "SWF_OUTPUT_DATASET": str(params.get("outDS") or ""),
           "SWF_METADATA": orjson.dumps(dict(metadata), option=orjson.OPT_SORT_KEYS).decode()}
    for key, value in metadata.items():
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            env[f"SWF_{str(key).upper()}"] = str(value)
    return env


def _last_line(path: Path, limit: int = 200) -> str:
    lines = [line.strip() for line in path.read_bytes()[-4096:].decode(errors="replace")
             .splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""
