"""The console in a real browser (Debian's chromium under Playwright), against ``swf serve``:
the pages show the store's numbers, the diagram and chart render from locally served scripts,
and an open page follows a ``--realtime`` run by itself until it completes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["console_fixtures"]
pytest.register_assert_rewrite("broker", "console_fixtures")
from broker import WAIT, wait_for  # noqa: E402
from console_fixtures import SWF, Served  # noqa: E402

FAST = "fast_processing-swf-0001"
PROMPT = "prompt_processing-swf-0001"
pytestmark = pytest.mark.slow


def field(page: Any, scope: str, name: str) -> str:
    return str(page.locator(f'{scope} [data-field="{name}"]').first.inner_text()).strip()


def clean(watched: Any) -> None:
    assert watched.foreign == [], "the page asked for something beyond this machine"
    assert [problem for problem in watched.problems if "/api/v1/stream" not in problem] == []


def test_pages_show_the_recorded_executions(recorded_url: str, serve: Any,
                                            open_page: Any) -> None:
    served: Served = serve(recorded_url)
    with served.client() as client:
        summary = client.get(f"/api/v1/executions/{FAST}").json()
        run = client.get("/api/v1/runs", params={"run": 100001}).json()["rows"][0]
        head = client.get("/api/v1/status").json()["head"]
    watched = open_page()
    page = watched.page

    page.goto(served.base_url + "/")
    row = '#recent-runs tr[data-run="100001"]'
    assert field(page, row, "stf_count") == str(run["stf_count"]) == "10"
    assert field(page, row, "slices_completed") == str(run["slices_completed"]) == "150"
    assert field(page, row, "phase") == "completed"
    assert field(page, f'#recent-executions tr[data-execution="{PROMPT}"]', "status") == \
        "completed"
    assert field(page, "", "head") == str(head)
    page.wait_for_selector("#live.on")  # the live stream connected

    page.goto(f"{served.base_url}/executions/{FAST}")
    for name in ("status", "stf_count", "stf_samples_received", "slices_created",
                 "slices_completed", "slices_failed"):
        assert field(page, ".card", name) == str(summary[name]), name
    assert field(page, '#runs tr[data-run="100001"]', "slices_completed") == "150"
    # The sequence diagram, drawn by mermaid in the page: one lane per agent.
    page.wait_for_selector("#diagram svg", timeout=WAIT * 1000)
    lanes = page.locator("#diagram svg text.actor").all_text_contents()
    assert any("Fast Processing Agent" in text for text in lanes), lanes
    assert page.locator("#diagram svg text.messageText", has_text="slice_result").count() > 0
    # The timeline, drawn by plotly: four series (no slice failed: three lines drawn), the
    # slices one ending at 150.
    page.wait_for_selector("#timeline .scatterlayer .trace", timeout=WAIT * 1000)
    assert page.evaluate("() => document.getElementById('timeline').data.map(t => t.name)") == [
        "STF files", "TF samples", "slices completed", "slices failed"]
    assert page.locator("#timeline .scatterlayer .trace").count() == 3
    last = page.evaluate("() => { const d = document.getElementById('timeline').data;"
                         " return d[2].y[d[2].y.length - 1]; }")
    assert last == 150
    # The drift check's verdict and the time travel form.
    page.wait_for_selector("#verdict")
    assert page.locator("#verdict").get_attribute("data-verdict") == "identical"
    page.fill("#travel input[name=until]", "2026-01-01T00:00:40Z")
    page.click("#travel button")
    page.wait_for_selector("#state #state-heading")
    travelled = client_state(served, "2026-01-01T00:00:40Z")
    assert field(page, "#state", "events") == str(travelled["events"])
    assert field(page, "#state", "slices_completed") == str(
        travelled["executions"][0]["slices_completed"])
    assert 0 < travelled["executions"][0]["slices_completed"] < 150

    page.goto(f"{served.base_url}/runs/100001")
    assert page.locator("#rows-stf tbody tr").count() == 10
    assert page.locator("#rows-samples tbody tr").count() == 10
    assert page.locator("#rows-slices tbody tr").count() == 50  # one page of 150
    page.click("#rows-slices .pager a:text('next')")
    page.wait_for_selector("#rows-slices .page-info:text('rows 51–100')")
    page.fill("#rows-slices input[name=status]", "failed")
    page.click("#rows-slices button")
    page.wait_for_selector("#rows-slices .empty")

    page.goto(f"{served.base_url}/rejected")
    assert page.locator("#log-rejected tbody tr").count() == 2
    page.click("#log-rejected tbody tr >> nth=0 >> a")
    assert page.locator("#raw-body").inner_text() == "not json"
    clean(watched)


def client_state(served: Served, until: str) -> dict[str, Any]:
    with served.client() as client:
        answer = client.get(f"/api/v1/executions/{FAST}/state", params={"until": until})
        assert answer.status_code == 200
        return dict(answer.json())


def test_open_pages_follow_a_realtime_run(tmp_path: Path, serve: Any, open_page: Any) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    served = serve(url)
    overview, stream = open_page(), open_page()
    overview.page.goto(served.base_url + "/")
    stream.page.goto(served.base_url + "/stream")
    for watched in (overview, stream):
        watched.page.wait_for_selector("#live.on")
    log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen(
        [*SWF, "run", "--db", url, "--realtime", "--speed", "20", "--data-dir",
         str(tmp_path / "data")], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        stdin=subprocess.DEVNULL)
    try:
        with served.client() as client:
            wait_for(lambda: client.get(f"/api/v1/executions/{FAST}").status_code == 200,
                     "the execution to start")
        watched = open_page()
        page = watched.page
        page.goto(f"{served.base_url}/executions/{FAST}")
        assert field(page, ".card", "status") == "running"
        before = int(field(page, ".card", "slices_completed"))
        assert before < 150
        page.evaluate("() => { window.notReloaded = true; }")
        # No reload from here on: the page's live regions must reach the final state.
        page.wait_for_function(
            "() => document.querySelector('.card [data-field=status]').textContent.trim()"
            " === 'completed'", timeout=120_000)
        assert run.wait(timeout=60) == 0
        assert page.evaluate("() => window.notReloaded") is True
        with served.client() as client:
            summary = client.get(f"/api/v1/executions/{FAST}").json()
        assert summary["status"] == "completed" and summary["slices_completed"] == 150
        page.wait_for_function("() => document.querySelector('.card [data-field="
                               "slices_completed]').textContent.trim() === '150'")
        assert field(page, '#runs tr[data-run="100001"]', "slices_completed") == "150"
        # The overview, open since before the run, shows it completed too.
        overview.page.wait_for_selector(
            f'#recent-executions tr[data-execution="{FAST}"] [data-field=status]'
            f':text("completed")', timeout=WAIT * 1000)
        # The live stream listed the run's messages as they committed.
        listed = stream.page.locator("#stream tbody tr").count()
        assert listed > 100
        assert stream.page.locator("#stream tbody tr td:text('end_run')").count() == 1
        for each in (watched, overview, stream):
            clean(each)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        log.close()
