"""Fixture files: a recorded execution as JSON Lines, plus its expected projections.

``NAME.jsonl``: one stored event per line, every column as stored (``STORED_COLUMNS``),
keys sorted; ``body`` is the raw body as a JSON string when it is valid UTF-8, else
``{"base64": ...}``; ``headers`` the STOMP headers object. Loading a fixture inserts the rows as
they are (same positions, event ids and store times), so a replay of the fixture is a replay of
the store it came from.

``NAME.expected.json``: ``{"execution_id", "format", "scenario", "events", "position",
"projections": {table: [row objects in key order]}}`` - the stored projection rows of the
execution when it was exported (``scenario``: the recipe in ``replay.scenarios`` that records
it again, or null). Both files are deterministic: the same execution gives the same bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from eventstore.identity import as_stored
from eventstore.store import EventStore, Snapshot

from . import rebuild
from .rebuild import TABLE_NAMES, Comparison, Row, rows_to_dicts
from .source import STORED_COLUMNS, Scope

FORMAT = 1
EVENTS_SUFFIX = ".jsonl"
EXPECTED_SUFFIX = ".expected.json"
_JSON = orjson.OPT_SORT_KEYS
_PRETTY = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2


class FixtureError(ValueError):
    """A fixture file is missing, malformed or inconsistent; the message says where."""


@dataclass(slots=True)
class Fixture:
    path: Path  # the events file
    rows: list[Row]  # events as stored, STORED_COLUMNS order (headers as bytes)
    expected: dict[str, Any]  # the expected file's object

    @property
    def execution_id(self) -> str:
        return str(self.expected["execution_id"])

    @property
    def position(self) -> int:
        return self.rows[-1][0] if self.rows else 0

    @property
    def name(self) -> str:
        return self.path.name[: -len(EVENTS_SUFFIX)]


def paths(path: str | Path) -> tuple[Path, Path]:
    """(events file, expected file) for ``NAME.jsonl``, ``NAME.expected.json`` or ``NAME``."""
    text = str(path)
    for suffix in (EVENTS_SUFFIX, EXPECTED_SUFFIX):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    return Path(text + EVENTS_SUFFIX), Path(text + EXPECTED_SUFFIX)


# -- writing ---------------------------------------------------------------------------------


def event_line(row: Sequence[Any]) -> bytes:
    values = dict(zip(STORED_COLUMNS, row, strict=True))
    body = bytes(values["body"])
    try:
        values["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        values["body"] = {"base64": base64.b64encode(body).decode("ascii")}
    headers = values["headers"]
    values["headers"] = orjson.loads(bytes(headers)) if headers is not None else {}
    return orjson.dumps(values, option=_JSON) + b"\n"


def expected_object(execution_id: str, rows: Sequence[Row], projections: Mapping[str, Any],
                    scenario: str | None) -> dict[str, Any]:
    return {"format": FORMAT, "execution_id": execution_id, "scenario": scenario,
            "events": len(rows), "position": rows[-1][0] if rows else 0,
            "projections": {name: rows_to_dicts(name, projections.get(name, ()))
                            for name in TABLE_NAMES}}


def write(path: str | Path, rows: Sequence[Row], expected: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write both files (the events as given, in position order)."""
    events_path, expected_path = paths(path)
    events_path.parent.mkdir(parents=True, exist_ok=True)
    events_path.write_bytes(b"".join(event_line(row) for row in rows))
    write_expected(expected_path, expected)
    return events_path, expected_path


def write_expected(path: Path, expected: Mapping[str, Any]) -> None:
    path.write_bytes(orjson.dumps(dict(expected), option=_PRETTY) + b"\n")


def export(view: Snapshot, execution_id: str, stops: Mapping[str, int],
           stored: Callable[[Scope], Mapping[str, Sequence[Row]]], scenario: str | None,
           also: Iterable[int] = ()) -> tuple[list[Row], dict[str, Any], Comparison]:
    """The execution as a fixture: (its events as stored, plus those at positions ``also``,
    the expected-file object with the stored projection rows, the comparison of those with a
    rebuild from the log)."""
    scope = Scope(execution_id)
    comparison = rebuild.compare(view, scope, stops, stored)
    rows = view.export_rows(execution_id, max(stops.values()), [*scope.extra_positions, *also])
    expected = expected_object(execution_id, rows, stored(scope), scenario)
    return rows, expected, comparison


# -- reading ---------------------------------------------------------------------------------


def load(path: str | Path) -> Fixture:
    events_path, expected_path = paths(path)
    if not events_path.is_file():
        raise FixtureError(f"{events_path.name}: no such fixture file")
    if not expected_path.is_file():
        raise FixtureError(f"{expected_path.name}: the fixture has no expected projections "
                           f"(regenerate it with --update)")
    rows = [_decode(line, number, events_path.name)
            for number, line in enumerate(events_path.read_bytes().splitlines(), 1)
            if line.strip()]
    try:
        expected = orjson.loads(expected_path.read_bytes())
    except orjson.JSONDecodeError as problem:
        raise FixtureError(f"{expected_path.name}: not JSON: {problem}") from None
    if not isinstance(expected, dict) or "execution_id" not in expected:
        raise FixtureError(f"{expected_path.name}: not an expected-projections object")
    if expected.get("format") != FORMAT:
        raise FixtureError(f"{expected_path.name}: format {expected.get('format')!r}, "
                           f"this code reads format {FORMAT}")
    positions = [row[0] for row in rows]
    if positions != sorted(set(positions)):
        raise FixtureError(f"{events_path.name}: positions are not strictly increasing")
    return Fixture(events_path, rows, expected)


def _decode(line: bytes, number: int, name: str) -> Row:
    where = f"{name} line {number}"
    try:
        values = orjson.loads(line)
    except orjson.JSONDecodeError as problem:
        raise FixtureError(f"{where}: not JSON: {problem}") from None
    if not isinstance(values, dict):
        raise FixtureError(f"{where}: not an event object")
    missing = [column for column in STORED_COLUMNS if column not in values]
    if missing:
        raise FixtureError(f"{where}: missing {', '.join(missing)}")
    body = values["body"]
    if isinstance(body, str):
        raw = body.encode("utf-8")
    elif isinstance(body, dict) and isinstance(body.get("base64"), str):
        raw = base64.b64decode(body["base64"])
    else:
        raise FixtureError(f"{where}: body must be a string or {{\"base64\": ...}}")
    headers = values["headers"] or {}
    if not isinstance(headers, dict):
        raise FixtureError(f"{where}: headers must be an object")
    expected_id = as_stored(values["destination"], headers, raw, "").event_id
    if values["event_id"] != expected_id:
        raise FixtureError(f"{where}: event_id {values['event_id']!r} does not match the "
                           f"event (msg_id, message-id header or content hash: {expected_id!r})")
    values["body"] = raw
    values["headers"] = orjson.dumps(headers) if headers else b"{}"
    return tuple(values[column] for column in STORED_COLUMNS)


def scratch_store(rows: Sequence[Row]) -> EventStore:
    """An in-memory SQLite store holding exactly these stored events."""
    store = EventStore("sqlite://")
    store.restore(rows)
    return store


def into_store(url: str, fixture: Fixture) -> EventStore:
    """A store at ``url`` (empty) with the fixture's events inserted as stored (tests, tools)."""
    store = EventStore(url)
    try:
        if store.head():
            raise FixtureError("the target store is not empty")
        store.restore(fixture.rows)
    except BaseException:
        store.close()
        raise
    return store
