"""Fixtures of the telemetry tests: a Telemetry whose metrics and spans are read back in memory,
and a scoring service recording to it."""

from __future__ import annotations

import orjson
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.scoring.service import ScoringService
from shared.settings import Settings
from shared.telemetry import Telemetry
from tests.conftest import upload


class FlushedReader:
    """A metric reader read only after the telemetry's queued measurements are recorded
    (they are recorded off the request thread)."""

    def __init__(self, telemetry, reader):
        self.telemetry, self.reader = telemetry, reader

    def get_metrics_data(self):
        self.telemetry.flush()
        return self.reader.get_metrics_data()


@pytest.fixture
def readers():
    metric_reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(MeterProvider(metric_readers=[metric_reader]), tracer_provider)
    return telemetry, FlushedReader(telemetry, metric_reader), spans


@pytest.fixture
def service(container, demo_models, readers):
    upload(container, "price.txt", demo_models["price"].path)
    store = ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600)
    return ScoringService(Settings.from_env({}), store, telemetry=readers[0])


def points(reader, name):
    data = reader.get_metrics_data()
    found = []
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    found += [(metric.unit, p) for p in metric.data.data_points]
    return found


def body(n=1):
    return orjson.dumps({"rows": [[1800, 3, 2, 10, 0.3, 12]] * n})
