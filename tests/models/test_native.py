"""LightGBM's C library called directly: the same numbers as lightgbm.Booster.predict, and
serving never imports the lightgbm package (nor scipy): that import is cold-start time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from shared.models.native import PREDICT_CONTRIB, PREDICT_RAW, NativeBooster, NativeError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["churn", "price", "segment"])
def test_native_predictions_are_booster_predict_s(demo_models, name):
    path = demo_models[name].path
    native, booster = NativeBooster(path.read_text()), lgb.Booster(model_file=str(path))
    X = np.random.default_rng(3).normal(20, 15, size=(300, booster.num_feature()))
    X[::7, 0] = np.nan
    assert native.feature_names == tuple(booster.feature_name())
    assert native.num_model_per_iteration == booster.num_model_per_iteration()
    for threads in (1, 2):
        assert np.array_equal(native.predict(X, num_threads=threads), booster.predict(X))
    assert np.array_equal(native.predict(X, predict_type=PREDICT_RAW), booster.predict(X, raw_score=True))
    contrib = native.predict(X, predict_type=PREDICT_CONTRIB)
    assert contrib.shape == booster.predict(X, pred_contrib=True).shape
    assert np.array_equal(contrib, booster.predict(X, pred_contrib=True))
    assert native.model_to_string().startswith("tree\n")


def test_a_model_lightgbm_refuses_is_an_error_not_a_crash():
    with pytest.raises(NativeError):
        NativeBooster("tree\nversion=v4\nnum_class=1\n\nTree=0\nnum_leaves=x\n\nend of trees\n")


def test_serving_a_prediction_imports_neither_lightgbm_nor_scipy(demo_models):
    code = f"""
import sys
import numpy as np
from shared.models.model import parse_model
text = open({str(demo_models["price"].path)!r}, "rb").read()
model = parse_model(text, name="price", path="price.txt", version="1", last_modified=None)
model.predict(np.ones((1, 6))); model.predict(np.ones((50, 6)), num_threads=2)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("lightgbm", "scipy")))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
