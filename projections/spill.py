"""A rebuild's (and a replay's) fold in bounded memory: settled STF files leave it, rows and all.

A rebuild folds the whole log before it writes, so its fold would hold every STF file, sample
and slice of the log at once (about 0.8 kB a slice: 1.2 GB at 5M events). Once the fold holds
more than a budget of slices, ``evict`` moves the oldest STF files that no event touched for a
while out of memory - each with the samples linked to it and their slices - as the rows a
rebuild would write for them, into a temporary SQLite file (``Spill``). What the run's counts
and times need of them stays with the run (``RunRec.spilled``, its first and last times).

A group is whole or absent: any event that names an evicted STF file, sample or slice (a late
result, a duplicate, a sample linked afterwards) first brings its group back (``recall_stf``,
``recall_sample``), exactly as it left - a record loaded from its row folds on as if it never
left memory, the rule incremental catch-up relies on too. A Bloom filter of the evicted names
keeps the lookup off the hot path. At the write the projector has SQLite copy the spilled rows
from the attached file (PostgreSQL: merged with the fold's own, in key order); a replay compares
them with the stored ones from there (``replay/rebuild.py``).

The file lives beside a SQLite store (``for_store``) and holds an ``flock`` while in use, so a
rebuild or replay killed on its way leaves a file the next one removes (``sweep``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import sqlalchemy as sa

from . import tables as t
from .derive import (
    _pieces_status,
    _stf_status,
    sample_rec,
    sample_row,
    slice_rec,
    slice_row,
    stf_rec,
    stf_row,
    tally,
)
from .fold import Fold
from .records import ItemKey, RunRec, SampleRec, SliceRec, StfRec

log = logging.getLogger(__name__)

# The budget: past ABOVE slices in a fold, settled STF files leave it until DOWN_TO remain
# (about 0.8 kB a slice); one touched in the last WINDOW rounds (chunks of the log, of
# ``source.CHUNK`` events) stays.
ABOVE = 250_000
DOWN_TO = 150_000
WINDOW = 20
_BLOOM_BITS = 1 << 24  # 2 MB: under 1e-4 false positives for the names of 5M events
_CACHE_KIB = 16 * 1024  # the spill file's page cache
_ROWS_PER_INSERT = 50  # (at most 15 columns: 750 parameters, under SQLite's limit)
_TABLES = (t.stf_files, t.tf_samples, t.tf_slices)  # what a spill holds, laid out alike
_PREFIX, _SUFFIX = ".swf-spill-", ".db"


class Spill:
    """Rows of evicted STF groups in a temporary SQLite file (made on the first eviction)."""

    def __init__(self, directory: str | None = None) -> None:
        self._directory = directory  # None: the system's temporary directory
        self._conn: sqlite3.Connection | None = None
        self._path: str | None = None
        self._lock: int | None = None  # the file's descriptor, locked while it is ours
        self._bloom = bytearray()
        self.groups = 0  # evicted, not recalled
        self.recalled = 0

    # -- the file --------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            self._lock, self._path = _locked_file(self._directory)
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            for pragma in ("journal_mode = OFF", "synchronous = OFF",
                           f"cache_size = -{_CACHE_KIB}", "temp_store = MEMORY"):
                conn.execute(f"PRAGMA {pragma}")
            for table in _TABLES:
                names = ", ".join(f'"{column.name}"' for column in table.columns)
                conn.execute(f"CREATE TABLE {table.name} ({names}, PRIMARY KEY "
                             f"({', '.join(_key(table))})) WITHOUT ROWID")
            conn.execute("CREATE INDEX samples_of_stf ON tf_samples "
                         "(run_number, namespace, stf_filename)")
            self._conn = conn
            self._bloom = bytearray(_BLOOM_BITS // 8)
        return self._conn

    def close(self) -> None:
        """Remove the file: the spill is empty again (and may be used again)."""
        self._bloom = bytearray()  # (no name is held any more)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            self._path = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # -- membership ------------------------------------------------------------------------

    def _bits(self, name: str) -> tuple[int, int, int]:
        code = hash(name) & 0xFFFF_FFFF_FFFF_FFFF
        mask = _BLOOM_BITS - 1
        return code & mask, (code >> 24) & mask, (code >> 40 ^ code) & mask

    def _note(self, name: str) -> None:
        bloom = self._bloom
        for bit in self._bits(name):
            bloom[bit >> 3] |= 1 << (bit & 7)

    def _maybe(self, name: str) -> bool:
        bloom = self._bloom
        return bool(bloom) and all(bloom[bit >> 3] >> (bit & 7) & 1
                                   for bit in self._bits(name))

    # -- rows ------------------------------------------------------------------------------

    @property
    def path(self) -> str | None:
        """The spill file (SQLite, its tables named and laid out as the projections')."""
        return self._path

    def holds(self, table: sa.Table) -> bool:
        return self._conn is not None and table in _TABLES

    def count(self, table: sa.Table) -> int:
        if not self.holds(table):
            return 0
        assert self._conn is not None
        return int(self._conn.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0])

    def rows(self, table: sa.Table, bools: bool = True) -> Iterator[tuple[Any, ...]]:
        """The spilled rows of ``table`` in key order (the fold's rows sort the same way),
        booleans as True or False (SQLite gives them back as 1 or 0, which compare equal to
        them: kept, without ``bools``)."""
        if not self.holds(table):
            return iter(())
        assert self._conn is not None
        rows = self._conn.execute(f"SELECT * FROM {table.name} ORDER BY "
                                  f"{', '.join(_key(table))}")
        flags = [i for i, column in enumerate(table.columns)
                 if isinstance(column.type, sa.Boolean)]
        return (_with_bools(row, flags) for row in rows) if flags and bools else rows

    def _put(self, stfs: list[tuple[Any, ...]], samples: list[tuple[Any, ...]],
             pieces: list[tuple[Any, ...]]) -> None:
        conn = self._open()
        conn.execute("BEGIN")
        for table, rows in ((t.stf_files, stfs), (t.tf_samples, samples),
                            (t.tf_slices, pieces)):
            _insert_rows(conn, table, rows)
        conn.execute("COMMIT")

    # -- recall ----------------------------------------------------------------------------

    def recall_sample(self, fold: Fold, key: ItemKey) -> bool:
        """Bring back the group of the sample ``key`` if it was evicted; whether it was."""
        ns, run, tf_filename = key
        if key in fold.samples or not self._maybe(tf_filename):
            return False
        assert self._conn is not None
        found = self._conn.execute(
            "SELECT stf_filename FROM tf_samples WHERE run_number = ? AND namespace = ? AND "
            "tf_filename = ?", (run, ns, tf_filename)).fetchone()
        return found is not None and self.recall_stf(fold, (ns, run, found[0]))

    def recall_stf(self, fold: Fold, key: ItemKey) -> bool:
        """Bring back the STF file ``key`` with its samples and slices if it was evicted."""
        ns, number, filename = key
        if key in fold.stfs or not self._maybe(filename):
            return False
        conn = self._conn
        assert conn is not None
        where = (number, ns, filename)
        stf_rows = conn.execute("SELECT * FROM stf_files WHERE run_number = ? AND namespace = ? "
                                "AND filename = ?", where).fetchall()
        if not stf_rows:
            return False
        sample_rows = conn.execute("SELECT * FROM tf_samples WHERE run_number = ? AND "
                                   "namespace = ? AND stf_filename = ?", where).fetchall()
        slice_rows = []
        for sample in sample_rows:
            slice_rows += conn.execute("SELECT * FROM tf_slices WHERE run_number = ? AND "
                                       "namespace = ? AND tf_filename = ?",
                                       (number, ns, sample[2])).fetchall()
        conn.execute("BEGIN")
        conn.execute("DELETE FROM stf_files WHERE run_number = ? AND namespace = ? AND "
                     "filename = ?", where)
        conn.execute("DELETE FROM tf_samples WHERE run_number = ? AND namespace = ? AND "
                     "stf_filename = ?", where)
        conn.executemany("DELETE FROM tf_slices WHERE run_number = ? AND namespace = ? AND "
                         "tf_filename = ?", [(number, ns, row[2]) for row in sample_rows])
        conn.execute("COMMIT")
        _restore(fold, stf_rows[0], sample_rows, slice_rows)
        self.groups -= 1
        self.recalled += 1
        return True


def spill_directory(engine: sa.Engine) -> str | None:
    """Beside a SQLite store's file, if this process may write there (the disk that holds the
    data; the system's temporary directory may be small or in memory); else None, the
    temporary directory."""
    database = engine.url.database or ""
    if database.startswith("file:"):  # (a URI: how the store opens a file read-only)
        if engine.url.query.get("mode") == "memory":
            return None
        database = unquote(database.removeprefix("file:").partition("?")[0])
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    folder = Path(database).resolve().parent
    return str(folder) if os.access(folder, os.W_OK) else None


def for_store(engine: sa.Engine) -> Spill:
    """A spill for a rebuild or replay of the store: beside it (``spill_directory``), once the
    files that killed ones left there are removed (``sweep``)."""
    directory = spill_directory(engine)
    sweep(directory)
    return Spill(directory)


def _locked_file(directory: str | None) -> tuple[int, str]:
    """A new spill file in ``directory`` and its descriptor, holding an exclusive ``flock`` that
    tells ``sweep`` the file is in use (SQLite's own locks are POSIX locks: independent)."""
    while True:
        handle, path = tempfile.mkstemp(prefix=_PREFIX, suffix=_SUFFIX, dir=directory)
        with contextlib.suppress(OSError):  # (a sweep may hold it: it is about to remove it)
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino == os.fstat(handle).st_ino:  # (not removed meanwhile)
                return handle, path
        os.close(handle)  # taken by a sweep between: make another


def sweep(directory: str | None) -> int:
    """Remove the spill files in ``directory`` (None: the system's temporary one) that no
    process holds: left by a rebuild or replay that was killed. Returns how many."""
    folder = Path(directory or tempfile.gettempdir())
    removed = 0
    for path in folder.glob(f"{_PREFIX}*{_SUFFIX}"):
        try:
            handle = os.open(path, os.O_RDONLY)
        except OSError:  # (gone meanwhile, or another user's)
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
            removed += 1
        except OSError:  # in use
            continue
        finally:
            os.close(handle)
    if removed:
        log.warning("removed %d spill file(s) left in %s by a rebuild or replay that did not "
                    "finish", removed, folder)
    return removed


def keep_to_budget(fold: Fold, spill: Spill) -> None:
    """A round of the log was folded: evict if the fold is over the budget."""
    fold.round += 1
    if len(fold.slices) > ABOVE:
        evict(fold, spill, DOWN_TO, WINDOW)


def evict(fold: Fold, spill: Spill, keep: int, window: int) -> int:
    """Move STF groups out of ``fold`` (oldest first) until it holds ``keep`` slices or fewer;
    a group any of whose records a round after ``fold.round - window`` touched stays.
    Returns how many groups left."""
    threshold = fold.round - window
    stf_rows: list[tuple[Any, ...]] = []
    sample_rows: list[tuple[Any, ...]] = []
    slice_rows: list[tuple[Any, ...]] = []
    gone: set[int] = set()  # ids of the records that left
    runs = set()
    for key, stf in list(fold.stfs.items()):  # insertion order: the oldest first
        if len(fold.slices) <= keep:
            break
        group = _settled_group(fold, key, stf, threshold)
        if group is None:
            continue
        for sample, pieces in group:  # what settle would derive, derived now
            sample.status, sample.updated_at = _pieces_status(pieces, sample.updated_at)
        _stf_status(fold, stf)
        run = fold.runs[(stf.ns, stf.run)]
        _spill_counts(run, group)
        stf_rows.append(stf_row(stf))
        del fold.stfs[key]
        fold.stf_samples.pop(key, None)
        fold.d_stfs.discard(stf)
        fold.d_stf_keys.discard(key)
        gone.add(id(stf))
        spill._open()
        spill._note(stf.filename)
        for sample, pieces in group:
            sample_key = (sample.ns, sample.run, sample.tf_filename)
            sample_rows.append(sample_row(sample))
            spill._note(sample.tf_filename)
            del fold.samples[sample_key]
            fold.sample_slices.pop(sample_key, None)
            fold.d_samples.discard(sample)
            gone.add(id(sample))
            for piece in pieces:
                slice_rows.append(slice_row(piece))
                del fold.slices[(piece.ns, piece.run, piece.tf_filename, piece.slice_id)]
                fold.d_slices.discard(piece)
                gone.add(id(piece))
        runs.add(run)
        spill.groups += 1
    if stf_rows:
        spill._put(stf_rows, sample_rows, slice_rows)
        for run in runs:  # one pass per run, not one removal per record
            run.stfs = [stf for stf in run.stfs if id(stf) not in gone]
            run.samples = [sample for sample in run.samples if id(sample) not in gone]
            run.slices = [piece for piece in run.slices if id(piece) not in gone]
    return len(stf_rows)


def _settled_group(fold: Fold, key: ItemKey, stf: StfRec, threshold: int
                   ) -> list[tuple[SampleRec, list[SliceRec]]] | None:
    """The STF file's samples with their slices, if none of them was touched after
    ``threshold`` and every name linked to the file is a sample the fold holds."""
    if stf.seen > threshold:
        return None
    ns, run, _filename = key
    group = []
    for name in fold.stf_samples.get(key, ()):
        sample = fold.samples.get((ns, run, name))
        if sample is None or sample.seen > threshold or sample.stf_filename != stf.filename:
            return None
        pieces = fold.sample_slices.get((ns, run, name), [])
        for piece in pieces:  # (a slice naming another STF file counts for that one too)
            if piece.seen > threshold or piece.stf_filename not in (None, stf.filename):
                return None
        group.append((sample, pieces))
    return group


def _spill_counts(run: RunRec, group: list[tuple[SampleRec, list[SliceRec]]],
                  sign: int = 1) -> None:
    """Add (or take back) what the group counts for its run; widen the run's times by its
    slices' (a rebuild derives them from the slices, ``derive.settle``)."""
    pieces = [piece for _sample, listed in group for piece in listed]
    spilled = run.spilled if run.spilled is not None else [0] * 8
    for i, value in enumerate((1, len(group), len(pieces), *tally(pieces))):
        spilled[i] += sign * value
    run.spilled = spilled
    for piece in pieces:  # (times of records the fold made: never None)
        if piece.created_at < run.created_at:  # type: ignore[operator]
            run.created_at = piece.created_at
        if piece.updated_at > run.updated_at:  # type: ignore[operator]
            run.updated_at = piece.updated_at


def _restore(fold: Fold, stf_row_: tuple[Any, ...], sample_rows: list[tuple[Any, ...]],
             slice_rows: list[tuple[Any, ...]]) -> None:
    """Records from their rows, back in the fold as they were when they left."""
    stf = stf_rec(stf_row_)
    stf.seen = fold.round
    ns, number, filename = stf.ns, stf.run, stf.filename
    run = fold.runs[(ns, number)]
    fold.stfs[(ns, number, filename)] = stf
    run.stfs.append(stf)
    fold.d_stfs.add(stf)
    group: list[tuple[SampleRec, list[SliceRec]]] = []
    by_sample: dict[str, list[SliceRec]] = {}
    for row in sample_rows:
        sample = sample_rec(row)
        sample.seen = fold.round
        fold.samples[(ns, number, sample.tf_filename)] = sample
        run.samples.append(sample)
        fold.d_samples.add(sample)
        fold.link(ns, number, filename, sample.tf_filename)
        group.append((sample, by_sample.setdefault(sample.tf_filename, [])))
    for row in slice_rows:
        piece = slice_rec(row)
        piece.seen = fold.round
        fold.slices[(ns, number, piece.tf_filename, piece.slice_id)] = piece
        fold.announce(run, piece)
        fold.d_slices.add(piece)
        by_sample[piece.tf_filename].append(piece)
    _spill_counts(run, group, sign=-1)


def _insert_rows(conn: sqlite3.Connection, table: sa.Table, rows: list[tuple[Any, ...]]
                 ) -> None:
    if not rows:
        return
    one = f"({', '.join('?' * len(rows[0]))})"
    whole = len(rows) - len(rows) % _ROWS_PER_INSERT
    flat = chain.from_iterable
    if whole:  # many rows per statement: a third of the cost of one per row
        conn.executemany(
            f"INSERT INTO {table.name} VALUES {', '.join([one] * _ROWS_PER_INSERT)}",
            [tuple(flat(rows[i:i + _ROWS_PER_INSERT])) for i in range(0, whole, _ROWS_PER_INSERT)])
    if whole < len(rows):
        conn.executemany(f"INSERT INTO {table.name} VALUES {one}", rows[whole:])


def _with_bools(row: tuple[Any, ...], flags: list[int]) -> tuple[Any, ...]:
    values = list(row)
    for i in flags:
        if values[i] is not None:
            values[i] = bool(values[i])
    return tuple(values)


def _key(table: sa.Table) -> list[str]:
    return [f'"{column.name}"' for column in table.primary_key.columns]
