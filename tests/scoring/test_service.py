"""The scoring entry point: predictions equal lightgbm.Booster.predict for every format and
model kind, through a real model store on Azurite and a JSON round trip."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import orjson
import pytest

from shared.errors import PayloadTooLarge, UnsupportedMediaType
from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.payloads import encode_score_response, encode_v2_response
from shared.scoring.service import ScoringService
from shared.settings import Settings
from tests.conftest import upload

KINDS = ["churn", "price", "segment"]


@pytest.fixture
def service(container, demo_models):
    for name in KINDS:
        upload(container, f"{name}.txt", demo_models[name].path)
    store = ModelStore(BlobSource(container, 64 * 1024 * 1024), refresh_seconds=3600)
    return ScoringService(Settings.from_env({}), store)


def sample_rows(n_features: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(40, 30, size=(n, n_features))
    X[rng.random(X.shape) < 0.05] = np.nan
    return X


def as_json_rows(X: np.ndarray) -> list:
    return [[None if np.isnan(v) else float(v) for v in row] for row in X]


def reference(demo_models, name, X, **kwargs):
    return lgb.Booster(model_file=str(demo_models[name].path)).predict(X, **kwargs)


def round_trip(result) -> np.ndarray:
    """Predictions as a client sees them: encoded to JSON and decoded again."""
    body = encode_score_response(result.predictions, result.model.to_dict(), "r")
    return np.array(orjson.loads(body)["predictions"])


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("n", [1, 7, 2500], ids=["one-row", "few-rows", "parallel-batch"])
def test_rows_equal_booster_predict(service, demo_models, name, n):
    X = sample_rows(len(demo_models[name].feature_names), n)
    body = orjson.dumps({"rows": as_json_rows(X)})
    result = service.score(name, body, content_type="application/json")
    assert np.array_equal(round_trip(result), reference(demo_models, name, X))
    assert result.model.name == name


@pytest.mark.parametrize("name", KINDS)
def test_records_equal_booster_predict(service, demo_models, name):
    names = demo_models[name].feature_names
    X = sample_rows(len(names), 50, seed=3)
    records = [{f: float(v) for f, v in zip(names, row) if not np.isnan(v)} for row in X]
    result = service.score(name, orjson.dumps({"records": records}))
    assert np.array_equal(round_trip(result), reference(demo_models, name, X))


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("n", [1, 30])
def test_v2_equals_booster_predict(service, demo_models, name, n):
    X = sample_rows(len(demo_models[name].feature_names), n, seed=5)
    doc = {"id": "abc", "inputs": [{"name": "input-0", "shape": list(X.shape), "datatype": "FP64",
                                     "data": as_json_rows(X)}]}
    result = service.score(name, orjson.dumps(doc), fmt="v2")
    body = encode_v2_response(result.predictions, model_name=name, model_version=result.model.version,
                              request_id=result.request.request_id)
    out = orjson.loads(body)["outputs"][0]
    expected = reference(demo_models, name, X)
    assert out["shape"] == list(expected.shape)
    assert np.array_equal(np.array(out["data"]).reshape(out["shape"]), expected)


@pytest.mark.parametrize("n", [1, 20])
@pytest.mark.parametrize("name", KINDS)
def test_raw_scores_equal_booster_predict(service, demo_models, name, n):
    X = sample_rows(len(demo_models[name].feature_names), n, seed=9)
    body = orjson.dumps({"rows": as_json_rows(X), "options": {"raw_score": True}})
    result = service.score(name, body)
    assert np.array_equal(round_trip(result), reference(demo_models, name, X, raw_score=True))


@pytest.mark.parametrize("name", KINDS)
def test_contributions_equal_booster_predict(service, demo_models, name):
    X = sample_rows(len(demo_models[name].feature_names), 3, seed=4)
    body = orjson.dumps({"rows": as_json_rows(X), "options": {"pred_contrib": True}})
    result = service.score(name, body)
    expected = reference(demo_models, name, X, pred_contrib=True)
    assert np.array_equal(round_trip(result), expected)
    # contributions plus the expected value add up to the raw score
    raw = reference(demo_models, name, X, raw_score=True)
    if raw.ndim == 1:
        assert np.allclose(expected.sum(axis=1), raw)


def test_the_first_request_is_cold_and_the_next_is_not(service):
    body = orjson.dumps({"rows": [[1, 2, 3, 4, 5, 6]]})
    assert service.score("price", body).cold is True
    assert service.score("price", body).cold is False


def test_non_json_content_type_is_415(service):
    with pytest.raises(UnsupportedMediaType) as err:
        service.score("price", b"a,b", content_type="text/csv")
    assert err.value.status == 415
    service.score("price", orjson.dumps({"rows": [[1] * 6]}), content_type="application/json; charset=utf-8")


def test_oversized_body_is_413_before_parsing(container, demo_models):
    upload(container, "price.txt", demo_models["price"].path)
    store = ModelStore(BlobSource(container, 64 * 1024 * 1024))
    service = ScoringService(Settings.from_env({"MAX_REQUEST_BYTES": "2048"}), store)
    body = orjson.dumps({"rows": [[1.5] * 6] * 200})
    with pytest.raises(PayloadTooLarge):
        service.score("price", body)
    assert store.stats.downloads == 0  # rejected before touching storage


def test_v2_metadata_describes_inputs_and_outputs(service, demo_models):
    meta = service.status.metadata("segment")
    assert meta["name"] == "segment" and meta["platform"] == "lightgbm"
    assert meta["inputs"][0]["shape"] == [-1, 4]
    assert [i["name"] for i in meta["inputs"][1:]] == list(demo_models["segment"].feature_names)
    assert meta["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1, 3]}]


def test_pinning_a_variant_without_a_router_config_is_refused_not_ignored(service):
    from shared.errors import OverrideNotAllowed

    body = orjson.dumps({"rows": as_json_rows(sample_rows(6, 1))})
    with pytest.raises(OverrideNotAllowed) as raised:
        service.score("price", body, headers={"x-scorefn-variant": "candidate"})
    assert raised.value.status == 403 and raised.value.code == "override_not_allowed"
    assert service.score("price", body, headers={"x-scorefn-variant": ""}).variant == "default"


# -- the direct path for {"rows": [[numbers]]} ---------------------------------------------


@pytest.fixture
def read_directly(monkeypatch):
    """Scoring must read the body straight into its matrix: decoding it whole fails the test."""
    def no_decoding(body):
        raise AssertionError("this body should have been read directly")

    monkeypatch.setattr("shared.scoring.service.decode_json", no_decoding)


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("n", [1, 7, 2500], ids=["one-row", "few-rows", "parallel-batch"])
def test_rows_of_plain_numbers_skip_decoding_and_equal_booster_predict(service, demo_models, name,
                                                                        n, read_directly):
    X = np.random.default_rng(9).normal(40, 30, size=(n, len(demo_models[name].feature_names)))
    X[:, 0] = np.round(X[:, 0])  # integers are numbers too
    rows = [[int(row[0])] + row[1:].tolist() for row in X]
    result = service.score(name, orjson.dumps({"rows": rows}))
    assert np.array_equal(round_trip(result), reference(demo_models, name, X))


@pytest.mark.parametrize("sticky", [None, "user"], ids=["no-key", "key-in-the-body"])
def test_a_shadow_taking_other_features_reads_a_directly_read_body_again(container, demo_models,
                                                                           tmp_path, sticky):
    import json

    from shared.router import RouterConfigSource, RouterHolder, ShadowRunner

    names = demo_models["churn"].feature_names
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, len(names)))
    renamed = lgb.train({"objective": "regression", "verbose": -1, "num_leaves": 4},
                        lgb.Dataset(X, X[:, 0], feature_name=[f"other_{n}" for n in names]), 3)
    renamed.save_model(str(tmp_path / "renamed.txt"))
    upload(container, "churn.txt", demo_models["churn"].path)
    upload(container, "renamed.txt", tmp_path / "renamed.txt")
    config = {"endpoints": {"churn": {"variants": [{"name": "main", "model": "churn.txt"}],
                                      "shadow": [{"name": "other", "model": "renamed.txt",
                                                  "fraction": 1.0}]}}}
    if sticky:  # the body's extra field is the sticky key: the shadow's parse allows it too
        config["endpoints"]["churn"]["sticky"] = {"body": sticky}
    runner = ShadowRunner(workers=1)
    service = ScoringService(Settings.from_env({}),
                             ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600),
                             routing=RouterHolder(RouterConfigSource(inline=json.dumps(config))),
                             shadows=runner)
    row = X[:1]
    body = {"rows": row.tolist(), **({sticky: "u-1"} if sticky else {})}
    result = service.score("churn", orjson.dumps(body))
    runner.close()
    assert np.array_equal(round_trip(result), reference(demo_models, "churn", row))
    assert (runner.stats.completed, runner.stats.failed) == (1, 0)


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("n", [1, 7, 2500], ids=["one-row", "few-rows", "parallel-batch"])
def test_one_fp64_v2_tensor_skips_decoding_and_equals_booster_predict(service, demo_models, name,
                                                                      n, read_directly):
    X = np.random.default_rng(11).normal(40, 30, size=(n, len(demo_models[name].feature_names)))
    doc = {"id": "req-9", "inputs": [{"name": "input-0", "shape": list(X.shape),
                                      "datatype": "FP64", "data": X.reshape(-1).tolist()}]}
    result = service.score(name, orjson.dumps(doc), fmt="v2")
    assert np.array_equal(result.predictions, reference(demo_models, name, X))
    assert result.request.request_id == "req-9"


def test_a_v2_tensor_named_after_a_feature_is_still_a_column(service, demo_models):
    from shared.errors import InvalidPayload

    names = demo_models["price"].feature_names
    doc = {"inputs": [{"name": names[0], "shape": [1, len(names)], "datatype": "FP64",
                       "data": [1.0] * len(names)}]}
    with pytest.raises(InvalidPayload) as err:  # parse_v2's rule: one column of shape [n]
        service.score("price", orjson.dumps(doc), fmt="v2")
    assert err.value.code == "shape_mismatch"


def test_a_sticky_key_in_the_v2_id_routes_a_directly_read_body(container, demo_models):
    import json

    from shared.router import RouterConfigSource, RouterHolder

    upload(container, "churn.txt", demo_models["churn"].path)
    upload(container, "churn_v1.txt", demo_models["churn_v1"].path)
    config = {"endpoints": {"churn": {
        "variants": [{"name": "a", "model": "churn.txt"}, {"name": "b", "model": "churn_v1.txt"}],
        "sticky": {"body": "id"}}}}
    service = ScoringService(Settings.from_env({}),
                             ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600),
                             routing=RouterHolder(RouterConfigSource(inline=json.dumps(config))))
    width = len(demo_models["churn"].feature_names)
    for user in ("user-1", "user-2", "user-3"):
        doc = {"id": user, "inputs": [{"name": "x", "shape": [1, width], "datatype": "FP64",
                                       "data": [1.0] * width}]}
        result = service.score("churn", orjson.dumps(doc), fmt="v2")
        assert (result.route.key, result.route.how) == (user, "sticky")
        assert result.variant == service.route("churn", key=user).variant


def test_a_request_whose_response_would_be_too_large_is_refused_before_predicting(service):
    service.settings = Settings.from_env({"MAX_RESPONSE_VALUES": "300"})
    rows = {"records": [{}] * 40, "options": {"pred_contrib": True}}  # 40 x (8 + 1) = 360
    with pytest.raises(PayloadTooLarge) as err:
        service.score("churn", orjson.dumps(rows))
    assert err.value.code == "response_too_large" and err.value.status == 413
    assert service.score("churn", orjson.dumps({"records": [{}] * 33,
                                                "options": {"pred_contrib": True}})).predictions.size == 297
