"""Single rows and 4-row requests while another Python thread is busy (as the rollout
controller, a telemetry drain or a log writer is): a native call that lets the GIL go waits up
to the switch interval (5 ms) to get it back. The app's calls keep the GIL for single rows and
small batches (``shared/models/native.py``, ``shared/models/compiled/forest.py``); the cases
"lets the GIL go" call the same functions the other way, in the same run.

Model: the demo's ``churn`` (120 trees, 31 leaves), trained into ``bench/.cache``; LightGBM's
fast single-row path and, when llvmlite is installed, the compiled forest.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import CACHE, summary_us  # noqa: E402


def busy(stop: threading.Event) -> None:
    """Pure Python work, as a thread parsing log lines does."""
    while not stop.is_set():
        sum(i * i for i in range(2000))


def compiled_forest(model, data: bytes):
    """The model's compiled forest, loaded as an instance loads it (``None`` without llvmlite)."""
    try:
        from shared.models.blob_source import BlobContent
        from shared.models.compiled.build import build_artifact
        from shared.models.compiled.loader import ArtifactLoader
        from shared.models.store import ModelStore

        artifact = build_artifact(model, model_path="churn.txt", nice=0)
    except Exception as exc:  # llvmlite missing, or no compiler here
        print(f"compiled forest left out: {exc}")
        return None
    blobs = {"churn.txt": data, artifact.path: artifact.data}

    class Source:
        def fetch(self, p, etag=None):
            from shared.errors import ModelNotFound

            if p not in blobs:
                raise ModelNotFound(p)
            return None if etag else BlobContent(blobs[p], "v1", None)

    loaded, _ = ModelStore(Source(), refresh_seconds=3600, artifacts=ArtifactLoader(Source())).get("churn")
    return loaded.compiled


def main() -> None:
    from scorefn.demo.models import churn_features, train_demo_models
    from shared.models.model import parse_model
    from shared.models.native import library

    path = CACHE / "gil_convoy" / "churn.txt"
    if not path.exists():
        train_demo_models(path.parent)
    data = path.read_bytes()
    model = parse_model(data, name="churn", path="churn.txt", version="1", last_modified=None)
    rng = np.random.default_rng(3)
    rows = churn_features(2048, rng)
    cases = {"LightGBM single row, keeps the GIL (the app)":
             lambda i: model.predict_lightgbm(rows[i % 2048:i % 2048 + 1])}
    releasing = library().LGBM_BoosterPredictForMatSingleRowFast

    def lightgbm_releasing(i: int) -> None:
        model._single_row_fast, kept = releasing, model._single_row_fast  # noqa: SLF001
        try:
            model.predict_lightgbm(rows[i % 2048:i % 2048 + 1])
        finally:
            model._single_row_fast = kept  # noqa: SLF001

    cases["LightGBM single row, lets the GIL go"] = lightgbm_releasing
    forest = compiled_forest(model, data)
    if forest is not None:
        cases["compiled, 4 rows, keeps the GIL (the app)"] = \
            lambda i: forest.predict(rows[i % 2044:i % 2044 + 4])
        x = np.ascontiguousarray(rows)
        ptr = ctypes.POINTER(ctypes.c_double)
        out = np.empty(4)

        def compiled_releasing(i: int) -> None:
            s = i % 2044
            forest._fn(x[s:s + 4].ctypes.data_as(ptr), out.ctypes.data_as(ptr), 0, 4)  # noqa: SLF001

        cases["compiled, 4 rows, lets the GIL go"] = compiled_releasing
    for case in cases.values():
        for i in range(200):
            case(i)
    results: dict[str, dict[str, list[float]]] = {"idle": {}, "busy thread": {}}
    for label in results:
        stop = threading.Event()
        thread = threading.Thread(target=busy, args=(stop,), daemon=True)
        if label == "busy thread":
            thread.start()
        for _ in range(5):  # rounds, cases interleaved
            for name, case in cases.items():
                samples = results[label].setdefault(name, [])
                for i in range(300):
                    start = time.perf_counter()
                    case(i)
                    samples.append(time.perf_counter() - start)
        stop.set()
    print(f"\nnative calls with another Python thread busy (switch interval "
          f"{sys.getswitchinterval() * 1000:g} ms)\n")
    print(f"{'case':46s} {'idle p50':>9s} {'p99':>8s} {'busy p50':>9s} {'p99':>8s} {'busy/idle p99':>14s}")
    for name in cases:
        i50, _, i99 = summary_us(results["idle"][name])
        b50, _, b99 = summary_us(results["busy thread"][name])
        print(f"{name:46s} {i50:9.1f} {i99:8.1f} {b50:9.1f} {b99:8.1f} {b99 / i99:14.1f}")


if __name__ == "__main__":
    main()
