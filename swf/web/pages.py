"""The console's HTML pages, fed by the same queries as ``swf query`` (through ``data``).

A page is a layout around fragments; each fragment (``/fragments/...``) re-renders itself when
the live stream says events committed (``hx-trigger="swf-commit from:body"``), so an open page
follows the store without a reload. Bad parameters get a 400 page with the reason.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from . import assets
from . import data as d
from .api import filters_of
from .console import Console, console_of
from .security import LOGIN_PATH, SESSION_COOKIE, redact_headers, session_value

PAGE_SIZE = 50
MAX_PAGE = 1000
INT64_MAX = (1 << 63) - 1
TITLES = {"executions": "Executions", "runs": "Runs", "stf-files": "STF files",
          "tf-samples": "TF samples", "slices": "TF slices", "datasets": "Datasets",
          "tasks": "PanDA tasks", "agents": "Agents", "logs": "Logs"}
_SECTION = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_INT_FILTERS = frozenset({"run"})
_TIME_FILTERS = frozenset({"since", "until", "now"})

templates = Jinja2Templates(directory=str(assets.TEMPLATES))
router = APIRouter(include_in_schema=False)


class BadPage(ValueError):
    """A parameter a page cannot use; shown as a 400 page."""


# -- rendering helpers ------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _duration(seconds: float) -> str:
    """A span for people: 0.25 s, 42 s, 3 min 5 s, 2 h 10 min, 331 d 4 h."""
    sign, left = ("-" if seconds < 0 else ""), abs(seconds)
    if left < 60:
        return f"{sign}{left:.3g} s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{int(left // size)} {unit}")
            left %= size
        if len(parts) == 2:
            break
    return sign + " ".join(parts)


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode()


def _link(column: str, value: Any, row: Mapping[str, Any]) -> Markup | str:
    """A cell, linked to the page of what it names."""
    text = _cell(value)
    if value is None:
        return text
    href = None
    if column == "execution_id":
        href = f"/executions/{_quote(str(value))}"
    elif column in ("run_number", "run_id"):
        namespace = row.get("namespace")
        href = f"/runs/{value}" + (f"?{urlencode({'namespace': namespace})}"
                                   if namespace else "")
    elif column == "position" and "destination" in row:  # a message of the log
        href = f"/messages/{value}"
    if href is None:
        return text
    return Markup('<a href="{}">{}</a>').format(href, text)


def _quote(text: str) -> str:
    return quote(text, safe="")


def _with(url: str, params: Mapping[str, Any], **changes: Any) -> str:
    merged = {k: v for k, v in {**params, **changes}.items() if v not in (None, "")}
    return f"{url}?{urlencode(merged)}" if merged else url


templates.env.filters["cell"] = _cell
templates.env.filters["pretty"] = _pretty
templates.env.filters["duration"] = _duration
templates.env.globals["link"] = _link
templates.env.globals["with_params"] = _with
templates.env.globals["titles"] = TITLES


def _render(request: Request, name: str, http_status: int = 200, **context: Any
            ) -> HTMLResponse:
    context.setdefault("token_configured", request.app.state.token_configured)
    return templates.TemplateResponse(request, name, context, status_code=http_status)


def _respond(request: Request, build: Callable[[], Response]) -> Response:
    return console_of(request).respond(request, build)


def _problem(request: Request, status: int, reason: str) -> HTMLResponse:
    return _render(request, "error.html", http_status=status, reason=reason,
                   title=f"{status}")


# -- parameters -------------------------------------------------------------------------------

def _params(request: Request) -> dict[str, str]:
    return {key: value for key, value in parse_qsl(request.url.query, keep_blank_values=False)}


def _filters(params: Mapping[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        value = params.get(name, "").strip()
        if not value:
            continue
        if len(value) > 512:
            raise BadPage(f"{name} is longer than 512 characters")
        if name in _INT_FILTERS:
            if not value.isdigit() or int(value) > INT64_MAX:
                raise BadPage(f"{name} must be a run number, not {value!r}")
            out[name] = int(value)
        elif name in _TIME_FILTERS:
            out[name] = d.moment(value)
        else:
            out[name] = value
    return out


def _int(params: Mapping[str, str], name: str, default: int, top: int) -> int:
    value = params.get(name, "")
    if value == "":
        return default
    if not value.isdigit() or int(value) > top:
        raise BadPage(f"{name} must be a whole number from 0 to {top}, not {value!r}")
    return int(value)


# -- overview -----------------------------------------------------------------------------------

def _overview(console: Console) -> dict[str, Any]:
    data = console.data
    agents = data.rows("agents", limit=MAX_PAGE).rows
    alive = [agent for agent in agents if agent["status"] != "EXITED"]
    return {
        "status": console.status(),
        "open_executions": data.rows("executions", status="running", limit=20).rows,
        "recent_executions": list(reversed(data.rows("executions", limit=10).rows)),
        "recent_runs": data.recent_runs(10),
        "agents_alive": alive, "agents_stale": len(agents) - len(alive),
        "stale_minutes": int(d.STALE_AFTER.total_seconds() // 60),
    }


@router.get("/", response_class=HTMLResponse)
def overview(request: Request) -> Response:
    return _respond(request, lambda: _render(request, "overview.html", title="Overview",
                                             **_overview(console_of(request))))


@router.get("/fragments/overview", response_class=HTMLResponse)
def overview_fragment(request: Request) -> Response:
    return _respond(request, lambda: _render(request, "_overview.html",
                                             **_overview(console_of(request))))


# -- an execution -------------------------------------------------------------------------------

def _execution(request: Request, execution_id: str) -> dict[str, Any] | Response:
    console = console_of(request)
    namespace = _params(request).get("namespace") or None
    try:
        summary = console.data.execution(execution_id, namespace=namespace)
    except d.AmbiguousExecution as problem:
        return _problem(request, 409, str(problem))
    if summary is None:
        return _problem(request, 404, f"no execution {execution_id!r}")
    runs = console.data.execution_runs(execution_id, summary["namespace"])
    return {"summary": summary, "runs": runs, "execution_id": execution_id,
            "namespace": summary["namespace"]}


@router.get("/executions/{execution_id}", response_class=HTMLResponse)
def execution(request: Request, execution_id: str) -> Response:
    def build() -> Response:
        context = _execution(request, execution_id)
        if isinstance(context, Response):
            return context
        return _render(request, "execution.html", title=f"Execution {execution_id}",
                       **context)
    return _respond(request, build)


@router.get("/fragments/executions/{execution_id}", response_class=HTMLResponse)
def execution_fragment(request: Request, execution_id: str) -> Response:
    def build() -> Response:
        context = _execution(request, execution_id)
        if isinstance(context, Response):
            return context
        return _render(request, "_execution.html", **context)
    return _respond(request, build)


@router.get("/fragments/executions/{execution_id}/state", response_class=HTMLResponse)
def execution_state(request: Request, execution_id: str) -> Response:
    until = _params(request).get("until", "").strip()
    if not until:
        return _problem(request, 400, "give a log position or an ISO-8601 time")
    try:
        state = console_of(request).state_at(execution_id, until)
    except d.BadQuery as problem:
        return _problem(request, 400, str(problem))
    return _render(request, "_state.html", state=state)


@router.get("/fragments/executions/{execution_id}/drift", response_class=HTMLResponse)
def execution_drift(request: Request, execution_id: str) -> Response:
    return _render(request, "_drift.html", drift=console_of(request).drift(execution_id))


# -- a run ------------------------------------------------------------------------------------

def _run(request: Request, run_number: int) -> dict[str, Any] | Response:
    if run_number > INT64_MAX:
        return _problem(request, 400, "not a run number")
    namespace = _params(request).get("namespace") or None
    runs = console_of(request).data.run(run_number, namespace)
    if not runs:
        return _problem(request, 404, f"no run {run_number}")
    if len(runs) > 1:
        spaces = ", ".join(str(run["namespace"]) for run in runs)
        return _problem(request, 409, f"run {run_number} exists in namespaces {spaces}; "
                                      f"add ?namespace=")
    return {"run": runs[0], "run_number": run_number, "namespace": runs[0]["namespace"]}


@router.get("/runs/{run_number}", response_class=HTMLResponse)
def run(request: Request, run_number: int) -> Response:
    return _respond(request, lambda: _run_page(request, run_number))


def _run_page(request: Request, run_number: int) -> Response:
    context = _run(request, run_number)
    if isinstance(context, Response):
        return context
    fixed = {"run": run_number, "namespace": context["namespace"]}
    sections = []
    for url_name, section in (("stf-files", "stf"), ("tf-samples", "samples"),
                              ("slices", "slices")):
        params = {"section": section, **fixed}
        try:
            sections.append(_rows_context(request, url_name, params, fixed=fixed))
        except (BadPage, d.BadQuery) as problem:
            return _problem(request, 400, str(problem))
    return _render(request, "run.html", title=f"Run {run_number}", sections=sections,
                   **context)


@router.get("/fragments/runs/{run_number}", response_class=HTMLResponse)
def run_fragment(request: Request, run_number: int) -> Response:
    def build() -> Response:
        context = _run(request, run_number)
        if isinstance(context, Response):
            return context
        return _render(request, "_run.html", **context)
    return _respond(request, build)


# -- lists ------------------------------------------------------------------------------------

def _rows_context(request: Request, url_name: str, params: Mapping[str, Any],
                  fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    name = d.TABLES[url_name]
    names = filters_of(name)
    text = {key: str(value) for key, value in params.items() if value is not None}
    filters = _filters(text, names)
    offset = _int(text, "offset", 0, 1_000_000)
    limit = _int(text, "limit", PAGE_SIZE, MAX_PAGE) or PAGE_SIZE
    section = text.get("section", "rows")
    if not _SECTION.match(section):
        raise BadPage("section must be a short lowercase name")
    page = console_of(request).data.rows(name, offset=offset, limit=limit, **filters)
    fixed = dict(fixed or {})
    state = {key: value for key, value in text.items()
             if key in names or key in ("limit", "section")}
    state.update({key: str(value) for key, value in fixed.items() if value is not None})
    fragment = f"/fragments/rows/{url_name}"
    return {
        "url_name": url_name, "title": TITLES[url_name], "section": section,
        "columns": d.display_columns(name), "rows": page.rows, "more": page.more,
        "filters": [name for name in names if name not in fixed],
        "values": text, "fixed": {k: v for k, v in fixed.items() if v is not None},
        "offset": offset, "limit": limit, "latest": name in ("executions", "logs"),
        "self_url": _with(fragment, state, offset=offset or None),
        "fragment": fragment, "state": state,
    }


def _list_page(request: Request, url_name: str) -> Response:
    try:
        context = _rows_context(request, url_name, _params(request))
    except (BadPage, d.BadQuery) as problem:
        return _problem(request, 400, str(problem))
    return _render(request, "rows.html", title=TITLES[url_name], table=context)


def _rows_fragment(request: Request, url_name: str) -> Response:
    params = _params(request)
    fixed: dict[str, Any] | None = None
    if params.get("section", "rows") != "rows":  # a run page's section keeps its run
        fixed = {key: params[key] for key in ("run", "namespace") if key in params}
    try:
        context = _rows_context(request, url_name, params, fixed=fixed)
    except (BadPage, d.BadQuery) as problem:
        return _problem(request, 400, str(problem))
    return _render(request, "_rows.html", table=context)


for _url_name in d.TABLES:
    def _page(request: Request, _name: str = _url_name) -> Response:
        return _respond(request, lambda: _list_page(request, _name))

    def _fragment(request: Request, _name: str = _url_name) -> Response:
        return _respond(request, lambda: _rows_fragment(request, _name))

    router.add_api_route(f"/{_url_name}", _page, methods=["GET"], response_class=HTMLResponse,
                         name=f"page_{_url_name}")
    router.add_api_route(f"/fragments/rows/{_url_name}", _fragment, methods=["GET"],
                         response_class=HTMLResponse, name=f"fragment_{_url_name}")


# -- the log ----------------------------------------------------------------------------------

_LOG_FILTERS = {"messages": ("execution_id", "run", "msg_type", "namespace", "since", "until"),
                "rejected": ("execution_id", "since", "until")}


def _messages_context(request: Request, kind: str) -> dict[str, Any]:
    params = _params(request)
    names = _LOG_FILTERS[kind]
    filters = _filters(params, names)
    after = _int(params, "after", 0, INT64_MAX)
    limit = _int(params, "limit", PAGE_SIZE, MAX_PAGE) or PAGE_SIZE
    console = console_of(request)
    page = console.data.messages(after=after, limit=limit,
                                 valid=False if kind == "rejected" else None, **filters)
    state = {key: value for key, value in params.items() if key in names or key == "limit"}
    fragment = f"/fragments/{kind}"
    return {
        "kind": kind, "title": "Messages" if kind == "messages" else "Rejected messages",
        "columns": d.MESSAGE_LIST_COLUMNS if kind == "messages" else
        ("position", "time", "destination", "msg_type", "sender", "reject_reason", "body"),
        "rows": [{**row, "body": _short(row["body"])} for row in page.rows],
        "more": page.more, "filters": names, "values": params, "after": after, "limit": limit,
        "next_after": page.rows[-1]["position"] if page.more else None,
        "latest_after": max(console.hub.head - limit, 0), "state": state,
        "fragment": fragment, "self_url": _with(fragment, state, after=after or None),
    }


def _short(body: str) -> str:
    return body if len(body) <= 80 else body[:77] + "..."


def _log_page(request: Request, kind: str, fragment: bool) -> Response:
    try:
        context = _messages_context(request, kind)
    except (BadPage, d.BadQuery) as problem:
        return _problem(request, 400, str(problem))
    if fragment:
        return _render(request, "_messages.html", log=context)
    return _render(request, "messages.html", title=context["title"], log=context)


@router.get("/messages", response_class=HTMLResponse)
def messages(request: Request) -> Response:
    return _respond(request, lambda: _log_page(request, "messages", False))


@router.get("/fragments/messages", response_class=HTMLResponse)
def messages_fragment(request: Request) -> Response:
    return _respond(request, lambda: _log_page(request, "messages", True))


@router.get("/rejected", response_class=HTMLResponse)
def rejected(request: Request) -> Response:
    return _respond(request, lambda: _log_page(request, "rejected", False))


@router.get("/fragments/rejected", response_class=HTMLResponse)
def rejected_fragment(request: Request) -> Response:
    return _respond(request, lambda: _log_page(request, "rejected", True))


@router.get("/messages/{position}", response_class=HTMLResponse)
def message(request: Request, position: int) -> Response:
    return _respond(request, lambda: _message_page(request, position))


def _message_page(request: Request, position: int) -> Response:
    if not 1 <= position <= INT64_MAX:
        return _problem(request, 404, f"no message at position {position}")
    found = console_of(request).data.message(position)
    if found is None:
        return _problem(request, 404, f"no message at position {position}")
    found["headers"] = redact_headers(found["headers"])
    try:
        body = _pretty(orjson.loads(found["body"]))
    except orjson.JSONDecodeError:
        body = None
    return _render(request, "message.html", title=f"Message {position}", message=found,
                   pretty_body=body)


@router.get("/stream", response_class=HTMLResponse)
def stream(request: Request) -> Response:
    return _render(request, "stream.html", title="Live message stream")


# -- login --------------------------------------------------------------------------------------

def _next(target: str | None) -> str:
    """Only a path of this site (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get(LOGIN_PATH, response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return _render(request, "login.html", title="Log in",
                   next=_next(_params(request).get("next")), failed=False)


@router.post(LOGIN_PATH, response_class=HTMLResponse)
async def login(request: Request) -> Response:
    token = request.app.state.login_token
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    given = form.get("token", "")
    target = _next(form.get("next"))
    if not token or not _same(given, token):
        return _render(request, "login.html", http_status=401, title="Log in", next=target,
                       failed=True)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, session_value(token), httponly=True, samesite="strict",
                        path="/")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())
