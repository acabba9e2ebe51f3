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

Measured 2026-11-28 on the shared 2-vCPU VM while other sessions ran benchmarks and tests
(load average 4-16), 1,000,000 events: ``python -c pass`` 0.04 s, ``swf --help`` 0.64 s. Every
query 0.59-0.80 s as a command, 0.004-0.019 s in process; so the command's own start-up
(importing ``swf.cli`` with every command module) is the whole of what is over the target, and
the queries themselves meet it (in process + interpreter start: at most 0.06 s). Before,
``swf query execution`` took 2.5 s (1.85 s over ``swf --help``): its rejected-events lookup
walked the execution's index (every one of its events) instead of the tiny partial index of
rejected rows; that is fixed, with no new index. The other queries were already served by the
projection tables' keys and indexes (``--limit`` on the big tables).

Measured on the settled quiet machine (2026-11-28 16:22 UTC, load average under 1), 1M events:
the slowest query 0.433 s as a command, 12 ms in process; ``python -c pass`` 0.031 s, ``swf
--help`` 0.414 s. The query work meets the 0.3 s target with room to spare; the command does
not, by ``swf``'s start-up (SQLAlchemy ~0.12 s, the settings' pydantic and the adapters'
modules they import ~0.1 s, the event store and projections ~0.08 s).

Issue 15's start-up work (2026-11-28 19:15 UTC, another machine of the same kind, load average
0.5, bytecode compiled first - this machine kind sets PYTHONDONTWRITEBYTECODE, so the figures
above included compiling every module at every start): the settings without pydantic
(swf/fields.py), the click group importing them only when a command loads them, the adapters'
modules imported only by the settings' methods that need them. Instructions of ``swf query runs``
(callgrind, not disturbed by load): 1,767M before, 1,307M after; ``python -c pass`` is 143M and
``import sqlalchemy`` alone 948M. Timed: every query 0.295-0.349 s as a command (before, on this
machine: 0.41-0.46 s for ``query runs``), 3-18 ms in process, 15-28 ms of work in a fresh
process with the modules imported. The target is met by the query work and by 7 of 23 commands;
the slowest command is 0.05 s over it: SQLAlchemy's import is half of the command and the
interpreter with its site packages another 0.04 s.

Issue 15, third stop (2026-11-28 21:09-21:34 UTC, quiet, bytecode compiled): the query
commands no longer import the recorder, tenacity, the broker clients, tomllib, configparser,
difflib or the fold (``tests/test_startup.py``), the command's imports run with the collector
off, dataclasses get docstrings (no ``inspect.signature``): callgrind ``swf query runs``
1,308.6M -> 1,191.7M instructions. Every query 0.267-0.301 s (one round) and 0.245-0.304 s
(another; ``query tasks`` does 3 ms of work): 21-22 of 23 at or under 0.3 s, the slowest 1-4
ms over; before, on this machine, 0.299-0.326 s. ``python -c pass`` 0.030 s, ``swf --help``
0.262 s; SQLAlchemy's import is still about two thirds of every command.

Issue 15, sixth stop (2026-11-29 04:16 UTC, quiet, 1M events): every query 0.299-0.331 s as a
command, 3-16 ms in process: 1 of 23 at or under 0.3 s. ``python -c pass`` takes 0.038 s,
``import sqlalchemy`` alone 0.239 s, so SQLAlchemy's import is two thirds of every command;
the queries' own work meets the target with room.

Issue 15, seventh stop (2026-11-29 05:44 UTC, quiet, a machine about 2x faster than the sixth
stop's, 1M events, ``--repeat 5``): every query 0.185-0.205 s as a command, 2-8 ms in process:
23 of 23 under 0.3 s. ``python -c pass`` 0.027 s, ``swf --help`` 0.211 s, ``import
sqlalchemy`` alone 0.16 s. Nothing changed in the code since the sixth stop: the machine did.

Issue 15, eighth stop (2026-11-29 08:40 UTC, a machine about 1.45x slower than the seventh
stop's on a pure-Python loop, 1M events, ``--repeat 5``): every query 0.248-0.309 s as a
command, 2-15 ms in process: 21 of 23 at or under 0.3 s (one round of ``--repeat 3``: 0.248-0.358
s). ``python -c pass`` 0.037 s, ``swf --help`` 0.271 s, ``python -c "import sqlalchemy"`` 0.23
s: the interpreter and SQLAlchemy's import are nine tenths of every command here.

Issue 15, ninth stop (2026-11-29 09:50 UTC, 1M events, ``--repeat 3``): every query 0.274-0.303
s as a command, 3-14 ms in process: 21 of 23 at or under 0.3 s. ``python -c pass`` 0.032 s,
``swf --help`` 0.282 s. hyperfine, 20 runs each: ``swf query runs`` 0.269 s mean, ``python -c
"import sqlalchemy, sqlite3, click, orjson"`` 0.213 s: the project's own imports and the query
are the other 56 ms (of them imports about 35 ms: settings 4 ms, the tables 4 ms, the catalog
and its REST rules 4 ms, each needed by the command or by the modules it imports).

Issue 15, tenth stop (2026-11-29 11:31 UTC, a faster machine; no code change): every query
0.208-0.235 s as a command, 2-11 ms in process: all 23 under 0.3 s. ``python -c pass`` 0.028 s,
``swf --help`` 0.218 s; importing SQLAlchemy is about 0.1 s of each command (``-X importtime``).

Issue 15, twelfth stop (2026-11-29 13:56 UTC, a slower machine; no code change): every query
0.260-0.304 s as a command, 3-15 ms in process: 22 of 23 at or under 0.3 s. Best of seven fresh
processes: ``python -c pass`` 36 ms, ``import sqlalchemy`` 191-224 ms, ``swf query runs`` 272-290
ms. SQLAlchemy's import (with the asyncio and importlib.metadata it loads) is two thirds of every
command; the rest of the project's imports and the query's work about 50 ms.

Issue 15, thirteenth stop (2026-11-29 15:19 UTC, the slowest machine of these stops; no code
change): every query 0.337-0.598 s as a command, 5-20 ms in process: none under 0.3 s. ``python -c
pass`` 0.069 s, ``swf --help`` 0.405 s; importing SQLAlchemy is 194 ms of a 0.45 s query command
(``-X importtime``). Counted by callgrind (``instructions.py``, a 100k-event store): ``swf query
runs`` 1,196.2M instructions, against 1,192.5M for the tenth stop's tree (on the 1M store, with
string hashing seeded, twice each: 1,193.6M against 1,193.4M, the same every time), whose machine
answered every query in 0.208-0.235 s. Two runs at 16:17-16:19 UTC, the machine faster: the first's
slowest query 0.333 s; in the second every query 0.303-0.476 s (``python -c pass`` 0.047 s, ``swf
--help`` 0.328 s), none under 0.3 s. In instructions (callgrind, string hashing seeded), of the
1,193.6M of ``swf query runs``: the interpreter's start 145.5M, ``import sqlalchemy`` 805.4M more
(67% of the command), click, orjson, sqlite3 and SQLAlchemy's SQLite dialect 68.6M more; the
project's imports, opening the store, the catch-up check, the query and its output the remaining
174M (15%).
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
