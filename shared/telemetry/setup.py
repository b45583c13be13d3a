"""Where telemetry goes: the OpenTelemetry providers, the Azure Monitor exporter, the local
in-memory reader, and :func:`set_up`, which builds the process's :class:`Telemetry` from the
settings.

Pipelines: the Python worker's own (``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true``: the
worker calls ``configure_azure_monitor`` and we must not configure a second one), ours
(:func:`configure` with ``APPLICATIONINSIGHTS_CONNECTION_STRING``), a test's in-memory reader,
or none (the API's no-op). The SDK and the exporter are imported only when one is configured,
because the exporter costs ~400 ms at import.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace

from shared.telemetry.recorder import Telemetry

log = logging.getLogger("scorefn.telemetry")


@dataclass(frozen=True)
class TelemetrySetup:
    """What :func:`set_up` made: the process's telemetry and, when ``TELEMETRY_LOCAL_READER``
    is on and nothing exports, the in-memory reader ``/api/metrics/latency`` reads."""

    telemetry: Telemetry
    local_reader: Any = None  # an InMemoryMetricReader, or None


def set_up(env: Mapping[str, str]) -> TelemetrySetup:
    """Configure the pipeline ``env`` asks for and make the telemetry that feeds it."""
    from shared.settings import telemetry_settings

    settings = telemetry_settings(env)
    mode = configure(env)
    reader = use_local_reader() if mode == "none" and settings.local_reader else None
    telemetry = Telemetry(log_payloads=settings.log_payloads,
                          trace_sample_ratio=settings.trace_sample_ratio)
    # Registered after the provider's own exit hook, so it runs first (LIFO) and the last
    # measurements reach the exporter's final flush.
    atexit.register(telemetry.flush)
    return TelemetrySetup(telemetry, reader)


def use_local_reader() -> Any:
    """Keep the metrics in memory (a process-wide meter provider) and return their reader."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader],
                                             exemplar_filter=no_exemplars()))
    return reader


def no_exemplars() -> Any:
    """The SDK's filter that keeps no exemplars. Exemplars (a trace id kept per bucket) cost
    ~1.5 us per measurement and we do not export them: the workbook reads percentiles from
    the histograms and traces apart."""
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter

    return AlwaysOffExemplarFilter()


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
    from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter, AzureMonitorTraceExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

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
                                             exemplar_filter=no_exemplars()))
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(AzureMonitorTraceExporter(**options),
                                                          max_queue_size=2048))
    trace.set_tracer_provider(tracer_provider)
    log.info("telemetry: exporting to Application Insights%s",
             " with Entra ID" if credential else "")
    return "azure-monitor"
