"""HTTP routes: the scoring route, Open Inference Protocol (V2) routes and health probes.

The scoring core is imported on first use rather than at import time, so that indexing
the app (cold start) does not pay for numpy, LightGBM or the storage SDK.

Model and endpoint names may hold "/" (``churn/v2``), so the routes that take one end in an
ASP.NET catch-all parameter (``{*name}``), which takes the rest of the path, "/" included.
A catch-all must be a template's last segment, so the V2 model routes are one template per
method, ``v2/models/{*path}``, and the handler splits a trailing ``/infer`` (POST) or
``/ready`` (GET) off the path. What is no route (no name; a POST without ``/infer``) is
answered as the host answers a path no route matches: an empty 404.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import azure.functions as func

from .dispatch import run_scoring
from .openapi import API_VERSION
from .responses import binary_response, error_response, json_response, not_found, request_id_of, trace_carrier

bp = func.Blueprint()
# V2 server metadata: this API's name and version, and the protocol extensions it speaks.
SERVER_METADATA = b'{"name":"scorefn","version":"%s","extensions":["binary_tensor_data"]}' % \
    API_VERSION.encode()
# The binary tensor data extension's header: the length of the body's JSON part.
BINARY_HEADER = "inference-header-content-length"


def _catch_all(req: func.HttpRequest, param: str) -> str:
    """A catch-all route value ("" when the path ends before it), less one trailing "/": as
    before catch-alls, ``/api/score/churn/`` is the model ``churn``."""
    value = req.route_params.get(param) or ""
    return value[:-1] if value.endswith("/") else value


def _without(path: str, last: str) -> str | None:
    """``path`` without its last segment when that is ``last`` (in any case, as the literal
    segment of a route would match), else None."""
    head, slash, tail = path.rpartition("/")
    return head if slash and head and tail.lower() == last else None


def _result_headers(result: Any) -> dict[str, str]:
    """Which variant scored, and what predicted (``compiled`` or ``lightgbm``)."""
    return {"x-scorefn-variant": result.variant, "x-scorefn-backend": result.backend}


def _service():
    from shared.app import get_app

    return get_app().service


@bp.route(route="score/{*name}", methods=["POST"])
async def score(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """Score ``rows`` or ``records`` for an endpoint (its name may hold "/")."""
    name = _catch_all(req, "name")
    if not name:
        return not_found()
    request_id = request_id_of(req)
    try:
        body = req.get_body()
        result = await run_scoring(name, body, dict(
            content_type=req.headers.get("content-type"), carrier=trace_carrier(req, context),
            headers=req.headers, query=req.params, request_id=request_id))
        return json_response(result.response_body, request_id, headers=_result_headers(result))
    except Exception as exc:
        return error_response(exc, request_id, "score")


@bp.route(route="v2/models/{*path}", methods=["POST"])
async def v2_infer(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """Open Inference Protocol inference: ``POST v2/models/{name}/infer``; the body JSON, or
    a JSON header and binary tensor data (the binary data extension, with its header)."""
    name = _without(_catch_all(req, "path"), "infer")
    if name is None:
        return not_found()
    request_id = request_id_of(req)
    try:
        from shared.payloads.v2_binary import header_length_of

        declared = req.headers.get(BINARY_HEADER)
        body = req.get_body()
        result = await run_scoring(name, body, dict(
            fmt="v2", content_type=req.headers.get("content-type"),
            carrier=trace_carrier(req, context), headers=req.headers, query=req.params,
            request_id=request_id,
            binary_header_length=header_length_of(declared) if declared is not None else None))
        headers = _result_headers(result)
        if result.binary_header_length is not None:
            return binary_response(result.response_body, request_id, result.binary_header_length,
                                   headers=headers)
        return json_response(result.response_body, request_id, headers=headers)
    except Exception as exc:
        return error_response(exc, request_id, "v2_infer")


@bp.route(route="outcomes/{*endpoint}", methods=["POST"])
def outcomes(req: func.HttpRequest) -> func.HttpResponse:
    """Outcomes (labels) of earlier predictions, by request id or sticky key: 202 once stored."""
    endpoint = _catch_all(req, "endpoint")
    if not endpoint:
        return not_found()
    request_id = request_id_of(req)
    try:
        from shared.payloads import dumps

        accepted = _service().record_outcomes(endpoint, req.get_body(),
                                              content_type=req.headers.get("content-type"))
        return json_response(dumps({"accepted": accepted}), request_id, 202)
    except Exception as exc:
        return error_response(exc, request_id, "outcomes")


def _service_json(req: func.HttpRequest, route: str, answer: Callable[[Any], Any]) -> func.HttpResponse:
    """``answer(service)`` as a JSON response, or its error."""
    request_id = request_id_of(req)
    try:
        from shared.payloads import dumps

        return json_response(dumps(answer(_service())), request_id)
    except Exception as exc:
        return error_response(exc, request_id, route)


@bp.route(route="v2/models/{*path}", methods=["GET"])
def v2_model(req: func.HttpRequest) -> func.HttpResponse:
    """Open Inference Protocol model metadata (``GET v2/models/{name}``) and readiness
    (``GET v2/models/{name}/ready``: 200 ready; an error status: not ready)."""
    path = _catch_all(req, "path")
    if not path:
        return not_found()
    name = _without(path, "ready")
    if name is not None:
        return _service_json(req, "v2_model_ready", lambda s: s.status.model_ready(name))
    return _service_json(req, "v2_metadata", lambda s: s.status.metadata(path))


@bp.route(route="v2", methods=["GET"])
def v2_server_metadata(req: func.HttpRequest) -> func.HttpResponse:
    """Open Inference Protocol server metadata (no storage access)."""
    return json_response(SERVER_METADATA, request_id_of(req))


@bp.route(route="endpoints", methods=["GET"])
def endpoints(req: func.HttpRequest) -> func.HttpResponse:
    """Endpoints with their variants and weights, and the loaded model versions."""
    return _service_json(req, "endpoints", lambda s: s.status.endpoints())


@bp.route(route="v2/health/live", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health_live(req: func.HttpRequest) -> func.HttpResponse:
    """The process is up (no storage access)."""
    return json_response(b'{"live":true}', request_id_of(req))


@bp.route(route="v2/health/ready", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health_ready(req: func.HttpRequest) -> func.HttpResponse:
    """Ready when the settings are valid and the model storage answers."""
    request_id = request_id_of(req)
    try:
        from shared.payloads import dumps

        report = _service().status.readiness()
        return json_response(dumps(report), request_id, 200 if report["ready"] else 503)
    except Exception as exc:
        return error_response(exc, request_id, "health_ready", anonymous=True)


@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI 3.1 document of this API (score_function/openapi.json)."""
    from .openapi import document

    return json_response(document(), request_id_of(req))


@bp.route(route="metrics/latency", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def metrics_latency(req: func.HttpRequest) -> func.HttpResponse:
    """Server-side latency percentiles, when the local metrics reader is on (local runs)."""
    request_id = request_id_of(req)
    try:
        from shared.errors import NotEnabled
        from shared.payloads import dumps
        from shared.telemetry import get_telemetry, latency_summary

        get_telemetry()
        summary = latency_summary()
        if summary is None:
            raise NotEnabled("the local metrics reader is off (TELEMETRY_LOCAL_READER)")
        return json_response(dumps({"latency": summary}), request_id)
    except Exception as exc:
        return error_response(exc, request_id, "metrics_latency")
