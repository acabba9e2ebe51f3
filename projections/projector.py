"""The projector: checkpoints, incremental catch-up, rebuild and status of the projections.

Each projection has a checkpoint row in ``projection_checkpoints``, written in the same
transaction as the rows of the events it covers: a crash leaves rows and checkpoint together at
the last commit, so no event is ever applied twice or skipped. The fold is shared by all
projections (run counters need the slices, STF statuses the samples...), so normally all
checkpoints move together; one left behind (a projection added later, or a partial rebuild that
lost a race) is rebuilt up to the others. A catch-up from position 0 (nothing projected yet: a
new store, or a log imported before its first catch-up) is a rebuild: one write, in the
rebuild's bounded memory, where an incremental fold would hold every record of the log.

Writers are serialized: BEGIN IMMEDIATE on SQLite, an advisory lock on PostgreSQL. Folding runs
outside that lock; the write then checks the checkpoints did not move meanwhile (another
process caught up first) and starts over if they did.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Collection, Generator, Iterator
from contextlib import closing, contextmanager, nullcontext, suppress
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from eventstore.collector import quiet_gc
from eventstore.engine import lock_key
from eventstore.errors import ReadOnlyStore
from eventstore.migrate import upgrade, upgrade_store
from eventstore.reads import Packed, Snapshot, scan_cache
from eventstore.store import EventStore

from .tables import PROJECTIONS, metadata, projection_checkpoints

# The fold and what feeds and renders it (fold, records, derive, load, source) are imported by
# the methods that fold: a query's catch-up usually finds nothing to apply, and its command's
# start-up need not pay for them (~2 ms).
if TYPE_CHECKING:
    from . import source
    from .derive import Changes
    from .fold import Fold
    from .spill import Spill

log = logging.getLogger(__name__)

SCRIPTS = str(Path(__file__).resolve().parent / "migrations")
VERSION_TABLE = "swf_schema_projections"
NAMES: tuple[str, ...] = tuple(PROJECTIONS)
DEFAULT_BATCH = 50_000
_STATEMENTS_PER_CALL = 100  # multi-row INSERTs per executemany of a rebuild's write
_SPILL_SCHEMA = "swf_spill"  # the spill file, attached to a SQLite rebuild's connection
_ATTACHED = "swf_spill_attached"  # (in the connection's info while it is)

Progress = Callable[[int], None]  # called with how many log positions were just covered


class Moved(Exception):
    """Internal: the checkpoints moved while this process was folding (a concurrent writer)."""


def upgrade_projections(engine: sa.Engine) -> None:
    """Create or upgrade the projection tables (and the store's, which they read)."""
    upgrade_store(engine)
    upgrade(engine, SCRIPTS, VERSION_TABLE, metadata)


class Projector:
    """Keeps the projection tables of one database in step with its event log."""

    def __init__(self, store: EventStore, *, batch_size: int = DEFAULT_BATCH) -> None:
        if store.read_only:
            raise ReadOnlyStore("the projector writes its tables: open the store read-write")
        self.store = store
        self.engine: sa.Engine = store.engine
        self.batch_size = batch_size
        upgrade_projections(self.engine)
        self._sql = _Statements(self.engine.dialect)
        self._lock = 0
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
            self._lock = lock_key(f"projections:{schema}")

    # -- reading state -------------------------------------------------------------------------

    def checkpoints(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return _checkpoints(conn)

    def status(self) -> list[dict[str, Any]]:
        """Per projection: its checkpoint, the log's head, and how many events it lags."""
        with self.store.snapshot() as view:
            marks = _checkpoints(view.connection)
            top = view.head()
            lags = {mark: view.count_after(mark) for mark in set(marks.values())}
        return [{"name": name, "position": mark, "head": top, "lag": lags[mark]}
                for name, mark in marks.items()]

    # -- catch-up ------------------------------------------------------------------------------

    def catch_up(self, progress: Progress | None = None) -> int:
        """Apply every event after the checkpoints (from position 0: a rebuild); returns how many
        events were applied."""
        applied = 0
        fold: Fold | None = None
        while True:
            with self.store.snapshot() as view:
                marks = _checkpoints(view.connection)
                top = view.head()
            done = max(marks.values())
            behind = [name for name, mark in marks.items() if mark < done]
            if behind:
                log.warning("projections %s are behind the others (at %d); rebuilding them",
                            ", ".join(behind), done)
                with suppress(Moved):  # then the checkpoints are read again
                    self._replace(behind, done, progress=None)
                fold = None
                continue
            if done >= top:
                return applied
            if done == 0:  # nothing projected yet: a rebuild folds it all (in bounded memory)
                with suppress(Moved):  # (another process got there first: go on from it)
                    applied += self._replace(NAMES, top, progress, expected=marks)
                fold = None
                continue
            if fold is None or fold.checkpoint != done:
                from .fold import Fold

                fold = Fold(complete=False)
                fold.checkpoint = done
            try:
                applied += self._step(fold, marks, done, top)
            except Moved:
                log.info("another process advanced the projections; reloading")
                fold = None
                continue
            if progress is not None:
                progress(fold.checkpoint - done)

    def _step(self, fold: Fold, marks: dict[str, int], done: int, top: int) -> int:
        """Fold and commit one batch after ``done``."""
        from . import source
        from .derive import flushed, render
        from .load import preload

        with quiet_gc():
            with self.store.snapshot() as view:
                rows, covered = view.fold_rows(done, top, self.batch_size)
                items = source.decode(view, rows)
                preload(view.connection, fold, items)
            applied = fold.feed(items)
            changes = render(fold, NAMES)
            with self._writing() as conn:
                if _checkpoints(conn) != marks:
                    raise Moved
                self._write(conn, changes, fresh=False)
                self._set_checkpoints(conn, NAMES, covered)
        flushed(fold)
        fold.checkpoint = covered
        return applied

    def _stream(self, fold: Fold, done: int, until: int, limit: int,
                progress: Progress | None = None, spill: Spill | None = None
                ) -> tuple[int, int]:
        """Fold up to ``limit`` events of (done, until] in small chunks; returns how many were
        folded and the position covered. With a ``spill``, the fold keeps to its budget."""
        from . import source
        from .spill import keep_to_budget

        folded = 0
        chunks = self._chunks(done, until, limit)
        if min(until - done, limit) >= source.READ_AHEAD_MIN and source.can_read_ahead(
                self.engine):
            chunks = source.read_ahead(chunks)
        with closing(chunks):  # left early (an error): the reader and its connection end here
            for rows, covered in chunks:
                # (a body to normalize has its destination and headers looked up by the store)
                folded += source.fold_chunk(fold, self.store, rows)
                if spill is not None:
                    keep_to_budget(fold, spill)
                if progress is not None:
                    progress(covered - done)
                done = covered
        return folded, done

    def _chunks(self, done: int, until: int, limit: int
                ) -> Generator[tuple[list[source.Row] | Packed, int], None, None]:
        """Chunks of up to ``limit`` valid rows of (done, until], each read in a transaction of
        its own (positions up to ``until`` are committed: every read sees the same rows), with
        the position each covers; packed by the database where it can (``Reads.fold_packed``)."""
        from . import source

        with self.engine.connect() as conn, scan_cache(conn):
            while done < until and limit > 0:
                # A packed chunk is one statement, its own read transaction; rows are read in a
                # transaction per chunk. Not one long transaction: it would hold up checkpoints.
                size = min(source.CHUNK, limit)
                packed = Snapshot(conn).fold_packed(done, until, size)
                chunk: list[source.Row] | Packed
                if packed is None:
                    with conn.begin():
                        chunk, covered = Snapshot(conn).fold_rows(done, until, size)
                    count = len(chunk)
                else:
                    chunk, covered, count = packed, packed.covered, packed.size
                yield chunk, covered
                limit -= count
                done = covered

    # -- rebuild -------------------------------------------------------------------------------

    def rebuild(self, names: Collection[str] | None = None,
                progress: Progress | None = None) -> int:
        """Empty the named projections (default: all) and fold the log into them from position 0;
        returns how many events were folded. A partial rebuild first catches everything up, so
        the rebuilt projections end at the same checkpoint as the others."""
        chosen = check_names(names)
        partial = len(chosen) < len(NAMES)
        while True:
            if partial:
                self.catch_up()
            with self.store.snapshot() as view:
                marks = _checkpoints(view.connection)
                top = view.head()
            target = max(marks[name] for name in NAMES if name not in chosen) if partial else top
            try:
                return self._replace(chosen, target, progress)
            except Moved:
                log.info("another process advanced the projections; rebuilding again")

    def _replace(self, names: Collection[str], target: int, progress: Progress | None,
                 expected: dict[str, int] | None = None) -> int:
        """Rebuild ``names`` up to ``target`` in one write; raises Moved if the other
        projections are no longer at ``target`` (or the checkpoints no longer ``expected``)."""
        from .derive import render
        from .fold import Fold
        from .spill import for_store

        fold = Fold(complete=True)
        fold.spill = spill = for_store(self.engine)
        others = [name for name in NAMES if name not in names]
        with quiet_gc(), closing(spill):
            folded, _done = self._stream(fold, 0, target, target, progress, spill)
            changes = render(fold, names, fresh=True, consume=True)
            del fold  # acyclic: freed right here, not by a later collection
            with self._writing(rebuild=True) as conn:
                marks = _checkpoints(conn)
                if any(marks[name] != target for name in others) or (
                        expected is not None and marks != expected):
                    raise Moved
                for name in names:
                    for table in PROJECTIONS[name]:
                        conn.execute(table.delete())
                self._write(conn, changes, fresh=True, spill=spill)
                self._set_checkpoints(conn, names, target)
            written = changes.count() + sum(  # (before the spill file goes)
                spill.count(table) for name in names for table in PROJECTIONS[name])
            # Freed before the collector is back on: the first allocation after would scan
            # every row of them (all allocated while it was off), a tenth of a second at 1M.
            del changes
        if spill.groups or spill.recalled:
            log.info("rebuild kept its memory bounded: %d STF files with their samples and "
                     "slices written aside, %d brought back", spill.groups, spill.recalled)
        log.info("rebuilt %s: %d events up to position %d, %d rows", ", ".join(names), folded,
                 target, written)
        return folded

    # -- writing -------------------------------------------------------------------------------

    @contextmanager
    def _writing(self, rebuild: bool = False) -> Iterator[sa.Connection]:
        """A write transaction holding the projections' writer lock. A ``rebuild`` writes
        whole tables in key order through a small SQLite page cache (at 5M events the usual
        one filled to 256 MB, a third of the rebuild's memory); the spill file ``_write``
        attaches is detached after the commit."""
        with self.engine.connect() as conn, scan_cache(conn) if rebuild else nullcontext():
            try:
                if self.engine.dialect.name == "sqlite":
                    conn = conn.execution_options(swf_sqlite_begin="IMMEDIATE")
                with conn.begin():
                    if self._lock:
                        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (self._lock,))
                    yield conn
            finally:
                if conn.info.pop(_ATTACHED, False):
                    try:
                        conn.exec_driver_sql(f"DETACH DATABASE {_SPILL_SCHEMA}")
                        conn.rollback()  # (the transaction the statement began)
                    except sa.exc.DBAPIError:  # (after a failed write): not reused attached
                        conn.invalidate()

    def _write(self, conn: sa.Connection, changes: Changes, fresh: bool,
               spill: Spill | None = None) -> None:
        for table, keys in changes.deletes.items():
            if keys and not fresh:
                conn.exec_driver_sql(self._sql.delete(table), keys)
        for table, rows in changes.upserts.items():
            if not fresh:
                if rows:
                    conn.exec_driver_sql(self._sql.upsert(table), rows)
                continue
            # Into empty tables: sorted (rows start with their primary key, so the b-tree is
            # appended to), and many rows per statement (a fifth cheaper than one per row).
            # The rows the fold wrote aside (mostly the lower keys) go first: on SQLite
            # copied by SQLite from the attached spill file, else merged in key order.
            rows.sort()
            if spill is None or not spill.holds(table):
                self._insert(conn, table, iter(rows))
            elif self.engine.dialect.name == "sqlite":
                if not conn.info.get(_ATTACHED):
                    conn.exec_driver_sql(f"ATTACH DATABASE ? AS {_SPILL_SCHEMA}", (spill.path,))
                    conn.info[_ATTACHED] = True
                # OR IGNORE: SQLite then keeps no journal of the statement (all of its pages,
                # in memory); every row must still arrive, or nothing is written.
                copied = conn.exec_driver_sql(f"INSERT OR IGNORE INTO main.{table.name} "
                                              f"SELECT * FROM {_SPILL_SCHEMA}.{table.name}")
                if copied.rowcount != spill.count(table):
                    raise RuntimeError(f"{table.name}: {copied.rowcount} of the "
                                       f"{spill.count(table)} rows written aside were copied")
                self._insert(conn, table, iter(rows))
            else:
                self._insert(conn, table, heapq.merge(rows, spill.rows(table)))

    def _insert(self, conn: sa.Connection, table: sa.Table, rows: Iterator[tuple[Any, ...]]
                ) -> None:
        per = self._sql.rows_per_insert(table)
        flat = chain.from_iterable
        while True:  # parameters built a slice at a time: all at once would double the peak
            part = list(islice(rows, per * _STATEMENTS_PER_CALL))
            whole = len(part) - len(part) % per
            if whole:
                conn.exec_driver_sql(self._sql.insert(table, per),
                                     [tuple(flat(part[i:i + per])) for i in range(0, whole, per)])
            if whole < len(part):
                conn.exec_driver_sql(self._sql.insert(table, len(part) - whole),
                                     tuple(flat(part[whole:])))
            if len(part) < per * _STATEMENTS_PER_CALL:
                return

    def _set_checkpoints(self, conn: sa.Connection, names: Collection[str], position: int
                         ) -> None:
        conn.exec_driver_sql(self._sql.upsert(projection_checkpoints),
                             [(name, position) for name in names])


def check_names(names: Collection[str] | None) -> list[str]:
    """The projection names asked for, in canonical order; ValueError for an unknown one."""
    if not names:
        return list(NAMES)
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise ValueError(f"unknown projection {', '.join(unknown)}; "
                         f"known: {', '.join(NAMES)}")
    return [name for name in NAMES if name in names]


def _checkpoints(conn: sa.Connection) -> dict[str, int]:
    stored: dict[str, int] = dict(conn.execute(sa.select(
        projection_checkpoints.c.name, projection_checkpoints.c.position)).all())
    return {name: stored.get(name, 0) for name in NAMES}


class _Statements:
    """Driver-level SQL per table (executemany of tuples is several times cheaper than Core's
    per-row dict binding), in the dialect's parameter style and quoting."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self._mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self._quote = dialect.identifier_preparer.quote
        self._cache: dict[tuple[str, str], str] = {}

    def _names(self, table: sa.Table) -> tuple[list[str], list[str]]:
        columns = [self._quote(c.name) for c in table.columns]
        keys = [self._quote(c.name) for c in table.primary_key.columns]
        return columns, keys

    @staticmethod
    def rows_per_insert(table: sa.Table) -> int:
        return max(1, min(100, 900 // len(table.columns)))  # under SQLite's old 999 limit

    def insert(self, table: sa.Table, rows: int = 1) -> str:
        key = (f"insert{rows}", table.name)
        if key not in self._cache:
            columns, _keys = self._names(table)
            values = f"({', '.join([self._mark] * len(columns))})"
            self._cache[key] = (f"INSERT INTO {self._quote(table.name)} ({', '.join(columns)}) "
                                f"VALUES {', '.join([values] * rows)}")
        return self._cache[key]

    def upsert(self, table: sa.Table) -> str:
        key = ("upsert", table.name)
        if key not in self._cache:
            columns, keys = self._names(table)
            rest = [c for c in columns if c not in keys]
            action = (f"DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in rest)}"
                      if rest else "DO NOTHING")
            self._cache[key] = f"{self.insert(table)} ON CONFLICT ({', '.join(keys)}) {action}"
        return self._cache[key]

    def delete(self, table: sa.Table) -> str:
        key = ("delete", table.name)
        if key not in self._cache:
            _columns, keys = self._names(table)
            where = " AND ".join(f"{c} = {self._mark}" for c in keys)
            self._cache[key] = f"DELETE FROM {self._quote(table.name)} WHERE {where}"
        return self._cache[key]
