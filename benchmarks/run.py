"""`swf run` speed: wall time of the default workflow, events/s of a production-sized run.

    python benchmarks/run.py [--repeat N] [--stf-count N] [--skip-production]

1. The default fast processing workflow (10 STFs, 150 slices) as an operator runs it: ``swf run``
   in a fresh process on a fresh SQLite store, store open, migrations and projection catch-up
   included (target <= 0.6 s). Best and median of ``--repeat`` runs.
2. The same in-process, split into store open, the run itself and the projection catch-up.
3. A production-sized run (default 6,000 STFs, about 90,000 slices, 295,635 events): events/s
   of the runtime (agents + store appends, target <= 20 s), then of the projection catch-up.

What limits the production run: it is CPU-bound and its profile is flat: the store's append about
half (the catalog a tenth, SQLite's inserts a fifth, commits a twentieth), the agents'
deliveries a quarter, writing and checksumming the STF files a seventh. So it is met on the
faster machines of this kind and not on slower ones, with the same instructions
(``instructions.py``). The standing of every target: ``benchmarks/README.md``; every stop's
figures: ``benchmarks/HISTORY.md``.
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a source checkout

from bytecode import compile_project  # noqa: E402

from agents.config import load_workflow  # noqa: E402
from agents.runtime import run_workflow  # noqa: E402
from eventstore.store import EventStore  # noqa: E402

CLI = "import sys; from swf.cli import run; sys.argv[0] = 'swf'; run()"


def cli_run(folder: Path) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CLI, "run", "--db", f"sqlite:///{folder / 'swf.db'}",
         "--data-dir", str(folder / "data"), "--json", "--no-progress"],
        capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise click.ClickException(f"swf run failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


def catch_up(store: EventStore) -> float | None:
    try:
        from projections.projector import Projector
    except ImportError:
        return None
    started = time.perf_counter()
    Projector(store).catch_up()
    return time.perf_counter() - started


def in_process(folder: Path, overrides: tuple[str, ...]) -> dict[str, float | int | None]:
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    store = EventStore(f"sqlite:///{folder / 'swf.db'}")
    opened = time.perf_counter() - started
    result = run_workflow(store, load_workflow("fast_processing", overrides), seed=0,
                          data_dir=folder / "data")
    projected = catch_up(store)
    store.close()
    return {"open": opened, "run": result.wall_seconds, "events": result.events,
            "catch_up": projected}


@click.command()
@click.option("--repeat", default=5, show_default=True, help="Runs of the default workflow.")
@click.option("--stf-count", default=6000, show_default=True, help="STFs of the big run.")
@click.option("--skip-production", is_flag=True, help="Only the default workflow.")
def main(repeat: int, stf_count: int, skip_production: bool) -> None:
    logging.disable(logging.WARNING)
    compile_project(ROOT)
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        walls = [cli_run(base / f"cli{i}") for i in range(repeat)]
        click.echo(f"swf run (default workflow, fresh process and store): best "
                   f"{min(walls):.3f} s, median {statistics.median(walls):.3f} s "
                   f"over {repeat} runs (target <= 0.6 s)")
        parts = in_process(base / "inproc", ())
        projected = "n/a" if parts["catch_up"] is None else f"{parts['catch_up']:.3f} s"
        click.echo(f"  in process: store open {parts['open']:.3f} s, run {parts['run']:.3f} s "
                   f"({parts['events']} events), projection catch-up {projected}")
        if skip_production:
            return
        big = in_process(base / "big", (f"fast_processing.stf_count={stf_count}",))
        events, seconds = int(big["events"] or 0), float(big["run"] or 0.0)
        click.echo(f"production run ({stf_count} STFs): {events} events in {seconds:.1f} s = "
                   f"{events / seconds:,.0f} events/s (agents + store appends; target <= 20 s)")
        if big["catch_up"] is not None:
            click.echo(f"  projection catch-up: {big['catch_up']:.1f} s = "
                       f"{events / float(big['catch_up']):,.0f} events/s")


if __name__ == "__main__":
    main()
