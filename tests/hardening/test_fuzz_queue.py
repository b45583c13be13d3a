"""Fuzzing batch job messages and inputs: random bytes, invalid JSON, valid JSON with bad
fields, oversized messages, references to missing, huge or malformed blobs.

Property: every message ends as a success or a reported failure, with exactly one result
message; none raises (a raise means the queue retries it, for nothing, until poison); none
is lost. Inline successes equal Booster.predict.

- directly: ``BatchJobs.handle`` of a fresh rig (as tests/batch/test_runner.py), many inputs;
- through the local host's queue: a smaller sample, with a fast retry policy (a copy of
  host.json: visibilityTimeout 1 s, maxDequeueCount 3) so that a message the host retried
  would show within the test. A message that is not base64 never reaches the app (the host
  cannot decode it): it is moved to ``<queue>-poison`` on its first receipt, with no result
  message.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devhost.process import DevHost
from shared.batch.messages import JOB_ID_RE
from tests.batch_support import make_rig, sample, to_csv, to_jsonl
from tests.hardening.support import MODELS, ROOT, Oracle, hypothesis_settings, report

pytestmark = pytest.mark.hardening

CHURN = ("tenure_months", "monthly_charges", "support_calls", "contract_months", "age",
         "usage_gb", "late_payments", "discount_pct")
MAX_ROWS = 200
QUEUE_CODES = {"invalid_json", "invalid_payload", "invalid_rows", "invalid_records", "invalid_options",
               "empty_input", "wrong_row_width", "non_numeric_value", "unknown_feature", "too_many_rows",
               "invalid_name", "model_not_found", "invalid_model", "input_not_found", "input_too_large",
               "invalid_blob_name", "invalid_csv", "invalid_format", "invalid_job_id", "invalid_message",
               "message_too_large", "missing_id_column", "output_container_not_found", "unknown_column",
               "invalid_sticky_key", "payload_too_large", "input_changed", "pinned_model_missing",
               "container_not_allowed"}


@pytest.fixture(scope="module")
def rig(azurite, demo_models):
    rig = make_rig(azurite, demo_models, {"BATCH_MAX_INPUT_MB": "1", "MAX_ROWS_PER_REQUEST": str(MAX_ROWS),
                                          "BATCH_CHUNK_ROWS": "64",
                                          "BATCH_ALLOWED_CONTAINERS": "nosuchcontainer"})
    X = sample(8, 300, seed=21)
    rig.upload("inputs/good.csv", to_csv(X, CHURN, [f"c{i}" for i in range(300)], "cid"))
    rig.upload("inputs/good.jsonl", to_jsonl(X, CHURN))
    rig.upload("inputs/huge.csv", b"tenure_months\n" + b"1\n" * (600 * 1024))  # 1.2 MB > 1 MiB
    rig.upload("inputs/empty.csv", b"")
    yield rig
    rig.cleanup()


@pytest.fixture(scope="module")
def oracle(demo_models) -> Oracle:
    return Oracle.of(demo_models, MAX_ROWS)


def drain(rig) -> list[dict]:
    """Every result message now on the results queue, deleted as read."""
    from azure.core.exceptions import ResourceNotFoundError

    out = []
    try:
        while True:
            batch = list(rig.results.receive_messages(max_messages=32, visibility_timeout=30))
            if not batch:
                return out
            for m in batch:
                out.append(orjson.loads(base64.b64decode(m.content)))
                rig.results.delete_message(m)
    except ResourceNotFoundError:
        return out


# -- strategies -------------------------------------------------------------------------------

cells = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False),
                  st.integers(-(2 ** 63), 2 ** 63 - 1))
anything = st.recursive(st.one_of(st.none(), st.booleans(), cells, st.text(max_size=10)),
                        lambda c: st.one_of(st.lists(c, max_size=4),
                                            st.dictionaries(st.text(max_size=6), c, max_size=4)),
                        max_leaves=12)
blob_names = st.one_of(
    st.sampled_from(["inputs/good.csv", "inputs/good.jsonl", "inputs/huge.csv", "inputs/empty.csv",
                     "inputs/missing.csv", "inputs/good", "jobs/x.json", "results/x.json", "../x.csv",
                     "/abs.csv", "a//b.csv", "a/./b.csv", "x.csv/", "x.parquet", "x" * 1025 + ".csv",
                     "in\x00.csv", "ok.CSV", "ok.ndjson", "inputs/rand.csv", "inputs/rand.jsonl"]),
    st.text(max_size=30))
refs = st.one_of(
    st.fixed_dictionaries(
        {"blob": blob_names},
        optional={"container": st.sampled_from(["nosuchcontainer", "models", "UPPER", "a", "-x-", ""]),
                  "format": st.sampled_from(["csv", "jsonl", "ndjson", "CSV", "xml", 1, None]),
                  "extra": anything}),
    anything)


@st.composite
def messages(draw, oracle: Oracle):
    """(kind, body bytes). Bodies are near the schema, or not JSON at all."""
    kind = draw(st.sampled_from(["bytes", "text", "not-object", "inline", "inline-valid",
                                 "blob", "blob-valid", "random-blob", "oversized"]))
    doc: dict = {}
    if draw(st.booleans()):
        doc["id"] = draw(st.one_of(st.text(max_size=20), st.sampled_from(["job", "a" * 129, "-x", "ok:1"]),
                                   anything))
    if kind == "bytes":
        return kind, draw(st.binary(max_size=300)), None
    if kind == "text":
        return kind, draw(st.sampled_from([b"{", b"{}}", b"NaN", b'{"id": NaN}', b"\xff\xfe{}", b"",
                                           b'{"endpoint": "churn", "rows": [[1e999]]}'])), None
    if kind == "not-object":
        return kind, orjson.dumps(draw(st.lists(anything, max_size=3))), None
    valid = kind.endswith("-valid")
    model = draw(st.sampled_from(MODELS)) if valid else \
        draw(st.sampled_from([*MODELS, "nope", "", "a b", "x" * 300, 5]))
    doc["endpoint"] = model
    if draw(st.booleans()):
        doc["key"] = draw(st.text(min_size=1, max_size=128) if valid else
                          st.one_of(st.text(max_size=140), anything))
    if kind in ("inline", "inline-valid"):
        width = len(oracle.features[model]) if model in oracle.features else 3
        n = draw(st.integers(1, 20))
        rows = draw(st.lists(st.lists(cells, min_size=width, max_size=width), min_size=n, max_size=n))
        if kind == "inline-valid" and model in oracle.features:
            doc["endpoint"] = model
            doc["rows"] = rows
        else:
            doc[draw(st.sampled_from(["rows", "records"]))] = draw(st.one_of(st.just(rows), anything))
            if draw(st.booleans()):
                doc[draw(st.sampled_from(["options", "input", "output", "extra"]))] = draw(anything)
        if draw(st.booleans()):
            doc["options"] = draw(st.sampled_from([{"raw_score": True}, {"pred_contrib": True}, {}, None]))
        if valid and isinstance(doc.get("id"), str) and not JOB_ID_RE.match(doc["id"]):
            del doc["id"]
    elif kind in ("blob", "blob-valid", "random-blob"):
        if kind == "blob-valid":
            doc["endpoint"] = "churn"
            doc["input"] = {"blob": draw(st.sampled_from(["inputs/good.csv", "inputs/good.jsonl"]))}
            if doc["input"]["blob"].endswith(".csv") and draw(st.booleans()):
                doc["id_column"] = "cid"
        elif kind == "random-blob":
            doc["input"] = {"blob": draw(st.sampled_from(["inputs/rand.csv", "inputs/rand.jsonl"]))}
        else:
            doc["input"] = draw(refs)
        if valid:
            doc.pop("id", None)
            return kind, orjson.dumps(doc), None
        if draw(st.booleans()):
            doc["output"] = draw(st.one_of(refs, st.fixed_dictionaries(
                {"blob": st.sampled_from(["out/a.csv", "out/b.jsonl", "jobs/me.json", "results/r.json",
                                          "inputs/good.csv"])})))
        if draw(st.booleans()):
            doc["id_column"] = draw(st.one_of(st.sampled_from(["cid", "nope", ""]), anything))
        if draw(st.booleans()):
            doc["options"] = draw(st.one_of(st.sampled_from([{"raw_score": True}, {"pred_contrib": True}]),
                                            anything))
    else:  # oversized
        doc["rows"] = [[1.2345678901234567] * 8] * 600  # ~ 66 KB of JSON
    random_blob = None
    if kind == "random-blob":
        random_blob = draw(st.one_of(
            st.binary(max_size=400),
            st.builds(lambda header, lines: (",".join(header) + "\n" + "\n".join(lines)).encode(),
                      st.lists(st.sampled_from([*CHURN, "cid", "x", "", '"age"']), max_size=10),
                      st.lists(st.text(max_size=40), max_size=20))))
    return kind, orjson.dumps(doc), random_blob


# -- direct ------------------------------------------------------------------------------------

def test_every_message_ends_as_one_result_direct(rig, oracle, request):
    tally: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    counter = iter(range(10 ** 9))

    @hypothesis_settings(120)
    @given(messages(oracle))
    def run(case):
        kind, body, random_blob = case
        n = next(counter)
        tally[kind] += 1
        doc = None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        if isinstance(doc, dict) and isinstance(doc.get("id"), str) and JOB_ID_RE.match(doc["id"]):
            doc["id"] = f"{doc['id'][:100]}-{n}"  # every example is a new job
            body = orjson.dumps(doc)
        if random_blob is not None:
            rig.upload(doc["input"]["blob"], random_blob)
        outcome = rig.run(body, message_id=f"fuzz-{n}-{time.monotonic_ns()}")  # never raises
        assert outcome.status in ("succeeded", "failed"), outcome
        statuses[outcome.status] += 1
        results = drain(rig)
        assert [r["id"] for r in results] == [outcome.job_id], results
        [result] = results
        assert result["status"] == outcome.status
        if result["status"] == "failed":
            assert result["error"]["code"] in QUEUE_CODES, result
            codes[result["error"]["code"]] += 1
        elif "predictions" in result and kind in ("inline-valid", "inline"):
            expected = oracle.predict(doc["endpoint"], {k: doc[k] for k in ("rows", "records", "options")
                                                        if k in doc}, "score")
            assert np.array_equal(np.array(result["predictions"], dtype=float), expected)
        else:
            assert rig.exists(result["output_blob"], result["output_container"])
        if kind == "blob-valid" and result["status"] == "succeeded":
            assert result["rows"] == 300

    run()
    report(request, "fuzz_queue_direct", tried=sum(tally.values()), kinds=dict(tally),
           results=dict(statuses), distinct_failure_codes=len(codes), raised=0, lost=0)
    assert statuses["succeeded"] and statuses["failed"]


def test_limits_of_messages_and_blobs(rig):
    """The message limit (48 KiB of JSON), row limit of inline jobs and the input blob limit each give
    one failed result with their code."""
    cases = [(orjson.dumps({"id": "big-msg", "endpoint": "churn", "rows": [[1.2345678901234567] * 8] * 600}),
              "message_too_large"),
             (orjson.dumps({"id": "many-rows", "endpoint": "churn", "rows": [[1] * 8] * (MAX_ROWS + 1)}),
              "too_many_rows"),
             (orjson.dumps({"id": "huge-blob", "endpoint": "churn", "input": {"blob": "inputs/huge.csv"}}),
              "input_too_large"),
             (orjson.dumps({"id": "no-blob", "endpoint": "churn", "input": {"blob": "inputs/none.csv"}}),
              "input_not_found")]
    for body, code in cases:
        outcome = rig.run(body, message_id=f"lim-{code}")
        [result] = drain(rig)
        assert outcome.status == "failed" and result["error"]["code"] == code, result


# -- through the host's queue --------------------------------------------------------------------

@pytest.fixture(scope="module")
def fast_retry_app(tmp_path_factory) -> Path:
    app = tmp_path_factory.mktemp("fast-retry-app")
    for name in ("function_app.py", "shared", "score_function"):
        (app / name).symlink_to(ROOT / name)
    host_json = json.loads((ROOT / "host.json").read_text())
    host_json["extensions"]["queues"].update(visibilityTimeout="00:00:01", maxDequeueCount=3,
                                             maxPollingInterval="00:00:00.5")
    (app / "host.json").write_text(json.dumps(host_json))
    return app


def test_a_sample_through_the_host_queue(azurite, demo_models, oracle, fast_retry_app, tmp_path, request):
    rig = make_rig(azurite, demo_models, {"BATCH_MAX_INPUT_MB": "1", "MAX_ROWS_PER_REQUEST": str(MAX_ROWS)},
                   models=MODELS)
    try:
        X = sample(8, 50, seed=22)
        rig.upload("inputs/good.csv", to_csv(X, CHURN))
        rig.upload("inputs/huge.csv", b"age\n" + b"1\n" * (600 * 1024))
        bodies: list[tuple[str, bytes]] = []

        @hypothesis_settings(10)
        @given(messages(oracle))
        def collect(case):
            kind, body, random_blob = case
            if random_blob is None and len(body) < 40_000:
                bodies.append((kind, body))

        collect()
        fixed = [("not-json", b"this is not json"), ("not-object", b"[1, 2]"),
                 ("bad-fields", b'{"endpoint": "churn", "rows": [[1]], "surprise": 1}'),
                 ("missing-blob", b'{"endpoint": "churn", "input": {"blob": "inputs/none.csv"}}'),
                 ("huge-blob", b'{"endpoint": "churn", "input": {"blob": "inputs/huge.csv"}}'),
                 ("valid-blob", b'{"endpoint": "churn", "input": {"blob": "inputs/good.csv"}}'),
                 ("valid-inline", orjson.dumps({"endpoint": "price", "rows": [[1, 2, 3, 4, 5, 6]]})),
                 ("near-limit",
                  orjson.dumps({"endpoint": "churn", "rows": [[1.2345678901234567] * 8] * 190}))]
        queue = rig.queues.get_queue_client(rig.settings.score_queue_name)
        queue.create_queue()
        for i, (_kind, body) in enumerate(fixed + bodies):
            doc = None
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                pass
            if isinstance(doc, dict):  # a unique id, so that each message is one job
                doc["id"] = f"q-{i}"
                body = orjson.dumps(doc)
            queue.send_message(base64.b64encode(body).decode())
        queue.send_message("not base64 at all!")  # the host cannot decode it: poison, no result
        total = len(fixed) + len(bodies)
        results: list[dict] = []
        with DevHost(fast_retry_app, rig.env, auth=False, lease_seconds=5,
                     log_path=tmp_path / "devhost.log") as host:
            deadline = time.monotonic() + 60
            poison = rig.queues.get_queue_client(rig.settings.score_queue_name + "-poison")
            while time.monotonic() < deadline:
                results += drain(rig)
                if len(results) >= total and _count(poison) >= 1 and _count(queue) == 0:
                    break
                time.sleep(0.3)
            time.sleep(2.5)  # a retried message would be delivered again by now
            results += drain(rig)
            log = Path(host.log_path).read_text()
        by_id = Counter(r["id"] for r in results)
        assert len(results) == total and all(c == 1 for c in by_id.values()), by_id
        assert _count(queue) == 0, "messages left on the job queue"
        assert _count(poison) == 1, "only the message that is not base64 is poisoned"
        assert "the queue will retry it" not in log
        statuses = Counter(r["status"] for r in results)
        by_kind = {kind: next(r for r in results if r["id"] == f"q-{i}")
                   for i, (kind, _) in enumerate(fixed) if kind not in ("not-json", "not-object")}
        assert by_kind["valid-blob"]["status"] == by_kind["valid-inline"]["status"] == "succeeded"
        assert by_kind["missing-blob"]["error"]["code"] == "input_not_found"
        assert by_kind["huge-blob"]["error"]["code"] == "input_too_large"
        assert by_kind["near-limit"]["status"] == "succeeded"
        report(request, "fuzz_queue_via_host", tried=total + 1, results=dict(statuses),
               poisoned=1, retried=0, lost=0)
    finally:
        rig.cleanup()


def _count(queue) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return queue.get_queue_properties().approximate_message_count
    except ResourceNotFoundError:
        return 0
