"""``/api/v1/``: every ``swf query`` as JSON, with the same filters and row shapes as
``--json``, one page at a time; the execution's replay views; the live stream.

Lists answer ``{"rows": [...], "offset", "limit", "more"}`` (the log: ``"after"`` and
``"next_after"``, a position cursor). ``limit`` defaults to 100 (at most 1000); with offset 0 a
list gives the rows ``swf query NAME --limit N --json`` prints (executions and logs: the latest,
oldest first; a higher offset pages back in time).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, create_model
from sse_starlette import EventSourceResponse

from . import data as d
from .console import Console, console_of
from .security import redact_headers

INT64_MAX = (1 << 63) - 1
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000
STREAM_WAKE = 1.0  # seconds a stream waits for a notice before looking for a shutdown
TEXT = 512  # longest filter value (the store keeps indexed columns at 512 characters)
NO_NUL = "^[^\\x00]*$"  # PostgreSQL text cannot hold NUL: such a value is a 400


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class Problem(BaseModel):
    detail: str


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem("A parameter the console cannot use (the reason is in detail)."),
    401: _problem("The console has a token and the request did not carry it."),
    403: _problem("A write while the console has no token configured."),
    413: _problem("The request body is too large."),
}


# -- row models, from the projection tables -------------------------------------------------

def _row_model(name: str) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for column, kind, nullable in d.column_types(name):
        annotation: Any = list[int] if kind is list else dict[str, Any] if kind is dict else kind
        fields[column] = (annotation | None, ...) if nullable else (annotation, ...)
    title = "".join(part.capitalize() for part in name.split("_")) + "Row"
    return create_model(title, __config__=ConfigDict(extra="forbid"), **fields)


def _page_model(row: type[BaseModel]) -> type[BaseModel]:
    return create_model(row.__name__.removesuffix("Row") + "Page",
                        __config__=ConfigDict(extra="forbid"),
                        rows=(list[row], ...),  # type: ignore[valid-type]
                        offset=(int, ...), limit=(int, ...), more=(bool, ...))


ROW_MODELS = {name: _row_model(name) for name in d.TABLES.values()}
PAGE_MODELS = {name: _page_model(model) for name, model in ROW_MODELS.items()}


class MessageRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    position: int
    event_id: str
    recorded_at: str
    sent_at: str | None
    destination: str
    headers: dict[str, Any]
    msg_type: str | None
    namespace: str | None
    execution_id: str | None
    run_id: int | None
    sender: str | None
    schema_version: int
    valid: bool
    reject_reason: str | None
    body: str


class MessagesPage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[MessageRow]
    after: int
    limit: int
    more: bool
    next_after: int | None


class RejectedRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    position: int
    time: str
    destination: str
    msg_type: str | None
    sender: str | None
    reject_reason: str | None
    body: str


class RejectedPage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[RejectedRow]
    after: int
    limit: int
    more: bool
    next_after: int | None


class MessageDetail(MessageRow):
    time: str
    status: str
    data: dict[str, Any] | None


class DatasetBrief(BaseModel):
    run_number: int
    scope: str
    name: str
    state: str | None
    file_count: int
    size_bytes: int


class TaskBrief(BaseModel):
    run_number: int
    task_id: int | None
    status: str | None


class ExecutionSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    execution_id: str
    workflow: str | None
    namespace: str | None
    status: str
    phase: str | None
    runs: list[int]
    stf_count: int
    stf_samples_received: int
    slices_created: int
    slices_queued: int
    slices_processing: int
    slices_completed: int
    slices_failed: int
    slice_retries: int
    datasets: list[DatasetBrief]
    tasks: list[TaskBrief]
    errors: list[str]
    start_time: str | None
    end_time: str | None
    duration_s: float | None


class ProjectionStatus(BaseModel):
    name: str
    position: int
    head: int
    lag: int


class RecorderStatus(BaseModel):
    head: int
    last_recorded_at: str | None
    last_sent_at: str | None
    recording_delay_s: float | None
    idle_s: float | None


class Status(BaseModel):
    model_config = ConfigDict(extra="forbid")
    store: str
    backend: str
    head: int
    recorder: RecorderStatus
    projections: list[ProjectionStatus]
    live_clients: int


class Mermaid(BaseModel):
    execution_id: str
    mermaid: str


class Series(BaseModel):
    time: list[str]
    total: list[int]


class Timeline(BaseModel):
    execution_id: str
    stf_files: Series
    tf_samples: Series
    slices_completed: Series
    slices_failed: Series


class State(BaseModel):
    """``swf-replay ID --until X --json``."""
    model_config = ConfigDict(extra="allow")
    execution_id: str
    until: dict[str, Any]
    events: int
    last_event: dict[str, Any] | None
    executions: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    stf_files: dict[str, dict[str, int]]
    tf_samples: dict[str, dict[str, int]]
    tf_slices: dict[str, dict[str, int]]
    datasets: list[dict[str, Any]]
    panda_tasks: list[dict[str, Any]]


class Drift(BaseModel):
    """``swf-replay ID --no-catch-up --json``: identical, or the differing rows per table."""
    model_config = ConfigDict(extra="allow")
    execution_id: str
    source: str
    events: int
    covered: dict[str, int]
    shared_runs_with: list[str]
    identical: bool
    tables: dict[str, Any]


# -- filters --------------------------------------------------------------------------------

def _text(description: str) -> Any:
    return Query(None, description=description, min_length=1, max_length=TEXT, pattern=NO_NUL)


def _time(description: str) -> Any:
    return Query(None, description=description + " ISO-8601; naive means UTC.",
                 min_length=1, max_length=64, pattern=NO_NUL,
                 json_schema_extra={"format": "date-time"})


FILTERS: dict[str, tuple[Any, Any]] = {
    "execution_id": (str | None, _text("Only this execution.")),
    "run": (int | None, Query(None, ge=0, le=INT64_MAX, description="Only this run number.")),
    "status": (str | None, _text("Only rows with this status (runs: phase; datasets: state; "
                                 "agents: EXITED when silent for 3 minutes).")),
    "level": (str | None, _text("Only log records of this level (e.g. ERROR).")),
    "namespace": (str | None, _text("Only this namespace.")),
    "since": (str | None, _time("Only rows at or after this time.")),
    "until": (str | None, _time("Only rows at or before this time.")),
    "now": (str | None, _time("Judge agents' staleness at this time (default: now).")),
    "msg_type": (str | None, _text("Only this message type.")),
}
TABLE_FILTERS = {
    "executions": ("execution_id", "status", "namespace", "since", "until"),
    "agents": ("status", "namespace", "since", "until", "now"),
    "logs": ("execution_id", "run", "level", "namespace", "since", "until"),
}
RUN_TABLE_FILTERS = ("execution_id", "run", "status", "namespace", "since", "until")
MESSAGE_FILTERS = ("execution_id", "run", "msg_type", "namespace", "since", "until")
REJECTED_FILTERS = ("execution_id", "since", "until")


def filters_of(name: str) -> tuple[str, ...]:
    return TABLE_FILTERS.get(name, RUN_TABLE_FILTERS)


def filter_dependency(names: tuple[str, ...]) -> Callable[..., dict[str, Any]]:
    """A dependency taking exactly these query parameters; returns the ones given."""
    def given(**values: Any) -> dict[str, Any]:
        return {name: value for name, value in values.items() if value is not None}
    given.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=FILTERS[name][1],
                          annotation=FILTERS[name][0]) for name in names])
    return given


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Rows per page.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows skipped (executions, "
                                                              "logs: from the newest end).")]
After = Annotated[int, Query(ge=0, le=INT64_MAX, description="Only positions after this one "
                                                             "(the previous page's next_after).")]
ExecutionId = Annotated[str, Path(min_length=1, max_length=TEXT, pattern=NO_NUL)]
Namespace = Annotated[str | None, Query(description="The execution's namespace (when its id "
                                                   "is in several).", min_length=1,
                                       max_length=TEXT, pattern=NO_NUL)]


def bad(problem: Exception) -> HTTPException:
    return HTTPException(400, str(problem))


def summary_or_404(console: Console, execution_id: str, namespace: str | None
                   ) -> dict[str, Any]:
    try:
        summary = console.data.execution(execution_id, namespace=namespace)
    except d.AmbiguousExecution as problem:
        raise HTTPException(409, str(problem)) from None
    if summary is None:
        raise HTTPException(404, f"no execution {execution_id!r}"
                                 + (f" in namespace {namespace!r}" if namespace else ""))
    return summary


# -- routes ---------------------------------------------------------------------------------

router = APIRouter(prefix="/api/v1", responses=COMMON_RESPONSES,
                   default_response_class=OrjsonResponse)


def _table_route(url_name: str, name: str) -> None:
    depends = Depends(filter_dependency(filters_of(name)))

    def rows(request: Request, limit: Limit = 100, offset: Offset = 0,
             filters: dict[str, Any] = depends) -> Any:
        console = console_of(request)

        def build() -> Response:
            try:
                page = console.data.rows(name, offset=offset, limit=limit, **filters)
            except d.BadQuery as problem:
                raise bad(problem) from None
            columns = d.row_columns(name)
            return OrjsonResponse({"rows": [{c: row.get(c) for c in columns}
                                            for row in page.rows],
                                   "offset": offset, "limit": limit, "more": page.more})
        return console.respond(request, build)

    router.add_api_route(
        f"/{url_name}", rows, methods=["GET"], response_model=PAGE_MODELS[name],
        name=f"list_{name}", summary=f"swf query {url_name}",
        description=f"The rows of `swf query {url_name} --json`, one page at a time.")


for _url_name, _name in d.TABLES.items():
    _table_route(_url_name, _name)


@router.get("/executions/{execution_id}", response_model=ExecutionSummary,
            responses={404: _problem("No such execution."),
                       409: _problem("The id exists in several namespaces.")},
            summary="swf query execution ID")
def execution(request: Request, execution_id: ExecutionId, namespace: Namespace = None) -> Any:
    """The execution summary of `swf query execution ID --json`."""
    console = console_of(request)
    return console.respond(request, lambda: OrjsonResponse(
        summary_or_404(console, execution_id, namespace)))


@router.get("/executions/{execution_id}/state", response_model=State,
            responses={404: _problem("No such execution."),
                       409: _problem("The id exists in several namespaces.")},
            summary="swf-replay ID --until POSITION|TIME")
def execution_state(request: Request, execution_id: ExecutionId,
                    until: Annotated[str, Query(min_length=1, max_length=64, pattern=NO_NUL,
                                                description="A log position or an ISO-8601 "
                                                            "time.")]) -> Any:
    """The execution's state after the events up to a log position or an event time."""
    console = console_of(request)
    summary_or_404(console, execution_id, None)
    try:
        return OrjsonResponse(console.state_at(execution_id, until))
    except d.BadQuery as problem:
        raise bad(problem) from None


@router.get("/executions/{execution_id}/drift", response_model=Drift,
            responses={404: _problem("No such execution."),
                       409: _problem("The id exists in several namespaces.")},
            summary="swf-replay ID (the drift check)")
def execution_drift(request: Request, execution_id: ExecutionId) -> Any:
    """Rebuild the execution's projections from its events and compare them with the tables
    (at their checkpoints): ``identical``, or the differing rows per table."""
    console = console_of(request)
    summary_or_404(console, execution_id, None)
    return OrjsonResponse(console.drift(execution_id))


@router.get("/executions/{execution_id}/mermaid", response_model=Mermaid,
            responses={404: _problem("No such execution."),
                       409: _problem("The id exists in several namespaces.")},
            summary="swf-replay ID --mermaid")
def execution_mermaid(request: Request, execution_id: ExecutionId) -> Any:
    """The execution as a Mermaid sequence diagram."""
    console = console_of(request)
    summary_or_404(console, execution_id, None)
    return OrjsonResponse({"execution_id": execution_id,
                           "mermaid": console.mermaid(execution_id)})


@router.get("/executions/{execution_id}/timeline", response_model=Timeline,
            responses={404: _problem("No such execution."),
                       409: _problem("The id exists in several namespaces.")},
            summary="STF files, samples and slices over time")
def execution_timeline(request: Request, execution_id: ExecutionId,
                       namespace: Namespace = None) -> Any:
    """Cumulative counts per second of event time: STF files and TF samples registered,
    slices completed and failed."""
    console = console_of(request)
    summary = summary_or_404(console, execution_id, namespace)
    return OrjsonResponse(console.timeline(execution_id, summary["namespace"]))


def _log_route(path: str, valid: bool | None, names: tuple[str, ...],
               model: type[BaseModel], columns: tuple[str, ...], summary: str) -> None:
    depends = Depends(filter_dependency(names))

    def messages(request: Request, limit: Limit = 100, after: After = 0,
                 filters: dict[str, Any] = depends) -> Any:
        console = console_of(request)

        def build() -> Response:
            try:
                page = console.data.messages(after=after, limit=limit, valid=valid, **filters)
            except d.BadQuery as problem:
                raise bad(problem) from None
            rows = []
            for row in page.rows:
                if "headers" in columns:
                    row = {**row, "headers": redact_headers(row["headers"])}
                rows.append({c: row[c] for c in columns})
            return OrjsonResponse({
                "rows": rows, "after": after, "limit": limit, "more": page.more,
                "next_after": page.rows[-1]["position"] if page.more else None})
        return console.respond(request, build)

    router.add_api_route(path, messages, methods=["GET"], response_model=model,
                         name=path.strip("/").replace("-", "_"), summary=summary,
                         description=f"The rows of `{summary} --json`, in position order.")


_log_route("/messages", None, MESSAGE_FILTERS, MessagesPage, d.MESSAGE_ROW_COLUMNS,
           "swf query messages")
_log_route("/rejected", False, REJECTED_FILTERS, RejectedPage, d.REJECTED_ROW_COLUMNS,
           "swf query rejected")


@router.get("/messages/{position}", response_model=MessageDetail,
            responses={404: _problem("No message at this position.")},
            summary="One stored message")
def message(request: Request, position: Annotated[int, Path(ge=1, le=INT64_MAX)]) -> Any:
    """One message as stored (destination, headers, raw body) and as the catalog reads it."""
    console = console_of(request)

    def build() -> Response:
        found = console.data.message(position)
        if found is None:
            raise HTTPException(404, f"no message at position {position}")
        found["headers"] = redact_headers(found["headers"])
        return OrjsonResponse({name: found[name] for name in MessageDetail.model_fields})
    return console.respond(request, build)


@router.get("/status", response_model=Status, summary="The store, recorder and projections")
def status(request: Request) -> Any:
    """The log's head, the newest event's recording delay, each projection's lag."""
    return OrjsonResponse(console_of(request).status())  # cheap, and live_clients is no data


SSE_EVENT = {  # each event of the stream
    "type": "object", "required": ["event", "data"],
    "properties": {"event": {"enum": ["hello", "commit", "missed"]},
                   "data": {"type": "string", "contentMediaType": "application/json"},
                   "id": {"type": "string"}, "retry": {"type": "integer"}}}


@router.get("/stream", response_class=EventSourceResponse, summary="Live notices (SSE)",
            responses={200: {"description": "Server-Sent Events: `hello` (the head position), "
                                            "then a `commit` event for each batch of events "
                                            "committed to the store.",
                             "content": {"text/event-stream": {"schema": SSE_EVENT}}}})
async def stream(request: Request) -> EventSourceResponse:
    """One ``commit`` event per committed batch: ``head`` (last position), ``events``,
    ``executions``, ``runs``, ``msg_types`` (counts) and the newest ``rows``; a ``missed``
    event when this client fell behind and notices were dropped."""
    hub = console_of(request).hub
    subscriber = hub.subscribe()
    shutdown = anyio.Event()  # set when the server stops: the stream then ends cleanly

    async def notices() -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"event": "hello", "data": orjson.dumps({"head": hub.head}).decode()}
            while not shutdown.is_set():
                notice = None
                with anyio.move_on_after(STREAM_WAKE):
                    notice = await subscriber.queue.get()
                if notice is None:
                    continue
                if subscriber.missed:
                    yield {"event": "missed", "data": str(subscriber.missed)}
                    subscriber.missed = 0
                yield {"event": "commit", "id": str(notice.head), "data": notice.data}
        finally:
            hub.unsubscribe(subscriber)

    return EventSourceResponse(notices(), ping=15, headers={"Cache-Control": "no-store"},
                               shutdown_event=shutdown, shutdown_grace_period=2 * STREAM_WAKE)

