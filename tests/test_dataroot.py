"""The data directory's claim: one store wins it, however many start at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agents.dataroot import MARKER, DataRootError, claim

CLAIMANTS = 8


def race(root: Path, ids: list[str]) -> list[str | None]:
    """Every id claims ``root`` at the same moment: per id, None (claimed) or the refusal."""
    start = threading.Barrier(len(ids))
    outcome: list[str | None] = [f"{store_id}: no outcome" for store_id in ids]

    def claimant(index: int) -> None:
        start.wait()
        try:
            claim(root, ids[index])
            outcome[index] = None
        except DataRootError as refused:
            outcome[index] = str(refused)

    threads = [threading.Thread(target=claimant, args=(index,)) for index in range(len(ids))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


@pytest.mark.parametrize("attempt", range(20))
def test_stores_starting_at_once_never_see_a_half_written_marker(tmp_path, attempt) -> None:
    root = tmp_path / "data"
    ids = [f"store-{attempt}-{n}" for n in range(CLAIMANTS)]
    outcome = dict(zip(ids, race(root, ids), strict=True))
    winners = [store_id for store_id, refused in outcome.items() if refused is None]
    assert len(winners) == 1
    owner = winners[0]
    assert (root / MARKER).read_text(encoding="utf-8") == owner + "\n"
    for store_id, refused in outcome.items():
        if store_id != owner:
            assert refused is not None and f"belongs to another store ({owner}," in refused
    assert sorted(path.name for path in root.iterdir()) == [MARKER]  # nothing left aside


def test_the_same_store_starting_many_times_at_once_always_gets_its_directory(tmp_path) -> None:
    root = tmp_path / "data"
    assert race(root, ["one-store"] * CLAIMANTS) == [None] * CLAIMANTS
    assert (root / MARKER).read_text(encoding="utf-8") == "one-store\n"
