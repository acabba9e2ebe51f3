"""swf-replay: fixtures replay clean (twice, byte for byte), drift is reported row by row,
--until/--step/--mermaid/--export/--update, executions sharing a store, PostgreSQL."""

from __future__ import annotations

import functools
import shutil
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from eventstore.envelope import Incoming
from eventstore.store import EventStore
from projections.derive import snapshot
from projections.fold import Fold
from projections.projector import Projector
from replay import fixture
from replay.cli import main
from swf.cli import main as swf_main

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
NAMES = ("fast_processing_default", "pause_resume", "slice_failures",
         "prompt_processing_errors", "upstream_formats")
DEFAULT = FIXTURES / "fast_processing_default.jsonl"
PAUSE = FIXTURES / "pause_resume.jsonl"


def replay(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def as_json(result: Result) -> Any:
    return orjson.loads(result.stdout_bytes)


def loaded(url: str, path: Path = DEFAULT) -> EventStore:
    """A store holding the fixture's events, its projections caught up."""
    store = fixture.into_store(url, fixture.load(path))
    Projector(store).catch_up()
    return store


def projections_catch_up(url: str) -> None:
    """`swf projections catch-up`: swf-replay itself never writes to the store."""
    result = CliRunner().invoke(swf_main, ["projections", "catch-up", "--db", url],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output


def events_of(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


# -- every fixture ---------------------------------------------------------------------------


def test_the_fixtures_are_all_there() -> None:
    assert sorted(path.name for path in FIXTURES.glob("*.jsonl")) == sorted(
        f"{name}.jsonl" for name in NAMES)
    for name in NAMES:
        assert (FIXTURES / f"{name}.expected.json").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_fixture_replays_clean_twice_byte_for_byte(name: str) -> None:
    path = FIXTURES / f"{name}.jsonl"
    for args, verdict in (((), "identical"), (("--agents",), "no divergence")):
        first, second = replay("--fixture", path, *args), replay("--fixture", path, *args)
        assert first.exit_code == 0, first.output
        assert first.stdout_bytes == second.stdout_bytes
        assert first.stdout.splitlines()[-1] == verdict
        report = as_json(replay("--fixture", path, "--json", *args))
        assert report["identical"] if not args else report["divergence"] is None
    tables = as_json(replay("--fixture", path, "--json"))["tables"]
    expected = orjson.loads(path.with_name(f"{name}.expected.json").read_bytes())
    assert {table: value["stored"] for table, value in tables.items()} == {
        table: len(rows) for table, rows in expected["projections"].items()}


@pytest.mark.parametrize("args", [(), ("--agents",), ("--mermaid",), ("--until", "40"),
                                  ("--until", "2026-01-01T00:00:20Z"), ("--step", "--until", "25")])
def test_every_mode_prints_the_same_bytes_twice(args: tuple[str, ...]) -> None:
    for extra in ((), ("--json",)):
        first = replay("--fixture", PAUSE, *args, *extra)
        assert first.exit_code == 0, first.output
        assert first.stdout_bytes == replay("--fixture", PAUSE, *args, *extra).stdout_bytes
        assert b"/tmp" not in first.stdout_bytes and b"pytest" not in first.stdout_bytes


def test_fixture_files_are_deterministic_and_have_no_temp_paths() -> None:
    for name in NAMES:
        text = (FIXTURES / f"{name}.jsonl").read_text()
        assert "/tmp" not in text and "pytest" not in text
        for line in text.splitlines():
            assert line == orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS).decode()


def test_the_fixtures_hold_what_they_are_named_for() -> None:
    def bodies(name: str) -> list[dict[str, Any]]:
        return [orjson.loads(e["body"]) for e in events_of(FIXTURES / f"{name}.jsonl")]

    upstream = events_of(FIXTURES / "upstream_formats.jsonl")
    assert all(e["reject_reason"] is None for e in upstream)  # nothing upstream sends is bad
    sent = [(e["destination"], e["headers"], orjson.loads(e["body"])) for e in upstream]
    assert not [b for _d, _h, b in sent if "msg_id" in b]  # upstream never sends one
    kinds = {b.get("msg_type") for _d, _h, b in sent}
    assert {"run_imminent_worker", "create_workflow_task", "created_workflow_task",
            "adjust_worker", "adjusted_worker", "close_workflow_task", "closed_workflow_task",
            "stop_transformer", "run_workflow", "status_request", "stop_workflow",
            "heartbeat", None} <= kinds
    assert [b for _d, _h, b in sent if "msg_type" not in b and {"agent_name", "status"} <= set(b)]
    runner = [b for d, _h, b in sent if d == "/topic/epictopic" and "run_id" in b]
    assert runner and all(isinstance(b["run_id"], str) for b in runner)
    daqsim = [b for d, _h, b in sent if d == "epictopic"]
    assert daqsim and all(isinstance(b["run_id"], int) and "namespace" not in b for b in daqsim)
    assert [b for b in daqsim if b["msg_type"] == "stf_gen"
            and b["checksum"].removeprefix("ad:").isdigit() and "size" in b]
    assert [b for b in daqsim if isinstance(b.get("ts"), str) and len(b["ts"]) == 14]
    slices = [(h, b) for _d, h, b in sent if b.get("msg_type") == "slice"]
    assert slices and all("_slice_" in b["content"]["tf_filename"]
                          and b["content"]["state"] == "queued" for _h, b in slices)
    results = [(h, b) for _d, h, b in sent if b.get("msg_type") == "slice_result"]
    assert {b["content"]["state"] for _h, b in results} == {"done", "failed"}
    assert all("namespace" not in b and h["namespace"] for h, b in results)
    assert [b for _h, b in results
            if b["run_id"] is not None and b["content"]["result"]["result"] is None]
    assert [b for d, _h, b in sent if d == "/topic/panda.workers"
            and b.get("msg_type") == "end_run" and b["content"]["msg_type"] == "end_run"]
    assert [b for _d, _h, b in sent if b.get("msg_type") == "stf_ready" and "filename" not in b]
    prompt = bodies("prompt_processing_errors")
    outcomes = sorted((b["outcome"], b.get("error") or b.get("reason") or "")
                      for b in prompt if b["msg_type"] == "file_attached")
    assert [o for o, _ in outcomes] == ["duplicate", "error", "error", "ok", "ok", "ok", "ok"]
    assert "empty checksum" in outcomes[1][1] + outcomes[2][1]
    assert "null size" in outcomes[1][1] + outcomes[2][1]
    assert [b for b in prompt if b["msg_type"] == "file_attached"
            and b["size_bytes"] == 1 << 30 and b["outcome"] == "ok"]
    failures = bodies("slice_failures")
    assert {b["retry"] for b in failures if b["msg_type"] == "slice"} == {0, 1, 2, 3}
    assert [b for b in failures if b["msg_type"] == "run_processed"][0]["status"] == "failed"
    pauses = [b["msg_type"] for b in bodies("pause_resume")
              if b["msg_type"] in ("pause_run", "resume_run")]
    assert pauses == ["pause_run", "resume_run"]


def test_a_fixture_loads_into_a_store_with_the_same_event_ids(sqlite_url) -> None:
    with loaded(sqlite_url, PAUSE) as store:
        stored = [(event.position, event.event_id, event.recorded_at) for event in store.read()]
    assert stored == [(e["position"], e["event_id"], e["recorded_at"]) for e in events_of(PAUSE)]


def test_a_fixture_whose_event_id_does_not_match_its_event_is_refused(tmp_path) -> None:
    lines = PAUSE.read_bytes().splitlines()
    event = orjson.loads(lines[5])
    event["event_id"] = "made-up"
    lines[5] = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    shutil.copy(PAUSE.with_name("pause_resume.expected.json"), tmp_path / "bad.expected.json")
    result = replay("--fixture", tmp_path / "bad.jsonl")
    assert result.exit_code == 2
    assert "bad.jsonl line 6: event_id 'made-up' does not match" in result.output


# -- drift -----------------------------------------------------------------------------------


def test_a_table_edited_behind_the_store_is_reported_as_drift(sqlite_url) -> None:
    tf = "swf.100001.000002_tf_001.tf"
    with loaded(sqlite_url) as store, store.engine.begin() as conn:
        execution = conn.exec_driver_sql("SELECT execution_id FROM executions").scalar_one()
        conn.exec_driver_sql("UPDATE tf_slices SET status = 'failed', worker = NULL "
                             "WHERE tf_filename = ? AND slice_id = 3", (tf,))
        conn.exec_driver_sql("DELETE FROM tf_slices WHERE tf_filename = ? AND slice_id = 4",
                             (tf,))
        conn.exec_driver_sql("UPDATE run_state SET phase = 'physics'")
    text = replay(execution, "--db", sqlite_url)
    assert text.exit_code == 1
    out = text.stdout
    assert "\ntf_slices                 150     149  1 missing, 1 changed\n" in out
    assert "\nrun_state                   1       1  1 changed\n" in out
    assert (f'  ~ run_number=100001 namespace="torre2" tf_filename="{tf}" slice_id=3\n'
            f'      status: "failed" -> "completed"\n'
            f'      worker: null -> "worker-14"\n') in out
    assert '      phase: "physics" -> "completed"' in out
    assert '  - missing from the table: {"created_at"' in out and '"slice_id":4' in out
    assert out.splitlines()[-1] == "DRIFT in run_state, tf_slices"
    report = as_json(replay(execution, "--db", sqlite_url, "--json"))
    assert not report["identical"] and report["tables"]["stf_files"]["identical"]
    slices = report["tables"]["tf_slices"]
    assert slices["changed"] == [{
        "key": {"run_number": 100001, "namespace": "torre2", "tf_filename": tf, "slice_id": 3},
        "columns": {"status": {"stored": "failed", "rebuilt": "completed"},
                    "worker": {"stored": None, "rebuilt": "worker-14"}}}]
    assert [row["slice_id"] for row in slices["missing"]] == [4]
    assert slices["missing"][0]["final"] is False and slices["extra"] == []


def test_an_extra_stored_row_is_drift_too(sqlite_url) -> None:
    with loaded(sqlite_url, PAUSE) as store, store.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO stf_files (run_number, namespace, filename, status) "
            "VALUES (100001, 'torre2', 'swf.100001.000099.stf', 'registered')")
    result = replay("fast_processing-swf-0001", "--db", sqlite_url)
    assert result.exit_code == 1
    assert ('  + extra in the table: {"checksum":null,"created_at":null,"file_url":null,'
            '"filename":"swf.100001.000099.stf"') in result.stdout


def test_identical_tables_are_judged_in_sqlite_and_values_written_alike_still_differ(
        sqlite_url, monkeypatch) -> None:
    """Identical stored rows are not read into Python (SQLite writes them as JSON); a stored
    value that Python tells apart but JSON might not (a boolean 2, a float in an integer
    column) is still drift."""
    from replay import rebuild

    read: list[str] = []
    real = rebuild.stored_table

    def counted(conn: Any, scope: Any, name: str) -> list[Any]:
        read.append(name)
        return real(conn, scope, name)

    monkeypatch.setattr(rebuild, "stored_table", counted)
    writers: set[str] = set()
    json_of = rebuild.stored_json

    def written(conn: Any, scope: Any, name: str) -> Any:
        writers.add(threading.current_thread().name)
        return json_of(conn, scope, name)

    monkeypatch.setattr(rebuild, "stored_json", written)
    execution = "fast_processing-swf-0001"
    failures = FIXTURES / "slice_failures.jsonl"
    with loaded(sqlite_url, failures) as store:
        clean = replay(execution, "--db", sqlite_url)
        assert clean.exit_code == 0 and clean.stdout_bytes == replay(
            "--fixture", failures).stdout_bytes.replace(
            b"(fixture slice_failures.jsonl)", b"(store)")
        assert read == ["run_state", "workflow_tasks", "worker_requests"]  # same_as_stored
        assert writers == {"swf-stored-json"}  # while the rows were rendered
        for edit, undo in (("final = 2 WHERE final = 1", "final = 1 WHERE final = 2"),
                           ('"end" = "end" + 0.5 WHERE slice_id = 0',
                            '"end" = "end" - 0.5 WHERE slice_id = 0')):
            with store.engine.begin() as conn:
                conn.exec_driver_sql(f"UPDATE tf_slices SET {edit}")
            read.clear()
            report = as_json(replay(execution, "--db", sqlite_url, "--json"))
            assert "tf_slices" in read and not report["identical"], edit
            changed = [change["columns"] for change in report["tables"]["tf_slices"]["changed"]]
            assert changed and all(  # (2 != True, though both show as true)
                list(columns) == ([] if "final" in edit else ["end"]) for columns in changed)
            with store.engine.begin() as conn:
                conn.exec_driver_sql(f"UPDATE tf_slices SET {undo}")


def test_stored_rows_are_judged_the_same_in_any_order_of_the_rebuilt(sqlite_url) -> None:
    from replay import rebuild
    from replay.source import Limit, Scope

    with loaded(sqlite_url) as store, store.snapshot() as view:
        scope = Scope("fast_processing-swf-0001")
        fold, _count = rebuild.fold_execution(view, scope, Limit(position=view.head()))
        rows = rebuild.rebuilt_rows(fold, scope)["tf_slices"]
        assert len(rows) > 1 and rebuild.same_as_stored(view.connection, scope, "tf_slices",
                                                        rows)
        assert rebuild.same_as_stored(view.connection, scope, "tf_slices", rows[::-1])
        changed = [*rows[:-1], (*rows[-1][:-1], not rows[-1][-1])]
        assert not rebuild.same_as_stored(view.connection, scope, "tf_slices", changed)


@pytest.mark.parametrize("piece", [1, 2, 3, 20_000])
def test_stored_rows_written_in_pieces_are_judged_as_a_whole(sqlite_url, monkeypatch,
                                                             piece: int) -> None:
    from replay import rebuild
    from replay.source import Limit, Scope

    monkeypatch.setattr(rebuild, "JSON_PIECE_ROWS", piece)
    with loaded(sqlite_url) as store, store.snapshot() as view:
        scope = Scope("fast_processing-swf-0001")
        fold, _count = rebuild.fold_execution(view, scope, Limit(position=view.head()))
        rows = rebuild.rebuilt_rows(fold, scope)["tf_slices"]
        written = rebuild.stored_json(view.connection, scope, "tf_slices")
        assert written is not None
        count, pieces = written
        assert count == len(rows) > 3 and sum(n for n, _piece in pieces) == count
        assert max(n for n, _piece in pieces) == min(piece, count)
        same = functools.partial(rebuild.same_as_stored, view.connection, scope, "tf_slices")
        assert same(rows) and same(rows[::-1])
        for at in (0, len(rows) // 2, len(rows) - 1):  # a change in any piece is drift
            changed = [*rows[:at], (*rows[at][:-1], not rows[at][-1]), *rows[at + 1:]]
            assert not same(changed), at
        assert not same([*rows[:-1], rows[0]])  # a row twice, one missing


def test_lagging_tables_are_not_drift(sqlite_url) -> None:
    """The tables are compared at their checkpoint, and the lag is reported; `swf projections
    catch-up` brings them up."""
    with loaded(sqlite_url, PAUSE) as store:
        late = {"msg_type": "agent_heartbeat", "msg_id": "late-beat", "namespace": "torre2",
                "execution_id": "fast_processing-swf-0001", "run_id": 100001,
                "sender": "fastmon-agent-swf", "timestamp": "2026-01-01T00:09:00.000000Z",
                "agent_type": "fastmon", "status": "OK", "operational_state": "EXITED"}
        store.append([Incoming.of(late)])
        head = store.head()
    stale = replay("fast_processing-swf-0001", "--db", sqlite_url)
    assert stale.exit_code == 0 and stale.stdout.splitlines()[-1] == "identical"
    assert f"at position {head - 1}" in stale.stdout.splitlines()[0]
    assert stale.stdout.splitlines()[1] == (
        "the stored projections lag the log by 1 event (compared as of their checkpoint): "
        "run `swf projections catch-up` to bring them up to date")
    report = as_json(replay("fast_processing-swf-0001", "--db", sqlite_url, "--json"))
    assert report["identical"] and report["lag"] == 1
    assert "swf projections catch-up" in report["notice"]
    projections_catch_up(sqlite_url)
    fresh = replay("fast_processing-swf-0001", "--db", sqlite_url)
    assert fresh.exit_code == 0 and f"at position {head}" in fresh.stdout.splitlines()[0]
    assert "lag" not in fresh.stdout
    report = as_json(replay("fast_processing-swf-0001", "--db", sqlite_url, "--json"))
    assert report["lag"] == 0 and report["notice"] is None


def test_replay_opens_the_store_read_only(sqlite_url, tmp_path) -> None:
    """No migration, no write: the database file is byte-identical afterwards, even while the
    tables lag the log and a writer keeps WAL frames uncheckpointed."""
    path = Path(str(sa.make_url(sqlite_url).database))
    wal = path.with_name(path.name + "-wal")
    with loaded(sqlite_url, PAUSE) as store:  # open: its connection keeps the WAL as it is
        store.append([Incoming.of({"msg_type": "agent_heartbeat", "msg_id": "late-beat",
                                   "namespace": "torre2", "sender": "fastmon-agent-swf",
                                   "timestamp": "2026-01-01T00:09:00.000000Z",
                                   "agent_type": "fastmon", "status": "OK"})])
        database, log = path.read_bytes(), wal.read_bytes()
        assert log  # frames not yet in the database file: a checkpoint would change it
        for args in ((), ("--json",), ("--agents",), ("--step",), ("--until", "50"),
                     ("--mermaid",), ("--export", tmp_path / "out" / "copy.jsonl")):
            result = replay("fast_processing-swf-0001", "--db", sqlite_url, *args)
            assert result.exit_code == 0, result.output
            assert (path.read_bytes(), wal.read_bytes()) == (database, log), args
        assert "lag the log by 1 event" in replay("fast_processing-swf-0001", "--db",
                                                  sqlite_url).stdout
    store.close()  # the last connection: now the WAL is checkpointed into the file
    database = path.read_bytes()
    assert not wal.exists() or not wal.read_bytes()
    assert replay("fast_processing-swf-0001", "--db", sqlite_url).exit_code == 0
    assert path.read_bytes() == database


def test_a_store_without_projection_tables_is_an_error_not_a_migration(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'bare.db'}"
    with EventStore(url) as store:
        store.restore(fixture.load(PAUSE).rows)
    before = (tmp_path / "bare.db").read_bytes()
    result = replay("fast_processing-swf-0001", "--db", url)
    assert result.exit_code == 2
    assert "no projection tables in" in result.output and "swf db upgrade" in result.output
    assert (tmp_path / "bare.db").read_bytes() == before
    assert replay("fast_processing-swf-0001", "--db", url, "--agents").exit_code == 0
    missing = replay("fast_processing-swf-0001", "--db", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.exit_code == 2 and "no database file" in missing.output
    assert not (tmp_path / "none.db").exists()


def test_unknown_execution_is_an_error(sqlite_url) -> None:
    with loaded(sqlite_url, PAUSE):
        pass
    result = replay("no-such-execution", "--db", sqlite_url)
    assert result.exit_code == 2
    assert "no events of execution no-such-execution" in result.output


# -- --until, --step, --mermaid --------------------------------------------------------------


def _position_of(path: Path, msg_type: str, nth: int) -> dict[str, Any]:
    return [e for e in events_of(path) if e["msg_type"] == msg_type][nth - 1]


def test_until_a_mid_run_position_shows_the_counters_of_that_moment(sqlite_url) -> None:
    done = [e for e in events_of(DEFAULT)
            if e["msg_type"] == "slice_result" and '"status":"completed"' in e["body"]]
    moment = done[39]  # the 40th slice done: others queued and running
    until = moment["position"]
    state = as_json(replay("--fixture", DEFAULT, "--until", until, "--json"))
    with loaded(sqlite_url) as store:  # independently: the store's events, folded to there
        fold = Fold()
        for event in store.read(until=until):
            fold.apply(event)
    expected = snapshot(fold, changed_only=False)
    assert state["runs"] == expected["run_state"]
    run = state["runs"][0]
    assert (run["phase"], run["stf_count"], run["slices_created"]) == ("completed", 10, 150)
    assert run["slices_completed"] == 40 and 0 < run["slices_processing"] <= 30
    assert run["slices_queued"] + run["slices_processing"] == 110
    slices = {}
    for row in expected["tf_slices"]:
        slices[row["status"]] = slices.get(row["status"], 0) + 1
    assert state["tf_slices"] == {"100001": dict(sorted(slices.items()))}
    assert state["last_event"]["position"] == until
    text = replay("--fixture", DEFAULT, "--until", until)
    assert (f"  stf_count 10  stf_samples_received 10  slices_created 150  queued "
            f"{run['slices_queued']}  processing {run['slices_processing']}  completed 40  "
            f"failed 0  retries 0") in text.stdout
    # by time: the events up to the 6th STF's timestamp
    stf = _position_of(DEFAULT, "stf_gen", 6)
    by_time = as_json(replay("--fixture", DEFAULT, "--until", stf["sent_at"], "--json"))
    assert by_time["runs"][0]["stf_count"] == 6 and by_time["runs"][0]["phase"] == "physics"
    assert by_time["until"] == {"position": None, "time": stf["sent_at"]}


def test_until_rejects_what_is_neither_a_position_nor_a_time() -> None:
    result = replay("--fixture", PAUSE, "--until", "yesterday")
    assert result.exit_code == 2 and "neither a log position nor an ISO-8601 time" in (
        result.output)


def test_step_shows_each_event_with_the_rows_it_changed() -> None:
    gen = _position_of(PAUSE, "stf_gen", 1)["position"]
    first_slice = _position_of(PAUSE, "slice", 1)["position"]
    result = replay("--fixture", PAUSE, "--step", "--until", first_slice)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("#1 2026-01-01T00:00:00.000000Z agent_heartbeat from ")
    at = lines.index(f"#{gen} 2026-01-01T00:00:04.000000Z stf_gen from daq_simulator-agent-swf")
    assert lines[at + 2].startswith(
        '  ~ run_state[100001,"torre2"]: state_at "2026-01-01T00:00:01.000000Z" -> ')
    assert lines[at + 3].startswith(
        '  + stf_files[100001,"torre2","swf.100001.000001.stf"]: sequence=1, ')
    steps = as_json(replay("--fixture", PAUSE, "--step", "--until", first_slice, "--json"))
    last = steps["steps"][-1]
    assert last["position"] == first_slice and last["msg_type"] == "slice"
    new = last["changes"]["tf_slices"][0]
    assert new["new_row"] and new["columns"]["status"] == {"old": None, "new": "queued"}
    assert last["changes"]["run_state"][0]["columns"]["slices_queued"] == {"old": 0, "new": 1}
    assert len(steps["steps"]) == first_slice


def test_mermaid_draws_participants_and_collapses_repeats() -> None:
    first, second = replay("--fixture", DEFAULT, "--mermaid"), replay("--fixture", DEFAULT,
                                                                        "--mermaid")
    assert first.exit_code == 0 and first.stdout_bytes == second.stdout_bytes
    lines = first.stdout.splitlines()
    assert lines[0] == "sequenceDiagram"
    assert "    participant DS as DAQ Simulator (daq_simulator-agent-swf)" in lines
    assert "    participant W as PanDA Workers (worker-agent-swf)" in lines
    assert "    DS->>DA: run_imminent" in lines
    assert "        FP->>W: slice x15" in lines  # 15 slices of one sample: one arrow
    assert any(line.startswith("    loop ") for line in lines)
    assert lines[-1] == "    %% not drawn: 25 agent_heartbeat"
    assert len(lines) < 80  # 505 events
    upstream = replay("--fixture", FIXTURES / "upstream_formats.jsonl", "--mermaid").stdout
    assert "participant X1 as daq_simulator-agent-wenauseic-484" in upstream
    # upstream's agents are none of ours: drawn as senders, each message once
    assert "participant X6 as torre2.ResultPublisher.spar0101.21636369" in upstream
    assert "Note over X2: slice x4 (no receiver)" in upstream


def test_progress_bar_goes_to_stderr_only() -> None:
    plain = replay("--fixture", PAUSE, "--agents")
    barred = replay("--fixture", PAUSE, "--agents", "--progress")
    assert barred.stdout_bytes == plain.stdout_bytes
    assert "re-drive" in barred.stderr


def test_events_are_counted_only_for_a_bar_that_may_be_drawn(sqlite_url, monkeypatch) -> None:
    from eventstore.reads import Reads

    counted: list[str] = []
    real = Reads.event_count
    monkeypatch.setattr(Reads, "event_count",
                        lambda self, execution_id: counted.append(execution_id) or real(
                            self, execution_id))
    execution = "fast_processing-swf-0001"
    with loaded(sqlite_url):
        plain = replay(execution, "--db", sqlite_url)  # (stderr is no terminal here)
        assert counted == [] and plain.exit_code == 0
        barred = replay(execution, "--db", sqlite_url, "--progress")
        assert counted == [execution] and "rebuild" in barred.stderr
        assert barred.stdout_bytes == plain.stdout_bytes


# -- export and update -----------------------------------------------------------------------


def test_export_from_a_store_reproduces_the_fixture(sqlite_url, tmp_path) -> None:
    with loaded(sqlite_url, PAUSE):
        pass
    result = replay("fast_processing-swf-0001", "--db", sqlite_url, "--export",
                    tmp_path / "copy.jsonl")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("exported fast_processing-swf-0001: 94 events to copy.jsonl")
    assert (tmp_path / "copy.jsonl").read_bytes() == PAUSE.read_bytes()
    ours = orjson.loads((tmp_path / "copy.expected.json").read_bytes())
    theirs = orjson.loads(PAUSE.with_name("pause_resume.expected.json").read_bytes())
    assert ours["scenario"] is None and theirs["scenario"] == "pause_resume"
    assert {**ours, "scenario": "pause_resume"} == theirs
    again = replay("--fixture", tmp_path / "copy.jsonl")
    assert again.exit_code == 0 and again.stdout.splitlines()[-1] == "identical"


def test_update_records_a_scenario_again_byte_for_byte(tmp_path) -> None:
    for suffix in (".jsonl", ".expected.json"):
        shutil.copy(FIXTURES / f"pause_resume{suffix}", tmp_path / f"pause_resume{suffix}")
    (tmp_path / "pause_resume.expected.json").write_text(
        (tmp_path / "pause_resume.expected.json").read_text().replace('"queued"', '"lost"'))
    result = replay("--fixture", tmp_path / "pause_resume.jsonl", "--update", "--json")
    assert result.exit_code == 0, result.output
    assert as_json(result)["how"] == "recorded scenario pause_resume"
    for suffix in (".jsonl", ".expected.json"):
        assert (tmp_path / f"pause_resume{suffix}").read_bytes() == (
            FIXTURES / f"pause_resume{suffix}").read_bytes()


def test_update_without_a_scenario_recomputes_the_expected_projections(tmp_path) -> None:
    expected = orjson.loads(PAUSE.with_name("pause_resume.expected.json").read_bytes())
    shutil.copy(PAUSE, tmp_path / "mine.jsonl")
    edited = {**orjson.loads(orjson.dumps(expected)), "scenario": None}
    edited["projections"]["run_state"][0]["phase"] = "standby"
    (tmp_path / "mine.expected.json").write_bytes(orjson.dumps(edited))
    assert replay("--fixture", tmp_path / "mine.jsonl").exit_code == 1
    result = replay("--fixture", tmp_path / "mine.jsonl", "--update")
    assert result.exit_code == 0 and "expected projections recomputed" in result.stdout
    refreshed = orjson.loads((tmp_path / "mine.expected.json").read_bytes())
    assert refreshed == {**expected, "scenario": None}
    assert replay("--fixture", tmp_path / "mine.jsonl").exit_code == 0


# -- executions sharing a store --------------------------------------------------------------


def _runs(store: EventStore, tmp_path: Path, count: int) -> list[str]:
    from agents.config import load_workflow
    from agents.runtime import prepare

    config = load_workflow("fast_processing", ["fast_processing.stf_count=2",
                                               "fast_processing.slices_per_sample=2"])
    done = []
    for index in range(count):
        runtime = prepare(store, config, seed=index, data_dir=tmp_path / "data", user="ann")
        runtime.run()
        done.append(str(runtime.execution_id))
    return done


def test_executions_sharing_agent_names_replay_each_on_its_own(sqlite_url, tmp_path) -> None:
    with EventStore(sqlite_url) as store:
        first, second = _runs(store, tmp_path, 2)
    projections_catch_up(sqlite_url)
    for execution in (first, second):
        result = replay(execution, "--db", sqlite_url)
        assert result.exit_code == 0 and result.stdout.splitlines()[-1] == "identical", (
            result.output)
        assert replay(execution, "--db", sqlite_url, "--agents").exit_code == 0
    # the first execution's agents rows depend on the second's heartbeats: exported with it
    assert replay(first, "--db", sqlite_url, "--export", tmp_path / "first.jsonl").exit_code == 0
    senders = {(e["execution_id"], e["msg_type"]) for e in events_of(tmp_path / "first.jsonl")}
    assert (second, "agent_heartbeat") in senders and (second, "slice") not in senders
    assert replay("--fixture", tmp_path / "first.jsonl").exit_code == 0
    assert replay("--fixture", tmp_path / "first.jsonl", "--agents").exit_code == 0


@pytest.mark.parametrize("bounded", [False, True])
def test_a_run_number_retried_by_a_later_execution(sqlite_url, tmp_path, monkeypatch,
                                                   bounded: bool) -> None:
    """Run 555 is announced by two executions: its rows depend on both. ``bounded``: the
    replay's fold writes every STF file aside as soon as it can (folding again with the other
    execution's events empties the spill and fills it anew)."""
    from agents.base import shift
    from agents.config import load_workflow
    from agents.runtime import prepare
    from projections import source
    from projections import spill as spilling

    executions = []
    with EventStore(sqlite_url) as store:
        for attempt in range(2):
            runtime = prepare(store, load_workflow("prompt_processing"),
                              data_dir=tmp_path / "data", user="ann",
                              agent_types=["processing"])
            t0, execution = runtime.start_time, runtime.execution_id

            def send(msg_type: str, seconds: float, n: int, **fields: Any) -> None:
                runtime.publish({  # noqa: B023 - used at once
                    "msg_type": msg_type, "msg_id": f"{execution}-{n}",  # noqa: B023
                    "namespace": "torre2", "execution_id": execution,  # noqa: B023
                    "run_id": 555, "sender": "daq", "timestamp": shift(t0, seconds),  # noqa: B023
                    **fields})

            send("run_imminent", 0, 1, workflow_params=runtime.params)
            send("stf_ready", 1, 2, filename=f"swf.555.00000{attempt + 1}.stf", size_bytes=10,
                 checksum="0a1b2c3d", file_url="file:///x")
            send("end_run", 2, 3, total_stf_files=1)
            runtime.run()
            executions.append(execution)
    projections_catch_up(sqlite_url)
    written_aside: list[int] = []
    if bounded:
        for module, name, value in ((spilling, "ABOVE", -1), (spilling, "DOWN_TO", -1),
                                    (spilling, "WINDOW", 0), (source, "CHUNK", 1)):
            monkeypatch.setattr(module, name, value)
        put = spilling.Spill._put
        monkeypatch.setattr(spilling.Spill, "_put", lambda spill, stfs, *rest: (
            written_aside.append(len(stfs)), put(spill, stfs, *rest))[1])
    for execution in executions:
        result = replay(execution, "--db", sqlite_url, "--json")
        report = as_json(result)
        assert result.exit_code == 0 and report["identical"], result.output
        assert report["shared_runs_with"] == [e for e in executions if e != execution]
        assert replay(execution, "--db", sqlite_url, "--agents").exit_code == 0
    assert bool(written_aside) == bounded and sum(written_aside) >= 2 * bounded


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_replay_on_postgresql(pg_url, tmp_path) -> None:
    with loaded(pg_url) as store:
        execution = "fast_processing-swf-0001"
        clean = replay(execution, "--db", pg_url)
        assert clean.exit_code == 0 and clean.stdout.splitlines()[-1] == "identical"
        assert clean.stdout_bytes == replay("--fixture", DEFAULT).stdout_bytes.replace(
            b"(fixture fast_processing_default.jsonl)", b"(store)")
        agents = replay(execution, "--db", pg_url, "--agents")
        assert agents.exit_code == 0 and agents.stdout.splitlines()[-1] == "no divergence"
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE tf_slices SET retries = 2 WHERE slice_id = 7"))
        drift = as_json(replay(execution, "--db", pg_url, "--json"))
        assert len(drift["tables"]["tf_slices"]["changed"]) == 10
        assert replay(execution, "--db", pg_url, "--export", tmp_path / "pg.jsonl").exit_code == 0
        assert (tmp_path / "pg.jsonl").read_bytes() == DEFAULT.read_bytes()
