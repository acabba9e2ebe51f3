"""swf-replay in bounded memory: over the budget its fold writes settled STF groups aside
(``projections/spill.py``) and the STF, sample and slice tables are compared streamed (on
SQLite as JSON both databases write, else row by row in key order); the report is byte for byte
the one a replay holding everything gives, clean or with drift, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import Result
from test_replay import FIXTURES, NAMES, loaded, replay

from projections import source
from projections import spill as spilling
from replay import rebuild


def spilled_replay(monkeypatch: pytest.MonkeyPatch, *args: Any) -> tuple[Result, list[str]]:
    """``replay(*args)`` with no budget at all, folding 20 events a round; also the
    tables compared aside (their names; with " by row" where the JSON of the two sides
    differed, so their rows were read and compared one by one)."""
    with monkeypatch.context() as patched:
        patched.setattr(source, "CHUNK", 20)
        patched.setattr(spilling, "ABOVE", -1)  # every settled STF file, slices or none
        patched.setattr(spilling, "DOWN_TO", -1)
        patched.setattr(spilling, "WINDOW", 1)
        aside: list[str] = []
        real = rebuild.StoredTables.diff_aside

        def counted(self: rebuild.StoredTables, name: str, spill: Any) -> rebuild.TableDiff:
            aside.append(name)
            return real(self, name, spill)

        by_row = rebuild.stored_in_key_order

        def read(conn: Any, scope: Any, name: str) -> Any:
            aside.append(f"{name} by row")
            return by_row(conn, scope, name)

        patched.setattr(rebuild.StoredTables, "diff_aside", counted)
        patched.setattr(rebuild, "stored_in_key_order", read)
        return replay(*args), aside


def _execution(url: str) -> str:
    with loaded(url, FIXTURES / "slice_failures.jsonl") as store, store.engine.begin() as conn:
        return str(conn.exec_driver_sql("SELECT execution_id FROM executions").scalar_one())


@pytest.mark.parametrize("name", NAMES)
def test_a_replay_over_its_budget_reports_what_one_within_it_reports(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    with loaded(sqlite_url, FIXTURES / f"{name}.jsonl") as store, store.engine.begin() as conn:
        executions = [row[0] for row in conn.exec_driver_sql(
            "SELECT execution_id FROM executions ORDER BY execution_id")]
    for execution in executions:
        whole = replay(execution, "--db", sqlite_url)
        bounded, aside = spilled_replay(monkeypatch, execution, "--db", sqlite_url)
        assert bounded.stdout_bytes == whole.stdout_bytes
        assert bounded.exit_code == whole.exit_code == 0, whole.stdout
        report = orjson.loads(replay(execution, "--db", sqlite_url, "--json").stdout_bytes)
        if report["tables"]["stf_files"]["rebuilt"]:  # (something to write aside)
            assert aside == ["stf_files", "tf_samples", "tf_slices"], execution  # none by row


@pytest.mark.parametrize("piece", [1, 7, 20_000])
def test_drift_in_tables_compared_aside_is_reported_row_by_row_as_in_memory(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch, piece: int) -> None:
    monkeypatch.setattr(rebuild, "JSON_PIECE_ROWS", piece)
    execution = _execution(sqlite_url)
    tf = "swf.100001.000002_tf_001.tf"
    edits = [
        ("UPDATE tf_slices SET status = 'failed', worker = NULL WHERE tf_filename = ? AND "
         "slice_id = 3", (tf,)),
        ("DELETE FROM tf_slices WHERE tf_filename = ? AND slice_id = 4", (tf,)),
        ("UPDATE tf_slices SET final = 2 WHERE final = 1", ()),  # JSON may not tell, Python does
        ("INSERT INTO stf_files (run_number, namespace, filename, status) "
         "SELECT run_number, namespace, 'swf.zzz.stf', 'registered' FROM stf_files LIMIT 1", ()),
        ("DELETE FROM tf_samples WHERE rowid IN (SELECT rowid FROM tf_samples LIMIT 1)", ()),
    ]
    from eventstore.store import EventStore

    for sql, params in edits:
        with EventStore(sqlite_url) as store, store.engine.begin() as conn:
            if "rowid" in sql:  # (WITHOUT ROWID: the first sample by key instead)
                conn.exec_driver_sql("DELETE FROM tf_samples WHERE tf_filename = (SELECT "
                                     "min(tf_filename) FROM tf_samples)")
            else:
                conn.exec_driver_sql(sql, params)
        for args in ((), ("--json",)):
            whole = replay(execution, "--db", sqlite_url, *args)
            bounded, aside = spilled_replay(monkeypatch, execution, "--db", sqlite_url, *args)
            assert whole.exit_code == 1, sql
            assert bounded.exit_code == 1 and bounded.stdout_bytes == whole.stdout_bytes, sql
            tables = ["stf_files", "tf_samples", "tf_slices"]
            assert [name for name in aside if not name.endswith(" by row")] == tables
            by_row = [name.removesuffix(" by row") for name in aside if name.endswith(" by row")]
            assert by_row and set(by_row) <= set(tables), sql


def test_what_a_replay_writes_aside_goes_beside_the_store_and_is_gone_when_it_ends(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    execution = _execution(sqlite_url)  # (the store: tmp_path / "swf.db")
    made: list[str] = []
    real = tempfile.mkstemp

    def mkstemp(**options: Any) -> tuple[int, str]:
        handle, path = real(**options)
        made.append(path)
        return handle, path

    monkeypatch.setattr(spilling.tempfile, "mkstemp", mkstemp)
    result, aside = spilled_replay(monkeypatch, execution, "--db", sqlite_url)
    assert result.exit_code == 0 and aside
    assert made and all(Path(path).parent == tmp_path for path in made)
    assert not any(os.path.exists(path) for path in made)


@pytest.mark.postgres
def test_a_replay_over_its_budget_on_postgresql_reports_what_one_within_it_reports(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL writes no JSON to compare: the tables aside are compared row by row."""
    from eventstore.store import EventStore

    execution = _execution(pg_url)
    tf = "swf.100001.000002_tf_001.tf"
    edits = [
        "",  # clean
        f"UPDATE tf_slices SET status = 'failed', worker = NULL WHERE tf_filename = '{tf}' "
        f"AND slice_id = 3",
        f"DELETE FROM tf_slices WHERE tf_filename = '{tf}' AND slice_id = 4",
        "INSERT INTO stf_files (run_number, namespace, filename, status) SELECT run_number, "
        "namespace, 'Swf.A.stf', 'registered' FROM stf_files LIMIT 1",
        "DELETE FROM tf_samples WHERE tf_filename = (SELECT min(tf_filename) FROM tf_samples)",
    ]
    for sql in edits:
        if sql:
            with EventStore(pg_url) as store, store.engine.begin() as conn:
                conn.exec_driver_sql(sql)
        for args in ((), ("--json",)):
            whole = replay(execution, "--db", pg_url, *args)
            bounded, aside = spilled_replay(monkeypatch, execution, "--db", pg_url, *args)
            assert whole.exit_code == (1 if sql else 0), whole.stdout
            assert bounded.exit_code == whole.exit_code, sql
            assert bounded.stdout_bytes == whole.stdout_bytes, sql
            assert aside == ["stf_files", "stf_files by row", "tf_samples", "tf_samples by row",
                             "tf_slices", "tf_slices by row"]


@pytest.mark.postgres
def test_stored_rows_come_in_key_order_as_python_sorts_whatever_the_collation(
        pg_url: str) -> None:
    """The merge join needs the stored rows in Python's order of the keys (code points), not in
    the server's: ICU sorts "a_1" before "a1" and "A2" after both."""
    from eventstore.store import EventStore
    from projections.projector import Projector
    from replay.source import Scope

    names = ["a_1", "a1", "A2", "b", "B"]
    with EventStore(pg_url) as store:
        Projector(store).catch_up()  # (makes the projection tables)
        with store.engine.begin() as conn:
            conn.exec_driver_sql('ALTER TABLE stf_files ALTER COLUMN filename TYPE varchar(300) '
                                 'COLLATE "und-x-icu"')
            for name in names:
                conn.exec_driver_sql("INSERT INTO stf_files (run_number, namespace, filename, "
                                     "status) VALUES (7, 'ns', %s, 'registered')", (name,))
            server = [row[0] for row in conn.exec_driver_sql(
                "SELECT filename FROM stf_files ORDER BY filename")]
        assert server != sorted(names)  # (else this test would show nothing)
        scope = Scope("x")
        scope.runs = {(7, "ns")}
        with store.engine.connect() as conn:
            stored = list(rebuild.stored_in_key_order(conn, scope, "stf_files"))
    assert [row[2] for row in stored] == sorted(names)


def test_projections_covering_different_positions_compare_alike_over_the_budget(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each projection is folded to its own position (one fold, and one spill, per position):
    bounded or not, the same comparison - here with drift, the tables being ahead of the
    positions they are compared at."""
    from eventstore.store import EventStore
    from projections.projector import NAMES
    from replay.source import Scope

    execution = _execution(sqlite_url)
    with EventStore(sqlite_url, read_only=True) as store, store.snapshot() as view:
        head = view.head()
        stops = {name: head for name in NAMES}
        stops.update(stf_files=head // 2, tf_slices=head * 3 // 4)

        def compared() -> rebuild.Comparison:
            return rebuild.compare(view, Scope(execution), stops,
                                   lambda scope: rebuild.StoredTables(view.connection, scope))

        whole = compared()
        with monkeypatch.context() as patched:
            for name, value in (("ABOVE", -1), ("DOWN_TO", -1), ("WINDOW", 1)):
                patched.setattr(spilling, name, value)
            patched.setattr(source, "CHUNK", 20)
            put = spilling.Spill._put
            written: list[int] = []
            patched.setattr(spilling.Spill, "_put", lambda spill, stfs, *rest: (
                written.append(len(stfs)), put(spill, stfs, *rest))[1])
            bounded = compared()
    assert written and not whole.identical
    assert {diff.name for diff in whole.tables if not diff.identical} >= {"stf_files",
                                                                          "tf_slices"}
    assert bounded == whole
