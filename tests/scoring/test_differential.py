"""Differential test: scorefn's predictions equal ``lightgbm.Booster.predict``, bit for bit.

For every kind of model LightGBM trains (each objective family, each boosting mode, early
stopping, linear trees, the missing-value modes, categorical splits, a constant feature,
several classes), a small model is trained here and scored two ways on the same inputs:

- the reference: ``lightgbm.Booster(model_str=text).predict(X)`` (and ``raw_score=True``,
  ``pred_contrib=True``), where ``text`` is the model text scorefn serves (and which predicts
  as the booster ``lgb.train`` returned: checked first);
- scorefn: ``shared.models.model.parse_model(text).predict`` on the float64 matrix (the whole batch,
  and one row at a time, which takes LightGBM's single-row fast path), and a real
  :class:`ScoringService` reading the model from Azurite, fed the JSON body a client writes
  with orjson: ``{"rows": ...}``, ``{"records": ...}`` and V2 (one tensor, or one per
  feature), one row per request or a batch, up to a batch scored on several threads; the
  client then decodes the response (non-finite predictions are spelled out in it).

The inputs are built to land on every decision the model makes: rows like the training data,
NaN, zeros (signed, and around LightGBM's zero threshold 1e-35), subnormal, huge and infinite
magnitudes, every split threshold of the model with its neighbouring floats (``np.nextafter``
down and up), and for categorical features negative, non-integer and out-of-range codes.
JSON cannot carry inf, so rows holding it are scored on the matrix path only; NaN is sent as
``null`` (or, in records, as an absent feature).

Where LightGBM refuses (``pred_contrib`` on linear trees), scorefn must refuse too, with a
4xx typed error. Equality is exact: same shape, same dtype, same bits (NaN matches NaN).
A disagreement found and not yet fixed is listed in ``KNOWN_DISCREPANCIES`` (strict xfail).
"""

from __future__ import annotations

import functools
import itertools
import math
import uuid
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson
import pytest

from shared.errors import InvalidPayload, ScoreError
from shared.models.blob_source import BlobSource
from shared.models.model import LoadedModel, parse_model
from shared.models.store import ModelStore
from shared.payloads import encode_score_response, encode_v2_response
from shared.scoring.service import ScoringService
from shared.settings import Settings
from tests.azurite_support import new_container

# -- the model kinds ------------------------------------------------------------------------

FEATURES = ("x0", "x1", "big", "small", "code12", "code3")
CONSTANT = "constant"
ROWS = 300
# Small, deterministic, single-threaded training: the whole file runs in seconds.
BASE_PARAMS = {"verbosity": -1, "num_leaves": 7, "min_data_in_leaf": 5, "learning_rate": 0.3,
               "seed": 7, "deterministic": True, "num_threads": 1,
               # small categorical groups, so a few hundred rows give categorical splits
               "min_data_per_group": 5, "cat_smooth": 1.0, "cat_l2": 1.0}


@dataclass(frozen=True)
class Kind:
    """One model to train: LightGBM parameters plus how its training data look."""

    id: str
    params: dict[str, Any]
    label: str = "real"  # real, positive, count, binary, probability, classes, relevance
    categorical: tuple[int, ...] = ()  # categorical_feature=[...] on the numpy matrix
    missing_in_training: bool = False  # NaN in x0, x1 and code12 of the training rows
    constant_feature: bool = False  # a 7th feature, always 1.0: never used by a split
    early_stopping: bool = False  # a validation set; the text keeps the best iteration's trees
    rounds: int = 10
    # LightGBM refuses pred_contrib for linear trees; everything else computes it.
    contrib_refused: bool = False

    @property
    def feature_names(self) -> tuple[str, ...]:
        return FEATURES + ((CONSTANT,) if self.constant_feature else ())


CATS = (4, 5)  # code12 (12 codes: many-vs-many splits) and code3 (3 codes: one-hot splits)
RF = {"boosting": "rf", "bagging_fraction": 0.6, "bagging_freq": 1, "feature_fraction": 0.8}
DART = {"boosting": "dart", "drop_rate": 0.5, "skip_drop": 0.0, "max_drop": 5}

KINDS = [
    # every objective family
    Kind("regression", {"objective": "regression"}),
    Kind("regression-reg_sqrt", {"objective": "regression", "reg_sqrt": True}, label="positive"),
    Kind("regression_l1", {"objective": "regression_l1"}),
    Kind("huber", {"objective": "huber", "alpha": 0.9}),
    Kind("fair", {"objective": "fair", "fair_c": 1.0}),
    Kind("poisson", {"objective": "poisson"}, label="count"),
    Kind("quantile", {"objective": "quantile", "alpha": 0.8}),
    Kind("mape", {"objective": "mape"}, label="positive"),
    Kind("gamma", {"objective": "gamma"}, label="positive"),
    Kind("tweedie", {"objective": "tweedie", "tweedie_variance_power": 1.3}, label="count"),
    Kind("binary", {"objective": "binary"}, label="binary"),
    Kind("binary-sigmoid", {"objective": "binary", "sigmoid": 0.4}, label="binary"),
    Kind("cross_entropy", {"objective": "cross_entropy"}, label="probability"),
    Kind("cross_entropy_lambda", {"objective": "cross_entropy_lambda"}, label="probability"),
    Kind("multiclass", {"objective": "multiclass", "num_class": 4}, label="classes"),
    Kind("multiclassova", {"objective": "multiclassova", "num_class": 3}, label="classes"),
    Kind("lambdarank", {"objective": "lambdarank"}, label="relevance"),
    Kind("rank_xendcg", {"objective": "rank_xendcg"}, label="relevance"),
    # boosting modes
    Kind("dart", {"objective": "regression", **DART}),
    Kind("dart-binary", {"objective": "binary", **DART}, label="binary"),
    Kind("rf", {"objective": "regression", **RF}),
    Kind("rf-multiclass", {"objective": "multiclass", "num_class": 3, **RF}, label="classes"),
    Kind("goss", {"objective": "regression", "data_sample_strategy": "goss",
                  "top_rate": 0.3, "other_rate": 0.3}),
    Kind("early_stopping", {"objective": "binary", "learning_rate": 0.8}, label="binary",
         early_stopping=True, rounds=40),
    # linear trees
    Kind("linear_tree", {"objective": "regression", "linear_tree": True},
         missing_in_training=True, contrib_refused=True),
    Kind("linear_tree-binary", {"objective": "binary", "linear_tree": True}, label="binary",
         contrib_refused=True),
    Kind("linear_tree-categorical", {"objective": "regression", "linear_tree": True},
         categorical=CATS, contrib_refused=True),
    # missing values
    Kind("missing_in_training", {"objective": "regression"}, missing_in_training=True),
    Kind("use_missing_false", {"objective": "regression", "use_missing": False},
         missing_in_training=True),
    Kind("zero_as_missing", {"objective": "regression", "zero_as_missing": True}),
    Kind("zero_as_missing-with_nan", {"objective": "binary", "zero_as_missing": True},
         label="binary", missing_in_training=True),
    # categorical splits on integer-coded features
    Kind("categorical", {"objective": "regression"}, categorical=CATS),
    Kind("categorical-missing", {"objective": "binary"}, label="binary", categorical=CATS,
         missing_in_training=True),
    Kind("categorical-multiclass", {"objective": "multiclass", "num_class": 3},
         label="classes", categorical=CATS),
    Kind("categorical-use_missing_false", {"objective": "regression", "use_missing": False},
         categorical=CATS, missing_in_training=True),
    # a feature no split uses
    Kind("constant_feature", {"objective": "regression"}, constant_feature=True),
    Kind("constant_feature-multiclass", {"objective": "multiclass", "num_class": 5},
         label="classes", constant_feature=True, categorical=CATS),
]
KIND_IDS = [k.id for k in KINDS]
BY_ID = {k.id: k for k in KINDS}


def _rng(kind: Kind, purpose: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{kind.id}/{purpose}".encode()))


def feature_rows(kind: Kind, n: int, rng: np.random.Generator) -> np.ndarray:
    """Rows like the training data: two plain features, one of large and one of tiny scale
    (a third of it exact zeros), two integer codes (12 and 3 values)."""
    X = np.column_stack([
        rng.normal(0, 1, n),
        rng.normal(0, 2, n),
        rng.normal(0, 1e6, n),
        np.where(rng.random(n) < 0.3, 0.0, rng.normal(0, 1e-3, n)),
        rng.integers(0, 12, n).astype(np.float64),
        rng.integers(0, 3, n).astype(np.float64),
    ])
    if kind.missing_in_training:
        for j in (0, 1, 4):
            X[rng.random(n) < 0.1, j] = np.nan
    if kind.constant_feature:
        X = np.column_stack([X, np.ones(n)])
    return X


def labels(kind: Kind, X: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
    """Labels for the kind's objective (and lambdarank's query groups)."""
    Z = np.nan_to_num(X)
    signal = (Z[:, 0] + np.sin(Z[:, 1]) + 0.5 * Z[:, 2] / 1e6 + 300 * Z[:, 3]
              + 0.4 * (Z[:, 4] % 4) - 0.5 * Z[:, 5] + rng.normal(0, 0.3, len(X)))
    group = None
    if kind.label == "real":
        y = signal
    elif kind.label == "positive":
        y = np.exp(0.4 * signal) + 0.1
    elif kind.label == "count":
        y = rng.poisson(np.exp(0.4 * signal)).astype(np.float64)
    elif kind.label == "binary":
        y = (signal > np.median(signal)).astype(np.float64)
    elif kind.label == "probability":
        y = 1 / (1 + np.exp(-signal))
    elif kind.label == "classes":
        k = kind.params["num_class"]
        y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, k + 1)[1:-1])).astype(float)
    elif kind.label == "relevance":
        y = np.digitize(signal, np.quantile(signal, [0.4, 0.7, 0.9])).astype(np.float64)
        group = [10] * (len(X) // 10)
    else:
        raise AssertionError(kind.label)
    return y, group


# The rows each path can send: JSON cannot carry inf (NaN is written as null), and bodies of
# plain numbers only (no null) are read without decoding them whole.
ROW_SETS = {"all": lambda X: np.ones(len(X), bool),
            "json": lambda X: ~np.isinf(X).any(axis=1),
            "finite": lambda X: np.isfinite(X).all(axis=1)}
CONTRIB_ROWS = 150  # SHAP values cost the most: JSON requests send a spread of the rows


@dataclass
class Trained:
    kind: Kind
    text: str  # the model text scorefn serves (Booster.model_to_string)
    trained: lgb.Booster  # the booster lgb.train returned
    reference: lgb.Booster  # the booster loaded from ``text``: the reference
    model: LoadedModel  # scorefn's model parsed from ``text``
    X: np.ndarray  # the stress inputs (may hold NaN and inf)
    _expected: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def inputs(self, rows: str, output: str = "predict") -> np.ndarray:
        X = self.X[ROW_SETS[rows](self.X)]
        if output == "pred_contrib" and rows != "all" and len(X) > CONTRIB_ROWS:
            X = X[::-(-len(X) // CONTRIB_ROWS)]
        return X

    def expected(self, rows: str, output: str) -> np.ndarray:
        """The reference's predictions for the row set (computed once per kind)."""
        key = (rows, output)
        if key not in self._expected:
            self._expected[key] = self.reference.predict(self.inputs(rows, output),
                                                         **OUTPUT_KWARGS[output], **ONE_THREAD)
        return self._expected[key]


@functools.cache
def trained(kind_id: str) -> Trained:
    kind = BY_ID[kind_id]
    X = feature_rows(kind, ROWS, _rng(kind, "train"))
    y, group = labels(kind, X, _rng(kind, "labels"))
    data = lgb.Dataset(X, y, group=group, feature_name=list(kind.feature_names),
                       categorical_feature=list(kind.categorical) or "auto")
    extra: dict[str, Any] = {}
    if kind.early_stopping:
        X_valid = feature_rows(kind, ROWS, _rng(kind, "valid"))
        y_valid, group_valid = labels(kind, X_valid, _rng(kind, "valid-labels"))
        extra = {"valid_sets": [data.create_valid(X_valid, y_valid, group=group_valid)],
                 "callbacks": [lgb.early_stopping(3, verbose=False)],
                 "keep_training_booster": True}  # every iteration, predicting up to the best
    booster = lgb.train({**BASE_PARAMS, **kind.params}, data, num_boost_round=kind.rounds, **extra)
    if kind.early_stopping:
        assert 0 < booster.best_iteration < booster.current_iteration(), "it did not stop early"
    text = booster.model_to_string()  # as save_model writes it: up to the best iteration
    model = parse_model(text.encode(), name=kind.id, path=f"{kind.id}.txt", version="v1",
                        last_modified=None)
    reference = lgb.Booster(model_str=text)
    return Trained(kind, text, booster, reference, model, stress_inputs(kind, reference))


# -- the inputs -----------------------------------------------------------------------------

TINY = np.finfo(np.float64).tiny
HUGE = np.finfo(np.float64).max
K_ZERO = 1e-35  # LightGBM's kZeroThreshold: |x| <= it is zero (missing, with zero_as_missing)
SPECIALS = [np.nan, 0.0, -0.0, 1.0, -1.0, K_ZERO, -K_ZERO, np.nextafter(K_ZERO, 1),
            np.nextafter(-K_ZERO, -1), TINY, -TINY, 5e-324, -5e-324, 1e-300, 1e300, -1e300,
            HUGE, -HUGE, 1e38, -1e38, 3.4028234663852886e38, np.inf, -np.inf]
# Codes a categorical feature may be sent: negative, fractional, out of range, past int32.
CATEGORY_SPECIALS = [-1.0, -0.5, -0.0, -5e-324, -1e-300, 0.5, 0.9999999999999999, 1.5,
                     2.999999999999999, 11.5, 12.0, 13.0, 100.0, 1e6, 2.0**31 - 1, 2.0**31,
                     2.0**32, 2.0**32 + 1, 2.0**53 + 2, 1e20, 1e300, -2.0**31, -2.0**31 - 1,
                     -1e20, -1e300, np.nan, np.inf, -np.inf]


def split_nodes(booster: lgb.Booster) -> list[dict[str, Any]]:
    """Every split node of every tree, as ``Booster.dump_model`` describes it."""
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        if "split_feature" in node:
            nodes.append(node)
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return nodes


def split_thresholds(booster: lgb.Booster) -> tuple[list[tuple[int, float]], list[tuple[int, int]]]:
    """(feature, threshold) of every numerical split, and (feature, code) of each code a
    categorical split sends left (its threshold is written ``"1||4||7"``)."""
    nodes = split_nodes(booster)
    numerical = {(n["split_feature"], float(n["threshold"]))
                 for n in nodes if n["decision_type"] == "<="}
    categorical = {(n["split_feature"], int(code)) for n in nodes if n["decision_type"] == "=="
                   for code in str(n["threshold"]).split("||")}
    return sorted(numerical), sorted(categorical)


def stress_inputs(kind: Kind, booster: lgb.Booster) -> np.ndarray:
    """Rows that reach every decision of the model, each a training-like row with one value
    replaced (plus whole rows of one special value)."""
    rng = _rng(kind, "inputs")
    pool = feature_rows(kind, 64, rng)
    width = pool.shape[1]
    rows: list[np.ndarray] = [pool]
    cycle = iter(np.resize(np.arange(len(pool)), 100_000))

    def with_value(j: int, value: float) -> np.ndarray:
        row = pool[next(cycle)].copy()
        row[j] = value
        return row

    rows.append(np.array([np.full(width, v) for v in SPECIALS]))
    rows.append(np.array([with_value(j, v) for j in range(width) for v in SPECIALS]))
    numerical, categorical = split_thresholds(booster)
    rows.append(np.array([with_value(j, v) for j, t in numerical
                          for v in (t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf))]))
    for j in kind.categorical:
        rows.append(np.array([with_value(j, v) for v in CATEGORY_SPECIALS]))
    rows.append(np.array([with_value(j, v) for j, c in categorical
                          for v in (c, c - 1, c + 1, c + 0.5, c - 0.5, -c,
                                    np.nextafter(c, -np.inf), np.nextafter(c, np.inf))]))
    return np.vstack([r for r in rows if r.size])


# -- comparing ------------------------------------------------------------------------------

OUTPUTS = ["predict", "raw_score", "pred_contrib"]
OUTPUT_KWARGS = {"predict": {}, "raw_score": {"raw_score": True},
                 "pred_contrib": {"pred_contrib": True}}
# Each row is predicted on its own, so the thread count changes no number; on two busy cores
# OpenMP's default threads make each reference call ~20x slower.
ONE_THREAD = {"num_threads": 1}


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal shape, dtype and bits; a NaN matches any NaN (its payload is not compared)."""
    assert isinstance(actual, np.ndarray)
    assert (actual.shape, actual.dtype) == (expected.shape, expected.dtype)
    np.testing.assert_array_equal(actual, expected)  # readable message for a differing value
    canonical = [np.where(np.isnan(a), np.nan, a).view(np.uint64) for a in (actual, expected)]
    np.testing.assert_array_equal(*canonical, err_msg="same values, different signs of zero")


def assert_lightgbm_refuses_too(t: Trained, output: str, refusal: ScoreError) -> None:
    assert 400 <= refusal.status < 500, refusal
    assert refusal.code == "invalid_options"
    with pytest.raises(lgb.basic.LightGBMError, match="not implemented for linear trees"):
        t.reference.predict(t.X[:2], **OUTPUT_KWARGS[output])


def refused(kind: Kind, output: str) -> bool:
    return output == "pred_contrib" and kind.contrib_refused


# Cases where scorefn and LightGBM disagree today, by "<test>/<kind>" or by the full
# "<test>/<test id>": each runs as xfail(strict=True), so a fix shows as XPASS and fails
# until its entry is removed. None known.
KNOWN_DISCREPANCIES: dict[str, str] = {}


def cases(test: str, *axes: list[str]) -> list[Any]:
    """``pytest.param``s of every kind (times the other axes), known discrepancies marked."""
    out = []
    for kind in KIND_IDS:
        for rest in itertools.product(*axes):
            test_id = "-".join((kind, *rest))
            reason = (KNOWN_DISCREPANCIES.get(f"{test}/{test_id}")
                      or KNOWN_DISCREPANCIES.get(f"{test}/{kind}"))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(kind, *rest, id=test_id, marks=marks))
    return out


# -- each model is the kind it claims, and the inputs reach all of it -----------------------


@pytest.mark.parametrize("kind_id", cases("kind"))
def test_each_model_is_its_kind_and_the_inputs_reach_every_split(kind_id):
    t = trained(kind_id)
    kind, params, info = t.kind, t.kind.params, t.model.info
    header = t.text[:t.text.find("\nTree=")]
    parameters = t.text[t.text.rfind("\nend of trees"):]
    assert f"\nobjective={params['objective']}" in header
    assert (" sqrt" in header) == params.get("reg_sqrt", False)
    assert info.num_outputs == params.get("num_class", 1)
    assert info.num_features == len(kind.feature_names)
    assert info.linear_tree == params.get("linear_tree", False)
    assert ("\naverage_output" in header) == (params.get("boosting") == "rf")
    assert f"[boosting: {params.get('boosting', 'gbdt')}]" in parameters
    assert f"[data_sample_strategy: {params.get('data_sample_strategy', 'bagging')}]" in parameters
    if kind.early_stopping:  # the text holds the trees up to the best iteration
        assert t.trained.best_iteration == t.reference.current_iteration()
    nodes = split_nodes(t.reference)
    missing_types = {n["missing_type"] for n in nodes if n["decision_type"] == "<="}
    if not params.get("use_missing", True):
        assert missing_types == {"None"}
    elif params.get("zero_as_missing"):
        assert missing_types == {"Zero"}
    else:
        assert ("NaN" in missing_types) == kind.missing_in_training
    used = {n["split_feature"] for n in nodes}
    assert len(FEATURES) not in used  # the constant 7th feature is never split on
    numerical, categorical = split_thresholds(t.reference)
    assert numerical and bool(categorical) == bool(kind.categorical)
    assert {j for j, _ in categorical} <= set(kind.categorical)
    for j, threshold in numerical:  # each threshold is sent, and both its neighbours
        for v in (threshold, np.nextafter(threshold, -np.inf), np.nextafter(threshold, np.inf)):
            assert (t.X[:, j] == v).any(), (j, v)
    for j, code in categorical:
        for v in (code, np.nextafter(code, -np.inf), np.nextafter(code, np.inf), -code):
            assert (t.X[:, j] == v).any(), (j, v)


# -- the saved text is the trained model ----------------------------------------------------


@pytest.mark.parametrize("kind_id", cases("trained"))
def test_the_saved_model_text_predicts_as_the_trained_booster(kind_id):
    """The premise of the reference: the text scorefn serves is the model as trained."""
    t = trained(kind_id)
    for output in OUTPUTS:
        if refused(t.kind, output):
            continue
        assert_same_bits(t.expected("all", output),
                         t.trained.predict(t.X, **OUTPUT_KWARGS[output], **ONE_THREAD))


# -- the float64 matrix ---------------------------------------------------------------------


@pytest.mark.parametrize("kind_id, output", cases("matrix", OUTPUTS))
def test_matrix_batch_equals_booster_predict(kind_id, output):
    t = trained(kind_id)
    if refused(t.kind, output):
        with pytest.raises(InvalidPayload) as err:
            t.model.predict(t.X, **OUTPUT_KWARGS[output])
        assert_lightgbm_refuses_too(t, output, err.value)
        return
    assert_same_bits(t.model.predict(t.X, **OUTPUT_KWARGS[output]), t.expected("all", output))


@pytest.mark.parametrize("kind_id, output", cases("matrix-one-row", OUTPUTS))
def test_matrix_one_row_at_a_time_equals_booster_predict(kind_id, output):
    """One row per call: LightGBM's single-row fast path (pred_contrib takes the batch one)."""
    t = trained(kind_id)
    X = t.X
    if refused(t.kind, output):
        with pytest.raises(InvalidPayload) as err:
            t.model.predict(X[:1], **OUTPUT_KWARGS[output])
        assert_lightgbm_refuses_too(t, output, err.value)
        return
    expected = t.expected("all", output)
    rows = [t.model.predict(X[i:i + 1], **OUTPUT_KWARGS[output]) for i in range(len(X))]
    for one in rows:
        assert one.shape[0] == 1 and one.shape[1:] == expected.shape[1:]
    assert_same_bits(np.concatenate(rows), expected)


# -- the JSON round trip --------------------------------------------------------------------


def json_rows(X: np.ndarray) -> list[list[float | None]]:
    """The matrix as JSON rows: NaN is null."""
    rows = X.tolist()
    for i, j in zip(*np.nonzero(np.isnan(X))):
        rows[i][j] = None
    return rows


def rows_body(X: np.ndarray, output: str) -> dict[str, Any]:
    body: dict[str, Any] = {"rows": json_rows(X)}
    if output != "predict":
        body["options"] = {output: True}
    return body


def records_body(X: np.ndarray, output: str, names: tuple[str, ...]) -> dict[str, Any]:
    """A missing value is left out of even rows and sent as null in odd ones."""
    records = []
    for i, row in enumerate(json_rows(X)):
        values = dict(zip(names, row))
        records.append(values if i % 2 else {k: v for k, v in values.items() if v is not None})
    body: dict[str, Any] = {"records": records}
    if output != "predict":
        body["options"] = {output: True}
    return body


def v2_body(X: np.ndarray, output: str) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "diff", "inputs": [{
        "name": "input-0", "shape": list(X.shape), "datatype": "FP64",
        "data": json_rows(X.reshape(1, -1))[0]}]}
    if output != "predict":
        body["parameters"] = {output: True}
    return body


def v2_columns_body(X: np.ndarray, output: str, names: tuple[str, ...]) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [
        {"name": name, "shape": [len(X)], "datatype": "FP64",
         "data": column} for name, column in zip(names, json_rows(X.T))]}
    if output != "predict":
        body["parameters"] = {output: True}
    return body


# format -> (which rows it sends, how it writes them, V2 or not)
FORMATS = {
    "rows": ("finite", lambda X, o, names: rows_body(X, o), "score"),
    "rows+nulls": ("json", lambda X, o, names: rows_body(X, o), "score"),
    "records": ("json", records_body, "score"),
    "v2": ("finite", lambda X, o, names: v2_body(X, o), "v2"),
    "v2+nulls": ("json", lambda X, o, names: v2_body(X, o), "v2"),
    "v2-columns": ("json", v2_columns_body, "v2"),
}
# Bodies of plain numbers and no options are read without decoding them whole (simdjson).
DIRECT = {"rows", "v2"}


@pytest.fixture(scope="module")
def service(azurite):
    """A ScoringService on a real Azurite container, as tests/scoring/test_service.py builds one; each
    kind's model text is uploaded the first time a test asks for it."""

    container = new_container(azurite.connection_string, f"diff{uuid.uuid4().hex[:20]}")
    store = ModelStore(BlobSource(container, 64 * 1024 * 1024), refresh_seconds=3600)
    svc = ScoringService(Settings.from_env({}), store)
    uploaded: set[str] = set()

    def score(kind_id: str, doc: dict[str, Any] | bytes, fmt: str):
        """Score a body (a document is written with orjson) for the kind's model."""
        if kind_id not in uploaded:
            container.upload_blob(f"{kind_id}.txt", trained(kind_id).text.encode(), overwrite=True)
            uploaded.add(kind_id)
        body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        return svc.score(kind_id, body, fmt=fmt, content_type="application/json")

    yield score
    svc.close()
    container.delete_container()


# JSON has no non-finite numbers: a response spells them as proto3's JSON mapping does.
SPELLED = {"Infinity": np.inf, "-Infinity": -np.inf, "NaN": np.nan}


def client_view(result, protocol: str) -> np.ndarray:
    """The predictions as the client decodes them from the response body."""
    def number(v: Any) -> float:
        assert type(v) is float or v in SPELLED, v
        return SPELLED[v] if type(v) is str else v

    if protocol == "v2":
        body = encode_v2_response(result.predictions, model_name="m", model_version="v",
                                  request_id=result.request.request_id)
        out = orjson.loads(body)["outputs"][0]
        return np.array([number(v) for v in out["data"]], dtype=np.float64).reshape(out["shape"])
    body = encode_score_response(result.predictions, result.model.to_dict(), "r")
    return np.array([[number(v) for v in row] if type(row) is list else number(row)
                     for row in orjson.loads(body)["predictions"]], dtype=np.float64)


@pytest.mark.parametrize("kind_id, fmt, output", cases("json", list(FORMATS), OUTPUTS))
def test_json_body_equals_booster_predict(service, monkeypatch, kind_id, fmt, output):
    t = trained(kind_id)
    which, build, protocol = FORMATS[fmt]
    X = t.inputs(which, output)
    doc = build(X, output, t.kind.feature_names)
    if refused(t.kind, output):
        with pytest.raises(InvalidPayload) as err:
            service(kind_id, doc, protocol)
        assert_lightgbm_refuses_too(t, output, err.value)
        return
    if fmt in DIRECT and output == "predict":
        def no_decoding(body):
            raise AssertionError("a body of plain numbers should be read directly")

        monkeypatch.setattr("shared.scoring.service.decode_json", no_decoding)
    result = service(kind_id, doc, protocol)
    assert_same_bits(result.request.X, X)  # the values arrived exactly
    expected = t.expected(which, output)
    assert_same_bits(result.predictions, expected)
    # ... and the client reads them back from the response (inf and NaN spelled out).
    assert_same_bits(client_view(result, protocol), expected)


@pytest.mark.parametrize("kind_id, fmt", cases("json-one-row", ["rows", "records", "v2"]))
def test_json_one_row_at_a_time_equals_booster_predict(service, kind_id, fmt):
    """A request per row, as online clients send them (rows without NaN are read directly):
    every row as ``rows``; a spread of them in the other formats, whose values are read by
    the same code as in a batch."""
    t = trained(kind_id)
    _, build, protocol = FORMATS[fmt]
    step = 1 if fmt == "rows" else 4
    X = t.inputs("json")[::step]
    expected = t.expected("json", "predict")[::step]
    got = [service(kind_id, build(X[i:i + 1], "predict", t.kind.feature_names), protocol).predictions
           for i in range(len(X))]
    assert_same_bits(np.concatenate(got), expected)


@pytest.mark.parametrize("kind_id", cases("json-parallel"))
def test_a_batch_scored_on_every_core_equals_booster_predict(service, kind_id):
    """From PREDICT_PARALLEL_MIN_ROWS rows on, scorefn has LightGBM predict on several
    threads (PREDICT_MAX_THREADS=0: one per core)."""
    t = trained(kind_id)
    rows = Settings.from_env({}).predict_parallel_min_rows
    X = np.resize(t.inputs("json"), (rows + 1, t.X.shape[1]))
    result = service(kind_id, rows_body(X, "predict"), "score")
    assert_same_bits(result.predictions, t.reference.predict(X, **ONE_THREAD))


# Clients other than orjson write numbers their own way: 17 significant digits (printf's
# %.17g, R's jsonlite digits=17), integers without a fraction, the exact decimal expansion
# (Python's Decimal). The same float64 must arrive, on the direct path and on the full one.
NUMBER_STYLES = {
    "17-digits": lambda v: format(v, ".17g"),
    "integers": lambda v: str(int(v)) if v.is_integer() and abs(v) < 2**63 else repr(v),
    "exact-decimal": lambda v: str(Decimal(v)),
}


@pytest.mark.parametrize("kind_id", cases("json-number-styles"))
def test_numbers_written_other_ways_equal_booster_predict(service, kind_id):
    t = trained(kind_id)
    X = t.inputs("json")
    expected = t.expected("json", "predict")
    for write in NUMBER_STYLES.values():
        for nulls in (False, True):  # without a null the body may be read directly
            rows = X if nulls else t.inputs("finite")
            text = "[" + ",".join("[" + ",".join("null" if math.isnan(v) else write(float(v))
                                                 for v in row) + "]" for row in rows) + "]"
            result = service(kind_id, b'{"rows":' + text.encode() + b"}", "score")
            # the same values; "-0" is the integer 0, so a zero may lose its sign (as in
            # Python's json), which no split can tell apart
            np.testing.assert_array_equal(result.request.X, rows)
            assert_same_bits(result.predictions,
                             expected if nulls else t.expected("finite", "predict"))
