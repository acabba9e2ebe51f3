"""The "payload" adapter: runs a slice's payload and completes its ``slice_result``.

The default payload is a built-in placeholder that succeeds (production will run EICrecon). With
``[workers] payload_command`` set, the command runs in a subprocess: ``{tf_filename}``,
``{stf_filename}``, ``{slice_id}``, ``{start}``, ``{end}``, ``{retry}``, ``{run_id}`` and
``{worker}`` in it are replaced, the same values are in ``SWF_*`` environment variables, and a
non-zero exit status fails the slice with the last line of its stderr as the error.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from typing import Any

from agents.base import Adapter, Command

log = logging.getLogger("swf.adapter.payload")
_FIELDS = ("tf_filename", "stf_filename", "slice_id", "start", "end", "retry", "run_id", "worker")


class PayloadAdapter(Adapter):
    def __init__(self, workdir: str | os.PathLike[str] | None = None) -> None:
        self.workdir = workdir

    def execute(self, command: Command) -> dict[str, Any]:
        if command.action != "run_slice":
            raise ValueError(f"payload adapter: unknown action {command.action!r}")
        reply = dict(command.reply)
        params = command.params
        if params.get("inject_failure"):
            reply.update(status="failed", error="injected failure (workers failure knobs)")
        elif params.get("payload_command"):
            error = self._run(params)
            reply.update(status="failed" if error else "completed", error=error)
        else:
            reply.update(status="completed", error=None)
        return reply

    def _run(self, params: dict[str, Any]) -> str | None:
        values = {name: "" if params.get(name) is None else str(params.get(name))
                  for name in _FIELDS}
        try:
            argv = [part.format(**values) for part in shlex.split(params["payload_command"])]
        except (KeyError, ValueError, IndexError) as problem:
            return f"bad payload_command: {problem}"
        env = {**os.environ, **{f"SWF_{name.upper()}": value for name, value in values.items()}}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env,
                                  cwd=self.workdir, timeout=params.get("timeout"), check=False)
        except (OSError, subprocess.TimeoutExpired) as problem:
            log.warning("payload of slice %s/%s did not run: %s", values["tf_filename"],
                        values["slice_id"], problem)
            return f"payload did not run: {problem}"
        if done.returncode == 0:
            return None
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else "no stderr"
        return f"payload exited with status {done.returncode}: {detail}"[:500]
