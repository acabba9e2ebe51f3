"""Upstream's runs over the real broker: every message of each workflow sent with stomp.py to
upstream's own destinations with upstream's headers (as BaseAgent sends: no content-length),
recorded by ``swf record`` as deployed (its default destinations, deploy/activemq's copies of
the work queues), gives the projections an import of the same messages gives. Times differ by
nature (the broker stamps its own), so rows are compared without their time columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
import stomp
from click.testing import CliRunner

from eventstore.schema import events
from eventstore.store import EventStore
from projections import tables as t
from projections.projector import Projector
from replay import upstream
from swf.cli import main

pytest.register_assert_rewrite("broker")
from broker import Cluster, timeless, wait_for  # noqa: E402

pytestmark = [pytest.mark.broker, pytest.mark.slow]
pytest_plugins = ["broker"]

RUNS = {"stf_datataking": upstream.stf_datataking_run,
        "prompt_processing": upstream.prompt_processing_run,
        "fast_processing": upstream.fast_processing_run}
NS = upstream.Testbed().namespace


def projections(url: str) -> dict[str, list[str]]:
    """Every projection row of the testbed's namespace, without time or position columns."""
    with EventStore(url) as store:
        Projector(store).rebuild()
        out: dict[str, list[str]] = {}
        with store.engine.connect() as conn:
            for tables in t.PROJECTIONS.values():
                for one in tables:
                    query = sa.select(one)
                    if "namespace" in one.c:
                        query = query.where(one.c.namespace == NS)
                    rows = [timeless(dict(row._mapping)) for row in conn.execute(query)]
                    out[str(one.name)] = sorted(repr(sorted(row.items())) for row in rows)
    return out


def recorded(url: str) -> int:
    with EventStore(url) as store, store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(events).where(
            events.c.namespace == NS)).scalar_one()


@pytest.mark.parametrize("workflow", sorted(RUNS))
def test_an_upstream_run_recorded_live_projects_as_its_import(broker: Any, tmp_path: Path,
                                                              workflow: str) -> None:
    wires = RUNS[workflow]()
    imported = f"sqlite:///{tmp_path / 'imported.db'}"
    lines = tmp_path / "run.jsonl"
    lines.write_bytes(upstream.import_lines(upstream.delivered(wires)))
    result = CliRunner().invoke(main, ["import", str(lines), "--db", imported, "--json"],
                                catch_exceptions=False)
    counts = orjson.loads(result.stdout_bytes)
    assert (counts["valid"], counts["rejected"]) == (len(wires), 0)

    cluster = Cluster(broker, tmp_path / "live", recorder_name=f"up-{workflow}")
    cluster.start_recorder()  # swf record, as deployed: no destination named
    bus = stomp.Connection([("127.0.0.1", broker.port)], auto_content_length=False)
    bus.connect(wait=True)
    try:
        for wire in wires:
            bus.send(destination=wire.destination, body=wire.body, headers=dict(wire.headers))
        wait_for(lambda: recorded(cluster.db_url) >= len(wires),
                 f"{len(wires)} messages of the {workflow} run recorded", timeout=60)
    finally:
        bus.disconnect()
        cluster.stop_all()
    assert recorded(cluster.db_url) == len(wires)  # each once
    live, expected = projections(cluster.db_url), projections(imported)
    assert {name: rows for name, rows in live.items() if rows} == {
        name: rows for name, rows in expected.items() if rows}
