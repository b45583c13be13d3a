"""The per-row losses of the decision metrics: each against its definition, the table of
which metrics fit which objective family, the faults named, and the A/B report computing its
metrics from these same losses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scorefn.ab import stats
from shared.rollout import losses
from shared.rollout.losses import EPS, FAMILY_METRICS, METRICS, PRIMARY_METRIC, per_row_loss

Y = np.array([1.0, 0.0, 1.0, 0.0])
P = np.array([0.9, 0.2, 0.4, 0.5])
Y3 = np.array([0, 2, 1])
P3 = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])


def test_binary_log_loss_is_minus_the_log_of_the_probability_given_to_what_happened():
    assert per_row_loss("log_loss", Y, P) == pytest.approx(-np.log([0.9, 0.8, 0.4, 0.5]))


def test_log_loss_clips_certain_predictions_so_a_wrong_one_costs_a_finite_amount():
    out = per_row_loss("log_loss", np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.0, 1.0, 1.0, 0.0]))
    assert out[:2] == pytest.approx([-math.log(EPS)] * 2, rel=1e-4)  # ~34.5, not inf
    assert out[2:] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_multiclass_log_loss_takes_the_probability_of_the_true_class():
    assert per_row_loss("log_loss", Y3, P3) == pytest.approx(-np.log([0.7, 0.6, 0.4]))


def test_brier_is_the_squared_error_of_the_probability():
    assert per_row_loss("brier", Y, P) == pytest.approx([0.01, 0.04, 0.36, 0.25])


def test_multiclass_brier_sums_over_the_classes_twice_the_binary_form_for_two_classes():
    assert per_row_loss("brier", Y3, P3) == pytest.approx(
        [0.09 + 0.04 + 0.01, 0.01 + 0.09 + 0.16, 0.25 + 0.36 + 0.01])
    two = np.column_stack([1 - P, P])
    assert per_row_loss("brier", Y, two) == pytest.approx(2 * per_row_loss("brier", Y, P))


def test_regression_losses():
    y, p = np.array([1.0, -2.0, 3.5]), np.array([1.5, -2.0, 1.5])
    assert per_row_loss("squared_error", y, p) == pytest.approx([0.25, 0.0, 4.0])
    assert per_row_loss("absolute_error", y, p) == pytest.approx([0.5, 0.0, 2.0])


def test_error_rate_counts_wrong_decisions_at_the_threshold_and_by_the_top_class():
    # p >= threshold decides class 1: 0.5 at the default threshold is a "1", wrong for label 0
    assert list(per_row_loss("error_rate", Y, P)) == [0.0, 0.0, 1.0, 1.0]
    assert list(per_row_loss("error_rate", Y, P, threshold=0.3)) == [0.0, 0.0, 0.0, 1.0]
    assert list(per_row_loss("error_rate", Y3, P3)) == [0.0, 0.0, 1.0]


def test_losses_are_float64_one_per_row():
    out = per_row_loss("absolute_error", [1, 2], [1, 4])  # lists of ints are fine
    assert out.dtype == np.float64 and out.shape == (2,)


def test_every_metric_belongs_to_a_family_and_each_family_has_its_primary_metric():
    assert sorted({m for ms in FAMILY_METRICS.values() for m in ms}) == sorted(METRICS)
    assert set(FAMILY_METRICS) == set(PRIMARY_METRIC) == {"binary", "regression", "multiclass"}
    assert all(PRIMARY_METRIC[f] in FAMILY_METRICS[f] for f in FAMILY_METRICS)
    samples = {"binary": (Y, P), "multiclass": (Y3, P3), "regression": (np.array([1.0, 2.0]),
                                                                         np.array([1.5, 1.0]))}
    for family, metrics in FAMILY_METRICS.items():
        y, p = samples[family]
        for metric in metrics:
            out = per_row_loss(metric, y, p)
            assert out.shape == (y.size,) and np.all(out >= 0), (family, metric)


@pytest.mark.parametrize("metric, y, p, message", [
    ("auc", Y, P, "unknown metric 'auc'"),
    ("rmse", Y, P, "unknown metric 'rmse'"),  # decide on squared_error (the MSE)
    ("log_loss", Y[:3], P, "do not match"),
    ("log_loss", Y.reshape(2, 2), P, "do not match"),
    ("squared_error", Y3, P3, "regression metric"),
    ("log_loss", np.array([0, 3, 1]), P3, "class indices 0..2"),
    ("log_loss", np.array([0, -1, 1]), P3, "class indices 0..2"),
    ("error_rate", np.array([0, 1.5, 1]), P3, "class indices 0..2"),
])
def test_faults_are_named(metric, y, p, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        per_row_loss(metric, y, p)


@pytest.mark.parametrize("report_metric, loss, y, p", [
    ("log_loss", "log_loss", Y, P), ("log_loss", "log_loss", Y3, P3), ("brier", "brier", Y, P),
    ("rmse", "squared_error", Y, P), ("mse", "squared_error", Y, P), ("mae", "absolute_error", Y, P),
])
def test_the_ab_report_takes_its_per_row_terms_from_these_losses(report_metric, loss, y, p):
    assert np.array_equal(stats.per_row_loss(report_metric, y, p), per_row_loss(loss, y, p))
    assert stats.EPS == losses.EPS


def test_the_reports_accuracy_is_one_minus_the_error_rate():
    accuracy, error_rate = stats.per_row_loss("accuracy", Y, P, 0.3), per_row_loss("error_rate", Y, P, 0.3)
    assert np.array_equal(accuracy, 1 - error_rate)
    assert np.array_equal(stats.per_row_loss("accuracy", Y3, P3), 1 - per_row_loss("error_rate", Y3, P3))
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        stats.per_row_loss("auc", Y, P)
