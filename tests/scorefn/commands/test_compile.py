"""Compiled trees built at upload: ``upload-model`` compiles a model's trees by default and
uploads the checked artifact before the model, so a store serves it compiled from its first
request; ``--no-compile`` and models lleaves cannot compile upload no artifact; ``compile-model``
builds the artifact of a model already in storage, once unless ``--force``.

Real Azurite, real compilations of the small churn_v1 demo model (about a second each).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import uuid

import lightgbm as lgb
import numpy as np
import pytest

from scorefn.__main__ import main as cli
from scorefn.demo.models import churn_features
from shared.models.blob_source import BlobSource
from shared.models.compiled.artifact import blob_path, header_of
from shared.models.compiled.build import artifact_key
from shared.models.compiled.caches import MAX_ARTIFACT_BYTES
from shared.models.compiled.loader import ArtifactLoader
from shared.models.compiled.target import can_compile, host_problem
from shared.models.store import ModelStore
from tests.azurite_support import new_container
from tests.conftest import upload

pytestmark = pytest.mark.skipif(
    not can_compile() or host_problem() is not None,
    reason="needs lleaves/llvmlite and a CPU that runs x86-64-v3 code")

MB = 1024 * 1024
QUICK = ("--no-latency-check",)  # the latency check has its own specification


def storage(container, azurite) -> tuple[str, ...]:
    return ("--container", container.container_name, "--connection-string", azurite.connection_string)


def upload_model(container, azurite, *args: str) -> int:
    return cli(["upload-model", *args, *QUICK, *storage(container, azurite)])


def compile_model(container, azurite, *args: str) -> int:
    return cli(["compile-model", *args, *storage(container, azurite)])


def compiled_blobs(container) -> list[str]:
    return sorted(b.name for b in container.list_blobs(name_starts_with=".compiled/"))


def expected_artifact(model_path: str, data: bytes) -> str:
    """Where the artifact of the model file ``data`` stored at ``model_path`` belongs."""
    key, _ = artifact_key(hashlib.sha256(data).hexdigest())
    return blob_path(model_path, key)


def make_store(container) -> tuple[ModelStore, list]:
    fallbacks: list = []
    loader = ArtifactLoader(BlobSource(container, MAX_ARTIFACT_BYTES),
                            on_fallback=lambda name, reason: fallbacks.append((name, reason)))
    return ModelStore(BlobSource(container, 64 * MB), refresh_seconds=3600, artifacts=loader), fallbacks


def assert_equals_booster_predict(model, data: bytes) -> None:
    booster = lgb.Booster(model_str=data.decode())
    X = churn_features(300, np.random.default_rng(5), missing_rate=0.1)
    for raw in (False, True):
        expected = booster.predict(X, raw_score=raw)
        assert np.array_equal(model.predict(X, raw_score=raw), expected)
        for i in range(0, len(X), 10):
            assert np.array_equal(model.predict(X[i:i + 1], raw_score=raw), expected[i:i + 1])


@pytest.fixture(scope="module")
def uploaded(azurite, demo_models):
    """churn_v1 uploaded once by ``upload-model`` with its defaults: (container, output)."""
    container = new_container(azurite.connection_string, f"u{uuid.uuid4().hex[:20]}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = upload_model(container, azurite, str(demo_models["churn_v1"].path), "churn_v1")
    assert code == 0, out.getvalue()
    yield container, out.getvalue()
    container.delete_container()


def test_upload_model_compiles_by_default_and_uploads_the_artifact_before_the_model(uploaded,
                                                                                    demo_models):
    container, out = uploaded
    data = demo_models["churn_v1"].path.read_bytes()
    where = expected_artifact("churn_v1.txt", data)
    assert compiled_blobs(container) == [where]
    artifact = container.get_blob_client(where)
    assert header_of(artifact.download_blob().readall())["key"] == where.split("/")[-1][:-4]
    assert artifact.get_blob_properties().metadata["scorefn_model"] == "churn_v1.txt"
    assert container.download_blob("churn_v1.txt").readall() == data
    # compiled and checked, then the artifact uploaded, then the model
    built = out.index("compiled trees: built in")
    artifact_line = out.index(f"compiled trees: uploaded {container.container_name}/{where}")
    model_line = out.index(f"uploaded {container.container_name}/churn_v1.txt ")
    assert built < artifact_line < model_line
    assert "equal to LightGBM" in out and out.rstrip().endswith("served compiled")
    model_props = container.get_blob_client("churn_v1.txt").get_blob_properties()
    assert artifact.get_blob_properties().creation_time <= model_props.creation_time


def test_a_store_serves_the_uploaded_model_compiled_from_its_first_get(uploaded, demo_models):
    container, _ = uploaded
    store, fallbacks = make_store(container)
    model, cold = store.get("churn_v1")
    assert cold and model.backend == "compiled" and fallbacks == []
    assert_equals_booster_predict(model, demo_models["churn_v1"].path.read_bytes())
    store.close()


def test_a_gzip_model_gets_its_artifact_beside_the_compressed_blob(container, azurite, demo_models,
                                                                   capsys):
    data = demo_models["churn_v1"].path.read_bytes()
    assert upload_model(container, azurite, str(demo_models["churn_v1"].path), "m", "--gzip") == 0
    assert capsys.readouterr().out.rstrip().endswith("served compiled")
    assert compiled_blobs(container) == [expected_artifact("m.txt.gz", data)]
    store, fallbacks = make_store(container)
    model, _ = store.get("m")
    assert model.backend == "compiled" and fallbacks == []
    assert_equals_booster_predict(model, data)
    store.close()


def test_no_compile_uploads_the_model_without_an_artifact(container, azurite, demo_models, capsys):
    assert upload_model(container, azurite, str(demo_models["churn_v1"].path), "churn_v1",
                        "--no-compile") == 0
    out = capsys.readouterr().out
    assert "compiled trees" not in out and "served compiled" not in out
    assert container.get_blob_client("churn_v1.txt").exists() and compiled_blobs(container) == []
    store, fallbacks = make_store(container)
    assert store.get("churn_v1")[0].backend == "lightgbm" and fallbacks == [("churn_v1", "missing")]
    store.close()


def test_a_model_with_categorical_features_is_uploaded_for_lightgbm_to_serve(container, azurite,
                                                                            demo_models, capsys):
    assert upload_model(container, azurite, str(demo_models["plans"].path), "plans") == 0
    out = capsys.readouterr().out
    assert "compiled trees: not for this model:" in out
    assert "LightGBM will serve this model" in out and "served compiled" not in out
    assert "compile-model" not in out  # building it later would not help
    assert container.get_blob_client("plans.txt").exists() and compiled_blobs(container) == []


def test_compile_model_builds_the_artifact_of_a_model_in_storage_once_unless_forced(
        container, azurite, demo_models, capsys):
    data = demo_models["churn_v1"].path.read_bytes()
    upload(container, "churn_v1.txt", data)
    where = expected_artifact("churn_v1.txt", data)

    assert compile_model(container, azurite, "churn_v1") == 0
    out = capsys.readouterr().out
    assert "compiled trees: built in" in out
    assert f"compiled trees: uploaded {container.container_name}/{where}" in out
    assert compiled_blobs(container) == [where]
    first = container.get_blob_client(where).get_blob_properties().etag
    store, fallbacks = make_store(container)
    model, _ = store.get("churn_v1")
    assert model.backend == "compiled" and fallbacks == []
    assert_equals_booster_predict(model, data)
    store.close()

    assert compile_model(container, azurite, "churn_v1") == 0
    out = capsys.readouterr().out
    assert f"churn_v1: already compiled ({container.container_name}/{where})" in out
    assert "built in" not in out
    assert container.get_blob_client(where).get_blob_properties().etag == first

    assert compile_model(container, azurite, "churn_v1", "--force") == 0
    out = capsys.readouterr().out
    assert "compiled trees: built in" in out and "already compiled" not in out
    assert container.get_blob_client(where).get_blob_properties().etag != first
    assert compiled_blobs(container) == [where]


def test_compile_model_of_a_missing_model_exits_1_with_one_error_line(container, azurite, capsys):
    assert compile_model(container, azurite, "nope") == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("nope: model_not_found:") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err and compiled_blobs(container) == []


def test_compile_model_compiles_the_models_it_finds_and_fails_for_the_missing_one(
        container, azurite, demo_models, capsys):
    data = demo_models["churn_v1"].path.read_bytes()
    upload(container, "churn_v1.txt", data)
    assert compile_model(container, azurite, "nope", "churn_v1") == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("nope: model_not_found:") and captured.err.count("\n") == 1
    assert compiled_blobs(container) == [expected_artifact("churn_v1.txt", data)]
