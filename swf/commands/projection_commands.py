"""``swf projections status|rebuild|catch-up``: the projection tables' upkeep."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from eventstore.store import EventStore
from projections.projector import NAMES, Projector
from swf.commands.group import db_option, main
from swf.output import echo_json, echo_rows

PROGRESS_FROM = 50_000  # log positions; shorter folds finish before a bar is worth drawing


@main.group("projections")
def projections_group() -> None:
    """Projection tables: status, rebuild and catch-up."""


@projections_group.command("status")
@db_option
@click.option("--json", "as_json", is_flag=True, help="A JSON array of row objects.")
def projections_status(db_url: str | None, as_json: bool) -> None:
    """Each projection's checkpoint against the head of the log."""
    with EventStore(db_url) as store:
        rows = Projector(store).status()
    echo_rows(rows, ("name", "position", "head", "lag"), as_json)


@contextmanager
def _progress(label: str, length: int) -> Iterator[Callable[[int], None] | None]:
    if length < PROGRESS_FROM:
        yield None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


@projections_group.command("rebuild")
@db_option
@click.option("--name", "names", multiple=True, type=click.Choice(NAMES),
              help="Rebuild only this projection (repeatable; default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def projections_rebuild(db_url: str | None, names: tuple[str, ...], as_json: bool) -> None:
    """Empty projections and fold the whole log into them again."""
    with EventStore(db_url) as store:
        projector = Projector(store)
        began = time.perf_counter()
        with _progress("rebuilding", store.head()) as progress:
            folded = projector.rebuild(names or None, progress=progress)
        elapsed = time.perf_counter() - began
    rebuilt = list(names or NAMES)
    if as_json:
        echo_json({"projections": rebuilt, "events": folded, "seconds": round(elapsed, 3)})
    else:
        click.echo(f"rebuilt {', '.join(rebuilt)} from {folded} events "
                   f"in {elapsed:.2f} s ({folded / max(elapsed, 1e-9):,.0f} events/s)")


@projections_group.command("catch-up")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def projections_catch_up(db_url: str | None, as_json: bool) -> None:
    """Apply the events recorded since the projections' checkpoints."""
    with EventStore(db_url) as store:
        projector = Projector(store)
        behind = store.head() - min(projector.checkpoints().values())
        with _progress("catching up", behind) as progress:
            applied = projector.catch_up(progress=progress)
    if as_json:
        echo_json({"applied": applied})
    else:
        click.echo(f"applied {applied} events")
