"""What the events table's layout costs an append: plain sqlite3 inserts of the same rows into
variants of the table, so the design's price (the idempotency index on random ids, the indexes
the reads need) is measured, not guessed.

    python benchmarks/append_layouts.py [--events N] [--batch B]

Each variant is a fresh file (WAL, synchronous=NORMAL, the store's cache size), filled with
``executemany`` in transactions of ``--batch`` rows; the rows are built before the clock starts.

Measured 2026-11-28 on the shared 2-core VM (200,000 rows, transactions of 5,000, best of 3
interleaved rounds): the store's table 65.9k rows/s; 8 KiB pages 73.4k; 16 KiB pages 74.7k;
transactions 4x larger 72.3k; event_id as a 16-byte blob 66.0k; without the four read indexes
72.8k; without the unique index (no idempotency) 76.0k; multi-row VALUES of 100 rows 47.4k.
Chosen: 8 KiB pages for new stores, 20,000-message import transactions; the indexes stay (the
reads need them, idempotency needs the unique one; together they cost about a quarter).
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from benchmarks.append import baseline_rows, generate  # noqa: E402
from eventstore.engine import SQLITE_CACHE_KIB, SQLITE_WAL_AUTOCHECKPOINT  # noqa: E402

COLUMNS = ("position INTEGER PRIMARY KEY, event_id {id_type} NOT NULL, recorded_at TEXT, "
           "destination TEXT, headers BLOB, body BLOB, namespace TEXT, execution_id TEXT, "
           "run_id INTEGER, msg_type TEXT, sender TEXT, sent_at TEXT, schema_version INTEGER, "
           "reject_reason TEXT")
READ_INDEXES = ("CREATE INDEX ix_execution ON events (execution_id, position)",
                "CREATE INDEX ix_run ON events (run_id, position)",
                "CREATE INDEX ix_msg_type ON events (msg_type, position)",
                "CREATE INDEX ix_rejected ON events (position) WHERE reject_reason IS NOT NULL")
UNIQUE = "CREATE UNIQUE INDEX uq_event_id ON events (event_id)"
INSERT = f"INSERT INTO events VALUES ({', '.join('?' * 14)}) ON CONFLICT (event_id) DO NOTHING"

VARIANTS: dict[str, dict[str, Any]] = {
    "store's table (text id, unique + 4 read indexes)": {},
    "  page_size 8192": {"page_size": 8192},
    "  page_size 16384": {"page_size": 16384},
    "  batches 4x larger": {"batch_factor": 4},
    "  event_id as 16-byte blob": {"blob_ids": True},
    "  without the 4 read indexes": {"read_indexes": False},
    "  without the unique index (no idempotency!)": {"unique": False},
    "  multi-row VALUES (100 rows a statement)": {"multi_row": 100},
}


def fill(path: Path, rows: list[tuple[Any, ...]], batch: int, *, page_size: int = 4096,
         batch_factor: int = 1, blob_ids: bool = False, read_indexes: bool = True,
         unique: bool = True, multi_row: int = 0) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA page_size = {page_size}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT}")
    db.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    db.execute(f"CREATE TABLE events ({COLUMNS.format(id_type='BLOB' if blob_ids else 'TEXT')})")
    for statement in (READ_INDEXES if read_indexes else ()) + ((UNIQUE,) if unique else ()):
        db.execute(statement)
    if blob_ids:
        rows = [(row[0], uuid.UUID(row[1]).bytes, *row[2:]) for row in rows]
    insert = INSERT if unique else INSERT.split(" ON CONFLICT")[0]
    size = batch * batch_factor
    began = time.perf_counter()
    for start in range(0, len(rows), size):
        chunk = rows[start:start + size]
        db.execute("BEGIN IMMEDIATE")
        if multi_row:
            many = (f"INSERT INTO events VALUES "
                    f"{', '.join(['(' + ', '.join('?' * 14) + ')'] * multi_row)}"
                    + (" ON CONFLICT (event_id) DO NOTHING" if unique else ""))
            whole = len(chunk) - len(chunk) % multi_row
            for at in range(0, whole, multi_row):
                db.execute(many, [value for row in chunk[at:at + multi_row] for value in row])
            db.executemany(insert, chunk[whole:])
        else:
            db.executemany(insert, chunk)
        db.execute("COMMIT")
    seconds = time.perf_counter() - began
    db.close()
    return seconds


@click.command()
@click.option("--events", "count", default=200_000, show_default=True)
@click.option("--batch", default=5000, show_default=True)
@click.option("--repeat", default=3, show_default=True,
              help="Rounds over all variants (interleaved, so load from other processes is "
                   "spread over them); the best round of each counts.")
def main(count: int, batch: int, repeat: int) -> None:
    rows = baseline_rows(generate(count))
    click.echo(f"{count} rows, transactions of {batch}, best of {repeat} interleaved rounds")
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_number in range(repeat):
            for number, (name, options) in enumerate(VARIANTS.items()):
                path = Path(scratch) / f"v{number}-{round_number}.db"
                seconds = fill(path, rows, batch, **options)
                path.unlink()
                best[name] = min(best.get(name, seconds), seconds)
    for name, seconds in best.items():
        click.echo(f"{name:<52} {seconds:>6.2f} s {count / seconds:>10,.0f} rows/s")


if __name__ == "__main__":
    main()
