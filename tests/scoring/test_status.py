"""Readiness: one probe at a time asks storage; the others answer from the last report."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.scoring.service import ScoringService
from shared.settings import Settings


class SlowPings(BlobSource):
    """The real container, with a ping that takes a while and is counted."""

    def __init__(self, container) -> None:
        super().__init__(container, 1 << 20)
        self.pings = 0
        self.lock = threading.Lock()

    def ping(self) -> None:
        with self.lock:
            self.pings += 1
        time.sleep(0.3)
        super().ping()


def test_concurrent_probes_ask_storage_once(container):
    source = SlowPings(container)
    service = ScoringService(Settings.from_env({}), ModelStore(source, refresh_seconds=3600))
    with ThreadPoolExecutor(8) as pool:
        reports = list(pool.map(lambda _: service.status.readiness(), range(8)))
    assert source.pings == 1
    assert all(r == {"ready": True, "storage": "ok", "models_loaded": 0} for r in reports)


class HeldPings(SlowPings):
    """Pings that wait, once ``release`` is cleared, until the test lets them go."""

    def __init__(self, container) -> None:
        super().__init__(container)
        self.started, self.release = threading.Event(), threading.Event()
        self.release.set()

    def ping(self) -> None:
        with self.lock:
            self.pings += 1
        self.started.set()
        assert self.release.wait(10)
        BlobSource.ping(self)


def test_a_stale_report_is_served_while_one_probe_refreshes_it(container, monkeypatch):
    import shared.scoring.status as service_module

    source = HeldPings(container)
    service = ScoringService(Settings.from_env({}), ModelStore(source, refresh_seconds=3600))
    assert service.status.readiness()["ready"]
    monkeypatch.setattr(service_module, "READINESS_CACHE_SECONDS", 0.0)  # the report is stale now
    source.started.clear()
    source.release.clear()
    refresher = threading.Thread(target=service.status.readiness)
    refresher.start()
    assert source.started.wait(10)  # the refresher is pinging, and stays there
    answer: dict = {}
    other = threading.Thread(target=lambda: answer.update(service.status.readiness()))
    other.start()
    other.join(10)
    assert not other.is_alive() and answer["storage"] == "ok"  # the last report, not waiting
    source.release.set()
    refresher.join()
    assert source.pings == 2


def test_the_anonymous_probe_counts_loaded_models_without_naming_them(container, demo_models):
    import orjson

    container.upload_blob("churn.txt", demo_models["churn"].path.read_bytes())
    service = ScoringService(Settings.from_env({}), ModelStore(BlobSource(container, 1 << 22)))
    service.store.get("churn")
    report = service.status.readiness()
    assert report == {"ready": True, "storage": "ok", "models_loaded": 1}
    assert b"churn" not in orjson.dumps(report)


def test_a_model_is_ready_only_when_every_variant_loads_and_fits_the_cache(container, demo_models):
    import json

    from shared.errors import ModelNotFound, ModelUnavailable
    from shared.router import RouterConfigSource, RouterHolder

    container.upload_blob("churn.txt", demo_models["churn"].path.read_bytes())
    container.upload_blob("churn_v1.txt", demo_models["churn_v1"].path.read_bytes())
    config = {"endpoints": {"churn": {"variants": [{"name": "a", "model": "churn"},
                                                   {"name": "b", "model": "churn_v1"}]},
                            "gone": {"variants": [{"name": "a", "model": "nope"}]}}}

    def service(cache_bytes: int) -> ScoringService:
        store = ModelStore(BlobSource(container, 1 << 22), max_cache_bytes=cache_bytes)
        routing = RouterHolder(RouterConfigSource(inline=json.dumps(config)), check_models=None)
        return ScoringService(Settings.from_env({}), store, routing=routing)

    roomy = service(64 << 20)
    assert roomy.status.model_ready("churn") == {"name": "churn", "ready": True}
    assert roomy.store.is_cached("churn") and roomy.store.is_cached("churn_v1")
    assert roomy.status.model_ready("churn_v1") == {"name": "churn_v1", "ready": True}  # unlisted: itself
    with pytest.raises(ModelNotFound):
        roomy.status.model_ready("gone")
    one_fits = max(demo_models[n].path.stat().st_size for n in ("churn", "churn_v1")) + 1
    with pytest.raises(ModelUnavailable, match="MODEL_CACHE_MAX_MB"):
        service(one_fits).status.model_ready("churn")
