"""``swf import`` accounts for every line and never ends in a traceback: thousands of fuzzed
malformed lines with valid messages interleaved."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from fuzz_messages import malformed, valid

from eventstore.store import EventStore
from projections import queries
from projections.projector import Projector

ROOT = Path(__file__).resolve().parent.parent
LINES = 10_000


def swf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", "from swf.cli import run; run()", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_fuzzed_lines_are_all_accounted_for_and_nothing_crashes(tmp_path: Path) -> None:
    rng = random.Random(20260724)
    lines, good, runs = [], [], set()
    for serial in range(LINES):
        if rng.random() < 0.2:
            message = valid(serial)
            good.append(message["msg_id"])
            if message["msg_type"] != "agent_log":  # logs belong to no run
                runs.add(message["run_id"])
            lines.append(orjson.dumps(message))
        else:
            lines.append(malformed(rng, serial))
    lines.insert(LINES // 2, b"   ")  # a blank line, counted as such
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    url = f"sqlite:///{tmp_path / 'swf.db'}"
    first = swf("import", str(path), "--db", url, "--json", cwd=tmp_path)
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr[-2000:]
    counts = orjson.loads(first.stdout)
    print("swf import of", LINES + 1, "fuzzed lines:", counts)
    assert counts["lines"] == LINES + 1 and counts["blank"] == 1
    assert (counts["appended"], counts["duplicates"]) == (LINES, 0)  # every line distinct
    assert counts["valid"] == len(good)
    assert counts["rejected"] == counts["appended"] - len(good) > 0.75 * LINES
    again = swf("import", str(path), "--db", url, "--json", cwd=tmp_path)
    assert orjson.loads(again.stdout)["duplicates"] == LINES  # every message stored once
    with EventStore(url) as store, store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT event_id, reject_reason FROM events")).all()
        assert len(rows) == counts["appended"]
        stored_good = [event_id for event_id, reason in rows if reason is None]
        assert sorted(stored_good) == sorted(good)  # each valid message once, as valid
        assert all(reason for event_id, reason in rows if event_id not in set(good))
        Projector(store).catch_up()
        assert [run["run_number"] for run in queries.runs(store)] == sorted(runs)
        assert queries.execution_summary(store, "fuzz-0001")["status"] == "running"
    for command in (["query", "runs"], ["query", "rejected", "--limit", "5"],
                    ["query", "execution", "fuzz-0001"], ["query", "messages", "--limit", "5"]):
        shown = swf(*command, "--db", url, cwd=tmp_path)
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr[-2000:]
