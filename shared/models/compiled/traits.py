"""What a model's text says about compiling its forest (objective, unsupported features, zero
splits), and LightGBM's output transformations that turn compiled raw scores into predictions."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# LightGBM reads every input with |x| <= kZeroThreshold (1e-35f) as 0.0 (its row iterators skip
# them as zeros); lleaves compares the value itself. They differ only for features with a split
# threshold in [-K, K) (LightGBM puts zero splits at -K): those inputs are zeroed first.
ZERO_THRESHOLD = float(np.float32(1e-35))

_IDENTITY = {"regression", "regression_l2", "l2", "mean_squared_error", "mse", "regression_l1",
             "l1", "mean_absolute_error", "mae", "huber", "fair", "quantile", "mape",
             "mean_absolute_percentage_error", "lambdarank", "rank_xendcg", "xendcg", "none"}
_EXP = {"poisson", "gamma", "tweedie"}


@dataclass(frozen=True)
class Traits:
    """What decides whether and how a model's forest can be compiled."""

    objective: str
    params: dict[str, str]
    num_outputs: int
    num_features: int
    unsupported: str | None
    zero_features: tuple[int, ...] = ()  # features with a threshold in [-K, K), see ZERO_THRESHOLD


def analyse(text: str, num_features: int, num_outputs: int,
            split: tuple[list[list[float]], set[int]] | None = None) -> Traits:
    """The model text's objective and anything lleaves would get wrong or cannot compile."""
    head = text[: text.find("\nTree=") + 1] if "\nTree=" in text else text
    header = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    tokens = (header.get("objective") or "").split()
    objective = tokens[0] if tokens else ""
    params = dict(t.split(":", 1) for t in tokens[1:] if ":" in t)
    params.update({t: "" for t in tokens[1:] if ":" not in t})
    reason = None
    num_class = int(header.get("num_class", "1") or 1)
    per_iteration = int(header.get("num_tree_per_iteration", str(num_class)) or num_class)
    infos = (header.get("feature_infos") or "").split()
    if objective not in _IDENTITY | _EXP | {"binary", "cross_entropy", "xentropy",
                                             "cross_entropy_lambda", "xentlambda", "multiclass",
                                             "softmax", "multiclassova", "multiclass_ova", "ova",
                                             "ovr"}:
        reason = f"objective {objective or '(none)'!r} is not supported"
    elif per_iteration != num_class or num_outputs != num_class:
        reason = "trees per iteration differ from the number of classes"
    elif "\nTree=" not in text:
        reason = "the model has no trees"
    elif any(not (i.startswith("[") or i == "none") for i in infos) or re.search(
            r"\nnum_cat=[1-9]", text):  # a literal prefix: far faster than ^ with re.M on MBs
        # lleaves casts categorical values to int32 differently from LightGBM (negative and
        # very large values, fractions): left to LightGBM.
        reason = "categorical features are not supported"
    elif "\nis_linear=1" in text:
        reason = "linear trees are not supported by lleaves"
    elif re.search(r"^average_output$", head, re.M):
        # LightGBM's raw scores of a random forest are not averaged, its predictions are.
        reason = "random forests (average_output) are not supported"
    if "sigmoid" in params:
        try:
            if not float(params["sigmoid"]) > 0:
                reason = "sigmoid parameter must be positive"
        except ValueError:
            reason = "unreadable sigmoid parameter"
    thresholds, zero_missing = split or split_thresholds(text, num_features)
    zero_features = tuple(j for j, ts in enumerate(thresholds)
                          if j in zero_missing or any(-ZERO_THRESHOLD <= t < ZERO_THRESHOLD for t in ts))
    return Traits(objective, params, num_outputs, num_features, reason, zero_features)



def split_thresholds(text: str, num_features: int) -> tuple[list[list[float]], set[int]]:
    """The split thresholds of each feature, and the features with a zero-as-missing split
    (LightGBM takes |x| <= K as zero there; lleaves only 0.0)."""
    # Every tree writes these three lines, of equal length (empty for a one-leaf tree).
    features = _numbers(re.findall(r"\nsplit_feature=([^\n]*)", text), np.int64)
    values = _numbers(re.findall(r"\nthreshold=([^\n]*)", text), np.float64)
    decisions = _numbers(re.findall(r"\ndecision_type=([^\n]*)", text), np.int64)
    if not len(features) == len(values) == len(decisions):
        raise ValueError("split_feature, threshold and decision_type lines do not match")
    inside = (features >= 0) & (features < num_features)
    features, values, decisions = features[inside], values[inside], decisions[inside]
    order = np.argsort(features, kind="stable")  # each feature's thresholds in tree order
    bounds = np.searchsorted(features[order], np.arange(num_features + 1))
    thresholds = [values[order[bounds[j]:bounds[j + 1]]].tolist() for j in range(num_features)]
    zero_missing = set(np.unique(features[((decisions >> 2) & 3) == 1]).tolist())  # MissingType::Zero
    return thresholds, zero_missing


def _numbers(lines: list[str], dtype: type) -> np.ndarray:
    return np.fromstring(" ".join(lines), dtype=dtype, sep=" ")


def _libm(fn: Callable[[float], float]) -> Callable[[np.ndarray], np.ndarray]:
    """``fn`` (from :mod:`math`, i.e. the C library LightGBM calls too) over an array. numpy's
    own SIMD ``exp`` (on AVX-512 CPUs) may differ in the last bit; this never does."""
    def apply(a: np.ndarray) -> np.ndarray:
        return np.fromiter(map(fn, a.ravel().tolist()), dtype=np.float64, count=a.size).reshape(a.shape)
    return apply


_exp, _log1p = _libm(math.exp), _libm(math.log1p)


def output_transform(traits: Traits) -> Callable[[np.ndarray], np.ndarray]:
    """LightGBM's conversion of raw scores (n, k) to predictions, in its own formulas and with
    the same C library functions: equal to LightGBM's to the bit."""
    objective, params = traits.objective, traits.params
    if objective in ("binary", "multiclassova", "multiclass_ova", "ova", "ovr"):
        s = float(params.get("sigmoid", "1"))
        return lambda raw: 1.0 / (1.0 + _exp(-s * raw))
    if objective in ("cross_entropy", "xentropy"):
        return lambda raw: 1.0 / (1.0 + _exp(-raw))
    if objective in ("cross_entropy_lambda", "xentlambda"):
        return lambda raw: _log1p(_exp(raw))
    if objective in _EXP:
        return _exp
    if objective in ("multiclass", "softmax"):
        def softmax(raw: np.ndarray) -> np.ndarray:
            e = _exp(raw - raw.max(axis=1, keepdims=True))
            total = np.zeros((raw.shape[0], 1))
            for j in range(raw.shape[1]):  # LightGBM's order of summation
                total[:, 0] += e[:, j]
            return e / total
        return softmax
    if "sqrt" in params:
        return lambda raw: np.sign(raw) * raw * raw
    return lambda raw: raw


def scalar_transform(traits: Traits) -> Callable[[float], float] | None:
    """The same for one output value in plain floats (single rows), when there is one."""
    objective, params = traits.objective, traits.params
    if traits.num_outputs != 1:
        return None
    if objective == "binary":
        s = float(params.get("sigmoid", "1"))
        return lambda v: 1.0 / (1.0 + math.exp(-s * v))
    if objective in ("cross_entropy", "xentropy"):
        return lambda v: 1.0 / (1.0 + math.exp(-v))
    if objective in ("cross_entropy_lambda", "xentlambda"):
        return lambda v: math.log1p(math.exp(v))
    if objective in _EXP:
        return math.exp
    if "sqrt" in params:
        return lambda v: ((v > 0) - (v < 0)) * v * v  # LightGBM: Sign(x) * x * x
    return lambda v: v
