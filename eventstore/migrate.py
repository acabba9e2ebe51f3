"""Schema migrations: alembic, driven programmatically (no alembic.ini at runtime).

Each package that owns tables keeps its own alembic script directory and its own version table,
so their histories never interfere. A package's ``env.py`` is three lines::

    from alembic import context
    from eventstore.migrate import run_migrations
    from mypackage.schema import metadata
    run_migrations(context, metadata)

and its code calls ``upgrade(engine, script_location, version_table)`` before first use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .engine import create_engine, lock_key
from .errors import SchemaOutdated, SchemaTooNew, StoreUnavailable

log = logging.getLogger(__name__)

STORE_SCRIPTS = str(Path(__file__).resolve().parent / "migrations")
STORE_VERSION_TABLE = "swf_schema_eventstore"


def upgrade_store(engine: sa.Engine) -> None:
    """Bring the event store's tables to the newest revision this code knows."""
    from .schema import metadata

    upgrade(engine, STORE_SCRIPTS, STORE_VERSION_TABLE, metadata)


def check_store(engine: sa.Engine) -> None:
    """For a read-only opening: the event store's tables must be at this code's revision."""
    check_current(engine, STORE_SCRIPTS, STORE_VERSION_TABLE, "event store")


def check_current(engine: sa.Engine, script_location: str, version_table: str, what: str
                  ) -> None:
    """Raise unless one package's tables are at exactly the revision this code knows, without
    changing anything: SchemaOutdated when missing or older, SchemaTooNew when newer."""
    try:
        with engine.connect() as conn:
            current = current_revisions(conn, version_table)
    except sa.exc.OperationalError as problem:
        raise StoreUnavailable(f"cannot reach {engine.url!r}: {_first_line(problem)}") from problem
    if current == declared_heads(script_location):
        return
    heads, known = _revisions(script_location)
    _check_known(current, heads, known, version_table)
    if current == heads:
        return
    if not current:
        raise SchemaOutdated(f"no {what} in {engine.url!r}: run `swf db upgrade` to create it")
    raise SchemaOutdated(f"the {what} is at revision {', '.join(sorted(current))}, older than "
                         f"this code's {', '.join(sorted(heads))}: run `swf db upgrade`")


def upgrade(engine: sa.Engine, script_location: str, version_table: str,
            metadata: sa.MetaData | None = None) -> None:
    """Upgrade one package's tables to its heads; cheap (one query) when already current.

    ``metadata``: the package's tables as its migrations leave them (a test holds the two
    equal), created as declared on a database that has none of them, the heads then stamped
    without loading alembic (two fifths of a fresh ``swf run``). Raises SchemaTooNew if the
    database carries a revision unknown to ``script_location``.
    """
    try:
        with engine.connect() as conn:
            current = current_revisions(conn, version_table)
    except sa.exc.OperationalError as problem:
        raise StoreUnavailable(f"cannot reach {engine.url!r}: {_first_line(problem)}") from problem
    declared = declared_heads(script_location)
    if current == declared:
        return  # the common case, decided without loading alembic (a third of `swf` start-up)
    if not current and declared and metadata is not None and _created(
            engine, version_table, declared, metadata):
        return
    from alembic import command
    from alembic.config import Config

    heads, known = _revisions(script_location)
    _check_known(current, heads, known, version_table)
    if current == heads:
        return
    with _migration_lock(engine, version_table) as conn:
        # Re-read under the lock: a concurrent opener may have migrated meanwhile.
        current = current_revisions(conn, version_table)
        _check_known(current, heads, known, version_table)
        if current == heads:
            return
        log.info("upgrading %s from %s to %s", version_table, sorted(current) or "empty",
                 sorted(heads))
        config = Config()
        config.set_main_option("script_location", script_location)
        config.attributes["connection"] = conn
        config.attributes["version_table"] = version_table
        command.upgrade(config, "heads")


def _created(engine: sa.Engine, version_table: str, heads: frozenset[str],
             metadata: sa.MetaData) -> bool:
    """Create ``metadata``'s tables and stamp ``heads``, if under the migration lock the
    database still has no version table and none of the tables (False: another opener got
    there first, or the tables are of an unversioned history - left to alembic)."""
    with _migration_lock(engine, version_table) as conn:
        inspector = sa.inspect(conn)
        if inspector.has_table(version_table) or set(metadata.tables) & set(
                inspector.get_table_names()):
            return False
        log.info("creating %s at %s", version_table, sorted(heads))
        metadata.create_all(conn, checkfirst=False)
        # alembic's own version table, as it creates it
        versions = sa.Table(version_table, sa.MetaData(),
                            sa.Column("version_num", sa.String(32), nullable=False),
                            sa.PrimaryKeyConstraint("version_num", name=f"{version_table}_pkc"))
        versions.create(conn)
        conn.execute(versions.insert(), [{"version_num": head} for head in sorted(heads)])
    return True


def current_revisions(conn: sa.Connection, version_table: str) -> frozenset[str]:
    """The revisions recorded in ``version_table`` (empty when the table does not exist)."""
    if not sa.inspect(conn).has_table(version_table):
        return frozenset()
    rows = conn.execute(sa.text(f'SELECT version_num FROM "{version_table}"'))
    return frozenset(row[0] for row in rows)


def run_migrations(context: Any, target_metadata: sa.MetaData) -> None:
    """The body of a package's alembic ``env.py`` (see the module docstring)."""
    config = context.config
    version_table = config.attributes.get("version_table") or config.get_main_option(
        "version_table", "alembic_version")
    options: dict[str, Any] = {
        "target_metadata": target_metadata,
        "version_table": version_table,
        # Several packages share one database: autogenerate must only see this package's tables.
        "include_name": lambda name, type_, parents: (
            type_ != "table" or name in target_metadata.tables),
        "render_as_batch": True,  # SQLite cannot ALTER most things; batch mode copies the table
    }
    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                          **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    # Invoked from the alembic command line (e.g. to autogenerate a revision).
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as connection:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


@lru_cache(maxsize=16)
def declared_heads(script_location: str) -> frozenset[str] | None:
    """The heads named in the script directory's optional HEADS file (one revision per line);
    our packages' files are checked against alembic's own view by a test, so they cannot drift."""
    path = Path(script_location) / "HEADS"
    if not path.is_file():
        return None
    return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip())


@lru_cache(maxsize=16)
def _revisions(script_location: str) -> tuple[frozenset[str], frozenset[str]]:
    """(heads, all known revisions) of a script directory, as alembic sees it."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", script_location)
    script = ScriptDirectory.from_config(config)
    known = frozenset(rev.revision for rev in script.walk_revisions())
    return frozenset(script.get_heads()), known


def _check_known(current: frozenset[str], heads: frozenset[str], known: frozenset[str],
                 version_table: str) -> None:
    unknown = sorted(current - known)
    if unknown:
        raise SchemaTooNew(
            f"the database is at revision {', '.join(unknown)} ({version_table}), newer than "
            f"this code knows (head {', '.join(sorted(heads))}); upgrade swf")


@contextmanager
def _migration_lock(engine: sa.Engine, version_table: str) -> Iterator[sa.Connection]:
    """A transaction that holds the database's migration lock for ``version_table``.

    Several processes may open a fresh store at once (e.g. writer processes); without the lock
    they would all try to create the same tables.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = conn.execution_options(swf_sqlite_begin="IMMEDIATE")
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                             {"key": lock_key(f"migrate:{version_table}")})
            elif engine.dialect.name == "sqlite":
                raw = conn.connection.driver_connection
                if raw is not None and not raw.in_transaction:
                    # An engine without our begin listener: take SQLite's write lock ourselves.
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn


def _first_line(problem: BaseException) -> str:
    text = str(getattr(problem, "orig", None) or problem).strip()
    return text.splitlines()[0] if text else type(problem).__name__
