"""Run a command in a child process and measure it: wall and CPU seconds, its own peak RSS.

A child's ``ru_maxrss`` is not its own when it is started from a big process: at exec, Linux
keeps the high-water mark of the memory the child replaced - its parent's, copied at fork or
borrowed by vfork - so a command started from a benchmark that holds a million events reported
the benchmark's peak (831-904 MB for a replay whose own peak is 592 MB). The command is therefore
started by a small launcher (this file run as a script), which measures it and writes the figures
to a file.

    measured = child.run([sys.executable, "-m", "replay", ...], cwd=ROOT, env=env)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    wall: float  # seconds, from start to exit (the launcher's own start excluded)
    cpu: float  # user + system seconds
    rss_mb: int  # the command's peak resident set
    code: int  # exit code
    stdout: str
    stderr: str


def run(argv: list[str], *, cwd: Path | str | None = None,
        env: dict[str, str] | None = None) -> Measured:
    """Run ``argv`` through the launcher; its output is captured."""
    with tempfile.NamedTemporaryFile(suffix=".json") as figures:
        done = subprocess.run([sys.executable, __file__, figures.name, *argv], cwd=cwd, env=env,
                              capture_output=True, check=False)
        measured = json.loads(Path(figures.name).read_text() or "null")
    if measured is None:
        raise RuntimeError(f"the launcher failed: {done.stderr.decode(errors='replace')}")
    return Measured(measured["wall"], measured["cpu"], measured["rss_kb"] // 1024,
                    measured["code"], done.stdout.decode(errors="replace"),
                    done.stderr.decode(errors="replace"))


def _launch(figures: str, argv: list[str]) -> int:
    began = time.perf_counter()
    child = subprocess.Popen(argv)
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    code = os.waitstatus_to_exitcode(status)
    Path(figures).write_text(json.dumps({
        "wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_kb": usage.ru_maxrss,
        "code": code}))
    return code


if __name__ == "__main__":
    sys.exit(_launch(sys.argv[1], sys.argv[2:]))
