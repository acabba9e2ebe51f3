"""The ``swf`` click group and the options every command module shares.

Command modules import ``main`` from here and add their commands to it; ``swf.cli`` imports
them all. Nothing here imports a command module, so every module imports on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])

DB_OPTION_HELP = "Database URL (default: $SWF_DB or sqlite:///swf.db)."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """swf: the event-sourced ePIC streaming workflow testbed."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def db_option(function: F) -> F:
    return click.option("--db", "db_url", envvar="SWF_DB", default=None,
                        help=DB_OPTION_HELP)(function)
