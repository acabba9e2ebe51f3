"""Recording the real testbed: whole runs of upstream's workflows, every message as upstream's
agents send it (``replay.upstream``), imported with ``swf import`` and read back through the
projections and queries; the orders a broker may deliver them in; the fixture's origins."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.envelope import Incoming
from eventstore.store import EventStore
from projections import queries
from projections import tables as t
from projections.projector import Projector
from replay import fixture, upstream
from replay.cli import main as replay_main
from replay.scenarios import with_origins
from swf.cli import main

NS = upstream.Testbed().namespace
ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = {
    "stf_datataking": (upstream.stf_datataking_run, "stf_datataking-wenauseic-0101", 102001),
    "prompt_processing": (upstream.prompt_processing_run, "prompt_processing-wenauseic-0102",
                          102002),
    "fast_processing": (upstream.fast_processing_run, "fast_processing-wenauseic-0103",
                        102003),
}


def swf_import(tmp_path: Path, url: str, messages: list[tuple[str, dict[str, str], bytes]],
               *options: str) -> dict[str, int]:
    path = tmp_path / f"import-{len(list(tmp_path.iterdir()))}.jsonl"
    path.write_bytes(upstream.import_lines(messages))
    result = CliRunner().invoke(main, ["import", str(path), "--db", url, "--json", *options],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout_bytes)


def summary(url: str, execution_id: str) -> dict[str, Any]:
    with EventStore(url) as store:
        Projector(store).catch_up()
        found = queries.execution_summary(store, execution_id)
    assert found is not None
    return found


def table(url: str, name: str, **filters: Any) -> list[dict[str, Any]]:
    with EventStore(url) as store:
        Projector(store).catch_up()
        return queries.query(store, name, **filters)


# -- whole runs --------------------------------------------------------------------------------


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
def test_importing_a_whole_upstream_run(db_url: str, tmp_path: Path, workflow: str) -> None:
    make, execution_id, run = WORKFLOWS[workflow]
    wires = [*upstream.control_commands(workflow=workflow), *make()]
    counts = swf_import(tmp_path, db_url, upstream.delivered(wires))
    assert counts == {"lines": len(wires), "blank": 0, "appended": len(wires),
                      "valid": len(wires), "rejected": 0, "duplicates": 0}
    found = summary(db_url, execution_id)
    assert (found["status"], found["phase"], found["runs"]) == ("completed", "completed", [run])
    assert found["workflow"] == workflow and found["namespace"] == NS
    stf = [w for w in wires if w.msg_type == "stf_gen"]
    assert found["stf_count"] == len(stf)
    assert [c["msg_type"] for c in found["commands"]] == ["run_workflow", "status_request"]
    runs = table(db_url, "runs")
    assert [(r["run_number"], r["namespace"], r["execution_id"]) for r in runs] == [
        (run, NS, execution_id)]  # no row in a namespace the run does not belong to
    assert runs[0]["total_stf_files"] == len(stf)
    if workflow != "fast_processing":
        assert found["errors"] == []
        return
    slices = [orjson.loads(w.body) for w in wires if w.msg_type == "slice"]
    results = [orjson.loads(w.body) for w in wires if w.msg_type == "slice_result"]
    failed = [r for r in results if r["content"]["state"] == "failed"]
    samples = [w for w in wires if w.msg_type == "tf_file_registered"]
    assert len(failed) == 1 and failed[0]["content"]["result"]["result"] is None
    assert (found["stf_samples_received"], found["slices_created"], found["slices_completed"],
            found["slices_queued"], found["slices_failed"], found["unmatched_failures"]) == (
        len(samples), len(slices), len(results) - 1, 1, 0, 1)
    assert found["errors"] == [
        f"failed worker result naming no slice (run {run}, worker spar0101.sdcc.bnl.gov, "
        f"{failed[0]['created_at']}Z): {failed[0]['content']['result']['error']}"]
    # every slice joined its TF sample, every sample its STF file
    rows = table(db_url, "slices")
    assert {r["tf_filename"] for r in rows} == {s["tf_filename"] for s in table(db_url,
                                                                                "tf_samples")}
    assert all("_slice_" not in r["tf_filename"] and r["stf_filename"] for r in rows)
    assert table(db_url, "unmatched_results") == []
    task = table(db_url, "workflow_tasks")
    assert [(w["run_number"], w["execution_id"], w["state"], w["request_id"],
             w["target_workers"], w["requested_cores"], w["adjusted_cores"]) for w in task] == [
        (run, execution_id, "closed", "7001", 30, 30, 36)]
    assert [r["msg_type"] for r in table(db_url, "worker_requests")] == [
        "run_imminent_worker", "create_workflow_task", "adjust_worker", "adjusted_worker"]
    agents = table(db_url, "agents")
    assert [(a["agent_type"], a["namespace"]) for a in agents] == [("transformer", NS)]


def test_naive_local_and_utc_senders_show_no_skew(sqlite_url: str, tmp_path: Path) -> None:
    """The runner stamps naive local time, the fast processing agent naive UTC: read in the
    configured sender zone, or corrected by the broker's timestamp, they agree."""
    wires = upstream.fast_processing_run()
    first = wires[0].sent  # run_imminent, sent at the run's start
    expected = first.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def start_of(url: str) -> tuple[str, str]:
        run = table(url, "runs")[0]
        task = table(url, "workflow_tasks")[0]
        return run["created_at"], task["announced_at"]

    plain = upstream.delivered(wires, broker_time=False)
    # Without a zone or a broker clock, the local stamps are hours off the UTC ones.
    skewed = f"sqlite:///{tmp_path / 'skewed.db'}"
    swf_import(tmp_path, skewed, plain)
    created, announced = start_of(skewed)
    assert created != expected and announced == "2026-07-23T14:00:05.200000Z"
    # Configured: the sender zone.
    zoned = f"sqlite:///{tmp_path / 'zoned.db'}"
    swf_import(tmp_path, zoned, plain, "--sender-zone", upstream.Testbed().local_zone)
    assert start_of(zoned) == (expected, "2026-07-23T14:00:05.200000Z")
    # Not configured, but recorded with the broker's timestamp header.
    swf_import(tmp_path, sqlite_url, upstream.delivered(wires))
    assert start_of(sqlite_url) == (expected, "2026-07-23T14:00:05.200000Z")
    with EventStore(sqlite_url) as store:
        times = {e.msg_type: e.data["timestamp"] for e in store.read(msg_types=["end_run"])}
    assert set(times) == {"end_run"}  # the DAQ's and the forwarded copy: one time


def test_a_bad_sender_zone_is_a_clear_error(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text("{}\n")
    result = CliRunner().invoke(main, ["import", str(path), "--db", sqlite_url,
                                       "--sender-zone", "Mars/Olympus"])
    assert result.exit_code == 2 and "unknown time zone 'Mars/Olympus'" in result.output


def test_a_forwarded_copy_is_the_same_fact(db_url: str, tmp_path: Path) -> None:
    wires = upstream.fast_processing_run()
    copy = [w for w in wires if w.origin == "end_run_copy"]
    assert len(copy) == 1
    without = f"sqlite:///{tmp_path / 'without.db'}"
    swf_import(tmp_path, without, upstream.delivered([w for w in wires if w not in copy]))
    swf_import(tmp_path, db_url, upstream.delivered(wires))
    for name in ("runs", "executions"):
        assert table(db_url, name) == table(without, name)
    result = CliRunner().invoke(main, ["query", "messages", "--db", db_url, "--msg-type",
                                       "end_run", "--json"], catch_exceptions=False)
    rows = orjson.loads(result.stdout_bytes)
    assert [(r["destination"], r["sent_at"]) for r in rows] == [
        ("/topic/epictopic", rows[0]["sent_at"]), ("/topic/panda.workers", rows[0]["sent_at"])]
    plain = CliRunner().invoke(main, ["query", "messages", "--db", db_url, "--msg-type",
                                      "end_run"], catch_exceptions=False).output
    assert [line.split()[-1] for line in plain.splitlines()[2:]] == ["ok", "copy"]


def test_a_stopped_upstream_execution_is_terminated(sqlite_url: str, tmp_path: Path) -> None:
    """upstream's runner stops the execution it is running; the run never ends."""
    wires = [w for w in upstream.stf_datataking_run() if w.msg_type != "end_run"]
    stop = upstream.stop_workflow(wires[-1].sent + timedelta(seconds=1))
    swf_import(tmp_path, sqlite_url, upstream.delivered(wires))
    execution_id = WORKFLOWS["stf_datataking"][1]
    assert summary(sqlite_url, execution_id)["status"] == "running"
    swf_import(tmp_path, sqlite_url, upstream.delivered([stop], first_id=1000))
    found = summary(sqlite_url, execution_id)
    assert (found["status"], found["end_time"]) == ("terminated", found["commands"][-1]["time"])
    assert [c["msg_type"] for c in found["commands"]] == ["stop_workflow"]
    # a later execution of the namespace is not stopped by an earlier stop
    later = upstream.stf_datataking_run(run=102009, sequence=109,
                                        start=stop.sent + timedelta(minutes=5))
    swf_import(tmp_path, sqlite_url, upstream.delivered(later, first_id=2000))
    assert summary(sqlite_url, "stf_datataking-wenauseic-0109")["status"] == "completed"


def test_a_stop_naming_the_execution(sqlite_url: str, tmp_path: Path) -> None:
    execution_id = WORKFLOWS["stf_datataking"][1]
    wires = [w for w in upstream.stf_datataking_run() if w.msg_type != "end_run"]
    early = upstream.stop_workflow(wires[0].sent - timedelta(seconds=30), execution_id)
    swf_import(tmp_path, sqlite_url, upstream.delivered([early, *wires]))
    assert summary(sqlite_url, execution_id)["status"] == "terminated"


def test_legacy_daq_simulator_run(sqlite_url: str, tmp_path: Path) -> None:
    wires = upstream.daqsim_run()
    counts = swf_import(tmp_path, sqlite_url, upstream.delivered(wires))
    assert counts["rejected"] == 0
    files = table(sqlite_url, "stf_files")
    sent = [orjson.loads(w.body) for w in wires if w.msg_type == "stf_gen"]
    assert [(f["filename"], f["checksum"], f["size_bytes"]) for f in files] == [
        (s["filename"], f"{int(s['checksum'][3:]):08x}", s["size"]) for s in sent]
    runs = table(sqlite_url, "runs")
    assert [(r["run_number"], r["namespace"], r["phase"]) for r in runs] == [
        (7, None, "completed")]
    with EventStore(sqlite_url) as store:
        stamps = [e.sent_at for e in store.read(msg_types=["run_imminent", "end_run"])]
    assert stamps[0] == upstream.START.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def test_every_line_of_the_upstream_fixture_has_its_origin_listed() -> None:
    rows = fixture.load(ROOT / "fixtures" / "upstream_formats.jsonl").rows
    readme = (ROOT / "fixtures" / "README.md").read_text()
    assert with_origins(readme, rows) == readme  # make_fixtures.py writes it; it is current
    listed: set[int] = set()
    for span in readme.split("<!-- upstream-origins")[1].splitlines():
        if span.startswith("| ") and span[2].isdigit():
            for part in span.split("|")[1].split(","):
                first, _sep, last = part.strip().partition("-")
                listed |= set(range(int(first), int(last or first) + 1))
    assert listed == set(range(1, len(rows) + 1))


# -- the orders a broker delivers --------------------------------------------------------------


def _dump(url: str) -> dict[str, list[Any]]:
    """Every projection row; rows keyed by log position are compared without it."""
    with EventStore(url) as store:
        Projector(store).rebuild()
        out = {}
        with store.engine.connect() as conn:
            for tables in t.PROJECTIONS.values():
                for one in tables:
                    rows = [tuple(row) for row in conn.execute(sa.select(one))]
                    if one.name in ("logs", "workflow_commands"):
                        rows = [row[1:] for row in rows]
                    out[str(one.name)] = sorted(map(repr, rows))
    return out


def _interleaved(wires: list[upstream.Wire], rng: random.Random, redeliver: int
                 ) -> list[tuple[str, dict[str, str], bytes]]:
    """One order a broker may deliver the messages in: each producer's messages to one
    destination stay in order, the streams interleave freely, and some messages come twice
    (a redelivery: same broker message-id)."""
    numbered = upstream.delivered(wires)
    streams: dict[tuple[str, str], list[tuple[str, dict[str, str], bytes]]] = defaultdict(list)
    for wire, message in zip(wires, numbered, strict=True):
        streams[(wire.producer, wire.destination)].append(message)
    queues = [list(stream) for _key, stream in sorted(streams.items())]
    order = []
    while queues:
        queue = queues[rng.randrange(len(queues))]
        order.append(queue.pop(0))
        queues = [q for q in queues if q]
    for _ in range(redeliver):
        order.insert(rng.randrange(len(order) + 1), order[rng.randrange(len(order))])
    return order


SESSION = [*upstream.control_commands(), *upstream.fast_processing_run(),
           upstream.stop_workflow(upstream.START + timedelta(minutes=5)),
           *upstream.prompt_processing_run(start=upstream.START + timedelta(minutes=10))]


@pytest.fixture(scope="module")
def in_sent_order(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('sent') / 'swf.db'}"
    with EventStore(url) as store:
        store.append(Incoming(d, b, h) for d, h, b in upstream.delivered(SESSION))
    return _dump(url)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), redeliver=st.integers(0, 5),
       batch=st.integers(1, len(SESSION)))
def test_any_delivery_order_gives_the_same_projections(
        in_sent_order: dict[str, list[Any]], tmp_path_factory: pytest.TempPathFactory,
        seed: int, redeliver: int, batch: int) -> None:
    order = _interleaved(SESSION, random.Random(seed), redeliver)
    url = f"sqlite:///{tmp_path_factory.mktemp('order') / 'swf.db'}"
    with EventStore(url) as store:
        projector = Projector(store)
        for start in range(0, len(order), batch):  # recorded and caught up batch by batch
            store.append(Incoming(d, b, h) for d, h, b in order[start:start + batch])
            projector.catch_up()
        with store.engine.connect() as conn:
            caught_up = {str(one.name): sorted(map(repr, (
                row[1:] if one.name in ("logs", "workflow_commands") else tuple(row)
                for row in conn.execute(sa.select(one)))))
                for tables in t.PROJECTIONS.values() for one in tables}
    assert _dump(url) == caught_up == in_sent_order


def test_slices_per_sample_follow_upstreams_rule() -> None:
    """The generator's arithmetic is the fast processing agent's (a regression guard)."""
    knobs = upstream.FastProcessing()
    wires = upstream.fast_processing_run(knobs=knobs)
    samples = [orjson.loads(w.body) for w in wires if w.msg_type == "tf_file_registered"]
    slices = [w for w in wires if w.msg_type == "slice"]
    assert len(slices) == sum(math.ceil(s["tf_count"] / knobs.num_tf_per_slice)
                              for s in samples)


def test_an_execution_its_runner_left_is_failed(sqlite_url: str, tmp_path: Path) -> None:
    """upstream's runner runs one workflow at a time: when it announces the next execution,
    an earlier one that never ended (its workflow raised) is over - failed, not running."""
    broken = [w for w in upstream.stf_datataking_run() if w.msg_type != "end_run"]
    later = upstream.stf_datataking_run(run=102009, sequence=109,
                                        start=broken[-1].sent + timedelta(minutes=5))
    first_id = WORKFLOWS["stf_datataking"][1]
    swf_import(tmp_path, sqlite_url, upstream.delivered(broken))
    assert summary(sqlite_url, first_id)["status"] == "running"
    swf_import(tmp_path, sqlite_url, upstream.delivered(later, first_id=1000))
    found = summary(sqlite_url, first_id)
    assert (found["status"], found["end_time"]) == (
        "failed", f"{broken[-1].sent:%Y-%m-%dT%H:%M:%S.%fZ}")  # its last fact
    assert summary(sqlite_url, "stf_datataking-wenauseic-0109")["status"] == "completed"
    # another runner's execution (a colleague in the namespace) does not end it
    other = upstream.Testbed(agent_ids={**upstream.Testbed().agent_ids, "daq_simulator": 900})
    mine = f"sqlite:///{tmp_path / 'two.db'}"
    swf_import(tmp_path, mine, upstream.delivered(broken))
    swf_import(tmp_path, mine, upstream.delivered(upstream.stf_datataking_run(
        run=102010, sequence=110, start=broken[-1].sent, testbed=other), first_id=3000))
    assert summary(mine, first_id)["status"] == "running"
    # the replay of the failed execution agrees with the tables
    result = CliRunner().invoke(replay_main, [first_id, "--db", sqlite_url])
    assert result.exit_code == 0 and result.stdout.splitlines()[-1] == "identical", result.output


def test_the_sender_zone_setting_is_import_s_default(sqlite_url: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """$SWF_SENDER_ZONE (as [store] sender_zone) is what `swf import` reads naive times in when
    --sender-zone is not given: the same setting swf record, swf serve and the agents read."""
    path = tmp_path / "naive.jsonl"
    path.write_bytes(orjson.dumps({"msg_type": "agent_heartbeat", "msg_id": "naive-1",
                                   "agent_type": "t", "status": "OK",
                                   "timestamp": "2026-01-01T00:00:00"}) + b"\n")
    monkeypatch.setenv("SWF_SENDER_ZONE", "America/New_York")
    assert CliRunner().invoke(main, ["import", str(path), "--db", sqlite_url]).exit_code == 0
    result = CliRunner().invoke(main, ["query", "messages", "--db", sqlite_url, "--json"],
                                catch_exceptions=False)
    assert [r["sent_at"][:19] for r in orjson.loads(result.stdout_bytes)] == [
        "2026-01-01T05:00:00"]
    monkeypatch.setenv("SWF_SENDER_ZONE", "Mars/Olympus")
    refused = CliRunner().invoke(main, ["import", str(path), "--db", sqlite_url])
    assert refused.exit_code != 0 and "unknown time zone 'Mars/Olympus'" in refused.output
