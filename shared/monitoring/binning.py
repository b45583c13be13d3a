"""How monitoring counts a model's inputs and predictions: each feature's bins, its training
range, and the predictions' bins.

A :class:`Binning` comes from one of two places:

- **a reference** (``upload-model --reference-data``): each numeric feature's deciles of the
  reference rows (a feature with few distinct values gets a bin per value), each categorical
  feature's codes as seen there, and the predictions' quantiles;
- **the model alone** (no reference uploaded): LightGBM's ``feature_infos`` give each numeric
  feature's training range, cut into equal bins, and each categorical feature's codes.

Either way the training range from ``feature_infos`` is kept, so a served value outside it
counts as out of range. Served counts and reference counts are only ever compared under the
same binning (:attr:`Binning.id`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import orjson

from shared.models.model import ModelInfo

FeatureKind = Literal["numeric", "categorical", "unused"]
PredictionKind = Literal["probability", "classes", "value"]

NUMERIC_BINS = 10  # deciles of the reference (or equal parts of the training range)
PREDICTION_BINS = 20
MAX_CODES = 200  # a categorical feature's codes counted one by one; any other is "other"
# Objectives whose (single) prediction is a probability in [0, 1].
_PROBABILITY = frozenset(("binary", "cross_entropy", "xentropy"))
_CLASSES = frozenset(("multiclass", "softmax", "multiclassova", "multiclass_ova", "ova",
                      "ovr"))


@dataclass(frozen=True)
class FeatureBins:
    """One feature's bins. Numeric: ``len(edges) + 1`` bins split at ``edges`` (a value
    equal to an edge goes right). Categorical: one bin per code in ``codes``, then one for any
    other code. ``low``/``high``: the training range (numeric) from ``feature_infos``."""

    name: str
    kind: FeatureKind
    edges: tuple[float, ...] = ()
    codes: tuple[int, ...] = ()
    low: float | None = None
    high: float | None = None
    # A categorical feature's every code in training (``feature_infos``): a code outside it is
    # out of range, one in it but not in ``codes`` is only "other". Known when counting (from
    # the model), not stored: the stored bins do not depend on it.
    training_codes: tuple[int, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        if self.kind == "categorical":
            return len(self.codes) + 1
        return len(self.edges) + 1

    def labels(self) -> list[str]:
        """A short label per bin, for reports."""
        if self.kind == "categorical":
            return [str(c) for c in self.codes] + ["other"]
        if not self.edges:
            return ["all"]
        e = [f"{v:.4g}" for v in self.edges]
        return [f"< {e[0]}"] + [f"[{a}, {b})" for a, b in zip(e, e[1:])] + [f">= {e[-1]}"]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.edges:
            out["edges"] = list(self.edges)
        if self.codes:
            out["codes"] = list(self.codes)
        if self.low is not None:
            out["low"] = self.low
        if self.high is not None:
            out["high"] = self.high
        return out

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FeatureBins:
        kind = doc["kind"]
        if kind not in ("numeric", "categorical", "unused"):
            raise ValueError(f"unknown feature kind {kind!r}")
        edges = _edges(doc, f"feature {doc.get('name')!r}")
        codes = tuple(int(c) for c in doc.get("codes", ()))
        if len(codes) > MAX_CODES or list(codes) != sorted(set(codes)):
            raise ValueError(f"feature {doc.get('name')!r}: codes must be distinct, sorted, "
                             f"at most {MAX_CODES}")
        low, high = doc.get("low"), doc.get("high")
        return cls(str(doc["name"]), kind, edges, codes,
                   None if low is None else float(low), None if high is None else float(high))


@dataclass(frozen=True)
class PredictionBins:
    """How predictions are counted: ``probability`` (one value in [0, 1], equal bins),
    ``classes`` (the predicted class of a multiclass model), ``value`` (bins at ``edges``:
    the reference predictions' quantiles, or without a reference a fixed grid of powers of
    ten)."""

    kind: PredictionKind
    edges: tuple[float, ...] = ()
    classes: int = 0

    @property
    def size(self) -> int:
        return self.classes if self.kind == "classes" else len(self.edges) + 1

    def labels(self) -> list[str]:
        if self.kind == "classes":
            return [f"class {k}" for k in range(self.classes)]
        return FeatureBins("prediction", "numeric", self.edges).labels()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.edges:
            out["edges"] = list(self.edges)
        if self.kind == "classes":
            out["classes"] = self.classes
        return out

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> PredictionBins:
        kind = doc["kind"]
        if kind not in ("probability", "classes", "value"):
            raise ValueError(f"unknown prediction kind {kind!r}")
        return cls(kind, _edges(doc, "predictions"), int(doc.get("classes", 0)))


def _edges(doc: dict[str, Any], what: str) -> tuple[float, ...]:
    """A stored ``edges`` list, checked: finite and strictly increasing."""
    edges = tuple(float(v) for v in doc.get("edges", ()))
    if any(b <= a for a, b in zip(edges, edges[1:])) or not all(map(math.isfinite, edges)):
        raise ValueError(f"{what}: edges must be finite and increasing")
    return edges


@dataclass(frozen=True)
class Binning:
    """A model's feature and prediction bins; ``source``: ``reference`` or ``model``."""

    features: tuple[FeatureBins, ...]
    predictions: PredictionBins
    source: Literal["reference", "model"]

    @property
    def id(self) -> str:
        """A digest of the bins: counts made under equal ids may be added and compared."""
        return hashlib.sha256(orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)
                              ).hexdigest()[:16]

    @property
    def bins_id(self) -> str:
        """A digest of the bins alone (not the training ranges): two models' counts under equal
        ``bins_id`` (references made from the same rows) can be compared bin by bin."""
        bins = [[f.name, f.kind, list(f.edges), list(f.codes)] for f in self.features]
        return hashlib.sha256(orjson.dumps([bins, self.predictions.to_dict()])).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "features": [f.to_dict() for f in self.features],
                "predictions": self.predictions.to_dict()}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Binning:
        source = doc["source"]
        if source not in ("reference", "model"):
            raise ValueError(f"unknown binning source {source!r}")
        return cls(tuple(FeatureBins.from_dict(f) for f in doc["features"]),
                   PredictionBins.from_dict(doc["predictions"]), source)


def training_range(info: str) -> tuple[FeatureKind, float | None, float | None, tuple[int, ...]]:
    """What LightGBM's ``feature_infos`` entry says: ``[lo:hi]`` (numeric; an infinite end is
    no bound: ``None``), ``none`` (no tree uses the feature) or a categorical feature's codes
    ``0:1:4`` (all of them)."""
    if not info or info == "none":
        return "unused", None, None, ()
    if info.startswith("["):
        lo, _, hi = info.strip("[]").partition(":")
        try:
            low, high = float(lo), float(hi)
        except ValueError:
            return "numeric", None, None, ()
        return ("numeric", low if math.isfinite(low) else None,
                high if math.isfinite(high) else None, ())
    try:
        codes = sorted({int(c) for c in info.split(":") if c})
    except ValueError:
        return "numeric", None, None, ()
    return "categorical", None, None, tuple(codes)


def prediction_kind(info: ModelInfo) -> PredictionKind:
    if info.num_outputs > 1 and info.objective in _CLASSES:
        return "classes"
    if info.num_outputs == 1 and info.objective in _PROBABILITY:
        return "probability"
    return "value"


def _probability_edges() -> tuple[float, ...]:
    return tuple(round(k / PREDICTION_BINS, 6) for k in range(1, PREDICTION_BINS))


def _value_edges() -> tuple[float, ...]:
    """A fixed grid for a model's values when no reference says their scale: 0 and
    +-10^k for k from -2 to 5."""
    powers = [10.0 ** k for k in range(-2, 6)]
    return tuple([-p for p in reversed(powers)] + [0.0] + powers)


def model_binning(info: ModelInfo) -> Binning:
    """Bins from the model alone: equal parts of each numeric feature's training range."""
    features = []
    for j, name in enumerate(info.feature_names):
        kind, low, high, codes = training_range(info.feature_infos[j] if info.feature_infos
                                                else "")
        edges: tuple[float, ...] = ()
        if kind == "numeric" and low is not None and high is not None and high > low:
            edges = tuple(float(v) for v in np.unique(
                np.linspace(low, high, NUMERIC_BINS + 1)[1:-1]))
        features.append(FeatureBins(name, kind, edges, codes[:MAX_CODES], low, high,
                                    codes if kind == "categorical" else None))
    pkind = prediction_kind(info)
    pedges = {"probability": _probability_edges(), "value": _value_edges()}.get(pkind, ())
    predictions = PredictionBins(pkind, pedges, info.num_outputs if pkind == "classes" else 0)
    return Binning(tuple(features), predictions, "model")


def with_training_codes(binning: Binning, info: ModelInfo) -> Binning:
    """``binning`` (read from storage) with each categorical feature's training codes from the
    model, for counting out-of-range codes."""
    model = model_binning(info)
    return replace(binning, features=tuple(
        replace(f, training_codes=m.training_codes) if f.kind == "categorical" else f
        for f, m in zip(binning.features, model.features)))


def quantile_edges(values: np.ndarray, bins: int) -> tuple[float, ...]:
    """Edges splitting ``values`` (NaN ignored) into ``bins`` parts of near equal counts; a
    feature with at most ``bins`` distinct values gets a bin per value (edges between them)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ()
    distinct = np.unique(finite)
    if distinct.size <= bins:
        return tuple(float(v) for v in (distinct[:-1] + distinct[1:]) / 2)
    # Equal-count cuts; "right" bins put a value equal to an edge above it, so an edge at a
    # heavy value (a spike at 0) is moved just past it and the spike stays in one bin.
    cuts = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1], method="linear")
    return tuple(float(v) for v in np.unique(cuts) if distinct[0] < v <= distinct[-1])


def reference_binning(info: ModelInfo, X: np.ndarray, predictions: np.ndarray) -> Binning:
    """Bins from reference rows ``X`` (the model's feature order, categories as codes) and the
    model's predictions on them."""
    base = model_binning(info)
    features = []
    for j, fb in enumerate(base.features):
        column = X[:, j]
        if fb.kind == "categorical":
            # The most frequent codes in the reference get a bin each; the rest share "other".
            seen = column[np.isfinite(column) & (column >= 0) & (column == np.floor(column))]
            values, counts = np.unique(seen.astype(np.int64), return_counts=True)
            top = values[np.argsort(-counts, kind="stable")[:MAX_CODES]]
            chosen = set(top.tolist())
            extra = [c for c in fb.training_codes or () if c not in chosen]
            codes = tuple(sorted([int(c) for c in top] + extra[:MAX_CODES - len(top)]))
            features.append(FeatureBins(fb.name, fb.kind, (), codes, fb.low, fb.high,
                                        fb.training_codes))
        else:
            features.append(FeatureBins(fb.name, "numeric" if fb.kind == "unused" else fb.kind,
                                        quantile_edges(column, NUMERIC_BINS), (), fb.low,
                                        fb.high))
    pred = base.predictions
    if pred.kind == "value" and predictions.size:
        pred = PredictionBins("value", quantile_edges(predictions.reshape(-1), PREDICTION_BINS))
    return Binning(tuple(features), pred, "reference")
