"""Router config sources and hot reload, against a real Azurite: a changed config blob is
picked up by ETag without a restart, and a bad one never replaces the config that works."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from shared.errors import InvalidRouterConfig, ModelNotFound, SettingsError
from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.router import MAX_CONFIG_BYTES, RouterConfigSource, RouterHolder, models_loadable
from tests.conftest import upload

BLOB = "config/router.json"


def config(weights: dict[str, float], *, salt: str = "exp-1", models: dict[str, str] | None = None) -> bytes:
    models = models or {}
    variants = [{"name": n, "model": models.get(n, f"churn/{n}.txt"), "weight": w}
                for n, w in weights.items()]
    return json.dumps({"endpoints": {"churn": {"salt": salt, "variants": variants}}}).encode()


def holder(container, **kwargs) -> RouterHolder:
    kwargs.setdefault("refresh_seconds", 3600)
    source = RouterConfigSource(blob_path=BLOB, blobs=BlobSource(container, MAX_CONFIG_BYTES))
    return RouterHolder(source, **kwargs)


def variants(h: RouterHolder) -> set[str]:
    return {v["name"] for ep in h.describe()["endpoints"] for v in ep["variants"]}


@pytest.fixture
def router_log(caplog):
    caplog.set_level(logging.INFO, logger="scorefn.router")
    return caplog


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "scorefn.router" and r.levelno == logging.WARNING]


# -- sources without storage -------------------------------------------------------------


def test_no_config_at_all_is_single_model_mode():
    h = RouterHolder(RouterConfigSource())
    route = h.current().route("price")
    assert (route.model, route.variant) == ("price", "default")
    assert h.describe()["config"] == {"source": "none", "version": None}


def test_an_inline_config_is_used_and_never_reloaded():
    h = RouterHolder(RouterConfigSource(inline=config({"only": 1}).decode()), refresh_seconds=0)
    assert h.current().route("churn").model == "churn/only.txt"
    assert h.refresh() is False
    assert h.describe()["config"] == {"source": "app setting ROUTER_CONFIG", "version": "inline"}


def test_an_invalid_inline_config_is_an_error_at_startup():
    with pytest.raises(InvalidRouterConfig) as err:
        RouterConfigSource(inline='{"endpoints": {"churn": {"variants": []}}}')
    assert err.value.message == ("app setting ROUTER_CONFIG: endpoints.churn.variants: "
                                 "must list at least one variant")


def test_inline_and_blob_together_are_a_settings_error():
    with pytest.raises(SettingsError):
        RouterConfigSource(inline='{"endpoints": {}}', blob_path=BLOB, blobs=object())
    with pytest.raises(SettingsError):
        RouterConfigSource(blob_path="../x.json", blobs=object())


# -- a blob config -----------------------------------------------------------------------


def test_a_blob_config_is_loaded_on_first_use_and_revalidated_by_etag(container):
    upload(container, BLOB, config({"control": 90, "candidate": 10}))
    h = holder(container)
    assert h.stats.loads == 0  # nothing read before first use
    assert variants(h) == {"control", "candidate"}
    assert h.describe()["config"]["source"] == "blob 'config/router.json'" and h.version
    assert h.refresh() is False and h.stats.not_modified == 1  # unchanged: a 304


def test_concurrent_first_requests_share_one_load(container):
    upload(container, BLOB, config({"control": 1}))
    h = holder(container)
    barrier = threading.Barrier(16)
    routers = []

    def worker():
        barrier.wait()
        routers.append(h.current())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(routers) == 16 and len({id(r) for r in routers}) == 1
    assert h.stats.loads == 1


def test_a_missing_blob_means_single_model_mode_until_one_is_uploaded(container):
    h = holder(container)
    assert h.current().route("churn").model == "churn"
    assert h.describe()["mode"] == "single-model"
    upload(container, BLOB, config({"control": 1}))
    assert h.refresh() is True
    assert h.current().route("churn").model == "churn/control.txt"


def test_a_changed_blob_is_picked_up_in_the_background_after_the_interval(container):
    upload(container, BLOB, config({"control": 1}))
    h = holder(container, refresh_seconds=0.2)
    assert h.current().route("churn").variant == "control"
    upload(container, BLOB, config({"candidate": 1}))
    deadline = time.monotonic() + 10
    seen = set()
    while time.monotonic() < deadline:
        seen.add(h.current().route("churn").variant)  # never waits for the refresh
        if "candidate" in seen:
            break
        time.sleep(0.05)
    assert seen == {"control", "candidate"}
    assert h.stats.swaps == 1
    h.close()


def test_sticky_keys_keep_their_variants_across_a_reload_with_the_same_salt(container):
    upload(container, BLOB, config({"a": 50, "b": 50}))
    h = holder(container)
    before = [h.current().route("churn", key=f"u{i}").variant for i in range(2000)]
    upload(container, BLOB, config({"a": 50, "b": 50, "c": 1}))
    assert h.refresh() is True
    after = [h.current().route("churn", key=f"u{i}").variant for i in range(2000)]
    assert {y for x, y in zip(before, after) if x != y} <= {"c"}


BAD_UPDATES = [
    ("bad JSON", b'{"endpoints": {"churn": ', "config: not valid JSON"),
    ("negative weight", config({"control": 1, "candidate": -3}), "endpoints.churn.variants[1].weight"),
    ("too large", b" " * (MAX_CONFIG_BYTES + 1), "over the limit"),
]


@pytest.mark.parametrize("data,where", [(d, w) for _, d, w in BAD_UPDATES],
                         ids=[i for i, _, _ in BAD_UPDATES])
def test_an_invalid_update_keeps_the_working_config_and_logs_one_line(container, router_log, data, where):
    upload(container, BLOB, config({"control": 1}, salt="s3cret-marker"))
    h = holder(container)
    h.current()
    good = h.version
    upload(container, BLOB, data)
    assert h.refresh() is False
    assert h.current().route("churn").variant == "control" and h.version == good
    assert h.stats.rejected == 1
    [line] = warnings(router_log)
    assert "invalid_router_config" in line and where in line and good in line
    assert "s3cret-marker" not in router_log.text and '"endpoints"' not in line
    # the next interval tries again, and a valid config then gets in
    assert h.refresh() is False and h.stats.rejected == 2
    upload(container, BLOB, config({"candidate": 1}))
    assert h.refresh() is True
    assert h.current().route("churn").variant == "candidate"


def test_a_config_whose_model_cannot_load_never_replaces_the_working_one(container, demo_models, router_log):
    upload(container, "churn/v1.txt", demo_models["churn"].path)
    upload(container, BLOB, config({"control": 1}, models={"control": "churn/v1.txt"}))
    store = ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600)
    h = holder(container, check_models=models_loadable(store))
    assert h.current().route("churn").model == "churn/v1.txt"
    assert [m.path for m in store.loaded()] == ["churn/v1.txt"]  # checked, and so already warm
    new = config({"control": 9, "candidate": 1},
                 models={"control": "churn/v1.txt", "candidate": "churn/v2.txt"})
    upload(container, BLOB, new)
    assert h.refresh() is False
    assert variants(h) == {"control"}
    [line] = warnings(router_log)
    assert "model_not_found" in line and "churn/v2" in line
    # once the model exists, the same (unchanged) config blob is accepted at the next interval
    upload(container, "churn/v2.txt", demo_models["churn_v1"].path)
    assert h.refresh() is True
    assert variants(h) == {"control", "candidate"}
    store.close()


def test_a_variant_taking_other_features_never_replaces_the_working_config(container, demo_models,
                                                                           router_log):
    upload(container, "churn/v1.txt", demo_models["churn"].path)
    upload(container, "price/v1.txt", demo_models["price"].path)
    upload(container, BLOB, config({"control": 1}, models={"control": "churn/v1.txt"}))
    store = ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600)
    h = holder(container, check_models=models_loadable(store))
    h.current()
    upload(container, BLOB, config({"control": 1, "candidate": 1},
                                   models={"control": "churn/v1.txt", "candidate": "price/v1.txt"}))
    assert h.refresh() is False
    assert variants(h) == {"control"}
    [line] = warnings(router_log)
    assert "endpoints.churn.variants[1].model: model 'price/v1.txt' takes features that differ" in line
    store.close()


def test_an_inline_config_whose_variants_take_other_features_is_refused_like_a_blob(
        container, demo_models):
    upload(container, "churn/v1.txt", demo_models["churn"].path)
    upload(container, "price/v1.txt", demo_models["price"].path)
    store = ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600)
    inline = config({"control": 1, "candidate": 1},
                    models={"control": "churn/v1.txt", "candidate": "price/v1.txt"}).decode()
    h = RouterHolder(RouterConfigSource(inline=inline), check_models=models_loadable(store))
    assert h.loaded() is None  # checked on first use, not taken on trust
    with pytest.raises(InvalidRouterConfig) as err:
        h.current()
    assert "takes features that differ" in err.value.message
    good = config({"control": 1}, models={"control": "churn/v1.txt"}).decode()
    assert RouterHolder(RouterConfigSource(inline=good),
                        check_models=models_loadable(store)).current().route("churn").variant == "control"
    store.close()


def test_a_model_refreshed_to_other_features_keeps_its_old_version_while_an_endpoint_pairs_it(
        container, demo_models, caplog):
    from shared.router import feature_parity

    upload(container, "churn/v1.txt", demo_models["churn"].path)
    upload(container, "churn/v2.txt", demo_models["churn_v1"].path)
    upload(container, BLOB, config({"control": 1, "candidate": 1},
                                   models={"control": "churn/v1.txt", "candidate": "churn/v2.txt"}))
    store = ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600)
    h = holder(container, check_models=models_loadable(store))
    store.check_swap = feature_parity(h, store)
    h.current()
    before = store.get("churn/v2.txt")[0].info
    upload(container, "churn/v2.txt", demo_models["price"].path)  # other features
    caplog.set_level(logging.WARNING, logger="scorefn.models")
    assert store.refresh("churn/v2.txt") is False
    assert store.get("churn/v2.txt")[0].info.version == before.version  # the old one serves
    assert "feature_mismatch" in caplog.text
    upload(container, "churn/v2.txt", demo_models["churn"].path)  # same features: swapped in
    assert store.refresh("churn/v2.txt") is True
    store.close()


def test_a_deleted_blob_keeps_the_working_config(container, router_log):
    upload(container, BLOB, config({"control": 1}))
    h = holder(container)
    h.current()
    container.delete_blob(BLOB)
    assert h.refresh() is False
    assert h.current().route("churn").variant == "control"
    assert 'upload {"endpoints": {}}' in warnings(router_log)[0]


def test_an_invalid_blob_at_first_load_is_an_error_retried_later(container):
    upload(container, BLOB, config({"control": -1}))
    h = holder(container, retry_seconds=0.3)
    for _ in range(3):  # every request gets the typed error; storage is not asked again meanwhile
        with pytest.raises(InvalidRouterConfig) as err:
            h.current()
        assert err.value.message.startswith("blob 'config/router.json': endpoints.churn.variants[0].weight:")
    upload(container, BLOB, config({"control": 1}))
    with pytest.raises(InvalidRouterConfig):
        h.current()  # still within retry_seconds
    time.sleep(0.35)
    assert h.current().route("churn").variant == "control"


def test_a_missing_model_at_first_load_is_an_invalid_config_not_a_404(container):
    upload(container, BLOB, config({"control": 1}))

    def reject(cfg):
        raise ModelNotFound("no model 'churn/control' (looked for churn/control.txt)")

    with pytest.raises(InvalidRouterConfig) as err:
        holder(container, check_models=reject).current()
    assert "model_not_found" in err.value.message and err.value.status == 500
