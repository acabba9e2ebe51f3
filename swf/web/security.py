"""Who may use the console, and what a request may carry.

- Binding: loopback by default; any other address needs a token (``check_bind``).
- With a token configured, every request but the login page and the static files needs it:
  ``Authorization: Bearer TOKEN`` (or upstream's ``Token TOKEN``), or the session cookie the
  login form sets (an HMAC of the token, never the token itself).
- Writes (any method but GET, HEAD, OPTIONS) to a route that takes them always need the token;
  without one configured they are refused. A method no route takes gets the router's 405.
- One exception: ``POST /api/logs/`` from an address in ``log_networks`` (loopback by default,
  ``[console] log_networks``) needs no token, because upstream's REST log handler sends none
  (swf-common-lib rest_logging.py). The address is the connection's peer (no forwarded-for
  header is believed): behind a proxy, list the proxy only if it admits only the agents.
- Bodies are bounded (413); a NUL character or a repeated parameter is a 400 with the reason,
  before any route sees the request.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import orjson
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Network = str | ipaddress.IPv4Network | ipaddress.IPv6Network
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 1 << 20  # bytes; the console's own forms post a few bytes
MIN_TOKEN_LENGTH = 16
SESSION_COOKIE = "swf_session"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PREFIXES = ("/static/", "/assets/")
LOGIN_PATH = "/login"
LOGS_PATH = "/api/logs/"  # upstream's log records: no token from log_networks
SECURITY_HEADERS = [
    # Everything from this server: no CDN, no inline script. Mermaid and plotly set inline
    # styles on what they draw.
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
     b"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
     b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
_SENSITIVE_HEADER_PARTS = ("passcode", "password", "secret", "token", "authorization",
                           "cookie", "credential")


class BindRefused(ValueError):
    """A non-loopback address without a (good enough) token."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to anything
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token."""
    if is_loopback(host):
        return
    if not token:
        raise BindRefused(f"refusing to listen on {host} without a token: set SWF_API_TOKEN "
                          f"or [console] token in the config file (or bind 127.0.0.1)")
    if len(token) < MIN_TOKEN_LENGTH:
        raise BindRefused(f"refusing to listen on {host}: the token is shorter than "
                          f"{MIN_TOKEN_LENGTH} characters")


def session_value(token: str) -> str:
    """What the session cookie holds: derived from the token, useless to recover it."""
    return hmac.new(token.encode(), b"swf-console-session", hashlib.sha256).hexdigest()


def redact_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """Stored message headers as shown: values of credential-like headers hidden."""
    return {name: "(hidden)" if any(part in name.lower() for part in _SENSITIVE_HEADER_PARTS)
            else value for name, value in headers.items()}


class Guard:
    """ASGI middleware applying the rules in the module docstring."""

    def __init__(self, app: ASGIApp, token: str | None, max_body: int = MAX_BODY,
                 routes: Callable[[], Iterable[BaseRoute]] = tuple,
                 log_networks: Iterable[Network] = ()) -> None:
        self.app = app
        self.routes = routes
        self.log_networks = tuple(ipaddress.ip_network(network) for network in log_networks)
        self.token = token or None
        self.session = session_value(token) if token else None
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_headers(send)
        problem = self._check(scope)
        if problem is not None:
            status, reason = problem
            if status == 401 and _wants_page(scope):  # a person: to the login form
                await _redirect(send, f"{LOGIN_PATH}?{urlencode({'next': scope['path']})}")
                return
            await _problem(send, status, reason, www_authenticate=status == 401)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _problem(send, 400, "Content-Length is not a number")
                return
            if int(declared) > self.max_body:
                await _problem(send, 413, f"request body over {self.max_body} bytes")
                return
        await self.app(scope, _bounded(receive, self.max_body), send)

    def _check(self, scope: Scope) -> tuple[int, str] | None:
        raw_path = scope.get("path", "")
        query = scope.get("query_string", b"")
        try:
            text = query.decode("ascii")
        except UnicodeDecodeError:
            return 400, "the query string is not URL-encoded ASCII"
        if "\x00" in raw_path or "%00" in text or "\x00" in unquote(text):
            return 400, "a NUL character in the path or a parameter"
        seen: set[str] = set()
        for key, _value in parse_qsl(text, keep_blank_values=True):
            if key in seen:
                return 400, f"parameter {key!r} given more than once"
            seen.add(key)
        method = scope.get("method", "GET")
        path = scope.get("path", "")
        if path.startswith(OPEN_PREFIXES) and method in READ_METHODS:
            return None
        if path == LOGIN_PATH:
            return None if self.token else (404, "no login: this console has no token")
        if method == "POST" and path == LOGS_PATH and self._from_log_network(scope):
            return None
        authorized = self._authorized(scope)
        if method not in READ_METHODS and self._routed(scope):
            if not self.token:
                return 403, "writes are disabled: this console has no API token configured"
            if not authorized:
                return 401, "this request needs the API token"
            return None
        if self.token and not authorized:
            return 401, "this console needs the API token (log in at /login)"
        return None

    def _from_log_network(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not client or not self.log_networks:
            return False
        try:
            address = ipaddress.ip_address(str(client[0]).strip("[]"))
        except ValueError:  # not an IP address (a test client's name): not a listed network
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.log_networks)

    def _routed(self, scope: Scope) -> bool:
        """Whether a route takes this method at this path (else the router answers 405)."""
        return any(route.matches(scope)[0] is Match.FULL for route in self.routes())

    def _authorized(self, scope: Scope) -> bool:
        if not self.token or self.session is None:
            return False
        header = _header(scope, b"authorization")
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() in ("bearer", "token") and hmac.compare_digest(
                    value.strip().encode(), self.token.encode()):
                return True
        cookie_header = _header(scope, b"cookie")
        if cookie_header:
            cookies = SimpleCookie()
            try:
                cookies.load(cookie_header)
            except Exception:  # a malformed Cookie header is no session
                return False
            morsel = cookies.get(SESSION_COOKIE)
            if morsel is not None and hmac.compare_digest(morsel.value.encode(),
                                                          self.session.encode()):
                return True
        return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _wants_page(scope: Scope) -> bool:
    return (scope.get("method") == "GET" and not scope.get("path", "").startswith("/api/")
            and "text/html" in (_header(scope, b"accept") or ""))


async def _redirect(send: Send, location: str) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode()), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message.setdefault("headers", [])
            message["headers"] = [*message["headers"], *SECURITY_HEADERS]
        await send(message)
    return sending


def _bounded(receive: Receive, limit: int) -> Receive:
    """Count the body as it arrives (chunked uploads declare no length)."""
    received = 0

    async def receiving() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:  # raised inside the route: rendered as a 413 response
                raise HTTPException(413, f"request body over {limit} bytes")
        return message
    return receiving


async def _problem(send: Send, status: int, reason: str, *, www_authenticate: bool = False
                   ) -> None:
    body = orjson.dumps({"detail": reason})
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if www_authenticate:
        headers.append((b"www-authenticate", b'Bearer realm="swf"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
