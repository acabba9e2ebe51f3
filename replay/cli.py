"""``swf-replay``: rebuild, step through, re-drive, export and draw one recorded execution."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import orjson
import sqlalchemy as sa
from click.core import ParameterSource

from eventstore.envelope import Event
from eventstore.errors import StoreError
from eventstore.migrate import check_current
from eventstore.store import EventStore, Snapshot
from projections.projector import NAMES, SCRIPTS, VERSION_TABLE
from projections.tables import projection_checkpoints

from . import fixture, rebuild, render, timeline
from .fixture import Fixture, FixtureError
from .rebuild import Row
from .source import Scope

log = logging.getLogger(__name__)

PROGRESS_FROM = 50_000  # events; shorter replays finish before a bar is worth drawing
EXIT_DIFFERENT, EXIT_ERROR = 1, 2

Progress = Callable[[int], None] | None


@dataclass
class Opened:
    """One execution ready to replay: its store (a fixture's is an in-memory copy), one
    snapshot of it, and what the stored projections cover."""

    store: EventStore
    view: Snapshot
    execution_id: str
    label: str
    stops: dict[str, int]  # projection -> the log position its stored rows cover
    events: int  # its events (or 1: only its existence was checked, no progress bar)
    fixture: Fixture | None
    stored: Callable[[Scope], Mapping[str, Sequence[Row]]]
    lag: int = 0  # events in the log after the lowest stop: the stored tables lag it


class ReplayError(click.ClickException):
    exit_code = EXIT_ERROR


HELP = """Replay one recorded execution from its events.

By default: rebuild every projection of EXECUTION_ID from its events in memory and compare
them with the stored projection tables; print "identical" or the differing rows (exit status
1). With --fixture PATH the events come from a fixture file and the stored projections from
its expected file (EXECUTION_ID may be left out).

The store is opened read-only: nothing is migrated or written. The tables are compared as they
are, against a rebuild of the events their checkpoints cover, so a table lagging the log is not
drift; the output says when they lag (`swf projections catch-up` brings them up).

Exit status: 0 identical (no divergence), 1 drift (a divergence), 2 an error (no such
execution, an unreadable store or fixture, bad options).
"""


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("execution_id", required=False)
@click.option("--db", "db_url", envvar="SWF_DB", default=None, metavar="URL",
              help="Database URL (default: $SWF_DB or sqlite:///swf.db).")
@click.option("--fixture", "fixture_path", metavar="PATH",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Replay a fixture file (NAME.jsonl beside NAME.expected.json) instead.")
@click.option("--until", "until", metavar="POSITION|ISO-TIME",
              help="Show the execution's state after the events up to this log position or "
                   "event time (with --step: stop there).")
@click.option("--step", is_flag=True, help="Each event in order with the rows it changed.")
@click.option("--agents", is_flag=True,
              help="Re-drive the current agent code with the recorded inputs and compare what "
                   "it emits with what was recorded; exit 1 at the first divergence.")
@click.option("--export", "export_path", metavar="PATH",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Write the execution as a fixture: PATH (.jsonl) and its expected "
                   "projections beside it (.expected.json).")
@click.option("--mermaid", "as_mermaid", is_flag=True,
              help="Print the execution as a Mermaid sequence diagram.")
@click.option("--update", is_flag=True,
              help="With --fixture: regenerate the fixture (record its scenario again with the "
                   "current code, or, without one, recompute its expected projections).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: on a terminal, for long replays).")
@click.option("-v", "--verbose", count=True, help="Log to stderr (-vv for debug).")
def main(execution_id: str | None, db_url: str | None, fixture_path: Path | None,
         until: str | None, step: bool, agents: bool,
         export_path: Path | None, as_mermaid: bool, update: bool, as_json: bool,
         progress: bool | None, verbose: int) -> None:
    if verbose:
        logging.basicConfig(level=logging.INFO if verbose == 1 else logging.DEBUG,
                            format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    chosen = [name for name, on in (("--step", step), ("--agents", agents),
                                    ("--export", export_path is not None),
                                    ("--mermaid", as_mermaid), ("--update", update)) if on]
    if len(chosen) > 1:
        raise click.UsageError(f"choose one of {', '.join(chosen)}")
    if until is not None and chosen and chosen != ["--step"]:
        raise click.UsageError(f"--until does not combine with {chosen[0]}")
    given = click.get_current_context().get_parameter_source("db_url")
    if fixture_path is not None and given is ParameterSource.COMMANDLINE:
        raise click.UsageError("give --db or --fixture, not both")
    if update:
        if fixture_path is None:
            raise click.UsageError("--update needs --fixture PATH")
        _guarded(lambda: _update(fixture_path, as_json))
        return
    limit = None
    if until is not None:
        try:
            limit = timeline.parse_moment(until)
        except ValueError:
            raise click.BadParameter(f"{until!r} is neither a log position nor an ISO-8601 "
                                     f"time", param_hint="--until") from None
    status = _guarded(lambda: _replay(
        execution_id=execution_id, db_url=db_url, fixture_path=fixture_path, limit=limit,
        step=step, agents=agents, export_path=export_path, as_mermaid=as_mermaid,
        as_json=as_json, progress=progress))
    if status:
        sys.exit(status)


def _guarded(action: Callable[[], int | None]) -> int | None:
    """Store and fixture problems: one line on stderr and exit status 2, not a traceback."""
    try:
        return action()
    except (StoreError, FixtureError) as problem:
        raise ReplayError(str(problem)) from None


def _replay(*, execution_id: str | None, db_url: str | None, fixture_path: Path | None,
            limit: Any, step: bool, agents: bool, export_path: Path | None,
            as_mermaid: bool, as_json: bool, progress: bool | None) -> int:
    compares = not (step or limit is not None or agents or as_mermaid)  # reads stored tables
    with _opened(execution_id, db_url, fixture_path, compares, progress) as opened:
        if step:
            return _step(opened, limit or timeline.Limit(), as_json)
        if limit is not None:
            state = timeline.state_at(opened.view, Scope(opened.execution_id), limit)
            _emit(state, as_json, render.state_lines)
            return 0
        if agents:
            return _agents(opened, as_json, progress)
        if as_mermaid:
            from . import mermaid  # (lazily, like redrive: a plain replay starts faster)

            lines = mermaid.diagram(opened.execution_id, _events(opened))
            _emit({"execution_id": opened.execution_id, "mermaid": "\n".join(lines) + "\n"},
                  as_json, lambda value: iter(lines))
            return 0
        if export_path is not None:
            return _export(opened, export_path, as_json)
        bar_length = opened.events if _show_progress(progress, opened.events) else 0
        with _bar("rebuild", bar_length) as bar:
            scope = Scope(opened.execution_id)
            comparison = rebuild.compare(opened.view, scope, opened.stops, opened.stored, bar)
        comparison.lag = opened.lag
        _emit(render.comparison_json(comparison, opened.label), as_json,
              lambda _value: render.comparison_lines(comparison, opened.label))
        return 0 if comparison.identical else EXIT_DIFFERENT


# -- opening ---------------------------------------------------------------------------------


@contextmanager
def _opened(execution_id: str | None, db_url: str | None, fixture_path: Path | None,
            reads_tables: bool, progress: bool | None) -> Iterator[Opened]:
    if fixture_path is not None:
        loaded = fixture.load(fixture_path)
        if execution_id is not None and execution_id != loaded.execution_id:
            raise ReplayError(f"{loaded.path.name} holds execution {loaded.execution_id}, "
                              f"not {execution_id}")
        store = fixture.scratch_store(loaded.rows)
        expected = rebuild.rows_from_dicts(loaded.expected.get("projections") or {})
        stops = {name: loaded.position for name in NAMES}
        label = f"fixture {loaded.path.name}"
        execution_id = loaded.execution_id

        def stored(scope: Scope) -> Mapping[str, Sequence[Row]]:  # the same for any scope
            return expected
    else:
        if execution_id is None:
            raise click.UsageError("give an EXECUTION_ID (or --fixture PATH)")
        store = EventStore(db_url, read_only=True)  # never migrated, never written
        loaded, label = None, "store"
    try:
        with store.snapshot() as view:  # one moment of the store for the whole replay
            # counting is an index scan: only when a progress bar may want the length
            events = view.event_count(execution_id) if _may_show_progress(progress) else int(
                view.has_events(execution_id))
            if not events:
                raise ReplayError(f"no events of execution {execution_id} in the "
                                  f"{'fixture' if loaded else 'store'}")
            lag = 0
            if loaded is None:
                stops = {}
                if reads_tables:  # as of their checkpoints, however far the log has gone
                    check_current(store.engine, SCRIPTS, VERSION_TABLE, "projection tables")
                    stops = _checkpoints(view.connection)
                    lag = view.count_after(min(stops.values()))

                def stored(scope: Scope) -> Mapping[str, Sequence[Row]]:
                    return rebuild.StoredTables(view.connection, scope)
            yield Opened(store, view, execution_id, label, stops, events, loaded, stored, lag)
    finally:
        store.close()


def _checkpoints(conn: sa.Connection) -> dict[str, int]:
    stored: dict[str, int] = dict(conn.execute(sa.select(
        projection_checkpoints.c.name, projection_checkpoints.c.position)).all())
    return {name: int(stored.get(name, 0)) for name in NAMES}


def _events(opened: Opened) -> list[Event]:
    """The execution's own events, normalized by today's catalog (re-drive, diagram), after
    the heartbeats by which live agents introduced themselves outside any execution."""
    introduced = opened.view.introductions(opened.execution_id)
    return [*introduced, *opened.view.execution_events(opened.execution_id)]


# -- actions ---------------------------------------------------------------------------------


def _agents(opened: Opened, as_json: bool, progress: bool | None) -> int:
    from . import redrive  # lazily: it imports every agent, 0.25 s a plain replay never needs

    events = _events(opened)
    with _bar("re-drive", len(events) if _show_progress(progress, len(events)) else 0) as bar:
        report = redrive.redrive(opened.execution_id, events, bar)
    _emit(render.report_json(report), as_json, lambda _value: render.report_lines(report))
    return EXIT_DIFFERENT if report.divergence is not None else 0


def _step(opened: Opened, limit: timeline.Limit, as_json: bool) -> int:
    steps = timeline.steps(opened.view, Scope(opened.execution_id), limit)
    if as_json:
        _emit({"execution_id": opened.execution_id,
               "steps": [timeline.step_json(step) for step in steps]}, True, None)
    else:
        for step in steps:
            for line in timeline.step_lines(step):
                click.echo(line)
    return 0


def _export(opened: Opened, path: Path, as_json: bool) -> int:
    scenario = opened.fixture.expected.get("scenario") if opened.fixture else None
    rows, expected, comparison = fixture.export(opened.view, opened.execution_id, opened.stops,
                                                opened.stored, scenario)
    events_path, expected_path = fixture.write(path, rows, expected)
    summary = {"execution_id": opened.execution_id, "events": len(rows),
               "events_file": events_path.name, "expected_file": expected_path.name,
               "rows": sum(len(v) for v in expected["projections"].values()),
               "identical": comparison.identical}
    _emit(summary, as_json, lambda value: iter([
        f"exported {value['execution_id']}: {value['events']} events to "
        f"{value['events_file']}, {value['rows']} projection rows to {value['expected_file']}",
        *([] if value["identical"] else [
            "warning: the stored projections differ from a rebuild from the log; the fixture "
            "expects the stored ones (run without --export to see the drift)"])]))
    return 0


def _update(path: Path, as_json: bool) -> int:
    from . import scenarios

    events_path, _expected_path = fixture.paths(path)
    stem = events_path.name[: -len(fixture.EVENTS_SUFFIX)]
    if not events_path.exists() and stem in scenarios.SCENARIOS:  # a new fixture
        result = scenarios.record_to(stem, events_path)
    else:
        loaded = fixture.load(path)
        name = loaded.expected.get("scenario")
        if name:
            result = scenarios.record_to(str(name), loaded.path)
        else:
            result = scenarios.refresh_expected(loaded)
    _emit(result, as_json, lambda value: iter([
        f"{value['events_file']}: {value['how']}; {value['events']} events, "
        f"{value['rows']} projection rows ({'changed' if value['changed'] else 'unchanged'})"]))
    return 0


# -- output ----------------------------------------------------------------------------------


def _emit(value: Any, as_json: bool, lines: Callable[[Any], Iterator[str]] | None) -> None:
    if as_json or lines is None:
        click.echo(orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
                   .decode())
        return
    for line in lines(value):
        click.echo(line)


def _show_progress(progress: bool | None, length: int) -> bool:
    if progress is None:
        return length >= PROGRESS_FROM and sys.stderr.isatty()
    return progress and length > 0


def _may_show_progress(progress: bool | None) -> bool:
    """Whether ``_show_progress`` may be true for some length."""
    return progress is True or (progress is None and sys.stderr.isatty())


@contextmanager
def _bar(label: str, length: int) -> Iterator[Progress]:
    if not length:
        yield None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update
