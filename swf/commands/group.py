"""The ``swf`` click group and the options every command module shares.

Command modules import ``main`` from here and add their commands to it; the group imports a
module when one of its commands is asked for (``COMMAND_MODULES``). Nothing here imports a
command module at import time, so every module imports on its own.

Deployment settings (store, broker, agent, recorder, Rucio, PanDA) are read in one place,
swf/settings.py: flags > environment > config file > defaults. A command passes its flags to
``load`` (None: not given) and gets the whole ``Settings``; a problem is one line, exit code 2.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from eventstore.collector import quiet_gc

if TYPE_CHECKING:  # imported by ``load``: `swf --help` needs neither pydantic nor SQLAlchemy
    from swf.settings import Settings

F = TypeVar("F", bound=Callable[..., object])

DB_OPTION_HELP = ("Database URL (default: $SWF_DB, else [store] url of the config file, else "
                  "sqlite:///swf.db).")


class SettingsProblem(click.ClickException):
    """Unusable settings: ``Error: <one line>`` on stderr, exit code 2 (as a usage error)."""

    exit_code = 2


# Where each command is defined: a module is imported when one of its commands is asked for, so
# a command's start-up pays only for its own imports (`swf run` never loads the console, replay
# or the broker clients). "module:attribute" names a command added under this name; `query`
# gathers subcommands from two modules.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "agent": ("swf.commands.live_commands",),
    "record": ("swf.commands.record_command",),
    "status": ("swf.commands.ops_commands",),
    "stop": ("swf.commands.ops_commands",),
    "projections": ("swf.commands.projection_commands",),
    "query": ("swf.commands.query_commands", "swf.commands.store_commands"),
    "run": ("swf.commands.run_commands",),
    "workflows": ("swf.commands.run_commands",),
    "db": ("swf.commands.store_commands",),
    "import": ("swf.commands.store_commands",),
    "serve": ("swf.web.serve_command",),
    "replay": ("replay.cli:main",),  # `swf replay ...` is `swf-replay ...`
}


class LazyGroup(click.Group):
    """A group that imports a command's module when the command is first looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMAND_MODULES, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            # No collection while a command's modules import: they create hundreds of thousands
            # of objects that all live on (SQLAlchemy's alone), and the collections those
            # allocations trigger find nothing to free - ~4% of a `swf query`'s instructions.
            with quiet_gc():
                for module in COMMAND_MODULES.get(cmd_name, ()):
                    name, _, attribute = module.partition(":")
                    loaded = importlib.import_module(name)
                    if attribute:
                        self.add_command(getattr(loaded, attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """swf: the event-sourced ePIC streaming workflow testbed."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def load(config_path: Path | None = None, **flags: Mapping[str, Any] | None) -> Settings:
    """The settings for a command: its flags (per section), the environment, the config file
    (``config_path``, else $SWF_CONFIG)."""
    from swf.settings import SettingsError, load_settings

    try:
        return load_settings(config_path, **flags)
    except SettingsError as problem:
        raise SettingsProblem(str(problem)) from None


def config_option(function: F) -> F:
    """--config PATH: the TOML config file (the environment variable is read by settings)."""
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="TOML config file ([store], [broker], [agent], [recorder], [rucio], [panda]); "
             "default $SWF_CONFIG.")(function)


def db_flag(function: F) -> F:
    """--db as given (None when not): for commands that resolve all their settings at once."""
    return click.option("--db", "db_url", default=None, metavar="URL",
                        help=DB_OPTION_HELP)(function)


def db_option(function: F) -> F:
    """--db resolved to the store URL through the settings."""
    def resolve(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
        return load(store={"url": value}).store.url

    return click.option("--db", "db_url", default=None, metavar="URL", callback=resolve,
                        help=DB_OPTION_HELP)(function)
