"""Instructions, not seconds: the issue's workloads counted by callgrind, which neither the
machine's speed nor its neighbours move.

    python benchmarks/instructions.py [--events N] [--stf-count N] [--tree DIR]

This machine kind's speed has varied up to 3x from one session to the next, and by a fifth
within minutes (``contention.py`` measures what a busy neighbour adds), so the wall times of two
trees compare only when they are measured alternately in one session. Instructions compare
across sessions: callgrind counts the same total for the same binary, inputs and environment,
whatever else the machine does (string hashing is seeded, ``PYTHONHASHSEED=0``, so that dicts
and sets are laid out alike in every run: a query command counted twice gave the same count).
They are not time - cache misses, the overlap of two threads and the kernel's work are not in
them - so they track what the code asks of the machine, not the targets themselves; wall-time
benchmarks still decide those.

Each workload runs as a command under ``valgrind --tool=callgrind`` (every thread counted), from
compiled bytecode as an installed ``swf`` starts, in a scratch folder:

- the interpreter's start (``python -c pass``), the floor under every command;
- ``swf run`` of the default workflow in an empty folder;
- ``swf run`` of the production run's workflow at ``--stf-count`` STFs instead of 6,000 (under
  callgrind a command runs about 40 times slower);
- on the rebuild benchmark's synthetic log of ``--events`` events (``projections.py``, built
  first without callgrind): the raw read + decode of its bodies (the rebuild's baseline: sqlite3
  and orjson only), ``swf projections rebuild``, ``swf-replay`` of its execution and
  ``swf query runs``.

``--tree`` counts another checkout's commands on the same workloads (the log is still built by
this one), so a tree from before this script existed is counted the same way:

    git worktree add /tmp/before <commit> && python benchmarks/instructions.py --tree /tmp/before

Needs valgrind (Debian's package; on every machine of this kind).

Budgets: at the default sizes each workload's count is held against the count of the tenth stop's
tree (82d6e58), which met every wall-time target of issue 15 on its machine (``BUDGETS``, with a
tolerance of 1%); the script exits with status 1 when one is over. Every stop's figures:
``benchmarks/HISTORY.md``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a source checkout

from append import CLI as SWF  # noqa: E402
from bigstore import log_builder  # noqa: E402
from bytecode import compile_project  # noqa: E402

from eventstore.store import EventStore  # noqa: E402
from projections.source import CHUNK  # noqa: E402

# The tenth stop's tree (82d6e58) met every wall-time target of issue 15 on its machine. Its
# counts at the defaults are the budgets a tree is held to on any machine: within them, a tree
# asks of the machine what that one did. The tolerance covers what moves a count without a
# change of code (the folder a command runs from: 0.05%) and the collector's pause during an
# append, which adds 0.3% of instructions to the run at 200 STFs and saves time.
DEFAULT_EVENTS, DEFAULT_STF_COUNT = 100_000, 200
BUDGET_TOLERANCE = 0.01
BUDGETS = {
    "swf run (default workflow)": 1_640_700_000,
    f"swf run, {DEFAULT_STF_COUNT} STFs": 4_866_800_000,
    "swf projections rebuild": 6_340_900_000,
    "swf-replay of its execution": 6_256_700_000,
    "swf query runs": 1_193_100_000,
}

# The rebuild's baseline as a command of its own: what projections.py's ``raw_all`` times in
# process (its query and chunk size are the arguments), with nothing of the project imported.
RAW_READ = """
import sqlite3, sys, orjson
connection = sqlite3.connect(sys.argv[1])
loads = orjson.loads
cursor = connection.execute(sys.argv[2])
while rows := cursor.fetchmany(int(sys.argv[3])):
    for row in rows:
        loads(row[1])
"""


def instructions(argv: list[str], folder: Path, tree: Path) -> int:
    """Instructions ``argv`` executes with the project's modules from ``tree``, all its threads
    counted; its failure is an error."""
    counts = folder / "callgrind.out"
    done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={counts}",
                           *argv], cwd=folder, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"})
    if done.returncode != 0:
        raise click.ClickException(f"{' '.join(argv[:4])} failed ({done.returncode}): "
                                   f"{done.stderr[-2000:]}")
    for line in counts.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise click.ClickException(f"no totals in {counts}")


def stored_events(path: Path) -> int:
    with closing(sqlite3.connect(path)) as connection:
        return int(connection.execute("SELECT count(*) FROM events").fetchone()[0])


@click.command()
@click.option("--events", default=DEFAULT_EVENTS, show_default=True, help="Size of the log.")
@click.option("--stf-count", default=DEFAULT_STF_COUNT, show_default=True,
              help="STFs of the big run.")
@click.option("--tree", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=ROOT, show_default="this checkout",
              help="The checkout whose commands are counted.")
def main(events: int, stf_count: int, tree: Path) -> None:
    """Instructions of each workload, per event where it has events, and at the default sizes
    whether each is within its budget (exit status 1 if one is over)."""
    logging.basicConfig(level=logging.WARNING)
    if shutil.which("valgrind") is None:
        raise click.ClickException("valgrind is not installed (apt-get install valgrind)")
    tree = tree.resolve()
    compile_project(tree)
    python = sys.executable  # the interpreter itself: valgrind does not follow a shim's exec
    rows: list[tuple[str, int, int]] = []  # workload, instructions, events

    def count(name: str, argv: list[str], events_done: int = 0) -> int:
        """Count ``argv``'s instructions in a scratch folder; a run's events are those its
        store (``swf.db`` there) holds afterwards."""
        with tempfile.TemporaryDirectory() as scratch:
            total = instructions(argv, Path(scratch), tree)
            if (Path(scratch) / "swf.db").exists():
                events_done = stored_events(Path(scratch) / "swf.db")
        rows.append((name, total, events_done))
        click.echo(f"  {name}: {total / 1e6:,.1f}M", err=True)
        return total

    count("python -c pass", [python, "-c", "pass"])
    count("swf run (default workflow)", [python, "-c", SWF, "run", "--db", "sqlite:///swf.db"])
    count(f"swf run, {stf_count} STFs", [
        python, "-c", SWF, "run", "--db", "sqlite:///swf.db",
        "--set", f"fast_processing.stf_count={stf_count}"])
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "log.db"
        builder = log_builder()
        with EventStore(f"sqlite:///{path}") as store:
            builder.build(store, events)
            logged = store.head()
        url = f"sqlite:///{path}"
        raw = count("raw read + decode", [python, "-c", RAW_READ, str(path),
                                          builder.RAW_READ_SQL, str(CHUNK)], logged)
        rebuild = count("swf projections rebuild",
                        [python, "-c", SWF, "projections", "rebuild", "--db", url], logged)
        replay = count("swf-replay of its execution",
                       [python, "-m", "replay", builder.EXECUTION, "--db", url], logged)
        started = count("swf query runs", [python, "-c", SWF, "query", "runs", "--db", url])
    bare = rows[0][1]  # python -c pass
    budgets = BUDGETS if (events, stf_count) == (DEFAULT_EVENTS, DEFAULT_STF_COUNT) else {}
    # A budget is found by its workload's name, written here and in BUDGETS: one that names no
    # workload counted would otherwise go unchecked without a word.
    if unmatched := sorted(set(budgets) - {name for name, _total, _events in rows}):
        raise click.ClickException(f"budgets for no workload counted: {', '.join(unmatched)}")
    click.echo(f"{'workload':<36} {'instructions':>16} {'events':>9} {'per event':>10}  budget")
    over = []
    for name, total, events_done in rows:
        each = f"{total / events_done:>10,.0f}" if events_done else ""
        budget = budgets.get(name)
        shown = ""
        if budget is not None:
            fits = total <= budget * (1 + BUDGET_TOLERANCE)
            shown = (f"{'within' if fits else 'OVER'} ({total / budget - 1:+.2%} of "
                     f"{budget / 1e6:,.1f}M)")
            if not fits:
                over.append(name)
        click.echo(f"{name:<36} {total:>16,} {events_done or '':>9} {each:>10}  {shown}")
    click.echo(f"rebuild / raw read + decode: {rebuild / raw:.2f}x; replay / raw read + decode: "
               f"{replay / raw:.2f}x (instructions, start-up included)")
    # A query command is swf's start-up with the store opened and little else: taken as the
    # commands' fixed cost, as the interpreter's start is the raw read's.
    click.echo(f"without start-up (the query command's count for swf's, python -c pass for the "
               f"raw read's): rebuild {(rebuild - started) / (raw - bare):.2f}x, replay "
               f"{(replay - started) / (raw - bare):.2f}x the raw read + decode")
    if over:
        click.echo(f"over budget: {', '.join(over)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
