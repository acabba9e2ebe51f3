"""swf-replay --agents: a changed decision is caught at the first diverging input event, and
nothing outside the process is touched (adapters are never constructed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

import agents.daq
import agents.ddm
import agents.fast_processing
import agents.fastmon
import agents.registry
from eventstore.envelope import SLICE_QUEUE
from replay.cli import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DEFAULT = FIXTURES / "fast_processing_default.jsonl"
PROMPT = FIXTURES / "prompt_processing_errors.jsonl"


def redrive(path: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--fixture", str(path), "--agents", *args],
                              catch_exceptions=False)


def report(path: Path) -> dict[str, Any]:
    result = redrive(path, "--json")
    assert result.exit_code == 1, result.output
    return orjson.loads(result.stdout_bytes)["divergence"]


def first(path: Path, msg_type: str) -> dict[str, Any]:
    for line in path.read_bytes().splitlines():
        event = orjson.loads(line)
        if event["msg_type"] == msg_type:
            return event
    raise AssertionError(f"no {msg_type} in {path.name}")


def test_one_slice_fewer_per_sample_diverges_at_the_first_sample(monkeypatch) -> None:
    tile_range = agents.fast_processing.tile_range
    monkeypatch.setattr(agents.fast_processing, "tile_range",
                        lambda first, last, parts: tile_range(first, last, parts - 1))
    sample = first(DEFAULT, "tf_file_registered")
    result = redrive(DEFAULT)
    assert result.exit_code == 1
    out = result.stdout
    assert ("DIVERGENCE: fast_processing-agent-swf (fast_processing) emitted a message that "
            "differs from the recorded one") in out
    assert (f"input event: position {sample['position']} tf_file_registered from "
            f"fastmon-agent-swf at {sample['sent_at']} (event_id {sample['event_id']})") in out
    assert "differing fields (expected -> actual):\n  end: " in out
    divergence = report(DEFAULT)
    assert divergence["kind"] == "differs"
    assert divergence["input"]["event_id"] == sample["event_id"]
    assert set(divergence["fields"]) == {"end", "tf_count"}
    assert divergence["expected"]["message"]["slice_id"] == 0
    assert divergence["actual"]["destination"] == SLICE_QUEUE


def test_a_different_dataset_name_diverges_at_run_imminent(monkeypatch) -> None:
    split_did = agents.ddm.split_did

    def renamed(text: str, scope: str) -> tuple[str, str]:
        found_scope, name = split_did(text, scope)
        return found_scope, name + ".v2"

    monkeypatch.setattr(agents.ddm, "split_did", renamed)
    divergence = report(PROMPT)
    imminent = first(PROMPT, "run_imminent")
    assert divergence["input"]["position"] == imminent["position"]
    assert (divergence["agent"], divergence["command"]) == ("processing-agent-swf",
                                                            "ddm add_dataset")
    assert divergence["fields"] == {"dataset": {"expected": "swf.100001.run",
                                                "actual": "swf.100001.run.v2"}}
    # the adapter's part of the reply came from the log, not from a catalog
    assert divergence["filled_from_log"] == ["error", "is_open", "outcome"]
    text = redrive(PROMPT).stdout
    assert "actual (the reply of command ddm add_dataset, to /topic/epictopic):" in text


def test_a_changed_daq_schedule_diverges_at_its_run_imminent(monkeypatch) -> None:
    monkeypatch.setattr(agents.daq, "stf_filename",
                        lambda run, sequence: f"swf.{run}.{sequence:04d}.stf")
    divergence = report(DEFAULT)
    assert divergence["agent"] == "daq_simulator-agent-swf"
    assert divergence["input"]["msg_type"] == "run_imminent"
    assert divergence["command"] == "files write_stf"
    assert set(divergence["fields"]) == {"file_url", "filename"}


def test_a_message_no_longer_emitted_is_a_divergence(monkeypatch) -> None:
    monkeypatch.setattr(agents.fastmon.FastMonAgent, "_maybe_complete",
                        lambda self, event, run: [])
    divergence = report(DEFAULT)
    assert divergence["kind"] == "not_emitted" and divergence["actual"] is None
    assert divergence["expected"]["msg_type"] == "sampling_complete"
    assert divergence["agent"] == "fastmon-agent-swf"
    assert divergence["input"]["msg_type"] in ("end_run", "stf_ready")


def test_an_extra_message_is_a_divergence(monkeypatch) -> None:
    tile_range = agents.fast_processing.tile_range
    monkeypatch.setattr(agents.fast_processing, "tile_range",
                        lambda first, last, parts: [*tile_range(first, last, parts),
                                                    (last, last)])
    divergence = report(DEFAULT)
    assert divergence["kind"] == "not_recorded" and divergence["expected"] is None
    assert divergence["actual"]["message"]["slice_id"] == 15
    assert divergence["input"]["msg_type"] == "tf_file_registered"
    text = redrive(DEFAULT).stdout
    assert "expected: nothing recorded with this msg_id" in text


def test_replays_never_construct_an_adapter(monkeypatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("an adapter was constructed during a replay")

    monkeypatch.setattr(agents.registry, "create_adapter", refuse)
    for name in list(agents.registry.ADAPTERS):
        monkeypatch.setitem(agents.registry.ADAPTERS, name, refuse)
    from agents.batch.local import LocalExecutor
    from agents.ddm.local import LocalCatalog
    from agents.files import FilesAdapter
    from agents.payload import PayloadAdapter

    for adapter in (LocalExecutor, LocalCatalog, FilesAdapter, PayloadAdapter):
        monkeypatch.setattr(adapter, "__init__", refuse)
        monkeypatch.setattr(adapter, "execute", refuse)
    for path in sorted(FIXTURES.glob("*.jsonl")):
        for args in (["--agents"], [], ["--mermaid"], ["--step"]):
            result = CliRunner().invoke(main, ["--fixture", str(path), *args],
                                        catch_exceptions=False)
            assert result.exit_code == 0, (path.name, args, result.output)


@pytest.mark.parametrize("name", ["upstream_formats", "prompt_processing_errors"])
def test_only_known_agent_types_are_re_driven(name: str) -> None:
    result = redrive(FIXTURES / f"{name}.jsonl", "--json")
    assert result.exit_code == 0
    body = orjson.loads(result.stdout_bytes)
    if name == "upstream_formats":  # upstream's agents only: every sender is an input
        assert body["agents"] == {}
        assert body["unknown_agent_types"] == {  # its bus heartbeat names no agent type
            "daq_simulator-agent-wenauseic-484": "Unknown"}
        assert body["inputs"]["data-agent-wenauseic-481"] == 2
        assert body["inputs"]["torre2.ResultPublisher.spar0101.21636369"] == 17
        assert body["compared"] == 0 and body["divergence"] is None
        return
    assert set(body["agents"]) == {"daq_simulator-agent-swf", "data-agent-swf",
                                   "processing-agent-swf"}
    assert body["inputs"] == {"data-injector": 4}
    assert body["compared"] > 0 and body["divergence"] is None


def test_a_message_stored_before_one_of_its_causes_is_awaited_not_a_divergence() -> None:
    """A live recorder takes the topic and each queue copy on subscriptions of their own, so
    after a restart run_processed may be stored before the last slice_result it waited for:
    the re-drive awaits it instead of calling it a divergence."""
    from dataclasses import replace

    from replay import fixture as fixtures
    from replay.redrive import redrive as run_redrive

    loaded = fixtures.load(DEFAULT)
    store = fixtures.scratch_store(loaded.rows)
    try:
        events = list(store.execution_events(loaded.execution_id))
    finally:
        store.close()
    done = next(i for i, e in enumerate(events) if e.msg_type == "run_processed")
    last = max(i for i, e in enumerate(events) if e.msg_type == "slice_result" and i < done)
    assert events[last].data["status"] == "completed"
    moved = events[:last] + [replace(events[done], position=events[last].position),
                             replace(events[last], position=events[last].position + 1)] \
        + events[last + 1:done] + events[done + 1:]
    assert [e.msg_type for e in moved[last:last + 2]] == ["run_processed", "slice_result"]
    report = run_redrive(loaded.execution_id, moved)
    assert report.divergence is None and report.compared > 400
    # Without that result the log is short of what the worker must have sent: a divergence.
    report = run_redrive(loaded.execution_id, moved[:last + 1] + moved[last + 2:])
    assert report.divergence is not None and report.divergence.kind == "not_recorded"
    assert report.divergence.actual["msg_type"] == "slice_result"
