"""Rendering rows for people (aligned tables) and machines (JSON arrays), for all commands."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import click
import orjson


def echo_json(value: Any) -> None:
    """Deterministic JSON: sorted keys, so the same input always prints the same bytes."""
    click.echo(orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode())


def echo_rows(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    """Print rows as a JSON array of objects keyed by column name, or as an aligned table."""
    materialized = [{name: row.get(name) for name in columns} for row in rows]
    if as_json:
        echo_json(materialized)
        return
    if not materialized:
        click.echo("(no rows)")
        return
    cells = [[_cell(row[name]) for name in columns] for row in materialized]
    widths = [max(len(name), *(len(line[i]) for line in cells)) for i, name in enumerate(columns)]
    click.echo("  ".join(name.ljust(width) for name, width in zip(columns, widths, strict=True))
               .rstrip())
    click.echo("  ".join("-" * width for width in widths))
    for line in cells:
        click.echo("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
                   .rstrip())


def echo_mapping(values: Mapping[str, Any], as_json: bool) -> None:
    """A single record: 'key: value' lines, or one JSON object."""
    if as_json:
        echo_json(dict(values))
        return
    width = max((len(key) for key in values), default=0)
    for key, value in values.items():
        click.echo(f"{key.ljust(width)}  {_cell(value)}")


def echo_summary(summary: Mapping[str, Any], as_json: bool) -> None:
    """An execution summary (``projections.queries.execution_summary``), the one rendering shared
    by ``swf run`` and ``swf query execution``: JSON as is, or readable lines with the errors
    listed under their count."""
    if as_json:
        echo_json(dict(summary))
        return
    readable = dict(summary)
    readable["runs"] = ", ".join(str(run) for run in summary.get("runs") or ()) or None
    readable["datasets"] = "; ".join(
        f"{d['scope']}:{d['name']} {d['state'] or '-'} ({d['file_count']} files, "
        f"{d['size_bytes']} bytes)" for d in summary.get("datasets") or ()) or None
    readable["tasks"] = "; ".join(f"{t['task_id'] or '-'} {t['status']}"
                                  for t in summary.get("tasks") or ()) or None
    if "commands" in summary:
        readable["commands"] = "; ".join(
            f"{c['time']} {c['msg_type']}"
            + (f" {c['workflow_name']}" if c.get("workflow_name") else "")
            for c in summary["commands"]) or None
    errors = list(readable.pop("errors", None) or ())
    readable["errors"] = len(errors)
    echo_mapping(readable, False)
    for line in errors:
        click.echo(f"  {line}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
