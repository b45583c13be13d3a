"""The local end-to-end demo: real Azurite, the local Functions host, real models and requests."""

from __future__ import annotations

import secrets
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def say(text: str = "") -> None:
    print(text, flush=True)


def run_demo(requests: int = 2000) -> int:
    """Run the demo; everything started is stopped on the way out, also on Ctrl-C."""
    import httpx
    import lightgbm as lgb
    from azure.storage.blob import BlobServiceClient

    from devhost.azurite import Azurite
    from devhost.process import DevHost
    from scorefn.demo.models import train_demo_models

    key = secrets.token_urlsafe(24)
    master_key = secrets.token_urlsafe(24)
    with ExitStack() as stack:
        say("scorefn demo")
        t0 = time.perf_counter()
        azurite = stack.enter_context(Azurite())
        say(f"  azurite          blob :{azurite.blob_port}  queue :{azurite.queue_port}")
        models = train_demo_models(ROOT / ".demo" / "models")
        blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
        container = blobs.get_container_client("models")
        container.create_container()
        compiled = _upload_models(container, models)
        say(f"  models           {', '.join(models)} trained and uploaded "
            f"({time.perf_counter() - t0:.1f} s)")
        say(f"  compiled trees   {compiled}")
        env = {"AzureWebJobsStorage": azurite.connection_string, "MODEL_CONTAINER": "models",
               "DEVHOST_FUNCTION_KEY": key, "DEVHOST_MASTER_KEY": master_key,
               "TELEMETRY_LOCAL_READER": "true", "SCORE_QUEUE_NAME": "score-requests",
               "ROUTER_CONFIG_BLOB": "config/router.json", "ROUTER_REFRESH_SECONDS": "1",
               "PREDICTION_LOG_FLUSH_SECONDS": "1",
               "RESULTS_QUEUE_NAME": "score-results", "BATCH_CONTAINER": "batch",
               "CHUNK_QUEUE_NAME": "score-chunks", "ROLLOUT_SCHEDULE": "*/2 * * * * *",
               "MONITOR_FLUSH_SECONDS": "2", "MONITOR_SCHEDULE": "0 10 * * * *"}
        host = stack.enter_context(DevHost(ROOT, env))
        assert host.url is not None  # set once the host is ready
        say(f"  local host       {host.url}  (function key auth on)")
        client = stack.enter_context(httpx.Client(base_url=host.url, timeout=30,
                                                  headers={"x-functions-key": key}))
        boosters = {name: lgb.Booster(model_file=str(m.path)) for name, m in models.items()}
        _http_examples(client, models, boosters)
        _latency(client, models, requests)
        _server_latency(client, master_key)
        _queue_part(stack, azurite, models, boosters)
        from scorefn.demo.ab import run_ab_demo
        from scorefn.demo.rollout import run_rollout_demo

        run_ab_demo(client, azurite.connection_string, "models", say)
        from scorefn.demo.monitoring import run_monitoring_demo

        run_monitoring_demo(client, azurite.connection_string, ROOT / ".demo" / "reports", say)
        run_rollout_demo(client, azurite.connection_string, "models", ROOT / ".demo" / "models",
                         say)
    say("\nstopped the local host and Azurite")
    return 0


def _upload_models(container, models) -> str:
    """Upload each model as `scorefn upload-model` does: its compiled trees first (built here
    and checked against LightGBM), then the model. What was compiled, in a few words."""
    from scorefn.demo.monitoring import upload_reference, write_reference_csv
    from shared.models.compiled.build import build_artifact
    from shared.models.compiled.errors import CompileError
    from shared.models.compiled.target import can_compile
    from shared.models.model import parse_model

    notes = []
    reference_csv = write_reference_csv(ROOT / ".demo" / "reference" / "churn-validation.csv")
    for model in models.values():
        data, path = model.path.read_bytes(), f"{model.name}.txt"
        if model.name in ("churn", "churn_v1"):  # `upload-model --reference-data`, as a user would
            upload_reference(container, path, data, reference_csv)
        if can_compile():
            parsed = parse_model(data, name=model.name, path=path, version="", last_modified=None)
            try:
                artifact = build_artifact(parsed, nice=0)
            except CompileError as exc:
                notes.append(f"{model.name}: LightGBM ({exc.message})")
            else:
                container.upload_blob(artifact.path, artifact.data, overwrite=True,
                                      metadata=artifact.metadata(path))
                notes.append(f"{model.name}: compiled")
        container.upload_blob(path, data, overwrite=True)
    return "; ".join(notes) or "none (lleaves is not installed)"


def _post(client, path: str, body: dict, **kwargs):
    start = time.perf_counter()
    response = client.post(path, json=body, **kwargs)
    return response, (time.perf_counter() - start) * 1000


def _http_examples(client, models, boosters) -> None:
    rng = np.random.default_rng(5)
    from scorefn.demo.models import churn_features, price_features, segment_features

    X = {"churn": churn_features(3, rng), "price": price_features(3, rng),
         "segment": segment_features(3, rng)}
    say("\nHTTP scoring (first request per model is cold: download + parse, its compiled trees "
        "loaded and checked)")
    say(f"  {'request':34s} {'status':>6s} {'ms':>7s}  {'backend':8s}  predictions  "
        f"(equal to Booster.predict?)")
    for name in ("churn", "price", "segment"):
        rows = [[None if np.isnan(v) else float(v) for v in row] for row in X[name]]
        response, ms = _post(client, f"/api/score/{name}", {"rows": rows})
        preds = response.json()["predictions"]
        equal = np.array_equal(np.array(preds), boosters[name].predict(X[name]))
        say(f"  {'POST /api/score/' + name + ' rows':34s} {response.status_code:6d} {ms:7.1f}  "
            f"{_backend(response)}  {_short(preds)}  ({'yes' if equal else 'NO'})")
    features = models["churn"].feature_names
    records = [{f: float(v) for f, v in zip(features, X["churn"][0]) if not np.isnan(v)}]
    response, ms = _post(client, "/api/score/churn", {"records": records})
    equal = np.array_equal(np.array(response.json()["predictions"]),
                           boosters["churn"].predict(X["churn"][:1]))
    say(f"  {'POST /api/score/churn records':34s} {response.status_code:6d} {ms:7.1f}  "
        f"{_backend(response)}  {_short(response.json()['predictions'])}  ({'yes' if equal else 'NO'})")
    v2 = {"inputs": [{"name": "input-0", "shape": [1, 6], "datatype": "FP64",
                      "data": X["price"][0].tolist()}]}
    response, ms = _post(client, "/api/v2/models/price/infer", v2)
    data = response.json()["outputs"][0]["data"]
    equal = np.array_equal(np.array(data), boosters["price"].predict(X["price"][:1]))
    say(f"  {'POST /api/v2/models/price/infer':34s} {response.status_code:6d} {ms:7.1f}  "
        f"{_backend(response)}  {_short(data)}  ({'yes' if equal else 'NO'})")

    _dataframe_examples(client, boosters)

    say("\nBad requests get a clear error")
    bad: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        ("unknown model", "/api/score/nope", {"rows": [[1]]}, {}),
        ("wrong row width", "/api/score/price", {"rows": [[1, 2]]}, {}),
        ("string value", "/api/score/price", {"rows": [[1, "2", 3, 4, 5, 6]]}, {}),
        ("unknown feature", "/api/score/churn", {"records": [{"tenure": 3}]}, {}),
        ("code for a value", "/api/score/plans", {"records": [{"contract": 0}]}, {}),
        ("no function key", "/api/score/price", {"rows": [[1] * 6]},
         {"headers": {"x-functions-key": "wrong"}})]
    for label, path, body, kwargs in bad:
        response, _ = _post(client, path, body, **kwargs)
        detail = response.text[:90] if response.content else "(empty body, from the host)"
        say(f"  {label:18s} {response.status_code}  {detail}")


def _dataframe_examples(client, boosters) -> None:
    """Models trained from DataFrames, scored with the DataFrame's own names and values."""
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    from scorefn.demo.models import plans_frame

    say("\nModels trained from pandas DataFrames, scored by the DataFrame's names and values")
    cancer = load_breast_cancer(as_frame=True).data.iloc[[0, 100, 200]]
    response, ms = _post(client, "/api/score/cancer",
                         {"records": cancer.to_dict(orient="records")})
    preds = response.json()["predictions"]
    equal = np.array_equal(np.array(preds), boosters["cancer"].predict(cancer))
    label = "cancer records ('mean radius', ...)"
    say(f"  {label:34s} {response.status_code:6d} {ms:7.1f}  "
        f"{_short(preds)}  ({'yes' if equal else 'NO'})")
    plans = plans_frame(3, seed=11)
    records = [{k: (str(v) if isinstance(plans[k].dtype, pd.CategoricalDtype) else v)
                for k, v in row.items()} for row in plans.to_dict(orient="records")]
    say(f"    e.g. {str(records[0])[:100]}")
    response, ms = _post(client, "/api/score/plans", {"records": records})
    preds = response.json()["predictions"]
    equal = np.array_equal(np.array(preds), boosters["plans"].predict(plans))
    say(f"  {'plans records (category values)':34s} {response.status_code:6d} {ms:7.1f}  "
        f"{_short(preds)}  ({'yes' if equal else 'NO'})")
    inputs = [{"name": c, "shape": [3], "data": [r[c] for r in records],
               "datatype": "BYTES" if isinstance(plans[c].dtype, pd.CategoricalDtype) else "FP64"}
              for c in plans.columns]
    response, ms = _post(client, "/api/v2/models/plans/infer", {"inputs": inputs})
    data = response.json()["outputs"][0]["data"]
    equal = np.array_equal(np.array(data), boosters["plans"].predict(plans))
    say(f"  {'V2 plans, BYTES tensors':34s} {response.status_code:6d} {ms:7.1f}  "
        f"{_short(data)}  ({'yes' if equal else 'NO'})")


def _latency(client, models, requests: int) -> None:
    from scorefn.demo.models import churn_features

    rows = churn_features(1024, np.random.default_rng(9))
    bodies = [{"rows": [[None if np.isnan(v) else float(v) for v in row]]} for row in rows]
    for body in bodies[:50]:
        client.post("/api/score/churn", json=body)
    samples = []
    for i in range(requests):
        start = time.perf_counter()
        response = client.post("/api/score/churn", json=bodies[i % len(bodies)])
        samples.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"request failed: {response.status_code} {response.text[:200]}")
    q = np.percentile(samples, [50, 90, 99])
    say(f"\nLatency, {requests} single-row requests to churn, concurrency 1 (client side, ms)")
    say(f"  p50 {q[0]:6.2f}   p90 {q[1]:6.2f}   p99 {q[2]:6.2f}   mean {statistics.fmean(samples):6.2f}")


def _server_latency(client, master_key: str) -> None:
    response = client.get("/api/metrics/latency", headers={"x-functions-key": master_key})
    rows = sorted(response.json()["latency"], key=lambda r: (r["trigger"], r["model"], r["cold"]))
    say("\nServer side, from the OpenTelemetry histograms (whole scoring inside the function, ms)")
    say(f"  {'trigger':7s} {'model':8s} {'cold':5s} {'count':>6s} {'p50':>7s} {'p90':>7s} {'p99':>7s}")
    for r in rows:
        say(f"  {r['trigger']:7s} {r['model']:8s} {str(r['cold']).lower():5s} {r['count']:6d} "
            f"{r['p50_ms']:7.3f} {r['p90_ms']:7.3f} {r['p99_ms']:7.3f}")


def _queue_part(stack, azurite, models, boosters) -> None:
    try:
        from scorefn.commands import jobs  # noqa: F401  (the queue part needs the batch feature)
    except ImportError:
        return
    from scorefn.demo.queue import run_queue_demo

    run_queue_demo(azurite, models, boosters, say)


def _backend(response) -> str:
    return f"{response.headers.get('x-scorefn-backend', '-'):8s}"


def _short(values) -> str:
    flat = np.asarray(values, dtype=float).reshape(len(values), -1)
    text = ", ".join("[" + " ".join(f"{v:.3f}" for v in row) + "]" if len(row) > 1 else f"{row[0]:.3f}"
                     for row in flat)
    return text if len(text) < 48 else text[:45] + "..."


if __name__ == "__main__":
    sys.exit(run_demo())
