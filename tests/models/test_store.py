"""The model store: lazy, single-flight, ETag-revalidated, never replacing a working model."""

from __future__ import annotations

import gzip
import threading
import time

import numpy as np
import pytest
from azure.storage.blob import ContainerClient

from shared.errors import InvalidModel, InvalidName, ModelNotFound, ModelUnavailable
from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore, blob_candidates
from tests.conftest import upload

MB = 1024 * 1024


def make_store(container, **kwargs) -> ModelStore:
    kwargs.setdefault("refresh_seconds", 3600)
    return ModelStore(BlobSource(container, 64 * MB), **kwargs)


def test_creating_a_store_touches_no_storage():
    # A container on a closed port: any request would fail, so construction must make none.
    dead = ContainerClient.from_container_url("http://127.0.0.1:9/devstoreaccount1/models")
    store = make_store(dead)
    assert store.loaded() == []
    assert store.stats.downloads == 0


def test_first_get_downloads_and_parses_then_serves_from_cache(container, demo_models):
    upload(container, "churn.txt", demo_models["churn"].path)
    store = make_store(container)
    model, cold = store.get("churn")
    assert cold is True
    assert model.info.name == "churn" and model.info.path == "churn.txt"
    assert model.info.feature_names == demo_models["churn"].feature_names
    assert model.info.num_features == 8 and model.info.objective == "binary"
    assert model.info.version and model.info.last_modified is not None
    again, cold_again = store.get("churn")
    assert again is model and cold_again is False
    assert store.stats.downloads == 1


def test_metadata_of_each_model_kind(container, demo_models):
    for name in ("price", "segment"):
        upload(container, f"{name}.txt", demo_models[name].path)
    store = make_store(container)
    price, _ = store.get("price")
    segment, _ = store.get("segment")
    assert (price.info.objective, price.info.num_classes, price.info.num_outputs) == ("regression", 1, 1)
    assert (segment.info.objective, segment.info.num_classes,
            segment.info.num_outputs) == ("multiclass", 3, 3)


def test_concurrent_first_requests_share_one_download(container, demo_models):
    upload(container, "churn.txt", demo_models["churn"].path)
    store = make_store(container)
    barrier = threading.Barrier(16)
    results = []

    def worker():
        barrier.wait()
        results.append(store.get("churn")[0])

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 16
    assert len({id(m) for m in results}) == 1
    assert store.stats.downloads == 1


def test_gzip_model_is_found_by_name_and_predicts_the_same(container, demo_models):
    raw = demo_models["price"].path.read_bytes()
    upload(container, "price.txt.gz", gzip.compress(raw))
    upload(container, "plain.txt", raw)
    store = make_store(container)
    zipped, _ = store.get("price")
    plain, _ = store.get("plain")
    assert zipped.info.path == "price.txt.gz"
    X = np.random.default_rng(1).normal(50, 20, size=(50, 6))
    assert np.array_equal(zipped.predict(X), plain.predict(X))


def test_router_style_paths_are_used_as_given(container, demo_models):
    upload(container, "churn/v2.txt", demo_models["churn"].path)
    store = make_store(container)
    model, _ = store.get("churn/v2.txt")
    assert model.info.path == "churn/v2.txt"


def test_missing_model_is_not_found(container):
    store = make_store(container)
    with pytest.raises(ModelNotFound) as err:
        store.get("nope")
    assert "nope.txt" in err.value.message and "nope.txt.gz" in err.value.message
    assert err.value.status == 404


def test_garbage_blob_never_loaded_is_an_invalid_model(container):
    upload(container, "bad.txt", b"this is not a model")
    with pytest.raises(InvalidModel) as err:
        make_store(container).get("bad")
    assert err.value.status == 422


def test_truncated_model_is_an_invalid_model(container, demo_models):
    raw = demo_models["churn"].path.read_bytes()
    upload(container, "cut.txt", raw[: len(raw) // 3])
    with pytest.raises(InvalidModel):
        make_store(container).get("cut")


def test_bad_gzip_is_an_invalid_model(container):
    upload(container, "z.txt.gz", b"\x1f\x8b not really gzip")
    with pytest.raises(InvalidModel):
        make_store(container).get("z")


def test_gzip_bomb_is_refused(container):
    upload(container, "bomb.txt.gz", gzip.compress(b"tree\n" + b"0" * (3 * MB)))
    store = ModelStore(BlobSource(container, 1 * MB))
    with pytest.raises(InvalidModel) as err:
        store.get("bomb")
    assert "limit" in err.value.message


def test_unreachable_storage_is_unavailable_not_missing():
    dead = ContainerClient.from_container_url("http://127.0.0.1:9/devstoreaccount1/models",
                                              retry_total=0, connection_timeout=2)
    with pytest.raises(ModelUnavailable) as err:
        make_store(dead).get("churn")
    assert err.value.status == 503


def test_a_failed_first_load_is_retried_on_the_next_request(container, demo_models):
    store = make_store(container)
    with pytest.raises(ModelNotFound):
        store.get("late")
    upload(container, "late.txt", demo_models["churn"].path)
    model, cold = store.get("late")
    assert cold and model.info.name == "late"


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a//b", "dir/", "-x", "a b", "x" * 300])
def test_invalid_names_are_rejected_before_any_request(name):
    with pytest.raises(InvalidName):
        blob_candidates(name)


def test_changed_blob_is_swapped_in_without_restart(container, demo_models):
    upload(container, "m.txt", demo_models["churn"].path)
    store = make_store(container)
    old, _ = store.get("m")
    assert store.refresh("m") is False  # unchanged: a 304, nothing downloaded
    assert store.stats.not_modified == 1 and store.stats.downloads == 1
    upload(container, "m.txt", demo_models["churn_v1"].path)
    assert store.refresh("m") is True
    new, cold = store.get("m")
    assert new is not old and not cold
    assert new.info.version != old.info.version
    X = np.random.default_rng(2).normal(30, 20, size=(20, 8))
    assert not np.array_equal(new.predict(X), old.predict(X))


def test_background_refresh_swaps_while_serving_the_old_model(container, demo_models):
    upload(container, "m.txt", demo_models["churn"].path)
    store = make_store(container, refresh_seconds=0.2)
    old, _ = store.get("m")
    upload(container, "m.txt", demo_models["churn_v1"].path)
    deadline = time.monotonic() + 10
    seen = set()
    while time.monotonic() < deadline:
        model, _ = store.get("m")  # never blocks on the refresh
        seen.add(model.info.version)
        if model.info.version != old.info.version:
            break
        time.sleep(0.05)
    assert len(seen) == 2, "the new version was not swapped in"
    assert store.stats.swaps == 1
    store.close()


@pytest.mark.parametrize("replacement", [b"garbage", None], ids=["garbage", "deleted"])
def test_a_broken_or_deleted_blob_keeps_the_working_model(container, demo_models, replacement):
    upload(container, "m.txt", demo_models["churn"].path)
    store = make_store(container)
    old, _ = store.get("m")
    if replacement is None:
        container.delete_blob("m.txt")
    else:
        upload(container, "m.txt", replacement)
    assert store.refresh("m") is False
    assert store.stats.failed_refreshes == 1
    current, _ = store.get("m")
    assert current is old
    # and the next interval tries again: a good blob then gets in
    upload(container, "m.txt", demo_models["churn_v1"].path)
    assert store.refresh("m") is True


def test_least_recently_used_models_are_evicted_beyond_the_memory_bound(container, demo_models):
    for name in ("a", "b", "c"):
        upload(container, f"{name}.txt", demo_models["price"].path)
    size = demo_models["price"].path.stat().st_size
    store = make_store(container, max_cache_bytes=int(size * 2.5))
    store.get("a")
    store.get("b")
    store.get("a")  # a is now more recent than b
    store.get("c")
    assert [info.name for info in store.loaded()] == ["a", "c"]
    assert store.stats.evictions == 1
    _, cold = store.get("b")
    assert cold is True  # b had to be loaded again


def test_a_model_larger_than_the_bound_still_serves_alone(container, demo_models):
    upload(container, "big.txt", demo_models["churn"].path)
    store = make_store(container, max_cache_bytes=1000)
    model, _ = store.get("big")
    assert [info.name for info in store.loaded()] == ["big"]


def test_get_cached_answers_from_the_cache_and_never_loads(container, demo_models):
    upload(container, "churn.txt", demo_models["churn"].path)
    store = ModelStore(BlobSource(container, 64 * 1024 * 1024), refresh_seconds=3600)
    assert store.get_cached("churn") is None
    assert not store.is_cached("churn") and store.stats.downloads == 0
    model, cold = store.get("churn")  # get loads it as usual
    assert store.get_cached("churn") is model


def test_a_version_the_swap_check_refused_is_not_downloaded_again_until_the_blob_changes(
        container, demo_models):
    from shared.errors import InvalidModel

    upload(container, "churn.txt", demo_models["churn"].path)
    store = ModelStore(BlobSource(container, 64 * 1024 * 1024), refresh_seconds=3600)
    served = store.get("churn")[0].info.version

    def refuse_price(name, info):
        if "monthly_charges" not in info.feature_names:
            raise InvalidModel("other features", code="feature_mismatch")

    store.check_swap = refuse_price
    upload(container, "churn.txt", demo_models["price"].path)
    before = store.stats.downloads
    assert store.refresh("churn") is False and store.refresh("churn") is False
    assert store.stats.downloads == before + 1  # the refused version was fetched once
    assert store.get("churn")[0].info.version == served
    upload(container, "churn.txt", demo_models["churn_v1"].path)  # changed again: fetched, taken
    assert store.refresh("churn") is True
    store.close()
