"""Property tests of the projections over random valid executions, with the duplicates and
reorderings a real broker produces injected:

- incremental catch-up, with events arriving in random chunks and folded in random batch sizes,
  yields byte-equal tables to a full rebuild (SQLite and PostgreSQL);
- applying events a second time changes nothing;
- the tables do not depend on the order events arrive in (only on their content and times).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.catalog import examine
from eventstore.envelope import RESULT_QUEUE, SLICE_QUEUE, TOPIC, Incoming, format_time
from eventstore.store import EventStore
from projections import tables as t
from projections.derive import everything, render
from projections.fold import Fold, Item
from projections.projector import NAMES, Projector

NS = "prop"
BASE = datetime(2025, 5, 1, tzinfo=UTC)
Message = dict[str, Any]


@st.composite
def executions(draw: st.DrawFn) -> list[Message]:
    """One execution in the order its agents would send it; times strictly increase."""
    clock = iter(range(1, 10_000))
    execution = f"exec-{draw(st.integers(1, 3))}"
    messages: list[Message] = []

    def send(msg_type: str, run: int | None, sender: str = "agent", **payload: Any) -> None:
        messages.append({"msg_type": msg_type, "namespace": NS, "execution_id": execution,
                         "run_id": run, "sender": sender,
                         "timestamp": format_time(BASE + timedelta(seconds=next(clock))),
                         **payload})

    for run in range(300, 300 + draw(st.integers(1, 2))):
        scope, dataset = "group.daq", f"swf.{run}.run"
        send("run_imminent", run, workflow="fast_processing", workflow_params={"n": 1},
             state="beam", substate="not_ready")
        send("dataset_opened", run, scope=scope, dataset=dataset,
             outcome=draw(st.sampled_from(["ok", "ok", "exists", "error"])), error=None)
        send("start_run", run, state="run", substate="physics")
        for seq in range(1, draw(st.integers(0, 3)) + 1):
            stf = f"swf.{run}.{seq:06d}.stf"
            if draw(st.booleans()):
                send("pause_run", run, state="run", substate="standby")
                send("resume_run", run, state="run", substate="physics")
            send("stf_gen", run, filename=stf, sequence=seq, file_url=f"file:///e0/{stf}",
                 state="run", substate="physics")
            send("stf_ready", run, filename=stf, sequence=seq, size_bytes=100 * seq,
                 checksum=f"{seq:08x}", file_url=f"file:///e1/{stf}")
            send("file_attached", run, scope=scope, dataset=dataset, name=stf,
                 size_bytes=100 * seq, outcome=draw(st.sampled_from(["ok", "error"])))
            for k in range(1, draw(st.integers(0, 2)) + 1):
                tf = f"swf.{run}.{seq:06d}_tf_{k:03d}.tf"
                send("tf_file_registered", run, tf_filename=tf, stf_filename=stf,
                     tf_first=1, tf_last=30, tf_count=30)
                for slice_id in range(draw(st.integers(0, 3))):
                    _slice_life(draw, send, run, tf, stf, slice_id)
        if draw(st.booleans()):
            _upstream_workers(draw, send, messages, run, execution)
        send("end_run", run, total_stf_files=3, state="run", substate="end")
        if draw(st.booleans()):  # upstream's fast processing agent forwards it: the same fact
            original = dict(messages[-1])
            messages.append({"msg_type": "end_run", "run_id": str(run), "namespace": NS,
                             "sender": "fp-upstream", "created_at": _later(original),
                             "content": {**original, "execution_id": execution}})
        send("dataset_closed", run, scope=scope, dataset=dataset, outcome="ok")
        if draw(st.booleans()):
            task = draw(st.sampled_from([None, 7, 8]))
            send("panda_task_submitted", run, task_id=task, status="submitted",
                 input_dataset=f"{scope}:{dataset}", error=None if task else "no site")
            if task:
                send("panda_task_status", run, task_id=task,
                     status=draw(st.sampled_from(["running", "finished", "failed"])))
        if draw(st.booleans()):
            send("run_processed", run, status=draw(st.sampled_from(["completed", "failed"])))
    if draw(st.booleans()):  # an upstream runner's executions: the earlier one never ends
        for number, ending in enumerate(draw(st.lists(st.booleans(), min_size=1,
                                                      max_size=3)), 1):
            for msg_type in ("run_imminent", "start_run", *(("end_run",) if ending else ())):
                messages.append({"msg_type": msg_type, "namespace": NS,
                                 "execution_id": f"stf_datataking-u-{number:04d}",
                                 "run_id": str(900 + number), "sender": "runner-A",
                                 "simulation_tick": 5,
                                 "timestamp": format_time(BASE + timedelta(
                                     seconds=next(clock)))})
    for kind in draw(st.lists(st.sampled_from(
            ["run_workflow", "status_request", "stop_workflow", "stop_named", "heartbeat",
             "monitor_heartbeat"]), max_size=4)):
        stamp = format_time(BASE + timedelta(seconds=next(clock)))
        if kind == "stop_named":
            messages.append({"msg_type": "stop_workflow", "namespace": NS,
                             "execution_id": execution, "timestamp": stamp})
        elif kind == "heartbeat":
            messages.append({"msg_type": "heartbeat", "internal_id": "prop.ResultPublisher.h.1",
                             "namespace": NS, "timestamp": (BASE.timestamp() + next(clock))})
        elif kind == "monitor_heartbeat":
            messages.append({"agent_name": "old-agent", "status": "OK", "namespace": NS,
                             "timestamp": stamp})
        else:
            messages.append({"msg_type": kind, "namespace": NS, "workflow_name": "fast_processing",
                             "timestamp": stamp})
    for name in draw(st.lists(st.sampled_from(["a", "b"]), max_size=3)):
        send("agent_heartbeat", None, sender=name, agent_type="worker",
             status=draw(st.sampled_from(["OK", "WARNING"])))
        send("agent_log", None, sender=name, level=draw(st.sampled_from(["INFO", "ERROR"])),
             message="something happened", module="m")
    return messages


def _slice_life(draw: st.DrawFn, send: Any, run: int, tf: str, stf: str, slice_id: int
                ) -> None:
    """A slice's attempts: each is queued, maybe processing, then completed/failed/open."""
    worker = f"w{slice_id}"
    for retry in range(4):
        send("slice", run, slice_id=slice_id, tf_filename=tf, stf_filename=stf, start=1,
             end=10, tf_count=10, retry=retry)
        ending = draw(st.sampled_from(["completed", "failed", "failed", "open", "queued"]))
        if ending == "queued":
            return
        send("slice_result", run, slice_id=slice_id, tf_filename=tf, status="processing",
             worker=worker, retry=retry)
        if ending == "open":
            return
        send("slice_result", run, slice_id=slice_id, tf_filename=tf, status=ending,
             worker=worker, retry=retry, error="exit 1" if ending == "failed" else None)
        if ending == "completed":
            return


def _later(message: Message) -> str:
    return format_time(datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00"))
                       + timedelta(milliseconds=200))


def _upstream_workers(draw: st.DrawFn, send: Any, messages: list[Message], run: int,
                      execution: str) -> None:
    """What upstream's fast processing agent, PanDA workers, iDDS and transformer add to a run
    (shapes of replay.upstream): the workflow task's life, and failures naming no slice."""
    ids = {"request_id": 11, "transform_id": 12, "workload_id": 13}
    steps = draw(st.lists(st.sampled_from(
        ["announce", "create", "created", "adjust", "adjusted", "close", "closed", "stop",
         "failure", "ready"]), max_size=8))
    for step in steps:
        if step == "announce":
            send("run_imminent_worker", run, content={"msg_type": "run_imminent",
                                                      "target_worker_count": 30,
                                                      "core_count": 30})
        elif step == "create":
            send("create_workflow_task", run, content={"workflow": {
                "name": "EIC_2026_fastproc", "scope": "EIC_2026",
                "content": {"core_count": draw(st.sampled_from([30, 31])), "site": "BNL"}}})
        elif step in ("created", "close"):
            send(f"{step}_workflow_task", run, content=dict(ids))
        elif step == "closed":
            send("closed_workflow_task", run, content={**ids, "status": "closed"})
        elif step in ("adjust", "adjusted"):
            send(f"{step}_worker", run, content={**ids, "status": "adjusted",
                                                 "core_count": draw(st.integers(1, 99))})
        elif step == "stop":
            send("stop_transformer", run, content={"requested_at": None})
        elif step == "failure":
            send("slice_result", run, content={"state": "failed", "hostname": "w1",
                                               "result": {"state": False, "result": None,
                                                          "error": "exit 139"}})
        else:
            send("stf_ready", run, req_id=1)  # the per-run "data ready"


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Message], list[Message]]:
    """(the execution as sent, the same as delivered: with duplicates, messages of a foreign
    namespace, late and early arrivals). Every message gets its msg_id here."""
    sent = draw(executions())
    for serial, message in enumerate(sent):
        message["msg_id"] = f"id-{serial}"
    extra: list[Message] = []
    for index in draw(st.lists(st.integers(0, len(sent) - 1), max_size=6)):
        extra.append({**sent[index], "msg_id": f"dup-{len(extra)}"})  # re-sent, new id
    for index in draw(st.lists(st.integers(0, len(sent) - 1), max_size=4)):
        extra.append({**sent[index], "msg_id": f"far-{len(extra)}", "namespace": "foreign"})
    delivered = sent + extra
    rng = random.Random(draw(st.integers(0, 2**32)))
    for _ in range(draw(st.integers(0, 12))):  # move messages late or early
        message = delivered.pop(rng.randrange(len(delivered)))
        delivered.insert(rng.randrange(len(delivered) + 1), message)
    if draw(st.booleans()):  # the typical ones: results and samples after end_run ...
        late = [m for m in delivered if m.get("msg_type") in ("slice_result", "tf_file_registered")]
        for message in late[: draw(st.integers(0, 3))]:
            delivered.remove(message)
            delivered.append(message)
    return sent + extra, delivered


def incoming(message: Message) -> Incoming:
    destination = {"slice": SLICE_QUEUE, "slice_result": RESULT_QUEUE}.get(
        message.get("msg_type"), TOPIC)
    return Incoming.of(message, destination)


def items(messages: list[Message]) -> list[Item]:
    """Fold input straight from the catalog (positions by list order)."""
    out: list[Item] = []
    for position, message in enumerate(messages, 1):
        verdict = examine(incoming(message).body)
        assert verdict.data is not None, verdict.reason
        out.append((position, verdict.msg_type, verdict.namespace or "", verdict.execution_id,
                    verdict.run_id, verdict.sender, verdict.sent_at, verdict.data))
    return out


def snapshot(fold: Fold, drop_positions: bool = False) -> dict[str, list[str]]:
    everything(fold)
    changes = render(fold, NAMES)
    fold.clear_dirty()
    tables: dict[str, list[str]] = {}
    for table, rows in changes.upserts.items():
        if drop_positions and table in (t.logs, t.workflow_commands):  # keyed by position
            rows = [row[1:] for row in rows]
        tables[table.name] = sorted(map(repr, rows))
    return tables


@settings(max_examples=150, deadline=None)
@given(deliveries())
def test_applying_events_twice_changes_nothing(case: tuple[list[Message], list[Message]]) -> None:
    _sent, delivered = case
    log = items(delivered)
    fold = Fold()
    fold.feed(log)
    once = snapshot(fold)
    fold.feed(log)  # every event again, after all the others
    assert snapshot(fold) == once
    for item in reversed(log):  # and each one right after itself, in another order
        fold.feed([item, item])
    assert snapshot(fold) == once


@settings(max_examples=150, deadline=None)
@given(deliveries())
def test_arrival_order_does_not_matter(case: tuple[list[Message], list[Message]]) -> None:
    in_order, delivered = case
    first, second = Fold(), Fold()
    first.feed(items(in_order))
    second.feed(items(delivered))
    assert snapshot(first, drop_positions=True) == snapshot(second, drop_positions=True)


@pytest.fixture
def fresh_store(db_url: str) -> Iterator[Any]:
    """A factory of empty stores on the test database (one per hypothesis example)."""
    opened: list[EventStore] = []

    def make() -> EventStore:
        for store in opened:
            store.close()
        store = EventStore(db_url)
        Projector(store)
        with store.engine.begin() as conn:
            for table in [*t.metadata.sorted_tables, sa.table("events")]:
                conn.execute(sa.delete(table))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def dump(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {table.name: [tuple(row) for row in conn.execute(
            sa.select(table).order_by(*table.primary_key.columns))]
            for tables in t.PROJECTIONS.values() for table in tables}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=deliveries(), seed=st.integers(0, 2**32))
def test_catch_up_in_random_batches_equals_rebuild(
        fresh_store: Any, case: tuple[list[Message], list[Message]], seed: int) -> None:
    _sent, delivered = case
    store = fresh_store()
    projector = Projector(store)
    rng = random.Random(seed)
    rest = delivered + [{"msg_type": "slice_result", "msg_id": "bad", "namespace": NS}]
    while rest:  # events arrive in chunks; the projector catches up in its own batch sizes
        size = rng.randint(1, 12)
        chunk, rest = rest[:size], rest[size:]
        store.append(incoming(message) for message in chunk)
        projector.batch_size = rng.randint(1, 9)
        projector.catch_up()
    incremental = dump(store.engine)
    assert projector.rebuild() == len(delivered)  # the rejected one is not folded
    assert dump(store.engine) == incremental
    assert {row["lag"] for row in projector.status()} == {0}
