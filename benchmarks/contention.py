"""What a busy second core costs this machine's work: the issue's baselines and the rebuild's
own steps, each timed alone and beside a process that keeps the other core busy.

    python benchmarks/contention.py [--events N] [--db PATH] [--keep] [--pg-url URL]
                                    [--messages N] [--rounds N]

Two of issue 15's targets hold work that keeps both cores busy - a rebuild's read-ahead thread
beside its fold's thread, a PostgreSQL append's client beside its server - to a baseline that
keeps one core busy: the raw read + decode, the raw COPY (whose client is nearly idle). Such a
ratio assumes that a busy core leaves the other's speed alone. On a virtual machine's two vCPUs
it need not (caches and memory bandwidth are shared, and the host may run both on one physical
core), so this measures it, in one run, for:

- the raw read + decode of the rebuild benchmark's log (``projections.py``; ``--events``,
  ``--db``, ``--keep`` as there);
- the fold's thread's own steps on that log, one after another: parse, fold (with the memory
  budget) and render (``projections.py``'s ``steps`` without its read);
- a raw binary COPY of ``append.py``'s messages into PostgreSQL, with the server's CPU.

Each runs alone, then beside the neighbour, ``--rounds`` times. The neighbour is a Python process
writing a dict of a million entries at scattered keys: the kind of work the fold and the
append's client do. The slowdown is the median beside it over the median alone.

Measured 2026-11-29 15:29 UTC (issue 15, thirteenth stop; 1M events, 200,000 messages, three
rounds), seconds alone and beside the neighbour: raw read + decode 1.95, 2.06, 2.63 and 2.89,
2.26, 2.06 (1.10x); the fold's thread's steps 4.10, 5.64, 4.77 and 5.73, 5.13, 5.26 (1.10x);
the raw COPY 3.65, 2.87, 3.56 and 4.50, 4.04, 3.84 (1.13x; its server 2.63-3.48 s of CPU alone,
3.43-4.04 s beside). So two busy vCPUs give this machine about 1.8 cores' worth, and the spread
within each column (the machine's own noise) is as large as the slowdown.
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a source checkout

from append import (  # noqa: E402
    DEFAULT_BATCH,
    DEFAULT_PG,
    generate,
    pg_copy_baseline,
    scratch_schemas,
    timed,
)
from bigstore import log_builder, store_options, store_path  # noqa: E402

from eventstore.store import EventStore  # noqa: E402

# Writes scattered over a million keys; says "busy" once running, so no sleep stands in for
# knowing that it is.
NEIGHBOUR = """
import itertools, sys
state = {}
print("busy", flush=True)
for i in itertools.count():
    state[(i * 2654435761) % 1_000_003] = i
"""


@contextmanager
def busy_core(on: bool) -> Iterator[None]:
    """With ``on``, a neighbour process keeps a core busy for the block."""
    if not on:
        yield
        return
    neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], stdout=subprocess.PIPE,
                                 text=True)
    try:
        assert neighbour.stdout is not None
        if neighbour.stdout.readline().strip() != "busy":
            raise click.ClickException("the neighbour process did not start")
        yield
    finally:
        neighbour.kill()
        neighbour.wait()


def fold_steps(builder: ModuleType, store: EventStore) -> float:
    """The fold's thread's steps (parse, fold, render), summed; the read is left out."""
    spent = builder.steps(store)
    return sum(value for name, value in spent.items() if name != "read")


@click.command()
@store_options
@click.option("--pg-url", default=DEFAULT_PG, show_default=True,
              help="PostgreSQL server for the raw COPY (scratch schemas); '' to skip")
@click.option("--messages", "message_count", default=200_000, show_default=True,
              help="Messages the raw COPY writes.")
@click.option("--rounds", default=3, show_default=True, help="Alone/beside pairs per workload.")
def main(events: int, db_path: Path | None, keep: bool, pg_url: str, message_count: int,
         rounds: int) -> None:
    """Each baseline alone and beside a busy core, alternating."""
    logging.basicConfig(level=logging.WARNING)
    builder = log_builder()
    timings: dict[str, dict[bool, list[float]]] = {}

    def note(name: str, beside: bool, value: float) -> None:
        timings.setdefault(name, {False: [], True: []})[beside].append(value)

    with tempfile.TemporaryDirectory() as scratch:
        path = store_path(db_path, keep, scratch, "bench.db")
        with EventStore(f"sqlite:///{path}") as store:
            if store.head() == 0:
                builder.build(store, events)
            read_name = f"raw read + decode ({store.head():,} events)"
            for _round in range(rounds):
                for beside in (False, True):
                    with busy_core(beside):
                        note(read_name, beside, timed(lambda: builder.raw_all(store))[1])
                        note("fold's thread: parse, fold, render", beside,
                             fold_steps(builder, store))
    cpu: dict[bool, list[str]] = {False: [], True: []}
    if pg_url:
        messages = generate(message_count)
        with scratch_schemas(pg_url, 2 * rounds) as urls:
            for index, url in enumerate(urls):
                beside = index % 2 == 1
                with busy_core(beside):
                    _count, elapsed, used = pg_copy_baseline(url, messages, DEFAULT_BATCH)
                note(f"PostgreSQL raw COPY ({message_count:,} messages)", beside, elapsed)
                cpu[beside].append(used)
    click.echo(f"{'measurement':<40} {'alone (s)':>22} {'beside a busy core (s)':>24} "
               f"{'slowdown':>9}")
    for name, runs in timings.items():
        alone, beside_it = runs[False], runs[True]
        if not alone or not beside_it:
            continue
        ratio = statistics.median(beside_it) / statistics.median(alone)
        click.echo(f"{name:<40} {' '.join(f'{s:.2f}' for s in alone):>22} "
                   f"{' '.join(f'{s:.2f}' for s in beside_it):>24} {ratio:>8.2f}x")
    if cpu[False]:
        click.echo(f"  COPY CPU s client/server: alone {', '.join(cpu[False])}; "
                   f"beside {', '.join(cpu[True])}")


if __name__ == "__main__":
    main()
