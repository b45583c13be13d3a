"""Fuzzing the HTTP API on the local Functions host (devhost) with the demo models in Azurite.

Properties, for every input: never a 5xx; every error body is ``{"error": code, "message"}``
with a documented code and the status its type has (the only bodies that are not JSON are
the host's own empty 401 and 404, and Kestrel's empty 400 for a path holding ``%00``); never a
hang (a 30 s client timeout fails the test); every accepted body's predictions equal
``lightgbm.Booster.predict`` on the same rows (an oracle in tests/hardening/support.py, written
independently of shared/payloads), and every body that oracle would score is accepted.

- schema-driven: schemathesis generates requests from score_function/openapi.json
  (positive and negative data, every operation) and checks status codes, content types,
  headers and bodies against the document;
- outside the schema: hypothesis generates valid bodies (extreme numbers, every V2 datatype
  and tensor layout, options), then mutated ones: deep nesting, NaN/Infinity and out-of-range
  literals, wrong types, unicode and invalid UTF-8, duplicate keys, truncated and oversized
  bodies, wrong content types, odd characters in routes;
- models as trained (docs/models.md): besides churn, price and segment the host serves
  ``plans`` (pandas category columns) and ``cancer`` (real data), both with spaced column
  names. Bodies name features as stored, as trained or a mix, and give category values
  (seen, unseen, null, of the wrong type) in records and BYTES tensors, codes or values in
  ``rows`` and the V2 matrix, integers at their datatype's edges; targeted faults (a feature
  named twice, a BYTES tensor for a numeric feature ...) and the mutations above apply to
  them too. The oracle scores category values as ``Booster.predict`` scores a DataFrame of
  ``pd.Categorical`` columns.

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
from tests.hardening.support import (
    FUNCTION_KEY,
    MASTER_KEY,
    MODELS,
    ROOT,
    NotScorable,
    Oracle,
    Pairs,
    Raw,
    emit,
    host_env,
    hypothesis_settings,
    make_models_container,
    predictions_of,
    report,
)

pytestmark = pytest.mark.hardening

MAX_BYTES = 200_000
MAX_ROWS = 500
# The hardening models, plus two trained from DataFrames as data scientists do: ``plans``
# (pandas category columns, names with spaces) and ``cancer`` (real data, 30 spaced names).
HTTP_MODELS = (*MODELS, "plans", "cancer")
OPENAPI = json.loads((ROOT / "score_function" / "openapi.json").read_text())
SCHEMAS = OPENAPI["components"]["schemas"]
CODES_BY_STATUS = {int(k[len("Error"):]): set(v["allOf"][1]["properties"]["error"]["enum"])
                   for k, v in SCHEMAS.items() if k.startswith("Error") and k[5:].isdigit()}
TIMEOUT = 30.0
PARSER_400 = b"Invalid HTTP request received."  # uvicorn's answer to what its parser refuses


@pytest.fixture(scope="module")
def models(azurite, demo_models):
    container = make_models_container(azurite.connection_string, demo_models, HTTP_MODELS)
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
    return Oracle.of(demo_models, MAX_ROWS, HTTP_MODELS)


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
        # The host's own answers, before the app: 401, 404, and Kestrel's 400 for a path
        # holding %00 (devhost/routing.py).
        kestrel_400 = response.status_code == 400 and b"%00" in response.request.url.raw_path
        assert (response.status_code in (401, 404) or kestrel_400) \
            and "x-request-id" not in response.headers, where
        return
    if response.status_code == 400 and response.content == PARSER_400:
        # The local host's HTTP parser (httptools) refusing the request before any function
        # runs, as the real host's web server refuses a malformed one: never the app's answer.
        assert "x-request-id" not in response.headers, where
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
        assert response.status_code != 200, \
            f"{where}: accepted a body the formats refuse ({exc}): {body[:300]!r}"
        return
    assert response.status_code == 200, f"{where}: refused a valid body: {doc} {body[:300]!r}"
    got = predictions_of(doc, fmt)
    assert got.shape == expected.shape and np.array_equal(got, expected, equal_nan=True), \
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
#
# The strategies read the served models' features and categories from the oracle (which
# has them from lightgbm): bodies name features as stored (``mean_radius``), as trained
# (``mean radius``) or a mix, and give categorical features their values (seen, unseen,
# null), codes where codes are read (``rows``, the V2 matrix) and BYTES tensors. With
# ``faults``, one body in two carries one targeted fault (a category value of the wrong
# type, a string where a number goes, one feature named twice, a near-miss name, a BYTES
# tensor for a numeric feature or as the matrix, a numeric tensor for string categories,
# an integer at its datatype's edge ...); the oracle says which of them must be refused.

numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1),
    st.sampled_from([0, 0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                     -1.7976931348623157e308, 1e-300, 2 ** 53 + 1, 0.1, 1e15, 12, 70.5]))
cells = st.one_of(st.none(), numbers)
options = st.sampled_from([None, {}, {"raw_score": True}, {"pred_contrib": True},
                           {"raw_score": False}, {"raw_score": False, "pred_contrib": False}])
# Strings near the plans model's categories that are not among them (pandas: missing).
UNSEEN = ["", "Month", "month ", " month", "MONTH", "two year", "two-year", "bank_transfer",
          "Bank transfer", "cheque", "0", "1", "-1", "null", "NaN", "None", "true", "é", "💥",
          "month\x00", "year\n", "check\u200b"]
# Names that mean no feature (a plain typo, a case change, another separator ...).
NEAR_MISSES = [lambda n: n + "  ", lambda n: " " + n, lambda n: n + " ", lambda n: n + "\t",
               lambda n: n.replace("_", "-").replace(" ", "-") + "-", str.upper, lambda n: "x" + n,
               lambda n: n.replace("_", "  ").replace(" ", "  ") + "x"]


def category_values(categories: list) -> st.SearchStrategy:
    """A categorical feature's value as a DataFrame column would hold it: mostly one of
    the categories, else an unseen value or null."""
    seen = st.sampled_from(categories)
    if all(type(c) is str for c in categories):
        unseen = st.one_of(st.sampled_from(UNSEEN), st.text(max_size=12))
    else:
        unseen = st.one_of(st.integers(-5, 100), st.floats(allow_nan=False, allow_infinity=False))
    return st.one_of(seen, seen, seen, unseen, st.none())


def category_codes(categories: list) -> st.SearchStrategy:
    k = len(categories)
    return st.one_of(st.integers(-1, k),
                     st.sampled_from([0.0, 1.0, float(k - 1), float(k), 2.5, -0.5, -1.0, 1e9,
                                      -1e9, 2 ** 31, -(2 ** 31) - 1, 1e300]))


def wrong_category_values(categories: list) -> st.SearchStrategy:
    """Values a categorical feature refuses where it takes values (records, its own tensor):
    of another type than its categories'."""
    other = st.one_of(st.booleans(), st.lists(st.sampled_from(categories), max_size=2),
                      st.dictionaries(st.sampled_from(["a", "month"]), st.integers(0, 3), max_size=1))
    if all(type(c) is str for c in categories):
        return st.one_of(category_codes(categories), st.floats(allow_nan=False), other)
    return st.one_of(st.sampled_from(UNSEEN[1:]), other)


def row_cell(categories: list | None) -> st.SearchStrategy:
    """A ``rows`` cell: a number, or for a categorical feature a code or a value."""
    if categories is None:
        return cells
    return st.one_of(category_codes(categories), category_values(categories), st.none())


@st.composite
def spellings(draw, names: list[str]) -> list[str]:
    """How a body names each feature: as stored, as trained (every '_' a space), or a mix
    (each '_' one or the other: all of them resolve)."""
    style = draw(st.sampled_from(["stored", "trained", "mixed"]))
    if style == "stored":
        return list(names)
    if style == "trained":
        return [n.replace("_", " ") for n in names]
    out = []
    for n in names:
        parts = n.split("_")
        out.append(parts[0] + "".join(draw(st.sampled_from("_ ")) + p for p in parts[1:]))
    return out


def model_info(oracle: Oracle, model: str) -> tuple[list[str], dict[int, list]]:
    return oracle.features[model], oracle.categories.get(model, {})


@st.composite
def score_bodies(draw, oracle: Oracle, models=HTTP_MODELS, faults: bool = False):
    fault = draw(st.sampled_from(SCORE_FAULTS)) if faults and draw(st.booleans()) else None
    model = draw(st.sampled_from(with_categories(oracle, models) if fault == "category-type"
                                 else models))
    names, cats = model_info(oracle, model)
    width = len(names)
    n = draw(st.one_of(st.integers(1, 4), st.integers(1, max(1, 480 // width))))
    doc: dict = {}
    if fault == "row-width" or fault not in RECORD_FAULTS and draw(st.booleans()):
        doc["rows"] = [[draw(row_cell(cats.get(j))) for j in range(width)] for _ in range(n)]
    else:
        sent = draw(spellings(names))
        keep = draw(st.lists(st.booleans(), min_size=width, max_size=width))
        records = []
        for _ in range(n):
            rec = {}
            for j in range(width):
                v = draw(category_values(cats[j]) if j in cats else cells)
                if keep[j] or v is not None:
                    rec[sent[j]] = v
            records.append(rec)
        doc["records"] = records
    opt = draw(options)
    if opt is not None:
        doc["options"] = opt
    if fault is not None:
        fault = _score_fault(draw, fault, names, cats, doc)
    return model, doc, fault


def with_categories(oracle: Oracle, models) -> list[str]:
    """The models with categorical features (all of them if none has any)."""
    return [m for m in models if oracle.categories.get(m)] or list(models)


# "all-trained-names" is no fault: every key spelled as trained.
RECORD_FAULTS = ("named-twice", "near-miss-name", "all-trained-names")
SCORE_FAULTS = ["category-type", "string-for-number", "row-width", *RECORD_FAULTS]


def _score_fault(draw, fault: str, names: list[str], cats: dict[int, list], doc: dict) -> str:
    """One fault in a score body, in place; returns what it did."""
    table = doc.get("rows") or doc["records"]
    i = draw(st.integers(0, len(table) - 1))
    numeric = [j for j in range(len(names)) if j not in cats]
    if fault == "category-type" and not cats:
        fault = "string-for-number"
    if "rows" in doc:
        if fault == "category-type":
            j = draw(st.sampled_from(sorted(cats)))
            table[i][j] = draw(st.one_of(st.booleans(), st.just([]), st.just({}),
                                         st.lists(st.sampled_from(cats[j]), min_size=1, max_size=2)))
        elif fault == "string-for-number":
            j = draw(st.sampled_from(numeric))
            table[i][j] = draw(st.one_of(st.sampled_from(UNSEEN), st.sampled_from(
                [c for v in cats.values() for c in v] or ["x"])))
        else:
            row = table[i]
            table[i] = row[:-1] if draw(st.booleans()) else row + [draw(cells)]
        return fault
    rec = table[i]
    if fault == "category-type":
        j = draw(st.sampled_from(sorted(cats)))
        rec[_key_of(rec, names[j])] = draw(wrong_category_values(cats[j]))
    elif fault == "string-for-number":
        j = draw(st.sampled_from(numeric))
        rec[_key_of(rec, names[j])] = draw(st.one_of(st.sampled_from(UNSEEN), st.text(max_size=8)))
    elif fault == "named-twice":
        spaced = [j for j, n in enumerate(names) if "_" in n]
        if not spaced:
            return "none"
        j = draw(st.sampled_from(spaced))
        rec[names[j]] = draw(category_values(cats[j]) if j in cats else cells)
        rec[names[j].replace("_", " ")] = draw(category_values(cats[j]) if j in cats else cells)
    elif fault == "near-miss-name":
        j = draw(st.integers(0, len(names) - 1))
        rec[draw(st.sampled_from(NEAR_MISSES))(names[j].replace("_", " "))] = draw(cells)
    else:  # not a fault: every key of every record as trained
        for k, rec in enumerate(table):
            table[k] = {key.replace("_", " "): v for key, v in rec.items()}
    return fault


def _key_of(rec: dict, stored: str) -> str:
    """The key naming feature ``stored`` in ``rec`` (its stored name if none does)."""
    return next((k for k in rec if k.replace(" ", "_") == stored), stored)


V2_TYPES = {"FP64": None, "FP32": None, "FP16": None, "INT8": 8, "INT16": 16, "INT32": 32,
            "INT64": 64, "UINT8": -8, "UINT16": -16, "UINT32": -32, "UINT64": -64}


def int_range(datatype: str) -> tuple[int, int]:
    bits = V2_TYPES[datatype]
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if bits > 0 else (0, 2 ** (-bits) - 1)


def typed_values(datatype: str):
    bits = V2_TYPES[datatype]
    if bits is None:
        if datatype == "FP16":
            return st.one_of(st.none(), st.floats(-65504, 65504))
        if datatype == "FP32":
            return st.one_of(st.none(), st.floats(-3.4e38, 3.4e38))
        return cells
    lo, hi = int_range(datatype)
    return st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0, 1]))


def typed_codes(datatype: str, categories: list) -> st.SearchStrategy:
    """Category codes in a numeric (matrix) tensor of ``datatype``."""
    if V2_TYPES[datatype] is None:
        return st.one_of(category_codes(categories), st.none())
    lo, hi = int_range(datatype)
    return st.one_of(st.integers(max(lo, -1), len(categories)), typed_values(datatype))


def integer_edges(datatype: str) -> list:
    """Values at an integer datatype's edges, as ints and as floats (float(2**63-1) is
    2**63: not INT64)."""
    lo, hi = int_range(datatype)
    return [lo, hi, lo - 1, hi + 1, float(lo), float(hi), float(hi + 1), 1.5, 2 ** 64, -(2 ** 63) - 1]


@st.composite
def v2_bodies(draw, oracle: Oracle, models=HTTP_MODELS, faults: bool = False):
    fault = draw(st.sampled_from(V2_FAULTS)) if faults and draw(st.booleans()) else None
    model = draw(st.sampled_from(with_categories(oracle, models) if fault in CATEGORY_FAULTS
                                 else models))
    names, cats = model_info(oracle, model)
    width = len(names)
    n = draw(st.integers(1, max(1, min(20, 240 // width))))
    datatype = draw(st.sampled_from(sorted(V2_TYPES)))
    doc: dict = {}
    if fault == "bytes-matrix" or fault in (None, "integer-edge") and draw(st.booleans()):
        data = [draw(typed_codes(datatype, cats[j]) if j in cats else typed_values(datatype))
                for _ in range(n) for j in range(width)]
        if draw(st.booleans()):
            data = [data[i * width:(i + 1) * width] for i in range(n)]
        doc["inputs"] = [{"name": draw(st.sampled_from(["input-0", "x", "features"])),
                          "shape": [n, width], "datatype": datatype, "data": data}]
    else:
        sent = draw(spellings(names))
        columns = draw(st.lists(st.integers(0, width - 1), min_size=1, max_size=width, unique=True))
        # the feature the fault needs: a categorical one, a numeric one, one with a '_'
        need = {"bytes-for-number": [j for j in range(width) if j not in cats],
                "named-twice": [j for j, name in enumerate(names) if "_" in name]}.get(
                    fault, sorted(cats) if fault in CATEGORY_FAULTS else [])
        if need and not set(columns) & set(need):
            columns.append(draw(st.sampled_from(need)))
        doc["inputs"] = []
        for j in columns:
            if j in cats:
                tensor_type, values = "BYTES", category_values(cats[j])
            else:
                tensor_type = draw(st.sampled_from([datatype, datatype, *sorted(V2_TYPES)]))
                values = typed_values(tensor_type)
            shape = [n] if draw(st.booleans()) else [n, 1]
            data = draw(st.lists(values, min_size=n, max_size=n))
            if draw(st.integers(0, 3)) == 0:
                data = [[v] for v in data]
            doc["inputs"].append({"name": sent[j], "shape": shape, "datatype": tensor_type,
                                  "data": data})
    if draw(st.booleans()):
        doc["id"] = draw(st.text(max_size=20))
    opt = draw(options)
    if opt is not None:
        doc["parameters"] = {**opt, "other": draw(st.integers(-9, 9))}
    if fault is not None:
        fault = _v2_fault(draw, fault, names, cats, doc)
    return model, doc, fault


CATEGORY_FAULTS = ("numbers-for-categories", "bytes-not-strings")
V2_FAULTS = ["bytes-for-number", "named-twice", "near-miss-name", "bytes-matrix", "integer-edge",
             *CATEGORY_FAULTS]


def _v2_fault(draw, fault: str, names: list[str], cats: dict[int, list], doc: dict) -> str:
    """One fault in a V2 body, in place; returns what it did."""
    inputs = doc["inputs"]
    k = draw(st.integers(0, len(inputs) - 1))
    tensor = inputs[k]
    n = tensor["shape"][0]
    matrix = len(inputs) == 1 and tensor["name"] not in names and \
        tensor["name"].replace(" ", "_") not in names
    strings = st.one_of(st.none(), st.sampled_from(UNSEEN),
                        st.sampled_from([c for v in cats.values() for c in v] or ["x"]))
    if fault == "bytes-matrix":
        tensor["datatype"] = "BYTES"
        tensor["data"] = draw(st.lists(strings, min_size=len(_flat(tensor["data"])),
                                       max_size=len(_flat(tensor["data"]))))
        return "bytes-matrix"
    if fault == "integer-edge":
        datatype = draw(st.sampled_from([t for t, b in V2_TYPES.items() if b is not None]))
        numeric = [t for t in inputs if t["datatype"] != "BYTES"]
        if not numeric:
            return "none"
        tensor = draw(st.sampled_from(numeric))
        tensor["datatype"] = datatype
        flat = _flat(tensor["data"])
        lo, hi = int_range(datatype)
        flat = [v if type(v) is int and lo <= v <= hi else 0 for v in flat]
        if flat:
            flat[draw(st.integers(0, len(flat) - 1))] = draw(st.sampled_from(integer_edges(datatype)))
        tensor["data"] = flat
        return fault
    if matrix:
        return "none"  # the other faults are about features' own tensors
    if fault == "bytes-for-number":
        numeric = [t for t in inputs if t["datatype"] != "BYTES"]
        if not numeric:
            return "none"
        tensor = draw(st.sampled_from(numeric))
        tensor["datatype"] = "BYTES"
        tensor["data"] = draw(st.lists(strings, min_size=n, max_size=n))
    elif fault == "numbers-for-categories":
        bytes_ = [t for t in inputs if t["datatype"] == "BYTES"]
        if not bytes_:
            return "none"
        tensor = draw(st.sampled_from(bytes_))
        tensor["datatype"] = draw(st.sampled_from(["FP64", "INT64", "FP32", "UINT8"]))
        tensor["data"] = draw(st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=n, max_size=n))
    elif fault == "bytes-not-strings":  # a category value of another type
        bytes_ = [t for t in inputs if t["datatype"] == "BYTES"]
        if not bytes_ or n == 0:
            return "none"
        tensor = draw(st.sampled_from(bytes_))
        flat = _flat(tensor["data"])
        j = names.index(tensor["name"].replace(" ", "_"))
        flat[draw(st.integers(0, n - 1))] = draw(wrong_category_values(cats[j]))
        tensor["data"] = flat
    elif fault == "named-twice":
        spaced = [t for t in inputs if "_" in t["name"].replace(" ", "_")]
        if not spaced:
            return "none"
        twin = copy.deepcopy(draw(st.sampled_from(spaced)))
        stored = twin["name"].replace(" ", "_")
        twin["name"] = stored if twin["name"] != stored else stored.replace("_", " ")
        inputs.append(twin)
    elif fault == "near-miss-name":
        tensor["name"] = draw(st.sampled_from(NEAR_MISSES))(tensor["name"])
    return fault


def _flat(data: list) -> list:
    return [v for d in data for v in d] if data and isinstance(data[0], list) else list(data)


RAW_TOKENS = [b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1e-999",
              b"123456789012345678901234567890", b"-123456789012345678901234567890",
              b"0x10", b"01", b"+1", b".5", b"1.", b"-", b"tru", b"nul", b"\"\\ud800\"",
              b"\"\\u0000\"", b"\"\xff\xfe\"", b"\"\xc3\x28\"", b"'single'", b"undefined",
              b"[1,]", b"{\"a\":1,}", b"/*c*/1"]
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12),
                    st.sampled_from(UNSEEN + ["month", "two_year", "check", "bank transfer",
                                              "BYTES", "INT64", "mean radius", "mean_radius"]),
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
    """Bytes near the formats: a body (names as stored or trained, category values, BYTES
    tensors, perhaps a fault) with one mutation, or a random document."""
    kind = draw(st.sampled_from(["mutate-valid", "mutate-cell", "rename-feature", "random-doc",
                                 "deep", "duplicate-keys", "truncated", "bytes"]))
    model, doc, _ = draw(st.one_of(score_bodies(oracle, faults=True), v2_bodies(oracle, faults=True)))
    fmt = "v2" if "inputs" in doc else "score"
    # A copy: _mutate changes it in place, and sampled_from hands out the same objects.
    doc = copy.deepcopy(doc)
    if kind == "mutate-valid":
        body = _mutate(draw, doc)
    elif kind == "mutate-cell":
        words = sorted({str(c) for v in oracle.categories.values() for cs in v.values() for c in cs})
        body = _mutate(draw, doc, st.one_of(cells, st.sampled_from(words or ["x"]),
                                            st.sampled_from(UNSEEN), st.booleans(),
                                            st.sampled_from([[], {}, [1], ["month"], "1.5"]),
                                            st.sampled_from(RAW_TOKENS).map(Raw)))
    elif kind == "rename-feature":
        body = _rename(draw, doc, oracle.features[model])
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


def _mutate(draw, doc, cell_values: st.SearchStrategy | None = None) -> bytes:
    """Replace one value somewhere in ``doc`` by an odd one, then serialize. With
    ``cell_values``, one cell (a value of ``rows``, ``records`` or a tensor's ``data``)
    by one of those."""
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
    if cell_values is not None:
        leaves = [p for p in paths if len(p) >= 3 and p[0] in ("rows", "records")
                  or len(p) >= 4 and p[2] == "data"]
        paths = [()] + (leaves or paths[1:])
    path = draw(st.sampled_from(paths[1:] or [()]))
    replacement = draw(cell_values if cell_values is not None else json_like)
    if not path:
        return emit(replacement)
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = replacement
    return emit(doc)


def _rename(draw, doc, names: list[str]) -> bytes:
    """Rename one feature in ``doc`` (a record's key or a tensor's name): to its other
    spelling, another feature's name (perhaps one the record already has: a duplicate key)
    or a near miss; then serialize."""
    owners: list = [rec for rec in doc.get("records", ())[:8]] + list(doc.get("inputs", ()))
    owners = [o for o in owners if isinstance(o, dict) and (o if "records" in doc else o.get("name"))]
    if not owners:
        return emit(doc)
    owner = draw(st.sampled_from(owners))
    old = draw(st.sampled_from(sorted(owner))) if "records" in doc else owner["name"]
    new = draw(st.one_of(st.sampled_from([old.replace("_", " "), old.replace(" ", "_")]),
                         st.sampled_from(names), st.sampled_from(names).map(lambda n: n.replace("_", " ")),
                         st.sampled_from(NEAR_MISSES).map(lambda f: f(old))))
    if "records" not in doc:
        owner["name"] = new
        return emit(doc)
    i = doc["records"].index(owner)
    doc["records"][i] = Pairs((new if k == old else k, v) for k, v in owner.items())
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
    @given(st.one_of(score_bodies(oracle), v2_bodies(oracle)))
    def run(case):
        model, doc, _ = case
        fmt = "v2" if "inputs" in doc else "score"
        body = orjson.dumps(doc)
        check(post(client, fmt, model, body), tally, oracle=oracle, name=model, body=body,
              fmt=fmt, judged=True)

    run()
    report(request, "fuzz_http_valid_bodies", **tally.figures())
    assert tally.accepted > 0.5 * tally.tried


def test_names_as_trained_and_category_values_score_like_a_dataframe(client, oracle, request):
    """Bodies for the DataFrame models (and churn, whose stored names have '_' too): names
    as stored, as trained or mixed, category values seen, unseen and null, codes in rows
    and the V2 matrix, BYTES tensors; one in two with one targeted fault. Each is judged by
    the oracle (Booster.predict on a DataFrame of pd.Categorical columns)."""
    tally = Tally()
    faults: Counter[str] = Counter()
    refused: Counter[str] = Counter()

    @hypothesis_settings(200)
    @given(st.one_of(score_bodies(oracle, ("plans", "cancer", "churn"), faults=True),
                     v2_bodies(oracle, ("plans", "cancer", "churn"), faults=True)))
    def run(case):
        model, doc, fault = case
        faults[fault or "none"] += 1
        fmt = "v2" if "inputs" in doc else "score"
        body = emit(doc)
        response = post(client, fmt, model, body)
        check(response, tally, oracle=oracle, name=model, body=body, fmt=fmt, judged=True)
        if response.status_code >= 400:
            refused[f"{fault}: {response.json()['error']}"] += 1

    run()
    report(request, "fuzz_http_names_and_categories", faults=dict(faults), refused=dict(refused),
           **tally.figures())
    assert tally.accepted > 0.25 * tally.tried


PLANS_RECORD = {"tenure months": 3, "monthly charges": 89.9, "contract": "month",
                "payment method": "check", "support calls": 2}


def _v2(*tensors) -> dict:
    return {"inputs": [{"name": n, "shape": [len(d)], "datatype": t, "data": d} for n, t, d in tensors]}


@pytest.mark.parametrize("model,fmt,doc,status,code", [
    ("plans", "score", {"records": [PLANS_RECORD]}, 200, None),
    ("plans", "score", {"records": [{k.replace(" ", "_"): v for k, v in PLANS_RECORD.items()}]}, 200, None),
    ("plans", "score", {"records": [{**PLANS_RECORD, "contract": "weekly"}, {"contract": None}, {}]},
     200, None),
    ("plans", "score", {"records": [{**PLANS_RECORD, "tenure_months": 3}]}, 400, "ambiguous_feature"),
    ("plans", "score", {"records": [{**PLANS_RECORD, "contract": 0}]}, 400, "invalid_category_value"),
    ("plans", "score", {"records": [{**PLANS_RECORD, "contract": True}]}, 400, "invalid_category_value"),
    ("plans", "score", {"records": [{**PLANS_RECORD, "contract": ["month"]}]}, 400,
     "invalid_category_value"),
    ("plans", "score", {"records": [{"tenure  months": 3}]}, 400, "unknown_feature"),
    ("plans", "score", {"rows": [[3, 89.9, 0, 2, 2], [3, 89.9, "month", "check", 2],
                                 [3, 89.9, "weekly", None, 2], [3, 89.9, 7, -1, 2]]}, 200, None),
    ("plans", "score", {"rows": [[3, 89.9, True, 2, 2]]}, 400, "invalid_category_value"),
    ("plans", "score", {"rows": [["3", 89.9, 0, 2, 2]]}, 400, "non_numeric_value"),
    ("plans", "v2", _v2(("contract", "BYTES", ["month", "year", "nope", None]),
                        ("payment method", "BYTES", ["check", "card", "voucher", "bank transfer"]),
                        ("tenure_months", "INT64", [1, 2, 3, 4])), 200, None),
    ("plans", "v2", _v2(("tenure months", "BYTES", ["1"])), 400, "unsupported_datatype"),
    ("plans", "v2", _v2(("contract", "FP64", [0.0])), 400, "invalid_category_value"),
    ("plans", "v2", _v2(("tenure months", "FP64", [1.0]), ("tenure_months", "FP64", [1.0])), 400,
     "ambiguous_feature"),
    ("plans", "v2", {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "BYTES",
                                 "data": ["1", "2", "month", "check", "0"]}]}, 400, "unsupported_datatype"),
    ("price", "v2", _v2(("sqft", "INT64", [2 ** 63 - 1])), 200, None),
    ("price", "v2", _v2(("sqft", "INT64", [2 ** 63])), 400, "non_numeric_value"),
    ("price", "v2", _v2(("sqft", "INT64", [float(2 ** 63 - 1)])), 400, "non_numeric_value"),
    ("price", "v2", _v2(("sqft", "INT64", [-float(2 ** 63)])), 400, "non_numeric_value"),
    ("price", "v2", _v2(("sqft", "INT64", [float(2 ** 53 - 1)])), 200, None),
    ("price", "v2", _v2(("sqft", "UINT64", [2 ** 64 - 1])), 200, None),
    ("price", "v2", _v2(("sqft", "UINT64", [2 ** 64])), 400, "non_numeric_value"),
    ("cancer", "score", {"records": [{"mean radius": 17.99, "mean texture": 10.38,
                                      "worst concave points": 0.2654}]}, 200, None),
    ("cancer", "score", {"records": [{"mean radius": 17.99, "mean_radius": 17.99}]}, 400,
     "ambiguous_feature"),
])
def test_names_categories_and_integer_ranges(client, oracle, model, fmt, doc, status, code):
    """The rules of docs/models.md, one body each, checked by the server's answer and the
    oracle's verdict alike."""
    tally = Tally()
    body = emit(doc)
    response = post(client, fmt, model, body)
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["error"] == code, response.text
    check(response, tally, oracle=oracle, name=model, body=body, fmt=fmt, judged=True)


def test_non_finite_predictions_are_read_back():
    doc = {"predictions": [1.5, "Infinity", "-Infinity", "NaN"]}
    assert np.array_equal(predictions_of(doc, "score"),
                          np.array([1.5, np.inf, -np.inf, np.nan]), equal_nan=True)
    v2 = {"outputs": [{"name": "predict", "shape": [2, 2], "datatype": "FP64",
                       "data": [1.0, "Infinity", "NaN", -2.0]}]}
    assert predictions_of(v2, "v2").shape == (2, 2)
    assert np.isposinf(predictions_of(v2, "v2")[0, 1])
    with pytest.raises(KeyError):
        predictions_of({"predictions": ["1.5"]}, "score")


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
        if headers and headers.get("x-request-id") == "ok-1" and response.content \
                and response.content != PARSER_400:
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
            for model in HTTP_MODELS:
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
        assert np.array_equal(got, expected, equal_nan=True), "predictions differ from Booster.predict"
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
