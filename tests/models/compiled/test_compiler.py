"""The on-instance compiler (COMPILE_ON_INSTANCE, off by default): LightGBM serves until a
checked compiled forest takes over; equal to Booster.predict to the bit; artifacts cached and
shared through the models container; bad artifacts refused; a changed model gets its own
artifact.

Real Azurite, real compilations of the small demo models (each well under 5 s here); the four
demo models are compiled once per module and their artifacts reused by the later tests.
"""

from __future__ import annotations

import gc
import hashlib
import time
import uuid
import weakref

import lightgbm as lgb
import numpy as np
import orjson
import pytest

from scorefn.demo.models import CHURN_FEATURES, churn_features, price_features, segment_features
from shared.models.blob_source import BlobSource
from shared.models.compiled.artifact import blob_path, header_of, pack, unpack
from shared.models.compiled.build import artifact_key
from shared.models.compiled.check import sample_rows
from shared.models.compiled.compiler import Compiler, CompileStats, make_compiler
from shared.models.compiled.target import can_compile
from shared.models.store import ModelStore
from shared.scoring.service import ScoringService
from shared.settings import Settings
from tests.azurite_support import new_container
from tests.conftest import upload

pytestmark = pytest.mark.skipif(not can_compile(), reason="lleaves/llvmlite not installed")

MB = 1024 * 1024
MODELS = ("churn", "churn_v1", "price", "segment")
WAIT = 120  # seconds; compiling all four demo models takes ~10 s on the 2-core dev box


def make_store(container, cache_dir, **compiler_kwargs) -> ModelStore:
    compiler_kwargs.setdefault("poll_seconds", 0.1)
    compiler = Compiler(compiler_kwargs.pop("patterns", ("*",)), container=container,
                        cache_dir=cache_dir, **compiler_kwargs)
    return ModelStore(BlobSource(container, 64 * MB), refresh_seconds=3600, compiler=compiler)


def rows_for(name: str, n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(11)
    X = {"churn": churn_features, "churn_v1": churn_features}.get(name)
    if X is not None:
        return X(n, rng, missing_rate=0.1)
    X = price_features(n, rng) if name == "price" else segment_features(n, rng)
    X[rng.random(X.shape) < 0.1] = np.nan
    return X


def artifacts(container) -> list[str]:
    return sorted(b.name for b in container.list_blobs(name_starts_with=".compiled/"))


@pytest.fixture(scope="module")
def models_container(azurite, demo_models):

    client = new_container(azurite.connection_string, f"c{uuid.uuid4().hex[:20]}")
    for name in MODELS:
        upload(client, f"{name}.txt", demo_models[name].path)
    yield client
    client.delete_container()


@pytest.fixture(scope="module")
def warm(models_container, demo_models, tmp_path_factory):
    """One store with every demo model compiled; what the first requests saw, recorded."""
    store = make_store(models_container, tmp_path_factory.mktemp("cache"))
    first = {}
    for name in MODELS:
        X = rows_for(name, 1)
        start = time.perf_counter()
        model, cold = store.get(name)
        _, backend = model.predict_with_backend(X)
        first[name] = (backend, time.perf_counter() - start, cold)
    assert store.compiler.wait_idle(WAIT)
    yield store, first
    store.close()


def test_off_never_compiles(container, demo_models, tmp_path):
    upload(container, "churn.txt", demo_models["churn"].path)
    store = ModelStore(BlobSource(container, 64 * MB), refresh_seconds=3600,
                       compiler=make_compiler(Settings.from_env({}), container))
    assert store.compiler is None
    service = ScoringService(Settings.from_env({}), store)
    result = service.score("churn", orjson.dumps({"rows": rows_for("churn", 3).tolist()}))
    assert result.backend == "lightgbm"
    # Opted in, but for other models only: nothing is queued, no child process is started.
    other = make_store(container, tmp_path, patterns=("price*",))
    model, _ = other.get("churn")
    assert other.compiler.wait_idle(5) and other.compiler.stats == CompileStats()
    assert model.backend == "lightgbm" and artifacts(container) == []
    other.close()


def test_requests_right_after_load_are_served_by_lightgbm_then_compiled(warm):
    store, first = warm
    for name in MODELS:
        backend, seconds, cold = first[name]
        assert cold and backend == "lightgbm", name
        model, _ = store.get(name)
        assert model.backend == "compiled", name
    # The first request did not wait for the compilation (churn: ~2-4 s to compile).
    churn, _ = store.get("churn")
    outcome = store.compiler.outcomes[f"churn@{churn.info.version}"]
    assert outcome.reason == "compiled" and first["churn"][1] < outcome.extra["compile_seconds"]
    assert store.compiler.stats.compiles == 4 and store.compiler.stats.attached == 4


@pytest.mark.parametrize("name", MODELS)
def test_compiled_predictions_equal_booster_predict_to_the_bit(warm, demo_models, name):
    store, _ = warm
    model, _ = store.get(name)
    booster = lgb.Booster(model_file=str(demo_models[name].path))
    X = np.vstack([rows_for(name), sample_rows(
        model.booster.model_to_string(), model.info.num_features, n=256, seed=5)])
    for raw in (False, True):
        got, backend = model.predict_with_backend(X, raw_score=raw)
        expected = booster.predict(X, raw_score=raw)
        assert backend == "compiled" and np.array_equal(got, expected)
        assert np.array_equal(model.predict(X, raw_score=raw, num_threads=2), expected)
        for i in range(0, 40):
            one, backend = model.predict_with_backend(X[i:i + 1], raw_score=raw)
            assert backend == "compiled" and np.array_equal(one, expected[i:i + 1])
    # pred_contrib is always LightGBM's, exactly.
    contrib, backend = model.predict_with_backend(X[:5], pred_contrib=True)
    assert backend == "lightgbm" and np.array_equal(contrib, booster.predict(X[:5], pred_contrib=True))
    expected_shape = {"segment": (len(X), 3)}.get(name, (len(X),))
    assert model.predict(X).shape == expected_shape


def test_the_service_says_which_backend_scored(warm):
    store, _ = warm
    service = ScoringService(Settings.from_env({}), store)
    body = {"rows": rows_for("price", 2).tolist()}
    assert service.score("price", orjson.dumps(body)).backend == "compiled"
    contrib = service.score("price", orjson.dumps({**body, "options": {"pred_contrib": True}}))
    assert contrib.backend == "lightgbm"


def test_a_second_instance_loads_the_artifacts_instead_of_compiling(warm, models_container, tmp_path):
    names = artifacts(models_container)
    assert len(names) == 4 and not [n for n in names if n.endswith(".lock")]
    assert {n.split("/")[1] for n in names} == {f"{m}.txt" for m in MODELS}
    other = make_store(models_container, tmp_path / "b")
    for name in MODELS:
        other.get(name)
    assert other.compiler.wait_idle(WAIT)
    stats = other.compiler.stats
    assert (stats.compiles, stats.blob_hits, stats.attached) == (0, 4, 4)
    assert all(other.get(n)[0].backend == "compiled" for n in MODELS)
    other.close()
    # and a restart on the same machine finds them on local disk
    again = make_store(models_container, tmp_path / "b")
    again.get("churn_v1")
    assert again.compiler.wait_idle(WAIT)
    assert (again.compiler.stats.compiles, again.compiler.stats.local_hits) == (0, 1)
    again.close()


def test_instances_compiling_at_once_share_one_compilation(container, demo_models, tmp_path):
    upload(container, "m.txt", demo_models["churn_v1"].path)
    stores = [make_store(container, tmp_path / str(i)) for i in range(2)]
    for store in stores:
        store.get("m")
    assert all(store.compiler.wait_idle(WAIT) for store in stores)
    # one compiled; the other waited for its lock to go, or found the artifact: it loaded it
    assert sorted((s.compiler.stats.compiles, s.compiler.stats.blob_hits) for s in stores) == \
        [(0, 1), (1, 0)]
    assert all(store.get("m")[0].backend == "compiled" for store in stores)
    assert [n for n in artifacts(container) if n.endswith(".lock")] == []
    for store in stores:
        store.close()


def test_a_corrupted_artifact_is_refused_and_replaced(container, demo_models, tmp_path):
    upload(container, "m.txt", demo_models["churn_v1"].path)
    first = make_store(container, tmp_path / "a")
    first.get("m")
    assert first.compiler.wait_idle(WAIT) and first.compiler.stats.compiles == 1
    first.close()
    (name,) = artifacts(container)
    data = bytearray(container.download_blob(name).readall())
    data[-100] ^= 0xFF  # one flipped byte inside the object code
    container.upload_blob(name, bytes(data), overwrite=True)
    second = make_store(container, tmp_path / "b")
    model, _ = second.get("m")
    assert second.compiler.wait_idle(WAIT)
    stats = second.compiler.stats
    assert (stats.rejected_artifacts, stats.compiles, stats.uploads) == (1, 1, 1)
    reasons = [(o.reason, o.detail) for _, o in second.compiler.history]
    assert reasons[0][0] == "rejected_blob" and "corrupted" in reasons[0][1]
    assert reasons[1][0] == "compiled"
    assert model.backend == "compiled"
    assert container.download_blob(name).readall() != bytes(data)  # replaced by a good one
    second.close()


def test_a_foreign_artifact_is_refused_or_fails_the_check(warm, models_container, container,
                                                          demo_models, tmp_path):
    # The compiled churn forest (same 8 features) offered as the artifact of m.txt = churn_v1.
    (churn_name,) = [n for n in artifacts(models_container) if n.startswith(".compiled/churn.txt/")]
    churn_artifact = models_container.download_blob(churn_name).readall()
    upload(container, "m.txt", demo_models["churn_v1"].path)
    key, inputs = artifact_key(hashlib.sha256(demo_models["churn_v1"].path.read_bytes()).hexdigest())
    path = blob_path("m.txt", key)
    booster = lgb.Booster(model_file=str(demo_models["churn_v1"].path))
    X = rows_for("churn_v1")

    # 1. as it is: its envelope names another key, so it never reaches LLVM
    container.upload_blob(path, churn_artifact, overwrite=True)
    store = make_store(container, tmp_path / "a")
    model, _ = store.get("m")
    assert store.compiler.wait_idle(WAIT)
    assert store.compiler.stats.rejected_artifacts == 1 and store.compiler.stats.compiles == 1
    assert "another model" in store.compiler.history[0][1].detail
    assert model.backend == "compiled" and np.array_equal(model.predict(X), booster.predict(X))
    store.close()

    # 2. re-wrapped with the right key and digest: it loads, but predicts churn, not churn_v1
    header = header_of(churn_artifact)
    objects, _ = unpack(churn_artifact, header["key"], header["inputs"])
    container.upload_blob(path, pack(objects, key, inputs, 0.0), overwrite=True)
    store = make_store(container, tmp_path / "b")
    model, _ = store.get("m")
    assert store.compiler.wait_idle(WAIT)
    assert store.compiler.stats.rejected_artifacts == 1 and store.compiler.stats.compiles == 1
    (_, refused), (_, compiled_own) = store.compiler.history
    assert refused.reason == "rejected_blob" and "differs from LightGBM" in refused.detail
    assert compiled_own.reason == "compiled"
    assert model.backend == "compiled" and np.array_equal(model.predict(X), booster.predict(X))
    store.close()


def test_a_changed_model_gets_lightgbm_first_then_its_own_artifact(container, demo_models, tmp_path):
    upload(container, "m.txt", demo_models["churn_v1"].path)
    store = make_store(container, tmp_path)
    old, _ = store.get("m")
    assert store.compiler.wait_idle(WAIT) and old.backend == "compiled"
    rng = np.random.default_rng(3)
    X = churn_features(2000, rng)
    changed = lgb.train({"objective": "binary", "num_leaves": 5, "verbosity": -1, "seed": 1},
                        lgb.Dataset(X, (rng.random(2000) < 0.3).astype(float),
                                    feature_name=list(CHURN_FEATURES)), 8)
    upload(container, "m.txt", changed.model_to_string().encode())
    assert store.refresh("m") is True
    new, _ = store.get("m")
    assert new.predict_with_backend(X[:1])[1] == "lightgbm"  # right after the swap
    assert old.backend == "lightgbm"  # the old version let go of its compiled code
    assert store.compiler.wait_idle(WAIT)
    assert new.backend == "compiled" and store.compiler.stats.compiles == 2
    assert np.array_equal(new.predict(X), changed.predict(X))
    names = artifacts(container)
    assert len(names) == 2 and all(n.startswith(".compiled/m.txt/") for n in names)
    store.close()


def test_eviction_frees_the_compiled_code(container, demo_models, tmp_path):
    for name in ("a", "b"):
        upload(container, f"{name}.txt", demo_models["churn_v1"].path)
    size = demo_models["churn_v1"].path.stat().st_size
    store = make_store(container, tmp_path, max_pending=4)
    store._max_cache_bytes = int(size * 1.5)
    a, _ = store.get("a")
    assert store.compiler.wait_idle(WAIT) and a.backend == "compiled"
    forest = weakref.ref(a.compiled)
    store.get("b")
    assert [info.name for info in store.loaded()] == ["b"]
    assert a.backend == "lightgbm"
    gc.collect()
    assert forest() is None
    store.close()


def test_unsupported_models_stay_on_lightgbm(container, tmp_path):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(600, 3))
    X[:, 2] = rng.integers(0, 4, 600)
    y = X[:, 0] + X[:, 2] + rng.normal(size=600) * 0.1
    linear = lgb.train({"objective": "regression", "linear_tree": True, "verbosity": -1},
                       lgb.Dataset(X, y), 4)
    categorical = lgb.train({"objective": "regression", "verbosity": -1},
                            lgb.Dataset(X, y, categorical_feature=[2]), 4)
    upload(container, "linear.txt", linear.model_to_string().encode())
    upload(container, "cat.txt", categorical.model_to_string().encode())
    store = make_store(container, tmp_path)
    for name, booster in (("linear", linear), ("cat", categorical)):
        model, _ = store.get(name)
        assert store.compiler.wait_idle(WAIT)
        assert model.backend == "lightgbm"
        assert np.array_equal(model.predict(X), booster.predict(X))
    reasons = {o.reason: o.detail for o in store.compiler.outcomes.values()}
    assert set(reasons) == {"unsupported"} and len(store.compiler.outcomes) == 2
    assert store.compiler.stats.compiles == 0 and artifacts(container) == []
    store.close()


def test_a_failed_check_or_compilation_keeps_lightgbm(container, demo_models, tmp_path):
    upload(container, "m.txt", demo_models["churn_v1"].path)
    strict = make_store(container, tmp_path / "a", tolerance=-1.0)  # no forest can pass
    model, _ = strict.get("m")
    assert strict.compiler.wait_idle(WAIT)
    stats = strict.compiler.stats
    assert (stats.compiles, stats.check_failures, stats.uploads) == (1, 1, 0)
    assert model.backend == "lightgbm" and artifacts(container) == []
    strict.compiler.submit("m", model, lambda m: True)  # this version is not tried again
    assert strict.compiler.wait_idle(WAIT) and strict.compiler.stats.compiles == 1
    strict.close()

    slow = make_store(container, tmp_path / "b", timeout_seconds=0.05)
    model, _ = slow.get("m")
    assert slow.compiler.wait_idle(WAIT)
    assert slow.compiler.stats.failures == 1 and model.backend == "lightgbm"
    assert slow.compiler.outcomes[f"m@{model.info.version}"].reason == "timeout"
    assert artifacts(container) == []  # no artifact, and the lock was released
    slow.close()
