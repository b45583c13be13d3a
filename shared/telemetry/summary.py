"""Server-side latency for ``GET /api/metrics/latency``: per endpoint and model version, with
p50/p90/p99 estimated from the histogram buckets kept by the local in-memory reader."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.telemetry.process import current_setup


@dataclass(frozen=True)
class LatencyRow:
    """Successful scorings of one attribute set (serialized by field, in this order)."""

    trigger: str | None
    endpoint: str | None
    model: str | None
    version: str | None
    cold: bool | None
    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float


def latency_summary() -> list[LatencyRow] | None:
    """The process's request latency when ``TELEMETRY_LOCAL_READER`` is on; else ``None``."""
    setup = current_setup()
    if setup is None or setup.local_reader is None:
        return None
    setup.telemetry.flush()
    return summarize(setup.local_reader.get_metrics_data())


def summarize(data: Any) -> list[LatencyRow]:
    """The ``scorefn.request.duration`` points of ``data`` (an SDK ``MetricsData``) that saw
    successful scorings."""
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
                    rows.append(LatencyRow(
                        trigger=attrs.get("trigger"), endpoint=attrs.get("endpoint"),
                        model=attrs.get("model.name"), version=attrs.get("model.version"),
                        cold=attrs.get("cold"), count=point.count,
                        mean_ms=point.sum / point.count, p50_ms=bucket_quantile(point, 0.50),
                        p90_ms=bucket_quantile(point, 0.90), p99_ms=bucket_quantile(point, 0.99)))
    return rows


def bucket_quantile(point: Any, q: float) -> float:
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
