"""A simulated A/B experiment with known truth, end to end: the two demo churn models (churn
is the better one) behind a 50/50 router config with the prediction log on, 2,500 requests
through the local Functions host, outcomes drawn from the generating process posted to the
outcomes route, and the report built from what landed in (real Azurite) storage.

The report's numbers are checked against a direct computation on the test's own record of
what it sent, what each response said and which label it drew, not against the log."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from devhost.process import DevHost
from scorefn.__main__ import main as scorefn_main
from scorefn.demo.ab import wait_for_log
from scorefn.demo.models import churn_features, churn_probability
from tests.azurite_support import new_container
from tests.conftest import upload

ROOT = Path(__file__).resolve().parents[2]
KEY = "ab-key"
USERS, REPEAT, ROWS = 2000, 500, 4
SUFFIX = uuid.uuid4().hex[:8]
PRED, OUTC = f"pred{SUFFIX}", f"outc{SUFFIX}"


def config(endpoint="churn") -> bytes:
    return json.dumps({"endpoints": {endpoint: {
        "variants": [{"name": "control", "model": "churn_v1", "weight": 50},
                     {"name": "candidate", "model": "churn", "weight": 50}],
        "sticky": {"header": "x-user-id"}, "salt": "exp-test",
        "shadow": [{"name": "shadow", "model": "churn", "fraction": 0.25}],
        "log": {"sample": 1.0}}}}).encode()


@pytest.fixture(scope="module")
def models(azurite, demo_models):

    container = new_container(azurite.connection_string, f"ab{SUFFIX}")
    upload(container, "churn.txt", demo_models["churn"].path)
    upload(container, "churn_v1.txt", demo_models["churn_v1"].path)
    upload(container, "config/router.json", config())
    return container


@pytest.fixture(scope="module")
def host(azurite, models):
    env = {"AzureWebJobsStorage": azurite.connection_string, "MODEL_CONTAINER": models.container_name,
           "ROUTER_CONFIG_BLOB": "config/router.json", "ROUTER_REFRESH_SECONDS": "0.3",
           "PREDICTION_LOG_FLUSH_SECONDS": "0.5", "PREDICTION_LOG_CONTAINER": PRED,
           "OUTCOME_LOG_CONTAINER": OUTC, "DEVHOST_FUNCTION_KEY": KEY,
           "SCORE_QUEUE_NAME": "unused", "RESULTS_QUEUE_NAME": "unused"}
    server = DevHost(ROOT, env, queues=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(host):
    with httpx.Client(base_url=host.url, headers={"x-functions-key": KEY}, timeout=30) as c:
        yield c


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def experiment(client, azurite, blob_service_module):
    """Send the traffic and the outcomes; return what the test knows to be true."""
    rng = np.random.default_rng(2026)
    started = time.time() - 1
    sent = []
    plan = [(u, "A") for u in range(USERS)] + [(u, "B") for u in range(REPEAT)]
    for n, (user, phase) in enumerate(plan):
        X = churn_features(ROWS, rng)
        rid = f"exp-{n:05d}"
        body = {"rows": [[None if np.isnan(v) else float(v) for v in row] for row in X]}
        response = client.post("/api/score/churn", content=orjson.dumps(body),
                               headers={"x-user-id": f"u{user}", "x-request-id": rid,
                                        "content-type": "application/json"})
        assert response.status_code == 200, response.text
        doc = response.json()
        sent.append({"user": user, "phase": phase, "rid": rid, "variant": doc["variant"],
                     "p": np.array(doc["predictions"]), "X": X, "answered": time.time()})
    labels_rng = np.random.default_rng(7)
    outcomes = []
    for req in sent:
        req["y"] = (labels_rng.random(ROWS) < churn_probability(req["X"])).astype(int)
        for row, label in enumerate(req["y"].tolist()):
            if req["phase"] == "A" and req["user"] < REPEAT:
                # by key, timed at this request: the user's later request must not take it
                outcomes.append({"key": f"u{req['user']}", "row": row, "label": label,
                                 "time": iso(req["answered"])})
            elif req["phase"] == "A" and req["user"] < 2 * REPEAT:
                outcomes.append({"key": f"u{req['user']}", "row": row, "label": label})
            else:
                outcomes.append({"request_id": req["rid"], "row": row, "label": label})
    for i in range(0, len(outcomes), 5000):
        response = client.post("/api/outcomes/churn", json={"outcomes": outcomes[i:i + 5000]})
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": len(outcomes[i:i + 5000])}
    written = wait_for_log(blob_service_module.get_container_client(PRED), "churn", b'"exp-', len(sent))
    assert written == len(sent)
    return {"sent": sent, "since": iso(started), "until": iso(time.time() + 1)}


@pytest.fixture(scope="module")
def blob_service_module(azurite):
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(azurite.connection_string)


def rank_auc(y: np.ndarray, p: np.ndarray) -> float:
    """AUC computed independently: for each positive, the negatives it beats (ties half)."""
    neg = np.sort(p[y == 0])
    pos = p[y == 1]
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (pos.size * neg.size))


def truth(sent, variant):
    y = np.concatenate([r["y"] for r in sent if r["variant"] == variant])
    p = np.concatenate([r["p"] for r in sent if r["variant"] == variant])
    return y, p


def run_report(azurite, experiment, out: Path, *extra: str) -> dict:
    json_out = out.with_suffix(".json")
    code = scorefn_main(["report", "--endpoint", "churn", "--since", experiment["since"],
                         "--until", experiment["until"], "--out", str(out), "--json", str(json_out),
                         "--predictions-container", PRED, "--outcomes-container", OUTC,
                         "--connection-string", azurite.connection_string, *extra])
    assert code == 0
    return json.loads(json_out.read_text())


def test_the_report_names_the_better_model_and_its_numbers_match_a_direct_computation(
        azurite, experiment, tmp_path, capsys):
    sent = experiment["sent"]
    out = tmp_path / "report.html"
    report = run_report(azurite, experiment, out)
    printed = capsys.readouterr()
    assert "candidate is better than control" in printed.out
    assert "predictions:" in printed.err  # progress while reading blobs

    variants = {v["name"]: v for v in report["variants"]}
    assert list(variants) == ["control", "candidate"] and report["control"] == "control"
    assert report["objective"] == "binary" and report["primary_metric"] == "auc"
    for name, model in (("control", "churn_v1"), ("candidate", "churn")):
        y, p = truth(sent, name)
        v = variants[name]
        assert v["requests"] == sum(r["variant"] == name for r in sent)
        assert v["outcomes"] == y.size == v["rows"]
        assert v["metrics"]["auc"]["value"] == pytest.approx(rank_auc(y, p), abs=1e-12)
        q = np.clip(p, 1e-15, 1 - 1e-15)
        log_loss = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
        assert v["metrics"]["log_loss"]["value"] == pytest.approx(log_loss, rel=1e-12)
        assert v["models"][0]["name"] == model
        lat = v["latency_ms"]
        assert lat["n"] == v["requests"] and 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    assert 0.4 < variants["candidate"]["requests"] / len(sent) < 0.6

    (cmp,) = report["comparisons"]
    assert (cmp["candidate"], cmp["control"], cmp["verdict"]) == ("candidate", "control", "better")
    assert cmp["p_value"] < 0.01 and cmp["low"] > 0
    yc, pc = truth(sent, "control")
    yk, pk = truth(sent, "candidate")
    assert cmp["delta"] == pytest.approx(rank_auc(yk, pk) - rank_auc(yc, pc), abs=1e-12)

    join = report["join"]
    assert join["outcomes"] == len(sent) * ROWS
    assert join["by_key"] == 2 * REPEAT * ROWS
    assert join["by_request_id"] == len(sent) * ROWS - 2 * REPEAT * ROWS
    assert join["unmatched"] == join["ambiguous"] == join["bad_label"] == 0

    shadows = {s["answer_variant"]: s for s in report["shadows"]}
    assert set(shadows) == {"control", "candidate"}
    same = shadows["candidate"]["agreement"]  # the shadow is the candidate's own model
    assert same["mean_abs_diff"] == 0 and same["flipped"] == 0 and same["correlation"] == pytest.approx(1)
    other = shadows["control"]["agreement"]
    assert other["flipped"] > 0.02 and other["correlation"] < 0.99
    assert shadows["control"]["comparison"]["verdict"] == "better"  # paired, same rows

    page = out.read_text()
    assert page.count("data:image/png;base64,") >= 4
    assert "candidate is better than control" in page and "<script" not in page


def test_with_forty_outcomes_it_is_not_yet_distinguishable(azurite, experiment, tmp_path):
    sent = experiment["sent"]
    rows = ["request_id,row,label"]
    for variant in ("control", "candidate"):
        reqs = [r for r in sent if r["variant"] == variant][:5]
        rows += [f"{r['rid']},{row},{r['y'][row]}" for r in reqs for row in range(ROWS)]
    csv = tmp_path / "few.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "few.md"
    report = run_report(azurite, experiment, out, "--outcomes-csv", str(csv), "--no-outcome-log")
    assert [v["outcomes"] for v in report["variants"]] == [20, 20]
    (cmp,) = report["comparisons"]
    assert cmp["verdict"] == "undecided"
    assert "not yet distinguishable" in cmp["text"] and "more outcomes needed" in cmp["text"]
    text = out.read_text()
    assert "not yet distinguishable" in text
    assert (tmp_path / "few-plots" / "scores.png").exists() and "](few-plots/scores.png)" in text


def test_bad_outcome_posts_are_4xx_over_http(client, experiment):
    for body, status, code in (
            ({"outcomes": [{"request_id": "a", "key": "b", "label": 1}]}, 400, "invalid_outcome"),
            ({"outcomes": [{"request_id": "a", "label": "yes"}]}, 400, "invalid_outcome"),
            ({"outcomes": []}, 400, "empty_input"),
            ({"outcomes": [{"key": "a", "label": 1}] * 10_001}, 413, "too_many_outcomes")):
        response = client.post("/api/outcomes/churn", json=body)
        assert (response.status_code, response.json()["error"]) == (status, code)
        assert response.json()["message"]
    response = client.post("/api/outcomes/churn", content=b"{", headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["error"]) == (400, "invalid_json")
    response = client.post("/api/outcomes/churn", json={"outcomes": [{"key": "a", "label": 1}]},
                           headers={"x-functions-key": "wrong"})
    assert response.status_code == 401


def test_the_demo_function_runs_against_a_host(azurite, models, client, experiment, tmp_path):
    from scorefn.demo.ab import run_ab_demo

    lines: list[str] = []
    analysis = run_ab_demo(client, azurite.connection_string, models.container_name, lines.append,
                           endpoint="churn-demo", users=150, report_path=tmp_path / "ab.html",
                           predictions_container=PRED, outcomes_container=OUTC)
    assert analysis is not None and (tmp_path / "ab.html").exists()
    assert [v["name"] for v in analysis["variants"]] == ["control", "candidate"]
    assert sum(v["requests"] for v in analysis["variants"]) == 150 + 37
    assert any("verdict" in line for line in lines) and any("ab.html" in line for line in lines)


def test_an_endpoint_without_logged_predictions_says_so(azurite, experiment, tmp_path, capsys):
    code = scorefn_main(["report", "--endpoint", "nothing-here", "--out", str(tmp_path / "r.html"),
                         "--predictions-container", PRED, "--outcomes-container", OUTC,
                         "--connection-string", azurite.connection_string])
    assert code == 1
    assert "no predictions of endpoint 'nothing-here'" in capsys.readouterr().out
    assert "nothing to compare" in (tmp_path / "r.html").read_text()
    with pytest.raises(SystemExit, match="not a variant"):
        run_report(azurite, experiment, tmp_path / "x.html", "--control", "nope")


def test_without_storage_options_the_report_reads_the_prediction_log_connection(
        azurite, experiment, tmp_path, capsys, monkeypatch):
    # The logs live where PREDICTION_LOG_CONNECTION points, as the app writes them.
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("PREDICTION_LOG_CONNECTION", "LogStore")
    monkeypatch.setenv("LogStore", azurite.connection_string)
    code = scorefn_main(["report", "--endpoint", "nothing-here", "--out", str(tmp_path / "r.html"),
                         "--predictions-container", PRED, "--outcomes-container", OUTC])
    assert code == 1  # read the (empty) log of that endpoint from the right account
    assert "no predictions of endpoint 'nothing-here'" in capsys.readouterr().out
