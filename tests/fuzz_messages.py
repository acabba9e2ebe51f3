"""Fuzzed messages, malformed in the ways the issue found (and more), each distinct, with valid
ones to interleave: for ``swf import`` lines (tests/test_import.py) and STOMP bodies
(tests/test_recorder_failures.py)."""

from __future__ import annotations

import random

import orjson


def _nested(depth: int, rng: random.Random) -> bytes:
    opening = b"".join(rng.choice([b"[", b'{"k":']) for _ in range(depth))
    closing = b"".join(b"]" if c == ord("[") else b"}" for c in reversed(
        [opening[i] for i in range(len(opening)) if opening[i] in b"[{"]))
    return opening + b"1" + closing


def malformed(rng: random.Random, serial: int) -> bytes:
    """One line that is not a valid message (each distinct: it carries ``serial``)."""
    kind = rng.randrange(16)
    tag = str(serial).encode()
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60))).replace(
            b"\n", b"") + b"#" + tag
    if kind == 1:  # deep nesting in a checked field
        return (b'{"msg_type":"slice","msg_id":"x' + tag + b'","run_id":1,"slice_id":'
                + _nested(rng.randrange(65, 1000), rng) + b"}")
    if kind == 2:  # the number
        return (b'{"msg_type":"slice","msg_id":"x' + tag + b'","run_id":1,'
                b'"slice_id":18446744073709551615,"tf_filename":"t","start":0,"end":1}')
    if kind == 3:  # odd run numbers
        odd = rng.choice(["²", "①", "１２", " 12 ", "٣", "1e3", "-", "9" * 25])
        return orjson.dumps({"msg_type": "start_run", "msg_id": f"x{serial}", "run_id": odd})
    if kind == 4:  # times that leave the representable range
        stamp = rng.choice(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                            "2026-02-30T00:00:00", "yesterday", "99999999999999"])
        return orjson.dumps({"msg_type": "start_run", "msg_id": f"x{serial}", "run_id": 1,
                             "timestamp": stamp})
    if kind == 5:  # the wrapper form with a body too deep to encode again
        return (b'{"destination":"/topic/epictopic","headers":{},"body":'
                + _nested(rng.randrange(255, 1000), rng) + b',"n":' + tag + b"}")
    if kind == 6:  # the wrapper form with deep headers
        return (b'{"destination":"/topic/x","headers":{"h":' + _nested(rng.randrange(300, 1000),
                                                                       rng)
                + b'},"body":"{}","n":' + tag + b"}")
    if kind == 7:  # a lone surrogate
        return b'{"msg_type":"agent_log","level":"INFO","message":"\\ud800' + tag + b'"}'
    if kind == 8:  # JSON that is not an object
        return orjson.dumps([serial, "not", {"an": "object"}])
    if kind == 9:
        return orjson.dumps({"msg_type": f"launch_{serial}", "run_id": 1})
    if kind == 10:
        return orjson.dumps({"msg_type": "stf_gen", "msg_id": f"x{serial}", "run_id": 1})
    if kind == 11:  # a type-checked field of the wrong type
        return orjson.dumps({"msg_type": "end_run", "msg_id": f"x{serial}", "run_id": 1,
                             "total_stf_files": {"n": [serial] * 3}})
    if kind == 12:  # a huge number where a float is expected, a bool where an int is
        return orjson.dumps({"msg_type": "tf_file_registered", "msg_id": f"x{serial}",
                             "run_id": 1, "tf_filename": "a", "stf_filename": "b",
                             "tf_first": True, "tf_last": 18446744073709551615})
    if kind == 13:  # truncated JSON
        return orjson.dumps({"msg_type": "start_run", "msg_id": f"x{serial}"})[:-3] + tag
    if kind == 14:  # an empty-ish line that is not blank
        return b"\x00" * rng.randrange(1, 5) + tag
    return orjson.dumps({"destination": [serial], "headers": "nope", "body": serial})


def valid(serial: int) -> dict:
    """A valid message (a run of one STF per 50 lines, so projections have rows)."""
    run = 1000 + serial // 50
    base = {"msg_id": f"ok-{serial}", "namespace": "fuzz", "execution_id": "fuzz-0001",
            "run_id": run, "sender": "daq", "timestamp":
                f"2026-01-01T00:{serial // 600 % 60:02d}:{serial % 60:02d}.000000Z"}
    if serial % 50 == 0:
        return {**base, "msg_type": "run_imminent", "state": "beam", "substate": "not_ready"}
    if serial % 2:
        return {**base, "msg_type": "agent_log", "level": "INFO", "message": f"line {serial}"}
    return {**base, "msg_type": "stf_gen", "filename": f"swf.{run}.{serial:06d}.stf",
            "sequence": serial % 50}
