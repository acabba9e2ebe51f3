"""Database engines for the store: URL resolution, engine creation, per-driver tuning.

``create_engine(url)`` is the one place a database URL becomes an Engine (the store, the
migrations' command line and the tools all come here), so every connection gets the same
settings: WAL, explicit BEGINs and a busy timeout on SQLite; psycopg 3 with a connect timeout on
PostgreSQL. ``read_only=True`` opens without writing anything: no file is created, no journal
mode is switched, no statement can change the database.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import suppress
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from .errors import StoreUnavailable

DEFAULT_URL = "sqlite:///swf.db"
SQLITE_BUSY_TIMEOUT_S = 30.0
SQLITE_WAL_AUTOCHECKPOINT = 10_000  # pages
SQLITE_PAGE_SIZE = 8192  # bytes, for new database files
SQLITE_CACHE_KIB = 256 * 1024  # an upper bound, allocated only as pages are used
PG_CONNECT_TIMEOUT_S = 5


def _null(_value: None) -> None:
    return None


# The sqlite3 module binds an exact int, float, str or bytearray as it is; any other value, None
# and bool included, goes through its adapter lookup, which with nothing registered raises and
# clears two AttributeErrors (about 0.4 us a value: most of a row's binding when it has a few
# NULLs). Registered, None still binds as NULL and a bool as 0 or 1, only without that detour.
# (For every sqlite3 connection of the process, which binds them exactly as before.)
sqlite3.register_adapter(type(None), _null)
sqlite3.register_adapter(bool, int)


def database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else $SWF_DB, else a SQLite file in the working dir."""
    return url or os.environ.get("SWF_DB") or DEFAULT_URL


def create_engine(url: str | None = None, *, read_only: bool = False) -> sa.Engine:
    """An Engine tuned for the store; ``postgresql://`` means psycopg 3. Raises StoreUnavailable."""
    text = database_url(url)
    try:
        parsed = sa.make_url(text)
    except sa.exc.ArgumentError:
        raise StoreUnavailable(f"not a database URL: {text!r}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {}
    options: dict[str, Any] = {}
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_S
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, or every checkout would see a different empty database.
            connect_args["check_same_thread"] = False
            options["poolclass"] = StaticPool
        elif read_only:
            parsed = _read_only_sqlite(parsed)
    elif backend == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args, **options)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as problem:
        raise StoreUnavailable(f"cannot use {parsed!r}: {problem}".splitlines()[0]) from None
    if engine.dialect.name == "sqlite" and engine.dialect.driver == "pysqlite":
        _tune_sqlite(engine, read_only)
    elif engine.dialect.driver == "psycopg":
        sa.event.listen(engine, "connect", _read_only_psycopg if read_only else _tune_psycopg)
    return engine


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory locks, derived from a name."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big",
                          signed=True)


def _read_only_sqlite(parsed: sa.URL) -> sa.URL:
    """The file opened by URI in mode ``ro``: a missing file is an error instead of a new empty
    database, and a read-only connection never checkpoints the WAL into the file on close (a
    read-write one does, even with ``query_only``)."""
    path = str(parsed.database)
    if path.startswith("file:"):
        raise StoreUnavailable(f"cannot open {path!r} read-only: give a plain file path")
    if not os.path.isfile(path):
        raise StoreUnavailable(f"no database file {path!r}")
    return parsed.set(database=f"file:{quote(path)}",
                      query={**parsed.query, "mode": "ro", "uri": "true"})


def _tune_psycopg(dbapi_connection: Any, _record: Any) -> None:
    # psycopg's default bytes dumper is a Python subclass (for the DB-API Binary wrapper); the
    # plain one is implemented in C and saves a Python call per bytea value in COPY.
    from psycopg.types.string import BytesBinaryDumper  # lazily: SQLite users never need it

    dbapi_connection.adapters.register_dumper(bytes, BytesBinaryDumper)


def _read_only_psycopg(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.read_only = True  # every transaction of the session is READ ONLY


def _tune_sqlite(engine: sa.Engine, read_only: bool) -> None:
    """WAL + synchronous=NORMAL on every connection, and explicit BEGINs.

    pysqlite's own implicit BEGIN is deferred and skips DDL; we take over (isolation_level None)
    so migrations are transactional and appends can BEGIN IMMEDIATE: a deferred transaction that
    reads and then writes can fail with SQLITE_BUSY instead of waiting for the write lock. (A
    read-only engine needs the explicit BEGIN too: pysqlite would start none before a SELECT,
    so a snapshot's queries would each see a different moment.)
    """

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        if read_only:
            cursor.execute("PRAGMA query_only = ON")
        else:
            # Takes effect only while the file is still empty (a new store): 8 KiB pages append
            # ~10% faster than SQLite's 4 KiB (benchmarks/append_layouts.py), fewer B-tree
            # levels and page writes per event; an existing store keeps its page size.
            cursor.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            # WAL is synced at checkpoints only; checkpoint every ~40 MB instead of every 4 MB.
            cursor.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT}")
        # The event_id index takes random inserts: with the default 2 MB page cache every
        # append misses it and SQLite's insert rate halves once the index outgrows the cache.
        cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        cursor.execute("PRAGMA temp_store = MEMORY")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("swf_sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _use_wal(cursor: Any) -> None:
    """Switch the database file to WAL (persistent, so normally a no-op check).

    Several connections opening a fresh file at once race for the switch, and SQLite answers
    the loser "database is locked" at once, without its busy handler: retry with backoff.
    """
    with suppress(sqlite3.OperationalError):  # then the retries below
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() in ("wal", "memory"):
            return  # the usual case, checked without tenacity: importing it costs ~5 ms
    from tenacity import (  # lazily: a third of a second of start-up is all imports already
        Retrying,
        retry_if_exception,
        stop_after_delay,
        wait_exponential,
    )

    for attempt in Retrying(
            retry=retry_if_exception(lambda problem: isinstance(problem, sqlite3.OperationalError)
                                     and "locked" in str(problem)),
            wait=wait_exponential(multiplier=0.001, max=0.1),
            stop=stop_after_delay(SQLITE_BUSY_TIMEOUT_S), reraise=True):
        with attempt:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() not in ("wal", "memory"):
                cursor.execute("PRAGMA journal_mode = WAL")
