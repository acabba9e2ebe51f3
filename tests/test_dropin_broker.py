"""Upstream's full fast processing run over both channels at once: its REST calls answered by
``swf serve``, its messages sent with stomp.py to upstream's destinations on a real ActiveMQ and
recorded by ``swf record`` as deployed (its default destinations). Each fact of the run
reaches the store twice, once per channel; the projections count it once, and the execution
replays clean with its REST facts."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
import stomp

from agents.recorder_probe import NAMESPACE as PROBE_NAMESPACE
from eventstore import rest
from eventstore.schema import events
from replay.upstream import (
    FastProcessing,
    Wire,
)
from replay.upstream_rest import fast_processing_exchange, play

pytest_plugins = ["broker", "console_fixtures"]
pytest.register_assert_rewrite("broker", "console_fixtures", "upstream_client", "test_dropin")
from broker import Cluster, wait_for  # noqa: E402
from test_dropin import TOKEN, facts, v1  # noqa: E402
from upstream_client import UpstreamClient  # noqa: E402

KNOBS = FastProcessing(stf_count=3, tf_files_per_stf=2, num_tf_per_slice=25, failed_slices=1)


def bus_facts(wires: list[Wire]) -> dict[str, Any]:
    """What the run's bus messages say happened."""
    bodies = [(wire, json.loads(wire.body)) for wire in wires]
    completed: set[tuple[str, int]] = set()
    failures = 0
    for wire, body in bodies:
        if wire.msg_type != "slice_result":
            continue
        inner: dict[str, Any] = (body["content"]["result"] or {}).get("result") or {}
        if body["content"]["state"] == "done":
            completed.add((rest.sample_of(inner["tf_filename"]), inner["slice_id"]))
        elif not inner:
            failures += 1
    return {
        "stf": {body["filename"] for wire, body in bodies if wire.msg_type == "stf_gen"},
        "samples": {body["tf_filename"] for wire, body in bodies
                    if wire.msg_type == "tf_file_registered"},
        "slices": {(rest.sample_of(body["content"]["tf_filename"]),
                    body["content"]["slice_id"]) for wire, body in bodies
                   if wire.msg_type == "slice"},
        "completed": completed, "failures": failures}


@pytest.mark.slow
@pytest.mark.broker
def test_an_upstream_run_over_both_channels_counts_each_fact_once_and_replays_clean(
        broker: Any, serve: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'swf.db'}"
    served = serve(url, env={"SWF_API_TOKEN": TOKEN})
    cluster = Cluster(broker, tmp_path / "live", db_url=url)
    cluster.start_recorder()  # swf record as deployed: upstream's destinations by default
    store = cluster.store
    bus = stomp.Connection([("127.0.0.1", broker.port)], auto_content_length=False)
    bus.connect(wait=True)  # as BaseAgent sends: no content-length (base_agent.py:235-241)
    client = UpstreamClient(served.base_url, TOKEN)
    try:
        start = datetime.now(UTC).replace(microsecond=0)
        steps = play(fast_processing_exchange(start=start, knobs=KNOBS), client,
                     lambda wire: bus.send(destination=wire.destination, body=wire.body,
                                           headers=dict(wire.headers)))
        wires = [step for step in steps if isinstance(step, Wire)]

        def recorded() -> int:  # the run's bus messages (not the recorder's own)
            with store.engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(events).where(
                    events.c.destination.not_like(f"{rest.PREFIX}%"),
                    events.c.namespace.is_distinct_from(PROBE_NAMESPACE))).scalar_one()
        wait_for(lambda: recorded() >= len(wires), f"{len(wires)} bus messages recorded")
    finally:
        bus.disconnect()
        cluster.stop_all()
    assert recorded() == len(wires)  # each once
    known, sent = facts(steps), bus_facts(wires)
    for name in ("stf", "samples", "slices", "completed"):  # both channels carry each fact
        assert known[name] == sent[name] and known[name], name
    assert sent["failures"] == KNOBS.failed_slices
    notices = [json.loads(wire.body) for wire in wires if wire.msg_type == "tf_file_registered"]
    assert notices and all(  # FastMon copied the monitor's echo into its message
        notice["tf_file_id"] == rest.tf_file_id(notice["tf_filename"]) for notice in notices)

    with store.engine.connect() as conn:
        counted = sa.select(events.c.msg_type, sa.func.count()).where(
            events.c.reject_reason.is_(None)).group_by(events.c.msg_type)
        kinds: dict[str, int] = dict(conn.execute(counted).all())
        rejected = conn.execute(sa.select(sa.func.count()).select_from(events).where(
            events.c.reject_reason.is_not(None))).scalar_one()
    store.close()
    assert rejected == 0
    assert (kinds["rest_stf_file"], kinds["stf_gen"], kinds["stf_ready"]) == (3, 3, 3)
    assert kinds["rest_tf_file"] == kinds["tf_file_registered"] == len(sent["samples"])
    assert kinds["rest_slice"] == kinds["slice"] == len(sent["slices"])
    assert kinds["rest_slice_update"] == len(sent["completed"])

    requests.get(f"{served.base_url}/api/run-states/",  # catches the projections up
                 headers={"Authorization": f"Token {TOKEN}"}, timeout=10)
    run = int(known["stf"].pop().split(".")[1])
    (row,) = v1(served.base_url, f"/api/v1/runs?run={run}")["rows"]
    assert (row["stf_count"], row["stf_samples_received"], row["slices_created"],
            row["slices_completed"], row["slices_queued"], row["slices_failed"],
            row["unmatched_failures"]) == (
        KNOBS.stf_count, len(sent["samples"]), len(sent["slices"]), len(sent["completed"]),
        len(sent["slices"]) - len(sent["completed"]), 0, KNOBS.failed_slices)
    assert (row["phase"], row["execution_id"]) == ("completed", known["execution"])
    summary = v1(served.base_url, f"/api/v1/executions/{known['execution']}")
    assert (summary["status"], summary["runs"], summary["slices_created"]) == (
        "completed", [run], len(sent["slices"]))
    assert len(v1(served.base_url, f"/api/v1/slices?run={run}&limit=1000")["rows"]) \
        == len(sent["slices"])
    assert {r["filename"] for r in v1(served.base_url, f"/api/v1/stf-files?run={run}")["rows"]
            } == facts(steps)["stf"]

    replayed = subprocess.run([sys.executable, "-c", "from replay.cli import main; main()",
                               known["execution"], "--db", url], capture_output=True,
                              text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    lines = replayed.stdout.splitlines()
    assert lines[-1] == "identical"
    folded = int(lines[0].split(": ")[1].split()[0])  # "ID (store): N events folded; ..."
    assert folded >= sum(kinds[kind] for kind in ("rest_stf_file", "rest_tf_file",
                                                  "rest_slice", "rest_slice_update"))
    drawn = subprocess.run([sys.executable, "-c", "from replay.cli import main; main()",
                            known["execution"], "--db", url, "--mermaid"], capture_output=True,
                           text=True, timeout=120, check=True, stdin=subprocess.DEVNULL).stdout
    assert "participant MON as Monitor (REST)" in drawn and "->>MON: rest_stf_file" in drawn
