"""Where a scoring runs: warm, small requests on the event loop; anything that may read
storage (or is large) in a worker thread, so the loop never blocks on I/O."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

import shared.app as app_module
from score_function.dispatch import run_scoring
from shared.app import App
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


def use_app(monkeypatch, service: ScoringService | None, built: ScoringService | None = None):
    """The process-wide app as the handlers see it: ``service`` already built (or none yet),
    ``built`` what building it on first use gives."""
    settings = Settings.from_env({})
    monkeypatch.setattr(app_module, "_app", App(settings, service) if service else None)
    later = built or service
    monkeypatch.setattr(app_module, "get_app", lambda: App(settings, later))


def threads_of(service: ScoringService, monkeypatch) -> list[str]:
    """Where each scoring of ``service`` runs (its score and score_cached calls): "loop" when
    on the thread that called :func:`where_it_ran`, else "thread"."""
    seen: list[str] = []
    for method in ("score", "score_cached"):
        original = getattr(service, method)

        def spy(*args, _original=original, **kwargs):
            seen.append("loop" if threading.get_ident() == LOOP[0] else "thread")
            return _original(*args, **kwargs)

        monkeypatch.setattr(service, method, spy)
    return seen


LOOP: list[int] = [0]


def where_it_ran(endpoint: str, body: bytes, seen: list[str]) -> str:
    async def main() -> None:
        LOOP[0] = threading.get_ident()
        try:
            await run_scoring(endpoint, body, {})
        except Exception:
            pass  # where it ran is the question, not what it answered

    seen.clear()
    asyncio.run(main())
    return seen[-1]


def test_run_scoring_stays_on_the_loop_only_when_warm_and_small(monkeypatch, store):
    service = ScoringService(Settings.from_env({}), store)
    use_app(monkeypatch, service)
    seen = threads_of(service, monkeypatch)
    assert where_it_ran("churn", b"{}", seen) == "thread"  # cold
    store.get("churn")
    assert where_it_ran("churn", b"{}", seen) == "loop"
    assert where_it_ran("churn", b" " * (INLINE_MAX_BYTES + 1), seen) == "thread"


def test_the_first_request_builds_the_app_in_a_thread(monkeypatch, store):
    built = ScoringService(Settings.from_env({}), store)
    store.get("churn")
    use_app(monkeypatch, None, built)
    seen = threads_of(built, monkeypatch)
    assert where_it_ran("churn", b"{}", seen) == "thread"


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
    use_app(monkeypatch, service)
    row = np.random.default_rng(4).normal(size=(1, len(demo_models["churn"].feature_names)))
    body = json.dumps({"rows": row.tolist()}).encode()
    attempts: list[tuple[str, bool]] = []
    score_cached, score = service.score_cached, service.score

    def cached_after_an_eviction(*args, **kwargs):
        # Another request evicts churn between the warm check and this scoring.
        other = threading.Thread(target=store.get, args=("churn_v1",))
        other.start()
        other.join()
        attempts.append(("loop", store.is_cached("churn")))
        return score_cached(*args, **kwargs)

    def in_thread(*args, **kwargs):
        attempts.append(("thread", store.is_cached("churn")))
        return score(*args, **kwargs)

    monkeypatch.setattr(service, "score_cached", cached_after_an_eviction)
    monkeypatch.setattr(service, "score", in_thread)
    result = asyncio.run(run_scoring("churn", body, {}))
    assert attempts == [("loop", False), ("thread", False)]  # the loop never loaded it
    assert result.cold and store.is_cached("churn")
    expected = lgb.Booster(model_file=str(demo_models["churn"].path)).predict(row)
    assert np.allclose(result.predictions, expected, rtol=0, atol=1e-12)
