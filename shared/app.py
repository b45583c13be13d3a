"""The composition root: the one place that builds the app's parts from its settings, and
the process-wide app the function handlers use (built on first use, never at import: import
time is cold-start time)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.settings import Settings, resolve_connection

if TYPE_CHECKING:
    from shared.batch.runner import BatchJobs
    from shared.monitoring.collector import Collector
    from shared.monitoring.evaluate import DriftMonitor
    from shared.rollout.controller import RolloutController
    from shared.scoring.service import ScoringService

log = logging.getLogger("scorefn")

@dataclass
class App:
    """The scoring service, and what a trigger builds when it first needs it: the batch job
    runner, the rollout controller."""

    settings: Settings
    service: ScoringService
    _jobs: BatchJobs | None = None
    _jobs_lock: threading.Lock = field(default_factory=threading.Lock)
    _rollouts: RolloutController | None = None
    _drift: DriftMonitor | None = None

    @property
    def jobs(self) -> BatchJobs:
        """The batch job runner (queue and blob clients on the batch storage connection)."""
        if self._jobs is None:
            with self._jobs_lock:
                if self._jobs is None:
                    self._jobs = build_jobs(self.settings, self.service)
        return self._jobs

    @property
    def rollouts(self) -> RolloutController | None:
        """The rollout controller of the router config blob (``None`` without
        ``ROUTER_CONFIG_BLOB``: an inline config cannot be written)."""
        if self._rollouts is None and self.settings.router_config_blob:
            with self._jobs_lock:
                if self._rollouts is None:
                    self._rollouts = build_rollouts(self.settings, self.service)
        return self._rollouts

    @property
    def drift(self) -> DriftMonitor | None:
        """The drift evaluation (``None`` with ``MONITOR_ENABLED=false``)."""
        if self._drift is None and self.settings.monitor_enabled:
            with self._jobs_lock:
                if self._drift is None:
                    self._drift = build_drift_monitor(self.settings)
        return self._drift

    def close(self) -> None:
        self.service.close()


def build_service(settings: Settings) -> ScoringService:
    """A scoring service reading models from the blob container the settings name, with the
    router, shadows, prediction and outcome logs the settings turn on."""
    from shared.ablog.factory import build_logs
    from shared.models.blob_source import BlobSource
    from shared.models.store import ModelStore
    from shared.router import (
        MAX_CONFIG_BYTES,
        RouterConfigSource,
        RouterHolder,
        ShadowRunner,
        feature_parity,
        models_loadable,
    )
    from shared.scoring.service import ScoringService
    from shared.storage import blob_service
    from shared.telemetry import get_telemetry

    conn = resolve_connection(settings.storage_connection)
    container = blob_service(conn, settings.storage_timeout_seconds).get_container_client(
        settings.model_container)
    source = BlobSource(container, settings.max_model_mb * 1024 * 1024)
    telemetry = get_telemetry()
    artifacts, compiler = compiled_trees(settings, container, telemetry)
    store = ModelStore(source, refresh_seconds=settings.model_refresh_seconds,
                       max_cache_bytes=settings.model_cache_max_mb * 1024 * 1024,
                       compiler=compiler, artifacts=artifacts,
                       on_refresh_failure=telemetry.record_refresh_failure)
    routing = None
    if settings.router_config or settings.router_config_blob:
        config_source = RouterConfigSource(
            inline=settings.router_config or None, blob_path=settings.router_config_blob or None,
            blobs=BlobSource(container, MAX_CONFIG_BYTES))
        routing = RouterHolder(config_source, refresh_seconds=settings.router_refresh_seconds,
                               check_models=models_loadable(store) if settings.router_check_models
                               else None)
        if settings.router_check_models:
            store.check_swap = feature_parity(routing, store)
    shadows = (ShadowRunner(workers=settings.shadow_workers, max_pending=settings.shadow_max_pending)
               if settings.shadow_workers else None)
    prediction_log, outcome_log = build_logs(settings, telemetry)
    return ScoringService(settings, store, telemetry, routing=routing, shadows=shadows,
                          prediction_log=prediction_log, outcome_log=outcome_log,
                          monitor=build_collector(settings, container, telemetry))


def build_collector(settings: Settings, models: Any, telemetry: Any) -> Collector | None:
    """Monitoring's in-process counts (``None`` with ``MONITOR_ENABLED=false``), written to
    ``MONITOR_CONTAINER`` on the prediction log's connection. Nothing connects to storage
    until the first write."""
    if not settings.monitor_enabled:
        return None
    from shared.monitoring.collector import Collector
    from shared.monitoring.references import Binnings

    def target() -> Any:
        from shared.storage import blob_service

        conn = resolve_connection(settings.prediction_log_connection)
        return blob_service(conn, min(settings.storage_timeout_seconds, 10.0)
                            ).get_container_client(settings.monitor_container)

    return Collector(target, Binnings(lambda: models, retry_seconds=settings.monitor_flush_seconds),
                     flush_seconds=settings.monitor_flush_seconds,
                     max_pending_rows=settings.monitor_max_pending_rows, telemetry=telemetry)


def compiled_trees(settings: Settings, container: Any, telemetry: Any) -> tuple[Any, Any]:
    """The artifact loader and the on-instance compiler the settings ask for (either may be
    ``None``). Nothing of LLVM is imported here: that happens when a model loads."""
    if not settings.compiled_trees:
        return None, None
    from shared.models.compiled.target import can_load

    if not can_load():
        log.warning("COMPILED_TREES is on but llvmlite is not installed: LightGBM serves every model")
        return None, None
    from shared.models.blob_source import BlobSource
    from shared.models.compiled.caches import MAX_ARTIFACT_BYTES
    from shared.models.compiled.compiler import make_compiler
    from shared.models.compiled.loader import ArtifactLoader

    loader = ArtifactLoader(BlobSource(container, MAX_ARTIFACT_BYTES),
                            on_fallback=telemetry.record_compiled_fallback)
    return loader, make_compiler(settings, container)


def build_jobs(settings: Settings, service: ScoringService) -> BatchJobs:
    """The batch job runner, on the storage connection of the app's queues."""
    from shared.batch.runner import BATCH_CONNECTION, BatchJobs
    from shared.storage import blob_service, queue_service

    conn = resolve_connection(BATCH_CONNECTION)
    timeout = settings.storage_timeout_seconds
    return BatchJobs(settings, service, blob_service(conn, timeout), queue_service(conn, timeout))


def build_rollouts(settings: Settings, service: ScoringService) -> RolloutController:
    """The rollout controller: the router config blob in the models container, the prediction
    and outcome logs on their connection, the service's model store (a candidate must load)."""
    from shared.rollout.audit import AuditLog
    from shared.rollout.controller import RolloutController
    from shared.storage import blob_service
    from shared.telemetry import get_telemetry

    timeout = settings.storage_timeout_seconds
    models = blob_service(resolve_connection(settings.storage_connection), timeout)
    logs = blob_service(resolve_connection(settings.prediction_log_connection), timeout)
    predictions = logs.get_container_client(settings.prediction_log_container)
    return RolloutController(
        models.get_blob_client(settings.model_container, settings.router_config_blob),
        predictions=predictions,
        outcomes=logs.get_container_client(settings.outcome_log_container),
        audit=AuditLog(predictions), store=service.store, telemetry=get_telemetry())


def build_drift_monitor(settings: Settings, telemetry: Any = None) -> DriftMonitor:
    """The drift evaluation: served counts and summaries in ``MONITOR_CONTAINER`` (on the
    prediction log's connection), reference profiles beside the models."""
    from shared.monitoring.evaluate import DriftMonitor, Thresholds
    from shared.storage import blob_service
    from shared.telemetry import get_telemetry

    timeout = settings.storage_timeout_seconds
    models = blob_service(resolve_connection(settings.storage_connection), timeout)
    logs = blob_service(resolve_connection(settings.prediction_log_connection), timeout)
    return DriftMonitor(
        logs.get_container_client(settings.monitor_container),
        models.get_container_client(settings.model_container),
        Thresholds(settings.monitor_psi_threshold, settings.monitor_min_rows,
                   settings.monitor_window_hours),
        telemetry=telemetry or get_telemetry())


def build_app(settings: Settings) -> App:
    return App(settings, build_service(settings))


_app: App | None = None
_app_lock = threading.Lock()


def get_app() -> App:
    """The process-wide app, built from the environment's settings on first use."""
    global _app
    if _app is None:
        with _app_lock:
            if _app is None:
                _app = build_app(Settings.from_env())
    return _app


def built_app() -> App | None:
    """The process-wide app if it is built already, else ``None`` (builds nothing)."""
    return _app


def reset_app() -> None:
    """Close and forget the process-wide app (tests, and the local host after settings change)."""
    global _app
    with _app_lock:
        if _app is not None:
            _app.close()
        _app = None
