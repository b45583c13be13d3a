"""The OpenAPI 3.1 document (score_function/openapi.json, served at GET /api/openapi.json)
cannot drift from the app: its paths, methods and auth match what function_app.app
registers, its error codes match the codes in the source, and real responses of the local
host (successes and every error status) validate against its schemas."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from devhost.process import DevHost
from tests.hardening.support import (
    FUNCTION_KEY,
    MASTER_KEY,
    ROOT,
    closed_port,
    host_env,
    make_models_container,
)

pytestmark = pytest.mark.hardening

DOC_PATH = ROOT / "score_function" / "openapi.json"
DOC = json.loads(DOC_PATH.read_text())
BASE = "urn:scorefn:openapi"
REGISTRY = Registry().with_resource(BASE, DRAFT202012.create_resource(DOC))
SECURITY = {"function": [{"functionKey": []}, {"functionKeyQuery": []}],
            "admin": [{"masterKey": []}, {"masterKeyQuery": []}],
            "anonymous": []}
# An inline router config: GET /api/endpoints has something to show, and callers pinning a
# variant of an endpoint that does not allow it get a 403.
ROUTER_CONFIG = {"endpoints": {"churn": {
    "variants": [{"name": "a", "model": "churn"}, {"name": "b", "model": "churn.txt", "weight": 2}],
    "sticky": {"header": "x-user"}, "shadow": [{"name": "s", "model": "churn", "fraction": 0.5}]}}}
# Codes only batch jobs report (in result messages, never as an HTTP response).
QUEUE_ONLY_CODES = {"input_not_found", "input_too_large", "invalid_blob_name", "invalid_csv",
                    "invalid_format", "invalid_job_id", "invalid_message", "job_busy",
                    "message_too_large", "missing_id_column", "output_container_not_found",
                    "unknown_column", "invalid_chunk", "input_changed", "pinned_model_missing",
                    "container_not_allowed", "job_id_reused"}
# Codes of background model refreshes (logged and counted), never a response.
REFRESH_ONLY_CODES = {"feature_mismatch"}


def pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def validator(*parts: str) -> Draft202012Validator:
    """A validator for the schema at ``parts`` inside the document (its $refs resolve)."""
    ref = BASE + "#" + re.sub(r"[{}]", lambda m: "%7B" if m.group() == "{" else "%7D", pointer(*parts))
    return Draft202012Validator({"$ref": ref}, registry=REGISTRY)


def operation_for(method: str, path: str) -> tuple[str, dict]:
    """The document's path template and operation for a concrete request path. A name may
    hold "/" (the routes take it with a catch-all), so the template with the most literal
    text wins: ``/v2/models/a/ready`` is the readiness of ``a``, as the app reads it."""
    found = []
    for template, item in DOC["paths"].items():
        regex = "^/api" + re.sub(r"\\\{[a-z]+\\\}", ".+", re.escape(template)) + "$"
        if re.match(regex, path) and method.lower() in item:
            found.append((len(re.sub(r"\{[a-z]+\}", "", template)), template))
    assert found, f"{method} {path} is not in the document"
    template = max(found)[1]
    return template, DOC["paths"][template][method.lower()]


def check_against_document(response: httpx.Response) -> str:
    """Validate a real response: documented status, headers and body. Returns the template."""
    request = response.request
    template, op = operation_for(request.method, request.url.path)
    status = str(response.status_code)
    assert status in op["responses"], f"{request.method} {template}: status {status} is not documented"
    documented = op["responses"][status]
    if "$ref" in documented:
        documented = DOC["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
    for name, header in documented.get("headers", {}).items():
        if "$ref" in header:
            header = DOC["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
        if header.get("required"):
            assert name in response.headers, f"{template} {status}: header {name} missing"
        if name in response.headers:
            Draft202012Validator(header["schema"]).validate(response.headers[name])
    if "content" not in documented:
        assert response.content == b"", f"{template} {status}: a body where none is documented"
        return template
    media = response.headers["content-type"].split(";")[0]
    assert media in documented["content"], f"{template} {status}: {media} is not documented"
    where = ("paths", template, request.method.lower(), "responses", status, "content", media)
    if media == "application/octet-stream":  # the binary data extension: a JSON header, bytes
        length = int(response.headers["inference-header-content-length"])
        header_doc = json.loads(response.content[:length])
        validator(*where, "x-json-header").validate(header_doc)
        sizes = sum(o["parameters"]["binary_data_size"] for o in header_doc["outputs"])
        assert len(response.content) == length + sizes, f"{template} {status}: binary sizes"
        return template
    assert media == "application/json"
    validator(*where, "schema").validate(response.json())
    return template


# -- the document against the app ------------------------------------------------------------

# Operations served by a function of another name: GET v2/models/{*path} is both the model's
# metadata and, for a path ending in /ready, its readiness.
SERVED_BY = {"v2_metadata": "v2_model", "v2_model_ready": "v2_model"}


def concrete(template: str) -> str:
    """A request path for a document path: names with "/", as the routes take them."""
    return "/api" + template.replace("{name}", "team/churn.v2").replace("{endpoint}", "churn")


def test_paths_methods_and_auth_match_the_registered_functions(app_functions):
    from devhost.routing import RouteTable, request_path

    prefix = json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"]
    routes: RouteTable = RouteTable(prefix)
    registered = set()
    for f in app_functions:
        trigger = f.get_trigger()
        if trigger.get_binding_name() == "httpTrigger":
            level = str(getattr(trigger.auth_level, "value", trigger.auth_level)).lower()
            methods = [m.value for m in trigger.methods]
            routes.add(trigger.route, methods, (f.get_function_name(), level))
            registered |= {(f.get_function_name(), m.lower()) for m in methods}
    served = set()
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            # The host routes the operation's request to the function named for it, whose
            # auth level the document gives.
            found = routes.match(method.upper(), request_path(concrete(path).encode()))
            assert found is not None, (method, path)
            function, params = found
            assert function == (SERVED_BY.get(op["operationId"], op["operationId"]),
                                op["x-auth-level"]), (method, path)
            served.add((function[0], method))
            assert op["security"] == SECURITY[op["x-auth-level"]], (path, method)
            if op["x-auth-level"] != "anonymous":
                assert op["responses"]["401"] == {"$ref": "#/components/responses/Unauthorized"}
            else:
                assert "401" not in op["responses"]
    assert served == registered  # and every function's route serves a documented operation
    assert DOC["servers"][0]["url"] == "/" + prefix
    assert DOC["openapi"].startswith("3.1.")


def test_every_error_code_in_the_source_is_documented_or_queue_only():
    source = ""
    for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "score_function").rglob("*.py")]:
        source += path.read_text()
    in_source = set(re.findall(r"""code\s*=\s*["']([a-z0-9_]+)["']""", source))
    in_source |= set(re.findall(r"""["']error["']\s*:\s*["']([a-z0-9_]+)["']""", source))
    # BadRequest is a base class only (its subclasses carry the codes): never a response.
    assert re.search(r"(?<!class )\bBadRequest\(", source) is None
    in_source.discard("bad_request")
    documented = set(DOC["components"]["schemas"]["ErrorCode"]["enum"])
    assert in_source - QUEUE_ONLY_CODES - REFRESH_ONLY_CODES - documented == set(), \
        "codes missing from openapi.json"
    assert documented - in_source == set(), "codes in openapi.json that nothing raises"
    assert QUEUE_ONLY_CODES <= in_source
    by_status = {k: set(v["allOf"][1]["properties"]["error"]["enum"])
                 for k, v in DOC["components"]["schemas"].items() if re.fullmatch(r"Error\d{3}", k)}
    assert set().union(*by_status.values()) == documented
    from shared import errors
    for cls in vars(errors).values():  # each typed error's default code is under its status
        if isinstance(cls, type) and issubclass(cls, errors.ScoreError) and cls.code in documented:
            assert cls.code in by_status[f"Error{cls.status}"], cls.__name__


def test_the_document_is_valid():
    import schemathesis

    for schema in DOC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    schema = schemathesis.openapi.from_dict(DOC)
    assert len([r.ok() for r in schema.get_all_operations()]) == sum(len(v) for v in DOC["paths"].values())
    for path, item in DOC["paths"].items():
        for op in item.values():
            for status, response in op["responses"].items():
                for media, content in response.get("content", {}).items():
                    for key in ("schema", "x-json-header"):
                        if key in content:  # refs resolve
                            validator("paths", path, next(m for m in item if item[m] is op),
                                      "responses", status, "content", media, key)


# -- real responses ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(azurite, demo_models):
    container = make_models_container(azurite.connection_string, demo_models)
    container.upload_blob("broken.txt", b"tree\nversion=v4\ngarbage")
    container.upload_blob("team/price.txt", demo_models["price"].path.read_bytes())  # a name with "/"
    container.upload_blob("config/bad.json", b'{"endpoints": {"churn": {"variants": []}}}')
    yield container
    container.delete_container()


@pytest.fixture(scope="module")
def host(azurite, models, tmp_path_factory):
    env = host_env(azurite.connection_string, models.container_name, MAX_REQUEST_BYTES="5000",
                   MAX_ROWS_PER_REQUEST="20", TELEMETRY_LOCAL_READER="true",
                   ROUTER_CONFIG=json.dumps(ROUTER_CONFIG))
    with DevHost(ROOT, env, queues=False,
                 log_path=tmp_path_factory.mktemp("openapi") / "devhost.log") as server:
        yield server


@pytest.fixture(scope="module")
def broken_hosts(azurite, models, tmp_path_factory):
    """A host whose storage is unreachable, and one whose router config and a telemetry
    setting are invalid."""
    dead = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=ZmFrZQ==;"
            f"BlobEndpoint=http://127.0.0.1:{closed_port()}/devstoreaccount1;")
    logs = tmp_path_factory.mktemp("openapi-broken")
    down = DevHost(ROOT, host_env(dead, "models", STORAGE_TIMEOUT_SECONDS="1"), queues=False,
                   log_path=logs / "down.log").start()
    try:
        bad = DevHost(ROOT, host_env(azurite.connection_string, models.container_name,
                                     ROUTER_CONFIG_BLOB="config/bad.json",
                                     TELEMETRY_TRACE_SAMPLE_RATIO="often"), queues=False,
                      log_path=logs / "bad.log").start()
    except BaseException:
        down.stop()
        raise
    yield down, bad
    down.stop()
    bad.stop()


def test_the_document_is_served_anonymously_and_equals_the_file(host):
    response = httpx.get(f"{host.url}/api/openapi.json")
    assert response.status_code == 200 and response.json() == DOC
    check_against_document(response)


def test_real_responses_validate_against_the_document(host, broken_hosts, request):
    fk = {"x-functions-key": FUNCTION_KEY}
    seen: set[tuple[str, str, int]] = set()

    def call(server, method, path, **kwargs):
        kwargs.setdefault("headers", fk)
        response = httpx.request(method, server.url + path, timeout=30, **kwargs)
        template = check_against_document(response)
        seen.add((method, template, response.status_code))
        return response

    row6 = [1, 2, 3, 4, 5, 6]
    scored = call(host, "POST", "/api/score/churn", json={"rows": [[12, 70.5, 1, 12, 40, 33.2, 0, 5]]})
    assert scored.status_code == 200
    assert call(host, "POST", "/api/score/segment",
                json={"records": [{"recency_days": 3}], "options": {"pred_contrib": True}}).status_code == 200
    assert call(host, "POST", "/api/score/price", json={"rows": [row6, row6]},
                headers={**fk, "x-request-id": "mine-1"}).status_code == 200
    for body in ({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32", "data": row6}]},
                 {"id": "r", "inputs": [{"name": "x", "shape": [2, 6], "datatype": "INT32",
                                         "data": [row6, row6]}], "parameters": {"raw_score": True}}):
        assert call(host, "POST", "/api/v2/models/price/infer", json=body).status_code == 200
    # Names with "/" on every route that takes a name; the V2 binary data extension.
    assert call(host, "POST", "/api/score/team/price", json={"rows": [row6]}).status_code == 200
    v2_row = {"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64", "data": row6}]}
    assert call(host, "POST", "/api/v2/models/team/price/infer", json=v2_row).status_code == 200
    assert call(host, "GET", "/api/v2/models/team/price").json()["name"] == "team/price"
    assert call(host, "GET", "/api/v2/models/team/price/ready").json() == {"name": "team/price",
                                                                          "ready": True}
    header = json.dumps({"inputs": [{"name": "x", "shape": [2, 6], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 48}}],
                         "parameters": {"binary_data_output": True}}).encode()
    binary = header + np.array([row6, row6], dtype="<f4").tobytes()
    answer = call(host, "POST", "/api/v2/models/team/price/infer", content=binary,
                  headers={**fk, "inference-header-content-length": str(len(header)),
                           "content-type": "application/octet-stream"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/octet-stream"
    assert call(host, "GET", "/api/v2/models/segment").status_code == 200
    assert call(host, "GET", "/api/v2/models/segment/ready").json() == {"name": "segment",
                                                                       "ready": True}
    assert call(host, "GET", "/api/v2").json()["version"] == DOC["info"]["version"]
    assert call(host, "GET", "/api/endpoints").status_code == 200
    assert call(host, "GET", "/api/v2/health/live", headers={}).status_code == 200
    assert call(host, "GET", "/api/v2/health/ready", headers={}).status_code == 200
    assert call(host, "GET", "/api/metrics/latency",
                headers={"x-functions-key": MASTER_KEY}).status_code == 200
    assert call(host, "GET", "/api/openapi.json", headers={}).status_code == 200
    outcome = {"outcomes": [{"request_id": scored.json()["request_id"], "label": 1}]}
    assert call(host, "POST", "/api/outcomes/churn", json=outcome).status_code == 202
    # Errors, each status of each operation that a working host can produce.
    errors = [
        ("/api/score/price", {"content": b"{nope"}, 400),
        ("/api/score/price", {"json": {"rows": [[1, 2]]}}, 400),
        ("/api/score/price", {"json": {"rows": [row6]}, "headers": {**fk, "x-scorefn-variant": "a"}}, 403),
        ("/api/score/nope", {"json": {"rows": [row6]}}, 404),
        ("/api/score/price", {"json": {"rows": [row6] * 21}}, 413),
        ("/api/score/price", {"content": b" " * 5001}, 413),
        ("/api/score/price", {"content": b"1,2", "headers": {**fk, "content-type": "text/csv"}}, 415),
        ("/api/score/broken", {"json": {"rows": [row6]}}, 422),
        ("/api/v2/models/price/infer", {"json": {"inputs": []}}, 400),
        ("/api/v2/models/price/infer", {"json": {"inputs": [{"name": "x", "shape": [1, 6],
                                                             "datatype": "BF16", "data": row6}]}}, 400),
        ("/api/v2/models/price/infer", {"json": {"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64",
                                                             "data": row6}]},
                                        "headers": {**fk, "x-scorefn-variant": "a"}}, 403),
        ("/api/v2/models/nope/infer", {"json": {"inputs": []}}, 404),
        ("/api/v2/models/price/infer", {"content": b"[" * 5001}, 413),
        ("/api/v2/models/price/infer",
         {"content": b"x", "headers": {**fk, "content-type": "text/plain"}}, 415),
        ("/api/v2/models/broken/infer", {"json": {"inputs": []}}, 422),
        ("/api/v2/models/team/price/infer", {"content": binary[:-1], "headers": {
            **fk, "inference-header-content-length": str(len(header))}}, 400),
        ("/api/v2/models/team/price/infer", {"content": binary, "headers": {
            **fk, "inference-header-content-length": "-1"}}, 400),
        ("/api/score/team%2Fprice", {"json": {"rows": [row6]}}, 400),  # %2F is not decoded
        ("/api/score/team/nope", {"json": {"rows": [row6]}}, 404),
        ("/api/outcomes/churn", {"json": {"outcomes": []}}, 400),
        ("/api/outcomes/churn", {"json": {"outcomes": [{"key": "k", "label": 1}] * 10_001}}, 413),
        ("/api/outcomes/churn", {"content": b"x", "headers": {**fk, "content-type": "text/plain"}}, 415),
        ("/api/outcomes/a%20b", {"json": outcome}, 400),
    ]
    for path, kwargs, status in errors:
        if kwargs.get("content") is not None and "headers" not in kwargs:
            kwargs["headers"] = {**fk, "content-type": "application/json"}
        if path.startswith("/api/outcomes") and status == 413:
            kwargs = {"content": json.dumps(kwargs["json"]).encode(), "headers": fk}
            host_big = host  # MAX_REQUEST_BYTES (5000) answers first: still a documented 413
            response = call(host_big, "POST", path, **kwargs)
        else:
            response = call(host, "POST", path, **kwargs)
        assert response.status_code == status, (path, response.text)
    for path, status in (("/api/v2/models/a%20b", 400), ("/api/v2/models/nope", 404),
                         ("/api/v2/models/broken", 422), ("/api/v2/models/a%20b/ready", 400),
                         ("/api/v2/models/nope/ready", 404), ("/api/v2/models/broken/ready", 422)):
        assert call(host, "GET", path).status_code == status
    # 401 (empty, from the host) on every keyed operation, and the host's empty 404.
    for method, path in (("POST", "/api/score/price"), ("POST", "/api/v2/models/price/infer"),
                         ("GET", "/api/v2/models/price"), ("GET", "/api/v2/models/price/ready"),
                         ("GET", "/api/v2"), ("GET", "/api/endpoints"),
                         ("POST", "/api/outcomes/churn"), ("GET", "/api/metrics/latency")):
        assert call(host, method, path, headers={}).status_code == 401
    assert call(host, "GET", "/api/metrics/latency").status_code == 401  # a function key is not enough
    # No route (the host's empty 404), also where a catch-all takes the path but it names
    # no operation: no name, or a POST to a V2 model path without /infer.
    for method, path in (("GET", "/api/nothing-here"), ("POST", "/api/score"), ("POST", "/api/score/"),
                         ("POST", "/api/v2/models/price"), ("POST", "/api/v2/models/infer"),
                         ("GET", "/api/v2/models"), ("POST", "/api/outcomes"),
                         ("DELETE", "/api/v2/models/price")):
        unknown = httpx.request(method, f"{host.url}{path}", headers=fk)
        assert (unknown.status_code, unknown.content) == (404, b""), (method, path)
        assert "x-request-id" not in unknown.headers, (method, path)
    # Storage down (503 with Retry-After, ready 503) and an invalid router config (500).
    down, bad = broken_hosts
    assert call(down, "POST", "/api/score/churn", json={"rows": [row6]}).status_code == 503
    assert call(down, "POST", "/api/v2/models/churn/infer", json={"inputs": []}).status_code == 503
    assert call(down, "GET", "/api/v2/models/churn").status_code == 503
    assert call(down, "GET", "/api/v2/models/churn/ready").status_code == 503
    assert call(down, "GET", "/api/v2/health/ready", headers={}).status_code == 503
    assert call(down, "POST", "/api/outcomes/churn", json=outcome).status_code == 503
    assert call(down, "GET", "/api/metrics/latency",
                headers={"x-functions-key": MASTER_KEY}).status_code == 404  # reader off: not_enabled
    assert call(bad, "POST", "/api/score/churn", json={"rows": [row6]}).status_code == 500
    assert call(bad, "POST", "/api/v2/models/churn/infer", json={"inputs": []}).status_code == 500
    assert call(bad, "GET", "/api/endpoints").status_code == 500
    assert call(bad, "GET", "/api/v2/models/churn").status_code == 500
    assert call(bad, "GET", "/api/v2/models/churn/ready").status_code == 500
    latency = call(bad, "GET", "/api/metrics/latency", headers={"x-functions-key": MASTER_KEY})
    assert latency.status_code == 500 and latency.json()["error"] == "configuration_error"
    # Every operation was seen succeeding.
    ok = {(m, t) for m, t, s in seen if s < 300}
    assert ok == {(m.upper(), p) for p, item in DOC["paths"].items() for m in item}
    request.node.user_properties.append(("responses_validated", len(seen)))


def test_the_v2_server_metadata_names_the_documents_version():
    from score_function.http_routes import SERVER_METADATA

    assert json.loads(SERVER_METADATA) == {"name": "scorefn", "version": DOC["info"]["version"],
                                           "extensions": ["binary_tensor_data"]}
