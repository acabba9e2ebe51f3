"""The data directory's claim: one store wins it, however many start at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agents.dataroot import MARKER, DataRootError, claim

CLAIMANTS = 8


def race(root: Path, ids: list[str]) -> dict[str, str | None]:
    """Every id claims ``root`` at the same moment: id -> None (claimed) or the refusal."""
    start = threading.Barrier(len(ids))
    outcome: dict[str, str | None] = {}

    def claimant(store_id: str) -> None:
        start.wait()
        try:
            claim(root, store_id)
            outcome[store_id] = None
        except DataRootError as refused:
            outcome[store_id] = str(refused)

    threads = [threading.Thread(target=claimant, args=(store_id,)) for store_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


@pytest.mark.parametrize("attempt", range(20))
def test_stores_starting_at_once_never_see_a_half_written_marker(tmp_path, attempt) -> None:
    root = tmp_path / "data"
    ids = [f"store-{attempt}-{n}" for n in range(CLAIMANTS)]
    outcome = race(root, ids)
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
    start = threading.Barrier(CLAIMANTS)
    failures: list[BaseException] = []

    def claimant() -> None:
        start.wait()
        try:
            claim(root, "one-store")
        except BaseException as problem:  # noqa: BLE001 - reported by the assert below
            failures.append(problem)

    threads = [threading.Thread(target=claimant) for _ in range(CLAIMANTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert (root / MARKER).read_text(encoding="utf-8") == "one-store\n"
