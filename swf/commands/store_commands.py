"""``swf db upgrade``, ``swf import`` and ``swf query messages|rejected``: the raw event log."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import orjson
import sqlalchemy as sa

from eventstore.catalog import resolve_zone
from eventstore.envelope import TOPIC, Event, Incoming
from eventstore.errors import StoreUnavailable
from eventstore.store import EventStore
from swf.commands.group import db_option, load, main
from swf.commands.options import time_window_options
from swf.commands.query_commands import query
from swf.output import echo_json, echo_rows

IMPORT_BATCH = 20_000  # messages per append (transaction): fewer commits, each rewriting the
# random idempotency index pages it touched, made import ~10% faster than 5,000
MESSAGE_COLUMNS = ("position", "time", "msg_type", "sender", "run_id", "execution_id",
                   "destination", "status")  # status: ok, copy (of another agent's), rejected
JSON_MESSAGE_COLUMNS = ("position", "event_id", "recorded_at", "sent_at", "destination",
                        "headers", "msg_type", "namespace", "execution_id", "run_id", "sender",
                        "schema_version", "valid", "reject_reason", "body")
REJECTED_COLUMNS = ("position", "time", "destination", "msg_type", "sender", "reject_reason",
                    "body")


@main.group()
def db() -> None:
    """Database schema management."""


@db.command("upgrade")
@db_option
def db_upgrade(db_url: str | None) -> None:
    """Create or upgrade the schema of the store and of the projections."""
    with EventStore(db_url) as store:
        _upgrade_projections(store)
        click.echo(f"schema is current (head position {store.head()})")


def _upgrade_projections(store: EventStore) -> None:
    from projections.projector import Projector  # projections own their schema

    Projector(store)


@main.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@db_option
@click.option("--sender-zone", default=None,
              help="Time zone of the senders' naive local times (an IANA name such as "
                   "America/New_York; default: [store] sender_zone or $SWF_SENDER_ZONE, else "
                   "UTC). A naive time off the broker's timestamp header by a whole zone "
                   "offset is corrected whatever this says.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def import_messages(path: Path, db_url: str | None, sender_zone: str | None,
                    as_json: bool) -> None:
    """Append the messages of a JSON Lines file to the store.

    Each line is a message object, or {"destination": ..., "headers": {...}, "body": <object or
    string>}. Every line is accounted for: stored (as valid, or as rejected with the reason:
    anything that is not a valid message), a duplicate of a stored one, or blank. Importing
    the same file again appends nothing.
    """
    if sender_zone is None:
        sender_zone = load().store.sender_zone
    try:
        zone = resolve_zone(sender_zone)
    except ValueError as problem:
        raise click.BadParameter(str(problem), param_hint="--sender-zone") from None
    counts = {"lines": 0, "blank": 0, "appended": 0, "valid": 0, "rejected": 0,
              "duplicates": 0}
    with _few_collections():
        _import(path, db_url, zone, counts)
    if as_json:
        echo_json(counts)
    else:
        click.echo(f"{counts['lines']} lines: appended {counts['appended']} "
                   f"({counts['valid']} valid, {counts['rejected']} rejected), "
                   f"duplicates {counts['duplicates']}, blank {counts['blank']}")


@contextmanager
def _few_collections() -> Iterator[None]:
    """Run the cyclic garbage collector rarely: an import allocates millions of objects (each
    batch's events) that reference counting frees, and the collector they trigger only walks
    them (13% of an import of 100k messages, measured; 2% with these thresholds)."""
    thresholds = gc.get_threshold()
    gc.freeze()  # what is alive now (modules, the store) is never walked again
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _import(path: Path, db_url: str | None, zone: Any, counts: dict[str, int]) -> None:
    with EventStore(db_url, sender_zone=zone) as store, path.open("rb") as lines, \
            click.progressbar(length=path.stat().st_size, label="importing", file=sys.stderr,
                              hidden=not sys.stderr.isatty()) as bar:
        batch: list[Incoming] = []
        for line in lines:
            bar.update(len(line))
            counts["lines"] += 1
            if line.strip():
                batch.append(incoming_from_line(line))
            else:
                counts["blank"] += 1
            if len(batch) >= IMPORT_BATCH:
                _append(store, batch, counts)
                batch = []
        _append(store, batch, counts)


def _append(store: EventStore, batch: list[Incoming], counts: dict[str, int]) -> None:
    if not batch:
        return
    try:
        result = store.append(batch)
    except (sa.exc.SQLAlchemyError, StoreUnavailable) as problem:
        done = counts["appended"] + counts["duplicates"] + counts["blank"]
        raise click.ClickException(
            f"the store failed after {done} of the lines read so far were accounted for "
            f"(the batch of {len(batch)} was not stored): {_first_line(problem)}") from None
    counts["appended"] += len(result.events)
    counts["duplicates"] += len(result.duplicates)
    counts["rejected"] += result.rejected
    counts["valid"] += len(result.events) - result.rejected


def _first_line(problem: BaseException) -> str:
    text = str(problem).strip()
    return text.splitlines()[0] if text else type(problem).__name__


def incoming_from_line(line: bytes) -> Incoming:
    """One import line -> the message as a transport would have delivered it. Never raises:
    a line that is not a readable wrapper is the message itself (the catalog says why it is
    not valid, when it is not)."""
    raw = line.rstrip(b"\r\n")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Incoming(TOPIC, raw)
    if not (isinstance(parsed, dict) and "body" in parsed and "msg_type" not in parsed):
        return Incoming(TOPIC, raw)
    try:
        body = parsed["body"]
        destination = parsed.get("destination")
        return Incoming(
            destination=destination if isinstance(destination, str) and destination else TOPIC,
            body=body.encode() if isinstance(body, str) else orjson.dumps(body),
            headers=_headers(parsed.get("headers")))
    except (TypeError, ValueError, orjson.JSONEncodeError, UnicodeError, RecursionError):
        return Incoming(TOPIC, raw)  # e.g. a body nested too deeply to encode again


def _headers(value: Any) -> dict[str, str]:
    """STOMP headers are text: scalars as text, anything else as its JSON."""
    if not isinstance(value, dict):
        return {}
    headers = {}
    for name, item in value.items():
        if isinstance(item, str):
            headers[name] = item
        elif item is None or isinstance(item, bool | int | float):
            headers[name] = orjson.dumps(item).decode()
        else:
            headers[name] = orjson.dumps(item).decode()  # may raise: the caller falls back
    return headers


@query.command("messages")
@db_option
@click.option("--execution-id", help="Only this execution.")
@click.option("--run", "run_id", type=int, help="Only this run number.")
@click.option("--msg-type", help="Only this message type.")
@click.option("--namespace", help="Only this namespace.")
@time_window_options
@click.option("--limit", type=int, default=None, help="At most this many rows.")
@click.option("--json", "as_json", is_flag=True, help="JSON array of row objects.")
def query_messages(db_url: str | None, execution_id: str | None, run_id: int | None,
                   msg_type: str | None, namespace: str | None, since: str | None,
                   until: str | None, limit: int | None, as_json: bool) -> None:
    """Every stored message, valid or not, in position order."""
    with EventStore(db_url) as store:
        events = store.read(execution_id=execution_id, run_id=run_id,
                            msg_types=[msg_type] if msg_type else None, namespace=namespace,
                            since=since, until_time=until, limit=limit)
        columns = JSON_MESSAGE_COLUMNS if as_json else MESSAGE_COLUMNS
        echo_rows((_message_row(event, as_json) for event in events), columns, as_json)


@query.command("rejected")
@db_option
@click.option("--execution-id", help="Only this execution.")
@time_window_options
@click.option("--limit", type=int, default=None, help="At most this many rows.")
@click.option("--json", "as_json", is_flag=True, help="JSON array of row objects.")
def query_rejected(db_url: str | None, execution_id: str | None, since: str | None,
                   until: str | None, limit: int | None, as_json: bool) -> None:
    """Messages stored as invalid, with the reason."""
    with EventStore(db_url) as store:
        events = store.read(execution_id=execution_id, valid=False, since=since,
                            until_time=until, limit=limit)
        echo_rows((_message_row(event, as_json) for event in events), REJECTED_COLUMNS,
                  as_json)


def _status(event: Event) -> str:
    if not event.valid:
        return "rejected"
    if event.data is not None and event.data.get("forwarded"):
        return "copy"  # a forwarded copy of another agent's message: the same fact
    return "ok"


def _message_row(event: Event, full: bool) -> dict[str, Any]:
    body = event.body.decode("utf-8", errors="replace")
    return {
        "position": event.position, "event_id": event.event_id,
        "recorded_at": event.recorded_at, "sent_at": event.sent_at, "time": event.time,
        "destination": event.destination, "headers": event.headers,
        "msg_type": event.msg_type, "namespace": event.namespace,
        "execution_id": event.execution_id, "run_id": event.run_id, "sender": event.sender,
        "schema_version": event.schema_version, "valid": event.valid,
        "status": _status(event), "reject_reason": event.reject_reason,
        "body": body if full or len(body) <= 60 else body[:57] + "...",
    }
