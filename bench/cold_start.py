"""Cold start and memory: what a new Functions process pays before its first prediction.

Each figure is measured in fresh Python processes (median of several), in one run:
- import cost: `azure.functions` alone vs `function_app` (the app must add little);
- first prediction through the app's service (imports, download, parse, predict) vs the
  sum of the same parts done bare, two ways: with the lightgbm package (import lightgbm + SDK,
  download, Booster(model_str), predict) and as the app does them, with LightGBM's C library
  loaded directly (``shared/models/native.py``: import numpy + SDK, download, parse, predict);
- the app runs from a copy laid out as deployed, with the bytecode ``azure.yaml``'s
  prepackage hook compiles (the package is mounted read-only: Python cannot cache what it
  compiles), and from a copy without it, which compiles the app on every cold start;
- resident memory after loading the demo models, and per model.

``--python PATH`` (twice or more) compares Python versions instead, in one run: for each
interpreter (each with the app's dependencies installed for it), ``import function_app``,
the first prediction through the app and resident memory, from a deployed copy holding
each version's bytecode, runs interleaved.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IMPORT = """
import time, json
t = time.perf_counter(); import {module}
print(json.dumps({{"s": time.perf_counter() - t}}))
"""

FIRST_PREDICTION_APP = """
import json, os, time
t0 = time.perf_counter()
from shared.app import get_app
import orjson
service = get_app().service
result = service.score(os.environ.get("BENCH_MODEL", "bench"), orjson.dumps({"rows": [[0.1] * 100]}))
print(json.dumps({"s": time.perf_counter() - t0, "backend": result.backend}))
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
t = time.perf_counter(); booster.predict(numpy.full((1, 100), 0.1), num_threads=1)
predict = time.perf_counter() - t
print(json.dumps({"s": imports + download + parse + predict, "imports": imports,
                  "download": download, "parse": parse, "predict": predict}))
"""

FIRST_PREDICTION_PARTS_NATIVE = """
import json, os, time
t = time.perf_counter(); import numpy; from azure.storage.blob import BlobServiceClient
from shared.models.native import NativeBooster, library; library()
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

COMPILE_COST = """
import json, sys, time
from shared.app import get_app
import function_app
here = __import__("os").getcwd()
modules = [m for m in list(sys.modules.values()) if (getattr(m, "__file__", None) or "").startswith(here)]
sources = [(m.__file__, open(m.__file__).read()) for m in modules]
best = float("inf")
for _ in range(5):
    t = time.perf_counter()
    for path, text in sources:
        compile(text, path, "exec")
    best = min(best, time.perf_counter() - t)
print(json.dumps({"s": best, "modules": len(modules)}))
"""

MEMORY = """
import json, os, psutil, orjson
from shared.app import get_app
proc = psutil.Process()
base = proc.memory_info().rss
service = get_app().service
sizes = {}
for name, width in (("churn", 8), ("churn_v1", 8), ("price", 6), ("segment", 4)):
    before = proc.memory_info().rss
    service.score(name, orjson.dumps({"rows": [[1.0] * width]}))
    sizes[name] = proc.memory_info().rss - before
print(json.dumps({"base": base, "after": proc.memory_info().rss, "per_model": sizes}))
"""


# What azure.yaml's prepackage hook runs before packaging.
COMPILE_APP = ["-m", "compileall", "-q", "-f", "--invalidation-mode", "checked-hash",
               "function_app.py", "score_function", "shared"]


def deployment(folder: Path, *, bytecode: bool, pythons: tuple[str, ...] = (sys.executable,)
               ) -> Path:
    """The app's files as the deployment package holds them, compiled as the hook does (by
    each of ``pythons``: bytecode files are named by version) or not."""
    folder.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("function_app.py", "host.json"):
        shutil.copy2(ROOT / name, folder / name)
    for name in ("score_function", "shared"):
        shutil.copytree(ROOT / name, folder / name, ignore=ignore)
    if bytecode:
        for python in pythons:
            subprocess.run([python, *COMPILE_APP], cwd=folder, check=True)
    return folder


def run(code: str, env: dict[str, str], cwd: Path = ROOT, python: str = sys.executable) -> dict:
    # A read-only package: nothing compiled on import can be written back.
    env = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([python, "-c", code], cwd=cwd, env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(code: str, env: dict[str, str], n: int) -> float:
    return statistics.median(run(code, env)["s"] for _ in range(n))


VERSION = """
import json, sys; print(json.dumps({"v": "%d.%d.%d" % sys.version_info[:3]}))
"""


def compare_pythons(pythons: list[str], rounds: int = 7) -> None:
    """Cold start of the same app on each interpreter, in one run, interleaved."""
    import os

    from azure.storage.blob import BlobServiceClient

    from bench.common import bench_model_path
    from devhost.azurite import Azurite
    from scorefn.demo.models import train_demo_models

    model = bench_model_path()
    with Azurite() as azurite, tempfile.TemporaryDirectory() as tmp:
        container = BlobServiceClient.from_connection_string(
            azurite.connection_string).get_container_client("models")
        container.create_container()
        container.upload_blob("bench.txt", model.read_bytes())
        for demo in train_demo_models(Path(tmp) / "models").values():
            container.upload_blob(f"{demo.name}.txt", demo.path.read_bytes())
        env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string}
        deployed = deployment(Path(tmp) / "deployed", bytecode=True, pythons=tuple(pythons))
        figures: dict[str, dict[str, list[float]]] = {
            p: {"import": [], "first": [], "base": [], "after": []} for p in pythons}
        for _ in range(rounds):
            for python in pythons:
                got = figures[python]
                got["import"].append(run(IMPORT.format(module="function_app"), env, deployed,
                                         python)["s"])
                got["first"].append(run(FIRST_PREDICTION_APP, env, deployed, python)["s"])
                memory = run(MEMORY, env, deployed, python)
                got["base"].append(memory["base"])
                got["after"].append(memory["after"])
        versions = {p: run(VERSION, env, deployed, p)["v"] for p in pythons}
    base = pythons[0]
    print(f"\nCold start by Python version ({rounds} fresh processes each, interleaved, medians)\n")
    print(f"{'Python':8s} {'import function_app':>19s} {'first prediction':>17s} "
          f"{'RSS at start':>13s} {'RSS, 4 models':>14s} {'first / ' + versions[base]:>16s}")
    mb = 1024 * 1024
    for python in pythons:
        got = {k: statistics.median(v) for k, v in figures[python].items()}
        ratio = got["first"] / statistics.median(figures[base]["first"])
        print(f"{versions[python]:8s} {got['import'] * 1000:16.1f} ms {got['first'] * 1000:14.1f} ms "
              f"{got['base'] / mb:10.0f} MB {got['after'] / mb:11.0f} MB {ratio:16.2f}")


def main() -> None:
    import os

    if "--python" in sys.argv:
        args = sys.argv[1:]
        compare_pythons([args[i + 1] for i, a in enumerate(args) if a == "--python"])
        return

    from azure.storage.blob import BlobServiceClient

    from bench.common import bench_model_path
    from devhost.azurite import Azurite
    from scorefn.demo.models import train_demo_models

    model = bench_model_path()
    with Azurite() as azurite, tempfile.TemporaryDirectory() as tmp:
        container = BlobServiceClient.from_connection_string(
            azurite.connection_string).get_container_client("models")
        container.create_container()
        container.upload_blob("bench.txt", model.read_bytes())
        for demo in train_demo_models(Path(tmp)).values():
            container.upload_blob(f"{demo.name}.txt", demo.path.read_bytes())
        # The same model as "benchc", with its compiled trees uploaded beside it.
        from bench.compiled import cached_artifact, parse
        from shared.models.compiled.artifact import blob_path

        data, key, _ = cached_artifact(parse(model))
        container.upload_blob("benchc.txt", model.read_bytes())
        container.upload_blob(blob_path("benchc.txt", key), data)
        env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string}
        # LightGBM: compiled trees off, so the baseline pays no artifact lookup.
        env_lgb = {**env, "COMPILED_TREES": "false"}
        env_cmp = {**env, "BENCH_MODEL": "benchc"}
        deployed = deployment(Path(tmp) / "deployed", bytecode=True)
        source_only = deployment(Path(tmp) / "source-only", bytecode=False)
        rounds = 7
        imports = {m: [] for m in ("azure.functions", "function_app")}
        first_app, first_source, first_parts, parts, first_native, native = [], [], [], [], [], []
        first_compiled: list[float] = []
        for _ in range(rounds):  # interleaved, so drift on the shared machine hits both alike
            for m in imports:
                imports[m].append(run(IMPORT.format(module=m), env, deployed)["s"])
            first_app.append(run(FIRST_PREDICTION_APP, env_lgb, deployed)["s"])
            compiled = run(FIRST_PREDICTION_APP, env_cmp, deployed)
            assert compiled["backend"] == "compiled", compiled
            first_compiled.append(compiled["s"])
            first_source.append(run(FIRST_PREDICTION_APP, env_lgb, source_only)["s"])
            detail = run(FIRST_PREDICTION_PARTS, env)
            first_parts.append(detail["s"])
            parts.append(detail)
            detail = run(FIRST_PREDICTION_PARTS_NATIVE, env, deployed)
            first_native.append(detail["s"])
            native.append(detail)
        memory = run(MEMORY, env, deployed)
        compile_cost = run(COMPILE_COST, env, source_only)

    med = {m: statistics.median(v) * 1000 for m, v in imports.items()}
    print(f"\nCold start ({rounds} fresh processes each, medians)\n")
    print(f"import azure.functions        {med['azure.functions']:7.1f} ms")
    print(f"import function_app           {med['function_app']:7.1f} ms   "
          f"({med['function_app'] - med['azure.functions']:+.1f} ms over azure.functions)")
    app = statistics.median(first_app) * 1000
    bare = statistics.median(first_parts) * 1000
    print(f"first prediction via the app  {app:7.1f} ms   (imports, download, parse, predict; "
          f"as deployed, with the app's bytecode)")
    compiled = statistics.median(first_compiled) * 1000
    print(f"  with its compiled trees     {compiled:7.1f} ms   ({compiled / app:.2f}x; the artifact "
          f"downloaded, loaded and checked before the first prediction)")
    source = statistics.median(first_source) * 1000
    print(f"  without the app's bytecode  {source:7.1f} ms   ({source - app:+.1f} ms; compiling the "
          f"{compile_cost['modules']} app modules it imports takes {compile_cost['s'] * 1000:.1f} ms, "
          f"best of 5 in one process)")
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
