"""Fixtures for the console tests: a store with recorded executions, ``swf serve`` as a real
server process, and Debian's chromium driven by Playwright.

Load it as a plugin in a test module (pytest puts ``tests/`` on ``sys.path``)::

    pytest_plugins = ["console_fixtures"]

Without chromium or Playwright the browser tests skip, and fail under CI (``$CI`` set), as the
PostgreSQL fixtures do.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from broker import free_port, wait_for  # the same waiting and ports as the broker tests

REPO = Path(__file__).resolve().parent.parent
SWF = [sys.executable, "-c", "from swf.cli import run; run()"]
CHROMIUM = Path("/usr/bin/chromium")
BAD_LINES = b'not json\n{"msg_type":"launch","run_id":1}\n'


def unavailable(reason: str) -> None:
    """Skip locally; under CI a missing piece is a failure, not a skip."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def swf(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``swf ARGS`` (this checkout's code) to completion; fail on a non-zero exit."""
    result = subprocess.run([*SWF, *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})}, cwd=cwd, check=False,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise AssertionError(f"swf {' '.join(args)} exited {result.returncode}\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def record_executions(url: str, workdir: Path) -> None:
    """The default workflow, the prompt processing workflow and two rejected messages."""
    data = ["--data-dir", str(workdir / "data")]
    swf("run", "--db", url, *data, cwd=workdir)
    swf("run", "prompt_processing", "--db", url, *data, cwd=workdir)
    bad = workdir / "bad.jsonl"
    bad.write_bytes(BAD_LINES)
    swf("import", str(bad), "--db", url, cwd=workdir)


@pytest.fixture(scope="session")
def recorded_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store holding fast_processing-swf-0001, prompt_processing-swf-0001 and two
    rejected messages, shared by the console tests (they only read it)."""
    workdir = tmp_path_factory.mktemp("console-store")
    url = f"sqlite:///{workdir / 'swf.db'}"
    record_executions(url, workdir)
    return url


@dataclass
class Served:
    """``swf serve`` running as its own process."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def client(self, **kwargs: Any) -> httpx2.Client:
        return httpx2.Client(base_url=self.base_url, timeout=10, **kwargs)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(url: str, workdir: Path, *args: str, env: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> Served:
    """Start ``swf serve`` on a free loopback port and wait until it answers."""
    port = free_port()
    log = workdir / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*SWF, "serve", "--db", url, "--port", str(port), *args],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                   env={**os.environ, **(env or {})},
                                   stdin=subprocess.DEVNULL)
    served = Served(process, f"http://127.0.0.1:{port}", log)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"swf serve exited {process.returncode}:\n{served.output()}")
        try:
            with served.client() as client:
                return client.get("/api/v1/status", headers=headers).status_code < 500
        except httpx2.TransportError:
            return False
    try:
        wait_for(answers, "swf serve to answer")
    except BaseException:
        served.stop()
        raise
    return served


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start servers with ``serve(url, *args, env=...)``; all are stopped afterwards."""
    from swf.web import assets

    absent = assets.missing()
    if absent:  # `swf serve` refuses to start without its JavaScript
        unavailable("the console's JavaScript is not installed (deploy/install.sh): "
                    + "; ".join(absent))
    started: list[Served] = []

    def starting(url: str, *args: str, env: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> Served:
        served = start_server(url, tmp_path, *args, env=env, headers=headers)
        started.append(served)
        return served
    yield starting
    for served in started:
        served.stop()


# -- the browser --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's chromium under Playwright (no browser of Playwright's own)."""
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        unavailable("chromium is not installed (deploy/install.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=["--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watched:
    """A browser page that refuses to leave this machine and remembers what went wrong."""

    page: Any
    problems: list[str]
    foreign: list[str]


@pytest.fixture
def open_page(chromium: Any) -> Iterator[Callable[[], Watched]]:
    contexts: list[Any] = []

    def opening() -> Watched:
        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        watched = Watched(page, [], [])

        def route(route: Any) -> None:
            host = urlsplit(route.request.url).hostname
            if host in ("127.0.0.1", "localhost") or route.request.url.startswith("data:"):
                route.continue_()
            else:  # nothing may come from a CDN
                watched.foreign.append(route.request.url)
                route.abort()
        page.route("**/*", route)
        page.on("console", lambda message: watched.problems.append(message.text)
                if message.type == "error" else None)
        page.on("pageerror", lambda error: watched.problems.append(f"page error: {error}"))
        return watched
    yield opening
    for context in contexts:
        context.close()
