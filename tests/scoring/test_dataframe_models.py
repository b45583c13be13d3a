"""Models trained from pandas DataFrames are scored by the DataFrame's own names and values:
category columns by value (as ``Booster.predict(DataFrame)`` maps them), spaced column names
as trained. Every prediction is compared with LightGBM on the same DataFrame (over HTTP to the
local host: tests/e2e/test_dataframe_models.py)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd
import pytest

from scorefn.demo.models import PLAN_CONTRACTS, PLAN_PAYMENTS, plans_frame
from shared.errors import InvalidPayload
from shared.models.blob_source import BlobSource
from shared.models.model import parse_model
from shared.models.store import ModelStore
from shared.scoring.service import ScoringService
from shared.settings import Settings
from tests.conftest import upload


@pytest.fixture
def service(container, demo_models):
    for name in ("plans", "cancer"):
        upload(container, f"{name}.txt", demo_models[name].path)
    store = ModelStore(BlobSource(container, 64 * 1024 * 1024), refresh_seconds=3600)
    return ScoringService(Settings.from_env({}), store)


def booster(demo_models, name: str) -> lgb.Booster:
    return lgb.Booster(model_file=str(demo_models[name].path))


def new_customers(n: int = 40) -> pd.DataFrame:
    """Customers the model has not seen, with a few values it has never seen or that are
    missing, as an app would send them."""
    frame = plans_frame(n, seed=99)
    contract = frame["contract"].astype(object)
    contract.iloc[3] = "weekly"  # an unseen category: missing, as in pandas
    contract.iloc[4] = None
    # What pandas makes of the unseen value when it meets the training categories: missing.
    frame["contract"] = pd.Categorical(contract.where(contract.isin(PLAN_CONTRACTS)),
                                       categories=sorted(PLAN_CONTRACTS))
    frame.loc[5, "monthly charges"] = np.nan
    return frame


def as_records(frame: pd.DataFrame) -> list[dict]:
    """The DataFrame's rows as JSON records under its own column names, with the unseen
    category that its categorical column could not hold put back."""
    records = []
    for row in frame.to_dict(orient="records"):
        records.append({k: (None if isinstance(v, float) and np.isnan(v) else v)
                        for k, v in row.items()})
    records[3]["contract"] = "weekly"
    return records


def scored(result) -> np.ndarray:
    return np.asarray(result.predictions)


class TestCategoriesByValue:
    def test_records_with_the_dataframes_names_and_values_equal_booster_predict(
            self, service, demo_models):
        frame = new_customers()
        body = orjson.dumps({"records": as_records(frame)})
        result = service.score("plans", body)
        np.testing.assert_array_equal(scored(result), booster(demo_models, "plans").predict(frame))

    def test_the_training_order_of_categories_is_not_the_codes(self, service, demo_models):
        # Codes are positions in pandas' sorted categories, not in the order the training code
        # listed them: sending values is what keeps an app from getting this wrong.
        model = parse_model(demo_models["plans"].path.read_bytes(), name="plans", path="p",
                            version="1", last_modified=None)
        contract = model.info.schema.by_index[model.info.feature_names.index("contract")]
        assert contract.values == tuple(sorted(PLAN_CONTRACTS)) != PLAN_CONTRACTS

    def test_rows_take_category_values_or_codes(self, service, demo_models):
        frame = new_customers(10).iloc[6:].reset_index(drop=True)
        values = frame.astype(object).where(frame.notna(), None).to_numpy().tolist()
        codes = [[*row[:2], float(frame["contract"].cat.codes[i]),
                  float(frame["payment method"].cat.codes[i]), row[4]]
                 for i, row in enumerate(values)]
        expected = booster(demo_models, "plans").predict(frame)
        for rows in (values, codes):
            result = service.score("plans", orjson.dumps({"rows": rows}))
            np.testing.assert_array_equal(scored(result), expected)

    def test_v2_takes_bytes_tensors_of_category_values(self, service, demo_models):
        frame = new_customers()
        records = as_records(frame)
        inputs = []
        for column in frame.columns:
            data = [r[column] for r in records]
            kind = "BYTES" if isinstance(frame[column].dtype, pd.CategoricalDtype) else "FP64"
            inputs.append({"name": column, "datatype": kind, "shape": [len(data)], "data": data})
        result = service.score("plans", orjson.dumps({"inputs": inputs}), fmt="v2")
        np.testing.assert_array_equal(scored(result), booster(demo_models, "plans").predict(frame))

    @pytest.mark.parametrize("record, code", [
        ({"contract": 1}, "invalid_category_value"),  # a number for a string category
        ({"contract": True}, "invalid_category_value"),
        ({"contract": ["month"]}, "invalid_category_value"),
        ({"monthly charges": "high"}, "non_numeric_value"),  # a string for a numeric feature
        ({"monthly charges": 70.0, "monthly_charges": 70.0}, "ambiguous_feature"),
        ({"monthly  charges": 70.0}, "unknown_feature"),
    ])
    def test_values_that_cannot_be_read_for_sure_are_refused(self, service, record, code):
        with pytest.raises(InvalidPayload) as err:
            service.score("plans", orjson.dumps({"records": [record]}))
        assert err.value.code == code

    def test_a_bytes_tensor_for_a_numeric_feature_is_refused(self, service):
        body = {"inputs": [{"name": "tenure months", "datatype": "BYTES", "shape": [1],
                            "data": ["12"]}]}
        with pytest.raises(InvalidPayload) as err:
            service.score("plans", orjson.dumps(body), fmt="v2")
        assert err.value.code == "unsupported_datatype"

    def test_metadata_shows_each_category_in_code_order(self, service, demo_models):
        meta = service.status.metadata("plans")
        by_name = {i["name"]: i for i in meta["inputs"]}
        assert by_name["contract"]["datatype"] == "BYTES"
        assert by_name["contract"]["parameters"]["categories"] == sorted(PLAN_CONTRACTS)
        assert meta["inputs"][0]["parameters"]["category_codes"]["payment_method"] == \
            {"type": "str", "categories": sorted(PLAN_PAYMENTS)}
        service.score("plans", orjson.dumps({"records": [{"contract": "year"}]}))
        loaded = {m["name"]: m for m in service.status.endpoints()["loaded_models"]}
        assert loaded["plans"]["categorical_features"]["contract"]["categories"] == \
            sorted(PLAN_CONTRACTS)


def test_an_integer_category_column_takes_its_numbers_as_values(container):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"x": rng.normal(size=600),
                          "store": pd.Categorical(rng.choice([40, 7, 19], 600))})
    y = (frame["store"].astype(int) == 7).astype(float) + 0.1 * frame["x"]
    model = lgb.train({"objective": "regression", "verbosity": -1, "min_data_per_group": 5},
                      lgb.Dataset(frame, y), 10)
    upload(container, "stores.txt", model.model_to_string().encode())
    service = ScoringService(Settings.from_env({}),
                             ModelStore(BlobSource(container, 1 << 24), refresh_seconds=3600))
    sent = [{"x": 0.5, "store": 7}, {"x": 0.5, "store": 40.0}, {"x": 0.5, "store": 8},
            {"x": 0.5, "store": 7.5}]
    result = service.score("stores", orjson.dumps({"records": sent}))
    expected = model.predict(pd.DataFrame({"x": [0.5] * 4, "store": pd.Categorical(
        [7, 40, None, None], categories=[7, 19, 40])}))  # 8 and 7.5 were never seen: missing
    np.testing.assert_array_equal(scored(result), expected)
    with pytest.raises(InvalidPayload) as err:
        service.score("stores", orjson.dumps({"records": [{"store": "7"}]}))
    assert err.value.code == "invalid_category_value"


def test_categories_the_model_file_cannot_place_are_refused_by_value_and_taken_as_codes(
        container):
    # An ordered categorical is mapped to codes by pandas but not declared categorical to
    # LightGBM: the file's category lists no longer pair with its categorical features.
    rng = np.random.default_rng(6)
    frame = pd.DataFrame({
        "grade": pd.Categorical(rng.choice(["low", "mid", "high"], 500),
                                categories=["low", "mid", "high"], ordered=True),
        "plan": pd.Categorical(rng.choice(["a", "b"], 500)), "x": rng.normal(size=500)})
    y = frame["grade"].cat.codes + frame["x"]
    model = lgb.train({"objective": "regression", "verbosity": -1}, lgb.Dataset(frame, y), 10)
    upload(container, "graded.txt", model.model_to_string().encode())
    service = ScoringService(Settings.from_env({}),
                             ModelStore(BlobSource(container, 1 << 24), refresh_seconds=3600))
    with pytest.raises(InvalidPayload) as err:
        service.score("graded", orjson.dumps({"records": [{"grade": "low", "x": 1.0}]}))
    assert err.value.code == "categories_unknown"
    codes = np.array([[2.0, 1.0, 0.3]])
    result = service.score("graded", orjson.dumps({"rows": codes.tolist()}))
    np.testing.assert_array_equal(scored(result), model.predict(codes))


class TestNamesAsTrained:
    def test_real_data_scored_by_the_dataframes_column_names(self, service, demo_models):
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer(as_frame=True).data.iloc[::37]
        assert " " in data.columns[0]  # 'mean radius', stored by LightGBM as 'mean_radius'
        body = orjson.dumps({"records": data.to_dict(orient="records")})
        result = service.score("cancer", body)
        np.testing.assert_array_equal(scored(result), booster(demo_models, "cancer").predict(data))

    def test_v2_tensors_may_use_the_trained_names(self, service, demo_models):
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer(as_frame=True).data.iloc[:5]
        inputs = [{"name": c, "datatype": "FP64", "shape": [5], "data": data[c].tolist()}
                  for c in data.columns]
        result = service.score("cancer", orjson.dumps({"inputs": inputs}), fmt="v2")
        np.testing.assert_array_equal(scored(result), booster(demo_models, "cancer").predict(data))


def test_infinite_predictions_are_spelled_apart_from_missing_values(container):
    # A linear-tree model extrapolates: on a huge input Booster.predict gives inf.
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 2))
    model = lgb.train({"objective": "regression", "linear_tree": True, "verbosity": -1},
                      lgb.Dataset(X, 100 * X[:, 0] + X[:, 1]), 20)
    big = np.array([[1e308, 1e308], [-1e308, 1e308], [0.5, 0.1]])
    expected = model.predict(big)
    assert np.isinf(expected[:2]).all()
    upload(container, "linear.txt", model.model_to_string().encode())
    service = ScoringService(Settings.from_env({}),
                             ModelStore(BlobSource(container, 1 << 24), refresh_seconds=3600))
    from shared.payloads import encode_score_response, encode_v2_response

    result = service.score("linear", orjson.dumps({"rows": big.tolist()}))
    sent = orjson.loads(encode_score_response(result.predictions, {}, "r"))["predictions"]
    spelled = {np.inf: "Infinity", -np.inf: "-Infinity"}
    assert sent == [spelled.get(v, v) for v in expected.tolist()]
    v2 = orjson.loads(encode_v2_response(result.predictions, model_name="linear",
                                         model_version="1", request_id=None))
    assert v2["outputs"][0]["data"] == sent
    with pytest.raises(InvalidPayload) as err:  # as Booster.predict(pred_contrib=True) refuses
        service.score("linear", orjson.dumps({"rows": big.tolist(),
                                              "options": {"pred_contrib": True}}))
    assert "linear trees" in err.value.message
    with pytest.raises(lgb.basic.LightGBMError):
        model.predict(big, pred_contrib=True)
