"""Serving compiled from the first request: a model uploaded with its compiled-trees artifact
is served by the compiled forest from its first ``store.get``, equal to ``Booster.predict`` to
the bit; LightGBM serves, after one warning and one fallback count per model version, when the
artifact is missing, damaged, made for another model version, fails the equality check, or the
CPU lacks a feature; a changed model picks up its own artifact; COMPILED_TREES=false reads none.

Real Azurite, real artifacts: churn_v1, price and a small second version of churn_v1 are
compiled once per module (a few seconds on the 2-core dev box) and uploaded by each test.
"""

from __future__ import annotations

import hashlib
import logging

import lightgbm as lgb
import numpy as np
import pytest

import shared.models.compiled.loader as loader_module
from scorefn.demo.models import CHURN_FEATURES, churn_features, price_features
from shared.app import compiled_trees
from shared.models.blob_source import BlobSource
from shared.models.compiled.artifact import blob_path, header_of, pack, unpack
from shared.models.compiled.build import artifact_key, build_artifact
from shared.models.compiled.caches import MAX_ARTIFACT_BYTES
from shared.models.compiled.check import sample_rows
from shared.models.compiled.loader import ArtifactLoader
from shared.models.compiled.target import can_compile, host_problem
from shared.models.model import parse_model
from shared.models.store import ModelStore
from shared.settings import Settings
from tests.conftest import upload

pytestmark = pytest.mark.skipif(
    not can_compile() or host_problem() is not None,
    reason="needs lleaves/llvmlite and a CPU that runs x86-64-v3 code")

MB = 1024 * 1024


def model_bytes(demo_models, name: str) -> bytes:
    return demo_models[name].path.read_bytes()


def churn_v2_bytes() -> bytes:
    """A second version of churn_v1: same eight features, different (small) trees."""
    rng = np.random.default_rng(3)
    X = churn_features(2000, rng)
    booster = lgb.train({"objective": "binary", "num_leaves": 5, "verbosity": -1, "seed": 1,
                         "num_threads": 1},
                        lgb.Dataset(X, (rng.random(2000) < 0.3).astype(float),
                                    feature_name=list(CHURN_FEATURES)), 8)
    return booster.model_to_string().encode()


@pytest.fixture(scope="module")
def models(demo_models) -> dict[str, bytes]:
    """The model files of this module, as stored: name -> bytes."""
    return {"churn_v1": model_bytes(demo_models, "churn_v1"), "price": model_bytes(demo_models, "price"),
            "churn_v2": churn_v2_bytes()}


@pytest.fixture(scope="module")
def built(models):
    """The checked artifact of each model of this module, built once (as upload-model does)."""
    artifacts = {}
    for name, data in models.items():
        model = parse_model(data, name=name, path=f"{name}.txt", version="built", last_modified=None)
        artifacts[name] = build_artifact(model, timeout=300)
    return artifacts


def store_artifact(container, model_path: str, artifact, data: bytes | None = None) -> str:
    """Put ``artifact`` (or other bytes, ``data``) where the loader looks for the artifact of
    the model blob ``model_path``; its blob path."""
    path = blob_path(model_path, artifact.key)
    container.upload_blob(path, artifact.data if data is None else data, overwrite=True)
    return path


def make_store(container, fallbacks: list | None = None) -> ModelStore:
    """A store as the app builds it, recording what it reports through ``on_fallback``."""
    loader = ArtifactLoader(BlobSource(container, MAX_ARTIFACT_BYTES),
                            on_fallback=None if fallbacks is None else
                            lambda name, reason: fallbacks.append((name, reason)))
    return ModelStore(BlobSource(container, 64 * MB), refresh_seconds=3600, artifacts=loader)


def rows_for(name: str, model_text: str, num_features: int, n: int = 300) -> np.ndarray:
    """Realistic rows (10% missing) and the check's kind of rows (thresholds, NaN, zeros)."""
    rng = np.random.default_rng(17)
    if name.startswith("churn"):
        X = churn_features(n, rng, missing_rate=0.1)
    else:
        X = price_features(n, rng)
        X[rng.random(X.shape) < 0.1] = np.nan
    return np.vstack([X, sample_rows(model_text, num_features, n=200, seed=99)])


def assert_serves_like_lightgbm(model, data: bytes, name: str, backend: str) -> None:
    """Predictions and raw scores, batch and single rows, equal Booster.predict to the bit,
    made by ``backend``."""
    booster = lgb.Booster(model_str=data.decode())
    X = rows_for(name, data.decode(), model.info.num_features)
    for raw in (False, True):
        expected = booster.predict(X, raw_score=raw)
        got, used = model.predict_with_backend(X, raw_score=raw)
        assert used == backend and np.array_equal(got, expected), (name, raw)
        for i in range(0, len(X), 7):
            one, used = model.predict_with_backend(X[i:i + 1], raw_score=raw)
            assert used == backend and np.array_equal(one, expected[i:i + 1]), (name, raw, i)


def compiled_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "scorefn.compiled" and r.levelno == logging.WARNING]


@pytest.fixture
def load_spy(monkeypatch) -> list:
    """Every load of object code into this process through the loader (the real load runs)."""
    calls: list = []
    real = loader_module.load_forest

    def spy(objects, traits):
        calls.append(len(objects))
        return real(objects, traits)

    monkeypatch.setattr(loader_module, "load_forest", spy)
    return calls


@pytest.mark.parametrize("name", ["churn_v1", "price"])
def test_a_model_uploaded_with_its_artifact_serves_compiled_from_its_first_request(
        container, models, built, name, caplog):
    data = models[name]
    store_artifact(container, f"{name}.txt", built[name])  # the artifact first, as upload-model
    upload(container, f"{name}.txt", data)
    fallbacks: list = []
    store = make_store(container, fallbacks)
    with caplog.at_level(logging.INFO, logger="scorefn.compiled"):
        model, cold = store.get(name)
    assert cold and model.backend == "compiled"
    assert_serves_like_lightgbm(model, data, name, "compiled")
    assert store.artifacts.counts == {"compiled": 1} and fallbacks == []
    assert compiled_warnings(caplog) == []
    assert any("serves compiled" in r.getMessage() for r in caplog.records)
    # pred_contrib stays LightGBM's, exactly
    X = rows_for(name, data.decode(), model.info.num_features)[:5]
    contrib, backend = model.predict_with_backend(X, pred_contrib=True)
    assert backend == "lightgbm"
    assert np.array_equal(contrib, lgb.Booster(model_str=data.decode()).predict(X, pred_contrib=True))
    store.close()


def test_without_an_artifact_lightgbm_serves_after_one_warning_per_model_version(
        container, models, caplog):
    upload(container, "m.txt", models["churn_v1"])
    fallbacks: list = []
    store = make_store(container, fallbacks)
    with caplog.at_level(logging.WARNING, logger="scorefn.compiled"):
        model, cold = store.get("m")
        assert cold and model.backend == "lightgbm"
        assert_serves_like_lightgbm(model, models["churn_v1"], "churn_v1", "lightgbm")
        for _ in range(3):  # cache hits and revalidations of the same version
            assert store.get("m") == (model, False)
            assert store.refresh("m") is False
        assert fallbacks == [("m", "missing")]
        (warning,) = compiled_warnings(caplog)
        key, _ = artifact_key(hashlib.sha256(models["churn_v1"]).hexdigest())
        assert model.info.version in warning and blob_path("m.txt", key) in warning
        assert "served by LightGBM" in warning and "(missing)" in warning

        # A new version without an artifact: one more warning, one more fallback.
        upload(container, "m.txt", models["churn_v2"])
        assert store.refresh("m") is True
        new, _ = store.get("m")
        assert new.backend == "lightgbm" and new.info.version != model.info.version
        assert store.refresh("m") is False
    assert fallbacks == [("m", "missing"), ("m", "missing")]
    assert len(compiled_warnings(caplog)) == 2 and new.info.version in compiled_warnings(caplog)[1]
    assert store.artifacts.counts == {"missing": 2}
    store.close()


def test_a_version_loaded_again_after_eviction_warns_once_and_counts_each_load(container, models,
                                                                               caplog):
    for name in ("a", "b"):
        upload(container, f"{name}.txt", models["churn_v1"])
    fallbacks: list = []
    store = make_store(container, fallbacks)
    store._max_cache_bytes = int(len(models["churn_v1"]) * 1.5)  # room for one model only
    with caplog.at_level(logging.WARNING, logger="scorefn.compiled"):
        a, _ = store.get("a")
        store.get("b")  # evicts a
        again, cold = store.get("a")  # the same version of a, loaded again
    assert cold and again.info.version == a.info.version
    assert len(compiled_warnings(caplog)) == 2  # one per model version: a, b
    store.close()
    # The metric counts loads served by LightGBM (its unit is a load): a was loaded twice.
    assert fallbacks == [("a", "missing"), ("b", "missing"), ("a", "missing")]


def test_a_damaged_artifact_is_refused_before_it_is_loaded(container, models, built, load_spy,
                                                          caplog):
    data = bytearray(built["churn_v1"].data)
    data[-100] ^= 0xFF  # one flipped byte inside the object code
    store_artifact(container, "m.txt", built["churn_v1"], bytes(data))
    upload(container, "m.txt", models["churn_v1"])
    fallbacks: list = []
    store = make_store(container, fallbacks)
    with caplog.at_level(logging.WARNING, logger="scorefn.compiled"):
        model, _ = store.get("m")
    assert model.backend == "lightgbm" and load_spy == []
    assert fallbacks == [("m", "damaged")] and store.artifacts.counts == {"damaged": 1}
    (warning,) = compiled_warnings(caplog)
    assert "corrupted" in warning
    assert_serves_like_lightgbm(model, models["churn_v1"], "churn_v1", "lightgbm")
    store.close()


def test_an_artifact_of_another_model_version_is_refused_as_foreign(container, models, built,
                                                                    load_spy, caplog):
    # A valid envelope, but made for churn_v2: stored where churn_v1's artifact belongs.
    key, _ = artifact_key(hashlib.sha256(models["churn_v1"]).hexdigest())
    container.upload_blob(blob_path("m.txt", key), built["churn_v2"].data)
    upload(container, "m.txt", models["churn_v1"])
    fallbacks: list = []
    store = make_store(container, fallbacks)
    with caplog.at_level(logging.WARNING, logger="scorefn.compiled"):
        model, _ = store.get("m")
    assert model.backend == "lightgbm" and load_spy == []  # never reached LLVM
    assert fallbacks == [("m", "foreign")]
    (warning,) = compiled_warnings(caplog)
    assert "another model version" in warning
    assert_serves_like_lightgbm(model, models["churn_v1"], "churn_v1", "lightgbm")
    store.close()


def test_an_artifact_with_the_right_key_but_another_forest_fails_the_check(container, models, built,
                                                                          load_spy, caplog):
    # churn_v2's objects re-wrapped with churn_v1's key and a matching digest: the envelope is
    # right, the forest (same eight features) is not churn_v1's.
    other = built["churn_v2"].data
    header = header_of(other)
    objects, _ = unpack(other, header["key"], header["inputs"])
    key, inputs = artifact_key(hashlib.sha256(models["churn_v1"]).hexdigest())
    container.upload_blob(blob_path("m.txt", key), pack(objects, key, inputs, 0.0))
    upload(container, "m.txt", models["churn_v1"])
    fallbacks: list = []
    store = make_store(container, fallbacks)
    with caplog.at_level(logging.WARNING, logger="scorefn.compiled"):
        model, _ = store.get("m")
    assert load_spy == [len(objects)]  # it loaded, and the check refused it
    assert model.backend == "lightgbm" and fallbacks == [("m", "check_failed")]
    (warning,) = compiled_warnings(caplog)
    assert "differs from LightGBM" in warning
    assert_serves_like_lightgbm(model, models["churn_v1"], "churn_v1", "lightgbm")
    store.close()


def test_a_cpu_lacking_a_feature_serves_lightgbm_without_loading_the_artifact(
        container, models, built, load_spy, monkeypatch, caplog):
    monkeypatch.setattr(loader_module, "host_problem",
                        lambda *a, **k: "this CPU (old) lacks avx2, needed by code built for x86-64-v3")
    store_artifact(container, "m.txt", built["churn_v1"])
    upload(container, "m.txt", models["churn_v1"])
    fallbacks: list = []
    store = make_store(container, fallbacks)
    with caplog.at_level(logging.WARNING, logger="scorefn.compiled"):
        model, _ = store.get("m")
    assert model.backend == "lightgbm" and load_spy == []
    assert fallbacks == [("m", "cpu")]
    (warning,) = compiled_warnings(caplog)
    assert "lacks avx2" in warning
    assert_serves_like_lightgbm(model, models["churn_v1"], "churn_v1", "lightgbm")
    store.close()


def test_a_changed_model_serves_its_own_artifact_and_the_old_version_lets_go(container, models,
                                                                             built):
    store_artifact(container, "m.txt", built["churn_v1"])
    upload(container, "m.txt", models["churn_v1"])
    fallbacks: list = []
    store = make_store(container, fallbacks)
    old, _ = store.get("m")
    assert old.backend == "compiled"
    store_artifact(container, "m.txt", built["churn_v2"])  # the new version's, then the model
    upload(container, "m.txt", models["churn_v2"])
    assert store.refresh("m") is True
    new, cold = store.get("m")
    assert not cold and new is not old and new.info.version != old.info.version
    assert new.backend == "compiled"  # from its first request, too
    assert old.backend == "lightgbm"  # the old version let go of its compiled code
    assert_serves_like_lightgbm(new, models["churn_v2"], "churn_v2", "compiled")
    assert store.artifacts.counts == {"compiled": 2} and fallbacks == []
    store.close()


class RecordingSource(BlobSource):
    """A BlobSource on real storage that remembers which blobs were read."""

    def __init__(self, container, max_bytes: int) -> None:
        super().__init__(container, max_bytes)
        self.read: list[str] = []

    def fetch(self, path, etag=None):
        self.read.append(path)
        return super().fetch(path, etag)


class Fallbacks:
    """The telemetry's compiled-fallback counter, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def record_compiled_fallback(self, model: str, reason: str) -> None:
        self.calls.append((model, reason))


def test_with_compiled_trees_off_no_artifact_is_read(container, models, built):
    store_artifact(container, "churn_v1.txt", built["churn_v1"])
    upload(container, "churn_v1.txt", models["churn_v1"])
    telemetry = Fallbacks()
    artifacts, compiler = compiled_trees(Settings.from_env({"COMPILED_TREES": "false"}), container,
                                         telemetry)
    assert (artifacts, compiler) == (None, None)
    source = RecordingSource(container, 64 * MB)
    store = ModelStore(source, refresh_seconds=3600, artifacts=artifacts, compiler=compiler)
    model, _ = store.get("churn_v1")
    assert model.backend == "lightgbm" and source.read == ["churn_v1.txt"]
    assert_serves_like_lightgbm(model, models["churn_v1"], "churn_v1", "lightgbm")
    assert telemetry.calls == []
    store.close()


def test_compiled_trees_are_on_by_default_and_fallbacks_reach_telemetry(container, models, built):
    store_artifact(container, "churn_v1.txt", built["churn_v1"])
    upload(container, "churn_v1.txt", models["churn_v1"])
    upload(container, "price.txt", models["price"])  # without its artifact
    telemetry = Fallbacks()
    artifacts, compiler = compiled_trees(Settings.from_env({}), container, telemetry)
    assert isinstance(artifacts, ArtifactLoader) and compiler is None
    store = ModelStore(BlobSource(container, 64 * MB), refresh_seconds=3600, artifacts=artifacts)
    assert store.get("churn_v1")[0].backend == "compiled"
    assert store.get("price")[0].backend == "lightgbm"
    assert telemetry.calls == [("price", "missing")]
    store.close()
