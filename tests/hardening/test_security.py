"""Security checks on the local host: auth on every route, no payloads or secrets in logs and
telemetry under fuzzing, and size limits on every input.

- auth matrix: every operation of score_function/openapi.json with no key, wrong keys, a
  function key and the master key, in the header and in ``?code=``: function routes take
  either key, admin routes only the master key, health and the OpenAPI document none; a
  refusal is the host's empty 401. (devhost implements the Functions host's key check; the
  app's part is the auth level each function declares, checked against the document in
  tests/hardening/test_openapi.py.)
- no payloads or secrets: hypothesis-generated requests and queue jobs carry sentinel values
  in every position; afterwards neither the host's log nor the telemetry it exported (to a
  capturing endpoint on 127.0.0.1) contains a sentinel, a key, the Azurite account key or
  the connection string;
- size limits: HTTP body (the app's MAX_REQUEST_BYTES and the host's 100 MiB), rows in every
  format, outcomes, model blobs (MAX_MODEL_MB, gzip bombs) and router config documents. The
  queue message, inline rows and batch input blob limits are in test_fuzz_queue.py.
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import time
from pathlib import Path

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devhost.azurite import DEV_KEY
from devhost.process import DevHost
from tests.hardening.support import (
    FUNCTION_KEY,
    MASTER_KEY,
    ROOT,
    host_env,
    hypothesis_settings,
    make_models_container,
    report,
    unique,
)
from tests.ingestion_support import Ingestion

pytestmark = pytest.mark.hardening

DOC = json.loads((ROOT / "score_function" / "openapi.json").read_text())
MAX_BYTES = 400_000
MAX_ROWS = 50
SENTINEL_NUMBERS = [8675309.25, 31337.0625, 4815162342.5]
SENTINEL_TEXT = "zq-SENTINEL-7f3a"


@pytest.fixture(scope="module")
def ingestion():
    server = Ingestion()
    yield server
    server.close()


@pytest.fixture(scope="module")
def models(azurite, demo_models):
    container = make_models_container(azurite.connection_string, demo_models)
    container.upload_blob("big.txt", b"tree\n" + b"x" * (1024 * 1024 + 10))  # over MAX_MODEL_MB
    container.upload_blob("bomb.txt.gz", gzip.compress(b"0" * (20 * 1024 * 1024)))  # 20 MB inside
    container.upload_blob("config/huge.json", b'{"endpoints": {}, "pad": "' + b"x" * (300 * 1024) + b'"}')
    yield container
    container.delete_container()


@pytest.fixture(scope="module")
def host(azurite, models, ingestion, tmp_path_factory):
    env = host_env(azurite.connection_string, models.container_name,
                   MAX_REQUEST_BYTES=str(MAX_BYTES), MAX_ROWS_PER_REQUEST=str(MAX_ROWS), MAX_MODEL_MB="1",
                   BATCH_CONTAINER=unique("b"),
                   APPLICATIONINSIGHTS_CONNECTION_STRING=ingestion.connection_string,
                   TELEMETRY_EXPORT_INTERVAL_SECONDS="1")
    server = DevHost(ROOT, env, lease_seconds=30,
                     log_path=tmp_path_factory.mktemp("security") / "devhost.log")
    server.start()
    server.env_used = env
    yield server
    server.stop()


def concrete(path: str) -> str:
    return "/api" + path.replace("{name}", "price").replace("{endpoint}", "churn")


BODIES = {"/score/{name}": {"rows": [[1, 2, 3, 4, 5, 6]]},
          "/v2/models/{name}/infer": {"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64",
                                                  "data": [1, 2, 3, 4, 5, 6]}]},
          "/outcomes/{endpoint}": {"outcomes": [{"key": "k", "label": 1}]}}


def test_auth_matrix_on_every_route(host, request):
    credentials = {
        "none": ({}, {}),
        "wrong key": ({"x-functions-key": "wrong"}, {}),
        "wrong code": ({}, {"code": "wrong"}),
        "empty key": ({"x-functions-key": ""}, {}),
        "key in upper case": ({"x-functions-key": FUNCTION_KEY.upper()}, {}),
        "key prefix": ({"x-functions-key": FUNCTION_KEY[:-1]}, {}),
        "key in another header": ({"authorization": f"Bearer {FUNCTION_KEY}"}, {}),
        "function key": ({"x-functions-key": FUNCTION_KEY}, {}),
        "function code": ({}, {"code": FUNCTION_KEY}),
        "master key": ({"x-functions-key": MASTER_KEY}, {}),
        "master code": ({}, {"code": MASTER_KEY}),
    }
    allowed = {"anonymous": set(credentials),
               "function": {"function key", "function code", "master key", "master code"},
               "admin": {"master key", "master code"}}
    checked = 0
    with httpx.Client(base_url=host.url, timeout=30) as client:
        for path, item in DOC["paths"].items():
            for method, op in item.items():
                for label, (headers, params) in credentials.items():
                    body = BODIES.get(path)
                    response = client.request(method.upper(), concrete(path), headers=headers, params=params,
                                              json=body)
                    checked += 1
                    where = f"{method.upper()} {path} with {label}: {response.status_code}"
                    if label in allowed[op["x-auth-level"]]:
                        assert response.status_code != 401, where
                        assert response.headers.get("x-request-id"), where
                    else:
                        assert response.status_code == 401 and response.content == b"", where
    report(request, "security_auth_matrix", requests=checked,
           operations=sum(len(v) for v in DOC["paths"].values()), credentials=len(credentials))


# -- no payloads, no secrets ----------------------------------------------------------------------

sentinels = st.one_of(st.sampled_from(SENTINEL_NUMBERS), st.just(SENTINEL_TEXT))


@st.composite
def leaky_requests(draw):
    """(method, path, body bytes, headers) with sentinels in the body, good or bad."""
    s = draw(sentinels)
    n = SENTINEL_NUMBERS[0] if isinstance(s, str) else s
    choice = draw(st.integers(0, 11))
    if choice >= 10:  # a random document with sentinels among its leaves, to any route
        doc = draw(st.recursive(st.one_of(sentinels, st.integers(-5, 5), st.text(max_size=5)),
                                lambda c: st.one_of(st.lists(c, max_size=4),
                                                    st.dictionaries(st.sampled_from(
                                                        ["rows", "records", "inputs", "outcomes", "options",
                                                         "data", "label", SENTINEL_TEXT]), c, max_size=3)),
                                max_leaves=10))
        path = draw(st.sampled_from(["/api/score/price", "/api/v2/models/price/infer",
                                     "/api/outcomes/churn", "/api/score/segment"]))
        return "POST", path, orjson.dumps(doc), {}
    if choice == 0:
        doc = {"rows": [[n, 2, 3, 4, 5, 6]]}  # valid: 200
    elif choice == 1:
        doc = {"rows": [[n, s, 3]]}  # wrong width, non-numeric
    elif choice == 2:
        doc = {"records": [{SENTINEL_TEXT: n}]}  # unknown feature (named in the response only)
    elif choice == 3:
        doc = {"rows": [[n] * 6], "options": {SENTINEL_TEXT: True}}
    elif choice == 4:
        doc = {"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP16", "data": [n * 1e9] * 6}],
               "id": SENTINEL_TEXT}
        return "POST", "/api/v2/models/price/infer", orjson.dumps(doc), {}
    elif choice == 5:
        return "POST", "/api/score/price", b'{"rows": [[' + str(n).encode() + b", NaN]]", {}
    elif choice == 6:
        doc = {"outcomes": [{"request_id": SENTINEL_TEXT, "label": n},
                            {"key": n, "label": "x" + SENTINEL_TEXT}]}
        return "POST", "/api/outcomes/churn", orjson.dumps(doc), {}
    elif choice == 7:
        return "POST", "/api/score/price", orjson.dumps({"rows": [[n] * 6]}), \
            {"content-type": f"text/{SENTINEL_TEXT}"}
    elif choice == 8:
        doc = {"rows": [[n] * 6] * (MAX_ROWS + 1)}
    else:
        doc = {SENTINEL_TEXT: [n], "rows": draw(st.lists(st.just([n, n]), max_size=3))}
    return "POST", "/api/score/price", orjson.dumps(doc), {}


def test_no_payloads_or_secrets_in_logs_or_telemetry(host, azurite, ingestion, request):
    from azure.storage.queue import QueueClient

    statuses: dict[int, int] = {}
    with httpx.Client(base_url=host.url, timeout=30, headers={"x-functions-key": FUNCTION_KEY}) as client:
        @hypothesis_settings(120)
        @given(leaky_requests())
        def run(case):
            method, path, body, headers = case
            h = {"content-type": "application/json", **headers}
            response = client.request(method, path, content=body, headers=h)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500

        run()
        # the keys also travel as ?code=, where a URL logger would see them
        client.get("/api/metrics/latency", params={"code": MASTER_KEY}, headers={})
        client.get("/api/endpoints", params={"code": FUNCTION_KEY}, headers={})
    # queue jobs with sentinels: failing and succeeding ones
    queue = QueueClient.from_connection_string(azurite.connection_string, host.env_used["SCORE_QUEUE_NAME"])
    try:
        queue.create_queue()
    except Exception:
        pass
    n = SENTINEL_NUMBERS[1]
    jobs = [{"id": "sec-1", "endpoint": "price", "rows": [[n] * 6]},
            {"id": "sec-2", "endpoint": "price", "rows": [[n, SENTINEL_TEXT]]},
            {"id": "sec-3", "endpoint": "price", "records": [{SENTINEL_TEXT: n}]},
            {"id": "sec-4", "endpoint": "price", "input": {"blob": f"{SENTINEL_TEXT}.csv"}}]
    for job in jobs:
        queue.send_message(base64.b64encode(orjson.dumps(job)).decode())
    queue.send_message(base64.b64encode(b'{"id": "sec-5", ' + str(n).encode() + b"}").decode())
    results_queue = QueueClient.from_connection_string(azurite.connection_string,
                                                       host.env_used["RESULTS_QUEUE_NAME"])
    deadline = time.monotonic() + 30
    seen = set()
    while time.monotonic() < deadline and len(seen) < 5:
        try:
            for m in results_queue.receive_messages(max_messages=32):
                seen.add(orjson.loads(base64.b64decode(m.content))["id"])
                results_queue.delete_message(m)
        except Exception:
            pass
        time.sleep(0.3)
    assert len(seen) == 5, seen
    time.sleep(2.5)  # two export intervals
    host.stop()  # shutting down flushes the exporters
    log = Path(host.log_path).read_text(errors="replace")
    telemetry = ingestion.text()
    assert "scorefn.request.duration" in telemetry, "telemetry was exported"
    assert "scoring failed" in log and "job sec-2 failed" in log, "failures were logged"
    secrets = {"function key": FUNCTION_KEY, "master key": MASTER_KEY, "account key": DEV_KEY,
               "connection string": "AccountKey=", "sentinel text": SENTINEL_TEXT,
               **{f"sentinel {v}": repr(v) for v in SENTINEL_NUMBERS},
               **{f"sentinel {v} (as text)": f"{v:.0f}" for v in SENTINEL_NUMBERS if v > 1e6}}
    for what, text in secrets.items():
        assert text not in log, f"{what} in the host's log"
        assert text not in telemetry, f"{what} in the exported telemetry"
    report(request, "security_no_leaks", requests=sum(statuses.values()), statuses=statuses,
           queue_jobs=len(seen), log_bytes=len(log), telemetry_bytes=len(telemetry),
           leaks=0, secrets_checked=len(secrets))


# -- size limits ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def limits_host(azurite, models, tmp_path_factory):
    env = host_env(azurite.connection_string, models.container_name, MAX_REQUEST_BYTES=str(MAX_BYTES),
                   MAX_ROWS_PER_REQUEST=str(MAX_ROWS), MAX_MODEL_MB="1")
    with DevHost(ROOT, env, queues=False,
                 log_path=tmp_path_factory.mktemp("limits") / "devhost.log") as server:
        yield server


def test_size_limits_on_every_input(limits_host, models):
    h = {"x-functions-key": FUNCTION_KEY}
    c = httpx.Client(base_url=limits_host.url, timeout=60, headers=h)

    def expect(response, status, code=None):
        assert response.status_code == status, response.text[:200]
        if code:
            assert response.json()["error"] == code

    big = b'{"rows": [[1,2,3,4,5,6]]' + b" " * MAX_BYTES + b"}"
    for path in ("/api/score/price", "/api/v2/models/price/infer", "/api/outcomes/churn"):
        expect(c.post(path, content=big, headers={"content-type": "application/json"}), 413,
               "payload_too_large")
    row = [1, 2, 3, 4, 5, 6]
    expect(c.post("/api/score/price", json={"rows": [row] * (MAX_ROWS + 1)}), 413, "too_many_rows")
    expect(c.post("/api/score/price", json={"records": [{}] * (MAX_ROWS + 1)}), 413, "too_many_rows")
    expect(c.post("/api/v2/models/price/infer", json={"inputs": [
        {"name": "x", "shape": [MAX_ROWS + 1, 6], "datatype": "FP64", "data": row * (MAX_ROWS + 1)}]}),
        413, "too_many_rows")
    expect(c.post("/api/v2/models/price/infer", json={"inputs": [
        {"name": "sqft", "shape": [MAX_ROWS + 1], "datatype": "FP64", "data": [1.0] * (MAX_ROWS + 1)}]}),
        413, "too_many_rows")
    expect(c.post("/api/outcomes/churn", json={"outcomes": [{"key": "k", "label": 1}] * 10_001}),
           413, "too_many_outcomes")
    expect(c.post("/api/score/big", json={"rows": [row]}), 422, "invalid_model")  # MAX_MODEL_MB
    expect(c.post("/api/score/bomb", json={"rows": [row]}), 422, "invalid_model")  # gzip bomb
    # The host's own limit (100 MiB): refused from the declared length, before reading a byte.
    with socket.create_connection(("127.0.0.1", int(limits_host.url.rsplit(":", 1)[1])), timeout=10) as s:
        s.sendall(f"POST /api/score/price HTTP/1.1\r\nHost: x\r\nx-functions-key: {FUNCTION_KEY}\r\n"
                  f"content-type: application/json\r\ncontent-length: {200 * 1024 * 1024}\r\n\r\n{{".encode())
        assert s.recv(100).startswith(b"HTTP/1.1 413")
    c.close()
    # Router config: a document over 256 KiB is refused before it is downloaded.
    from shared.errors import InvalidRouterConfig
    from shared.models.blob_source import BlobSource
    from shared.router import MAX_CONFIG_BYTES, RouterConfigSource, RouterHolder, parse_config

    source = RouterConfigSource(blob_path="config/huge.json", blobs=BlobSource(models, MAX_CONFIG_BYTES))
    with pytest.raises(InvalidRouterConfig, match="over the limit"):
        RouterHolder(source).current()
    with pytest.raises(InvalidRouterConfig, match="limit"):
        parse_config(b" " * (MAX_CONFIG_BYTES + 1))


@pytest.mark.parametrize("error", [
    "settings", "router_config"], ids=["invalid-app-setting", "invalid-router-config"])
def test_the_anonymous_readiness_probe_names_no_setting_model_or_endpoint(error, monkeypatch,
                                                                          caplog):
    import azure.functions as func

    import score_function.http_routes as routes
    from shared.errors import InvalidRouterConfig, SettingsError

    detail = "endpoints.secret-fraud.variants[0].model: invalid model name 'fraud/v7..txt'"
    exc = (SettingsError(f"app setting ROUTER_CONFIG: {detail}") if error == "settings"
           else InvalidRouterConfig(detail))

    def broken():
        raise exc

    monkeypatch.setattr(routes, "_service", broken)
    request = func.HttpRequest("GET", "http://x/api/v2/health/ready", headers={}, body=b"")
    with caplog.at_level("INFO", logger="scorefn.http"):
        response = routes.health_ready(request)
    body = orjson.loads(response.get_body())
    assert response.status_code >= 500 if error == "settings" else response.status_code >= 400
    assert body["error"] and "secret-fraud" not in body["message"]
    assert "ROUTER_CONFIG" not in body["message"]
    assert response.headers["x-request-id"] in body["message"]
    assert "secret-fraud" in caplog.text  # the detail is in the app's log, for its operators
