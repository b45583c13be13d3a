"""Counting rows: bins from the model alone or from reference rows, counts that add up
exactly however the rows are split, and nothing but counts in what is stored."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import orjson
import pytest

from shared.models.model import parse_model
from shared.monitoring.binning import Binning, model_binning, quantile_edges, reference_binning
from shared.monitoring.profile import Profile, count, merge


@pytest.fixture(scope="module")
def model_and_rows():
    """A binary model with four numeric features and one categorical (codes 0-5)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 5))
    X[:, 4] = rng.integers(0, 6, 3000)
    X[rng.random(X.shape) < 0.05] = np.nan
    y = (np.nan_to_num(X[:, 0]) + 0.3 * (np.nan_to_num(X[:, 4]) == 2) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 7},
                        lgb.Dataset(X, y, categorical_feature=[4]), 15)
    model = parse_model(booster.model_to_string().encode(), name="m", path="m.txt",
                        version="v1", last_modified=None)
    return model, X, booster.predict(X)


def test_the_model_alone_gives_training_ranges_and_codes(model_and_rows):
    model, X, _ = model_and_rows
    binning = model_binning(model.info)
    numeric, categorical = binning.features[0], binning.features[4]
    assert numeric.kind == "numeric" and len(numeric.edges) == 9
    assert numeric.low == pytest.approx(np.nanmin(X[:, 0])) and numeric.high == pytest.approx(
        np.nanmax(X[:, 0]))
    assert categorical.kind == "categorical" and set(range(6)) <= set(categorical.codes)
    assert binning.predictions.kind == "probability" and binning.predictions.size == 20


def test_reference_bins_are_deciles_and_a_bin_per_value_for_few_values():
    rng = np.random.default_rng(0)
    values = rng.normal(size=10_000)
    edges = quantile_edges(values, 10)
    shares = np.bincount(np.searchsorted(edges, values, side="right")) / values.size
    assert len(edges) == 9 and np.allclose(shares, 0.1, atol=0.002)
    assert quantile_edges(np.array([1.0, 2.0, 2.0, 5.0, np.nan]), 10) == (1.5, 3.5)


def test_counts_are_exact(model_and_rows):
    model, X, predictions = model_and_rows
    binning = reference_binning(model.info, X, predictions)
    profile = count(binning, X, predictions)
    assert profile.rows == 3000 and profile.predicted_rows == 3000
    for j, _fb in enumerate(binning.features):
        column = X[:, j]
        assert profile.missing[j] == np.isnan(column).sum()
        assert profile.bins[j].sum() + profile.missing[j] == 3000
    # Numeric: each bin holds the values between its edges (an edge's value goes right).
    edges = np.array(binning.features[1].edges)
    values = X[:, 1][~np.isnan(X[:, 1])]
    assert profile.bins[1][0] == (values < edges[0]).sum()
    assert profile.bins[1][3] == ((values >= edges[2]) & (values < edges[3])).sum()
    # Categorical: a bin per code.
    codes = binning.features[4].codes
    assert profile.bins[4][codes.index(2)] == (X[:, 4] == 2).sum()
    assert profile.predictions.sum() == 3000


def test_out_of_range_and_unknown_codes_are_counted(model_and_rows):
    model, X, predictions = model_and_rows
    binning = model_binning(model.info)
    served = X[:10].copy()
    served[:3, 0] = 1e6  # a unit change: far above the training range
    served[:4, 4] = 17  # a category code the model never saw
    profile = count(binning, served, None)
    assert profile.out_of_range[0] == 3
    assert profile.out_of_range[4] == 4 and profile.bins[4][-1] == 4  # the "other" bin
    assert profile.predicted_rows == 0 and profile.predictions.sum() == 0


@pytest.mark.parametrize("parts", [1, 2, 7, 3000])
def test_a_split_into_any_parts_adds_up_to_the_same_profile(model_and_rows, parts):
    model, X, predictions = model_and_rows
    binning = reference_binning(model.info, X, predictions)
    whole = count(binning, X, predictions)
    pieces = [count(binning, x, p) for x, p in zip(np.array_split(X, parts),
                                                   np.array_split(predictions, parts))]
    assert merge(pieces, binning).to_dict() == whole.to_dict()


def test_stored_forms_round_trip_and_hold_no_values(model_and_rows):
    model, X, predictions = model_and_rows
    binning = reference_binning(model.info, X, predictions)
    profile = count(binning, X, predictions)
    again = Binning.from_dict(orjson.loads(orjson.dumps(binning.to_dict())))
    assert again == binning and again.id == binning.id
    doc = orjson.loads(orjson.dumps(profile.to_dict()))
    assert Profile.from_dict(doc, again).to_dict() == profile.to_dict()
    # Counts are integers only; the served values never appear.
    flat = orjson.dumps(profile.to_dict()).decode()
    assert all(f"{v!r}" not in flat for v in X[:50, 0] if not np.isnan(v))


def test_damaged_stored_profiles_are_refused(model_and_rows):
    model, X, predictions = model_and_rows
    binning = reference_binning(model.info, X, predictions)
    doc = count(binning, X, predictions).to_dict()
    for damage in ({"rows": -1}, {"missing": [1, 2]}, {"binning": "other"},
                   {"predictions": [1.5] * binning.predictions.size}):
        with pytest.raises((ValueError, TypeError)):
            Profile.from_dict({**doc, **damage}, binning)
    bad = binning.to_dict()
    bad["features"][0]["edges"] = [2.0, 1.0]
    with pytest.raises(ValueError):
        Binning.from_dict(bad)


def test_an_open_training_range_round_trips_and_bounds_one_side():
    from shared.monitoring.binning import FeatureBins, PredictionBins, training_range

    assert training_range("[-inf:3.25]") == ("numeric", None, 3.25, ())
    fb = FeatureBins("x", "numeric", (0.0, 1.0), (), None, 3.25)
    binning = Binning((fb,), PredictionBins("value", (0.0,)), "model")
    assert Binning.from_dict(orjson.loads(orjson.dumps(binning.to_dict()))).id == binning.id
    profile = count(binning, np.array([[-1e9], [2.0], [4.0], [np.inf]]), None)
    assert profile.out_of_range[0] == 2  # above 3.25 only: no lower bound


def test_codes_beyond_the_counted_ones_are_other_not_out_of_range():
    from shared.monitoring.binning import MAX_CODES, FeatureBins, PredictionBins

    trained = tuple(range(250))
    fb = FeatureBins("c", "categorical", (), trained[:MAX_CODES], training_codes=trained)
    binning = Binning((fb,), PredictionBins("value", (0.0,)), "model")
    X = np.array([[5.0], [230.0], [249.0], [300.0], [np.nan]])
    profile = count(binning, X, None)
    assert profile.bins[0][5] == 1 and profile.bins[0][-1] == 3  # 230, 249, 300 share "other"
    assert profile.out_of_range[0] == 1 and profile.missing[0] == 1  # only 300 is unknown


def test_job_writer_names_are_valid_and_distinct():
    from shared.monitoring.jobs import job_writer

    assert job_writer("orders-7") == "job-orders-7"
    assert job_writer("orders-7", 3) == "job-orders-7-00003"
    a, b = job_writer("orders:7"), job_writer("orders_7")
    assert a != b and ":" not in a and a.startswith("job-orders_7-")
