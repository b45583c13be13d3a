"""Telemetry: OpenTelemetry metrics and traces of every scoring, exported to Application Insights.

Modules: ``recorder`` (:class:`Telemetry`, what the service calls per scoring), ``drain`` (the
measurements recorded on a background thread), ``tracing`` (request spans and the caller's
trace context), ``setup`` (providers, the Azure Monitor exporter, the local reader),
``summary`` (the latency summary of ``/api/metrics/latency``), ``process`` (the process-wide
telemetry, the package's only module-level state).
"""

from shared.telemetry.process import get_telemetry, set_telemetry
from shared.telemetry.recorder import Telemetry
from shared.telemetry.summary import latency_summary
from shared.telemetry.tracing import NO_TRACE, RequestTrace

__all__ = ["NO_TRACE", "RequestTrace", "Telemetry", "get_telemetry", "latency_summary",
           "set_telemetry"]
