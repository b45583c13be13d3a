"""A shadow variant scores a copy of an answered request, off the request path: its latency
and its disagreement with the answer are recorded, its failure only counted."""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from shared.ablog.predictions import PredictionLog
from shared.ablog.record import PredictionRecord, output_kind
from shared.errors import ScoreError
from shared.models.model import LoadedModel
from shared.models.store import ModelStore
from shared.payloads import ScoringInput, decode_json
from shared.router import Route
from shared.scoring.result import Format, ScoreResult
from shared.telemetry import Telemetry


class Scorer(Protocol):
    """What a shadow needs of the service that answered (no import of it: no cycle)."""

    store: ModelStore
    telemetry: Telemetry
    prediction_log: PredictionLog | None

    def predict_parsed(self, model: LoadedModel, request: ScoringInput, cold: bool,
                       route: Route | None = None) -> ScoreResult: ...

    def score_document(self, model: LoadedModel, doc: dict[str, Any], *, fmt: Format,
                       cold: bool = False, route: Route | None = None,
                       extra_fields: frozenset[str] | None = None) -> ScoreResult: ...


def score_shadow(service: Scorer, target: Any, doc: dict[str, Any] | None, body: bytes,
                 fmt: Format, primary: ScoreResult, trigger: str) -> None:
    """Score shadow ``target`` on the request ``primary`` answered. ``doc`` is the decoded
    body, or ``None`` when the request skipped decoding."""
    assert primary.route is not None
    start = time.perf_counter()
    attrs: dict[str, Any] = {"trigger": trigger, "endpoint": primary.route.endpoint,
                             "variant": target.name, "shadow": True}
    try:
        model, cold = service.store.get(target.model)
        attrs.update({"model.name": model.info.name, "model.version": model.info.version,
                      "cold": cold})
        if model.info.schema == primary.model.schema:
            # Same features: reuse the answer's matrix. Parsing again would hold the GIL and
            # slow the request threads; predict releases it.
            result = service.predict_parsed(model, primary.request, cold)
        else:  # the route: the sticky key's body field is allowed here as for the answer
            result = service.score_document(model, doc if doc is not None else decode_json(body),
                                            fmt=fmt, cold=cold, route=primary.route)
    except Exception as exc:  # a bug or a native failure counts as score() counts it
        attrs["outcome"] = exc.code if isinstance(exc, ScoreError) else "internal_error"
        service.telemetry.record(attrs, duration_ms=(time.perf_counter() - start) * 1000)
        raise
    attrs["outcome"] = "ok"
    service.telemetry.record(attrs, duration_ms=(time.perf_counter() - start) * 1000,
                             predict_ms=result.predict_seconds * 1000,
                             rows=result.request.X.shape[0])
    if result.predictions.shape == primary.predictions.shape:
        diff = float(np.mean(np.abs(result.predictions - primary.predictions)))
        service.telemetry.record_shadow_difference(diff, attrs)
    # A logged answer has the request id it was logged under.
    if primary.logged and primary.request_id is not None and service.prediction_log is not None:
        service.prediction_log.offer(PredictionRecord.scored_by(
            result.model, endpoint=primary.route.endpoint, request_id=primary.request_id,
            key=primary.route.key, trigger=trigger, variant=target.name,
            predictions=result.predictions, latency_ms=(time.perf_counter() - start) * 1000,
            output=output_kind(result.request.options), rows=result.request.X.shape[0],
            features=result.request.X if primary.log_features else None, shadow=True))
