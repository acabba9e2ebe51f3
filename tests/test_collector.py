"""The cyclic collector stays off while a rebuild or a replay folds
(``eventstore.collector.quiet_gc``), and what they made is freed before it comes back on (a
replay's comparison, ``--until`` and ``--step`` alike): the first collection after would
otherwise scan every row still held (a tenth of a second at 1M events, in every rebuild
command)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from test_projections import EX, Env
from test_replay import replay
from test_store import incoming

from eventstore.store import EventStore

# A collection starts once its youngest generation outgrows its threshold (700 objects on
# CPython 3.11); thousands more than that are rows a rebuild or replay still held.
YOUNG_AT_MOST = 2 * gc.get_threshold()[0] + 600
SLICES = 2 * YOUNG_AT_MOST  # rows the rebuild renders, each a tuple the collector tracks


@pytest.fixture
def env(sqlite_url: str) -> Iterator[Env]:
    environment = Env(sqlite_url)  # (SQLite: its rebuild and replay read packed chunks)
    yield environment
    environment.store.close()


@contextmanager
def young_at_collections() -> Iterator[list[int]]:
    """The size of the youngest generation at the start of each collection in the block."""
    sizes: list[int] = []

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            sizes.append(len(gc.get_objects(generation=0)))

    assert gc.isenabled()
    gc.collect()
    gc.callbacks.append(seen)
    try:
        yield sizes
    finally:
        gc.callbacks.remove(seen)


def _many_slices(env: Env) -> int:
    messages = [*env.start(), *env.stf(0), env.sample(0)]
    messages += [env.slice(0, k) for k in range(SLICES)]
    env.send(*messages)
    return len(messages)


def test_a_rebuild_frees_its_rows_before_the_collector_is_back(env: Env) -> None:
    count = _many_slices(env)
    with young_at_collections() as sizes:
        assert env.projector.rebuild() == count
    assert max(sizes, default=0) < YOUNG_AT_MOST, sizes


@pytest.mark.parametrize("options", [(), ("--until", "1000000"), ("--step",)],
                         ids=["compare", "until", "step"])
def test_a_replay_frees_its_rows_before_the_collector_is_back(
        env: Env, sqlite_url: str, options: tuple[str, ...]) -> None:
    _many_slices(env)
    with young_at_collections() as sizes:
        result = replay(EX, "--db", sqlite_url, *options)
    assert result.exit_code == 0, result.output
    assert max(sizes, default=0) < YOUNG_AT_MOST, sizes


def test_an_append_runs_no_collection_and_leaves_the_collector_as_it_was(db_url: str) -> None:
    # Each message's parsed body and its event are objects the collector tracks: thousands of
    # them would start collections, which promote the batch's events still in use and so bring
    # on full collections of the whole process.
    messages = [incoming("slice", slice_id=k) for k in range(3 * YOUNG_AT_MOST)]
    starts: list[int] = []

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            starts.append(info["generation"])

    with EventStore(db_url) as store:
        gc.collect()
        gc.callbacks.append(seen)
        try:
            appended = store.append(messages)
        finally:
            gc.callbacks.remove(seen)
        assert len(appended.events) == len(messages)
        assert len(starts) <= 1, starts  # (one, as the block ends, for the events returned)
        assert gc.isenabled()
        gc.disable()  # a caller's choice is kept
        try:
            assert len(store.append([incoming("slice", slice_id=-1)]).events) == 1
            assert not gc.isenabled()
        finally:
            gc.enable()
