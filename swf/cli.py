"""The ``swf`` console entry point: the click group with every command module loaded."""

from __future__ import annotations

import sys

import click

from eventstore.errors import SchemaTooNew, StoreUnavailable
from replay.cli import main as replay_main
from swf.commands import (  # noqa: F401 - each module adds its commands to the group
    live_commands,
    ops_commands,
    projection_commands,
    query_commands,
    record_command,
    run_commands,
    store_commands,
)
from swf.commands.group import main
from swf.web import serve_command  # noqa: F401 - adds `swf serve` (web imports commands, not back)

# `swf replay ...` is `swf-replay ...`: the same click command under the group.
main.add_command(replay_main, "replay")


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
