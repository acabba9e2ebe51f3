"""``/api/v1/``: the same rows as ``swf query --json``, paging, replay views, and the rules for
bad or unauthorized requests (in process, through Starlette's TestClient)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from swf.cli import main
from swf.web.app import Settings, create_app
from swf.web.security import SESSION_COOKIE, check_bind, is_loopback

pytest_plugins = ["console_fixtures"]

FAST = "fast_processing-swf-0001"
PROMPT = "prompt_processing-swf-0001"
TOKEN = "t0ken-for-the-console-tests"


def cli_json(*args: str) -> Any:
    result = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


@pytest.fixture(scope="module")
def client(recorded_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(db_url=recorded_url))) as client:
        yield client


def rows(client: TestClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every row of a list endpoint, page by page."""
    out: list[dict[str, Any]] = []
    offset = 0
    while True:
        answer = client.get(path, params={**params, "offset": offset, "limit": 40})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        out.extend(page["rows"])
        if not page["more"]:
            return out
        offset += 40


# -- the same rows as swf query --json -------------------------------------------------------

@pytest.mark.parametrize(("path", "command", "filters"), [
    ("runs", "runs", {}),
    ("stf-files", "stf-files", {"run": "100001"}),
    ("tf-samples", "tf-samples", {"execution_id": FAST}),
    ("slices", "slices", {"execution_id": FAST}),
    ("slices", "slices", {"status": "completed", "run": "100001"}),
    ("datasets", "datasets", {}),
    ("tasks", "tasks", {"execution_id": PROMPT}),
    ("executions", "executions", {"namespace": "torre2"}),
    ("logs", "logs", {}),
])
def test_lists_are_the_cli_rows(client: TestClient, recorded_url: str, path: str, command: str,
                                filters: dict[str, str]) -> None:
    options = [item for key, value in filters.items()
               for item in (f"--{key.replace('_', '-')}", value)]
    expected = cli_json("query", command, "--db", recorded_url, *options)
    assert expected or path in ("logs",), "the store should have rows to compare"
    assert rows(client, f"/api/v1/{path}", **filters) == expected


def test_agents_with_a_moment_are_the_cli_rows(client: TestClient, recorded_url: str) -> None:
    moment = "2026-01-01T00:02:00Z"  # during the first execution: its agents are alive then
    expected = cli_json("query", "agents", "--db", recorded_url, "--now", moment)
    assert {row["status"] for row in expected} != {"EXITED"}
    assert rows(client, "/api/v1/agents", now=moment) == expected


def test_execution_summary_and_the_log_are_the_cli_ones(client: TestClient,
                                                         recorded_url: str) -> None:
    assert client.get(f"/api/v1/executions/{FAST}").json() == cli_json(
        "query", "execution", FAST, "--db", recorded_url)
    messages = cli_json("query", "messages", "--db", recorded_url, "--execution-id", FAST)
    answer = client.get("/api/v1/messages", params={"execution_id": FAST, "limit": 1000})
    assert answer.json()["rows"] == messages
    rejected = cli_json("query", "rejected", "--db", recorded_url)
    assert len(rejected) == 2
    assert client.get("/api/v1/rejected").json()["rows"] == rejected


def test_message_pages_follow_the_position_cursor(client: TestClient) -> None:
    first = client.get("/api/v1/messages", params={"limit": 100}).json()
    assert first["more"] and len(first["rows"]) == 100
    second = client.get("/api/v1/messages", params={"limit": 100,
                                                    "after": first["next_after"]}).json()
    assert second["rows"][0]["position"] > first["rows"][-1]["position"]
    everything = client.get("/api/v1/messages", params={"limit": 200}).json()["rows"]
    assert everything == first["rows"] + second["rows"]


def test_newest_first_tables_page_back_in_time(client: TestClient, recorded_url: str) -> None:
    every = cli_json("query", "executions", "--db", recorded_url)
    assert [row["execution_id"] for row in every] == [FAST, PROMPT]
    newest = client.get("/api/v1/executions", params={"limit": 1}).json()
    assert newest["rows"] == cli_json("query", "executions", "--db", recorded_url, "--limit", "1")
    assert newest["rows"][0]["execution_id"] == PROMPT and newest["more"]
    older = client.get("/api/v1/executions", params={"limit": 1, "offset": 1}).json()
    assert older["rows"][0]["execution_id"] == FAST and not older["more"]


def test_one_message_has_its_raw_body_and_headers(client: TestClient) -> None:
    row = client.get("/api/v1/rejected").json()["rows"][0]
    message = client.get(f"/api/v1/messages/{row['position']}").json()
    assert message["body"] == "not json" and message["valid"] is False
    assert message["reject_reason"].startswith("not JSON")
    assert client.get("/api/v1/messages/999999").status_code == 404


# -- the replay views ------------------------------------------------------------------------

def test_time_travel_is_swf_replay_until(client: TestClient, recorded_url: str) -> None:
    middle = client.get("/api/v1/messages", params={"execution_id": FAST, "limit": 200}
                        ).json()["rows"][-1]["position"]
    expected = cli_json("replay", FAST, "--db", recorded_url, "--until", str(middle))
    state = client.get(f"/api/v1/executions/{FAST}/state", params={"until": str(middle)}).json()
    assert state == expected
    assert state["executions"][0]["status"] == "running"  # part way through
    at_time = client.get(f"/api/v1/executions/{FAST}/state",
                         params={"until": "2026-01-01T00:01:00Z"}).json()
    assert at_time["until"]["time"] == "2026-01-01T00:01:00.000000Z"


def test_drift_check_diagram_and_timeline(client: TestClient, recorded_url: str) -> None:
    drift = client.get(f"/api/v1/executions/{FAST}/drift").json()
    assert drift["identical"] is True and drift["events"] > 0
    assert client.get(f"/api/v1/executions/{FAST}/mermaid").json() == cli_json(
        "replay", FAST, "--db", recorded_url, "--mermaid")
    timeline = client.get(f"/api/v1/executions/{FAST}/timeline").json()
    summary = client.get(f"/api/v1/executions/{FAST}").json()
    assert timeline["stf_files"]["total"][-1] == summary["stf_count"] == 10
    assert timeline["tf_samples"]["total"][-1] == summary["stf_samples_received"]
    assert timeline["slices_completed"]["total"][-1] == summary["slices_completed"] == 150
    assert timeline["slices_failed"]["total"] == []
    times = timeline["slices_completed"]["time"]
    assert times == sorted(times) and times[0] >= summary["start_time"][:19]


def test_status_reports_head_and_lag(client: TestClient) -> None:
    status = client.get("/api/v1/status").json()
    newest = client.get("/api/v1/rejected").json()["rows"][-1]["position"]
    assert status["head"] == status["recorder"]["head"] == newest
    assert {row["name"] for row in status["projections"]} >= {"executions", "tf_slices"}
    assert all(row["head"] == newest for row in status["projections"])


# -- bad requests: a 4xx with a reason -------------------------------------------------------

@pytest.mark.parametrize(("path", "params", "status", "reason"), [
    ("/api/v1/runs", {"since": "yesterday"}, 400, "not an ISO-8601 time"),
    ("/api/v1/runs", {"run": "-1"}, 422, "greater than or equal"),
    ("/api/v1/runs", {"run": str(1 << 64)}, 422, "less than or equal"),
    ("/api/v1/runs", {"limit": "0"}, 422, "greater than or equal"),
    ("/api/v1/runs", {"limit": "abc"}, 422, "valid integer"),
    ("/api/v1/runs", {"namespace": "a\x00b"}, 400, "NUL"),
    ("/api/v1/executions/nope", {}, 404, "no execution 'nope'"),
    (f"/api/v1/executions/{FAST}/state", {"until": "soon"}, 400, "neither a log position"),
    (f"/api/v1/executions/{FAST}/state", {}, 422, "required"),
    ("/api/v1/messages/0", {}, 422, "greater than or equal"),
    ("/api/v1/messages", {"after": "-5"}, 422, "greater than or equal"),
])
def test_bad_requests_get_a_reason(client: TestClient, path: str, params: dict[str, str],
                                   status: int, reason: str) -> None:
    answer = client.get(path, params=params)
    assert answer.status_code == status, answer.text
    assert reason in answer.text


def test_repeated_parameters_are_refused(client: TestClient) -> None:
    answer = client.get("/api/v1/runs?run=100001&run=100002")
    assert answer.status_code == 400 and "more than once" in answer.json()["detail"]


def test_bad_page_parameters_get_a_page_with_the_reason(client: TestClient) -> None:
    answer = client.get("/slices", params={"since": "last week"})
    assert answer.status_code == 400 and "not an ISO-8601 time" in answer.text
    assert client.get("/executions/nope").status_code == 404
    assert client.get("/runs/424242").status_code == 404
    assert "neither a log position" in client.get(f"/fragments/executions/{FAST}/state",
                                                  params={"until": "x"}).text


# -- writes, tokens, bodies -------------------------------------------------------------------

def test_writes_need_a_configured_token(client: TestClient) -> None:
    answer = client.post("/logout", follow_redirects=False)  # a route that takes writes
    assert answer.status_code == 403 and "no API token" in answer.json()["detail"]
    assert client.post("/api/v1/runs", content=b"{}").status_code == 405  # takes none


@pytest.fixture(scope="module")
def guarded(recorded_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(db_url=recorded_url, token=TOKEN, max_body=4096)),
                    follow_redirects=False) as client:
        yield client


def test_a_token_guards_every_request(guarded: TestClient) -> None:
    assert guarded.get("/api/v1/status").status_code == 401
    assert guarded.get("/api/v1/status", headers={"Authorization": "Bearer wrong"}
                       ).status_code == 401
    for scheme in ("Bearer", "Token"):  # upstream agents send "Token <SWF_API_TOKEN>"
        assert guarded.get("/api/v1/runs", headers={"Authorization": f"{scheme} {TOKEN}"}
                           ).status_code == 200
    assert guarded.post("/api/v1/runs", content=b"{}").status_code == 401
    assert guarded.post("/logout").status_code == 401
    authorized = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.post("/api/v1/runs", content=b"{}", headers=authorized).status_code == 405
    assert guarded.post("/logout", headers=authorized).status_code == 303
    assert guarded.get("/static/console.css").status_code == 200  # no secret in there


def test_request_bodies_are_bounded(guarded: TestClient) -> None:
    authorized = {"Authorization": f"Bearer {TOKEN}"}
    declared = guarded.post("/api/v1/runs", content=b"x" * 5000, headers=authorized)
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
        for _ in range(10):
            yield b"x" * 1000
    chunked = guarded.post("/login", content=chunks(), headers=authorized)
    assert chunked.status_code == 413


def test_people_log_in_once_and_the_token_never_shows(guarded: TestClient,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    page = guarded.get(f"/executions/{FAST}", headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
    wrong = guarded.post("/login", data={"token": "guess", "next": "/runs"})
    assert wrong.status_code == 401 and SESSION_COOKIE not in wrong.cookies
    right = guarded.post("/login", data={"token": TOKEN, "next": "//evil.example/"})
    assert right.status_code == 303 and right.headers["location"] == "/"
    cookie = right.cookies[SESSION_COOKIE]
    assert TOKEN not in cookie
    guarded.cookies.set(SESSION_COOKIE, cookie)
    try:
        pages = [guarded.get(path) for path in ("/", f"/executions/{FAST}", "/messages",
                                                "/api/v1/status", "/openapi.json")]
    finally:
        guarded.cookies.clear()
    assert [answer.status_code for answer in pages] == [200] * len(pages)
    for answer in pages:
        assert TOKEN not in answer.text
    assert TOKEN not in caplog.text


def test_binding_beyond_loopback_needs_a_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    check_bind("127.0.0.1", None)
    with pytest.raises(ValueError, match="without a token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ValueError, match="shorter than"):
        check_bind("0.0.0.0", "short")
    check_bind("0.0.0.0", TOKEN)


def test_pages_send_no_script_from_elsewhere(client: TestClient) -> None:
    answer = client.get(f"/executions/{FAST}")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "http" not in policy
    assert "cdn" not in answer.text.lower()


# -- PostgreSQL -------------------------------------------------------------------------------

@pytest.mark.postgres
def test_the_api_reads_postgresql_like_the_cli(pg_url: str, tmp_path: Path) -> None:
    from console_fixtures import record_executions

    record_executions(pg_url, tmp_path)
    with TestClient(create_app(Settings(db_url=pg_url))) as pg:
        assert rows(pg, "/api/v1/slices", run="100001") == cli_json(
            "query", "slices", "--db", pg_url, "--run", "100001")
        assert pg.get(f"/api/v1/executions/{FAST}").json() == cli_json(
            "query", "execution", FAST, "--db", pg_url)
        assert pg.get(f"/api/v1/executions/{FAST}/drift").json()["identical"] is True
        assert len(pg.get("/api/v1/rejected").json()["rows"]) == 2


@pytest.mark.parametrize("path", [
    "/", "/executions", "/runs", "/stf-files", "/tf-samples", "/slices", "/datasets", "/tasks",
    "/agents", "/logs", "/messages", "/rejected", "/stream", f"/executions/{FAST}",
    "/runs/100001", "/messages/1", "/fragments/overview", f"/fragments/executions/{FAST}",
    f"/fragments/executions/{FAST}/state", f"/fragments/executions/{FAST}/drift",
    "/fragments/rows/slices", "/fragments/runs/100001", "/fragments/messages",
    "/fragments/rejected"])
@pytest.mark.parametrize("params", [
    {}, {"run": "x"}, {"run": str(1 << 70)}, {"since": "0161-09-21T05:15:50Z"},
    {"until": "9999-12-31T23:59:59-23:59"}, {"offset": "-1"}, {"limit": "0"},
    {"after": "99999999999999999999999"}, {"section": "<script>"}, {"status": "é\u2028"},
    {"namespace": "x" * 600}, {"until": "12"}, {"now": "soon"}])
def test_pages_answer_odd_parameters_without_a_server_error(client: TestClient, path: str,
                                                            params: dict[str, str]) -> None:
    answer = client.get(path, params=params)
    assert answer.status_code < 500, answer.text
    assert "<script>" not in answer.text.replace('<script src=', '')
