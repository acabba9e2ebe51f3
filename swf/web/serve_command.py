"""``swf serve``: the operator console (web pages, live updates, the HTTP API).

It lives with the console rather than in ``swf.commands``: the console reuses the CLI's row
shapes (``swf.commands``), so the commands must not import the console back.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click

from swf.commands.group import db_option, main

TOKEN_VARIABLE = "SWF_API_TOKEN"


@main.command("serve")
@click.option("--host", default=None, help="Address to listen on (default: [console] host, "
                                           "else 127.0.0.1). Any non-loopback address needs "
                                           "a token.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="TCP port (default: [console] port, else 8080).")
@db_option
@click.option("--config", "config_path", envvar="SWF_CONFIG",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="TOML config file ([store] url; [console] host, port, token); $SWF_CONFIG.")
def serve_command(host: str | None, port: int | None, db_url: str | None,
                  config_path: Path | None) -> None:
    """Serve the console: pages that follow the store live, and the JSON API under /api/v1/
    (described at /openapi.json). The token comes from $SWF_API_TOKEN, else [console] token
    in the config file; with one, every request needs it (browsers log in once)."""
    import uvicorn

    from . import assets  # the app and its libraries load only when serving
    from .app import Settings, create_app
    from .security import BindRefused, check_bind

    file = _config(config_path)
    section = file.get("console", {})
    if not isinstance(section, dict):
        raise click.UsageError("config file: [console] must be a table")
    host = host or str(section.get("host") or "127.0.0.1")
    port = port if port is not None else int(section.get("port") or 8080)
    token = os.environ.get(TOKEN_VARIABLE) or section.get("token") or None
    if token is not None and not isinstance(token, str):
        raise click.UsageError("config file: [console] token must be a string")
    try:
        check_bind(host, token)
    except BindRefused as problem:
        raise click.UsageError(str(problem)) from None
    absent = assets.missing()
    if absent:
        raise click.ClickException("the console's JavaScript is not installed: "
                                   + "; ".join(absent) + " (run deploy/install.sh)")
    app = create_app(Settings(db_url=db_url or file.get("store", {}).get("url"), token=token))
    logging.getLogger("swf.web").info("console for %s on http://%s:%d/",
                                      app.state.console.data.url_text, host, port)
    click.echo(f"swf console on http://{_url_host(host)}:{port}/ "
               f"(store {app.state.console.data.url_text})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False,
                server_header=False, timeout_graceful_shutdown=5)


def _config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    from agents.transport.broker import BrokerConfigError, read_config_file

    try:
        return read_config_file(path)
    except BrokerConfigError as problem:
        raise click.UsageError(str(problem)) from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
