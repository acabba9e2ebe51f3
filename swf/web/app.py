"""The console's ASGI app: pages, ``/api/v1/``, static files, the live hub's lifecycle.

    app = create_app(Settings(db_url="sqlite:///swf.db"))   # opens the store now
    uvicorn.run(app, host="127.0.0.1", port=8080)

Upstream's monitor endpoints (``/api/systemagents/heartbeat/``, ``/api/logs/``, ...) are
``monitor_api``'s, beside ``/api/v1/``: their writes are appended to the store as events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from . import api, assets, monitor_api, pages
from .console import Console
from .data import ConsoleData
from .live import Hub
from .security import MAX_BODY, Guard

log = logging.getLogger(__name__)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

API_DESCRIPTION = __doc__


@dataclass(frozen=True, slots=True)
class Settings:
    db_url: str | None = None
    sender_zone: str = "UTC"  # naive times in the REST calls upstream's agents make
    token: str | None = None
    max_body: int = MAX_BODY
    poll_interval: float = 0.05  # seconds between the live follower's looks at the store
    # Where upstream's token-less log records are accepted from (security.Guard).
    log_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


def create_app(settings: Settings) -> FastAPI:
    data = ConsoleData(settings.db_url, settings.sender_zone)
    hub = Hub(data, poll_interval=settings.poll_interval)
    console = Console(data, hub)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        hub.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            hub.stop()
            data.close()

    app = FastAPI(
        title="swf console", version="1",
        description="The swf operator console's HTTP API: every `swf query` as JSON with the "
                    "same filters and rows, an execution's replay views, and live notices.",
        docs_url=None, redoc_url=None,  # their pages load scripts from a CDN
        lifespan=lifespan)
    app.state.console = console
    app.state.token_configured = bool(settings.token)
    app.state.login_token = settings.token
    app.add_middleware(Guard, token=settings.token, max_body=settings.max_body,
                       routes=lambda: app.router.routes, log_networks=settings.log_networks)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, problem: RequestValidationError) -> Response:
        return JSONResponse({"detail": _readable(problem)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, problem: StarletteHTTPException) -> Response:
        """Starlette's answer, except that a 405's Allow names every method of the path (a
        path of two routes, GET and POST, would name only one's)."""
        if problem.status_code == 405:
            allowed = [method for method in METHODS if any(
                route.matches({**request.scope, "method": method})[0] is Match.FULL
                for route in app.router.routes)]
            if allowed:
                problem.headers = {**(problem.headers or {}), "Allow": ", ".join(allowed)}
        return await http_exception_handler(request, problem)

    app.include_router(api.router)
    app.include_router(monitor_api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=assets.STATIC), name="static")
    app.mount("/assets/vendor", StaticFiles(directory=assets.VENDOR, check_dir=False),
              name="vendor")
    plotly = assets.plotly_dir()
    if plotly is not None:
        app.mount("/assets/plotly", StaticFiles(directory=plotly), name="plotly")
    return app


def _readable(problem: RequestValidationError) -> list[dict[str, object]]:
    """FastAPI's validation errors without the offending input echoed back (it may be long or
    hold what someone pasted by mistake)."""
    return [{"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "")),
             "type": str(error.get("type", ""))} for error in problem.errors()]
