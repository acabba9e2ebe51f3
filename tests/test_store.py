"""Append, idempotency, rejected input, run resolution, read filters: SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import postgres as postgres_recorder
from eventstore.catalog import MAX_BODY_BYTES
from eventstore.envelope import SLICE_QUEUE, TOPIC, Incoming
from eventstore.store import EventStore

T0 = "2025-06-01T12:00:00.000000Z"


def message(msg_type: str = "stf_gen", **fields: Any) -> dict[str, Any]:
    """A valid message of our own senders; ``fields`` override or add (None removes)."""
    base: dict[str, Any] = {"msg_type": msg_type, "msg_id": str(uuid.uuid4()),
                            "execution_id": "exec-1", "run_id": 101, "sender": "daq",
                            "timestamp": T0}
    if msg_type in ("stf_gen", "stf_ready"):
        base.update(filename="swf.101.000001.stf", sequence=1)
    elif msg_type == "slice":
        base.update(slice_id=1, tf_filename="a_tf_001.tf", start=0, end=9)
    elif msg_type == "agent_heartbeat":
        base.update(agent_type="data")
    base.update(fields)
    return {name: value for name, value in base.items() if value is not None}


def incoming(msg_type: str = "stf_gen", destination: str = TOPIC, **fields: Any) -> Incoming:
    return Incoming.of(message(msg_type, **fields), destination)


@pytest.fixture
def store(db_url: str) -> Iterator[EventStore]:
    with EventStore(db_url) as opened:
        yield opened


def test_round_trip_keeps_bytes_and_normalizes(store: EventStore) -> None:
    raw = (b'{"msg_type": "stf_ready", "msg_id": "m-1", "run_id": "101", "execution_id": "e",'
           b' "filename": "swf.101.000001.stf", "size": 42, "checksum": "ad:ABC",'
           b' "timestamp": "2025-06-01T14:00:00+02:00"}  ')
    sent = [Incoming(TOPIC, raw, {"message-id": "ID:x-1", "persistent": "true"}),
            incoming("slice", SLICE_QUEUE), incoming("agent_heartbeat", run_id=None)]
    result = store.append(sent)
    assert [event.position for event in result.events] == [1, 2, 3]
    assert result.duplicates == [] and result.rejected == 0
    back = list(store.read())
    assert [event.body for event in back] == [m.body for m in sent]
    assert back[0].headers == {"message-id": "ID:x-1", "persistent": "true"}
    assert back[0].event_id == "m-1" and back[0].run_id == 101
    assert back[0].sent_at == "2025-06-01T12:00:00.000000Z"
    assert back[0].data is not None
    assert back[0].data["size_bytes"] == 42 and back[0].data["checksum"] == "00000abc"
    assert back[0].data == result.events[0].data
    assert back[1].destination == SLICE_QUEUE and back[1].msg_type == "slice"
    assert back[2].run_id is None and back[2].execution_id == "exec-1"
    assert [e.recorded_at for e in back] == [e.recorded_at for e in result.events]
    assert back == result.events
    assert store.head() == 3


def test_reappend_is_a_reported_noop(store: EventStore) -> None:
    batch = [incoming(), incoming("slice", SLICE_QUEUE), Incoming(TOPIC, b"junk")]
    first = store.append(batch)
    again = store.append(batch)
    assert again.events == [] and again.rejected == 0
    assert again.duplicates == [event.event_id for event in first.events]
    assert store.head() == 3
    assert len(list(store.read())) == 3


def test_repeats_inside_one_batch(store: EventStore) -> None:
    a, b = incoming(), incoming()
    result = store.append([a, b, a, a])
    assert [event.body for event in result.events] == [a.body, b.body]
    assert result.duplicates == [result.events[0].event_id] * 2
    assert [event.event_id for event in store.read()] == [e.event_id for e in result.events]


def test_event_id_sources(store: EventStore) -> None:
    with_id = incoming(msg_id="sender-id-1")
    no_id = message(msg_id=None)
    brokered = Incoming.of(no_id, TOPIC, **{"message-id": "ID:broker-9"})
    anonymous = Incoming.of(no_id, TOPIC)
    elsewhere = Incoming.of(no_id, SLICE_QUEUE)
    result = store.append([with_id, brokered, anonymous, elsewhere])
    digest = hashlib.blake2b(TOPIC.encode() + b"\0" + anonymous.body, digest_size=16)
    assert [event.event_id for event in result.events] == [
        "sender-id-1", "broker:ID:broker-9", f"sha:{digest.hexdigest()}",
        result.events[3].event_id]
    assert result.events[3].event_id.startswith("sha:")
    assert result.events[3].event_id != result.events[2].event_id  # destination is hashed too
    # The sender's msg_id wins over the broker's id: a redelivery under a new message-id is
    # still the same event.
    redelivered = Incoming(TOPIC, with_id.body, {"message-id": "ID:other"})
    assert store.append([redelivered]).duplicates == ["sender-id-1"]
    assert store.append([Incoming.of(no_id, TOPIC)]).duplicates == [result.events[2].event_id]


BAD_INPUTS = [
    ("not json", b"{not json", "not JSON"),
    ("binary", bytes(range(256)), "not JSON"),
    ("empty", b"", "empty body"),
    ("blank", b"  \n", "empty body"),
    ("array", b"[1, 2]", "a JSON array"),
    ("scalar", b"42", "a JSON int"),
    ("string", b'"stf_gen"', "a JSON str"),
    ("no msg_type", orjson.dumps({"run_id": 1}), "missing msg_type"),
    ("unknown msg_type", orjson.dumps(message("teleport")), "unknown msg_type 'teleport'"),
    ("missing field", orjson.dumps(message(filename=None)), "missing required field"),
    ("ill-typed field", orjson.dumps(message("slice", slice_id="one")),
     "slice.slice_id must be an integer"),
    ("ill-typed run_id", orjson.dumps(message(run_id=[1])), "run_id must be an integer"),
    ("ill-typed msg_id", orjson.dumps(message(msg_id=5)), "msg_id must be a string"),
    ("bad timestamp", orjson.dumps(message(timestamp="yesterday")), "not an ISO-8601"),
    ("no run", orjson.dumps(message(run_id=None)), "needs a run_id"),
    ("oversize", b'{"msg_type": "stf_gen", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}',
     "over the 1048576-byte limit"),
]


def test_every_bad_input_is_stored_with_its_reason(store: EventStore) -> None:
    good = incoming()
    batch = [good] + [Incoming(TOPIC, body) for _name, body, _reason in BAD_INPUTS]
    result = store.append(batch)
    assert len(result.events) == len(batch)
    assert result.rejected == len(BAD_INPUTS)
    rejected = list(store.read(valid=False))
    assert [event.body for event in rejected] == [body for _n, body, _r in BAD_INPUTS]
    for event, (name, _body, reason) in zip(rejected, BAD_INPUTS, strict=True):
        assert event.reject_reason is not None and reason in event.reject_reason, name
        assert event.data is None and not event.valid
    assert [event.body for event in store.read(valid=True)] == [good.body]
    assert all(event.data is None for event in result.events[1:])


def test_hostile_values_never_fail_an_append(store: EventStore) -> None:
    prefix = "m" * 1000
    sent = [
        incoming(msg_id=prefix + "-a"), incoming(msg_id=prefix + "-b"),  # long, shared prefix
        incoming(msg_id="nul\x00id", execution_id="exec\x00nul", sender="s\x00"),
        incoming("bad\x00type"),
        incoming(execution_id="e" * 5000, namespace="n" * 5000),
        Incoming(TOPIC, b'{"msg_type": "stf_gen", "run_id": 9223372036854775808, "filename": "f"}'),
        incoming(run_id=str(1 << 64)),
        Incoming("/topic/odd\x00name", b'{"msg_type": "agent_log"}'),
    ]
    result = store.append(sent)
    assert len(result.events) == len(sent)
    assert store.append(sent).duplicates == [event.event_id for event in result.events]
    back = list(store.read())
    assert [event.body for event in back] == [m.body for m in sent]
    ids = [event.event_id for event in back]
    assert len(set(ids)) == len(ids) and ids[0].startswith("long:")
    assert ids[2] == "nul\ufffdid" and back[2].execution_id == "exec\ufffdnul" and back[2].valid
    assert back[3].msg_type == "bad\ufffdtype" and not back[3].valid
    assert back[4].valid and back[4].data is not None
    assert back[4].data["execution_id"] == "e" * 5000  # data comes from the untouched body
    assert back[4].execution_id is not None and len(back[4].execution_id) <= 512
    for event in back[5:7]:
        assert event.run_id is None and "does not fit in 64 bits" in (event.reject_reason or "")
    assert back[7].destination == "/topic/odd\ufffdname"


def test_one_identity_rule_for_the_store_the_live_host_and_fixtures(store: EventStore) -> None:
    """``identity.as_stored`` (the live host, the fixture check) gives the ids the store gives,
    hostile values included; ``RunExecutions`` infers what the store infers."""
    from eventstore.identity import RunExecutions, as_stored

    sent = [incoming(msg_id="m" * 1000), incoming(msg_id="nul\x00id"), incoming(msg_id=None),
            Incoming.of(message(msg_id=None), SLICE_QUEUE, **{"message-id": "ID:b-1"}),
            Incoming("/topic/odd\x00name", b'{"msg_type": "agent_log"}'),
            Incoming.of({"msg_type": "stf_ready", "msg_id": "bare", "run_id": 101,
                         "filename": "swf.101.000002.stf"})]
    result = store.append(sent)
    runs = RunExecutions()
    ours = [as_stored(m.destination, m.headers, m.body, "t") for m in sent]
    for event in ours:
        runs.resolve(event)
    assert [e.event_id for e in ours] == [e.event_id for e in result.events]
    assert [e.destination for e in ours] == [e.destination for e in result.events]
    assert [e.execution_id for e in ours] == [e.execution_id for e in result.events]
    assert ours[-1].execution_id == "exec-1"  # from the run, as the store inferred it


def test_a_snapshot_reads_one_moment(store: EventStore) -> None:
    first = store.append([incoming(msg_id="a")]).events[0]
    with store.snapshot() as view:
        assert view.head() == first.position
        store.append([incoming(msg_id="b")])  # commits while the snapshot is open
        assert view.head() == first.position and view.count_after(0) == 1
        assert view.stored_ids(["a", "b"]) == {"a"}
        rows, covered = view.fold_rows(0, first.position + 10, 10)
        assert [row[0] for row in rows] == [first.position] and covered == first.position + 10
    assert store.stored_ids(["a", "b"]) == {"a", "b"} and store.count_after(0) == 2


def test_restore_keeps_rows_as_stored_and_appends_follow_them(store: EventStore) -> None:
    store.append([incoming(msg_id="x"), incoming(msg_id="y")])
    with store.snapshot() as view:
        rows = view.export_rows("exec-1", store.head(), [])
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM events")
    shifted = [(row[0] + 40, *row[1:]) for row in rows]  # positions after a gap
    store.restore(shifted)
    with store.snapshot() as view:
        assert view.export_rows("exec-1", 1000, []) == shifted
    assert [event.event_id for event in store.read()] == ["x", "y"]
    later = store.append([incoming(msg_id="z")]).events[0]
    assert later.position > shifted[-1][0]  # PostgreSQL: the sequence moved past them


def test_wrong_namespace_is_rejected_when_the_store_has_one(db_url: str) -> None:
    with EventStore(db_url, namespace="epic-a") as store:
        ours, theirs, none = (incoming(namespace="epic-a"), incoming(namespace="epic-b"),
                              incoming())
        result = store.append([ours, theirs, none])
        assert [event.valid for event in result.events] == [True, False, False]
        assert "'epic-b' is not this store's 'epic-a'" in (result.events[1].reject_reason or "")
        assert [event.body for event in store.read(valid=False)] == [theirs.body, none.body]
        assert [event.namespace for event in store.read(namespace="epic-b")] == ["epic-b"]


def test_execution_resolved_from_the_run(db_url: str) -> None:
    upstream = {"msg_type": "stf_ready", "run_id": "7", "filename": "swf.7.000001.stf",
                "namespace": "ns"}
    with EventStore(db_url) as store:
        orphan = store.append([Incoming.of({**upstream, "msg_id": "before"})])
        assert orphan.events[0].execution_id is None  # nothing earlier to learn it from
        store.append([incoming("run_imminent", run_id=7, execution_id="exec-7", namespace="ns"),
                      incoming("run_imminent", run_id=7, execution_id="other-ns",
                               namespace="ns2")])
    # A fresh store object: no cache, the execution must come from the stored events.
    with EventStore(db_url) as store:
        later = store.append([Incoming.of({**upstream, "msg_id": "after"}),
                              Incoming.of({**upstream, "msg_id": "other", "namespace": "ns2"}),
                              Incoming.of({**upstream, "msg_id": "unknown-run", "run_id": 8})])
        assert [e.execution_id for e in later.events] == ["exec-7", "other-ns", None]
        assert later.events[0].data is not None
        assert later.events[0].data["execution_id"] == "exec-7"
        read_back = [e.event_id for e in store.read(execution_id="exec-7")]
        assert read_back == [read_back[0], "after"]
        assert next(iter(store.read(after=later.events[0].position - 1))).data == \
            later.events[0].data
        # Inside one batch: the batch's earlier event decides; later ones never reach back.
        batch = store.append([Incoming.of({**upstream, "run_id": 9, "msg_id": "b1"}),
                              incoming("run_imminent", run_id=9, execution_id="exec-9",
                                       namespace="ns"),
                              Incoming.of({**upstream, "run_id": 9, "msg_id": "b2"})])
        assert [e.execution_id for e in batch.events] == [None, "exec-9", "exec-9"]
        # A run's execution changing back and forth in one batch: always the latest one.
        flip = store.append([
            incoming("run_imminent", run_id=10, execution_id=execution, namespace="ns")
            if execution else Incoming.of({**upstream, "run_id": 10, "msg_id": f"f{index}"})
            for index, execution in enumerate(["A", "A", None, "B", None, "A", None])])
        assert [e.execution_id for e in flip.events] == ["A", "A", "A", "B", "B", "A", "A"]


def test_read_filters(store: EventStore) -> None:
    sent = [
        incoming("run_imminent", execution_id="A", run_id=1, timestamp="2025-01-01T00:00:00Z"),
        incoming(execution_id="A", run_id=1, timestamp="2025-01-01T00:00:01Z"),
        incoming("stf_ready", execution_id="A", run_id=1, timestamp="2025-01-01T00:00:02Z"),
        incoming("run_imminent", execution_id="B", run_id=2, timestamp="2025-01-02T00:00:00Z"),
        incoming(execution_id="B", run_id=2, timestamp="2025-01-02T00:00:01Z"),
        Incoming(TOPIC, b"junk"),  # no sent_at: its time is recorded_at (now, after 2025)
    ]
    stored = store.append(sent).events
    pos = [event.position for event in stored]

    def positions(**filters: Any) -> list[int]:
        return [event.position for event in store.read(**filters)]

    assert positions() == pos
    assert positions(execution_id="A") == pos[:3]
    assert positions(run_id=2) == pos[3:5]
    assert positions(msg_types=["run_imminent"]) == [pos[0], pos[3]]
    assert positions(msg_types=("stf_gen", "stf_ready"), run_id=1) == pos[1:3]
    assert positions(since="2025-01-01T00:00:01Z", until_time="2025-01-02T00:00:00Z") == \
        pos[1:4]
    assert positions(since="2025-01-02T00:00:00.5+00:00") == pos[4:]
    assert positions(after=pos[1], until=pos[3]) == pos[2:4]
    assert positions(limit=2) == pos[:2]
    assert positions(chunk_size=2) == pos  # keyset pagination across several chunks
    assert positions(after=pos[0], limit=3, chunk_size=2) == pos[1:4]
    assert positions(execution_id="A", chunk_size=1) == pos[:3]
    assert positions(valid=False) == pos[5:]
    assert positions(execution_id="nobody") == []
    raw = list(store.read_raw(run_id=1))
    assert [event.position for event in raw] == pos[:3]
    assert all(event.data is None for event in raw)


def test_append_accepts_generators_and_empty_batches(store: EventStore) -> None:
    assert store.append([]).events == []
    result = store.append(incoming(sequence=i) for i in range(3))
    assert [event.position for event in result.events] == [1, 2, 3]
    assert store.head() == 3


def test_follow_starts_after_and_picks_up_new_events(store: EventStore) -> None:
    first = store.append([incoming(), incoming()]).events
    stop = threading.Event()
    seen: queue.Queue = queue.Queue()

    def follow() -> None:
        for event in store.follow(first[0].position, stop=stop, poll_interval=0.01):
            seen.put(event.event_id)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert seen.get(timeout=10) == first[1].event_id  # caught up, skipping position 1
    later = store.append([incoming()]).events[0]
    assert seen.get(timeout=10) == later.event_id  # picked up live
    stop.set()
    follower.join(10)
    assert not follower.is_alive() and seen.empty()


@pytest.mark.postgres
def test_postgres_statistics_follow_bulk_appends(pg_url: str, monkeypatch) -> None:
    monkeypatch.setattr(postgres_recorder, "ANALYZE_MIN_ROWS", 10)
    with EventStore(pg_url) as store, store.engine.connect() as conn:
        query = sa.text("SELECT reltuples FROM pg_class WHERE oid = 'events'::regclass")
        assert conn.execute(query).scalar() < 0  # never analyzed
        target = conn.exec_driver_sql("SHOW default_statistics_target").scalar()
        store.append([incoming(sequence=i) for i in range(20)])
        assert conn.execute(query).scalar() == 20
        # A small sample (coarse histograms), asked for in its own transaction only: the pooled
        # session keeps the server's target for everything else.
        bounds = conn.execute(sa.text(
            "SELECT array_length(histogram_bounds, 1) FROM pg_stats WHERE schemaname = "
            "current_schema() AND tablename = 'events' AND attname = 'position'")).scalar()
        assert bounds == postgres_recorder.ANALYZE_TARGET + 1
        with store.engine.connect() as pooled:
            assert pooled.exec_driver_sql("SHOW default_statistics_target").scalar() == target


# -- property: any batching of any repeats stores each event once, in first-seen order --------


def _pool_message(tag: str, index: int) -> Incoming:
    kind = index % 3
    fields = {"msg_type": "stf_gen", "run_id": 5, "filename": f"{tag}-{index}.stf"}
    if kind == 0:
        return Incoming.of({**fields, "msg_id": f"{tag}-{index}"})
    if kind == 1:
        return Incoming.of(fields, TOPIC, **{"message-id": f"ID:{tag}-{index}"})
    return Incoming.of(fields, TOPIC)  # content-hash event_id


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.integers(0, 11), min_size=1, max_size=40),
       cuts=st.lists(st.integers(0, 40), max_size=6))
def test_any_batching_stores_each_event_once_in_first_seen_order(
        store: EventStore, picks: list[int], cuts: list[int]) -> None:
    tag = uuid.uuid4().hex  # examples share the store; a fresh tag keeps them apart
    pool = [_pool_message(tag, index) for index in range(12)]
    sent = [pool[index] for index in picks]
    bounds = sorted({0, len(sent), *(cut for cut in cuts if cut < len(sent))})
    start = store.head()
    stored: list[str] = []
    duplicates: list[str] = []
    for low, high in zip(bounds, bounds[1:], strict=False):
        result = store.append(sent[low:high])
        stored += [event.event_id for event in result.events]
        duplicates += result.duplicates
    first_seen = list(dict.fromkeys(picks))
    read_back = list(store.read(after=start))
    assert [event.body for event in read_back] == [pool[index].body for index in first_seen]
    assert [event.event_id for event in read_back] == stored
    assert len(duplicates) == len(picks) - len(first_seen)
    assert set(duplicates) <= set(stored)


def test_write_group_commits_between_whole_appends(sqlite_url: str) -> None:
    with EventStore(sqlite_url) as store, EventStore(sqlite_url) as other:
        with store.write_group(max_events=3, max_seconds=3600):
            first = store.append([incoming(), incoming()]).events
            assert [e.position for e in first] == [1, 2]
            assert store.head() == 2  # the writer reads what it appended...
            assert other.head() == 0  # ...others once it is committed
            bad = [incoming(), Incoming(TOPIC, b"{}")]
            bad[1].body = None  # type: ignore[assignment]  # fails inside the append
            with pytest.raises(TypeError):
                store.append(bad)
            assert store.head() == 2  # the failed append is undone, not the earlier one
            again = store.append([Incoming.of(orjson.loads(first[0].body)), incoming()])
            assert again.duplicates == [first[0].event_id]
            assert [e.position for e in again.events] == [3]
            assert other.head() == 3  # 3 events appended: the group committed
            # In the pause after a commit (a tenth of max_seconds) appends commit on their own,
            # so writers waiting in other processes find the lock free between them.
            store.append([incoming()])
            assert other.head() == 4
        assert [e.position for e in other.read()] == [1, 2, 3, 4]


def test_write_group_groups_again_after_its_pause(sqlite_url: str) -> None:
    with EventStore(sqlite_url) as store, EventStore(sqlite_url) as other, \
            store.write_group(max_events=3, max_seconds=0.05):
        store.append([incoming(), incoming(), incoming()])  # committed, then a 5 ms pause
        assert other.head() == 3
        deadline = time.monotonic() + 5
        while store.append([incoming()]).events and time.monotonic() < deadline:
            if other.head() < store.head():  # grouped again: not committed yet
                break
        assert other.head() < store.head()
    assert other.head() == store.head()  # the end of the block commits it


def test_write_group_on_postgres_commits_each_append(pg_url: str) -> None:
    with EventStore(pg_url) as store, EventStore(pg_url) as other, store.write_group():
        store.append([incoming()])
        assert other.head() == store.head() > 0


def test_write_group_commits_after_its_time(sqlite_url: str) -> None:
    with EventStore(sqlite_url) as store, EventStore(sqlite_url) as other, \
            store.write_group(max_events=1000, max_seconds=0.0):
        store.append([incoming()])
        assert other.head() == 1
        # Reserving inside the group uses its transaction instead of waiting for its lock.
        assert store.reserve_execution("wf", "ann").execution_id.startswith("wf-ann-")


def test_append_rejected_keeps_any_message_and_absorbs_its_repeats(db_url) -> None:
    """What a database refused as examined is kept as rejected with the reason: body and
    headers as received, the event_id it would have had (cleaned of what a text column cannot
    hold), and a repeat is a duplicate."""
    with EventStore(db_url) as store:
        good = orjson.dumps(message())
        first = store.append_rejected(Incoming(TOPIC, good, {"k": "v"}), "refused: why")
        (event,) = first.events
        assert first.rejected == 1 and event.reject_reason == "refused: why"
        assert event.event_id == orjson.loads(good)["msg_id"] and event.run_id is None
        nul = store.append_rejected(Incoming(TOPIC + "\x00x", b"\x00 not json",
                                             {"message-id": "ID:a\x00b"}), "nul\x00reason")
        (odd,) = list(store.read(valid=False))[1:]
        assert odd.event_id == "broker:ID:a\ufffdb" and odd.body == b"\x00 not json"
        assert odd.destination == TOPIC + "\ufffdx" and odd.reject_reason == "nul\ufffdreason"
        assert odd.headers == {"message-id": "ID:a\x00b"} and nul.rejected == 1
        again = store.append_rejected(Incoming(TOPIC, good, {}), "refused again")
        assert again.events == [] and again.duplicates == [event.event_id]
        assert store.append([Incoming(TOPIC, good)]).duplicates == [event.event_id]
        assert store.head() >= 2 and len(list(store.read())) == 2


def test_sqlite_binds_none_and_booleans_as_before_without_the_adapter_detour(
        sqlite_url: str) -> None:
    """eventstore.engine registers sqlite3 adapters for None and bool (the module's lookup
    otherwise raises and clears two AttributeErrors per such value); what is stored stays a
    NULL and the integers 1 and 0."""
    import sqlite3

    from eventstore.engine import create_engine

    assert (type(None), sqlite3.PrepareProtocol) in sqlite3.adapters
    assert (bool, sqlite3.PrepareProtocol) in sqlite3.adapters
    engine = create_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE bound (a, b, c)")
            conn.exec_driver_sql("INSERT INTO bound VALUES (?, ?, ?)", (None, True, False))
            assert tuple(conn.exec_driver_sql(
                "SELECT a, b, c, typeof(a), typeof(b), typeof(c) FROM bound").one()) == (
                None, 1, 0, "null", "integer", "integer")
    finally:
        engine.dispose()
