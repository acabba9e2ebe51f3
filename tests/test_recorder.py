"""The recorder's parts without a broker: STOMP frame parsing, what is stored for a delivery,
batching with ack-after-commit, and broker configuration (credentials never shown)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.recorder import Recorder, stored_message
from agents.retry import RetryPolicy
from agents.transport.broker import (
    BrokerConfigError,
    Delivery,
    escape_header,
    recorded_destination,
    unescape_header,
)
from agents.transport.consumer import FrameReader, ProtocolError, encode_frame, parse_frames
from eventstore.envelope import (
    RESULT_MONITOR_TOPIC,
    RESULT_QUEUE,
    SLICE_MONITOR_TOPIC,
    SLICE_QUEUE,
    TOPIC,
)
from eventstore.store import EventStore
from swf.settings import broker_config

# -- frames ------------------------------------------------------------------------------------


def test_frames_are_split_with_bodies_holding_nul_and_heartbeats_between() -> None:
    body = b'{"a": 1}\x00tail'
    stream = (b"\n" + encode_frame("MESSAGE", {"destination": TOPIC, "ack": "ID:x:1",
                                              "content-length": str(len(body))}, body)
              + b"\r\n\n" + encode_frame("RECEIPT", {"receipt-id": "r-1"}))
    frames, pos, _need, big = parse_frames(stream)
    assert pos == len(stream) and big is None
    assert frames == [("MESSAGE", {"destination": TOPIC, "ack": "ID:x:1",
                                   "content-length": str(len(body))}, body, 0),
                      ("RECEIPT", {"receipt-id": "r-1"}, b"", 0)]


def test_an_incomplete_frame_waits_for_more_bytes() -> None:
    whole = encode_frame("MESSAGE", {"content-length": "5"}, b"hello")
    for cut in range(1, len(whole)):
        frames, pos, _need, _big = parse_frames(whole[:cut])
        assert frames == [] and pos == 0
        reader = FrameReader()
        assert reader.feed(whole[:cut]) == []
        assert reader.feed(whole[cut:]) == [("MESSAGE", {"content-length": "5"}, b"hello", 0)]
        assert not reader.buffered


def test_crlf_frames_and_repeated_headers() -> None:
    frames, *_ = parse_frames(b"MESSAGE\r\nfoo:first\r\nfoo:second\r\n\r\nbody\x00")
    assert frames == [("MESSAGE", {"foo": "first"}, b"body", 0)]  # STOMP 1.2: the first wins


@given(st.text(min_size=0, max_size=30))
def test_header_escaping_round_trips(value: str) -> None:
    assert unescape_header(escape_header(value)) == value
    frames, *_ = parse_frames(encode_frame("MESSAGE", {"x": value}, b""))
    assert frames[0][1]["x"] == value


@pytest.mark.parametrize(("frame", "problem"), [
    (b"MESSAGE\ncontent-length:5\n\nhelloX", "no NUL after its content-length body"),
    (b"MESSAGE\ncontent-length:\xc2\xb2\n\nhe\x00", "not a number"),  # a Unicode digit
    (b"MESSAGE\ncontent-length:-1\n\n\x00", "not a number"),
    (b"MESSAGE\ncontent-length: 5\n\nhello\x00", "not a number"),
    (b"MESSAGE\n" + b"x:" + b"y" * 200 + b"\n", "header block is over 100 bytes"),
])
def test_what_is_not_stomp_is_a_protocol_error_not_a_crash(frame: bytes, problem: str) -> None:
    reader = FrameReader(max_header=100)
    with pytest.raises(ProtocolError, match=problem):
        for start in range(0, len(frame), 7):  # whatever way it is cut into reads
            reader.feed(frame[start:start + 7])


@pytest.mark.parametrize("with_length", [True, False])
def test_an_oversized_body_is_read_past_and_comes_out_with_what_was_dropped(
        with_length: bool) -> None:
    big = bytes(range(1, 256)) * 40  # 10,200 bytes, no NUL
    headers = {"message-id": "m-1", **({"content-length": str(len(big))} if with_length else {})}
    after = encode_frame("MESSAGE", {"message-id": "m-2"}, b"small")
    stream = encode_frame("MESSAGE", headers, big) + b"\n" + after
    for step in (1, 333, len(stream)):
        reader = FrameReader(max_body=1000, keep=100)
        frames = [frame for start in range(0, len(stream), step)
                  for frame in reader.feed(stream[start:start + step])]
        assert frames == [("MESSAGE", headers, big[:100], len(big) - 100),
                          ("MESSAGE", {"message-id": "m-2"}, b"small", 0)]
        assert not reader.buffered


# -- what is stored ------------------------------------------------------------------------------


def delivery(destination: str, body: bytes = b"{}", **headers: str) -> Delivery:
    return Delivery(destination, {"message-id": f"ID:{uuid.uuid4()}", "destination": destination,
                                  "ack": "a-1", "subscription": "s0", "content-length": "2",
                                  "redelivered": "true", **headers}, body, "a-1", 1)


def test_monitor_copies_are_stored_under_their_queue() -> None:
    assert recorded_destination(delivery(TOPIC)) == TOPIC
    copy = delivery(SLICE_MONITOR_TOPIC, **{"original-destination": SLICE_QUEUE})
    assert recorded_destination(copy) == SLICE_QUEUE
    assert recorded_destination(delivery(RESULT_MONITOR_TOPIC)) == RESULT_QUEUE  # no header
    message = stored_message(copy)
    assert message.destination == SLICE_QUEUE
    # Per-delivery headers go; the message's own stay, the received destination included.
    assert set(message.headers) == {"message-id", "destination", "original-destination"}
    assert message.headers["destination"] == SLICE_MONITOR_TOPIC


# -- batching and ack-after-commit -----------------------------------------------------------------


class Acks:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.acked: list[tuple[str, int]] = []  # (ack id, store head when acked)

    def __call__(self, batch: list[Delivery]) -> int:
        head = self.store.head()
        self.acked += [(d.ack_id or "", head) for d in batch]
        return len(batch)


def body(msg_id: str) -> bytes:
    return orjson.dumps({"msg_type": "agent_heartbeat", "msg_id": msg_id, "namespace": "t",
                         "sender": "s", "agent_type": "x"})


def feed(recorder: Recorder, deliveries: list[Delivery]) -> None:
    """As the consumer's reader does: add what a read brought, then flush; then wait until the
    writer wrote it all."""
    for start in range(0, len(deliveries), 9):
        for item in deliveries[start:start + 9]:
            recorder.add(item)
        recorder.flush()
    assert recorder.drain(60)


def test_each_batch_is_acked_after_it_committed_and_repeats_are_absorbed(sqlite_url) -> None:
    store = EventStore(sqlite_url)
    acks = Acks(store)
    recorder = Recorder(store, acks, batch_size=7, batch_wait=0.01)
    recorder.start()
    items = [Delivery(TOPIC, {"message-id": f"m{i}"}, body(f"id-{i % 40}"), f"ack-{i}", 1)
             for i in range(50)]  # ten repeats
    feed(recorder, items)
    recorder.close()
    assert sorted(a for a, _ in acks.acked) == sorted(f"ack-{i}" for i in range(50))
    stored = {event.event_id: event.position for event in store.read()}
    assert len(stored) == 40 and recorder.stats.duplicates == 10
    for ack_id, head in acks.acked:  # the message was committed when its ack went out
        assert stored[f"id-{int(ack_id.split('-')[1]) % 40}"] <= head
    store.close()


class FlakyStore:
    """Fails the first ``failures`` appends, like a database that is briefly away."""

    def __init__(self, store: EventStore, failures: int) -> None:
        self.store, self.failures = store, failures

    def append(self, messages: list[Any]) -> Any:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unavailable")
        return self.store.append(messages)

    def append_rejected(self, message: Any, reason: str) -> Any:
        return self.store.append_rejected(message, reason)

    def head(self) -> int:
        return self.store.head()


def test_nothing_is_acked_until_the_store_takes_the_batch(sqlite_url) -> None:
    store = EventStore(sqlite_url)
    acks = Acks(store)
    recorder = Recorder(FlakyStore(store, failures=3), acks, batch_size=100, batch_wait=0.01,
                        retry=RetryPolicy(attempts=None, initial=0.01, maximum=0.02))
    recorder.start()
    items = [Delivery(TOPIC, {}, body(f"id-{i}"), f"ack-{i}", 1) for i in range(20)]
    feed(recorder, items)
    recorder.close()
    assert recorder.stats.store_errors == 3
    assert all(head >= 1 for _, head in acks.acked)  # no ack before a commit
    assert len(list(store.read())) == 20
    store.close()


# -- broker configuration ------------------------------------------------------------------------


def test_broker_urls_credentials_and_tls(tmp_path) -> None:
    plain = broker_config("stomp://broker.example:61613", environ={})
    assert (plain.host, plain.port, plain.tls, plain.user) == ("broker.example", 61613, False,
                                                               None)
    assert broker_config("stomp://h", environ={}).port == 61613
    secret = "s3cr3t-pass"
    env = {"SWF_STOMP_USER": "swf", "SWF_STOMP_PASSWORD": secret}
    tls = broker_config("stomp+ssl://broker.example:61612", environ=env)
    assert (tls.tls, tls.user, tls.password) == (True, "swf", secret)
    for text in (repr(tls), str(tls), tls.address):
        assert secret not in text
    config = tmp_path / "swf.toml"
    config.write_text('[broker]\nurl = "stomp+ssl://other:1234"\nuser = "file-user"\n'
                      'password = "file-pass"\nca_certs = "/ca.pem"\nverify = false\n')
    from_file = broker_config(None, config_file=config, environ={})
    assert (from_file.host, from_file.port, from_file.user, from_file.password,
            from_file.ca_certs, from_file.verify) == ("other", 1234, "file-user", "file-pass",
                                                      "/ca.pem", False)
    assert broker_config(None, config_file=config, environ=env).user == "swf"  # env wins
    assert broker_config(None, environ={"SWF_BROKER": "stomp://e:1"}).host == "e"


@pytest.mark.parametrize("url", ["http://h:1", "stomp://:1", "stomp://h:notaport", ""])
def test_bad_broker_urls_are_one_line_errors_without_secrets(url: str) -> None:
    with pytest.raises(BrokerConfigError) as problem:
        broker_config(url or None, environ={})
    assert "\n" not in str(problem.value)


def test_a_password_in_the_url_is_not_echoed_in_errors() -> None:
    with pytest.raises(BrokerConfigError) as problem:
        broker_config("http://user:hunter2@h:1", environ={})
    assert "hunter2" not in str(problem.value)


def test_a_partial_batch_waits_for_batch_wait_and_is_written_on_close(sqlite_url) -> None:
    store = EventStore(sqlite_url)
    acks = Acks(store)
    recorder = Recorder(store, acks, batch_size=10, batch_wait=60.0)
    recorder.start()
    recorder.add(Delivery(TOPIC, {}, body("lonely"), "ack-0", 1))
    recorder.flush()
    assert not recorder.drain(0.3) and acks.acked == []  # waiting for nine more
    recorder.close()
    assert [a for a, _ in acks.acked] == ["ack-0"] and store.head() == 1
    store.close()


def test_the_consumer_stops_reading_while_the_writer_holds_enough(sqlite_url) -> None:
    store = EventStore(sqlite_url)
    wakes: list[int] = []
    recorder = Recorder(store, Acks(store), batch_size=10, batch_wait=60.0,
                        backlog_messages=25, wake=lambda: wakes.append(1))
    for i in range(30):
        recorder.add(Delivery(TOPIC, {}, body(f"held-{i}"), f"ack-{i}", 1))
    recorder.flush()
    assert not recorder.accepting()  # 30 held, not written yet: the writer is not started
    recorder.start()
    assert recorder.drain(30) and recorder.accepting() and wakes  # told to read again
    assert store.head() == 30
    recorder.close()
    store.close()


# -- a bad message is stored as rejected, never retried forever ----------------------------------


def test_store_errors_are_told_apart_from_outages(tmp_path) -> None:
    """Real errors: a locked SQLite database and a refused PostgreSQL connection are outages;
    a value the database cannot hold, or one Python cannot bind, is not."""
    import socket
    import sqlite3

    import psycopg

    from eventstore.errors import is_outage

    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]

    path = str(tmp_path / "locked.db")
    holder = sqlite3.connect(path)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as locked:
        sqlite3.connect(path, timeout=0).execute("INSERT INTO t VALUES (1)")
    assert is_outage(locked.value)
    holder.rollback()
    with pytest.raises(OverflowError) as overflow:
        holder.execute("INSERT INTO t VALUES (?)", (1 << 70,))
    assert not is_outage(overflow.value)
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(f"host=127.0.0.1 port={port} connect_timeout=2")
    assert is_outage(refused.value)
    assert not is_outage(ValueError("bad value")) and is_outage(ConnectionError("gone"))


def test_a_message_the_database_refuses_is_stored_as_rejected_and_the_rest_go_on(pg_url) -> None:
    """On PostgreSQL a NUL in the broker's message-id (the event_id of a message without
    msg_id) fails the whole append: the recorder splits the batch, stores that one message as
    rejected with the reason, stores the others as they are, and acks them all; redelivered,
    the rejected one is absorbed as a duplicate."""
    store = EventStore(pg_url)
    acks = Acks(store)
    recorder = Recorder(store, acks, batch_size=50, batch_wait=0.01)
    recorder.start()
    poison = Delivery(TOPIC, {"message-id": "ID:a\x00b"}, b"not json", "ack-poison", 1)
    items = [Delivery(TOPIC, {}, body(f"ok-{i}"), f"ack-{i}", 1) for i in range(49)]
    feed(recorder, [*items[:20], poison, *items[20:]])
    stats = recorder.stats
    print("refused by the database:", stats)
    assert (stats.stored, stats.rejected, stats.unstorable) == (50, 1, 1)
    assert len(acks.acked) == 50
    (rejected,) = [e for e in store.read(valid=False)]
    assert rejected.body == b"not json" and rejected.event_id == "broker:ID:a\ufffdb"
    assert rejected.reject_reason.startswith("not storable as examined: ")
    assert "0x00" in rejected.reject_reason
    assert sorted(e.event_id for e in store.read(valid=True)) == sorted(f"ok-{i}"
                                                                       for i in range(49))
    again = Delivery(TOPIC, {"message-id": "ID:a\x00b"}, b"not json", "ack-again", 1)
    feed(recorder, [again])
    assert stats.duplicates == 1
    assert len(list(store.read())) == 50
    recorder.close()
    store.close()


class PickyStore(FlakyStore):
    """Refuses any append holding a body with ``poison`` in it, as a database refuses a value
    it cannot hold (a DataError of no outage)."""

    def append(self, messages: list[Any]) -> Any:
        if any(b"poison" in message.body for message in messages):
            raise ValueError("value out of range for the column")
        return self.store.append(messages)


def test_bad_messages_anywhere_in_a_batch_are_isolated(sqlite_url) -> None:
    store = EventStore(sqlite_url)
    acks = Acks(store)
    recorder = Recorder(PickyStore(store, 0), acks, batch_size=100, batch_wait=0.01)
    recorder.start()
    items = [Delivery(TOPIC, {}, body(f"{'poison' if i % 37 == 5 else 'ok'}-{i}"), f"a-{i}", 1)
             for i in range(300)]
    feed(recorder, items)
    recorder.close()
    bad = {f"poison-{i}" for i in range(300) if i % 37 == 5}
    stored = {e.event_id: e.reject_reason for e in store.read()}
    assert len(stored) == 300 and len(acks.acked) == 300
    assert {i for i, reason in stored.items() if reason} == bad
    assert all("ValueError: value out of range" in stored[i] for i in bad)
    assert recorder.stats.unstorable == len(bad)
    store.close()


class BrokenStore(PickyStore):
    """Refuses even the rejected form: the store itself is broken, not a message."""

    def append_rejected(self, message: Any, reason: str) -> Any:
        raise ValueError("permission denied for table events")


def test_a_store_that_refuses_even_the_rejected_form_ends_the_recorder_nothing_acked(
        sqlite_url) -> None:
    store = EventStore(sqlite_url)
    acks = Acks(store)
    told: list[str] = []
    recorder = Recorder(BrokenStore(store, 0), acks, batch_size=10, batch_wait=0.01,
                        on_fatal=told.append)
    recorder.start()
    for i in range(5):
        recorder.add(Delivery(TOPIC, {}, body(f"poison-{i}"), f"a-{i}", 1))
    recorder.flush()
    assert not recorder.drain(30)  # the writer gave up
    assert len(told) == 1 and "permission denied" in told[0] and "\n" not in told[0]
    assert acks.acked == [] and store.head() == 0
    recorder.close()
    store.close()


def test_the_summary_line_names_what_was_rejected_for_the_store_or_the_size() -> None:
    from agents.recorder import RecorderStats

    plain = RecorderStats(stored=5, duplicates=1, rejected=0)
    assert plain.summary() == "recorded 5 events (1 duplicates absorbed, 0 rejected)"
    odd = RecorderStats(stored=7, duplicates=0, rejected=3, unstorable=1, oversized=2)
    assert odd.summary() == ("recorded 7 events (0 duplicates absorbed, 3 rejected, of which "
                             "1 refused by the database as examined and 2 over the size bound)")
