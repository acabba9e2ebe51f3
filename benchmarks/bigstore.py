"""What the read benchmarks share: the big synthetic log of ``projections.py`` and the options
that say where its SQLite store lives.

``projections.py`` is loaded by path: the name ``projections`` is the package it measures.
Import this module from a benchmark run as a script (its folder is then first on sys.path).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


@functools.cache
def log_builder() -> ModuleType:
    """``projections.py``: its ``build(store, events)``, ``EXECUTION`` and ``RUN``."""
    spec = importlib.util.spec_from_file_location("bench_projections",
                                                  Path(__file__).with_name("projections.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def store_options(function: F) -> F:
    """--events, --db and --keep: the size of the log and where its store is."""
    function = click.option("--keep", is_flag=True,
                            help="Reuse --db if it already holds the log.")(function)
    function = click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path),
                            help="SQLite file to build (default: a temporary file).")(function)
    return click.option("--events", default=1_000_000, show_default=True,
                        help="Size of the log.")(function)


def store_path(db_path: Path | None, keep: bool, scratch: str, name: str) -> Path:
    """The store's file: --db, else ``name`` in the scratch directory; an existing --db is
    refused unless --keep, so a benchmark never measures a log it did not mean to."""
    path = db_path or Path(scratch) / name
    if path.exists() and not keep:
        raise click.UsageError(f"{path} exists; remove it or pass --keep")
    return path
