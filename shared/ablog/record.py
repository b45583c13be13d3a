"""One line of the prediction log: :class:`PredictionRecord`, built by the scoring service,
written as JSON by the log's writer and read back by the A/B report.

A line, in this key order (``key``, ``variant_index``, ``pinned``, ``feature_names`` and
``features`` only when set)::

    {"time": "2026-11-24T21:05:09.123456Z", "endpoint": "churn", "request_id": "6f1c...",
     "key": "user-42", "trigger": "http", "variant": "candidate", "shadow": false,
     "variant_index": 1, "pinned": true, "model": {"name": "churn", "version": "3"},
     "objective": "binary", "output": "predict", "rows": 1, "predictions": [0.31],
     "latency_ms": 1.2345, "feature_names": [...], "features": [[...]]}

A request that failed after it was routed, through no fault of its own (its model is missing
or broken, storage is down, a bug; not a bad request), is logged too, with ``"error": code``,
``rows`` 0 and ``predictions`` ``null``: the rollout controller compares the variants' failure
rates. ``predictions`` is ``null`` for ``pred_contrib`` output; ``features`` are the rows as the
request sent them (a categorical feature's category value, ``null`` when missing). A line
too large for one append block loses ``features`` and ``feature_names`` and says
``"features_omitted": "too_large"`` instead. Stored logs stay readable: change this format
only by adding keys.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from shared.ablog.times import epoch_seconds, iso_time

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE

# What the predictions of a request are (the ``output`` field).
PREDICT = "predict"
RAW_SCORE = "raw_score"
PRED_CONTRIB = "pred_contrib"


class DamagedRecord(ValueError):
    """A prediction log line that is not a record (a torn or hand-edited line)."""


def output_kind(options: Any) -> str:
    """What the predictions of a request are: ``predict``, ``raw_score`` or ``pred_contrib``."""
    if getattr(options, "pred_contrib", False):
        return PRED_CONTRIB
    if getattr(options, "raw_score", False):
        return RAW_SCORE
    return PREDICT


@dataclass(slots=True, kw_only=True)
class PredictionRecord:
    """One scored request (or one shadow scoring of it) in the prediction log.

    Built on the request path, where the arrays are kept by reference (never modified
    afterwards) and encoded only when the log is written. ``features`` is the matrix as
    scored (categorical codes) together with ``feature_schema``, which turns the codes back
    into the values sent; read back from a log, it is the rows as sent and the schema is
    ``None``."""

    time: float                   # epoch seconds
    endpoint: str
    request_id: str
    key: str | None = None        # the sticky key
    trigger: str                  # http, queue, ...
    variant: str
    shadow: bool = False
    variant_index: int | None = None  # the variant's place in the endpoint's config
    pinned: bool = False          # the caller chose the variant (x-scorefn-variant)
    model_name: str
    model_version: str
    objective: str
    output: str = PREDICT
    rows: int
    predictions: np.ndarray | None  # written as null for pred_contrib output
    latency_ms: float
    feature_names: Sequence[str] | None = None
    features: Any = None
    features_omitted: str | None = None
    error: str | None = None      # the error code of a failed request (then no predictions)
    feature_schema: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def scored_by(cls, model: Any, *, endpoint: str, request_id: str, key: str | None,
                  trigger: str, variant: str, predictions: np.ndarray, latency_ms: float,
                  output: str, rows: int, features: np.ndarray | None = None,
                  variant_index: int | None = None, shadow: bool = False,
                  pinned: bool = False) -> PredictionRecord:
        """The record of a scoring made now by ``model`` (a
        :class:`~shared.models.model.ModelInfo`); ``features`` when the endpoint logs them."""
        return cls(time=time.time(), endpoint=endpoint, request_id=request_id, key=key,
                   trigger=trigger, variant=variant, shadow=shadow, variant_index=variant_index,
                   pinned=pinned, model_name=model.name, model_version=model.version,
                   objective=model.objective, output=output, rows=rows, predictions=predictions,
                   latency_ms=latency_ms,
                   feature_names=model.feature_names if features is not None else None,
                   features=features, feature_schema=model.schema if features is not None else None)

    @classmethod
    def failed(cls, *, endpoint: str, request_id: str, key: str | None, trigger: str,
               variant: str, model_name: str, error: str, latency_ms: float,
               variant_index: int | None = None, shadow: bool = False,
               pinned: bool = False) -> PredictionRecord:
        """The record of a routed request that failed now with the error code ``error``."""
        return cls(time=time.time(), endpoint=endpoint, request_id=request_id, key=key,
                   trigger=trigger, variant=variant, shadow=shadow, variant_index=variant_index,
                   pinned=pinned, model_name=model_name, model_version="?", objective="unknown",
                   rows=0, predictions=None, latency_ms=latency_ms, error=error)

    @property
    def ok(self) -> bool:
        """Whether the request was scored (not a failure record)."""
        return self.error is None

    # -- writing -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The record as its JSON line holds it (numpy arrays left for orjson to encode)."""
        doc: dict[str, Any] = {"time": iso_time(self.time), "endpoint": self.endpoint,
                               "request_id": self.request_id}
        if self.key is not None:
            doc["key"] = self.key
        doc.update(trigger=self.trigger, variant=self.variant, shadow=self.shadow)
        if self.variant_index is not None:
            doc["variant_index"] = self.variant_index
        if self.pinned:
            doc["pinned"] = True
        doc.update(model={"name": self.model_name, "version": self.model_version},
                   objective=self.objective, output=self.output, rows=self.rows,
                   predictions=self.predictions if self.output != PRED_CONTRIB else None,
                   latency_ms=round(self.latency_ms, 4))
        if self.features is not None:
            doc["feature_names"] = self.feature_names
            doc["features"] = _as_sent(self.features, self.feature_schema)
        if self.features_omitted is not None:
            doc["features_omitted"] = self.features_omitted
        if self.error is not None:
            doc["error"] = self.error
        return doc

    def json_line(self, max_bytes: int) -> bytes:
        """The record as one JSON line; over ``max_bytes`` it goes without its features
        (``"features_omitted": "too_large"``), and may still be over when it has none."""
        doc = self.to_json()
        line = orjson.dumps(doc, option=_JSON_OPTIONS)
        if len(line) > max_bytes and "features" in doc:
            trimmed = {k: v for k, v in doc.items()
                       if k not in ("features", "feature_names", "features_omitted")}
            trimmed["features_omitted"] = "too_large"
            line = orjson.dumps(trimmed, option=_JSON_OPTIONS)
        return line

    # -- reading -------------------------------------------------------------------------

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], *, endpoint: str | None = None) -> PredictionRecord:
        """The record of a decoded log line; ``endpoint`` for a line that does not name its
        own (the endpoint of the blob it was read from). Fields older lines may lack get
        defaults; raises :class:`DamagedRecord` when ``time``, ``request_id`` or ``variant``
        is missing, or a field is of the wrong kind."""
        try:
            model = doc.get("model") or {}
            if not isinstance(model, Mapping):
                raise DamagedRecord("'model' is not an object")
            named = doc.get("endpoint", endpoint)
            if named is None:
                raise DamagedRecord("the record names no endpoint")
            index = doc.get("variant_index")
            if index is not None and type(index) is not int:
                raise DamagedRecord("'variant_index' is not an integer")
            raw = doc.get("predictions")
            predictions = None if raw is None else np.asarray(raw, dtype=np.float64)
            rows = doc.get("rows")
            if type(rows) is not int:
                rows = predictions.shape[0] if predictions is not None and predictions.ndim else 0
            key = doc.get("key")
            omitted = doc.get("features_omitted")
            error = doc.get("error")
            return cls(
                time=epoch_seconds(doc["time"]), endpoint=str(named),
                request_id=str(doc["request_id"]), key=key if isinstance(key, str) else None,
                trigger=str(doc.get("trigger", "")), variant=str(doc["variant"]),
                shadow=bool(doc.get("shadow", False)), variant_index=index,
                pinned=doc.get("pinned") is True, model_name=str(model.get("name", "?")),
                model_version=str(model.get("version", "?")),
                objective=str(doc.get("objective", "unknown")),
                output=str(doc.get("output", PREDICT)), rows=rows, predictions=predictions,
                latency_ms=float(doc.get("latency_ms", math.nan)),
                feature_names=doc.get("feature_names"), features=doc.get("features"),
                features_omitted=omitted if isinstance(omitted, str) else None,
                error=error if isinstance(error, str) else None)
        except DamagedRecord:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise DamagedRecord(f"not a prediction record: {type(exc).__name__} {exc}") from None


def _as_sent(features: Any, schema: Any) -> Any:
    """The features as a request sends them: a categorical feature's category value rather
    than the code it was scored with (``null`` for a missing or unseen value)."""
    if schema is None or not schema.categorical:
        return features
    rows = features.tolist()
    for cats in schema.categorical:
        j = cats.index
        for row in rows:
            row[j] = cats.value_of(row[j])
    return rows  # orjson writes NaN as null
