"""``swf serve``: the operator console (web pages, live updates, the HTTP API).

It lives with the console rather than in ``swf.commands``: the console reuses the CLI's row
shapes (``swf.commands``), so the commands must not import the console back.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from swf.commands.group import config_option, db_flag, load, main


@main.command("serve")
@click.option("--host", default=None,
              help="Address to listen on (default: [console] host, else 127.0.0.1). Any "
                   "non-loopback address needs a token.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="TCP port (default: [console] port, else 8080).")
@db_flag
@config_option
def serve_command(host: str | None, port: int | None, db_url: str | None,
                  config_path: Path | None) -> None:
    """Serve the console: pages that follow the store live, the JSON API under /api/v1/
    (described at /openapi.json), and the monitor upstream's agents call under /api/ (each
    accepted call stored as an event). The token comes from $SWF_API_TOKEN, else [console]
    token in the config file; with one, every request needs it (browsers log in once; upstream's
    log records need none from [console] log_networks)."""
    import uvicorn

    from . import assets  # the app and its libraries load only when serving
    from .app import Settings, create_app
    from .security import BindRefused, check_bind

    settings = load(config_path, store={"url": db_url}, console={"host": host, "port": port})
    console = settings.console
    token = console.token.get_secret_value() if console.token is not None else None
    try:
        check_bind(console.host, token)
    except BindRefused as problem:
        raise click.UsageError(str(problem)) from None
    absent = assets.missing()
    if absent:
        raise click.ClickException("the console's JavaScript is not installed: "
                                   + "; ".join(absent) + " (run deploy/install.sh)")
    app = create_app(Settings(db_url=settings.store.url, sender_zone=settings.store.sender_zone,
                              token=token,
                              log_networks=tuple(str(net) for net in console.log_networks)))
    store = app.state.console.data.url_text  # without its password
    logging.getLogger("swf.web").info("console for %s on %s:%d", store, console.host,
                                      console.port)
    click.echo(f"swf console on http://{_url_host(console.host)}:{console.port}/ "
               f"(store {store})", err=True)
    uvicorn.run(app, host=console.host, port=console.port, log_level="warning",
                proxy_headers=False, server_header=False, timeout_graceful_shutdown=5)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
