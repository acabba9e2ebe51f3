"""Schema creation and upgrade on open, version checks, and errors opening a store."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from eventstore import migrate
from eventstore.engine import create_engine
from eventstore.envelope import Incoming
from eventstore.errors import ReadOnlyStore, SchemaOutdated, SchemaTooNew, StoreUnavailable
from eventstore.store import EventStore

HEAD = "0003"


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def _versions(engine: sa.Engine, table: str = migrate.STORE_VERSION_TABLE) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(sa.text(f"SELECT version_num FROM {table}"))]


@contextmanager
def _projections_at(store: EventStore, revision: str) -> Iterator[sa.Connection]:
    """A store holding one start_run event, its projection schema upgraded only to ``revision``
    (an existing deployment); yields the transaction, for the rows of that time."""
    from alembic import command
    from alembic.config import Config

    from projections.projector import SCRIPTS, VERSION_TABLE

    store.append([Incoming.of({"msg_type": "start_run", "msg_id": "m1", "run_id": 5,
                               "namespace": "ns", "execution_id": "e-1",
                               "timestamp": "2026-01-01T00:00:00.000000Z"})])
    with store.engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", SCRIPTS)
        config.attributes["connection"] = conn
        config.attributes["version_table"] = VERSION_TABLE
        command.upgrade(config, revision)
        yield conn


def test_opening_a_fresh_database_creates_the_schema(db_url: str) -> None:
    with EventStore(db_url) as store:
        assert {"events", "reservations", "store_info",
                migrate.STORE_VERSION_TABLE} <= _tables(store.engine)
        assert _versions(store.engine) == [HEAD]
        indexes = {index["name"] for index in sa.inspect(store.engine).get_indexes("events")}
        assert {"ix_events_execution", "ix_events_run", "ix_events_msg_type",
                "ix_events_rejected"} <= indexes


def test_opening_again_does_not_run_alembic(db_url: str, monkeypatch) -> None:
    with EventStore(db_url) as store:
        store.append([Incoming.of({"msg_type": "agent_log", "level": "INFO", "message": "x"})])

    def refuse(*_args, **_kwargs):
        raise AssertionError("alembic ran on an up-to-date database")

    from alembic import command

    monkeypatch.setattr(command, "upgrade", refuse)
    with EventStore(db_url) as store:
        assert store.head() == 1
        assert _versions(store.engine) == [HEAD]


def test_a_newer_revision_raises_schema_too_new(db_url: str) -> None:
    with EventStore(db_url) as store, store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {migrate.STORE_VERSION_TABLE} SET version_num = 'f00d'"))
    with pytest.raises(SchemaTooNew) as raised:
        EventStore(db_url)
    text = str(raised.value)
    assert "f00d" in text and HEAD in text and "\n" not in text


def test_read_only_opening_reads_and_never_writes(db_url: str) -> None:
    from projections.projector import Projector

    beat = Incoming.of({"msg_type": "agent_log", "msg_id": "m-1", "level": "INFO",
                        "message": "x"})
    with EventStore(db_url) as store:
        store.append([beat])
    with EventStore(db_url, read_only=True) as store:
        assert store.read_only and store.head() == 1
        assert [event.event_id for event in store.read()] == ["m-1"]
        with store.snapshot() as view:
            assert view.stored_ids(["m-1", "m-2"]) == {"m-1"}
        for write in (lambda: store.append([beat]), lambda: store.restore([]),
                      lambda: Projector(store)):
            with pytest.raises(ReadOnlyStore) as raised:
                write()
            assert "\n" not in str(raised.value)
        with store.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError):
            conn.exec_driver_sql("DELETE FROM events")  # the database refuses it too
    with EventStore(db_url) as store:
        assert store.head() == 1


def test_read_only_opening_never_migrates(db_url: str, tmp_path: Path) -> None:
    if db_url.startswith("sqlite"):
        with pytest.raises(StoreUnavailable) as missing:
            EventStore(f"sqlite:///{tmp_path / 'none.db'}", read_only=True)
        assert "no database file" in str(missing.value)
        assert not (tmp_path / "none.db").exists()  # not even an empty file
        sa.create_engine(db_url).connect().close()  # an empty database file
    with pytest.raises(SchemaOutdated) as empty:
        EventStore(db_url, read_only=True)
    assert "no event store in" in str(empty.value) and "swf db upgrade" in str(empty.value)
    assert "\n" not in str(empty.value)
    with EventStore(db_url) as store, store.engine.begin() as conn:
        assert _tables(store.engine) >= {"events"}
        conn.execute(sa.text(f"UPDATE {migrate.STORE_VERSION_TABLE} SET version_num = 'f00d'"))
    with pytest.raises(SchemaTooNew):
        EventStore(db_url, read_only=True)


def test_concurrent_first_opens_migrate_once(db_url: str) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            barrier.wait(30)
            EventStore(db_url).close()
        except BaseException as problem:  # collected and asserted below
            errors.append(problem)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    engine = create_engine(db_url)
    assert _versions(engine) == [HEAD]
    engine.dispose()


@pytest.mark.postgres
def test_unreachable_postgres_is_store_unavailable_quickly() -> None:
    began = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        EventStore("postgresql://postgres@127.0.0.1:1/test")
    assert time.monotonic() - began < 10
    assert "127.0.0.1" in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("url", ["no url at all", "nosuchdialect://x/y",
                                 "sqlite:///{tmp}/missing-dir/swf.db"])
def test_bad_urls_are_store_unavailable(url: str, tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable) as raised:
        EventStore(url.format(tmp=tmp_path))
    assert "\n" not in str(raised.value)


def test_password_never_appears_in_the_error() -> None:
    with pytest.raises(StoreUnavailable) as raised:
        EventStore("postgresql://swf:s3cret@127.0.0.1:1/test")
    assert "s3cret" not in str(raised.value)


def test_url_defaults_and_driver_mapping(tmp_path: Path, monkeypatch) -> None:
    assert create_engine("postgresql://u@h/db").dialect.driver == "psycopg"
    assert create_engine("postgres://u@h/db").dialect.driver == "psycopg"
    monkeypatch.setenv("SWF_DB", f"sqlite:///{tmp_path / 'env.db'}")
    with EventStore() as store:
        assert store.engine.url.database == str(tmp_path / "env.db")
    monkeypatch.delenv("SWF_DB")
    monkeypatch.chdir(tmp_path)
    with EventStore() as store:
        assert store.engine.url.database == "swf.db"
    assert (tmp_path / "swf.db").exists()


def test_sqlite_connections_use_wal(sqlite_url: str) -> None:
    with EventStore(sqlite_url) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0


ENV_PY = '''
from alembic import context
import sqlalchemy as sa
from eventstore.migrate import run_migrations

metadata = sa.MetaData()
sa.Table("widgets", metadata, sa.Column("id", sa.Integer, primary_key=True))
run_migrations(context, metadata)
'''

REVISION = '''
import sqlalchemy as sa
from alembic import op

revision = "w1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("widgets", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("widgets")
'''


def test_another_package_keeps_its_own_history(db_url: str, tmp_path: Path) -> None:
    scripts = tmp_path / "widget_migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(ENV_PY)
    (scripts / "versions" / "w1_widgets.py").write_text(REVISION)
    with EventStore(db_url) as store:
        migrate.upgrade(store.engine, str(scripts), "swf_schema_widgets")
        migrate.upgrade(store.engine, str(scripts), "swf_schema_widgets")  # already current
        assert {"events", "widgets"} <= _tables(store.engine)
        assert _versions(store.engine, "swf_schema_widgets") == ["w1"]
        assert _versions(store.engine) == [HEAD]


def test_checking_a_history_changes_nothing(db_url: str, tmp_path: Path) -> None:
    scripts = tmp_path / "widget_migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(ENV_PY)
    (scripts / "versions" / "w1_widgets.py").write_text(REVISION)
    newer = tmp_path / "widget_migrations_2"
    shutil.copytree(scripts, newer)
    (newer / "versions" / "w2_more.py").write_text(REVISION.replace(
        'revision = "w1"\ndown_revision = None', 'revision = "w2"\ndown_revision = "w1"')
        .replace('op.create_table("widgets", sa.Column("id", sa.Integer, primary_key=True))',
                 "pass"))
    with EventStore(db_url) as store:
        with pytest.raises(SchemaOutdated) as missing:
            migrate.check_current(store.engine, str(scripts), "swf_schema_widgets", "widgets")
        assert "no widgets in" in str(missing.value)
        assert "widgets" not in _tables(store.engine)
        migrate.upgrade(store.engine, str(scripts), "swf_schema_widgets")
        migrate.check_current(store.engine, str(scripts), "swf_schema_widgets", "widgets")
        with pytest.raises(SchemaOutdated) as older:
            migrate.check_current(store.engine, str(newer), "swf_schema_widgets", "widgets")
        assert "at revision w1, older than this code's w2" in str(older.value)
        assert _versions(store.engine, "swf_schema_widgets") == ["w1"]


@pytest.mark.parametrize("package", ["eventstore", "projections"])
def test_declared_heads_match_alembic(package: str) -> None:
    """The HEADS file lets a store open without loading alembic; it must name alembic's heads."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from eventstore.migrate import declared_heads

    location = str(Path(__file__).resolve().parent.parent / package / "migrations")
    config = Config()
    config.set_main_option("script_location", location)
    assert declared_heads(location) == frozenset(ScriptDirectory.from_config(config).get_heads())


def test_projection_migrations_build_exactly_the_declared_tables(db_url: str) -> None:
    """A later revision (p0002: upstream runs) must leave the schema equal to tables.py."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from projections import tables
    from projections.projector import VERSION_TABLE, Projector

    with EventStore(db_url) as store:
        Projector(store)
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, tables.metadata)
    ours = set(tables.metadata.tables)

    def table_of(diff: Any) -> str | None:
        if isinstance(diff, list):  # modify_* come as lists of tuples
            return table_of(diff[0])
        item = diff[1]
        if diff[0] in ("add_table", "remove_table"):
            return str(item.name)
        if diff[0] in ("add_index", "remove_index"):
            return str(item.table.name)
        return str(diff[2]) if len(diff) > 2 else None  # (op, schema, table, column, ...)

    assert [diff for diff in differences if table_of(diff) in ours] == []
    # the rest is the event store's own (its tables and version table) and our version table
    from eventstore.schema import metadata as store_metadata

    assert {table_of(diff) for diff in differences} <= {*store_metadata.tables, VERSION_TABLE,
                                                        migrate.STORE_VERSION_TABLE}


def test_p0002_upgrades_a_p0001_database_with_rows(db_url: str) -> None:
    """An existing store: run_state rows get the new columns' defaults; the new projections
    start behind and are rebuilt up to the others by the next catch-up."""
    from projections.projector import VERSION_TABLE, Projector

    with EventStore(db_url) as store:
        with _projections_at(store, "p0001") as conn:
            conn.execute(sa.text(
                "INSERT INTO run_state (run_number, namespace, execution_id, phase, "
                "stf_count, stf_samples_received, slices_created, slices_queued, "
                "slices_processing, slices_completed, slices_failed, slice_retries) "
                "VALUES (5, 'ns', 'e-1', 'physics', 0, 0, 0, 0, 0, 0, 0, 0)"))
            for name in ("executions", "run_state", "stf_files", "tf_samples", "tf_slices",
                         "datasets", "panda_tasks", "agents", "logs"):
                conn.execute(sa.text("INSERT INTO projection_checkpoints VALUES (:n, 1)"),
                             {"n": name})
        projector = Projector(store)
        assert _versions(store.engine, VERSION_TABLE) == ["p0003"]  # through p0002
        with store.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT unmatched_failures, expects_outcome "
                                       "FROM run_state")).one()
        assert (row[0], bool(row[1])) == (0, False)
        projector.catch_up()
        assert {entry["name"]: entry["position"] for entry in projector.status()} == {
            name: 1 for name in projector.checkpoints()}


def test_p0003_upgrades_a_p0002_database_with_rows(db_url: str) -> None:
    """An existing store: executions rows get the REST columns empty; workflow_definitions is
    created and its projection is caught up to the others."""
    from projections.projector import NAMES, VERSION_TABLE, Projector

    with EventStore(db_url) as store:
        with _projections_at(store, "p0002") as conn:
            conn.execute(sa.text(
                "INSERT INTO executions (namespace, execution_id, status, runs, run_count, "
                "stf_count, stf_samples_received, slices_created, slices_completed, "
                "slices_failed) VALUES ('ns', 'e-1', 'running', '[5]', 1, 0, 0, 0, 0, 0)"))
            for name in NAMES:
                if name != "workflow_definitions":
                    conn.execute(sa.text("INSERT INTO projection_checkpoints VALUES (:n, 1)"),
                                 {"n": name})
        projector = Projector(store)
        assert _versions(store.engine, VERSION_TABLE) == ["p0003"]
        with store.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT status, declared_status, definition_id "
                                       "FROM executions")).one()
            assert tuple(row) == ("running", None, None)
            assert conn.execute(sa.text("SELECT count(*) FROM workflow_definitions")
                                ).scalar_one() == 0
        projector.catch_up()
        assert {entry["name"]: entry["position"] for entry in projector.status()} == {
            name: 1 for name in NAMES}


def test_store_migrations_build_exactly_the_declared_tables(db_url: str) -> None:
    """Each revision (0003: the canonical mark) leaves the events tables equal to schema.py."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from eventstore.schema import metadata

    with EventStore(db_url) as store, store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert [diff for diff in differences
            if not (diff[0] == "remove_table" and diff[1].name not in metadata.tables)] == []


def _schema(url: str) -> dict[str, Any]:
    """Everything of a database's schema that reads and writes depend on, per table: columns
    (name, type, nullable, default) in order, keys, indexes with their conditions, and the
    version tables' rows."""
    engine = create_engine(url)
    shape: dict[str, Any] = {}
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        for name in sorted(inspector.get_table_names()):
            columns = [(c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                       for c in inspector.get_columns(name)]
            indexes = sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]),
                              sorted((k, str(v)) for k, v in
                                     i.get("dialect_options", {}).items()))
                             for i in inspector.get_indexes(name))
            uniques = sorted((u["name"], tuple(u["column_names"]))
                             for u in inspector.get_unique_constraints(name))
            shape[name] = (columns, inspector.get_pk_constraint(name)["constrained_columns"],
                           uniques, indexes)
            if name.startswith("swf_schema_"):
                shape[name] += (sorted(row[0] for row in conn.exec_driver_sql(
                    f'SELECT version_num FROM "{name}"')),)
        if engine.dialect.name == "sqlite":  # WITHOUT ROWID, partial index conditions, and
            # the order of a table's indexes (the planner breaks ties by it)
            shape["sqlite_master"] = [tuple(row) for row in conn.exec_driver_sql(
                "SELECT type, tbl_name, name, sql LIKE '%WITHOUT ROWID%', sql LIKE '%WHERE%' "
                "FROM sqlite_master WHERE name NOT LIKE 'swf_schema_%' "
                "ORDER BY tbl_name, type, rowid").all()]
        else:
            schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
            shape["pg_indexes"] = sorted((name, definition.replace(f"{schema}.", ""))
                                         for name, definition in conn.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = "
                "current_schema()").all())
    engine.dispose()
    return shape


def test_a_fresh_database_gets_the_schema_its_migrations_would_build(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh database is built from the declared tables and stamped without alembic; the
    result equals what running every migration builds (columns in the same order too)."""
    from projections.projector import Projector

    with EventStore(db_url) as store:
        Projector(store)
    fresh = _schema(db_url)
    assert fresh["swf_schema_eventstore"][-1] == [HEAD]
    if db_url.startswith("sqlite"):  # create_all makes a table's indexes in set order
        assert [name for _type, table, name, *_ in fresh["sqlite_master"]
                if table == "events" and name.startswith("ix_")] == [
            "ix_events_execution", "ix_events_run", "ix_events_msg_type", "ix_events_rejected"]
    real_upgrade = migrate.upgrade
    monkeypatch.setattr(migrate, "upgrade",  # every migration, through alembic
                        lambda engine, scripts, table, metadata=None: real_upgrade(
                            engine, scripts, table))
    import projections.projector as projector_module
    monkeypatch.setattr(projector_module, "upgrade", migrate.upgrade)
    if db_url.startswith("sqlite"):
        migrated_url = f"sqlite:///{tmp_path / 'migrated.db'}"
        with EventStore(migrated_url) as store:
            Projector(store)
        assert _schema(migrated_url) == fresh
    else:
        from tests.conftest import fresh_pg_schema

        with fresh_pg_schema() as migrated_url:
            with EventStore(migrated_url) as store:
                Projector(store)
            assert _schema(migrated_url) == fresh


def test_a_fresh_store_opens_without_alembic(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; from eventstore.store import EventStore; "
            "from projections.projector import Projector; "
            f"s = EventStore('sqlite:///{tmp_path / 'fresh.db'}'); Projector(s); s.close(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"
