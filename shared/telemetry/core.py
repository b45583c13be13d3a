"""Latency telemetry through OpenTelemetry (exported to Application Insights in Azure).

Instruments come from the OpenTelemetry API, so they feed whichever pipeline is set up:
the Python worker's own (``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true``: the worker
calls ``configure_azure_monitor`` and we must not configure a second one), ours
(:func:`configure` with ``APPLICATIONINSIGHTS_CONNECTION_STRING``), a test's in-memory
reader, or none (the API's no-op: near zero cost). The exporter is imported only when one
is configured, because it costs ~400 ms at import.

Histograms carry explicit bucket boundaries from 50 us up, as an advisory the SDK honours,
because the default boundaries (0, 5, 10, 25 ... ms) cannot tell a 0.2 ms scoring from a
4 ms one.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import random
import threading
import time
import weakref
from contextlib import contextmanager, nullcontext
from typing import Any, ContextManager, Iterator, Mapping

from opentelemetry import metrics, trace
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("scorefn.telemetry")

BUCKETS_MS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0,
              25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
              60000.0)
_PROPAGATOR = TraceContextTextMapPropagator()


def _tracing_configured(provider: Any) -> bool:
    # The API's default provider is a proxy to a no-op until an SDK provider is installed;
    # even no-op spans cost ~8 us each (context attach/detach), so we skip them entirely.
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


class _Deferred:
    """Measurements queued by request threads and recorded by one background thread.

    Recording through the OpenTelemetry SDK costs ~10 us per measurement (it hashes the
    attributes and takes a lock), ~30 us per scoring: half of a single-row request. A
    request only appends one tuple here; the SDK calls happen off the request thread, at
    most ``interval`` seconds later (exports run every minute). Counter increments are
    summed per attribute set and added once per drain (the totals are the same). The
    drainer lets go of the GIL every few measurements so that request threads never wait
    behind a whole drain. Bounded: past ``max_pending`` measurements are dropped and
    counted, never queued without limit.
    """

    _YIELD_EVERY = 16  # measurements between GIL hand-overs: ~0.2 ms of SDK work

    def __init__(self, interval: float = 0.2, max_pending: int = 100_000) -> None:
        self._pending: collections.deque = collections.deque()
        self._max_pending = max_pending
        self._interval = interval
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._sums: dict[tuple[Any, tuple], list[Any]] = {}  # (counter, attrs) -> [attrs, n]
        self.dropped = 0

    def put(self, fn: Any, *args: Any) -> None:
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append((fn, args))
        if self._thread is None:
            self._start()

    def add(self, counter: Any, amount: int, attributes: dict[str, Any]) -> None:
        """Add to ``counter`` at the end of this drain (call from a queued function)."""
        key = (counter, tuple(attributes.items()))
        pending = self._sums.get(key)
        if pending is None:
            self._sums[key] = [attributes, amount]
        else:
            pending[1] += amount

    def drain(self) -> None:
        """Record everything queued so far, in this thread."""
        with self._lock:
            pop = self._pending.popleft
            done = 0
            while True:
                try:
                    fn, args = pop()
                except IndexError:
                    break
                try:
                    fn(*args)
                except Exception:  # telemetry never breaks scoring
                    log.debug("recording a measurement failed", exc_info=True)
                done += 1
                if done % self._YIELD_EVERY == 0:
                    time.sleep(0)  # hand the GIL to request threads waiting for it
            sums, self._sums = self._sums, {}
            for (counter, _), (attributes, amount) in sums.items():
                try:
                    counter.add(amount, attributes)
                except Exception:
                    log.debug("recording a measurement failed", exc_info=True)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="scorefn-metrics",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            threading.Event().wait(self._interval)
            self.drain()


_instances: "weakref.WeakSet[Telemetry]" = weakref.WeakSet()


def flush_all() -> None:
    """Record every queued measurement now (before reading metrics, and at exit)."""
    for telemetry in list(_instances):
        telemetry.flush()


def _metrics_configured(provider: Any) -> bool:
    # Without an SDK provider the API's instruments are no-ops: then record nothing at all.
    return type(provider).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")


class Telemetry:
    """The meters and tracer of scorefn. One per process (see :func:`get_telemetry`).

    ``trace_sample_ratio``: the share of requests traced when the caller did not ask for a
    trace (a ``traceparent`` with the sampled flag is always honoured). The decision is taken
    before any span exists, so an unsampled request pays nothing for tracing.
    """

    def __init__(self, meter_provider: Any = None, tracer_provider: Any = None,
                 log_payloads: bool = False, trace_sample_ratio: float = 1.0) -> None:
        meter_provider = meter_provider or metrics.get_meter_provider()
        meter = meter_provider.get_meter("scorefn")
        self.metrics = _metrics_configured(meter_provider)
        tracer_provider = tracer_provider or trace.get_tracer_provider()
        self.tracer = tracer_provider.get_tracer("scorefn")
        self.tracing = _tracing_configured(tracer_provider)
        self.trace_sample_ratio = trace_sample_ratio
        self.log_payloads = log_payloads
        self._deferred = _Deferred()
        _instances.add(self)
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
        self.log_dropped = meter.create_counter(
            "scorefn.log.dropped", unit="{record}",
            description="Prediction log records dropped (buffer full, storage failing, too "
                        "large, after shutdown), by endpoint and reason")

    def request_span(self, name: str, carrier: Mapping[str, str] | None,
                     attributes: dict[str, Any]) -> ContextManager["RequestTrace"]:
        """A span for one scoring, continuing the caller's trace when ``carrier`` holds a
        ``traceparent``. Its ``with`` gives a :class:`RequestTrace` for its children."""
        if not self.tracing or not self._sampled(carrier):
            return _UNTRACED  # no generator, no context: this is most requests
        return self._traced_span(name, carrier, attributes)

    @contextmanager
    def _traced_span(self, name: str, carrier: Mapping[str, str] | None,
                     attributes: dict[str, Any]) -> Iterator["RequestTrace"]:
        context = _PROPAGATOR.extract(carrier) if carrier else None
        with self.tracer.start_as_current_span(name, context=context, attributes=attributes,
                                               kind=trace.SpanKind.SERVER,
                                               record_exception=False,
                                               set_status_on_exception=False) as span:
            yield RequestTrace(self.tracer, span) if span.is_recording() else NO_TRACE

    def _sampled(self, carrier: Mapping[str, str] | None) -> bool:
        parent = carrier.get("traceparent") if carrier else None
        if parent and len(parent) == 55:
            try:
                return bool(int(parent[53:], 16) & 1)  # the caller decided (W3C sampled flag)
            except ValueError:
                pass  # not a valid traceparent: decide here
        return self.trace_sample_ratio >= 1.0 or random.random() < self.trace_sample_ratio

    def flush(self) -> None:
        """Record the queued measurements now (tests and readers call this before reading)."""
        self._deferred.drain()

    def record(self, attributes: dict[str, Any], *, duration_ms: float,
               predict_ms: float | None = None, rows: int = 0) -> None:
        """Record one scoring. ``attributes`` must hold low-cardinality values only."""
        if self.metrics:
            self._deferred.put(self._record_now, attributes, duration_ms, predict_ms, rows)

    def _record_now(self, attributes: dict[str, Any], duration_ms: float,
                    predict_ms: float | None, rows: int) -> None:
        self.request_duration.record(duration_ms, attributes)
        if predict_ms is not None:
            self.predict_duration.record(predict_ms, attributes)
        if rows:
            self._deferred.add(self.rows, rows, attributes)
        if attributes.get("outcome", "ok") != "ok":
            self._deferred.add(self.errors, 1, attributes)

    def record_shadow_difference(self, value: float, attributes: dict[str, Any]) -> None:
        if self.metrics:
            self._deferred.put(self.shadow_difference.record, value, attributes)

    def record_load(self, duration_ms: float, attributes: dict[str, Any]) -> None:
        if self.metrics:
            self._deferred.put(self.load_duration.record, duration_ms, attributes)

    def record_refresh_failure(self, model: str, code: str) -> None:
        """A background refresh of ``model`` failed with ``code``; the cached version serves."""
        if self.metrics:
            self.refresh_failures.add(1, {"model.name": model, "error_code": code})

    def record_log_dropped(self, count: int, endpoint: str, reason: str) -> None:
        """``count`` prediction log records of ``endpoint`` were dropped for ``reason``."""
        if count:
            self.log_dropped.add(count, {"endpoint": endpoint, "reason": reason})



class RequestTrace:
    """The span of one sampled request and a way to make its children."""

    def __init__(self, tracer: Any, span: Any) -> None:
        self.tracer = tracer
        self.span = span

    def child_after_the_fact(self, name: str, start_ns: int, attributes: dict[str, Any]) -> None:
        """A child span for work already done (a model load found to be cold afterwards)."""
        self.tracer.start_span(name, start_time=start_ns, attributes=attributes).end()

    def set_attribute(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        """Put the request's metric attributes (variant, model, outcome, cold) on its span too,
        so traces can be split the same way (the workbook's percentiles come from spans)."""
        self.span.set_attributes(attributes)

    def mark_error(self, code: str) -> None:
        self.span.set_status(Status(StatusCode.ERROR, code))
        self.span.set_attribute("scorefn.error", code)
        self.span.set_attribute("outcome", code)


class _NoTrace(RequestTrace):
    """Tracing off or this request not sampled: every method is (nearly) free."""

    def __init__(self) -> None:
        super().__init__(None, None)

    def child_after_the_fact(self, name: str, start_ns: int, attributes: dict[str, Any]) -> None:
        pass

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        pass

    def mark_error(self, code: str) -> None:
        pass


NO_TRACE = _NoTrace()
_UNTRACED: ContextManager[RequestTrace] = nullcontext(NO_TRACE)


_telemetry: Telemetry | None = None
_local_reader: Any = None
_lock = threading.Lock()


def latency_summary() -> list[dict[str, Any]] | None:
    """Server-side request latency per endpoint and model version (p50/p90/p99 estimated
    from the histogram buckets), when ``TELEMETRY_LOCAL_READER`` is on; else ``None``."""
    if _local_reader is None:
        return None
    flush_all()
    data = _local_reader.get_metrics_data()
    rows = []
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != "scorefn.request.duration":
                    continue
                for point in metric.data.data_points:
                    attrs = dict(point.attributes)
                    if attrs.get("outcome") != "ok" or not point.count:
                        continue
                    rows.append({
                        "trigger": attrs.get("trigger"), "endpoint": attrs.get("endpoint"),
                        "model": attrs.get("model.name"), "version": attrs.get("model.version"),
                        "cold": attrs.get("cold"), "count": point.count,
                        "mean_ms": point.sum / point.count,
                        **{f"p{q}_ms": _bucket_quantile(point, q / 100) for q in (50, 90, 99)}})
    return rows


def _bucket_quantile(point: Any, q: float) -> float:
    """Quantile by linear interpolation inside the histogram bucket that holds it, clamped to
    the observed min and max (a bucket is wide; one sample must read as itself)."""
    target = q * point.count
    seen = 0
    bounds = list(point.explicit_bounds)
    for i, count in enumerate(point.bucket_counts):
        if count and seen + count >= target:
            low = bounds[i - 1] if i > 0 else point.min
            high = bounds[i] if i < len(bounds) else point.max
            value = low + (high - low) * (target - seen) / count
            return min(max(value, point.min), point.max)
        seen += count
    return point.max


def get_telemetry() -> Telemetry:
    """The process-wide telemetry, configuring the exporter on first use when set up."""
    global _telemetry
    if _telemetry is None:
        with _lock:
            if _telemetry is None:
                from shared.settings import telemetry_settings

                settings = telemetry_settings(os.environ)
                mode = configure(os.environ)
                if mode == "none" and settings.local_reader:
                    _use_local_reader()
                _telemetry = Telemetry(log_payloads=settings.log_payloads,
                                       trace_sample_ratio=settings.trace_sample_ratio)
                # Registered after the provider's own exit hook, so it runs first (LIFO) and
                # the last measurements reach the exporter's final flush.
                atexit.register(_telemetry.flush)
    return _telemetry


def _use_local_reader() -> None:
    global _local_reader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    _local_reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[_local_reader],
                                             exemplar_filter=_no_exemplars()))


def _no_exemplars() -> Any:
    # Exemplars (a trace id kept per bucket) cost ~1.5 us per measurement and we do not
    # export them: the workbook reads percentiles from the histograms and traces apart.
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter

    return AlwaysOffExemplarFilter()


def set_telemetry(telemetry: Telemetry | None) -> None:
    """Use ``telemetry`` process-wide (tests and the demo's in-memory reader)."""
    global _telemetry
    _telemetry = telemetry


def configure(env: Mapping[str, str]) -> str:
    """Set up export to Application Insights when configured; returns which pipeline is used.

    - ``worker``: the Python worker already configured Azure Monitor; add nothing.
    - ``azure-monitor``: we configure the exporter from ``APPLICATIONINSIGHTS_CONNECTION_STRING``
      (with Entra ID when ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` says ``Authorization=AAD``).
    - ``none``: nothing exported (the OpenTelemetry API's no-op, or a provider set by the caller).
    """
    from shared.settings import telemetry_settings

    settings = telemetry_settings(env)
    if settings.worker_managed:
        return "worker"
    if not settings.connection_string:
        return "none"
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from azure.monitor.opentelemetry.exporter import (AzureMonitorMetricExporter,
                                                      AzureMonitorTraceExporter)

    credential = None
    if settings.aad_client_id is not None:
        from azure.identity import ManagedIdentityCredential

        credential = ManagedIdentityCredential(client_id=settings.aad_client_id or None)
    options = {"connection_string": settings.connection_string, "credential": credential,
               "disable_offline_storage": True}
    resource = Resource.create({"service.name": env.get("WEBSITE_SITE_NAME", "scorefn")})
    reader = PeriodicExportingMetricReader(AzureMonitorMetricExporter(**options),
                                           export_interval_millis=settings.export_interval_ms)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader], resource=resource,
                                             exemplar_filter=_no_exemplars()))
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(AzureMonitorTraceExporter(**options),
                                                          max_queue_size=2048))
    trace.set_tracer_provider(tracer_provider)
    log.info("telemetry: exporting to Application Insights%s",
             " with Entra ID" if credential else "")
    return "azure-monitor"
