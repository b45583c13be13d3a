"""Cold start and memory: what a new Functions process pays before its first prediction.

Each figure is measured in fresh Python processes (median of several), in one run:
- import cost: `azure.functions` alone vs `function_app` (the app must add little);
- first prediction through the app's service (imports, download, parse, predict) vs the
  sum of the same parts done bare, two ways: with the lightgbm package (import lightgbm + SDK,
  download, Booster(model_str), predict) and as the app does them, with LightGBM's C library
  loaded directly (``shared/lgbm_native.py``: import numpy + SDK, download, parse, predict);
- resident memory after loading the demo models, and per model.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IMPORT = """
import time, json; t = time.perf_counter(); import {module}; print(json.dumps({{"s": time.perf_counter() - t}}))
"""

FIRST_PREDICTION_APP = """
import json, os, time
t0 = time.perf_counter()
from shared.service import get_service
import orjson
service = get_service()
result = service.score("bench", orjson.dumps({"rows": [[0.1] * 100]}))
print(json.dumps({"s": time.perf_counter() - t0}))
"""

FIRST_PREDICTION_PARTS = """
import json, os, time
t = time.perf_counter(); import numpy, lightgbm; from azure.storage.blob import BlobServiceClient
imports = time.perf_counter() - t
t = time.perf_counter()
data = BlobServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"]) \\
    .get_container_client("models").download_blob("bench.txt").readall()
download = time.perf_counter() - t
t = time.perf_counter(); booster = lightgbm.Booster(model_str=data.decode()); parse = time.perf_counter() - t
t = time.perf_counter(); booster.predict(numpy.full((1, 100), 0.1), num_threads=1); predict = time.perf_counter() - t
print(json.dumps({"s": imports + download + parse + predict, "imports": imports,
                  "download": download, "parse": parse, "predict": predict}))
"""

FIRST_PREDICTION_PARTS_NATIVE = """
import json, os, time
t = time.perf_counter(); import numpy; from azure.storage.blob import BlobServiceClient
from shared.lgbm_native import NativeBooster, library; library()
imports = time.perf_counter() - t
t = time.perf_counter()
data = BlobServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"]) \\
    .get_container_client("models").download_blob("bench.txt").readall()
download = time.perf_counter() - t
t = time.perf_counter(); booster = NativeBooster(data.decode()); parse = time.perf_counter() - t
t = time.perf_counter(); booster.predict(numpy.full((1, 100), 0.1)); predict = time.perf_counter() - t
print(json.dumps({"s": imports + download + parse + predict, "imports": imports,
                  "download": download, "parse": parse, "predict": predict}))
"""

MEMORY = """
import json, os, psutil, orjson
from shared.service import get_service
proc = psutil.Process()
base = proc.memory_info().rss
service = get_service()
sizes = {}
for name, width in (("churn", 8), ("churn_v1", 8), ("price", 6), ("segment", 4)):
    before = proc.memory_info().rss
    service.score(name, orjson.dumps({"rows": [[1.0] * width]}))
    sizes[name] = proc.memory_info().rss - before
print(json.dumps({"base": base, "after": proc.memory_info().rss, "per_model": sizes}))
"""


def run(code: str, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(code: str, env: dict[str, str], n: int) -> float:
    return statistics.median(run(code, env)["s"] for _ in range(n))


def main() -> None:
    import os

    from azure.storage.blob import BlobServiceClient

    from bench.common import bench_model_path
    from devhost.azurite import Azurite
    from scorefn.demo_models import train_demo_models

    model = bench_model_path()
    with Azurite() as azurite, tempfile.TemporaryDirectory() as tmp:
        container = BlobServiceClient.from_connection_string(
            azurite.connection_string).get_container_client("models")
        container.create_container()
        container.upload_blob("bench.txt", model.read_bytes())
        for demo in train_demo_models(Path(tmp)).values():
            container.upload_blob(f"{demo.name}.txt", demo.path.read_bytes())
        env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string}
        rounds = 7
        imports = {m: [] for m in ("azure.functions", "function_app")}
        first_app, first_parts, parts, first_native, native = [], [], [], [], []
        for _ in range(rounds):  # interleaved, so drift on the shared machine hits both alike
            for m in imports:
                imports[m].append(run(IMPORT.format(module=m), env)["s"])
            first_app.append(run(FIRST_PREDICTION_APP, env)["s"])
            detail = run(FIRST_PREDICTION_PARTS, env)
            first_parts.append(detail["s"])
            parts.append(detail)
            detail = run(FIRST_PREDICTION_PARTS_NATIVE, env)
            first_native.append(detail["s"])
            native.append(detail)
        memory = run(MEMORY, env)

    med = {m: statistics.median(v) * 1000 for m, v in imports.items()}
    print(f"\nCold start ({rounds} fresh processes each, medians)\n")
    print(f"import azure.functions        {med['azure.functions']:7.1f} ms")
    print(f"import function_app           {med['function_app']:7.1f} ms   "
          f"(+{med['function_app'] - med['azure.functions']:.1f} ms over azure.functions)")
    app = statistics.median(first_app) * 1000
    bare = statistics.median(first_parts) * 1000
    print(f"first prediction via the app  {app:7.1f} ms   (imports, download, parse, predict)")
    bare_native = statistics.median(first_native) * 1000
    for title, total, details in (("with the lightgbm package", bare, parts),
                                  ("with LightGBM's C library", bare_native, native)):
        print(f"sum of the parts, bare, {title}: {total:7.1f} ms   app / parts {app / total:.2f}")
        for key in ("imports", "download", "parse", "predict"):
            print(f"  {key:10s} {statistics.median(p[key] for p in details) * 1000:8.1f} ms")
    mb = 1024 * 1024
    print(f"\nResident memory: {memory['base'] / mb:.0f} MB at start, "
          f"{memory['after'] / mb:.0f} MB with the 4 demo models loaded")
    for name, size in memory["per_model"].items():
        print(f"  first use of {name:9s} +{size / mb:5.1f} MB")


if __name__ == "__main__":
    main()
