"""A rebuild in bounded memory (``projections/spill.py``): STF files with their samples and
slices leave the fold as rows and come back when an event names them again; the tables come out
byte-equal to a fold that kept everything."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_projections_property import (
    Message,
    deliveries,
    dump,
    fresh_store,  # noqa: F401 - a fixture
    incoming,
    items,
)

from eventstore.store import EventStore
from projections import source
from projections import spill as spilling
from projections import tables as t
from projections.derive import everything, render
from projections.fold import Fold
from projections.projector import NAMES, Projector
from projections.spill import Spill, evict

SPILLED = (t.stf_files, t.tf_samples, t.tf_slices)


def _budget(monkeypatch: pytest.MonkeyPatch, above: int, down_to: int, window: int) -> None:
    monkeypatch.setattr(spilling, "ABOVE", above)
    monkeypatch.setattr(spilling, "DOWN_TO", down_to)
    monkeypatch.setattr(spilling, "WINDOW", window)


def _plain(row: tuple[Any, ...]) -> str:
    return repr(tuple(int(value) if type(value) is bool else value for value in row))


def tables(fold: Fold, spill: Spill | None = None) -> dict[str, list[str]]:
    """Every row the fold renders (and the spill holds), as sorted text."""
    everything(fold)
    changes = render(fold, NAMES)
    fold.clear_dirty()
    out = {}
    for table, rows in changes.upserts.items():
        if spill is not None and table in SPILLED:
            rows = [*rows, *spill.rows(table)]
        out[table.name] = sorted(map(_plain, rows))
    return out


@pytest.fixture
def spill() -> Iterator[Spill]:
    kept = Spill()
    yield kept
    kept.close()


@settings(max_examples=150, deadline=None)
@given(case=deliveries(), window=st.integers(0, 3))
def test_evicted_groups_come_back_as_they_left(case: tuple[list[Message], list[Message]],
                                               window: int) -> None:
    _sent, delivered = case
    log = items(delivered)
    whole = Fold()
    whole.feed(log)
    bounded = Fold()
    bounded.spill = spill = Spill()
    try:
        for item in log:  # a round per event, evicting everything settled after each
            bounded.feed([item])
            bounded.round += 1
            evict(bounded, spill, 0, window)
        assert tables(bounded, spill) == tables(whole)
    finally:
        spill.close()


def _stf_messages(run: int, stf: str, tf: str, second: int) -> list[Message]:
    stamp = f"2025-05-01T00:{second // 60:02d}:{second % 60:02d}.000000Z"
    common = {"namespace": "prop", "execution_id": "exec-1", "run_id": run, "sender": "a",
              "timestamp": stamp}
    return [{**common, "msg_type": "stf_gen", "filename": stf, "sequence": 1},
            {**common, "msg_type": "tf_file_registered", "tf_filename": tf,
             "stf_filename": stf, "tf_first": 1, "tf_last": 3, "tf_count": 3},
            {**common, "msg_type": "slice", "slice_id": 0, "tf_filename": tf,
             "stf_filename": stf, "start": 1, "end": 3, "tf_count": 3, "retry": 0}]


def test_a_late_result_and_a_late_sample_bring_their_group_back(spill: Spill) -> None:
    run = 300
    first = _stf_messages(run, "a.stf", "a_tf.tf", 1)
    late = [{**first[2], "msg_type": "slice_result", "status": "completed", "worker": "w",
             "timestamp": "2025-05-01T01:00:00.000000Z"},
            {**first[1], "tf_filename": "a_tf2.tf", "timestamp": "2025-05-01T01:00:01.000000Z"}]
    messages = [{"msg_type": "run_imminent", "namespace": "prop", "execution_id": "exec-1",
                 "run_id": run, "sender": "daq", "workflow_params": {"n": 1},
                 "timestamp": "2025-05-01T00:00:00.000000Z"},
                *first, *_stf_messages(run, "b.stf", "b_tf.tf", 2), *late]
    for number, message in enumerate(messages):
        message["msg_id"] = f"m{number}"
    log = items(messages)
    whole = Fold()
    whole.feed(log)
    bounded = Fold()
    bounded.spill = spill
    bounded.feed(log[:7])
    bounded.round = 10
    assert evict(bounded, spill, 0, 5) == 2  # both STF files, with their sample and slice
    assert not bounded.slices and not bounded.samples and not bounded.stfs
    bounded.feed(log[7:])
    assert spill.recalled == 1  # a.stf: its slice's result, then its second sample
    assert set(bounded.stfs) == {("prop", run, "a.stf")}
    assert tables(bounded, spill) == tables(whole)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=deliveries(), chunk=st.integers(1, 4), window=st.integers(0, 2))
def test_a_rebuild_that_spills_writes_what_one_that_does_not_writes(
        fresh_store: Any, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        case: tuple[list[Message], list[Message]], chunk: int, window: int) -> None:
    _sent, delivered = case
    store = fresh_store()
    store.append(incoming(message) for message in delivered)
    projector = Projector(store)
    projector.rebuild()
    expected = dump(store.engine)
    monkeypatch.setattr(source, "CHUNK", chunk)  # a round every few events
    _budget(monkeypatch, 0, 0, window)
    projector.rebuild()
    assert dump(store.engine) == expected


def test_a_rebuild_over_its_budget_writes_groups_aside_and_the_same_tables(
        fresh_store: Any, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    messages = [{"msg_type": "run_imminent", "namespace": "prop", "execution_id": "exec-1",
                 "run_id": 300, "sender": "daq", "workflow_params": {"n": 1},
                 "timestamp": "2025-05-01T00:00:00.000000Z"}]
    for second in range(1, 160):  # a round evicts more than a multi-row INSERT's rows
        messages += _stf_messages(300, f"{second}.stf", f"{second}_tf.tf", second)
    messages.append({**messages[3], "msg_type": "slice_result", "status": "completed",
                     "worker": "w", "timestamp": "2025-05-01T01:00:00.000000Z"})
    for number, message in enumerate(messages):
        message["msg_id"] = f"m{number}"
    store = fresh_store()
    store.append(incoming(message) for message in messages)
    projector = Projector(store)
    projector.rebuild()
    expected = dump(store.engine)
    monkeypatch.setattr(source, "CHUNK", 40)
    _budget(monkeypatch, 120, 5, 2)
    made: list[str | None] = []
    real = spilling.tempfile.mkstemp

    def mkstemp(**options: Any) -> tuple[int, str]:
        made.append(options.get("dir"))
        return real(**options)

    monkeypatch.setattr(spilling.tempfile, "mkstemp", mkstemp)
    with caplog.at_level("INFO", logger="projections.projector"):
        projector.rebuild()
    assert dump(store.engine) == expected
    assert any("written aside" in record.message and "1 brought back" in record.message
               for record in caplog.records), caplog.text
    rows = sum(map(len, expected.values()))  # (the spilled ones counted too)
    assert any(record.message.endswith(f", {rows} rows") for record in caplog.records), \
        caplog.text
    if store.engine.dialect.name == "sqlite":  # beside the store's file, and gone after
        folder = Path(str(store.engine.url.database)).resolve().parent
        assert made == [str(folder)] and not list(folder.glob(".swf-spill-*"))
    else:
        assert made == [None]
    for names in (["tf_samples"], ["run_state", "tf_slices"], ["stf_files", "executions"]):
        projector.rebuild(names)  # a partial rebuild writes the spilled rows of its tables
        assert dump(store.engine) == expected, names



def test_a_spill_file_left_by_a_killed_process_is_swept_and_one_in_use_is_not(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", "import os, sys; from projections.spill import Spill; "
         "spill = Spill(sys.argv[1]); spill._open(); print(spill.path, flush=True); "
         "os.kill(os.getpid(), 9)", str(tmp_path)],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert killed.returncode == -9, killed.stderr
    left = Path(killed.stdout.strip())
    assert left.parent == tmp_path and left.exists()
    live = Spill(str(tmp_path))
    try:
        live._open()  # (its file made and locked)
        assert live.path is not None
        with caplog.at_level("WARNING", logger="projections.spill"):
            assert spilling.sweep(str(tmp_path)) == 1
        assert not left.exists() and Path(live.path).exists()
        assert "removed 1 spill file(s)" in caplog.text
        assert spilling.sweep(str(tmp_path)) == 0
    finally:
        live.close()
    assert not list(tmp_path.iterdir())


def test_a_rebuild_sweeps_spill_files_left_beside_the_store(
        sqlite_url: str, tmp_path: Path) -> None:
    stale = tmp_path / ".swf-spill-stale.db"  # (beside swf.db)
    stale.write_bytes(b"")
    with EventStore(sqlite_url) as store:
        Projector(store).rebuild()
    assert not stale.exists()


def test_a_spill_file_a_sweep_takes_as_it_is_made_is_made_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between its making and its lock a sweep may find the file free, lock it and remove it:
    the spill then makes another rather than fail or use a file no longer there."""
    real = spilling.tempfile.mkstemp
    made: list[str] = []
    swept: list[int] = []

    def mkstemp(**options: Any) -> tuple[int, str]:
        handle, path = real(**options)
        made.append(path)
        if len(made) == 1:  # a sweep, right now: locks the first file, removes it
            sweeper = os.open(path, os.O_RDONLY)
            fcntl.flock(sweeper, fcntl.LOCK_EX | fcntl.LOCK_NB)
            swept.append(sweeper)
        return handle, path

    monkeypatch.setattr(spilling.tempfile, "mkstemp", mkstemp)
    spill = Spill(str(tmp_path))
    try:
        assert spill._open().execute("SELECT 1").fetchall() == [(1,)]
        assert len(made) == 2 and spill.path == made[1]
        os.unlink(made[0])  # (the sweep goes on: removes the first, lets go of it)
        os.close(swept[0])
        assert spilling.sweep(str(tmp_path)) == 0 and Path(made[1]).exists()
    finally:
        spill.close()
    assert not list(tmp_path.iterdir())


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=deliveries(), head=st.integers(1, 5))
def test_a_first_catch_up_is_a_rebuild_in_bounded_memory_equal_to_catching_up_in_steps(
        fresh_store: Any, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        case: tuple[list[Message], list[Message]], head: int) -> None:
    """Nothing projected yet: catch-up rebuilds (under the budget, here none at all) and ends
    where catching up the same log in two steps, the second incremental, ended."""
    _sent, delivered = case
    store = fresh_store()
    store.append(incoming(message) for message in delivered[:head])
    Projector(store).catch_up()  # (from 0: a rebuild of the first few)
    store.append(incoming(message) for message in delivered[head:])
    Projector(store).catch_up()  # incremental
    stepwise = dump(store.engine)
    with store.engine.begin() as conn:  # nothing projected again (the same events: positions)
        for table in t.metadata.sorted_tables:
            conn.execute(sa.delete(table))
    written: list[int] = []
    with monkeypatch.context() as patched:
        for name, value in (("ABOVE", -1), ("DOWN_TO", -1), ("WINDOW", 0)):
            patched.setattr(spilling, name, value)
        patched.setattr(source, "CHUNK", 2)
        put = Spill._put
        patched.setattr(Spill, "_put", lambda spill, stfs, *rest: (
            written.append(len(stfs)), put(spill, stfs, *rest))[1])
        Projector(store).catch_up()
    assert dump(store.engine) == stepwise
    if stepwise["stf_files"]:
        assert written  # (written aside: the rebuild's budget held)


def test_a_first_catch_up_another_process_got_ahead_of_goes_on_from_there(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both start from position 0; the other commits first: this one's rebuild must not put
    the checkpoints back, it catches up from where the other got to."""
    messages = [{"msg_type": "run_imminent", "namespace": "prop", "execution_id": "exec-1",
                 "run_id": 300, "sender": "daq", "workflow_params": {"n": 1},
                 "timestamp": "2025-05-01T00:00:00.000000Z"}]
    for second in range(1, 6):
        messages += _stf_messages(300, f"{second}.stf", f"{second}_tf.tf", second)
    for number, message in enumerate(messages):
        message["msg_id"] = f"m{number}"
    with EventStore(sqlite_url) as store:
        store.append(incoming(message) for message in messages[:8])
        ours, theirs = Projector(store), Projector(store)
        stream = Projector._stream

        def other_first(self: Projector, *args: Any, **options: Any) -> Any:
            if self is ours and not calls:
                calls.append(1)
                store.append(incoming(message) for message in messages[8:])
                assert theirs.catch_up() == len(messages)  # (a rebuild of all of them)
            return stream(self, *args, **options)

        calls: list[int] = []
        monkeypatch.setattr(Projector, "_stream", other_first)
        assert ours.catch_up() == 0  # its rebuild lost the race; nothing was left to apply
        assert calls and {row["position"] for row in ours.status()} == {store.head()}
        after = dump(store.engine)
        Projector(store).rebuild()
        assert dump(store.engine) == after
