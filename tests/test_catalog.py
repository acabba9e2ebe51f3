"""The message catalog: validation reasons and normalization of the upstream variants."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.catalog import (
    CATALOG,
    MAX_BODY_BYTES,
    RUNLESS,
    SCHEMA_VERSION,
    complete,
    examine,
    needs_normalization,
    resolve_zone,
)


def body(**fields: object) -> bytes:
    return orjson.dumps(fields)


def ok(raw: bytes, destination: str = "/topic/epictopic") -> dict:
    verdict = examine(raw, destination)
    assert verdict.reason is None, verdict.reason
    assert verdict.data is not None
    return verdict.data


def rejected(raw: bytes, expected_namespace: str | None = None) -> str:
    verdict = examine(raw, "/topic/epictopic", expected_namespace)
    assert verdict.data is None
    assert verdict.reason
    return verdict.reason


@pytest.mark.parametrize(("raw", "fragment"), [
    (b"", "empty body"),
    (b"   ", "empty body"),
    (b"not json", "not JSON"),
    (b"\xff\xfe\x00binary", "not JSON"),
    (b"[1, 2]", "JSON array"),
    (b"42", "JSON int"),
    (b'"text"', "JSON str"),
    (b"{}", "missing msg_type"),
    (b'{"msg_type": 3, "run_id": 1}', "msg_type must be a string"),
    (b'{"msg_type": "launch_rockets", "run_id": 1}', "unknown msg_type 'launch_rockets'"),
    (b'{"msg_type": "stf_gen", "filename": "a.stf"}', "stf_gen needs a run_id"),
    (b'{"msg_type": "stf_gen", "run_id": 1}', "missing required field 'filename'"),
    (b'{"msg_type": "stf_gen", "run_id": 1, "filename": 7}', "stf_gen.filename must be a string"),
    (b'{"msg_type": "stf_gen", "run_id": "x1", "filename": "a"}', "run_id must be an integer"),
    (b'{"msg_type": "stf_gen", "run_id": true, "filename": "a"}', "run_id must be an integer"),
    (b'{"msg_type": "end_run", "run_id": 1, "total_stf_files": "ten"}', "must be an integer"),
    (b'{"msg_type": "stf_ready", "run_id": 1, "filename": "a", "size_bytes": -1}',
     "must not be negative"),
    (b'{"msg_type": "slice_result", "run_id": 1, "slice_id": 1, "status": "exploded"}',
     "status 'exploded'"),
    (b'{"msg_type": "start_run", "run_id": 1, "timestamp": "yesterday"}', "not an ISO-8601"),
    (b'{"msg_type": "start_run", "run_id": 1, "execution_id": 5}', "execution_id must be"),
])
def test_bad_input_is_rejected_with_a_precise_reason(raw: bytes, fragment: str) -> None:
    assert fragment in rejected(raw)


def test_oversize_body_is_rejected_unread() -> None:
    raw = b'{"msg_type": "agent_log", "level": "INFO", "message": "' + b"x" * MAX_BODY_BYTES + b'"}'
    assert "over the" in rejected(raw)


def test_wrong_namespace_is_rejected_when_the_store_has_one() -> None:
    raw = body(msg_type="start_run", run_id=1, namespace="other")
    assert "namespace 'other'" in rejected(raw, expected_namespace="mine")
    assert ok(raw)["namespace"] == "other"  # without an expectation it is fine


def test_envelope_columns_are_read_even_from_rejected_messages() -> None:
    verdict = examine(body(msg_type="stf_gen", run_id="101993", execution_id="e-1", sender="daq"))
    assert verdict.reason and "filename" in verdict.reason
    assert (verdict.msg_type, verdict.run_id, verdict.execution_id, verdict.sender) == (
        "stf_gen", 101993, "e-1", "daq")


@pytest.mark.parametrize(("given_checksum", "normalized"), [
    ("ad:0A1b2C3d", "0a1b2c3d"), ("0A1B2C3D", "0a1b2c3d"), ("1f2", "000001f2"),
    ("", None), ("ad:", None), (None, None), ("not-hex!", "not-hex!"),
])
def test_checksum_variants(given_checksum: str | None, normalized: str | None) -> None:
    data = ok(body(msg_type="stf_ready", run_id=1, filename="a.stf", checksum=given_checksum))
    assert data["checksum"] == normalized


def test_upstream_stf_ready_with_nulls_and_size_alias() -> None:
    data = ok(body(msg_type="stf_ready", run_id="7", filename="a.stf", size=123,
                   checksum=None, file_url=None))
    assert (data["run_id"], data["size_bytes"], data["checksum"], data["file_url"]) == (
        7, 123, None, None)
    data = ok(body(msg_type="stf_ready", run_id=7, filename="a.stf", size_bytes=None))
    assert data["size_bytes"] is None


def test_total_files_alias_and_missing_execution_id() -> None:
    data = ok(body(msg_type="end_run", run_id=3, total_files=10))
    assert data["total_stf_files"] == 10
    assert data["execution_id"] is None  # the store resolves it from the run


def test_upstream_slice_in_content_object() -> None:
    data = ok(body(msg_type="slice", run_id=101993, created_at="2025-10-01T12:00:00.5",
                   content={"run_id": 101993, "execution_id": "exe-1", "req_id": "r",
                            "filename": "swf.101993.000001.stf",
                            "tf_filename": "swf.101993.000001_slice_003.tf", "slice_id": 3,
                            "start": 198, "end": 263, "tf_count": 66, "state": "queued"}),
              "/queue/panda.transformer.slices")
    assert data["stf_filename"] == "swf.101993.000001.stf"
    assert (data["slice_id"], data["start"], data["end"], data["retry"]) == (3, 198, 263, 0)
    assert data["execution_id"] == "exe-1"
    assert data["timestamp"] == "2025-10-01T12:00:00.500000Z"


@pytest.mark.parametrize(("state", "status"), [("done", "completed"), ("failed", "failed"),
                                                ("running", "processing")])
def test_upstream_slice_result_in_content_object(state: str, status: str) -> None:
    data = ok(body(msg_type="slice_result", run_id="101993",
                   content={"state": state, "result": {"result": {
                       "slice_id": 9, "tf_filename": "t.tf", "processed": state == "done"}}}),
              "/queue/panda.results.fastprocessing")
    assert (data["slice_id"], data["status"], data["tf_filename"], data["run_id"]) == (
        9, status, "t.tf", 101993)


@pytest.mark.parametrize("variant", [
    {"run_id": "5"}, {"size": 3}, {"checksum": "AD:0000000F"}, {"timestamp": "2026-01-01T00:00:00"},
    {"namespace": ""}, {"created_at": "2026-01-01T00:00:00.000000Z"},
])
def test_every_upstream_variant_needs_normalization(variant: dict) -> None:
    canonical = {"msg_type": "stf_ready", "run_id": 5, "filename": "a.stf", "namespace": "ns",
                 "sender": "data", "checksum": "0000000f",
                 "timestamp": "2026-01-01T00:00:00.000000Z"}
    assert not needs_normalization(canonical, SCHEMA_VERSION)
    assert needs_normalization({**canonical, **variant}, SCHEMA_VERSION)
    for header_filled in ("namespace", "sender", "run_id"):  # STOMP headers may fill them
        assert needs_normalization({key: value for key, value in canonical.items()
                                    if key != header_filled}, SCHEMA_VERSION)
    assert needs_normalization(canonical, SCHEMA_VERSION - 1)  # older shapes are upcast
    # The event's stored time (always canonical) vouches only for a timestamp equal to it.
    stored = "2026-01-01T00:00:00.000000Z"
    assert not needs_normalization(canonical, SCHEMA_VERSION, stored)
    assert needs_normalization({**canonical, **variant}, SCHEMA_VERSION, stored)


def test_unknown_fields_pass_through() -> None:
    assert ok(body(msg_type="start_run", run_id=1, extra={"a": 1}))["extra"] == {"a": 1}


# --- properties -------------------------------------------------------------------------------

run_ids = st.one_of(st.integers(0, 10**9), st.integers(0, 10**9).map(str))
checksums = st.one_of(st.none(), st.just(""),
                      st.integers(0, 2**32 - 1).map(lambda n: f"{n:x}"),
                      st.integers(0, 2**32 - 1).map(lambda n: f"ad:{n}"))  # the DAQ's decimal


@given(run_id=run_ids, checksum=checksums, size=st.one_of(st.none(), st.integers(0, 2**40)),
       size_key=st.sampled_from(["size", "size_bytes"]))
def test_stf_ready_variants_normalize_to_one_shape(run_id, checksum, size, size_key) -> None:
    data = ok(orjson.dumps({"msg_type": "stf_ready", "run_id": run_id, "filename": "f.stf",
                            "checksum": checksum, size_key: size}))
    assert data["run_id"] == int(run_id)
    assert data["size_bytes"] == size
    if checksum in (None, ""):
        assert data["checksum"] is None
    else:
        assert len(data["checksum"]) == 8
        value = (int(checksum[3:]) if checksum.startswith("ad:")  # decimal, as the DAQ writes
                 else int(checksum, 16))
        assert int(data["checksum"], 16) == value


@given(st.binary(max_size=200))
def test_examine_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    verdict = examine(raw)
    assert (verdict.data is None) != (verdict.reason is None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.just(1.5) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=2),
    max_leaves=4)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(msg_type=st.sampled_from(sorted(CATALOG)),
       fields=st.dictionaries(st.sampled_from(sorted({f for spec in CATALOG.values()
                                                      for f in spec} | {"run_id"})),
                              json_values, max_size=6))
def test_examine_is_total_and_normalization_is_idempotent(msg_type, fields) -> None:
    raw = orjson.dumps({"msg_type": msg_type, **fields})
    verdict = examine(raw)
    assert (verdict.data is None) != (verdict.reason is None)
    if verdict.data is not None:
        if msg_type not in RUNLESS:
            assert isinstance(verdict.data["run_id"], int)
        again = examine(orjson.dumps(verdict.data))
        assert again.reason is None
        assert again.data == verdict.data
        # The readers' fast path: a canonical body, parsed and completed, is what examine gives.
        assert not needs_normalization(verdict.data, SCHEMA_VERSION)
        assert complete(orjson.loads(orjson.dumps(verdict.data))) == verdict.data
        parsed = orjson.loads(raw)
        if not needs_normalization(parsed, SCHEMA_VERSION):
            assert complete(parsed) == verdict.data


# The readers' fast path on bodies with a full envelope, as our senders write them: whatever
# else they hold (every field the catalog reads, not only its own), a body that
# ``needs_normalization`` passes must be exactly what ``examine`` makes of it.
_READ_FIELDS = ("agent_name", "agent_type", "checksum", "content", "created_at", "filename",
                "forwarded", "hostname", "processed", "result", "retry", "run_number", "size",
                "size_bytes", "slice_filename", "slice_id", "state", "status", "stf_filename",
                "tf_filename", "total_files", "ts", "worker", "workflow")
_ENVELOPE = {"msg_id": "m-1", "namespace": "ns", "execution_id": "exe-1", "run_id": 5,
             "sender": "agent", "timestamp": "2026-01-01T00:00:00.000000Z"}
field_values = st.one_of(
    json_values, st.sampled_from(["completed", "failed", "a_slice_001.tf", "0000000f", "ad:15",
                                  "host-1", {"name": "t", "content": {"site": "BNL"}}]))


def _canonical_is_complete(message: dict) -> None:
    verdict = examine(orjson.dumps(message))
    if verdict.data is not None and not needs_normalization(message, SCHEMA_VERSION,
                                                             verdict.sent_at):
        assert complete(dict(message)) == verdict.data


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.data_too_large])
@given(msg_type=st.sampled_from(sorted(CATALOG)),
       fields=st.dictionaries(st.sampled_from(sorted({f for spec in CATALOG.values()
                                                      for f in spec} | set(_READ_FIELDS))),
                              field_values, max_size=6))
def test_a_body_passed_as_canonical_is_what_examine_makes_of_it(msg_type, fields) -> None:
    _canonical_is_complete({"msg_type": msg_type, **_ENVELOPE, **fields})


@pytest.mark.parametrize("fields", [
    {"msg_type": "heartbeat"},  # the transformer's: agent_type filled in
    {"msg_type": "transformer_heartbeat", "status": "OK"},
    {"msg_type": "agent_heartbeat", "agent_name": "a"},  # agent_type "Unknown", as the monitor
    {"msg_type": "agent_heartbeat", "agent_name": "a", "agent_type": None},
    {"msg_type": "create_workflow_task", "workflow": {"name": "t", "content": {"site": "BNL"}}},
    {"msg_type": "slice_result", "slice_id": 1, "tf_filename": "t.tf", "status": "completed",
     "hostname": "host-1"},  # the worker taken from the hostname
])
def test_bodies_examine_fills_from_their_own_fields_are_not_canonical(fields) -> None:
    message = {**_ENVELOPE, **fields}
    assert needs_normalization(message, SCHEMA_VERSION)
    _canonical_is_complete(message)


# --- totality: whatever arrives, a verdict --------------------------------------------------

ZONES = [None, "UTC", "America/New_York", "Asia/Kolkata", "Pacific/Kiritimati"]


def _deep(depth: int, leaf: object = 1) -> object:
    value: object = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def _storable(verdict) -> None:
    """The verdict's columns fit the store; a valid one fits the projections."""
    assert (verdict.data is None) != (verdict.reason is None)
    assert verdict.run_id is None or -(1 << 63) <= verdict.run_id < (1 << 63)
    for name in ("msg_type", "msg_id", "namespace", "execution_id", "sender", "sent_at",
                 "reason"):
        assert getattr(verdict, name) is None or isinstance(getattr(verdict, name), str)
    if verdict.sent_at is not None:
        assert len(verdict.sent_at) == 27 and verdict.sent_at.endswith("Z")
    if verdict.data is not None:
        orjson.dumps(verdict.data)  # re-encodable: nested within orjson's limits
        for name, spec in CATALOG.get(verdict.msg_type, {}).items():
            value = verdict.data.get(name)
            if spec.kind in ("int", "bigint") and value is not None:
                assert -(1 << 63) <= value < (1 << 63)
                if spec.kind == "int":
                    assert -(1 << 31) <= value < (1 << 31)


odd_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["²", "①", "１２", " 12 ", "١٢", "12\n", "0" * 30, "\x00", "\u202e", "ad:99999999999",
     "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00", "20250801143000",
     "99999999999999999999", "NaN", "-1", "1e400"])
huge_numbers = st.integers(-(1 << 64), (1 << 64) - 1) | st.sampled_from(
    [18446744073709551615, -(1 << 63) - 1, 1 << 63, 1 << 31, -(1 << 31) - 1]) | st.floats(
    allow_nan=False, allow_infinity=False)
any_json = st.recursive(
    st.none() | st.booleans() | huge_numbers | odd_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=8)
field_names = st.sampled_from(sorted({f for spec in CATALOG.values() for f in spec}
                                     | {"run_id", "msg_id", "namespace", "execution_id",
                                        "sender", "timestamp", "created_at", "ts", "content",
                                        "size", "total_files", "run_number", "agent_name",
                                        "command", "source"}))
header_maps = st.dictionaries(st.sampled_from(["namespace", "run_id", "msg_type", "client-id",
                                               "timestamp", "message-id", "x"]),
                              odd_text | st.integers(0, 10**15).map(str), max_size=4)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.data_too_large])
@given(msg_type=st.sampled_from(sorted(CATALOG)) | odd_text,
       fields=st.dictionaries(field_names, any_json, max_size=8), headers=header_maps,
       zone=st.sampled_from(ZONES), expected=st.sampled_from([None, "ns"]))
def test_examine_is_total_over_arbitrary_json(msg_type, fields, headers, zone, expected) -> None:
    try:
        raw = orjson.dumps({"msg_type": msg_type, **fields})
    except orjson.JSONEncodeError:
        return  # not JSON at all (e.g. an integer beyond 64 bits): the bytes test covers it
    verdict = examine(raw, "/topic/x", expected, headers, resolve_zone(zone))
    _storable(verdict)


@settings(max_examples=200)
@given(depth=st.integers(1, 1100), where=field_names, kind=st.sampled_from(["value", "body"]))
def test_examine_is_total_at_any_depth(depth, where, kind) -> None:
    nested = _deep(depth)
    if kind == "body":
        raw = b"{\"msg_type\": \"stf_gen\", \"run_id\": 1, \"x\": " + b"[" * depth + b"]" * depth \
            + b"}"
    else:
        try:
            raw = orjson.dumps({"msg_type": "slice", "run_id": 1, where: nested})
        except orjson.JSONEncodeError:  # deeper than orjson writes: build the text by hand
            raw = (b'{"msg_type": "slice", "run_id": 1, "' + where.encode() + b'": '
                   + b"[" * depth + b"1" + b"]" * depth + b"}")
    _storable(examine(raw))


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"run_id": "²"}, "string of digits 0-9"),
    ({"run_id": "①"}, "string of digits 0-9"),
    ({"run_id": "１２"}, "string of digits 0-9"),
    ({"run_id": " 12 "}, "string of digits 0-9"),
    ({"run_id": 18446744073709551615}, "does not fit in 64 bits"),
    ({"run_id": "99999999999999999999"}, "does not fit in 64 bits"),
    ({"timestamp": "0001-01-01T00:00:00+01:00"}, "out of the representable range"),
    ({"slice_id": 18446744073709551615}, "out of range"),
    ({"slice_id": 1 << 31}, "out of range"),
    ({"start": 1 << 63}, "out of range"),
    ({"tf_filename": _deep(300)}, "nested deeper than"),
    ({"tf_filename": _deep(40)}, "must be a string"),
])
def test_what_the_store_or_projections_cannot_hold_is_rejected(fields, fragment) -> None:
    message = {"msg_type": "slice", "msg_id": "b", "run_id": 1, "slice_id": 1,
               "tf_filename": "t", "start": 0, "end": 1, **fields}
    try:
        raw = orjson.dumps(message)
    except orjson.JSONEncodeError:
        raw = orjson.dumps({**message, "tf_filename": None})[:-1] + b', "tf_filename": ' + (
            b"[" * 250 + b"]" * 250) + b"}"
    verdict = examine(raw)
    assert verdict.data is None and fragment in (verdict.reason or ""), verdict.reason


def test_the_issues_slice_is_rejected_and_queries_keep_working(sqlite_url) -> None:
    from eventstore.envelope import Incoming
    from eventstore.store import EventStore
    from projections import queries
    from projections.projector import Projector

    raw = (b'{"msg_type":"slice","msg_id":"b","run_id":1,"slice_id":18446744073709551615,'
           b'"tf_filename":"t","start":0,"end":1}')
    with EventStore(sqlite_url) as store:
        result = store.append([Incoming("/topic/epictopic", raw),
                               Incoming.of({"msg_type": "start_run", "run_id": 1,
                                            "namespace": "n"})])
        assert result.rejected == 1
        Projector(store).catch_up()
        assert [row["run_number"] for row in queries.runs(store.engine)] == [1]


def test_the_canonical_time_check_answers_as_its_regex_once_a_head_is_known() -> None:
    from eventstore.catalog import _CANONICAL_TIME, _canonical_time

    known = "2025-06-01T12:00:00.027500Z"
    stamps = [known, "2025-06-01T12:00:00.999999Z", "2025-06-01T12:00:00.12345Z",
              "2025-06-01T12:00:00.1234567Z", "2025-06-01T12:00:00.123456z",
              "2025-06-01T12:00:00.123456Z\n", "2025-06-01T12:00:00.12345xZ",
              "2025-06-01T12:00:00.12345\u0663Z", "2025-06-01T12:00:00.123456+00:00",
              "2025-06-01T12:00:00", "2025-06-01 12:00:00.123456Z", "",
              "\u0662025-06-01T12:00:00.000001Z", "2025-06-01T12:00:00.000001Z"]
    for _ in range(2):  # the second time round every matching head is known
        for stamp in stamps:
            assert _canonical_time(stamp) == bool(_CANONICAL_TIME.match(stamp)), stamp
