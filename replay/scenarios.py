"""The recipes of the regression fixtures: each records one execution with the embedded runtime
(``prepare`` + ``run``, as ``swf run`` does) and exports it with ``fixture.export``.

Recording is reproducible to the byte, so ``swf-replay --fixture F --update`` (or
``python fixtures/make_fixtures.py``) changes a fixture only when behaviour changed:

- the store clock (``recorded_at``) is the runtime's simulated clock while recording;
- file URLs are relative to the data directory (a temporary one), as in every run;
- agent names use a fixed user (``swf``), the store is fresh, the seed fixed.

Messages of other systems (an upstream DAQ, injected error cases, upstream workers) are written
here by hand and published into the runtime, so the agents handle them and the store records
them exactly as a live run would.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import eventstore.store as store_module
from agents.base import Adapter, shift
from agents.config import load_workflow
from agents.files import FilesAdapter
from agents.payload import PayloadAdapter
from agents.registry import create_agent
from agents.runtime import EmbeddedRuntime, prepare
from eventstore.envelope import RESULT_QUEUE, SLICE_QUEUE, Event
from eventstore.store import EventStore
from projections.projector import NAMES, Projector

from . import fixture, rebuild
from .fixture import Fixture
from .source import Limit, Scope

USER = "swf"
GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    record: Callable[[EventStore, Path], str]  # records into the store -> execution id


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

UPSTREAM_EXECUTION = "stf_datataking-wenauseic-0049"
UPSTREAM_RUN = 101993
UPSTREAM_NAMESPACE = "torre2"
UPSTREAM_START = "2026-01-01T00:00:00.000000Z"
UPSTREAM_DAQ = "daq_simulator-agent-wenauseic-484"
UPSTREAM_DATA = "data-agent-wenauseic-481"
UPSTREAM_FP = "fast_processing-agent-wenauseic-483"


def _upstream(store: EventStore, workdir: Path) -> str:
    """Our FastMon and fast processing agents among upstream senders: an upstream DAQ and data
    agent (string run ids, ``size``, ``ad:`` checksums, ``created_at``, ``total_files``, an
    stf_ready without execution_id), upstream PanDA workers answering every slice with the
    ``content``-wrapped slice_result (one failure, retried), and an upstream fast processing
    agent's ``content``-wrapped slice."""
    del workdir  # no adapters: these agents issue no commands
    agents = [create_agent(kind, f"{kind}-agent-{USER}", UPSTREAM_NAMESPACE)
              for kind in ("fastmon", "fast_processing")]
    runtime = EmbeddedRuntime(store, agents, {}, start_time=UPSTREAM_START,
                              execution_id=UPSTREAM_EXECUTION, run_id=UPSTREAM_RUN,
                              workflow="fast_processing", heartbeat_interval=60.0, strict=True)
    run = str(UPSTREAM_RUN)
    params = {"seed": 7, "fast_processing": {"slices_per_sample": 3},
              "fastmon": {"tf_count_per_stf": 300}}

    def at(seconds: float) -> str:
        return shift(UPSTREAM_START, seconds)

    def daq(msg_type: str, seconds: float, **fields: Any) -> None:
        # ``at``: the runtime times a publication by ``timestamp`` only, and these use created_at
        runtime.publish({"msg_type": msg_type, "namespace": UPSTREAM_NAMESPACE,
                         "execution_id": UPSTREAM_EXECUTION, "run_id": run,
                         "sender": UPSTREAM_DAQ, "created_at": at(seconds), **fields},
                        at=at(seconds))

    runtime.publish({"msg_type": "agent_heartbeat", "namespace": UPSTREAM_NAMESPACE,
                     "execution_id": UPSTREAM_EXECUTION, "sender": UPSTREAM_DAQ,
                     "agent_type": "DAQ_Simulator", "status": "OK",
                     "operational_state": "READY", "pid": 484, "hostname": "pandaserver02",
                     "timestamp": at(0)})
    daq("run_imminent", 0, state="beam", substate="not_ready", workflow="fast_processing",
        workflow_params=params, dataset=f"swf.{run}.run")
    daq("start_run", 1, state="run", substate="physics")
    for sequence in (1, 2, 3):
        name = f"swf.{run}.{sequence:06d}.stf"
        url = f"file:///data/e0/{name}"
        daq("stf_gen", 1 + 3 * sequence, filename=name, sequence=sequence, file_url=url,
            state="run", substate="physics")
        ready = {"msg_type": "stf_ready", "namespace": UPSTREAM_NAMESPACE, "run_id": run,
                 "sender": UPSTREAM_DATA, "timestamp": at(1.5 + 3 * sequence),
                 "filename": name, "file_url": url, "size": 4096 * sequence,
                 "checksum": f"ad:{sequence:x}a2b3c4d"}
        if sequence != 2:  # the second names no execution: the store resolves it from the run
            ready["execution_id"] = UPSTREAM_EXECUTION
        runtime.publish(ready)
    daq("end_run", 13, state="beam", substate="not_ready", total_files=3)
    # An upstream fast processing agent's slice of a sample our FastMon never took.
    runtime.publish({"msg_type": "slice", "run_id": run, "namespace": UPSTREAM_NAMESPACE,
                     "sender": UPSTREAM_FP, "created_at": at(6),
                     "content": {"run_id": run, "execution_id": UPSTREAM_EXECUTION,
                                 "req_id": "req-0001", "filename": f"swf.{run}.000001.stf",
                                 "tf_filename": f"swf.{run}.000001_tf_099.tf", "slice_id": 0,
                                 "start": 0, "end": 44, "tf_count": 45, "state": "queued",
                                 "substate": "new"}}, destination=SLICE_QUEUE, at=at(6))
    failed_once: set[tuple[str, int]] = set()

    def worker_answers(event: Event) -> None:
        """Upstream PanDA workers: every slice is done 20 s after it was queued, except the
        first attempt at slice 1 of the first sample, which fails."""
        if event.msg_type != "slice" or not event.data:
            return
        data = event.data
        key = (str(data["tf_filename"]), int(data["slice_id"]))
        fails = key == (f"swf.{run}.000001_tf_001.tf", 1) and key not in failed_once
        failed_once.add(key)
        result: dict[str, Any] = {"slice_id": key[1], "tf_filename": key[0],
                                  "processed": not fails}
        content: dict[str, Any] = {"state": "failed" if fails else "done",
                                   "result": {"result": result}}
        if fails:
            content["error"] = "eicrecon exited with status 139"
        done = shift(event.time, 20)
        runtime.publish({"msg_type": "slice_result", "run_id": run,
                         "namespace": UPSTREAM_NAMESPACE, "execution_id": UPSTREAM_EXECUTION,
                         "sender": f"panda-worker-{key[1]:02d}", "created_at": done,
                         "content": content}, destination=RESULT_QUEUE, at=done)

    runtime.observe = worker_answers
    _run(runtime)
    return UPSTREAM_EXECUTION


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
             "upstream testbed message formats around our FastMon and fast processing agents",
             _upstream),
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

        rows, expected, comparison = fixture.export(view, execution_id, stops, stored,
                                                    scenario)
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
