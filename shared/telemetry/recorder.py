"""What the scoring service calls per scoring: :class:`Telemetry`, the meters and tracer of
scorefn.

Instruments come from the OpenTelemetry API, so they feed whichever pipeline is set up (see
:mod:`shared.telemetry.setup`), or none: the API's no-op, at near zero cost. Histograms carry
explicit bucket boundaries from 50 us up, as an advisory the SDK honours, because the default
boundaries (0, 5, 10, 25 ... ms) cannot tell a 0.2 ms scoring from a 4 ms one.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import metrics, trace

from shared.telemetry.drain import DeferredMeasurements
from shared.telemetry.tracing import UNTRACED, RequestTrace, sampled, traced_span, tracing_configured

BUCKETS_MS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0,
              25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
              60000.0)


def metrics_configured(provider: Any) -> bool:
    """Whether ``provider`` records: without an SDK provider the API's instruments are no-ops,
    and then we record nothing at all."""
    return type(provider).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")


class Telemetry:
    """The meters and tracer of scorefn. One per process (see :func:`get_telemetry`).

    Measurements are recorded off the request thread (:class:`DeferredMeasurements`).
    ``trace_sample_ratio``: the share of requests traced when the caller did not ask for a
    trace (a ``traceparent`` with the sampled flag is always honoured).
    """

    def __init__(self, meter_provider: Any = None, tracer_provider: Any = None,
                 log_payloads: bool = False, trace_sample_ratio: float = 1.0) -> None:
        meter_provider = meter_provider or metrics.get_meter_provider()
        meter = meter_provider.get_meter("scorefn")
        self.metrics = metrics_configured(meter_provider)
        tracer_provider = tracer_provider or trace.get_tracer_provider()
        self.tracer = tracer_provider.get_tracer("scorefn")
        self.tracing = tracing_configured(tracer_provider)
        self.trace_sample_ratio = trace_sample_ratio
        self.log_payloads = log_payloads
        self.deferred = DeferredMeasurements()
        self.request_duration = meter.create_histogram(
            "scorefn.request.duration", unit="ms", explicit_bucket_boundaries_advisory=BUCKETS_MS,
            description="Whole scoring duration: parse, route, load, predict, serialize")
        self.predict_duration = meter.create_histogram(
            "scorefn.predict.duration", unit="ms", explicit_bucket_boundaries_advisory=BUCKETS_MS,
            description="Model time only (LightGBM predict)")
        self.load_duration = meter.create_histogram(
            "scorefn.model.load.duration", unit="ms", explicit_bucket_boundaries_advisory=BUCKETS_MS,
            description="Model load time: download and parse")
        self.rows = meter.create_counter("scorefn.rows", unit="{row}", description="Rows scored")
        self.errors = meter.create_counter("scorefn.errors", unit="{error}",
                                           description="Failed scorings by error code")
        self.shadow_difference = meter.create_histogram(
            "scorefn.shadow.abs_difference", unit="1",
            explicit_bucket_boundaries_advisory=(0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2,
                                                 0.5, 1.0, 2.0, 5.0, 10.0, 100.0),
            description="Mean absolute difference of a shadow's predictions to the answer's")
        self.refresh_failures = meter.create_counter(
            "scorefn.model.refresh_failures", unit="{refresh}",
            description="Background model refreshes that failed (the cached version kept "
                        "serving), by model and error code")
        self.compiled_fallbacks = meter.create_counter(
            "scorefn.compiled.fallbacks", unit="{load}",
            description="Model versions loaded without their compiled trees (LightGBM serves "
                        "them), by model and reason: missing, damaged, foreign, cpu, "
                        "check_failed, load_failed, unsupported, unavailable")
        self.rollout_decisions = meter.create_counter(
            "scorefn.rollout.decisions", unit="{decision}",
            description="Decisions of the rollout controller, by endpoint and action")
        self.log_dropped = meter.create_counter(
            "scorefn.log.dropped", unit="{record}",
            description="Prediction log records dropped (buffer full, storage failing, too "
                        "large, after shutdown), by endpoint and reason")

        self.monitor_dropped = meter.create_counter(
            "scorefn.monitor.dropped", unit="{row}",
            description="Scored rows monitoring did not count (too many waiting, storage "
                        "failing for over an hour), by endpoint and reason")
        self.drift_max_psi = meter.create_gauge(
            "scorefn.drift.max_psi", unit="1",
            description="The most drifted feature's population stability index at the last "
                        "drift evaluation, by endpoint, variant and baseline (reference, "
                        "variant)")
        self.drift_prediction_psi = meter.create_gauge(
            "scorefn.drift.prediction_psi", unit="1",
            description="The predictions' population stability index at the last drift "
                        "evaluation, by endpoint, variant and baseline")
        self.drift_features = meter.create_gauge(
            "scorefn.drift.drifted_features", unit="{feature}",
            description="Features counted as drifted at the last drift evaluation (PSI over "
                        "MONITOR_PSI_THRESHOLD, or missing / out-of-range values jumped), by "
                        "endpoint, variant and baseline")

    def request_span(self, name: str, carrier: Mapping[str, str] | None,
                     attributes: dict[str, Any]) -> AbstractContextManager[RequestTrace]:
        """A span for one scoring, continuing the caller's trace when ``carrier`` holds a
        ``traceparent``. Its ``with`` gives a :class:`RequestTrace` for its children."""
        if not self.tracing or not sampled(carrier, self.trace_sample_ratio):
            return UNTRACED  # this is most requests
        return traced_span(self.tracer, name, carrier, attributes)

    def flush(self) -> None:
        """Record the queued measurements now (tests and readers call this before reading)."""
        self.deferred.flush()

    def record(self, attributes: dict[str, Any], *, duration_ms: float,
               predict_ms: float | None = None, rows: int = 0) -> None:
        """Record one scoring. ``attributes`` must hold low-cardinality values only."""
        if self.metrics:
            self.deferred.put(self._record_now, attributes, duration_ms, predict_ms, rows)

    def _record_now(self, attributes: dict[str, Any], duration_ms: float,
                    predict_ms: float | None, rows: int) -> None:
        self.request_duration.record(duration_ms, attributes)
        if predict_ms is not None:
            self.predict_duration.record(predict_ms, attributes)
        if rows:
            self.deferred.add(self.rows, rows, attributes)
        if attributes.get("outcome", "ok") != "ok":
            self.deferred.add(self.errors, 1, attributes)

    def record_shadow_difference(self, value: float, attributes: dict[str, Any]) -> None:
        if self.metrics:
            self.deferred.put(self.shadow_difference.record, value, attributes)

    def record_load(self, duration_ms: float, attributes: dict[str, Any]) -> None:
        if self.metrics:
            self.deferred.put(self.load_duration.record, duration_ms, attributes)

    def record_refresh_failure(self, model: str, code: str) -> None:
        """A background refresh of ``model`` failed with ``code``; the cached version serves."""
        if self.metrics:
            self.refresh_failures.add(1, {"model.name": model, "error_code": code})

    def record_compiled_fallback(self, model: str, reason: str) -> None:
        """A version of ``model`` loaded without its compiled trees, for ``reason``."""
        if self.metrics:
            self.compiled_fallbacks.add(1, {"model.name": model, "reason": reason})

    def record_rollout_decision(self, endpoint: str, action: str) -> None:
        """The rollout controller decided ``action`` (start, advance, hold, promote, rollback,
        pause) for ``endpoint``'s rollout."""
        if self.metrics:
            self.rollout_decisions.add(1, {"endpoint": endpoint, "action": action})

    def record_monitor_dropped(self, rows: int, endpoint: str, reason: str) -> None:
        """``rows`` scored rows of ``endpoint`` went uncounted by monitoring, for ``reason``."""
        if rows and self.metrics:
            self.monitor_dropped.add(rows, {"endpoint": endpoint, "reason": reason})

    def record_drift(self, attributes: dict[str, str], *, max_psi: float,
                     prediction_psi: float | None, drifted_features: int) -> None:
        """One comparison of a drift evaluation (``attributes``: endpoint, variant, against)."""
        if self.metrics:
            self.drift_max_psi.set(max_psi, attributes)
            if prediction_psi is not None:
                self.drift_prediction_psi.set(prediction_psi, attributes)
            self.drift_features.set(drifted_features, attributes)

    def record_log_dropped(self, count: int, endpoint: str, reason: str) -> None:
        """``count`` prediction log records of ``endpoint`` were dropped for ``reason``."""
        if count:
            self.log_dropped.add(count, {"endpoint": endpoint, "reason": reason})
