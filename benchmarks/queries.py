"""Every ``swf query`` subcommand on a 1,000,000-event store, timed as a command.

    python benchmarks/queries.py [--events N] [--db PATH] [--keep] [--repeat N]

Builds the synthetic fast-processing execution of ``benchmarks/projections.py`` (N events, one
run, ~354k projection rows) in a fresh SQLite store and projects it, then runs each
``swf query ...`` as a subprocess (``python -c "from swf.cli import run; run()" query ...``:
interpreter start, imports, opening the store, the projections' catch-up check, the query and
the output), best of ``--repeat``. Listing commands are run with ``--limit 100`` and, where the
table is big, with the filter an operator would use (a run, a status, a message type): printing
all 312,495 slices is not a query but an export. The interpreter start and ``swf --help`` are
timed the same way, so what the query itself costs can be told apart from the command's
fixed start-up (owned by the CLI, not by the queries); each command is also run in process
(click's test runner, modules already imported), best of ``--repeat`` after one warm-up.

Target (issue 15): any ``swf query`` on a 1M-event store <= 0.3 s.

What limits it: the queries' own work takes 2-25 ms on a 1M-event store; a command's floor is the
interpreter's start and SQLAlchemy's import. Two thirds of a command's instructions are ``import
sqlalchemy``; the project's own imports, opening the store, the catch-up check, the query and its
output are 15%. So the target is met on the faster machines of this kind and not on slower ones,
with the same instructions (``instructions.py``). The standing of every target:
``benchmarks/README.md``; every stop's figures: ``benchmarks/HISTORY.md``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a source checkout

from bigstore import log_builder, store_options, store_path  # noqa: E402
from bytecode import compile_project  # noqa: E402

from eventstore.store import EventStore  # noqa: E402
from projections.projector import Projector  # noqa: E402

TARGET_S = 0.3


def commands(execution: str, run: int) -> list[list[str]]:
    """Each subcommand of ``swf query``, as an operator would call it on a big store."""
    limit = ["--limit", "100"]
    return [
        ["executions"], ["executions", "--limit", "10"],
        ["execution", execution],
        ["runs"], ["runs", "--execution-id", execution],
        ["stf-files", *limit], ["stf-files", "--run", str(run), "--status", "failed"],
        ["tf-samples", *limit],
        ["slices", *limit], ["slices", "--run", str(run), "--status", "failed", *limit],
        ["slices", "--execution-id", execution, *limit],
        ["datasets"], ["tasks"], ["workflow-tasks"], ["worker-requests", *limit],
        ["failures", *limit], ["agents"], ["logs", *limit], ["commands", *limit],
        ["messages", *limit], ["messages", "--msg-type", "end_run", *limit],
        ["messages", "--execution-id", execution, *limit],
        ["rejected", *limit],
    ]


def best_of(argv: list[str], repeat: int) -> tuple[float, int, int]:
    """Best wall time of ``repeat`` runs, the exit code and the lines printed."""
    best, code, lines = float("inf"), 0, 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(repeat):
        began = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT,
                              env=env)
        best = min(best, time.perf_counter() - began)
        code, lines = done.returncode, done.stdout.count("\n")
    return best, code, lines


def in_process(args: list[str], repeat: int) -> float:
    """Best time of the same command through click's test runner in this interpreter (its
    modules imported already): the query's own cost."""
    from click.testing import CliRunner

    from swf.cli import main as swf_main

    runner = CliRunner()
    best = float("inf")
    for _ in range(repeat + 1):  # the first run imports the command's modules
        began = time.perf_counter()
        result = runner.invoke(swf_main, args)
        best = min(best, time.perf_counter() - began)
        assert result.exit_code == 0, result.output
    return best


@click.command()
@store_options
@click.option("--repeat", default=3, show_default=True, help="Runs per command (best kept).")
def main(events: int, db_path: Path | None, keep: bool, repeat: int) -> None:
    """Time every swf query subcommand as a command on a big store."""
    logging.basicConfig(level=logging.WARNING)
    bench = log_builder()
    with tempfile.TemporaryDirectory() as scratch:
        path = store_path(db_path, keep, scratch, "queries.db")
        url = f"sqlite:///{path}"
        with EventStore(url) as store:
            if store.head() == 0:
                bench.build(store, events)
            Projector(store).catch_up()
            total = store.head()
        click.echo(f"store: {total:,} events")
        compile_project(ROOT)
        python = [sys.executable, "-c", "from swf.cli import run; run()"]
        start, _, _ = best_of([sys.executable, "-c", "pass"], repeat)
        helped, _, _ = best_of([*python, "--help"], repeat)
        click.echo(f"{'python -c pass':<58} {start:6.3f} s")
        click.echo(f"{'swf --help':<58} {helped:6.3f} s")
        click.echo(f"{'':<58} {'command':>8} {'in process':>11}")
        worst = slowest = 0.0
        for args in commands(bench.EXECUTION, bench.RUN):
            elapsed, code, lines = best_of([*python, "query", *args, "--db", url], repeat)
            inside = in_process(["query", *args, "--db", url], repeat)
            worst, slowest = max(worst, elapsed), max(slowest, inside)
            flag = "" if elapsed <= TARGET_S else "  > target"
            click.echo(f"{'swf query ' + ' '.join(args):<58} {elapsed:6.3f} s {inside:9.3f} s "
                       f"(exit {code}, {lines:,} lines){flag}")
        click.echo(f"slowest query: {worst:.3f} s as a command, {slowest:.3f} s in process "
                   f"(+ {start:.3f} s interpreter start = {slowest + start:.3f} s); "
                   f"target {TARGET_S} s: {'met' if worst <= TARGET_S else 'NOT met'} as a "
                   f"command, {'met' if slowest + start <= TARGET_S else 'NOT met'} in process "
                   f"+ interpreter start")


if __name__ == "__main__":
    main()
