"""Where a scoring runs: warm, small requests on the event loop; anything that may read
storage (or is large) in a worker thread, so the loop never blocks on I/O."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

import shared.scoring.service as service_module
from score_function.dispatch import run_scoring
from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.router import RouterConfigSource, RouterHolder
from shared.scoring.service import INLINE_MAX_BYTES, ScoringService
from shared.settings import Settings
from tests.conftest import upload


@pytest.fixture
def store(container, demo_models):
    for name in ("churn", "churn_v1"):
        upload(container, f"{name}.txt", demo_models[name].path)
    return ModelStore(BlobSource(container, 64 * 1024 * 1024), refresh_seconds=3600)


def ab_routing(container) -> RouterHolder:
    config = {"endpoints": {"churn-ab": {"variants": [
        {"name": "control", "model": "churn_v1", "weight": 50},
        {"name": "candidate", "model": "churn", "weight": 50}]}}}
    return RouterHolder(RouterConfigSource(inline=json.dumps(config)), refresh_seconds=3600)


def test_a_model_not_loaded_yet_is_not_scored_inline(store):
    service = ScoringService(Settings.from_env({}), store)
    assert not service.can_score_inline("churn", 100)
    store.get("churn")
    assert service.can_score_inline("churn", 100)
    assert not service.can_score_inline("churn_v1", 100)  # another model, still in storage


def test_a_large_body_is_never_scored_inline(store):
    service = ScoringService(Settings.from_env({}), store)
    store.get("churn")
    assert service.can_score_inline("churn", INLINE_MAX_BYTES)
    assert not service.can_score_inline("churn", INLINE_MAX_BYTES + 1)


def test_a_routed_endpoint_is_inline_only_once_its_config_and_every_variant_are_loaded(store, container):
    routing = ab_routing(container)
    service = ScoringService(Settings.from_env({}), store, routing=routing)
    try:
        assert not service.can_score_inline("churn-ab", 100)  # config not read yet
        routing.current()
        store.get("churn")
        assert not service.can_score_inline("churn-ab", 100)  # churn_v1 still in storage
        store.get("churn_v1")
        assert service.can_score_inline("churn-ab", 100)
    finally:
        routing.close()


def where_it_ran(monkeypatch, service: ScoringService | None, endpoint: str, body: bytes) -> str:
    monkeypatch.setattr(service_module, "_service", service)

    async def main() -> str:
        loop_thread = threading.get_ident()
        ran_on = await run_scoring(endpoint, body, lambda s: threading.get_ident())
        return "loop" if ran_on == loop_thread else "thread"

    return asyncio.run(main())


def test_run_scoring_stays_on_the_loop_only_when_warm_and_small(monkeypatch, store):
    service = ScoringService(Settings.from_env({}), store)
    assert where_it_ran(monkeypatch, service, "churn", b"{}") == "thread"  # cold
    store.get("churn")
    assert where_it_ran(monkeypatch, service, "churn", b"{}") == "loop"
    assert where_it_ran(monkeypatch, service, "churn", b" " * (INLINE_MAX_BYTES + 1)) == "thread"


def test_the_first_request_builds_the_service_in_a_thread(monkeypatch, store):
    built = ScoringService(Settings.from_env({}), store)
    store.get("churn")
    monkeypatch.setattr(service_module, "get_service", lambda: built)
    assert where_it_ran(monkeypatch, None, "churn", b"{}") == "thread"


def test_a_model_evicted_after_the_warm_check_is_loaded_in_a_thread_not_on_the_loop(
        monkeypatch, container, demo_models):
    import lightgbm as lgb
    import numpy as np

    for name in ("churn", "churn_v1"):
        upload(container, f"{name}.txt", demo_models[name].path)
    # Room for one model: loading churn_v1 evicts churn.
    store = ModelStore(BlobSource(container, 64 * 1024 * 1024), refresh_seconds=3600,
                       max_cache_bytes=1)
    service = ScoringService(Settings.from_env({}), store)
    store.get("churn")
    monkeypatch.setattr(service_module, "_service", service)
    monkeypatch.setattr(service_module, "get_service", lambda: service)
    row = np.random.default_rng(4).normal(size=(1, len(demo_models["churn"].feature_names)))
    body = json.dumps({"rows": row.tolist()}).encode()
    attempts: list[tuple[str, bool]] = []

    def score(s: ScoringService):
        on_loop = threading.get_ident() == loop_thread[0]
        if not attempts:  # another request evicts churn between the check and this scoring
            other = threading.Thread(target=store.get, args=("churn_v1",))
            other.start()
            other.join()
        attempts.append(("loop" if on_loop else "thread", store.is_cached("churn")))
        return s.score("churn", body)

    loop_thread: list[int] = []

    async def main():
        loop_thread.append(threading.get_ident())
        return await run_scoring("churn", body, score)

    result = asyncio.run(main())
    assert attempts == [("loop", False), ("thread", False)]  # the loop never loaded it
    assert result.cold and store.is_cached("churn")
    expected = lgb.Booster(model_file=str(demo_models["churn"].path)).predict(row)
    assert np.allclose(result.predictions, expected, rtol=0, atol=1e-12)
