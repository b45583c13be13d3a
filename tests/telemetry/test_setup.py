"""The real Azure Monitor exporter sending to a local capture server: latency, and no payload."""

from __future__ import annotations

import orjson
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.scoring.service import ScoringService
from shared.settings import Settings
from shared.telemetry import Telemetry
from tests.conftest import upload
from tests.ingestion_support import Ingestion


def test_the_azure_monitor_exporter_sends_latency_and_no_payload(container, demo_models, monkeypatch):
    from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter

    # The exporter's own usage telemetry (statsbeat) would otherwise keep posting at exit.
    monkeypatch.setenv("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    ingestion = Ingestion()
    try:
        conn = ingestion.connection_string
        exporter = AzureMonitorMetricExporter(connection_string=conn, disable_offline_storage=True)
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        provider = MeterProvider(metric_readers=[reader])
        upload(container, "price.txt", demo_models["price"].path)
        service = ScoringService(Settings.from_env({}),
                                 ModelStore(BlobSource(container, 64 << 20)),
                                 telemetry=Telemetry(provider, TracerProvider()))
        service.score("price", orjson.dumps({"rows": [[987654.25, 3, 2, 10, 0.3, 12]]}))
        service.telemetry.flush()
        provider.force_flush()
        sent = b"".join(ingestion.received)
    finally:
        provider.shutdown()
        # The capture server stays up (a daemon thread) until the test process exits: the
        # exporter may still post once at exit, and a refused connection would log a retry.
    assert b"scorefn.request.duration" in sent
    assert b"987654.25" not in sent
