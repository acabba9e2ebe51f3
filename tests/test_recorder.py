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
from agents.transport.consumer import encode_frame, parse_frames
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
    frames, rest = parse_frames(stream)
    assert rest == b""
    assert frames == [("MESSAGE", {"destination": TOPIC, "ack": "ID:x:1",
                                   "content-length": str(len(body))}, body),
                      ("RECEIPT", {"receipt-id": "r-1"}, b"")]


def test_an_incomplete_frame_waits_for_more_bytes() -> None:
    whole = encode_frame("MESSAGE", {"content-length": "5"}, b"hello")
    for cut in range(1, len(whole)):
        frames, rest = parse_frames(whole[:cut])
        assert frames == [] and rest == whole[:cut]
        frames, rest = parse_frames(rest + whole[cut:])
        assert frames == [("MESSAGE", {"content-length": "5"}, b"hello")] and rest == b""


def test_crlf_frames_and_repeated_headers() -> None:
    frames, _ = parse_frames(b"MESSAGE\r\nfoo:first\r\nfoo:second\r\n\r\nbody\x00")
    assert frames == [("MESSAGE", {"foo": "first"}, b"body")]  # STOMP 1.2: the first wins


@given(st.text(min_size=0, max_size=30))
def test_header_escaping_round_trips(value: str) -> None:
    assert unescape_header(escape_header(value)) == value
    frames, _ = parse_frames(encode_frame("MESSAGE", {"x": value}, b""))
    assert frames[0][1]["x"] == value


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
    """As the consumer's reader does: add what a read brought, then flush."""
    for start in range(0, len(deliveries), 9):
        for item in deliveries[start:start + 9]:
            recorder.add(item)
        recorder.flush()
    recorder.flush(force=True)


def test_each_batch_is_acked_after_it_committed_and_repeats_are_absorbed(sqlite_url) -> None:
    store = EventStore(sqlite_url)
    acks = Acks(store)
    recorder = Recorder(store, acks, batch_size=7, batch_wait=60.0)
    items = [Delivery(TOPIC, {"message-id": f"m{i}"}, body(f"id-{i % 40}"), f"ack-{i}", 1)
             for i in range(50)]  # ten repeats
    feed(recorder, items)
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

    def head(self) -> int:
        return self.store.head()


def test_nothing_is_acked_until_the_store_takes_the_batch(sqlite_url) -> None:
    store = EventStore(sqlite_url)
    acks = Acks(store)
    recorder = Recorder(FlakyStore(store, failures=3), acks, batch_size=100,
                        retry=RetryPolicy(attempts=None, initial=0.01, maximum=0.02))
    items = [Delivery(TOPIC, {}, body(f"id-{i}"), f"ack-{i}", 1) for i in range(20)]
    feed(recorder, items)
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


def test_a_partial_batch_waits_for_batch_wait(sqlite_url) -> None:
    store = EventStore(sqlite_url)
    acks = Acks(store)
    recorder = Recorder(store, acks, batch_size=10, batch_wait=60.0)
    recorder.add(Delivery(TOPIC, {}, body("lonely"), "ack-0", 1))
    due = recorder.flush()
    assert due is not None and 59 < due <= 60 and acks.acked == []
    recorder.batch_wait = 0.0
    assert recorder.flush() is None and [a for a, _ in acks.acked] == ["ack-0"]
    store.close()
