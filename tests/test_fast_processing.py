"""The fast processing workflow end to end, embedded: DAQ -> data -> fastmon -> fast processing
-> workers, checked from the stored events (and the files on disk); plus the agents' own rules
(tiling, late samples, redelivery, sampling completion) on hand-made events."""

from __future__ import annotations

import random
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.base import derive_id
from agents.config import load_workflow
from agents.fast_processing import MAX_RETRIES, FastProcessingAgent, tile_range
from agents.fastmon import FastMonAgent
from agents.runtime import ExecutionResult, run_workflow
from agents.worker import injected_failure
from eventstore.catalog import examine
from eventstore.envelope import RESULT_QUEUE, SLICE_QUEUE, TOPIC, Event
from eventstore.store import EventStore

SEED = 7


def run(tmp_path: Path, *overrides: str, seed: int = SEED, name: str = "swf.db"
        ) -> tuple[EventStore, ExecutionResult, list[dict[str, Any]]]:
    """One run into the store ``name`` under ``tmp_path``; its data directory is the store's
    default one beside it (swf.db -> swf-data)."""
    store = EventStore(f"sqlite:///{tmp_path / name}")
    config = load_workflow("fast_processing", overrides)
    result = run_workflow(store, config, seed=seed, user="tester", strict=True)
    messages = [event.data for event in store.read(execution_id=result.execution_id)]
    assert all(message is not None for message in messages)  # nothing was rejected
    return store, result, messages


def of(messages: list[dict[str, Any]], msg_type: str) -> list[dict[str, Any]]:
    return [message for message in messages if message["msg_type"] == msg_type]


def final_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in of(messages, "slice_result") if m["status"] != "processing"]


def test_default_run_completes(tmp_path) -> None:
    store, result, messages = run(tmp_path)
    assert result.execution_id == "fast_processing-tester-0001" and result.run_id == 100001
    assert result.errors == 0
    kinds = Counter(message["msg_type"] for message in messages)
    assert kinds["stf_gen"] == kinds["stf_ready"] == 10
    assert kinds["tf_file_registered"] == 10 and kinds["slice"] == 150
    results = final_results(messages)
    assert len(results) == 150 and {r["status"] for r in results} == {"completed"}
    assert len(of(messages, "slice_result")) == 300  # processing + completed per slice
    (done,) = of(messages, "run_processed")
    assert (done["status"], done["slices_completed"], done["slices_failed"]) == \
        ("completed", 150, 0)
    (sampled,) = of(messages, "sampling_complete")
    assert (sampled["stf_count"], sampled["sample_count"]) == (10, 10)
    assert kinds["agent_log"] == 0
    # the schedule: announce, start, ten STFs, end; with the upstream state stamps
    daq = [m for m in messages if m["sender"].startswith("daq_simulator")
           and m["msg_type"] != "agent_heartbeat"]
    assert [m["msg_type"] for m in daq] == ["run_imminent", "start_run"] + ["stf_gen"] * 10 \
        + ["end_run"]
    assert (daq[0]["state"], daq[0]["substate"], daq[0]["dataset"]) == \
        ("beam", "not_ready", "swf.100001.run")
    assert daq[0]["workflow"] == "fast_processing" and daq[0]["workflow_params"]["seed"] == SEED
    assert daq[0]["workflow_params"]["fast_processing"]["slices_per_sample"] == 15
    assert {(m["state"], m["substate"]) for m in daq[1:-1]} == {("run", "physics")}
    assert daq[-1]["total_stf_files"] == 10
    assert [m["sequence"] for m in of(messages, "stf_gen")] == list(range(1, 11))
    # every message is timed from the simulated start, nothing from the wall clock
    assert messages[0]["timestamp"] == "2026-01-01T00:00:00.000000Z"
    stamps = [message["timestamp"] for message in messages]
    assert stamps == sorted(stamps)
    # heartbeats: every agent starts and exits
    beats = Counter((m["sender"], m["operational_state"]) for m in of(messages,
                                                                       "agent_heartbeat"))
    agents = {sender for sender, _ in beats}
    assert len(agents) == 5 and all(beats[(a, "READY")] == beats[(a, "EXITED")] == 1
                                    for a in agents)
    store.close()


def test_stf_files_are_real_and_registered_with_their_adler32(tmp_path) -> None:
    store, _, messages = run(tmp_path, "daq.stf_size_bytes=10000")
    ready = {m["filename"]: m for m in of(messages, "stf_ready")}
    for generated in of(messages, "stf_gen"):
        # named relative to the store's data directory, which sits beside its file
        assert generated["file_url"] == f"100001/{generated['filename']}"
        path = tmp_path / "swf-data" / generated["file_url"]
        content = path.read_bytes()
        assert len(content) == 10000
        registered = ready[generated["filename"]]
        assert registered["size_bytes"] == 10000
        assert registered["checksum"] == f"{zlib.adler32(content):08x}"
    assert len({m["checksum"] for m in ready.values()}) == 10  # distinct content per file
    store.close()


def test_two_physics_periods_pause_and_resume(tmp_path) -> None:
    store, _, messages = run(tmp_path, "fast_processing.physics_period_count=2",
                             "daq.standby_duration=20")
    daq = [m for m in messages if m["sender"].startswith("daq_simulator")
           and m["msg_type"] != "agent_heartbeat"]
    kinds = [m["msg_type"] for m in daq]
    assert kinds == ["run_imminent", "start_run"] + ["stf_gen"] * 10 + ["pause_run",
                                                                       "resume_run"] \
        + ["stf_gen"] * 10 + ["end_run"]
    pause, resume = daq[12], daq[13]
    assert (pause["state"], pause["substate"], resume["state"], resume["substate"]) == \
        ("run", "standby", "run", "physics")
    assert pause["reason"]
    assert resume["timestamp"] > pause["timestamp"] > daq[11]["timestamp"]
    assert [m["sequence"] for m in of(messages, "stf_gen")] == list(range(1, 21))
    assert daq[-1]["total_stf_files"] == 20
    assert len(of(messages, "slice")) == 300
    (done,) = of(messages, "run_processed")
    assert (done["status"], done["slices_completed"]) == ("completed", 300)
    store.close()


def sampled_by_rule(seed: int, filenames: list[str], rate: float) -> list[str]:
    """The sampling rule, restated: the first draw of a generator seeded by (seed, STF)."""
    return [name for name in filenames
            if random.Random(derive_id(seed, name)).random() < rate]


def test_sampling_rate_half_is_seeded_and_reproducible(tmp_path) -> None:
    store, _, messages = run(tmp_path, "fast_processing.stf_sampling_rate=0.5")
    stfs = [m["filename"] for m in of(messages, "stf_gen")]
    expected = sampled_by_rule(SEED, stfs, 0.5)
    assert 0 < len(expected) < 10  # this seed gives a proper subset
    samples = of(messages, "tf_file_registered")
    assert [m["stf_filename"] for m in samples] == expected
    assert len(of(messages, "slice")) == 15 * len(expected)
    (sampled,) = of(messages, "sampling_complete")
    assert (sampled["stf_count"], sampled["sample_count"]) == (10, len(expected))
    (done,) = of(messages, "run_processed")
    assert done["status"] == "completed"
    again = run(tmp_path, "fast_processing.stf_sampling_rate=0.5", name="again.db")[2]
    assert [m["tf_filename"] for m in of(again, "tf_file_registered")] == \
        [m["tf_filename"] for m in samples]
    other_seed = run(tmp_path, "fast_processing.stf_sampling_rate=0.5", seed=SEED + 1,
                     name="other.db")[2]
    assert [m["stf_filename"] for m in of(other_seed, "tf_file_registered")] == \
        sampled_by_rule(SEED + 1, stfs, 0.5)
    store.close()


def test_samples_and_slices_tile_their_ranges(tmp_path) -> None:
    store, _, messages = run(tmp_path, "fast_processing.slices_per_sample=4",
                             "fastmon.tf_files_per_stf=2")
    samples = of(messages, "tf_file_registered")
    assert len(samples) == 20
    assert {m["tf_filename"] for m in samples if m["stf_filename"] == "swf.100001.000001.stf"} \
        == {"swf.100001.000001_tf_001.tf", "swf.100001.000001_tf_002.tf"}
    slices = of(messages, "slice")
    assert len(slices) == 80
    for sample in samples:
        assert sample["tf_count"] == 150 == sample["tf_last"] - sample["tf_first"] + 1
        assert sample["tf_first"] >= 0 and sample["tf_last"] < 1000
        mine = sorted((s for s in slices if s["tf_filename"] == sample["tf_filename"]),
                      key=lambda s: s["slice_id"])
        assert [s["slice_id"] for s in mine] == [0, 1, 2, 3]
        assert mine[0]["start"] == sample["tf_first"] and mine[-1]["end"] == sample["tf_last"]
        assert all(a["end"] + 1 == b["start"] for a, b in zip(mine, mine[1:], strict=False))
        assert all(s["tf_count"] == s["end"] - s["start"] + 1 for s in mine)
        assert {s["stf_filename"] for s in mine} == {sample["stf_filename"]}
    store.close()


def test_every_attempt_failing_fails_for_good_after_three_retries(tmp_path) -> None:
    store, _, messages = run(tmp_path, "workers.fail_attempts=4")
    slices = of(messages, "slice")
    assert len(slices) == 150 * (1 + MAX_RETRIES)
    assert Counter(s["retry"] for s in slices) == {0: 150, 1: 150, 2: 150, 3: 150}
    results = final_results(messages)
    assert len(results) == 600 and {r["status"] for r in results} == {"failed"}
    (done,) = of(messages, "run_processed")
    assert (done["status"], done["slices_completed"], done["slices_failed"]) == \
        ("failed", 0, 150)
    logs = of(messages, "agent_log")
    assert len(logs) == 150 and {log["level"] for log in logs} == {"WARNING"}
    store.close()


def test_retries_recover_within_three(tmp_path) -> None:
    store, _, messages = run(tmp_path, "workers.fail_attempts=3")
    assert len(of(messages, "slice")) == 600
    (done,) = of(messages, "run_processed")
    assert (done["status"], done["slices_completed"], done["slices_failed"]) == \
        ("completed", 150, 0)
    store.close()


def test_failure_fraction_counters_are_exact(tmp_path) -> None:
    store, _, messages = run(tmp_path, "workers.failure_fraction=0.5")
    params = of(messages, "run_imminent")[0]["workflow_params"]
    attempts, permanent = 0, 0
    for sample in of(messages, "tf_file_registered"):
        for slice_id in range(15):
            for retry in range(MAX_RETRIES + 1):
                attempts += 1
                if not injected_failure(params, sample["tf_filename"], slice_id, retry):
                    break
            else:
                permanent += 1
    assert permanent > 0 and attempts > 150  # the seed exercises both paths
    assert len(of(messages, "slice")) == attempts
    results = final_results(messages)
    failed = [r for r in results if r["status"] == "failed"]
    assert len(results) == attempts and len(failed) == attempts - (150 - permanent)
    (done,) = of(messages, "run_processed")
    assert (done["status"], done["slices_completed"], done["slices_failed"]) == \
        ("failed", 150 - permanent, permanent)
    # about half of all attempts fail
    assert 0.35 < len(failed) / attempts < 0.65
    store.close()


def test_a_payload_command_runs_per_slice(tmp_path) -> None:
    store, _, messages = run(tmp_path, "fast_processing.stf_count=1",
                             "fast_processing.slices_per_sample=2",
                             "workers.payload_command=sh -c 'test {slice_id} = 0 || exit 3'")
    results = {(r["slice_id"], r["retry"]): r for r in final_results(messages)}
    assert results[(0, 0)]["status"] == "completed"
    assert [results[(1, retry)]["status"] for retry in range(4)] == ["failed"] * 4
    assert "exited with status 3" in results[(1, 0)]["error"]
    (done,) = of(messages, "run_processed")
    assert (done["status"], done["slices_completed"], done["slices_failed"]) == ("failed", 1, 1)
    store.close()


def test_same_seed_and_config_give_byte_identical_bodies(tmp_path) -> None:
    options = ("fast_processing.stf_sampling_rate=0.7", "workers.failure_fraction=0.2")
    first, _, _ = run(tmp_path, *options, name="a.db")
    second, _, _ = run(tmp_path, *options, name="b.db")
    bodies = [[(e.destination, e.body) for e in store.read()] for store in (first, second)]
    assert bodies[0] == bodies[1] and len(bodies[0]) > 300
    third, _, _ = run(tmp_path, *options, name="c.db", seed=SEED + 1)
    assert [e.body for e in third.read()] != [body for _, body in bodies[0]]
    for store in (first, second, third):
        store.close()


def test_a_second_execution_in_the_same_store_follows_the_first(tmp_path) -> None:
    store, first, _ = run(tmp_path, "fast_processing.stf_count=1")
    store.close()
    store, second, messages = run(tmp_path, "fast_processing.stf_count=1")
    assert second.execution_id == "fast_processing-tester-0002" and second.run_id == 100002
    assert messages[0]["timestamp"] > first.end_time
    assert of(messages, "run_processed")[0]["status"] == "completed"
    store.close()


def projected(store: EventStore, execution_id: str) -> tuple[dict[str, Any], dict[str, list]]:
    """The execution summary and every projection's rows of the execution, caught up."""
    projector = pytest.importorskip("projections.projector")
    queries = pytest.importorskip("projections.queries")
    projector.Projector(store).catch_up()
    summary = queries.execution_summary(store, execution_id)
    tables = {name: queries.query(store, name, execution_id=execution_id)
              for name in ("executions", "runs", "stf_files", "tf_samples", "slices")}
    return summary, tables


def test_projections_show_the_completed_execution(tmp_path) -> None:
    store, result, _ = run(tmp_path)
    summary, tables = projected(store, result.execution_id)
    assert (summary["status"], summary["phase"], summary["runs"]) == \
        ("completed", "completed", [100001])
    assert (summary["stf_count"], summary["stf_samples_received"], summary["slices_created"],
            summary["slices_completed"], summary["slices_failed"], summary["slice_retries"],
            summary["slices_queued"], summary["slices_processing"]) == \
        (10, 10, 150, 150, 0, 0, 0, 0)
    assert len(tables["stf_files"]) == 10 and len(tables["tf_samples"]) == 10
    assert len(tables["slices"]) == 150
    assert {row["status"] for row in tables["slices"]} == {"completed"}
    store.close()


def test_projections_count_retries_and_permanent_failures(tmp_path) -> None:
    store, result, messages = run(tmp_path, "workers.failure_fraction=0.5")
    summary, tables = projected(store, result.execution_id)
    (done,) = of(messages, "run_processed")
    assert summary["status"] == "failed"
    assert (summary["slices_completed"], summary["slices_failed"]) == \
        (done["slices_completed"], done["slices_failed"])
    assert summary["slice_retries"] == len(of(messages, "slice")) - 150
    assert sum(row["retries"] for row in tables["slices"]) == summary["slice_retries"]
    store.close()


def test_same_seed_and_config_give_identical_projections(tmp_path) -> None:
    options = ("fast_processing.physics_period_count=2", "workers.failure_fraction=0.3")
    first, result, _ = run(tmp_path, *options, name="a.db")
    second, _, _ = run(tmp_path, *options, name="b.db")
    assert projected(first, result.execution_id) == projected(second, result.execution_id)
    for store in (first, second):
        store.close()


# -- the agents' rules on hand-made events ----------------------------------------------------

NS = "unit"
_position = iter(range(1, 1_000_000))


def event(msg_type: str, key: object, destination: str = TOPIC, sender: str = "someone",
          **payload: Any) -> Event:
    import orjson

    message = {"msg_type": msg_type, "msg_id": derive_id(msg_type, key), "namespace": NS,
               "execution_id": "e", "run_id": 5, "sender": sender,
               "timestamp": "2026-01-01T00:00:00Z", **payload}
    body = orjson.dumps(message)
    verdict = examine(body, destination)
    assert verdict.reason is None, verdict.reason
    return Event(next(_position), str(verdict.msg_id), "2026-01-01T00:00:00Z", destination, {},
                 body, verdict.msg_type, verdict.namespace, verdict.execution_id,
                 verdict.run_id, verdict.sender, verdict.sent_at, 1, None, verdict.data)


def sample_event(name: str = "s_tf_001.tf") -> Event:
    return event("tf_file_registered", name, tf_filename=name, stf_filename="s.stf",
                 tf_first=100, tf_last=249, tf_count=150)


def test_late_sample_after_end_run_is_sliced_and_completes_the_run() -> None:
    agent = FastProcessingAgent("fp", NS)
    params = {"fast_processing": {"slices_per_sample": 3}}
    assert agent.handle(event("run_imminent", 1, workflow_params=params)) == []
    assert agent.handle(event("end_run", 2, total_stf_files=1)) == []
    assert agent.handle(event("sampling_complete", 3, stf_count=1, sample_count=1)) == []
    outputs = agent.handle(sample_event())
    assert [(o.destination, o.message["slice_id"]) for o in outputs] == \
        [(SLICE_QUEUE, 0), (SLICE_QUEUE, 1), (SLICE_QUEUE, 2)]
    assert agent.handle(sample_event()) == []  # redelivered: nothing twice
    done = []
    for slice_id in range(3):
        result = event("slice_result", ("r", slice_id), RESULT_QUEUE, slice_id=slice_id,
                       tf_filename="s_tf_001.tf", status="completed", retry=0)
        done += agent.handle(result)
        assert agent.handle(result) == []
    assert [o.message["msg_type"] for o in done] == ["run_processed"]
    assert done[0].message["status"] == "completed"


def test_failed_slice_is_requeued_with_the_same_identity() -> None:
    agent = FastProcessingAgent("fp", NS)
    agent.handle(event("run_imminent", 1, workflow_params={
        "fast_processing": {"slices_per_sample": 1}}))
    (first,) = agent.handle(sample_event())
    failure = event("slice_result", "f0", RESULT_QUEUE, slice_id=0, tf_filename="s_tf_001.tf",
                    status="failed", retry=0, error="x")
    (again,) = agent.handle(failure)
    assert agent.handle(failure) == []  # a redelivered failure re-queues nothing
    assert {k: again.message[k] for k in ("slice_id", "tf_filename", "start", "end")} == \
        {k: first.message[k] for k in ("slice_id", "tf_filename", "start", "end")}
    assert (again.message["retry"], again.message["msg_id"] != first.message["msg_id"]) == \
        (1, True)
    stale = event("slice_result", "late", RESULT_QUEUE, slice_id=0, tf_filename="s_tf_001.tf",
                  status="completed", retry=0)
    assert agent.handle(stale) == []  # a result of the previous attempt


def test_fastmon_completes_sampling_when_stfs_arrive_after_end_run() -> None:
    agent = FastMonAgent("fm", NS)
    agent.handle(event("run_imminent", 1, workflow_params={"seed": 1}))
    assert agent.handle(event("end_run", 2, total_stf_files=2)) == []
    ready = [event("stf_ready", i, filename=f"swf.5.00000{i}.stf", checksum="0000abcd",
                   size_bytes=4) for i in (1, 2)]
    first = agent.handle(ready[0])
    assert [o.message["msg_type"] for o in first] == ["tf_file_registered"]
    assert agent.handle(ready[0]) == []
    last = agent.handle(ready[1])
    assert [o.message["msg_type"] for o in last] == ["tf_file_registered", "sampling_complete"]
    assert (last[-1].message["stf_count"], last[-1].message["sample_count"]) == (2, 2)
    unreadable = FastMonAgent("fm2", NS)
    unreadable.handle(event("end_run", 3, total_stf_files=1))
    (complete,) = unreadable.handle(event("stf_ready", 9, filename="swf.5.000009.stf",
                                          error="missing"))
    assert complete.message["sample_count"] == 0


def test_missing_stf_file_is_registered_with_an_error(tmp_path) -> None:
    from agents.data import DataAgent
    from agents.files import FilesAdapter

    agent = DataAgent("data", NS)
    (command,) = agent.handle(event("stf_gen", 1, filename="swf.5.000001.stf", sequence=1,
                                    file_url=(tmp_path / "gone.stf").as_uri()))
    reply = FilesAdapter(tmp_path).execute(command)
    assert (reply["checksum"], reply["size_bytes"]) == (None, None) and "gone.stf" in \
        reply["error"]
    assert agent.handle(event("stf_gen", 1, filename="swf.5.000001.stf", sequence=1)) == []


@given(first=st.integers(-1000, 1000), count=st.integers(1, 500), parts=st.integers(1, 40))
def test_tile_range_tiles_without_gaps_or_overlaps(first: int, count: int, parts: int) -> None:
    last = first + count - 1
    tiles = tile_range(first, last, parts)
    assert len(tiles) == min(parts, count)
    assert tiles[0][0] == first and tiles[-1][1] == last
    assert all(a[1] + 1 == b[0] for a, b in zip(tiles, tiles[1:], strict=False))
    sizes = [end - start + 1 for start, end in tiles]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


# -- the command line -----------------------------------------------------------------------


@pytest.fixture
def cli():
    from click.testing import CliRunner

    from swf.cli import main

    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), env={"SWF_USER": "tester"})


def test_swf_run_prints_the_execution_summary(cli, tmp_path) -> None:
    import orjson

    db = f"sqlite:///{tmp_path / 'swf.db'}"
    done = cli("run", "--db", db, "--data-dir", str(tmp_path / "data"), "--json", "--seed", "3")
    assert done.exit_code == 0, done.output
    summary = orjson.loads(done.stdout)
    assert summary["execution_id"] == "fast_processing-tester-0001"
    assert summary["status"] == "completed"
    failed = cli("run", "fast_processing", "--db", db, "--data-dir", str(tmp_path / "data"),
                 "--set", "workers.fail_attempts=4", "--set", "fast_processing.stf_count=1")
    assert failed.exit_code == 1
    assert "fast_processing-tester-0002" in failed.stdout
    wrong = cli("run", "--db", db, "--set", "fast_processing.stf_cnt=1")
    assert wrong.exit_code == 2 and "did you mean 'fast_processing.stf_count'" in wrong.output


def test_swf_workflows_lists_the_shipped_workflows(cli) -> None:
    import orjson

    done = cli("workflows", "--json")
    assert done.exit_code == 0, done.output
    rows = orjson.loads(done.stdout)
    settings = {(row["workflow"], row["setting"]): row["value"] for row in rows}
    assert settings[("fast_processing", "fast_processing.slices_per_sample")] == 15
    assert "processing" in settings[("prompt_processing", "(agents)")]
