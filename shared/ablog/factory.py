"""The prediction log and the outcome log, built from the app settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.ablog.blobs import AppendTarget
from shared.ablog.outcomes import OutcomeLog
from shared.ablog.predictions import PredictionLog
from shared.ablog.writer import BufferedLogWriter


def build_logs(settings: Any, telemetry: Any = None) -> tuple[PredictionLog, OutcomeLog]:
    """The prediction log and the outcome log the app settings describe. Nothing connects
    to storage until the first record or outcome; a bad connection setting shows then
    (as dropped records, or a 500 on the outcomes route), never as a failed scoring."""

    def target(container_name: str) -> Callable[[], AppendTarget]:
        def make() -> AppendTarget:
            from shared.settings import resolve_connection
            from shared.storage import blob_service

            conn = resolve_connection(settings.prediction_log_connection)
            service = blob_service(conn, min(settings.storage_timeout_seconds, 10.0))
            return AppendTarget(service.get_container_client(container_name))
        return make

    writer = BufferedLogWriter(
        target(settings.prediction_log_container),
        flush_seconds=settings.prediction_log_flush_seconds,
        max_records=settings.prediction_log_max_buffer,
        max_bytes=settings.prediction_log_max_buffer_mb * 1024 * 1024, telemetry=telemetry)
    return PredictionLog(writer), OutcomeLog(target(settings.outcome_log_container))
