"""Rebuild an execution's projections in memory and compare them with the stored ones.

The scratch store is a ``projections.Fold`` fed the execution's events (``source.Scope``); its
rows are rendered exactly as the projector would write them, then compared table by table with
the stored rows of the same scope, by primary key. Drift is reported per table as rows missing
from the stored table, extra stored rows, and changed columns (stored -> rebuilt).
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any, cast

import orjson
import sqlalchemy as sa

from eventstore.collector import quiet_gc
from eventstore.reads import Packed, scan_cache
from eventstore.store import Snapshot
from projections import source as fast
from projections import tables as t
from projections.derive import everything, flushed, render
from projections.fold import Fold
from projections.projector import NAMES
from projections.spill import Spill, for_store, keep_to_budget

from . import source
from .source import Limit, Scope

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
Progress = Callable[[int], None]
# (how many rows, the pieces: (how many rows, their JSON values joined by commas), in key order)
Written = tuple[int, list[tuple[int, bytes]]]
JSON_PIECE_ROWS = 20_000  # rows SQLite writes in one piece: one string for a whole table took
# four times its size while SQLite built, cast and handed it over (210 MB for a 1M-event run's
# slices, at the replay's peak)

# Every projection table, in the projector's write order, with the projection it belongs to.
TABLES: tuple[tuple[str, sa.Table], ...] = tuple(
    (name, table) for name, tables in t.PROJECTIONS.items() for table in tables)
TABLE_NAMES: tuple[str, ...] = tuple(str(table.name) for _name, table in TABLES)
TABLE_BY_NAME: dict[str, sa.Table] = {str(table.name): table for _name, table in TABLES}
_RUN_COLUMNS = ["run_number", "namespace"]
_RUN_KEYED = frozenset(str(table.name) for _name, table in TABLES
                       if table.c.keys()[:2] == _RUN_COLUMNS)


def key_width(table: sa.Table) -> int:
    return len(table.primary_key.columns)


def columns_of(table: sa.Table) -> tuple[str, ...]:
    return tuple(str(column.name) for column in table.columns)


# -- folding ---------------------------------------------------------------------------------


def fold_execution(view: Snapshot, scope: Scope, limit: Limit,
                   progress: Progress | None = None, spill: Spill | None = None
                   ) -> tuple[Fold, int]:
    """Fold the events that determine the execution's rows (see ``source``); fills the scope's
    runs and agents. Returns the fold and how many events were folded. With a ``spill``, the
    fold keeps to the rebuild's memory budget (``projections.spill``): settled STF files, with
    their samples and slices, wait there as rows."""
    execution_id = scope.execution_id
    with quiet_gc():
        fold, count = _fold(view, scope, limit, (), progress, spill)
        scope.runs = {(run, ns) for ns, run in fold.runs}
        scope.foreign_executions, foreign = view.foreign_run_rows(
            execution_id, scope.run_numbers, limit)
        if foreign:  # which execution owns a run follows position order: fold again, merged
            log.info("runs of %s have %d events of other executions (%s); folding them in",
                     execution_id, len(foreign), ", ".join(scope.foreign_executions))
            if spill is not None:
                spill.close()  # (what the first fold wrote aside: emptied)
            fold, count = _fold(view, scope, limit, foreign, None, spill)
            scope.runs = {(run, ns) for ns, run in fold.runs}
        scope.agents = view.heartbeat_senders(execution_id, limit)
        beats = view.foreign_heartbeats(execution_id, {name for _ns, name in scope.agents},
                                            limit)
        if beats:  # runless and "latest wins" by time: their order does not matter
            count += fast.fold_rows(fold, view, beats)
        # stop_workflow naming no execution may stop this one: its status depends on them
        stops = view.namespace_stops({ns for _run, ns in scope.runs}, limit)
        if stops:
            count += fast.fold_rows(fold, view, stops)
        # an upstream runner's later execution ends this one if it never ended
        runners = {(e.ns, e.daq_sender) for e in fold.execs.values()
                   if e.execution_id == execution_id and e.daq_sender is not None}
        later = view.runner_announcements(runners, execution_id, limit)
        if later:
            count += fast.fold_rows(fold, view, later)
        scope.extra_positions = sorted(row[0] for row in (*foreign, *beats, *stops, *later))
    return fold, count


def _fold(view: Snapshot, scope: Scope, limit: Limit, extra: Sequence[Row],
          progress: Progress | None, spill: Spill | None) -> tuple[Fold, int]:
    fold = Fold(complete=True)
    fold.spill = spill
    count = 0
    engine = view.connection.engine
    if limit.position is not None and not extra and fast.can_read_ahead(engine):
        # Rows up to a position are committed for good: a connection of the reader's own reads
        # exactly the rows this snapshot would. Packed chunks (SQLite) are read with the GIL
        # released, beside the fold.
        for chunk in fast.read_ahead(_execution_chunks_apart(engine, scope.execution_id, limit)):
            count += fast.fold_chunk(fold, view, chunk)
            if spill is not None:
                keep_to_budget(fold, spill)
            if progress is not None:
                progress(len(chunk) if isinstance(chunk, list) else chunk.size)
        return fold, count
    own: Iterator[list[Row]] = view.execution_rows(scope.execution_id, limit)
    if limit.position is not None and fast.can_read_ahead(engine):
        own = fast.read_ahead(_execution_rows_apart(engine, scope.execution_id, limit))
    for rows in source.merged(own, extra):  # (other executions' rows merged by position)
        count += fast.fold_rows(fold, view, rows)
        if spill is not None:
            keep_to_budget(fold, spill)
        if progress is not None:
            progress(len(rows))
    return fold, count


def _execution_rows_apart(engine: sa.Engine, execution_id: str, limit: Limit
                          ) -> Iterator[list[Row]]:
    """The execution's fold rows within ``limit``, read on a connection of their own."""
    with engine.connect() as conn, scan_cache(conn), conn.begin():
        yield from Snapshot(conn).execution_rows(execution_id, limit)


def _execution_chunks_apart(engine: sa.Engine, execution_id: str, limit: Limit
                            ) -> Iterator[list[Row] | Packed]:
    """``_execution_rows_apart`` packed where the database can (``Reads.execution_chunks``)."""
    with engine.connect() as conn, scan_cache(conn), conn.begin():
        yield from Snapshot(conn).execution_chunks(execution_id, limit, fast.CHUNK)


def rendered(fold: Fold, fresh: bool = True, consume: bool = False) -> dict[str, list[Row]]:
    """Every row of the fold, per table name, as the projector would write them. ``fresh``: the
    fold was never rendered before (the rebuild's fast path); ``consume``: nor is it used
    after (see ``derive.render``)."""
    if not fresh:
        everything(fold)
    changes = render(fold, NAMES, fresh=fresh, consume=consume)
    if not fresh:
        flushed(fold)
    return {str(table.name): rows for table, rows in changes.upserts.items()}


def in_scope(name: str, rows: Sequence[Row], scope: Scope) -> list[Row]:
    """The rows of table ``name`` that belong to the execution."""
    execution_id, runs = scope.execution_id, scope.runs
    if name == "executions":
        return [row for row in rows if row[1] == execution_id]
    if name == "run_state":
        return [row for row in rows if (row[0], row[1]) in runs or row[2] == execution_id]
    if name in _RUN_KEYED:
        return [row for row in rows if (row[0], row[1]) in runs]
    if name == "agents":
        return [row for row in rows if (row[0], row[1]) in scope.agents]
    if name == "logs":
        return [row for row in rows if row[7] == execution_id]
    if name == "workflow_commands":
        return [row for row in rows if row[4] == execution_id]
    if name == "workflow_definitions":  # belong to no execution (several share one)
        return []
    raise ValueError(f"no scope rule for table {name}")


def rebuilt_rows(fold: Fold, scope: Scope, fresh: bool = True, consume: bool = False
                 ) -> dict[str, list[Row]]:
    everything_rows = rendered(fold, fresh, consume)
    return {name: in_scope(name, everything_rows.get(name, ()), scope) for name in TABLE_NAMES}


# -- stored rows -----------------------------------------------------------------------------


def read_stored(conn: sa.Connection, scope: Scope) -> dict[str, list[Row]]:
    """The stored rows of the execution's scope, per table (same rules as ``in_scope``)."""
    return {name: stored_table(conn, scope, name) for name in TABLE_NAMES}


@dataclass(slots=True)
class Aside:
    """A table's rebuilt rows that are not all in memory: the ones written aside in ``spill``
    and those the fold still held (``rows``)."""
    spill: Spill
    rows: list[Row]

    def ordered(self, table: sa.Table, bools: bool = True) -> Iterator[Row]:
        """All of them in key order (booleans: see ``Spill.rows``)."""
        self.rows.sort()
        return heapq.merge(self.rows, self.spill.rows(table, bools))


class StoredTables(Mapping[str, list[Row]]):
    """``read_stored``, each table read when asked for and not kept: ``diff_tables`` compares
    one table at a time, so one table's stored rows are in memory at once, not all of them."""

    def __init__(self, conn: sa.Connection, scope: Scope) -> None:
        self._conn = conn
        self._scope = scope
        self._written: dict[str, Written | None] = {}  # see prefetch
        self._writer: threading.Thread | None = None
        self._problem: BaseException | None = None

    def prefetch(self, skip: Collection[str] = ()) -> None:
        """Have SQLite write the tables as JSON (``stored_json``) in a thread while the caller
        goes on (renders): SQLite does it with the GIL released, on the second core. The
        caller leaves the connection alone until it calls ``same``; the JSON is kept until
        then (a fifth of what the rows it stands for take as Python objects). Tables in
        ``skip`` are left for ``diff_aside``, which streams them."""
        def write() -> None:
            try:
                with scan_cache(self._conn):  # (each page is read once)
                    for name in TABLE_NAMES:
                        if name not in skip:
                            self._written[name] = stored_json(self._conn, self._scope, name)
            except BaseException as problem:  # raised by the caller's thread, in same()
                self._problem = problem

        self._writer = threading.Thread(target=write, name="swf-stored-json", daemon=True)
        self._writer.start()

    def __getitem__(self, name: str) -> list[Row]:
        if name not in TABLE_BY_NAME:
            raise KeyError(name)
        return stored_table(self._conn, self._scope, name)

    def __iter__(self) -> Iterator[str]:
        return iter(TABLE_NAMES)

    def __len__(self) -> int:
        return len(TABLE_NAMES)

    def wait(self) -> None:
        """Until ``prefetch``'s thread is done with the connection."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None

    def same(self, name: str, rows: Sequence[Row]) -> bool:
        """Whether the stored rows of table ``name`` are ``rows`` (see ``same_as_stored``)."""
        self.wait()
        if self._problem is not None:
            raise self._problem
        if name in self._written:
            return same_as_stored(self._conn, self._scope, name, rows, self._written.pop(name))
        return same_as_stored(self._conn, self._scope, name, rows)

    def diff_aside(self, name: str, aside: Aside) -> TableDiff:
        """The stored rows of table ``name`` against the rebuilt ones, most of them written
        ``aside``; neither side is held in memory. On SQLite the stored rows are written as
        JSON by SQLite, piece by piece (``json_pieces``), and compared with orjson's of the
        rebuilt rows in the same pieces; should any differ, and on PostgreSQL, the rows are
        compared one by one, read in key order from both (``merged_diff``)."""
        self.wait()
        if self._problem is not None:
            raise self._problem
        table = TABLE_BY_NAME[name]
        conn, scope = self._conn, self._scope
        with scan_cache(conn):  # (each page is read once: at 5M events the usual cache
            # would fill to its 256 MB)
            if conn.dialect.name == "sqlite":
                # SQLite writes the stored pieces in a thread (the GIL released: on two cores
                # beside the merge and orjson here), on the connection this thread leaves
                # alone until the thread is done (``closing`` joins it).
                with closing(fast.read_ahead(json_pieces(conn, scope, name), 2)) as theirs:
                    try:
                        count = _written_as(aside.ordered(table), theirs)
                    except _Unsure:
                        count = None
                if count is not None:
                    return TableDiff(name, count, count)
            return merged_diff(name, aside.ordered(table, bools=False),
                               stored_in_key_order(conn, scope, name))


def _wheres(m: str, scope: Scope, name: str) -> list[tuple[str, tuple[Any, ...]]]:
    """The conditions (and their parameters) selecting table ``name``'s rows of the scope."""
    if name in ("executions", "logs", "workflow_commands"):
        return [(f"execution_id = {m}", (scope.execution_id,))]
    wheres: list[tuple[str, tuple[Any, ...]]] = []
    if name in _RUN_KEYED:
        wheres = [(f"run_number = {m} AND namespace = {m}", (run, ns))
                  for run, ns in sorted(scope.runs)]
        if name == "run_state":
            wheres.append((f"execution_id = {m}", (scope.execution_id,)))
    elif name == "agents":
        wheres = [(f"namespace = {m} AND name = {m}", (ns, agent))
                  for ns, agent in sorted(scope.agents)]
    return wheres  # workflow_definitions: none (see in_scope)


def stored_table(conn: sa.Connection, scope: Scope, name: str) -> list[Row]:
    """The stored rows of table ``name`` in the execution's scope."""
    select, m = _select_all(conn, name)
    rows: list[Row] = []
    for where, params in _wheres(m, scope, name):
        rows.extend(_fetch(conn, f"{select} WHERE {where}", params))
    return _normal(TABLE_BY_NAME[name], rows)


def _select_all(conn: sa.Connection, name: str) -> tuple[str, str]:
    """(SELECT of every column of table ``name``, the driver's parameter mark)."""
    quote = conn.dialect.identifier_preparer.quote
    columns = ", ".join(quote(c) for c in columns_of(TABLE_BY_NAME[name]))
    return (f"SELECT {columns} FROM {quote(name)}",
            "?" if conn.dialect.paramstyle == "qmark" else "%s")


def same_as_stored(conn: sa.Connection, scope: Scope, name: str, rows: Sequence[Row],
                   written: Written | None | bool = True) -> bool:
    """Whether the stored rows of table ``name`` in the scope are exactly ``rows``, judged
    without making Python objects of them (most of a replay's compare): SQLite writes them as
    JSON in key order (``stored_json``; ``written``: what it wrote, if asked before), compared
    byte for byte with ``rows`` sorted and written by orjson. False when unsure - values
    written another way (a boolean other than 0/1, a float in an integer column, an escape),
    rows that do not sort, a table ``stored_json`` does not write - the rows are then read and
    compared as usual."""
    if written is True:
        written = stored_json(conn, scope, name)
    if not isinstance(written, tuple):
        return False
    count, pieces = written
    if count != len(rows):
        return False
    # Keys lead each row and are unique: sorted rows are in key order (a fresh fold's usually
    # are already: rendered in creation order).
    return (_written_as(iter(rows), pieces) is not None
            or _written_as(iter(sorted(rows)), pieces) is not None)


def _written_as(rows: Iterator[Row], pieces: Iterable[tuple[int, bytes]]) -> int | None:
    """How many ``rows`` there are, if orjson writes them, piece by piece, as SQLite wrote the
    stored ones (``json_pieces``); None from the first piece that differs."""
    written = 0
    try:
        for count, piece in pieces:
            part = list(islice(rows, count))
            if len(part) != count or orjson.dumps(part)[1:-1] != piece:  # (no brackets)
                return None
            written += count
    except (TypeError, orjson.JSONEncodeError):
        return None
    return written if next(rows, None) is None else None


def stored_json(conn: sa.Connection, scope: Scope, name: str) -> Written | None:
    """(how many, the JSON of each piece of them) of the stored rows of table ``name`` in the
    scope (``json_pieces``); or None: not SQLite, or the rows do not write as JSON."""
    if conn.dialect.name != "sqlite":
        return None
    try:
        pieces = list(json_pieces(conn, scope, name))
    except _Unsure:
        return None
    return sum(found for found, _piece in pieces), pieces


class _Unsure(Exception):
    """The rows cannot be written as JSON that compares (see ``json_pieces``)."""


def json_pieces(conn: sa.Connection, scope: Scope, name: str) -> Iterator[tuple[int, bytes]]:
    """(how many rows, their JSON values joined by commas) of the rows of table ``name`` in the
    scope, written by SQLite (``conn``: a SQLite store's) in key order, JSON_PIECE_ROWS a
    piece. Raises ``_Unsure``: run_state (read twice over), a float column (SQLite writes 15
    digits), a value JSON cannot hold, a key with a NULL."""
    table = TABLE_BY_NAME[name]
    quote = conn.dialect.identifier_preparer.quote
    if name == "run_state" or any(isinstance(column.type, (sa.Float, sa.Numeric))
                                  for column in table.columns):
        raise _Unsure(name)
    columns = [quote(str(column.name)) for column in table.primary_key.columns]
    key = ", ".join(columns)
    values = ", ".join(_as_json(quote(str(column.name)), column) for column in table.columns)
    # Pieces are bounded by the key's columns after the run's (its where fixes those: SQLite
    # takes a range over the rest from the primary key, not over the whole key). Tables whose
    # key does not begin with the run's columns are written in one piece.
    by_run = [str(column.name) for column in table.primary_key.columns][:2] == _RUN_COLUMNS
    rest = ", ".join(columns[2:]) if name in _RUN_KEYED and by_run else ""
    marks = ", ".join("?" * len(columns[2:]))
    try:
        for where, params in _wheres("?", scope, name):
            last: Row = ()  # the rest of the key of the previous piece's last row
            while True:  # a piece: the rows after ``last`` up to the JSON_PIECE_ROWS-th
                rows_after = f"{where} AND ({rest}) > ({marks})" if last else where
                bound = _fetch(conn, f"SELECT {rest} FROM {quote(name)} WHERE {rows_after} "
                               f"ORDER BY {key} LIMIT 1 OFFSET {JSON_PIECE_ROWS - 1}",
                               (*params, *last)) if rest else []
                if bound and None in bound[0]:
                    raise _Unsure(name)  # (NULL compares as nothing: the pieces would miss it)
                upto = f" AND ({rest}) <= ({marks})" if bound else ""
                found, piece = _fetch(conn, (
                    f"SELECT count(*), CAST(group_concat(j, ',') AS BLOB) FROM (SELECT "
                    f"json_array({values}) AS j FROM {quote(name)} WHERE {rows_after}{upto} "
                    f"ORDER BY {key})"), (*params, *last, *(bound[0] if bound else ())))[0]
                if found:
                    yield found, piece
                if not bound:
                    break
                last = tuple(bound[0])
    except sa.exc.DBAPIError as problem:  # (a BLOB: compared row by row)
        raise _Unsure(name) from problem


def _as_json(name: str, column: sa.Column[Any]) -> str:
    """A column's value as ``json_array`` should write it to equal orjson's of the rendered
    value; anything else makes the rows differ (they are then compared one by one)."""
    if isinstance(column.type, sa.Boolean):  # stored as 0/1, rendered as False/True
        return f"CASE {name} WHEN 1 THEN json('true') WHEN 0 THEN json('false') ELSE {name} END"
    if isinstance(column.type, sa.Integer):  # a float here must not be written as an integer
        return f"CASE typeof({name}) WHEN 'real' THEN json_array({name}) ELSE {name} END"
    return name


def _fetch(conn: sa.Connection, sql: str, params: Sequence[Any]) -> list[Row]:
    return cast(list[Row], conn.exec_driver_sql(sql, tuple(params)).cursor.fetchall())


def stored_in_key_order(conn: sa.Connection, scope: Scope, name: str) -> Iterator[Row]:
    """The stored rows of table ``name`` in the scope, in key order as Python sorts the keys
    (text by code point: PostgreSQL's "C" collation), a batch in memory at a time (PostgreSQL:
    a server-side cursor). For tables keyed by run first: its wheres come in key order too."""
    assert name in _RUN_KEYED and name != "run_state", name
    postgres = conn.dialect.name == "postgresql"
    select, m = _select_all(conn, name)
    quote = conn.dialect.identifier_preparer.quote
    key = ", ".join(
        f'{quote(str(column.name))} COLLATE "C"'
        if postgres and isinstance(column.type, sa.String) else quote(str(column.name))
        for column in TABLE_BY_NAME[name].primary_key.columns)
    for where, params in _wheres(m, scope, name):
        result = conn.exec_driver_sql(f"{select} WHERE {where} ORDER BY {key}", params,
                                      execution_options={"stream_results": postgres})
        for batch in result.partitions(10_000):
            yield from map(tuple, batch)


def _normal(table: sa.Table, rows: list[Row]) -> list[Row]:
    """One row per key (run_state is read by run and by execution). Values are compared as the
    database returns them: SQLite's 0/1 for a boolean equals False/True (``shown`` converts)."""
    if str(table.name) == "run_state":
        width = key_width(table)
        return list({row[:width]: row for row in rows}.values())
    return rows


def shown(name: str, row: Row) -> Row:
    """A row as the fold renders it, for output (booleans as booleans)."""
    table = TABLE_BY_NAME[name]
    return tuple(bool(value) if value is not None and isinstance(column.type, sa.Boolean)
                 else value for column, value in zip(table.columns, row, strict=True))


def rows_from_dicts(tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, list[Row]]:
    """Row dicts (a fixture's expected projections) -> rows in column order. Every table of
    the file counts; a column the file lacks is None, so it shows as a difference."""
    out: dict[str, list[Row]] = {}
    for name, rows in tables.items():
        table = TABLE_BY_NAME.get(name)
        if table is None:
            raise ValueError(f"unknown projection table {name!r}")
        names = columns_of(table)
        out[name] = [tuple(row.get(column) for column in names) for row in rows]
    return out


def rows_to_dicts(name: str, rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Rows as objects keyed by column, in key order, values as the fold renders them."""
    table = TABLE_BY_NAME[name]
    names = columns_of(table)
    width = key_width(table)
    return [dict(zip(names, shown(name, row), strict=True))
            for row in sorted(rows, key=lambda r: r[:width])]


# -- comparing -------------------------------------------------------------------------------


@dataclass(slots=True)
class TableDiff:
    name: str
    rebuilt: int
    stored: int
    missing: list[Row] = field(default_factory=list)  # rebuilt, not stored
    extra: list[Row] = field(default_factory=list)  # stored, not rebuilt
    changed: list[tuple[Row, Row]] = field(default_factory=list)  # (stored, rebuilt)

    @property
    def identical(self) -> bool:
        return not (self.missing or self.extra or self.changed)


@dataclass(slots=True)
class Comparison:
    execution_id: str
    events: int  # folded
    covered: dict[str, int]  # projection -> the log position its stored tables cover
    tables: list[TableDiff]
    foreign_executions: list[str] = field(default_factory=list)
    lag: int = 0  # events in the log after the lowest covered position

    @property
    def identical(self) -> bool:
        return all(diff.identical for diff in self.tables)


def diff_tables(rebuilt: Mapping[str, Sequence[Row]], stored: Mapping[str, Sequence[Row]],
                aside: Mapping[str, Aside] | None = None) -> list[TableDiff]:
    """Per table, the rebuilt rows against the stored ones; the rebuilt rows of the tables in
    ``aside`` are mostly in a spill (``stored`` must then be ``StoredTables``)."""
    diffs = []
    names = list(TABLE_NAMES)
    names += sorted(set(stored) - set(names))
    for name in names:
        if aside and name in aside:
            assert isinstance(stored, StoredTables), "rows aside are compared in the database"
            diffs.append(stored.diff_aside(name, aside[name]))
            continue
        table = TABLE_BY_NAME[name]
        width = key_width(table)
        ours = list(rebuilt.get(name, ()))
        if isinstance(stored, StoredTables) and stored.same(name, ours):
            diffs.append(TableDiff(name, len(ours), len(ours)))
            continue
        theirs = list(stored.get(name, ()))
        diff = TableDiff(name, len(ours), len(theirs))
        diffs.append(diff)
        try:  # the usual case, compared in C: rows start with their (unique) key
            if sorted(ours) == sorted(theirs):
                continue
        except TypeError:  # a key repeated (a hand-edited expected file): compared below
            pass
        mine = {row[:width]: row for row in ours}
        other: dict[Row, Row] = {}
        for row in theirs:
            if row[:width] in other:  # one key, two stored rows: the second is extra
                diff.extra.append(shown(name, row))
            else:
                other[row[:width]] = row
        for key in sorted(mine.keys() - other.keys(), key=_sortable):
            diff.missing.append(mine[key])
        for key in sorted(other.keys() - mine.keys(), key=_sortable):
            diff.extra.append(shown(name, other[key]))
        for key in sorted(mine.keys() & other.keys(), key=_sortable):
            if mine[key] != other[key]:
                diff.changed.append((shown(name, other[key]), mine[key]))
    return diffs


def merged_diff(name: str, ours: Iterator[Row], theirs: Iterator[Row]) -> TableDiff:
    """``diff_tables`` of one table whose rebuilt and stored rows both come in key order
    (neither is held in memory: a merge join). Equal batches are passed over whole (compared
    in C); from the first batch that differs, row by row. Rows are compared as given and
    reported as the fold renders them (booleans as booleans)."""
    rebuilt = stored = 0
    while True:
        mine_batch, other_batch = list(islice(ours, 5000)), list(islice(theirs, 5000))
        if mine_batch != other_batch:
            ours, theirs = chain(mine_batch, ours), chain(other_batch, theirs)
            break
        if not mine_batch:
            return TableDiff(name, rebuilt, stored)
        rebuilt += len(mine_batch)
        stored += len(other_batch)
    width = key_width(TABLE_BY_NAME[name])
    diff = TableDiff(name, rebuilt, stored)
    mine, other = next(ours, None), next(theirs, None)
    while mine is not None or other is not None:
        if other is None or (mine is not None and mine[:width] < other[:width]):
            diff.missing.append(shown(name, cast(Row, mine)))
            diff.rebuilt += 1
            mine = next(ours, None)
        elif mine is None or other[:width] < mine[:width]:
            diff.extra.append(shown(name, other))
            diff.stored += 1
            other = next(theirs, None)
        else:
            if mine != other:
                diff.changed.append((shown(name, other), shown(name, mine)))
            diff.rebuilt += 1
            diff.stored += 1
            mine, other = next(ours, None), next(theirs, None)
    return diff


def _sortable(key: Row) -> tuple[Any, ...]:
    return tuple((value is None, "" if value is None else value) for value in key)


def changed_columns(name: str, stored: Row, rebuilt: Row) -> dict[str, tuple[Any, Any]]:
    names = columns_of(TABLE_BY_NAME[name])
    return {column: (old, new) for column, old, new in zip(names, stored, rebuilt, strict=True)
            if old != new}


def compare(view: Snapshot, scope: Scope, stops: Mapping[str, int],
            stored: Callable[[Scope], Mapping[str, Sequence[Row]]],
            progress: Progress | None = None) -> Comparison:
    """Fold the execution up to each projection's covered position (``stops``: projection ->
    position; normally all equal, so one fold) and compare with the ``stored`` rows of the
    resulting scope, read by the callback once the scope is known. The fold keeps to the
    rebuild's memory budget: the STF, sample and slice rows it wrote aside are compared with the
    stored ones streamed (``StoredTables.diff_aside``), not in memory."""
    distinct = sorted(set(stops.values()))
    rebuilt: dict[str, list[Row]] = {}
    aside: dict[str, Aside] = {}  # table -> its rebuilt rows, most of them in a spill
    events = 0
    tables = None
    with quiet_gc(), ExitStack() as cleanup:  # (rendering and comparing make no cycles either)
        for stop in distinct:
            spill = cleanup.enter_context(closing(for_store(view.connection.engine)))
            fold, count = fold_execution(view, scope, Limit(position=stop), progress, spill)
            events = max(events, count)
            held = {str(table.name) for _owner, table in TABLES if spill.holds(table)}
            if len(distinct) == 1:  # the final scope is known: SQLite writes them as we render
                tables = stored(scope)
                if isinstance(tables, StoredTables):
                    tables.prefetch(skip=held)  # (done with the connection before it closes)
                    cleanup.callback(tables.wait)
            rows = rebuilt_rows(fold, scope, consume=True)
            del fold  # its records are not needed to compare: freed before the stored rows come
            owners = {name for name, at in stops.items() if at == stop}
            for owner, table in TABLES:
                name = str(table.name)
                if owner not in owners:
                    continue
                if name in held:
                    aside[name] = Aside(spill, rows.pop(name))
                else:
                    rebuilt[name] = rows[name]
            del rows
            progress = None  # one bar, for the first (usually only) fold
        final = stored(scope) if tables is None else tables
        if not isinstance(final, StoredTables):  # (expected rows of a file: compared in memory)
            for name, rows_aside in aside.items():
                rebuilt[name] = list(rows_aside.ordered(TABLE_BY_NAME[name]))
            aside = {}
        diffs = diff_tables(rebuilt, final, aside)
        del rebuilt, aside, final, tables  # freed before the collector is back (quiet_gc)
    return Comparison(scope.execution_id, events, dict(stops), diffs,
                      list(scope.foreign_executions))
