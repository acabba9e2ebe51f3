"""The recipes of the regression fixtures: each records one execution with the embedded runtime
(``prepare`` + ``run``, as ``swf run`` does) and exports it with ``fixture.export``.

Recording is reproducible to the byte, so ``swf-replay --fixture F --update`` (or
``python fixtures/make_fixtures.py``) changes a fixture only when behaviour changed:

- the store clock (``recorded_at``) is the runtime's simulated clock while recording;
- file URLs are relative to the data directory (a temporary one), as in every run;
- agent names use a fixed user (``swf``), the store is fresh, the seed fixed.

Messages of other systems (injected error cases) are written here by hand and published into
the runtime, so the agents handle them and the store records them exactly as a live run would;
the upstream testbed's come from ``replay.upstream``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import eventstore.store as store_module
from agents.base import Adapter, shift
from agents.config import load_workflow
from agents.files import FilesAdapter
from agents.payload import PayloadAdapter
from agents.runtime import EmbeddedRuntime, prepare
from eventstore.envelope import Incoming, format_time
from eventstore.store import EventStore
from projections.projector import NAMES, Projector

from . import fixture, rebuild, upstream
from .fixture import Fixture
from .source import Limit, Scope

USER = "swf"
GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    record: Callable[[EventStore, Path], str]  # records into the store -> execution id
    whole_store: bool = False  # the fixture keeps every recorded event, not just the execution's


def local_adapters(workdir: Path) -> dict[str, Adapter]:
    from agents.batch.local import LocalExecutor
    from agents.ddm.local import LocalCatalog

    return {"files": FilesAdapter(workdir / "data"), "payload": PayloadAdapter(),
            "ddm": LocalCatalog(workdir / "ddm"), "batch": LocalExecutor(workdir / "batch")}


@contextmanager
def simulated_store_clock(clock: Callable[[], str]) -> Iterator[None]:
    """The store stamps recorded_at with ``clock`` (the runtime's simulated time)."""
    saved = store_module.utc_now
    store_module.utc_now = clock
    try:
        yield
    finally:
        store_module.utc_now = saved


def _run(runtime: EmbeddedRuntime) -> None:
    with simulated_store_clock(lambda: runtime.now):
        runtime.run()


def _workflow(workflow: str, overrides: tuple[str, ...], seed: int,
              inject: Callable[[EmbeddedRuntime], None] | None = None
              ) -> Callable[[EventStore, Path], str]:
    def record(store: EventStore, workdir: Path) -> str:
        runtime = prepare(store, load_workflow(workflow, overrides), seed=seed,
                          data_dir=workdir / "data", user=USER, strict=True,
                          adapters=local_adapters(workdir))
        if inject is not None:
            inject(runtime)
        _run(runtime)
        return str(runtime.execution_id)
    return record


# -- prompt processing: the seed's error cases ------------------------------------------------


def _prompt_errors(runtime: EmbeddedRuntime) -> None:
    """stf_ready messages of a second data source: an empty checksum, a null size, a 1 GiB file
    and a second announcement (differing in size) of a file the data agent registered."""
    run, t0 = runtime.run_id, runtime.start_time
    namespace = runtime.agents[0].namespace

    def ready(seconds: float, sequence: int, **fields: Any) -> None:
        name = f"swf.{run}.{sequence:06d}.stf"
        runtime.publish({
            "msg_type": "stf_ready", "msg_id": f"injected-{run}-{seconds:g}",
            "namespace": namespace, "execution_id": runtime.execution_id, "run_id": run,
            "sender": "data-injector", "timestamp": shift(t0, seconds), "filename": name,
            "file_url": f"{run}/{name}", "sequence": sequence,
            "size_bytes": 4096, "checksum": "0a1b2c3d", **fields})

    ready(2.5, 101, checksum="")
    ready(3.5, 102, size_bytes=None)
    ready(5.5, 103, size_bytes=GIB)
    ready(8.5, 1, size_bytes=999)  # the DAQ's first file (registered at t0+4) again


# -- the upstream testbed's message formats -----------------------------------------------------

UPSTREAM_EXECUTION = "fast_processing-wenauseic-0103"


def upstream_session() -> list[upstream.Wire]:
    """A session of the upstream testbed, every message as its agents send it
    (``replay.upstream``): a run_workflow and status_request, a fast processing run (runner,
    data agent, FastMon, fast processing agent, PanDA workers transceiver, iDDS, transformer,
    with a failed slice and a worker adjustment), a bus heartbeat, a stray transformer failure,
    a prompt processing run, an stf_datataking run, a legacy DAQ simulator run and, at the end,
    a stop_workflow with nothing left to stop."""
    start = upstream.START
    minute = timedelta(minutes=1)
    wires = [*upstream.control_commands(workflow="fast_processing",
                                        at=start - timedelta(seconds=3)),
             *upstream.fast_processing_run(start=start),
             upstream.monitor_heartbeat("daq_simulator-agent-wenauseic-484", start + minute),
             upstream.stray_result(start + 2 * minute),
             *upstream.prompt_processing_run(start=start + 10 * minute,
                                             container="/data/wenauseic/prompt"),
             *upstream.stf_datataking_run(start=start + 20 * minute),
             *upstream.daqsim_run(start=start + 30 * minute),
             upstream.stop_workflow(start + 40 * minute)]
    return sorted(wires, key=lambda wire: wire.sent)


def _upstream(store: EventStore, workdir: Path) -> str:
    """The upstream session recorded as a recorder would: each message with the broker's
    message-id and timestamp, stored at its broker time."""
    del workdir  # no agents of ours: the store records what upstream's agents send
    for destination, headers, body in upstream.delivered(upstream_session()):
        moment = format_time(datetime.fromtimestamp(int(headers["timestamp"]) / 1000, UTC))
        with simulated_store_clock(_clock(moment)):
            store.append([Incoming(destination, body, headers)])
    return UPSTREAM_EXECUTION


def _clock(moment: str) -> Callable[[], str]:
    return lambda: moment


def upstream_origins(rows: list[rebuild.Row]) -> list[tuple[str, str, str, str]]:
    """(fixture lines, msg_type, destination, origin) of the upstream fixture's events, grouped
    by origin: where in upstream's code each line's shape comes from."""
    where = {(wire.destination, wire.body): wire for wire in upstream_session()}
    groups: dict[tuple[str, str, str], list[int]] = {}
    for line, row in enumerate(rows, 1):
        wire = where[(row[3], bytes(row[5]))]
        groups.setdefault((wire.msg_type, wire.destination, wire.origin), []).append(line)
    return [(_ranges(lines), msg_type, destination, upstream.ORIGINS[origin])
            for (msg_type, destination, origin), lines in sorted(
                groups.items(), key=lambda item: item[1][0])]


ORIGINS_BEGIN = "<!-- upstream-origins: written by fixtures/make_fixtures.py -->"
ORIGINS_END = "<!-- /upstream-origins -->"


def origins_section(rows: list[rebuild.Row]) -> str:
    """The fixtures README's table of where each line of upstream_formats.jsonl comes from."""
    lines = [ORIGINS_BEGIN, "", "| lines | msg_type | destination | built and sent by |",
             "|---|---|---|---|"]
    for span, msg_type, destination, origin in upstream_origins(rows):
        lines.append(f"| {span} | `{msg_type}` | `{destination}` | {origin} |")
    return "\n".join([*lines, "", ORIGINS_END])


def with_origins(readme: str, rows: list[rebuild.Row]) -> str:
    """``readme`` with its upstream-origins section replaced by the one for ``rows``."""
    head, _sep, rest = readme.partition(ORIGINS_BEGIN)
    _old, _sep, tail = rest.partition(ORIGINS_END)
    return head + origins_section(rows) + tail


def _ranges(lines: list[int]) -> str:
    spans: list[list[int]] = []
    for line in lines:
        if spans and spans[-1][1] == line - 1:
            spans[-1][1] = line
        else:
            spans.append([line, line])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


SCENARIOS: dict[str, Scenario] = {scenario.name: scenario for scenario in (
    Scenario("fast_processing_default",
             "swf run: the default fast processing workflow (10 STF, 150 slices)",
             _workflow("fast_processing", (), 0)),
    Scenario("pause_resume", "two physics periods with a pause and a resume (3 STF, 3 slices)",
             _workflow("fast_processing", ("fast_processing.stf_count=3",
                                           "fast_processing.physics_period_count=2",
                                           "fast_processing.slices_per_sample=3"), 1)),
    Scenario("slice_failures",
             "failing slices: every first attempt fails, later ones half the time; retries "
             "and permanent failures (3 STF, 4 slices)",
             _workflow("fast_processing", ("fast_processing.stf_count=3",
                                           "fast_processing.slices_per_sample=4",
                                           "workers.fail_attempts=1",
                                           "workers.failure_fraction=0.5"), 2)),
    Scenario("prompt_processing_errors",
             "prompt processing (3 STF) with injected stf_ready error cases: empty checksum, "
             "null size, 1 GiB, a duplicate",
             _workflow("prompt_processing", ("prompt_processing.stf_count=3",), 3,
                       _prompt_errors)),
    Scenario("upstream_formats",
             "a session of the upstream testbed, every message as its agents send it",
             _upstream, whole_store=True),
)}


# -- recording and exporting -----------------------------------------------------------------


def record(name: str, workdir: Path) -> tuple[EventStore, str]:
    """Record scenario ``name`` into a fresh store under ``workdir``; projections caught up."""
    try:
        scenario = SCENARIOS[name]
    except KeyError:
        raise fixture.FixtureError(f"unknown scenario {name!r}; known: "
                                   f"{', '.join(SCENARIOS)}") from None
    store = EventStore(f"sqlite:///{workdir / 'swf.db'}")
    execution_id = scenario.record(store, workdir)
    Projector(store).catch_up()
    return store, execution_id


def export(store: EventStore, execution_id: str, scenario: str | None
           ) -> tuple[list[rebuild.Row], dict[str, Any], bool]:
    """(events as stored, the expected-file object, stored == rebuilt) of a caught-up store."""
    with store.snapshot() as view:
        marks: dict[str, int] = dict(view.connection.exec_driver_sql(
            "SELECT name, position FROM projection_checkpoints").fetchall())
        stops = {name: int(marks.get(name, 0)) for name in NAMES}

        def stored(scope: Scope) -> dict[str, list[rebuild.Row]]:
            return rebuild.read_stored(view.connection, scope)

        whole = scenario is not None and SCENARIOS[scenario].whole_store
        also = view.positions() if whole else []
        rows, expected, comparison = fixture.export(view, execution_id, stops, stored,
                                                    scenario, also)
    return rows, expected, comparison.identical


def record_to(name: str, path: Path) -> dict[str, Any]:
    """Record scenario ``name`` and write it as the fixture ``path``."""
    events_path, expected_path = fixture.paths(path)
    before = _contents(events_path, expected_path)
    with tempfile.TemporaryDirectory(prefix="swf-scenario-") as workdir:
        store, execution_id = record(name, Path(workdir))
        try:
            rows, expected, identical = export(store, execution_id, name)
        finally:
            store.close()
    if not identical:
        raise fixture.FixtureError(f"scenario {name}: the projector's tables differ from a "
                                   f"rebuild from the log; not writing a fixture")
    fixture.write(events_path, rows, expected)
    return _summary(events_path, expected_path, rows, expected, f"recorded scenario {name}",
                    before)


def refresh_expected(loaded: Fixture) -> dict[str, Any]:
    """A fixture without a scenario: its expected projections recomputed from its events."""
    events_path, expected_path = fixture.paths(loaded.path)
    before = _contents(events_path, expected_path)
    store = fixture.scratch_store(loaded.rows)
    try:
        with store.snapshot() as view:
            scope = Scope(loaded.execution_id)
            fold, _count = rebuild.fold_execution(view, scope, Limit())
            rows = rebuild.rebuilt_rows(fold, scope)
    finally:
        store.close()
    expected = fixture.expected_object(loaded.execution_id, loaded.rows, rows, None)
    fixture.write_expected(expected_path, expected)
    return _summary(events_path, expected_path, loaded.rows, expected,
                    "expected projections recomputed from its events", before)


def _contents(*paths: Path) -> tuple[bytes | None, ...]:
    return tuple(path.read_bytes() if path.is_file() else None for path in paths)


def _summary(events_path: Path, expected_path: Path, rows: list[rebuild.Row],
             expected: dict[str, Any], how: str, before: tuple[bytes | None, ...]
             ) -> dict[str, Any]:
    return {"events_file": events_path.name, "expected_file": expected_path.name, "how": how,
            "events": len(rows),
            "rows": sum(len(table) for table in expected["projections"].values()),
            "changed": _contents(events_path, expected_path) != before}


__all__ = ["SCENARIOS", "Scenario", "export", "record", "record_to", "refresh_expected"]
