"""Train the demo and test models, with a fixed seed.

Most data come from known generating processes (``churn_probability``, ``price_mean``),
so that tests and the A/B demo can compare models against the truth. Two models are
trained as data scientists train them, from pandas DataFrames: ``cancer`` on scikit-learn's
bundled breast cancer data (real measurements; columns named ``mean radius`` ...), and
``plans``, a churn model whose contract and payment method are ``category`` columns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CHURN_FEATURES = ("tenure_months", "monthly_charges", "support_calls", "contract_months",
                  "age", "usage_gb", "late_payments", "discount_pct")
PRICE_FEATURES = ("sqft", "bedrooms", "bathrooms", "age_years", "lot_acres", "distance_km")
SEGMENT_FEATURES = ("recency_days", "frequency", "basket_value", "web_share")


def churn_features(n: int, rng: np.random.Generator, missing_rate: float = 0.02) -> np.ndarray:
    """Customer features; a few values are missing (NaN), as in real data."""
    X = np.column_stack([
        rng.integers(0, 72, n),
        rng.normal(65, 20, n).clip(10, 150),
        rng.poisson(1.2, n),
        rng.choice([1, 12, 24], n, p=[0.5, 0.3, 0.2]),
        rng.integers(18, 90, n),
        rng.gamma(2.0, 15.0, n),
        rng.poisson(0.4, n),
        rng.choice([0, 5, 10, 20], n),
    ]).astype(np.float64)
    mask = rng.random(X.shape) < missing_rate
    mask[:, 0] = False  # tenure is always known
    X[mask] = np.nan
    return X


def churn_probability(X: np.ndarray) -> np.ndarray:
    """The true churn probability of each row (the generating process)."""
    v = np.nan_to_num(X, nan=0.0)
    logit = (1.2 - 0.05 * v[:, 0] + 0.02 * (v[:, 1] - 65) + 0.45 * v[:, 2]
             - 0.06 * v[:, 3] + 0.6 * v[:, 6] - 0.04 * v[:, 7] + 0.3 * np.sin(v[:, 5] / 10))
    return 1.0 / (1.0 + np.exp(-logit))


def price_features(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.column_stack([
        rng.normal(1800, 600, n).clip(300, 6000), rng.integers(1, 7, n), rng.integers(1, 5, n),
        rng.integers(0, 100, n), rng.gamma(2.0, 0.2, n), rng.gamma(2.0, 8.0, n),
    ]).astype(np.float64)


def price_mean(X: np.ndarray) -> np.ndarray:
    """The expected price of each row (in thousands)."""
    return (40 + 0.15 * X[:, 0] + 12 * X[:, 1] + 18 * X[:, 2] - 0.8 * X[:, 3]
            + 60 * np.sqrt(X[:, 4]) - 2.5 * X[:, 5])


def segment_features(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.column_stack([
        rng.gamma(2.0, 30.0, n), rng.poisson(6, n), rng.gamma(3.0, 25.0, n), rng.random(n),
    ]).astype(np.float64)


def segment_labels(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    score = np.column_stack([-0.02 * X[:, 0] + 0.3 * X[:, 1], 0.02 * X[:, 2], 3 * X[:, 3]])
    score += rng.gumbel(size=score.shape)
    return score.argmax(axis=1)


@dataclass(frozen=True)
class DemoModel:
    """One trained model: where it was written and what it is."""

    name: str
    path: Path
    objective: str
    feature_names: tuple[str, ...]  # as LightGBM stores them
    trained_names: tuple[str, ...] = ()  # the DataFrame's columns, where they differ


def _train(params: dict, X: np.ndarray, y: np.ndarray, names: tuple[str, ...], rounds: int):
    import lightgbm as lgb

    params = {"verbosity": -1, "seed": 7, "deterministic": True, "num_threads": 2, **params}
    data = lgb.Dataset(X, y, feature_name=list(names), free_raw_data=True)
    return lgb.train(params, data, num_boost_round=rounds)


def train_demo_models(out_dir: Path, *, rows: int = 20_000, seed: int = 42) -> dict[str, DemoModel]:
    """Train every demo model into ``out_dir`` as LightGBM text files; returns them by name.

    ``churn`` and ``churn_v1`` are two binary models of different quality (for A/B),
    ``price`` a regressor and ``segment`` a 3-class classifier.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    models: dict[str, DemoModel] = {}

    X = churn_features(rows, rng)
    y = (rng.random(rows) < churn_probability(X)).astype(np.float64)
    good = _train({"objective": "binary", "num_leaves": 31, "learning_rate": 0.08}, X, y,
                  CHURN_FEATURES, 120)
    # The weaker model sees only three features and few trees: a worse but plausible model.
    weak_X = X.copy()
    weak_X[:, 3:] = np.nan
    weak = _train({"objective": "binary", "num_leaves": 7, "learning_rate": 0.1}, weak_X, y,
                  CHURN_FEATURES, 15)
    for name, booster in (("churn", good), ("churn_v1", weak)):
        path = out_dir / f"{name}.txt"
        booster.save_model(str(path))
        models[name] = DemoModel(name, path, "binary", CHURN_FEATURES)

    Xp = price_features(rows, rng)
    yp = price_mean(Xp) + rng.normal(0, 15, rows)
    price = _train({"objective": "regression", "num_leaves": 31, "learning_rate": 0.1}, Xp, yp,
                   PRICE_FEATURES, 100)
    path = out_dir / "price.txt"
    price.save_model(str(path))
    models["price"] = DemoModel("price", path, "regression", PRICE_FEATURES)

    Xs = segment_features(rows // 2, rng)
    ys = segment_labels(Xs, rng)
    segment = _train({"objective": "multiclass", "num_class": 3, "num_leaves": 15}, Xs, ys,
                     SEGMENT_FEATURES, 40)
    path = out_dir / "segment.txt"
    segment.save_model(str(path))
    models["segment"] = DemoModel("segment", path, "multiclass", SEGMENT_FEATURES)
    models.update(train_dataframe_models(out_dir, seed=seed))
    return models


def train_broken_churn(out_dir: Path, *, rows: int = 5_000, seed: int = 43) -> DemoModel:
    """``churn_inverted``: the churn features, trained on inverted labels (a labelling bug in a
    training pipeline). It loads and answers like any model; its predictions are far from
    the other churn models': what a rollout's prediction-shift guardrail is for."""
    rng = np.random.default_rng(seed)
    X = churn_features(rows, rng)
    y = (rng.random(rows) >= churn_probability(X)).astype(np.float64)
    booster = _train({"objective": "binary", "num_leaves": 15, "learning_rate": 0.1}, X, y,
                     CHURN_FEATURES, 40)
    path = out_dir / "churn_inverted.txt"
    booster.save_model(str(path))
    return DemoModel("churn_inverted", path, "binary", CHURN_FEATURES)


PLAN_CONTRACTS = ("month", "year", "two_year")  # listed as a person would; pandas sorts them
PLAN_PAYMENTS = ("card", "bank transfer", "check", "voucher")


def plans_frame(n: int, seed: int = 0) -> Any:
    """Customers as a DataFrame with ``category`` columns, as churn data is usually held."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "tenure months": rng.integers(0, 72, n).astype(np.float64),
        "monthly charges": rng.normal(65, 20, n).clip(10, 150).round(2),
        "contract": pd.Categorical(rng.choice(PLAN_CONTRACTS, n, p=[0.5, 0.3, 0.2])),
        "payment method": pd.Categorical(rng.choice(PLAN_PAYMENTS, n)),
        "support calls": rng.poisson(1.2, n).astype(np.float64),
    })


def plans_churn_probability(frame: Any) -> np.ndarray:
    contract = {"month": 1.2, "year": -0.4, "two_year": -1.3}
    payment = {"card": 0.0, "bank transfer": -0.2, "check": 0.5, "voucher": 0.9}
    logit = (0.3 - 0.04 * frame["tenure months"].to_numpy() + 0.015 * (frame["monthly charges"]
             .to_numpy() - 65) + frame["contract"].map(contract).astype(float).to_numpy()
             + frame["payment method"].map(payment).astype(float).to_numpy()
             + 0.4 * frame["support calls"].to_numpy())
    return 1.0 / (1.0 + np.exp(-logit))


def train_dataframe_models(out_dir: Path, *, seed: int = 42) -> dict[str, DemoModel]:
    """``cancer`` (real data bundled with scikit-learn, no download) and ``plans`` (pandas
    categories), each trained from its DataFrame as a data scientist would."""
    import lightgbm as lgb
    from sklearn.datasets import load_breast_cancer

    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"verbosity": -1, "seed": 7, "deterministic": True, "num_threads": 2}
    models: dict[str, DemoModel] = {}
    cancer = load_breast_cancer(as_frame=True)
    booster = lgb.train({**params, "objective": "binary", "num_leaves": 15,
                         "learning_rate": 0.1}, lgb.Dataset(cancer.data, cancer.target), 60)
    path = out_dir / "cancer.txt"
    booster.save_model(str(path))
    models["cancer"] = DemoModel("cancer", path, "binary", tuple(booster.feature_name()),
                                 tuple(cancer.data.columns))
    frame = plans_frame(8_000, seed)
    rng = np.random.default_rng(seed + 1)
    y = (rng.random(len(frame)) < plans_churn_probability(frame)).astype(np.float64)
    booster = lgb.train({**params, "objective": "binary", "num_leaves": 15,
                         "learning_rate": 0.1, "min_data_per_group": 20},
                        lgb.Dataset(frame, y), 60)
    path = out_dir / "plans.txt"
    booster.save_model(str(path))
    models["plans"] = DemoModel("plans", path, "binary", tuple(booster.feature_name()),
                                tuple(frame.columns))
    return models


def train_bench_model(out_path: Path, *, trees: int = 500, leaves: int = 63, features: int = 100,
                      rows: int = 50_000, seed: int = 3) -> Path:
    """A larger binary model like the issues' reference (500 trees, 63 leaves, 100 features)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    w = rng.normal(size=features) / np.sqrt(features)
    logit = X @ w + 0.5 * np.sin(X[:, 0] * 2) + 0.3 * X[:, 1] * X[:, 2]
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    names = tuple(f"f{i}" for i in range(features))
    booster = _train({"objective": "binary", "num_leaves": leaves, "learning_rate": 0.05,
                      "min_data_in_leaf": 5}, X, y, names, trees)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out_path))
    return out_path


if __name__ == "__main__":
    import sys

    start = time.perf_counter()
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ".demo/models")
    for model in train_demo_models(target).values():
        print(f"{model.name:10s} {model.objective:11s} {model.path}")
    print(f"trained in {time.perf_counter() - start:.1f} s")
