"""Non-finite predictions in batch outputs, from a real linear-tree model that LightGBM itself
scores as +inf, -inf or NaN on huge inputs: CSV writes ``inf``/``-inf`` and an empty cell
(what pandas writes and reads back), JSON Lines the strings ``"Infinity"``, ``"-Infinity"``,
``"NaN"`` (proto3's JSON spelling), never ``null``."""

from __future__ import annotations

import io

import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd
import pytest

from tests.batch_support import rig  # noqa: F401

NAMES = ["x0", "x1"]
INPUTS = np.array([[1e308, 0], [-1e308, 0], [0, 1e308], [1e308, 1e308], [1e308, -1e308],
                   [1, 1], [np.nan, 1e308], [0.5, -0.25]])


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (500, 2))
    y = 300 * X[:, 0] - 200 * X[:, 1] + rng.normal(0, 0.1, 500)
    return lgb.train({"objective": "regression", "linear_tree": True, "verbose": -1,
                      "num_leaves": 4}, lgb.Dataset(X, y, feature_name=NAMES), 5)


def test_the_model_really_predicts_non_finite_values(booster):
    expected = booster.predict(INPUTS)
    assert np.isposinf(expected).any() and np.isneginf(expected).any() and np.isnan(expected).any()
    assert np.isfinite(expected).sum() >= 2


def csv_text(X: np.ndarray) -> bytes:
    return ("x0,x1\n" + "".join(",".join("" if np.isnan(v) else repr(float(v)) for v in row) + "\n"
                                for row in X)).encode()


@pytest.mark.parametrize("out_format", ["csv", "jsonl"])
def test_a_job_writes_non_finite_predictions_as_the_format_spells_them(rig, booster, out_format):
    rig.upload_model("linear", booster)
    rig.upload("inputs/huge.csv", csv_text(INPUTS))
    outcome = rig.run({"id": f"inf-{out_format}", "endpoint": "linear",
                       "input": {"blob": "inputs/huge.csv"}, "output": {"format": out_format}})
    assert outcome.status == "succeeded", outcome.result
    data = rig.download(f"predictions/inf-{out_format}.{out_format}")
    expected = booster.predict(INPUTS)
    if out_format == "csv":
        got = pd.read_csv(io.BytesIO(data))["prediction"].to_numpy()
        assert np.array_equal(got, expected, equal_nan=True)  # pandas reads back the same values
        cells = data.decode().splitlines()[1:]
        # NaN alone on its line is "" (a blank line is skipped), as pandas' to_csv writes it
        assert [c for c, v in zip(cells, expected) if not np.isfinite(v)] == \
            ["inf" if v > 0 else "-inf" if v < 0 else '""' for v in expected if not np.isfinite(v)]
    else:
        values = [orjson.loads(line)["prediction"] for line in data.splitlines()]
        spelled = {"Infinity": np.inf, "-Infinity": -np.inf, "NaN": np.nan}
        assert None not in values
        got = np.array([spelled[v] if isinstance(v, str) else v for v in values])
        assert np.array_equal(got, expected, equal_nan=True)
        assert all(isinstance(v, str) == (not np.isfinite(e)) for v, e in zip(values, expected))


def test_inputs_written_as_pandas_writes_them_score_the_same(rig, booster):
    """inf and -inf cells (as pandas' to_csv writes them) read as pandas reads them."""
    rig.upload_model("linear", booster)
    frame = pd.DataFrame({"x0": [np.inf, -np.inf, 1.0, np.nan], "x1": [0.0, 0.0, np.inf, 1e308]})
    rig.upload("inputs/pandas.csv", frame.to_csv(index=False).encode())
    outcome = rig.run({"id": "inf-pandas", "endpoint": "linear", "input": {"blob": "inputs/pandas.csv"}})
    assert outcome.status == "succeeded", outcome.result
    got = pd.read_csv(io.BytesIO(rig.download("predictions/inf-pandas.csv")))["prediction"]
    assert np.array_equal(got.to_numpy(), booster.predict(frame.to_numpy()), equal_nan=True)
