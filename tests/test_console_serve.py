"""``swf serve`` as a process: where it may listen, its token, and the live stream fed by the
store's follow (one follower for every client) keeping the projections current."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

pytest_plugins = ["console_fixtures"]
pytest.register_assert_rewrite("console_fixtures")
from console_fixtures import SWF, swf  # noqa: E402

TOKEN = "a-long-enough-console-token"


def serve_refused(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "SWF_API_TOKEN"}
    return subprocess.run([*SWF, "serve", *args], capture_output=True, text=True, timeout=60,
                          env={**environment, **(env or {})}, stdin=subprocess.DEVNULL,
                          check=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "console.example.org"])
def test_a_non_loopback_bind_without_a_token_is_refused(host: str, tmp_path: Path) -> None:
    result = serve_refused("--host", host, "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2
    assert "without a token" in result.stderr
    assert not (tmp_path / "x.db").exists()  # refused before the store is opened


def test_a_short_token_is_refused_too(tmp_path: Path) -> None:
    result = serve_refused("--host", "0.0.0.0", "--db", f"sqlite:///{tmp_path / 'x.db'}",
                           env={"SWF_API_TOKEN": "short"})
    assert result.returncode == 2 and "shorter than" in result.stderr
    assert "short" not in result.stderr.replace("shorter", "")


def test_the_config_files_token_guards_the_server(recorded_url: str, tmp_path: Path,
                                                  serve: Any) -> None:
    config = tmp_path / "swf.toml"
    config.write_text(f'[console]\ntoken = "{TOKEN}"\n')
    environment = {"SWF_API_TOKEN": ""}  # unset: the config file's token applies
    served = serve(recorded_url, "--config", str(config), env=environment,
                   headers={"Authorization": f"Bearer {TOKEN}"})
    with served.client() as client:
        assert client.get("/api/v1/runs").status_code == 401
        assert client.post("/api/v1/runs", content=b"{}").status_code == 401
        assert client.get("/", headers={"Accept": "text/html"}).status_code == 303
        ok = client.get("/api/v1/runs", headers={"Authorization": f"Token {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["rows"]
    assert TOKEN not in served.output()


def test_the_stream_announces_commits_with_projections_caught_up(tmp_path: Path,
                                                                 serve: Any) -> None:
    url = f"sqlite:///{tmp_path / 'swf.db'}"
    swf("run", "--db", url, "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    served = serve(url)
    messages = tmp_path / "more.jsonl"
    messages.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in (
        {"msg_type": "run_imminent", "msg_id": "m-1", "namespace": "torre2",
         "execution_id": "outside-0001", "run_id": 4242, "sender": "daq",
         "timestamp": "2026-02-01T00:00:00Z", "state": "run", "substate": "ready"},
        {"msg_type": "stf_gen", "msg_id": "m-2", "namespace": "torre2",
         "execution_id": "outside-0001", "run_id": 4242, "sender": "daq",
         "timestamp": "2026-02-01T00:00:01Z", "filename": "swf.4242.000001.stf",
         "sequence": 1})))
    with served.client() as client:
        head = client.get("/api/v1/status").json()["head"]
        notices: list[dict[str, Any]] = []
        with client.stream("GET", "/api/v1/stream", timeout=30) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            event = None
            for line in lines:
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line.startswith("data: ") and event == "hello":
                    assert orjson.loads(line[6:])["head"] == head
                    swf("import", str(messages), "--db", url, cwd=tmp_path)
                elif line.startswith("data: ") and event == "commit":
                    notices.append(orjson.loads(line[6:]))
                    if notices[-1]["head"] >= head + 2:
                        break
        assert sum(notice["events"] for notice in notices) == 2
        assert notices[-1]["executions"] == ["outside-0001"] and notices[-1]["runs"] == [4242]
        assert [row["msg_type"] for notice in notices for row in notice["rows"]] == [
            "run_imminent", "stf_gen"]
        # Announced after the catch-up: the run is already in the projections.
        runs = client.get("/api/v1/runs", params={"run": 4242}).json()["rows"]
        assert runs and runs[0]["stf_count"] == 1 and runs[0]["execution_id"] == "outside-0001"
        status = client.get("/api/v1/status").json()
        assert all(row["lag"] == 0 for row in status["projections"])


def test_every_client_gets_each_notice(tmp_path: Path, serve: Any) -> None:
    url = f"sqlite:///{tmp_path / 'swf.db'}"
    served = serve(url)
    clients = [httpx2.Client(base_url=served.base_url, timeout=30) for _ in range(5)]
    streams = [client.stream("GET", "/api/v1/stream") for client in clients]
    try:
        opened = [stream.__enter__() for stream in streams]
        # Kept: a dropped line iterator closes its response.
        lines = [response.iter_lines() for response in opened]
        for each in lines:  # each is subscribed once its hello arrived
            assert next(each) == "event: hello"
        status = clients[0].get("/api/v1/status").json()
        assert status["live_clients"] == 5
        one = tmp_path / "one.jsonl"
        one.write_bytes(b'{"msg_type":"agent_log","msg_id":"log-1","sender":"x",'
                        b'"level":"INFO","message":"hello"}\n')
        swf("import", str(one), "--db", url, cwd=tmp_path)
        heads = []
        for each in lines:
            for line in each:
                if line.startswith("id: "):
                    heads.append(int(line[4:]))
                    break
        assert heads == [status["head"] + 1] * 5
    finally:
        for stream in streams:
            stream.__exit__(None, None, None)
        for client in clients:
            client.close()


def test_sigterm_with_a_viewer_attached_stops_cleanly(recorded_url: str, serve: Any) -> None:
    served = serve(recorded_url)
    with served.client() as client, client.stream("GET", "/api/v1/stream") as stream:
        lines = stream.iter_lines()  # kept: a dropped line iterator closes its response
        assert next(lines) == "event: hello"
        # uvicorn shuts down gracefully, then ends by the signal it caught (as it was asked to)
        assert served.stop() in (0, -signal.SIGTERM)
        assert list(lines)[-1:] == [""]  # the stream ended with a complete event, not cut
    assert "ERROR" not in served.output() and "Traceback" not in served.output()
