"""Fuzzing the HTTP API on the local Functions host (devhost) with the demo models in Azurite.

Properties, for every input: never a 5xx; every error body is ``{"error": code, "message"}``
with a documented code and the status its type has (the only bodies that are not JSON are
the host's own empty 401 and 404); never a hang (a 30 s client timeout fails the test);
every accepted body's predictions equal ``lightgbm.Booster.predict`` on the same rows (an
oracle in tests/hardening_support.py, written independently of shared/payloads), and every
body that oracle would score is accepted.

- schema-driven: schemathesis generates requests from score_function/openapi.json
  (positive and negative data, every operation) and checks status codes, content types,
  headers and bodies against the document;
- outside the schema: hypothesis generates valid bodies (extreme numbers, every V2 datatype
  and tensor layout, options), then mutated ones: deep nesting, NaN/Infinity and out-of-range
  literals, wrong types, unicode and invalid UTF-8, duplicate keys, truncated and oversized
  bodies, wrong content types, odd characters in routes.

Run sizes: ``make test`` (bounded, ~25 s); ``make fuzz`` (SCOREFN_FUZZ_SCALE=20).
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from urllib.parse import quote

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devhost.process import DevHost
from tests.hardening_support import (FUNCTION_KEY, MASTER_KEY, MODELS, ROOT, NotScorable, Oracle,
                                     Pairs, Raw, emit, host_env, hypothesis_settings,
                                     make_models_container, predictions_of, report)

MAX_BYTES = 200_000
MAX_ROWS = 500
OPENAPI = json.loads((ROOT / "score_function" / "openapi.json").read_text())
SCHEMAS = OPENAPI["components"]["schemas"]
CODES_BY_STATUS = {int(k[len("Error"):]): set(v["allOf"][1]["properties"]["error"]["enum"])
                   for k, v in SCHEMAS.items() if k.startswith("Error") and k[5:].isdigit()}
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def models(azurite, demo_models):
    container = make_models_container(azurite.connection_string, demo_models)
    yield container
    container.delete_container()


@pytest.fixture(scope="module")
def host(azurite, models, tmp_path_factory):
    env = host_env(azurite.connection_string, models.container_name,
                   MAX_REQUEST_BYTES=str(MAX_BYTES), MAX_ROWS_PER_REQUEST=str(MAX_ROWS),
                   TELEMETRY_LOCAL_READER="true")
    log = tmp_path_factory.mktemp("fuzz-http") / "devhost.log"
    with DevHost(ROOT, env, queues=False, log_path=log) as server:
        yield server


@pytest.fixture(scope="module")
def oracle(demo_models) -> Oracle:
    return Oracle.of(demo_models, MAX_ROWS)


@pytest.fixture(scope="module")
def client(host):
    with httpx.Client(base_url=host.url, timeout=TIMEOUT,
                      headers={"x-functions-key": FUNCTION_KEY}) as c:
        yield c


# -- the property -------------------------------------------------------------------------

class Tally:
    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.codes: Counter[str] = Counter()
        self.tried = 0
        self.accepted = 0

    def figures(self) -> dict:
        return {"tried": self.tried, "accepted_and_checked": self.accepted,
                "statuses": dict(sorted(self.statuses.items())), "server_errors": 0,
                "distinct_error_codes": len(self.codes)}


def check(response: httpx.Response, tally: Tally, *, oracle: Oracle | None = None,
          name: str | None = None, body: bytes | None = None, fmt: str = "score",
          judged: bool = False) -> None:
    """The fuzzing property for one response (see the module docstring). With ``judged``,
    the body was sent as JSON under the size limit, so the oracle's verdict must agree with
    the server's: scorable <=> 200."""
    tally.tried += 1
    tally.statuses[response.status_code] += 1
    where = f"{response.request.method} {response.request.url.raw_path[:120]!r} -> {response.status_code}"
    assert response.status_code < 500, f"{where}: {response.text[:300]}"
    if response.status_code >= 400 and not response.content:
        assert response.status_code in (401, 404) and "x-request-id" not in response.headers, where
        return
    assert response.headers.get("x-request-id"), where
    assert response.headers.get("content-type", "").startswith("application/json"), where
    doc = response.json()
    if response.status_code >= 400:
        assert set(doc) == {"error", "message"} and isinstance(doc["message"], str), where
        assert doc["error"] in CODES_BY_STATUS.get(response.status_code, ()), f"{where}: {doc}"
        tally.codes[doc["error"]] += 1
    if not judged or oracle is None or name is None or body is None:
        return
    try:
        expected = oracle.predict(name, orjson.loads(body), fmt)
    except (NotScorable, orjson.JSONDecodeError) as exc:
        assert response.status_code != 200, f"{where}: accepted a body the formats refuse ({exc}): {body[:300]!r}"
        return
    assert response.status_code == 200, f"{where}: refused a valid body: {doc} {body[:300]!r}"
    got = predictions_of(doc, fmt)
    assert got.shape == expected.shape and np.array_equal(got, expected), \
        f"{where}: predictions differ from Booster.predict for {body[:300]!r}"
    tally.accepted += 1


def post(client, fmt: str, name: str, body: bytes, content_type: str | None = "application/json",
         headers: dict | None = None) -> httpx.Response:
    path = f"/api/score/{quote(name, safe='')}" if fmt == "score" else \
        f"/api/v2/models/{quote(name, safe='')}/infer"
    h = dict(headers or {})
    if content_type is not None:
        h["content-type"] = content_type
    return client.post(path, content=body, headers=h)


# -- strategies ---------------------------------------------------------------------------

FEATURES = {"churn": 8, "price": 6, "segment": 4}
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1),
    st.sampled_from([0, 0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                     -1.7976931348623157e308, 1e-300, 2 ** 53 + 1, 0.1, 1e15, 12, 70.5]))
cells = st.one_of(st.none(), numbers)
options = st.sampled_from([None, {}, {"raw_score": True}, {"pred_contrib": True},
                           {"raw_score": False}, {"raw_score": False, "pred_contrib": False}])


@st.composite
def score_bodies(draw):
    model = draw(st.sampled_from(MODELS))
    width = FEATURES[model]
    n = draw(st.one_of(st.integers(1, 4), st.integers(1, 60)))
    rows = draw(st.lists(st.lists(cells, min_size=width, max_size=width), min_size=n, max_size=n))
    doc: dict = {}
    if draw(st.booleans()):
        doc["rows"] = rows
    else:
        names = [f"{model}_{i}" for i in range(width)]  # replaced by the real names below
        keep = draw(st.lists(st.booleans(), min_size=width, max_size=width))
        doc["records"] = [{names[j]: v for j, v in enumerate(row) if keep[j] or v is not None}
                          for row in rows]
    opt = draw(options)
    if opt is not None:
        doc["options"] = opt
    return model, doc


V2_TYPES = {"FP64": None, "FP32": None, "FP16": None, "INT8": 8, "INT16": 16, "INT32": 32,
            "INT64": 64, "UINT8": -8, "UINT16": -16, "UINT32": -32, "UINT64": -64}


def typed_values(datatype: str):
    bits = V2_TYPES[datatype]
    if bits is None:
        if datatype == "FP16":
            return st.one_of(st.none(), st.floats(-65504, 65504))
        if datatype == "FP32":
            return st.one_of(st.none(), st.floats(-3.4e38, 3.4e38))
        return cells
    if bits > 0:
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return st.integers(0, 2 ** (-bits) - 1)


@st.composite
def v2_bodies(draw):
    model = draw(st.sampled_from(MODELS))
    width = FEATURES[model]
    n = draw(st.integers(1, 20))
    datatype = draw(st.sampled_from(sorted(V2_TYPES)))
    values = typed_values(datatype)
    doc: dict = {}
    if draw(st.booleans()):
        data = draw(st.lists(values, min_size=n * width, max_size=n * width))
        if draw(st.booleans()):
            data = [data[i * width:(i + 1) * width] for i in range(n)]
        doc["inputs"] = [{"name": draw(st.sampled_from(["input-0", "x", "features"])),
                          "shape": [n, width], "datatype": datatype, "data": data}]
    else:
        columns = draw(st.lists(st.integers(0, width - 1), min_size=1, max_size=width, unique=True))
        doc["inputs"] = [{"name": f"#{j}", "shape": [n] if draw(st.booleans()) else [n, 1],
                          "datatype": datatype,
                          "data": draw(st.lists(values, min_size=n, max_size=n))} for j in columns]
    if draw(st.booleans()):
        doc["id"] = draw(st.text(max_size=20))
    opt = draw(options)
    if opt is not None:
        doc["parameters"] = {**opt, "other": draw(st.integers(-9, 9))}
    return model, doc


def with_feature_names(oracle: Oracle, model: str, doc: dict) -> dict:
    names = oracle.features[model]
    if "records" in doc:
        doc["records"] = [{names[int(k.rsplit("_", 1)[1])]: v for k, v in rec.items()}
                          for rec in doc["records"]]
    for tensor in doc.get("inputs", ()):
        if tensor["name"].startswith("#"):
            tensor["name"] = names[int(tensor["name"][1:])]
    return doc


RAW_TOKENS = [b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1e-999",
              b"123456789012345678901234567890", b"-123456789012345678901234567890",
              b"0x10", b"01", b"+1", b".5", b"1.", b"-", b"tru", b"nul", b"\"\\ud800\"",
              b"\"\\u0000\"", b"\"\xff\xfe\"", b"\"\xc3\x28\"", b"'single'", b"undefined",
              b"[1,]", b"{\"a\":1,}", b"/*c*/1"]
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12),
                    st.sampled_from(RAW_TOKENS).map(Raw))
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=6),
                               st.lists(st.tuples(st.text(max_size=8), children), max_size=5).map(Pairs)),
    max_leaves=25)
keys = st.sampled_from(["rows", "records", "options", "inputs", "parameters", "id", "outputs",
                        "raw_score", "", "ROWS", "rows "])


@st.composite
def mutated_bodies(draw, oracle: Oracle):
    """Bytes near the formats: a valid body with one mutation, or a random document."""
    kind = draw(st.sampled_from(["mutate-valid", "random-doc", "deep", "duplicate-keys",
                                 "truncated", "bytes"]))
    model, doc = draw(st.one_of(score_bodies(), v2_bodies()))
    fmt = "v2" if "inputs" in doc else "score"
    # A copy: _mutate changes it in place, and sampled_from hands out the same objects.
    doc = with_feature_names(oracle, model, copy.deepcopy(doc))
    if kind == "mutate-valid":
        body = _mutate(draw, doc)
    elif kind == "random-doc":
        body = emit(Pairs(draw(st.lists(st.tuples(keys, json_like), min_size=0, max_size=4))))
    elif kind == "deep":
        depth = draw(st.sampled_from([10, 100, 1000, 1025, 5000, 50_000]))
        key = draw(st.sampled_from(["rows", "records", "inputs"]))
        open_, close = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        body = b'{"' + key.encode() + b'":' + open_ * depth + b"1" + close * depth + b"}"
    elif kind == "duplicate-keys":
        pairs = Pairs(doc.items())
        pairs.append((draw(st.sampled_from(list(doc))), draw(json_like)))
        body = emit(pairs)
    elif kind == "truncated":
        full = emit(doc)
        body = full[:draw(st.integers(0, max(0, len(full) - 1)))]
    else:
        body = draw(st.binary(max_size=200))
    return model, fmt, body, kind


def _mutate(draw, doc) -> bytes:
    """Replace one value somewhere in ``doc`` by an odd one, then serialize."""
    paths: list[tuple] = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node[:8]):
                walk(v, path + (i,))
    walk(doc, ())
    path = draw(st.sampled_from(paths[1:] or [()]))
    replacement = draw(json_like)
    if not path:
        return emit(replacement)
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = replacement
    return emit(doc)


CONTENT_TYPES = [None, "application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
                 "application/vnd.api+json", "text/plain", "text/csv", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "application/octet-stream", "", "json",
                 "application/json\x7f", "application/jsonx", ";", "application/json;;;"]
ODD_NAMES = ["churn", "..", ".", "%", "churn%00", "a" * 256, "a" * 257, "churn.txt", "churn.txt.gz",
             "CHURN", "chürn", "churn\n", " churn", "churn ", "-churn", "_x", "ch/urn", "\\churn",
             "churn?x=1", "churn#x", "💥", "churn;drop", "price.txt", "segment..txt", "0", "nul",
             "con", "a.b.c-d_e", "%2e%2e", "..%2f..%2fetc"]


# -- tests --------------------------------------------------------------------------------

def test_valid_bodies_score_exactly_like_booster_predict(client, oracle, request):
    """Every body inside the formats (extreme numbers, every V2 datatype and layout,
    options) is answered 200 with Booster.predict's numbers."""
    tally = Tally()

    @hypothesis_settings(120)
    @given(st.one_of(score_bodies(), v2_bodies()))
    def run(case):
        model, doc = case
        fmt = "v2" if "inputs" in doc else "score"
        body = orjson.dumps(with_feature_names(oracle, model, copy.deepcopy(doc)))
        check(post(client, fmt, model, body), tally, oracle=oracle, name=model, body=body,
              fmt=fmt, judged=True)

    run()
    report(request, "fuzz_http_valid_bodies", **tally.figures())
    assert tally.accepted > 0.5 * tally.tried


def test_bodies_outside_the_schema_are_4xx_with_a_json_error(client, oracle, request):
    tally = Tally()
    kinds: Counter[str] = Counter()

    @hypothesis_settings(300)
    @given(mutated_bodies(oracle), st.sampled_from(["churn", "price", "segment", "nope"]))
    def run(case, name):
        model, fmt, body, kind = case
        kinds[kind] += 1
        target = model if name != "nope" else name
        check(post(client, fmt, target, body), tally, oracle=oracle, name=target, body=body,
              fmt=fmt, judged=len(body) <= MAX_BYTES)

    run()
    report(request, "fuzz_http_outside_schema", kinds=dict(kinds), **tally.figures())


def test_content_types_sizes_and_odd_routes(client, host, oracle, request):
    tally = Tally()
    valid = orjson.dumps({"rows": [[1, 2, 3, 4, 5, 6]]})

    @hypothesis_settings(150)
    @given(st.sampled_from(CONTENT_TYPES), st.one_of(st.sampled_from(ODD_NAMES), st.text(max_size=40)),
           st.sampled_from(["score", "v2"]), st.sampled_from([None, {"x-request-id": "a" * 200},
                                                              {"x-request-id": "ok-1"},
                                                              {"x-scorefn-variant": "x"},
                                                              {"traceparent": "00-zz"}]))
    def run(content_type, name, fmt, headers):
        body = valid if fmt == "score" else orjson.dumps(
            {"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]}]})
        response = post(client, fmt, name, body, content_type, headers)
        check(response, tally)
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if response.status_code == 200:
            assert not media or media == "application/json" or media.endswith("+json")
        if headers and headers.get("x-request-id") == "ok-1" and response.content:
            assert response.headers["x-request-id"] == "ok-1"

    run()
    # Sizes: just under, at and over MAX_REQUEST_BYTES; rows at and over MAX_ROWS_PER_REQUEST.
    for size in (MAX_BYTES - 1, MAX_BYTES, MAX_BYTES + 1, 3 * MAX_BYTES):
        body = b'{"rows": [[1,2,3,4,5,6]]}'
        body = body[:-1] + b" " * (size - len(body)) + b"}"
        response = post(client, "score", "price", body)
        check(response, tally)
        assert response.status_code == (200 if size <= MAX_BYTES else 413)
    for n, status in ((MAX_ROWS, 200), (MAX_ROWS + 1, 413)):
        body = orjson.dumps({"rows": [[1, 2, 3, 4, 5, 6]] * n})
        check(post(client, "score", "price", body), tally, oracle=oracle, name="price", body=body,
              judged=status == 200)
        body = orjson.dumps({"inputs": [{"name": "x", "shape": [n, 6], "datatype": "FP64",
                                         "data": [1.0] * (6 * n)}]})
        check(post(client, "v2", "price", body), tally, oracle=oracle, name="price", body=body,
              fmt="v2", judged=status == 200)
        assert tally.statuses[status]
    # Other methods and routes: the host's own empty 404.
    for method, path in (("GET", "/api/score/churn"), ("PUT", "/api/score/churn"),
                         ("DELETE", "/api/v2/models/churn"), ("POST", "/api/v2/health/live"),
                         ("GET", "/api/score"), ("GET", "/api/score/churn/extra"), ("GET", "/"),
                         ("GET", "/api/%ff"), ("PATCH", "/api/endpoints")):
        check(client.request(method, path), tally)
    report(request, "fuzz_http_content_types_sizes_routes", **tally.figures())


@pytest.mark.parametrize("datatype,data,code", [
    ("FP64", [[1, 2, 3, 4, 5, 6], 7], "non_numeric_value"),
    ("FP64", [[1, 2, 3, 4, 5, 6], None], "non_numeric_value"),
    (["FP64"], [1, 2, 3, 4, 5, 6] * 2, "unsupported_datatype"),
    ({"t": "FP64"}, [1, 2, 3, 4, 5, 6] * 2, "unsupported_datatype"),
])
def test_v2_bodies_the_fuzzer_found_are_400s(client, datatype, data, code):
    """Found by the fuzzer (both were 500 internal_error, a TypeError in shared/payloads/v2.py):
    ``data`` whose first item is a list but a later one a number or null, and a ``datatype``
    that is a list or an object (unhashable)."""
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 6], "datatype": datatype, "data": data}]})
    response = post(client, "v2", "price", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == code


def test_schemathesis_against_the_openapi_document(host, oracle, request):
    """Requests generated from score_function/openapi.json by schemathesis, positive and
    negative, for every operation (and with the demo model names for the scoring routes);
    the document's statuses, content types, headers and schemas are checked, plus the
    oracle on every 200."""
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import load_all_checks

    load_all_checks()
    from schemathesis import checks as sc

    schema = schemathesis.openapi.from_dict(OPENAPI)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Each operation its own share of the examples: drawn from one pool, hypothesis starved
    # the operations listed last (one of 11 got no request at all in a run).
    per_op_strategies = []
    for op in operations:
        strategies = [op.as_strategy(generation_mode=mode)
                      for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
        if "{name}" in op.path:
            for model in MODELS:
                strategies.append(op.as_strategy(generation_mode=GenerationMode.POSITIVE,
                                                 path_parameters={"name": model}))
        per_op_strategies.append(st.one_of(strategies))
    tally = Tally()
    per_operation: Counter[str] = Counter()
    base_url = f"{host.url}/api"

    def predictions_match(ctx, response, case):
        if response.status_code != 200 or case.operation.method.upper() != "POST":
            return None
        fmt = "v2" if case.operation.path.endswith("/infer") else "score"
        body = orjson.dumps(case.body)
        expected = oracle.predict(case.path_parameters["name"], orjson.loads(body), fmt)
        got = predictions_of(orjson.loads(response.content), fmt)
        assert np.array_equal(got, expected), "predictions differ from Booster.predict"
        tally.accepted += 1
        return None

    def negative_data_rejected(ctx, response, case):
        # 413 is this API's answer to a body over MAX_REQUEST_BYTES (negative data too, often
        # a huge one); schemathesis' default list of rejections leaves it out.
        if response.status_code == 413:
            return None
        return sc.negative_data_rejection(ctx, response, case)

    checks = [sc.not_a_server_error, sc.status_code_conformance, sc.content_type_conformance,
              sc.response_headers_conformance, sc.response_schema_conformance,
              negative_data_rejected, predictions_match]

    def call(case):
        response = case.call(base_url=base_url, headers={"x-functions-key": MASTER_KEY},
                             timeout=TIMEOUT)
        tally.tried += 1
        tally.statuses[response.status_code] += 1
        per_operation[case.operation.label] += 1
        case.validate_response(response, checks=checks, headers={"x-functions-key": MASTER_KEY})
        if response.status_code >= 400 and response.content:
            tally.codes[response.json()["error"]] += 1

    for strategy in per_op_strategies:
        hypothesis_settings(max(20, 400 // len(per_op_strategies)))(given(strategy)(call))()
    report(request, "fuzz_http_schemathesis", operations=len(operations),
           per_operation=dict(per_operation), **tally.figures())
    assert len(per_operation) == len(operations)
