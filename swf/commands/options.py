"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from eventstore.envelope import format_time, parse_time

F = TypeVar("F", bound=Callable[..., object])


def iso_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Accept any ISO-8601 time (naive = UTC) and return the store's one textual form."""
    if value is None:
        return None
    try:
        return format_time(parse_time(value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 time") from None


def time_window_options(function: F) -> F:
    """--since/--until on event time (the sender's timestamp, else the store's)."""
    function = click.option("--until", callback=iso_time,
                            help="Only events at or before this ISO-8601 time.")(function)
    return click.option("--since", callback=iso_time,
                        help="Only events at or after this ISO-8601 time.")(function)
