"""The ``swf`` console entry point: the click group, its command modules loaded on demand."""

from __future__ import annotations

import sys

import click

from eventstore.errors import SchemaTooNew, StoreUnavailable
from swf.commands.group import main


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


__all__ = ["main", "run"]
