"""A batch job's metrics: its duration, rows and model time, by outcome, recorded through the
scoring service's telemetry (when it has one) with low-cardinality attributes. Best effort:
metrics never fail a job."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from shared.batch.results import ModelVersion

log = logging.getLogger("scorefn.batch")


@dataclass(frozen=True)
class JobRoute:
    """Where a job was routed: its endpoint, the variant chosen and that variant's model."""

    endpoint: str
    variant: str
    model: ModelVersion


class JobMetrics:
    """Records batch work in ``service.telemetry`` (looked up at each call)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def record(self, outcome: str, started: float, *, route: JobRoute | None = None,
               rows: int = 0, predict_ms: float | None = None) -> None:
        """One job's (or chunk's) work since ``perf_counter`` reading ``started``; ``outcome``
        is ``ok`` or an error code; ``route`` None: failed before the model was chosen."""
        telemetry = getattr(self.service, "telemetry", None)
        if telemetry is None:
            return
        attrs: dict[str, Any] = {"trigger": "queue", "outcome": outcome}
        if route is not None:
            attrs.update({"endpoint": route.endpoint or route.model.name,
                          "variant": route.variant or "default",
                          "model.name": route.model.name, "model.version": route.model.version})
        else:
            attrs["endpoint"] = "(unresolved)"
        try:
            telemetry.record(attrs, duration_ms=(time.perf_counter() - started) * 1000,
                             predict_ms=predict_ms, rows=rows)
        except Exception:  # metrics never fail a job
            log.debug("batch telemetry failed", exc_info=True)
