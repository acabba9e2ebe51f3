"""``swf db upgrade``, ``swf import`` and ``swf query messages|rejected``: the raw event log."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from eventstore.envelope import TOPIC, Event, Incoming
from eventstore.store import EventStore
from swf.commands.group import db_option, main
from swf.commands.options import time_window_options
from swf.commands.query_commands import query
from swf.output import echo_json, echo_rows

IMPORT_BATCH = 5000
MESSAGE_COLUMNS = ("position", "time", "msg_type", "sender", "run_id", "execution_id",
                   "destination", "status")
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
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def import_messages(path: Path, db_url: str | None, as_json: bool) -> None:
    """Append the messages of a JSON Lines file to the store.

    Each line is a message object, or {"destination": ..., "headers": {...}, "body": <object or
    string>}. Lines that are not valid messages are stored as rejected (and counted as appended
    too); importing the same file again appends nothing.
    """
    counts = {"appended": 0, "duplicates": 0, "rejected": 0}
    with EventStore(db_url) as store, path.open("rb") as lines, click.progressbar(
            length=path.stat().st_size, label="importing", file=sys.stderr,
            hidden=not sys.stderr.isatty()) as bar:
        batch: list[Incoming] = []
        for line in lines:
            bar.update(len(line))
            if line.strip():
                batch.append(incoming_from_line(line))
            if len(batch) >= IMPORT_BATCH:
                _append(store, batch, counts)
                batch = []
        _append(store, batch, counts)
    if as_json:
        echo_json(counts)
    else:
        click.echo(f"appended {counts['appended']}, duplicates {counts['duplicates']}, "
                   f"rejected {counts['rejected']}")


def _append(store: EventStore, batch: list[Incoming], counts: dict[str, int]) -> None:
    if not batch:
        return
    result = store.append(batch)
    counts["appended"] += len(result.events)
    counts["duplicates"] += len(result.duplicates)
    counts["rejected"] += result.rejected


def incoming_from_line(line: bytes) -> Incoming:
    """One import line -> the message as a transport would have delivered it."""
    raw = line.rstrip(b"\r\n")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Incoming(TOPIC, raw)
    if isinstance(parsed, dict) and "body" in parsed and "msg_type" not in parsed:
        body = parsed["body"]
        headers = parsed.get("headers") or {}
        return Incoming(
            destination=str(parsed.get("destination") or TOPIC),
            body=body.encode() if isinstance(body, str) else orjson.dumps(body),
            headers={str(k): str(v) for k, v in headers.items()} if isinstance(
                headers, dict) else {})
    return Incoming(TOPIC, raw)


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


def _message_row(event: Event, full: bool) -> dict[str, Any]:
    body = event.body.decode("utf-8", errors="replace")
    return {
        "position": event.position, "event_id": event.event_id,
        "recorded_at": event.recorded_at, "sent_at": event.sent_at, "time": event.time,
        "destination": event.destination, "headers": event.headers,
        "msg_type": event.msg_type, "namespace": event.namespace,
        "execution_id": event.execution_id, "run_id": event.run_id, "sender": event.sender,
        "schema_version": event.schema_version, "valid": event.valid,
        "status": "ok" if event.valid else "rejected", "reject_reason": event.reject_reason,
        "body": body if full or len(body) <= 60 else body[:57] + "...",
    }
