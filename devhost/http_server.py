"""A plain ASGI app serving the HTTP functions the way the Functions host does: routing, keys
and the request limits are devhost's; the invocation is the invoker's (the worker library or
devhost's own code). Of the host's admin API it serves ``POST /admin/functions/{name}``, for
timer functions."""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .app_index import HttpFunction
from .invocation import HttpCall, InvocationFailed, Invoker, TraceContext
from .routing import BadRequestPath, RouteTable, RouteTemplate, request_path

log = logging.getLogger("devhost.http")
MAX_BODY_BYTES = 100 * 1024 * 1024  # the host's request size limit
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_ADMIN_INVOKE = RouteTemplate("admin/functions/{name}")
# The media types ASP.NET Core's JSON input formatter reads (others: 415).
_JSON_TYPES = ("application/json", "text/json")


@dataclass(frozen=True)
class AuthKeys:
    """Keys for ``function`` and ``admin`` auth levels; ``enabled=False`` lets everything in."""

    enabled: bool = True
    function_key: str | None = None
    master_key: str | None = None

    def allows(self, level: str, presented: Iterable[str | None]) -> bool:
        if not self.enabled or level == "anonymous":
            return True
        accepted = [self.master_key] if level == "admin" else [self.master_key, self.function_key]
        return any(_same(key, given) for key in accepted if key for given in presented if given)

    def missing_keys_warning(self, levels: Iterable[str]) -> str | None:
        """A warning when some routes can never be called because no key is configured."""
        if not self.enabled:
            return None
        levels = set(levels)
        if "function" in levels and not (self.function_key or self.master_key):
            return ("auth is on but neither DEVHOST_FUNCTION_KEY nor DEVHOST_MASTER_KEY is set: "
                    "function-level routes will answer 401 (set a key or use --no-auth)")
        if "admin" in levels and not self.master_key:
            return ("auth is on but DEVHOST_MASTER_KEY is not set: admin-level routes will "
                    "answer 401 (set it or use --no-auth)")
        return None


@dataclass(frozen=True)
class AdminFunctions:
    """What ``POST /admin/functions/{name}`` reaches: the names of the functions devhost
    serves, and ``run_timer``, which starts the timer function of that name (in any case) in
    the background and answers False for a name that is not a timer function."""

    names: frozenset[str]  # casefolded
    run_timer: Callable[[str], bool]


class _Disconnected(Exception):
    """The client went away before sending the whole body."""


class FunctionsHttpApp:
    """ASGI entry point: route, authorize, read the body, invoke, write the response."""

    def __init__(self, routes: RouteTable[HttpFunction], invoker: Invoker, auth: AuthKeys,
                 app_dir: str, admin: AdminFunctions | None = None) -> None:
        self.routes, self.invoker, self.auth, self.app_dir = routes, invoker, auth, app_dir
        self.admin = admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not served; uvicorn closes the connection
        method = scope["method"]
        try:
            path = _routed_path(scope)
        except BadRequestPath:
            await _respond(send, 400)  # Kestrel refuses it before the host sees it
            return
        if self.admin is not None and method == "POST":
            invoked = _ADMIN_INVOKE.match(path)
            if invoked is not None:
                await self._admin_invoke(invoked["name"], scope, receive, send)
                return
        found = self.routes.match(method, path)
        if found is None:
            await _respond(send, 404)
            return
        function, route_params = found
        headers = _headers(scope)
        params = _query(scope)
        if not self.auth.allows(function.auth_level, (_presented_key(headers, params),)):
            await _respond(send, 401)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await _respond(send, 413)
            return
        body = await _body_or_answer(receive, send)
        if body is None:
            return
        call = HttpCall(method=method, url=_url(scope, headers), headers=headers, query=params,
                        route_params=route_params, body=body,
                        trace_context=TraceContext.from_headers(headers, function.name))
        started = time.perf_counter()
        try:
            invocation_id, (status, response_headers, response_body) = \
                await self.invoker.invoke_http(function, call)
        except InvocationFailed as exc:
            log.error("Executed 'Functions.%s' (Failed, Id=%s)\n%s", function.name,
                      exc.invocation_id, exc.detail)
            await _respond(send, 500)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%.0fms)", function.name,
                      invocation_id, (time.perf_counter() - started) * 1000)
        await _respond(send, status, response_headers, response_body)

    async def _admin_invoke(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        """The host's ``POST /admin/functions/{name}`` (body ``{"input": ...}``, master key):
        202 once the function is started, 400 without a JSON object body, 415 for a body that
        is not JSON, 404 for a function devhost does not serve. devhost runs only timer
        functions this way: any other function answers 501."""
        assert self.admin is not None
        headers = _headers(scope)
        if not self.auth.allows("admin", (_presented_key(headers, _query(scope)),)):
            await _respond(send, 401)
            return
        body = await _body_or_answer(receive, send)
        if body is None:
            return
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if body and not (media_type in _JSON_TYPES or media_type.endswith("+json")):
            await _respond(send, 415)
            return
        try:
            invocation = json.loads(body) if body else None
        except ValueError:
            invocation = None
        if not isinstance(invocation, dict):
            await _respond(send, 400)
            return
        if name.casefold() not in self.admin.names:
            await _respond(send, 404)
            return
        if not self.admin.run_timer(name):
            await _respond(send, 501, [("content-type", "text/plain; charset=utf-8")],
                           b"devhost runs only timer functions through the admin API")
            return
        await _respond(send, 202)


def _routed_path(scope: Scope) -> str:
    """The path the host routes by: the raw path decoded as Kestrel decodes it (``%2F`` kept,
    so an escaped "/" never splits a segment; uvicorn's ``path`` decodes it)."""
    raw = scope.get("raw_path")
    return request_path(raw) if raw else scope["path"]


async def _body_or_answer(receive: Receive, send: Send) -> bytes | None:
    """The request body; ``None`` once the client left or it was answered 413 (too large)."""
    try:
        body = await _read_body(receive)
    except _Disconnected:
        return None
    if body is None:
        await _respond(send, 413)
    return body


async def _respond(send: Send, status: int, headers: list[tuple[str, str]] | None = None,
                   body: bytes = b"") -> None:
    raw = [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in headers or []]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None once it exceeds the host's limit."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    """Lower-cased request headers; repeated ones joined as HTTP allows."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name in headers:
            value = headers[name] + ("; " if name == "cookie" else ", ") + value
        headers[name] = value
    return headers


def _presented_key(headers: Mapping[str, str], params: Mapping[str, str]) -> str | None:
    """The key a request presents, as the host reads it: the ``x-functions-key`` header when
    there is one (its first value), else the ``code`` query parameter (its first value)."""
    if "x-functions-key" in headers:
        return headers["x-functions-key"].split(",")[0].strip()
    code = params.get("code")
    return code.split(",")[0] if code else None


def _query(scope: Scope) -> dict[str, str]:
    """Query parameters; a repeated one is comma-joined (ASP.NET ``StringValues``); one
    without a value (``?debug``, ``?q=``) is left out, as the host gives the worker none."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(scope["query_string"].decode("latin-1")):
        params[name] = f"{params[name]},{value}" if name in params else value
    return params


def _url(scope: Scope, headers: Mapping[str, str]) -> str:
    host = headers.get("host") or "{}:{}".format(*(scope.get("server") or ("127.0.0.1", 80)))
    path = scope.get("raw_path") or scope["path"].encode("utf-8")
    query = scope["query_string"]
    url = f"{scope.get('scheme', 'http')}://{host}{path.decode('latin-1')}"
    return f"{url}?{query.decode('latin-1')}" if query else url


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
