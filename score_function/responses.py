"""Shapes results and errors into HTTP responses; the one place errors become status codes."""

from __future__ import annotations

import logging
import os
import re

import azure.functions as func
import orjson

from shared.errors import ModelUnavailable, ScoreError, SettingsError

log = logging.getLogger("scorefn.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
JSON = "application/json"


def request_id_of(req: func.HttpRequest) -> str:
    """The caller's ``x-request-id`` when it is a sane token, else a new one."""
    given = req.headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return os.urandom(16).hex()  # 32 hex digits like uuid4().hex, at a third of its cost


def trace_carrier(req: func.HttpRequest, context: func.Context | None) -> dict[str, str]:
    """Where this invocation's trace continues: the host's invocation span (with
    ``telemetryMode: OpenTelemetry`` the host traces each invocation and hands the worker its
    context), else the caller's ``traceparent`` header."""
    trace = getattr(context, "trace_context", None) if context is not None else None
    parent = getattr(trace, "trace_parent", None)
    if parent:
        state = getattr(trace, "trace_state", None)
        return {"traceparent": parent, **({"tracestate": state} if state else {})}
    carrier = {}
    for name in ("traceparent", "tracestate"):
        value = req.headers.get(name)
        if value:
            carrier[name] = value
    return carrier


def json_response(body: bytes, request_id: str, status: int = 200,
                  headers: dict[str, str] | None = None) -> func.HttpResponse:
    all_headers = {"x-request-id": request_id, "cache-control": "no-store"}
    if headers:
        all_headers.update(headers)
    return func.HttpResponse(body=body, status_code=status, headers=all_headers, mimetype=JSON,
                             charset="utf-8")


def binary_response(body: bytes, request_id: str, header_length: int,
                    headers: dict[str, str] | None = None) -> func.HttpResponse:
    """A 200 in the binary tensor data extension: a JSON header of ``header_length`` bytes
    (said in ``Inference-Header-Content-Length``), then the tensors' bytes."""
    all_headers = {"x-request-id": request_id, "cache-control": "no-store",
                   "inference-header-content-length": str(header_length)}
    if headers:
        all_headers.update(headers)
    return func.HttpResponse(body=body, status_code=200, headers=all_headers,
                             mimetype="application/octet-stream")


def not_found() -> func.HttpResponse:
    """What the host answers for a path that no route matches: 404, an empty body, none of
    the app's headers. For paths a catch-all route takes that are no route of this API."""
    return func.HttpResponse(status_code=404)


def error_response(exc: BaseException, request_id: str, route: str, *,
                   anonymous: bool = False) -> func.HttpResponse:
    """Map any exception to ``{"error": code, "message": ...}`` with its status.

    Typed errors carry their own status. Anything else is a 500 whose message says nothing
    of the internals; the log line has the traceback but never the request body. On an
    ``anonymous`` route the message is never the error's own (it may name settings, models
    or endpoints): the log has it, under the request id.
    """
    headers: dict[str, str] = {}
    if isinstance(exc, ScoreError):
        # Scoring failures were logged once, with their code, by the scoring service.
        status, doc = exc.status, exc.to_dict()
        if isinstance(exc, ModelUnavailable):
            headers["retry-after"] = str(exc.retry_after_seconds)
    elif isinstance(exc, SettingsError):
        status, doc = 500, {"error": "configuration_error", "message": str(exc)}
        log.error("%s %s -> 500 configuration_error: %s", route, request_id, exc)
    else:
        status, doc = 500, {"error": "internal_error",
                            "message": f"internal error; quote request id {request_id}"}
        log.exception("%s %s -> 500 internal_error", route, request_id)
    if anonymous and isinstance(exc, (ScoreError, SettingsError)):
        if isinstance(exc, ScoreError):  # not logged yet (a settings error was, above)
            log.warning("%s %s -> %d %s: %s", route, request_id, status, doc["error"], doc["message"])
        doc = {"error": doc["error"], "message": f"{doc['error']}; the app's log has the "
                                                 f"details under request id {request_id}"}
    return json_response(orjson.dumps(doc), request_id, status, headers)
