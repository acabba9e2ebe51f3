"""Upstream's agents against ``swf serve`` as their monitor: every call upstream's BaseAgent, REST
log handler, workflow runner, data, FastMon and fast processing agents make in a fast processing
run (``replay.upstream_rest``, payloads from their code, in their order, with their retries) gets
the answer the client needs, becomes an event, and shows on every page, in ``/api/v1/`` and in
``swf query``."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from starlette.testclient import TestClient

from eventstore import rest
from eventstore.envelope import Incoming
from eventstore.store import EventStore
from replay.upstream_rest import Answer, Call, fast_processing_exchange, play
from swf.web.app import Settings, create_app
from swf.web.data import ConsoleData

pytest_plugins = ["console_fixtures"]
pytest.register_assert_rewrite("console_fixtures", "upstream_client")
from console_fixtures import swf  # noqa: E402
from upstream_client import UpstreamClient  # noqa: E402

TOKEN = "an-upstream-api-token-1234"


def payloads(steps: list[Any], method: str, path: str) -> list[dict[str, Any]]:
    return [step.payload for step in steps
            if isinstance(step, Call) and step.method == method and step.path == path
            and not step.dropped]


def facts(steps: list[Any]) -> dict[str, Any]:
    """What the run's REST calls say happened (sets: each fact once)."""
    completed = set()
    for step in steps:
        if isinstance(step, Call) and step.method == "PATCH" and step.path.startswith(
                "/api/tf-slices/") and step.payload["status"] == "completed":
            inner = step.payload["metadata"]["result"]["result"]
            completed.add((rest.sample_of(inner["tf_filename"]), inner["slice_id"]))
    return {
        "stf": {p["stf_filename"] for p in payloads(steps, "POST", "/api/stf-files/")},
        "samples": {p["tf_filename"] for p in payloads(steps, "POST", "/api/fastmon-files/")},
        "slices": {(rest.sample_of(p["tf_filename"]), p["slice_id"])
                   for p in payloads(steps, "POST", "/api/tf-slices/")},
        "completed": completed,
        "agents": {p["instance_name"] for p in payloads(steps, "POST",
                                                       "/api/systemagents/heartbeat/")},
        "logs": {step.body for step in steps if isinstance(step, Call)
                 and step.path == "/api/logs/"},
        "execution": payloads(steps, "POST", "/api/workflow-executions/")[0]["execution_id"],
    }


def answer_of(client: UpstreamClient, method: str, path: str) -> Answer:
    return next(answer for call, answer in client.answers
                if call.method == method and call.path == path)


def v1(base: str, path: str) -> Any:
    response = requests.get(base + path, headers={"Authorization": f"Bearer {TOKEN}"},
                            timeout=10)
    assert response.status_code == 200, response.text
    return response.json() if "json" in response.headers["content-type"] else response.text


@pytest.mark.slow
def test_an_upstream_run_over_rest_is_answered_stored_and_shown_everywhere(
        serve: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'swf.db'}"
    served = serve(url, env={"SWF_API_TOKEN": TOKEN})
    base = served.base_url
    client = UpstreamClient(base, TOKEN)
    steps = play(fast_processing_exchange(), client, lambda _wire: None)  # REST alone
    known = facts(steps)
    run = answer_of(client, "POST", "/api/state/next-run-number/").json["run_number"]

    # The answers the clients need (the exchange raises on any it could not use); a call whose
    # answer was lost is retried and answered the same, with the same ids.
    dropped = [index for index, (call, _answer) in enumerate(client.answers) if call.dropped]
    assert len(dropped) == 3
    for index in dropped:
        (lost, first), (retry, second) = client.answers[index], client.answers[index + 1]
        assert (retry.method, retry.path, retry.body) == (lost.method, lost.path, lost.body)
        assert first.status in (200, 201) and (second.status, second.json) == (
            first.status, first.json)
    assert {answer.status for call, answer in client.answers if call.path == "/api/logs/"} \
        == {201}  # the log handler sends no token: accepted from loopback
    assert answer_of(client, "POST", "/api/state/next-agent-id/").json == {
        "agent_id": 1, "status": "success"}
    assert answer_of(client, "POST", "/api/namespaces/ensure/").json["created"] is True
    heartbeats = [answer.status for call, answer in client.answers
                  if call.path == "/api/systemagents/heartbeat/"]
    assert heartbeats[0] == 201 and set(heartbeats) <= {200, 201}
    # A repeated POST (after the run) is the same fact: same answer, nothing stored again.
    first_slice = next(call for call in steps if isinstance(call, Call)
                       and call.path == "/api/tf-slices/")
    with EventStore(url, read_only=True) as store:
        before = store.head()
    again = client(first_slice)
    assert again.status == 201 and again.json == answer_of(client, "POST", "/api/tf-slices/").json

    # A malformed call: stored rejected with the reason, answered 400 with it.
    bad = requests.post(f"{base}/api/stf-files/", json={"run": run},
                        headers={"Authorization": f"Token {TOKEN}"}, timeout=10)
    assert bad.status_code == 400 and "stf_filename" in bad.json()["detail"]
    with EventStore(url, read_only=True) as store:
        assert store.head() == before + 1
        stored = list(store.read())
    assert [event.reject_reason for event in stored if not event.valid] == [
        "stf_filename: This field is required."]
    rest_events = [event for event in stored if event.destination.startswith(rest.PREFIX)]
    assert rest_events == stored  # nothing but REST reached this store
    for index in dropped:  # each lost-and-retried call is one event
        call = client.answers[index][0]
        assert sum(event.destination == rest.destination(call.method, call.path)
                   and event.body == call.body for event in stored) == 1
    assert all(TOKEN not in orjson.dumps([event.headers, event.body.decode()]).decode()
               for event in stored)
    assert all("authorization" not in {name.lower() for name in event.headers}
               for event in stored)

    # Projections, through /api/v1/ (an upstream GET catches them up first).
    requests.get(f"{base}/api/run-states/", headers={"Authorization": f"Token {TOKEN}"},
                 timeout=10)
    (row,) = v1(base, f"/api/v1/runs?run={run}")["rows"]
    assert (row["stf_count"], row["stf_samples_received"], row["slices_created"],
            row["slices_completed"], row["slices_queued"]) == (
        len(known["stf"]), len(known["samples"]), len(known["slices"]),
        len(known["completed"]), len(known["slices"]) - len(known["completed"]))
    assert row["phase"] == "completed" and row["execution_id"] == known["execution"]
    summary = v1(base, f"/api/v1/executions/{known['execution']}")
    assert (summary["status"], summary["workflow"], summary["runs"]) == (
        "completed", "fast_processing", [run])
    agents = v1(base, "/api/v1/agents")["rows"]
    assert {agent["name"] for agent in agents} == known["agents"]
    assert {agent["operational_state"] for agent in agents} == {"READY"}
    logs = v1(base, "/api/v1/logs?limit=1000")["rows"]
    assert len(logs) == len(known["logs"])
    assert any(log["message"] == "Broadcasted run_imminent message"
               and log["execution_id"] == known["execution"] for log in logs)
    assert {r["filename"] for r in v1(base, f"/api/v1/stf-files?run={run}")["rows"]} \
        == known["stf"]
    assert {r["tf_filename"] for r in v1(base, f"/api/v1/tf-samples?run={run}")["rows"]} \
        == known["samples"]
    assert {(r["tf_filename"], r["slice_id"])
            for r in v1(base, f"/api/v1/slices?run={run}&limit=1000")["rows"]} \
        == known["slices"]

    # The pages.
    assert all(name in v1(base, "/agents") for name in known["agents"])
    assert "Broadcasted run_imminent message" in v1(base, "/logs")
    page = v1(base, f"/executions/{known['execution']}")
    assert known["execution"] in page and "completed" in page
    assert all(name in v1(base, f"/runs/{run}") for name in known["stf"])
    assert all(name in v1(base, f"/stf-files?run={run}") for name in known["stf"])
    assert all(sample in v1(base, f"/slices?run={run}") for sample, _id in known["slices"])

    # swf query.
    execution = orjson.loads(swf("query", "execution", known["execution"], "--json", "--db",
                                 url).stdout)
    assert (execution["status"], execution["stf_count"], execution["slices_created"]) == (
        "completed", len(known["stf"]), len(known["slices"]))
    queried = orjson.loads(swf("query", "agents", "--json", "--db", url).stdout)
    assert {agent["name"] for agent in queried} == known["agents"]
    slices = orjson.loads(swf("query", "slices", "--run", str(run), "--limit", "1000",
                              "--json", "--db", url).stdout)
    assert {(s["tf_filename"], s["slice_id"]) for s in slices if s["status"] == "completed"} \
        == known["completed"]
    rejected = orjson.loads(swf("query", "rejected", "--json", "--db", url).stdout)
    assert [r["destination"] for r in rejected] == ["rest:POST /api/stf-files/"]
    client.close()
    assert TOKEN not in served.output()


# -- who may call ---------------------------------------------------------------------------------

LOG = {"app_name": "base_agent", "instance_name": "data-agent-u-1",
       "timestamp": "2026-07-23T10:00:00.123456", "level": 20, "levelname": "INFO",
       "message": "hello", "module": "m", "funcname": "f", "lineno": 1, "process": 1,
       "thread": 1, "extra_data": None}


@pytest.mark.parametrize(("address", "networks", "token", "status"), [
    ("127.0.0.1", ("127.0.0.0/8", "::1/128"), None, 201),  # no token configured at all
    ("127.0.0.1", ("127.0.0.0/8", "::1/128"), TOKEN, 201),
    ("::1", ("127.0.0.0/8", "::1/128"), TOKEN, 201),
    ("10.1.2.3", ("127.0.0.0/8", "::1/128"), TOKEN, 401),
    ("10.1.2.3", ("10.0.0.0/8",), TOKEN, 201),
    ("127.0.0.1", (), TOKEN, 401),
])
def test_log_records_need_no_token_only_from_the_listed_networks(
        sqlite_url: str, address: str, networks: tuple[str, ...], token: str | None,
        status: int) -> None:
    app = create_app(Settings(db_url=sqlite_url, token=token, log_networks=networks))
    with TestClient(app, client=(address, 40000)) as client:
        assert client.post("/api/logs/", json=LOG).status_code == status
        # every other write needs the token, from anywhere
        beat = client.post("/api/systemagents/heartbeat/", json={"instance_name": "a"})
        assert beat.status_code == (403 if token is None else 401)
        if token is not None:
            assert client.post("/api/systemagents/heartbeat/", json={"instance_name": "a"},
                               headers={"Authorization": f"Token {token}"}).status_code == 201


def test_a_token_sent_with_a_call_is_never_stored(sqlite_url: str) -> None:
    app = create_app(Settings(db_url=sqlite_url, token=TOKEN))
    with TestClient(app, client=("127.0.0.1", 40000)) as client:
        answer = client.post("/api/logs/", json={**LOG, "message": "with a token"},
                             headers={"Authorization": f"Token {TOKEN}",
                                      "Cookie": f"swf_session={TOKEN}"})
        assert answer.status_code == 201
    with EventStore(sqlite_url, read_only=True) as store:
        (event,) = store.read()
    assert set(event.headers) == {"timestamp", "user-agent", "content-type", "remote-addr"}
    assert TOKEN not in orjson.dumps(event.headers).decode()


# -- calls as the store reads them --------------------------------------------------------------


def call(store: EventStore, method: str, path: str, payload: Any, **headers: str) -> Any:
    body = b"" if payload is None else json.dumps(payload).encode()
    result = store.append([Incoming(rest.destination(method, path), body,
                                    {"timestamp": "1784800800000", **headers})])
    return result.events[0] if result.events else None


def test_calls_are_read_into_the_facts_of_their_bus_twins(db_url: str) -> None:
    with EventStore(db_url) as store:
        stf = call(store, "POST", "/api/stf-files/",
                   {"run": "102001", "stf_filename": "swf.102001.000001.stf",
                    "file_size_bytes": 137, "metadata": {"created_by": "data-agent-u-1",
                                                         "sequence": 1}},
                   namespace="torre2")
        piece = call(store, "POST", "/api/tf-slices/",
                     {"slice_id": 0, "tf_first": 10, "tf_last": 19, "tf_count": 10,
                      "tf_filename": "swf.102001.000001_tf_001_slice_000.tf",
                      "stf_filename": "swf.102001.000001.stf", "run_number": "102001",
                      "status": "queued", "retries": 0, "metadata": {}})
        beat = call(store, "POST", "/api/state/next-agent-id/", None, allocated="7")
        read = {event.position: event for event in store.read()}
        # what the server looks up: the creates of a natural key, a run's namespace
        found = store.with_id_prefix(rest.created_prefix(
            "stf_file", rest.file_id("swf.102001.000001.stf")))
        assert [event.position for event in found] == [stf.position]
        assert store.with_id_prefix(rest.created_prefix("stf_file", rest.file_id("x"))) == []
        assert store.latest_namespace(run_id=102001) == "torre2"
        assert store.top_run_id() == 102001 and store.count_of_type("rest_agent_id") == 1
        # a run number reserved for an embedded or live execution is taken too
        reserved = store.reserve_execution("fast_processing", "u")
        assert reserved.run_number == 102002 and store.top_run_id() == 102002
    assert stf.valid and stf.run_id == 102001 and stf.sender == "data-agent-u-1"
    assert stf.event_id.startswith(rest.created_prefix(
        "stf_file", rest.file_id("swf.102001.000001.stf")))
    data = read[stf.position].data
    assert data is not None
    assert (data["msg_type"], data["filename"], data["size_bytes"], data["sequence"]) == (
        "rest_stf_file", "swf.102001.000001.stf", 137, 1)
    assert data["timestamp"] == "2026-07-23T10:00:00.000000Z"  # the receive time
    sliced = read[piece.position].data  # the slice's own file name joined to its sample
    assert sliced is not None
    assert (sliced["tf_filename"], sliced["slice_filename"], sliced["start"], sliced["end"]) == (
        "swf.102001.000001_tf_001.tf", "swf.102001.000001_tf_001_slice_000.tf", 10, 19)
    assert piece.namespace is None  # the server names it (here: appended directly, none)
    assert beat.event_id == "rest:agent_id:7" and read[beat.position].data == {
        **(read[beat.position].data or {}), "agent_id": 7}
    assert read[beat.position].body == b""  # a POST without payload, as received


@pytest.mark.parametrize(("method", "path", "body", "reason"), [
    ("POST", "/api/stf-files/", b"", "empty body"),
    ("POST", "/api/stf-files/", b"[1]", "a JSON list, not an object"),
    ("POST", "/api/stf-files/", b'{"run": 1}', "stf_filename: This field is required."),
    ("POST", "/api/stf-files/", b'{"run": "x1", "stf_filename": "a"}',
     "run: A valid integer is required"),
    ("POST", "/api/logs/", b'{"instance_name": "a", "timestamp": "yesterday", '
     b'"message": "m", "levelname": "INFO"}', "is not an ISO-8601 time"),
    ("POST", "/api/systemagents/heartbeat/", b'{"instance_name": "a", "pid": true}',
     "pid: must be an integer"),
    ("POST", "/api/fastmon-files/", b'{"stf_file": "s", "tf_filename": "t"}',
     "Object with stf_filename=s does not exist."),
    ("PATCH", "/api/stf-files/0/", b'{"status": "done"}', "names no registered STF file"),
    ("POST", "/api/state/next-agent-id/", b"", "ids are allocated by the server"),
    ("GET", "/api/stf-files/", b"", "no upstream monitor endpoint GET /api/stf-files/"),
])
def test_a_malformed_call_is_stored_rejected_with_its_reason(
        sqlite_url: str, method: str, path: str, body: bytes, reason: str) -> None:
    with EventStore(sqlite_url) as store:
        event = store.append([Incoming(rest.destination(method, path), body,
                                       {"timestamp": "1784800800000"})]).events[0]
    assert not event.valid and reason in (event.reject_reason or "")


def test_a_bus_message_cannot_pass_for_a_rest_call(sqlite_url: str) -> None:
    with EventStore(sqlite_url) as store:
        event = store.append([Incoming.of({"msg_type": "rest_stf_file", "run_id": 1,
                                           "filename": "x"})]).events[0]
    assert not event.valid and "REST API" in (event.reject_reason or "")


def test_identical_heartbeats_within_a_minute_are_one_fact(sqlite_url: str) -> None:
    beat = {"instance_name": "fastmon-agent-u-3", "agent_type": "fastmon", "status": "OK",
            "operational_state": "READY", "namespace": "torre2"}
    with EventStore(sqlite_url) as store:
        kept = [call(store, "POST", "/api/systemagents/heartbeat/", payload, timestamp=at)
                for payload, at in ((beat, "1784800800000"), (beat, "1784800859999"),
                                    (beat, "1784800860000"),
                                    ({**beat, "operational_state": "EXITED"}, "1784800860001"))]
    assert [event is not None for event in kept] == [True, False, True, True]


# -- ids ------------------------------------------------------------------------------------------


def test_ids_are_reserved_once_whichever_process_or_thread_asks(db_url: str) -> None:
    """Two consoles on one store (two processes' worth of stores), four threads each: every
    agent id and run number is handed out once, and they count up without gaps."""
    consoles = [ConsoleData(db_url), ConsoleData(db_url)]
    got: dict[str, list[int]] = {"agent_id": [], "run_number": []}
    lock = threading.Lock()

    def ask(data: ConsoleData, kind: str) -> None:
        for _ in range(5):
            path = ("/api/state/next-agent-id/" if kind == "agent_id"
                    else "/api/state/next-run-number/")
            value = data.reserve(kind, Incoming(rest.destination("POST", path), b"",
                                                {"timestamp": "1784800800000"}))
            with lock:
                got[kind].append(value)

    threads = [threading.Thread(target=ask, args=(data, kind))
               for data in consoles for kind in got for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert sorted(got["agent_id"]) == list(range(1, 21))
        assert sorted(got["run_number"]) == list(range(100001, 100021))
        assert consoles[0].store.count_of_type("rest_agent_id") == 20
    finally:
        for data in consoles:
            data.close()


def test_an_id_names_what_it_was_given_for_and_nothing_else(sqlite_url: str) -> None:
    """A slice patched without the result's copy of it is the slice its id names; an unknown id
    is a 404 (nothing stored); a TF sample of an STF file known only from the bus is that
    file's run's; ``?limit=`` pages STF files as upstream does."""
    token = {"Authorization": f"Token {TOKEN}"}
    app = create_app(Settings(db_url=sqlite_url, token=TOKEN))
    with TestClient(app, client=("127.0.0.1", 40000)) as client:
        with EventStore(sqlite_url) as store:  # what the recorder stored from the bus
            store.append([Incoming.of({"msg_type": "stf_gen", "msg_id": "g1",
                                       "namespace": "torre2", "execution_id": "e-1",
                                       "run_id": 100001, "filename": "swf.100001.000001.stf",
                                       "timestamp": "2026-07-23T14:00:00.000000Z"})])
        sample = client.post("/api/fastmon-files/", headers=token, json={
            "stf_file": "swf.100001.000001.stf", "tf_filename": "swf.100001.000001_tf_001.tf",
            "tf_first": 1, "tf_last": 20, "tf_count": 20, "file_size_bytes": 20,
            "status": "registered", "metadata": {}})
        assert sample.status_code == 201
        assert sample.json()["tf_file_id"] == rest.tf_file_id("swf.100001.000001_tf_001.tf")
        made = client.post("/api/tf-slices/", headers=token, json={
            "slice_id": 0, "tf_first": 1, "tf_last": 10, "tf_count": 10,
            "tf_filename": "swf.100001.000001_tf_001_slice_000.tf", "run_number": "100001",
            "status": "queued", "retries": 0, "metadata": {"execution_id": "e-1"}})
        assert made.status_code == 201
        pk = made.json()["id"]
        listed = client.get("/api/tf-slices/?run_number=100001&slice_id=0", headers=token)
        assert [row["id"] for row in listed.json()] == [pk]
        with EventStore(sqlite_url, read_only=True) as store:
            head = store.head()
        assert client.patch(f"/api/tf-slices/{pk + 1}/", headers=token,
                            json={"status": "failed"}).status_code == 404
        assert client.patch("/api/stf-files/nothing/", headers=token,
                            json={"status": "done"}).status_code == 404
        assert client.patch("/api/workflow-executions/nothing/", headers=token,
                            json={"status": "failed"}).status_code == 404
        with EventStore(sqlite_url, read_only=True) as store:
            assert store.head() == head  # a 404 stores nothing
        patched = client.patch(f"/api/tf-slices/{pk}/", headers=token,
                               json={"status": "failed", "metadata": {
                                   "worker_hostname": "w1", "result": {"state": False,
                                                                       "result": None,
                                                                       "error": "boom"}}})
        assert patched.status_code == 200 and patched.json()["id"] == pk
        (row,) = client.get("/api/tf-slices/?run_number=100001", headers=token).json()
        assert (row["status"], row["assigned_worker"], row["fastmon_file"]) == (
            "failed", "w1", "swf.100001.000001_tf_001.tf")
        (state,) = client.get("/api/run-states/", headers=token).json()
        assert (state["run_number"], state["slices_created"], state["slices_failed"],
                state["stf_samples_received"], state["metadata"]) == (
            100001, 1, 1, 1, {"execution_id": "e-1", "namespace": "torre2"})
        client.post("/api/stf-files/", headers=token,
                    json={"run": 100001, "stf_filename": "swf.100001.000002.stf"})
        page = client.get("/api/stf-files/?limit=1&run_number=100001", headers=token).json()
        assert (page["count"], page["previous"]) == (2, None)
        assert [f["stf_filename"] for f in page["results"]] == ["swf.100001.000001.stf"]
        following = client.get(page["next"], headers=token).json()
        assert [f["stf_filename"] for f in following["results"]] == ["swf.100001.000002.stf"]
        assert following["next"] is None and following["previous"] is not None
    with EventStore(sqlite_url, read_only=True) as store:
        namespaces = {event.msg_type: event.namespace for event in store.read()}
    assert namespaces == {"stf_gen": "torre2", "rest_tf_file": "torre2", "rest_slice": "torre2",
                          "rest_slice_update": "torre2", "rest_stf_file": "torre2"}
