"""Reading the log for the fold, fast.

``EventStore.read`` re-examines every body through the catalog (about 10 us an event), which
alone would cap a rebuild far below its 250k events/s target. The projector reads the columns it
needs with the store's ``fold_rows`` instead: rejected rows are skipped without decoding, and a
body already in the catalog's normalized shape (what our own senders write;
``catalog.needs_normalization`` decides, or decided at append: a row marked with today's
``canonical_revision`` skips the check, which costs as much as parsing) is only parsed.
Anything else - an upstream ``content`` wrapper, an aliased field, a checksum to normalize, an
older schema version - goes through
``catalog.examine`` exactly as ``read`` would (its body, destination and headers looked up by
position). The equivalence is tested against ``EventStore.read`` for every message form.

On SQLite a rebuild (and a replay, of its execution) reads packed chunks (``Reads.fold_packed``,
``Reads.execution_chunks``): SQLite lays a chunk's rows out as two JSON arrays with the GIL
released, so the read-ahead thread no longer competes with the fold for it (it did, building a
tuple per row: a read-ahead thread then saved nothing), and the fold parses each array in one
call. A chunk whose arrays do not parse (a body that would not embed) is read again row by row
(``Reads.packed_rows``: of the execution only, for a replay's). The marked bodies of slices and
their results come as arrays of the fields their handlers read (``reads.SLICE_FIELDS``,
``reads.RESULT_FIELDS``, extracted by SQLite): the handlers take a slice event's run, execution
and time from the row and never read its msg_id or sender, and parsing and freeing those cost
the fold's thread a third of its body work; an array is cheaper to parse than an object, and
its fields need no lookups.

Few columns are read: each text column costs a string object per row. msg_type, namespace and
sender come from the body (the catalog takes them from there too); execution_id is a column
because the store may have resolved it from the run.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from eventstore.catalog import SCHEMA_VERSION, examine, needs_normalization
from eventstore.reads import FoldRow, Packed, Reads

from .fold import Fold, Item

# Rows per round of a streaming fold, read as rows or packed (``Reads.fold_packed``): a round
# is also the memory budget's unit of time (``spill.WINDOW``), so both reads keep the same one.
# Packed chunks of 5,000 rebuilt 1M events 9-15% faster than chunks of 1,000 (less work per
# chunk, in both threads) and 5M events about 7% faster, for 2 and 8-12 MB more at the peak.
CHUNK = 5000
# Bodies of a chunk of rows parsed before they are folded: 5,000 parsed bodies outgrow the CPU
# caches, and the fold then runs a third slower. (A packed chunk is parsed whole: its slices and
# results come as short arrays.)
PARSED_AT_ONCE = 1000
READ_AHEAD_MIN = 4 * CHUNK  # fewer rows than this are not worth a thread
READ_AHEAD_DEPTH = 4  # chunks read ahead of the fold (bounds the memory it takes)
Row = FoldRow  # (position, run_id, schema_version, time, execution_id, body, canonical mark)


def _examined(view: Reads, position: int
              ) -> tuple[str, str, str | None, dict[str, Any]] | None:
    # (the row's body is read again with them: a packed chunk carries none)
    body, destination, headers = view.examine_inputs(position)
    verdict = examine(body, destination, headers=headers)
    if verdict.data is None or verdict.msg_type is None:
        return None  # today's catalog rejects what was accepted then: skip it
    return verdict.msg_type, verdict.namespace or "", verdict.sender, verdict.data


def _parsed(rows: list[Row]) -> list[dict[str, Any] | None]:
    """Each row's body parsed (None for another schema's: a REST payload)."""
    loads = orjson.loads  # (it reads PostgreSQL's memoryviews as they are)
    return [loads(row[5]) if row[2] == SCHEMA_VERSION else None for row in rows]


def unpacked(view: Reads, chunk: Packed) -> tuple[list[Any], list[Any]]:
    """A packed chunk's rows (each with no body) and parsed bodies (a slice's or result's as
    its fields, see ``fold_parsed``), in position order; read again row by row should a body
    not embed in the array (its parse then fails)."""
    try:
        rows, data = orjson.loads(chunk.rows), orjson.loads(chunk.bodies)
    except orjson.JSONDecodeError:
        rows = data = []
    if len(rows) != chunk.size or len(data) != chunk.size:
        rows = view.packed_rows(chunk)
        return rows, _parsed(rows)
    positions = [row[0] for row in rows]
    if positions != sorted(positions):  # (SQLite aggregates in the subquery's order)
        order = sorted(range(len(rows)), key=positions.__getitem__)
        rows, data = [rows[i] for i in order], [data[i] for i in order]
    return rows, data


def _decoded(view: Reads, rows: list[Any], parsed: list[dict[str, Any] | None]
             ) -> Iterator[Item]:
    """Each row as a fold item; rows the catalog rejects today are skipped."""
    for (position, run, version, time, execution_id, _body, marked), data in zip(
            rows, parsed, strict=True):
        if data is None or (not marked and needs_normalization(data, version, time)):
            found = _examined(view, position)
            if found is None:
                continue
            msg_type, ns, sender, data = found
        else:
            msg_type, ns, sender = data["msg_type"], data.get("namespace") or "", data.get(
                "sender") or None
        yield position, msg_type, ns, execution_id, run, sender, time, data


def decode(view: Reads, rows: list[Row]) -> list[Item]:
    """Rows -> fold items (kept as a list: catch-up looks at a batch before folding it)."""
    return list(_decoded(view, rows, _parsed(rows)))


def fold_rows(fold: Fold, view: Reads, rows: list[Row]) -> int:
    """Decode and fold; returns how many events were folded."""
    count = 0
    for start in range(0, len(rows), PARSED_AT_ONCE):
        part = rows[start:start + PARSED_AT_ONCE]
        count += fold_parsed(fold, view, part, _parsed(part))
    return count


def fold_chunk(fold: Fold, view: Reads, chunk: list[Row] | Packed) -> int:
    """``fold_rows`` of rows as read, or of a packed chunk."""
    if isinstance(chunk, list):
        return fold_rows(fold, view, chunk)
    return fold_parsed(fold, view, *unpacked(view, chunk))


def fold_parsed(fold: Fold, view: Reads, rows: list[Any], parsed: list[Any]) -> int:
    """Fold rows with their parsed bodies (a rebuild's hot loop: ``_decoded`` inlined, no tuple
    per event); returns how many events were folded. Same decisions as ``decode`` +
    ``Fold.feed``. A body that is a list is a marked slice or result with a run, as its
    msg_type, namespace and the fields of ``reads.SLICE_FIELDS`` or ``RESULT_FIELDS``."""
    handlers = fold.handlers
    slice_fields, result_fields = fold.slice_fields, fold.result_fields
    count = 0
    for (position, run, version, time, execution_id, _body, marked), data in zip(
            rows, parsed, strict=True):
        if type(data) is list:
            if data[0] == "slice":
                slice_fields(data[1] or "", execution_id, run, time, *data[2:])
                count += 1
                continue
            if data[2] is not None:  # (a result naming no slice: the fold reads all of it)
                result_fields(data[1] or "", execution_id, run, time, *data[2:])
                count += 1
                continue
            data = orjson.loads(view.examine_inputs(position)[0])
        if data is None or (not marked and needs_normalization(data, version, time)):
            found = _examined(view, position)
            if found is None:
                continue
            msg_type, ns, sender, data = found
        else:
            msg_type = data["msg_type"]
            handler = handlers.get(msg_type)
            if handler is not None and run is not None:  # the usual case
                handler(data.get("namespace") or "", execution_id, run, time, data)
                count += 1
                continue
            ns, sender = data.get("namespace") or "", data.get("sender") or None
        handler = handlers.get(msg_type)
        if handler is not None and run is not None:
            handler(ns, execution_id, run, time, data)
        else:
            fold.runless(position, msg_type, ns, execution_id, run, sender, time, data)
        count += 1
    if rows and rows[-1][0] > fold.position:
        fold.position = rows[-1][0]
    return count


class _Failed:
    def __init__(self, problem: BaseException) -> None:
        self.problem = problem


_END = object()


def can_read_ahead(engine: sa.Engine) -> bool:
    """Whether a second connection may read while this thread uses its own: not for one shared
    connection (an in-memory SQLite database)."""
    return not isinstance(engine.pool, StaticPool)


def read_ahead(chunks: Iterator[Any], depth: int = READ_AHEAD_DEPTH
               ) -> Generator[Any, None, None]:
    """``chunks`` produced by a thread of their own, at most ``depth`` ahead of the consumer.

    The database drivers release the GIL while the database works (SQLite steps through the
    b-tree, PostgreSQL sends rows), so on two cores the next chunks are read while this thread
    decodes and folds the current one. ``chunks`` must do its reads on connections of its own
    (not the caller's snapshot). An error in the reader is raised here; a consumer that stops
    early stops the reader."""
    handoff: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(_END)
        except BaseException as problem:  # handed to the consumer, raised there
            put(_Failed(problem))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:  # a generator left early gives its connection back here
                close()

    thread = threading.Thread(target=reader, name="swf-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.problem
            yield item
    finally:
        stop.set()
        thread.join()
