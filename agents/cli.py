"""The ``swf`` command: one click group; each area adds its commands from its own module."""

from __future__ import annotations

import logging
import sys

import click

from eventstore.errors import SchemaTooNew, StoreUnavailable

DB_OPTION_HELP = "Database URL (default: $SWF_DB or sqlite:///swf.db)."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """swf: the event-sourced ePIC streaming workflow testbed."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def db_option(function):  # noqa: ANN001, ANN201 - decorator
    return click.option("--db", "db_url", envvar="SWF_DB", default=None, help=DB_OPTION_HELP)(
        function)


def run() -> None:
    """Console entry point: store problems are one line on stderr, not a traceback."""
    try:
        main.main(standalone_mode=False)
    except (StoreUnavailable, SchemaTooNew) as problem:
        click.echo(f"swf: {problem}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as problem:
        problem.show()
        sys.exit(problem.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)


# Command modules register themselves on import; keep this list sorted.
from agents.commands import (  # noqa: E402, F401
    live_commands,
    projection_commands,
    query_commands,
    run_commands,
    store_commands,
)
