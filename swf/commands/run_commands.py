"""``swf run`` (one embedded execution of a workflow) and ``swf workflows``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from agents.config import (
    ConfigError,
    WorkflowConfig,
    describe,
    load_workflow,
    shipped_workflows,
)
from agents.dataroot import DataRootError
from agents.registry import workflow_agents
from agents.runtime import ExecutionResult, Progress, prepare
from projections.projector import Projector
from projections.queries import execution_summary as query_summary
from swf.commands import live_commands
from swf.commands.group import SettingsProblem, config_option, db_flag, load, main
from swf.commands.options import iso_time
from swf.output import echo_rows, echo_summary


@main.command("run")
@click.argument("workflow", required=False, default="fast_processing",
                metavar="[WORKFLOW|PATH.toml]")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a workflow setting (repeatable), e.g. fast_processing.stf_count=20.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of every random decision; the same seed and config give the same "
                   "events.")
@click.option("--realtime", is_flag=True, help="Pace the run by the wall clock, like the DAQ.")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="With --realtime: simulated seconds per wall second.")
@click.option("--start-time", callback=iso_time,
              help="Simulated start time (default: from the store's latest event).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="The store's data directory: STF files, local DDM and batch state "
                   "(default: $SWF_DATA, else [agent] data_dir, else beside the SQLite store "
                   "file: swf.db -> swf-data).")
@click.option("--user", help="Who the execution is recorded as: its id and agent names "
                             "(default: $SWF_USER, else [agent] user, else swf).")
@click.option("--progress/--no-progress", default=None,
              help="Live progress line on stderr (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--broker", "broker_url", metavar="URL",
              help="Live mode: send the run to the agents on this broker (`swf agent`, recorded "
                   "by `swf record`) and wait for its result, instead of running embedded. "
                   "Credentials and TLS files as for `swf agent`.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=3600.0,
              show_default=True, help="With --broker: seconds to wait for the result.")
@click.option("--start-timeout", type=click.FloatRange(min=0, min_open=True),
              default=live_commands.START_TIMEOUT,
              show_default=True, help="With --broker: seconds the daq agent has to take the run "
                                      "before `swf run` gives up, naming it.")
@db_flag
@config_option
def run_command(workflow: str, overrides: tuple[str, ...], seed: int, realtime: bool,
                speed: float, start_time: str | None, data_dir: Path | None,
                user: str | None, progress: bool | None, as_json: bool,
                broker_url: str | None, timeout: float, start_timeout: float,
                db_url: str | None,
                config_path: Path | None) -> None:
    """Run one execution of a workflow (default: fast_processing) to completion, embedded:
    all agents in this process, every message appended to the store before delivery. Then
    print the execution summary (as `swf query execution ID` does). Exit status 1 when the
    execution did not complete. With --broker, the live agents run it in real time."""
    from eventstore.store import EventStore

    config = _load(workflow, overrides)
    settings = load(config_path, store={"url": db_url}, broker={"url": broker_url},
                    agent={"data_dir": data_dir, "user": user})
    show = progress if progress is not None else sys.stderr.isatty()
    line = _ProgressLine() if show else None
    if broker_url:
        try:
            summary = live_commands.run_live(config, settings=settings, seed=seed,
                                             start_time=start_time, timeout=timeout,
                                             start_timeout=start_timeout, progress=line)
        finally:
            if line is not None:
                line.close()
        echo_summary(summary, as_json)
        sys.exit(0 if summary.get("status") == "completed" else 1)
    with EventStore(settings.store.url) as store:
        try:
            runtime = prepare(store, config, seed=seed, data_dir=settings.agent.data_dir,
                              user=settings.agent.user, start_time=start_time,
                              realtime=realtime, speed=speed, progress=line,
                              adapter_settings=settings.adapter_settings())
        except DataRootError as problem:
            raise SettingsProblem(str(problem)) from None
        if line is not None:
            line.start = runtime.start_time
        try:
            result = runtime.run()
        finally:
            if line is not None:
                line.close()
        summary = execution_summary(store, result)
    echo_summary(summary, as_json)
    if summary.get("status") != "completed":
        sys.exit(1)


@main.command("workflows")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def workflows_command(as_json: bool) -> None:
    """List the shipped workflows, their agents and their resolved parameters."""
    rows: list[dict[str, Any]] = []
    for name in shipped_workflows():
        config = _load(name, ())
        agents = ", ".join(workflow_agents(config.enabled))
        rows.append({"workflow": name, "setting": "(agents)", "value": agents})
        rows.extend({"workflow": name, "setting": key, "value": value}
                    for key, value in describe(config))
    echo_rows(rows, ("workflow", "setting", "value"), as_json)


def _load(workflow: str, overrides: tuple[str, ...]) -> WorkflowConfig:
    try:
        return load_workflow(workflow, overrides)
    except ConfigError as problem:
        raise click.UsageError(str(problem)) from None


def execution_summary(store: Any, result: ExecutionResult) -> dict[str, Any]:
    """Catch the projections up, then the same summary as ``swf query execution ID``."""
    Projector(store).catch_up()
    summary = query_summary(store, result.execution_id or "", namespace=result.namespace)
    if summary is None:  # the runtime stored nothing of its execution: say so, not a traceback
        raise click.ClickException(f"no execution {result.execution_id!r} in the store")
    return summary


class _ProgressLine:
    """One self-overwriting line on stderr: simulated time, events, STFs, slices done."""

    def __init__(self) -> None:
        self.start: str | None = None
        self._width = 0

    def __call__(self, progress: Progress) -> None:
        from eventstore.envelope import parse_time

        elapsed = 0.0
        if self.start is not None:
            elapsed = (parse_time(progress.sim_time) - parse_time(self.start)).total_seconds()
        minutes, seconds = divmod(int(elapsed), 60)
        text = (f"t+{minutes:02d}:{seconds:02d}  events {progress.events}  "
                f"STFs {progress.stf_files}  slices {progress.slices_done}/{progress.slices}")
        click.echo("\r" + text.ljust(self._width), nl=False, err=True)
        self._width = len(text)

    def close(self) -> None:
        if self._width:
            click.echo("", err=True)
