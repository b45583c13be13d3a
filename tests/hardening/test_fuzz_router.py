"""Fuzzing router configs: random and adversarial documents never replace a working config.

- the parser (many inputs, no storage): ``parse_config`` returns a config or raises
  ``InvalidRouterConfig`` whose message is short and never quotes the document; an accepted
  config is one that routes: every endpoint routes every key to one of its variants, and
  the variants' shares are finite and add up to 1;
- the holder (``RouterHolder`` over a config blob on Azurite, with the models check): each
  random config is uploaded and revalidated; it replaces the working one exactly when it
  parses and all its models load with the same features per endpoint, and otherwise the
  working config stays (same version, same routes).
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import InvalidRouterConfig
from shared.models.blob_source import BlobSource
from shared.models.store import ModelStore
from shared.router import (
    MAX_CONFIG_BYTES,
    Router,
    RouterConfigSource,
    RouterHolder,
    models_loadable,
    parse_config,
)
from tests.azurite_support import new_container
from tests.hardening.support import Pairs, Raw, emit, hypothesis_settings, report, unique

pytestmark = pytest.mark.hardening

BLOB = "config/router.json"
MODELS = {"churn": "churn", "churn.txt": "churn", "churn_v1": "churn_v1", "price": "price",
          "segment": "segment"}
FEATURE_GROUP = {"churn": "churn", "churn_v1": "churn", "price": "price", "segment": "segment"}

names = st.one_of(st.sampled_from(["a", "b", "control", "candidate", "A-1", "x.y", "_bad", "", "a b",
                                   "x" * 64, "x" * 65, "é", "default"]), st.text(max_size=8))
models = st.one_of(st.sampled_from([*MODELS, "missing", "churn/../x", "", "a" * 300, "price.txt.gz"]),
                   st.text(max_size=10))
numbers = st.one_of(st.sampled_from([1, 2, 50, 0.5, 0, -1, 1e308, 1.7976931348623157e308, 5e-324,
                                     1e-300, Raw(b"1" + b"0" * 400), True, False, "1", None]),
                    st.floats(), st.integers(-5, 100), st.just(Raw(b"NaN")), st.just(Raw(b"Infinity")),
                    st.just(Raw(b"1e999")))
anything = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=6)),
                        lambda c: st.one_of(st.lists(c, max_size=3),
                                            st.dictionaries(st.text(max_size=5), c, max_size=3)),
                        max_leaves=8)


def maybe_extra(draw, obj: dict) -> dict:
    if draw(st.integers(0, 9)) == 0:
        obj[draw(st.sampled_from(["extra", "weight", "name", "variants"]))] = draw(anything)
    if draw(st.integers(0, 19)) == 0:  # a key given twice
        pairs = Pairs(obj.items())
        if pairs:
            pairs.append((pairs[0][0], draw(anything)))
        return pairs
    return obj


@st.composite
def variants(draw):
    v = {"name": draw(names), "model": draw(models)}
    if draw(st.booleans()):
        v["weight"] = draw(numbers)
    return maybe_extra(draw, v)


@st.composite
def endpoint_configs(draw):
    ep: dict = {"variants": draw(st.one_of(st.lists(variants(), min_size=0, max_size=4),
                                           st.lists(variants(), min_size=17, max_size=18), anything))}
    if draw(st.booleans()):
        ep["sticky"] = draw(st.one_of(
            st.fixed_dictionaries({draw(st.sampled_from(["header", "query", "body"])):
                                   st.sampled_from(["x-user-id", "user", "rows", "", "a b", "x" * 200])}),
            anything))
    if draw(st.booleans()):
        ep["salt"] = draw(st.one_of(st.text(max_size=5), st.just("s" * 129), anything))
    if draw(st.booleans()):
        ep["allow_override"] = draw(st.one_of(st.booleans(), anything))
    if draw(st.booleans()):
        ep["shadow"] = draw(st.lists(st.fixed_dictionaries(
            {"name": names, "model": models, "fraction": numbers}), max_size=5))
    if draw(st.booleans()):
        ep["log"] = draw(st.one_of(st.fixed_dictionaries({}, optional={"sample": numbers,
                                                                         "features": anything}), anything))
    return maybe_extra(draw, ep)


@st.composite
def plausible_endpoints(draw):
    """Mostly valid endpoints (valid names, existing models, odd weights), so that accepted
    configs are common."""
    n = draw(st.integers(1, 4))
    vs = [{"name": f"v{i}", "model": draw(st.sampled_from([*MODELS, "missing"])),
           "weight": draw(st.sampled_from([1, 2, 50, 0.5, 1e308, 1.7976931348623157e308, 5e-324, 1e-300]))}
          for i in range(n)]
    ep: dict = {"variants": vs}
    if draw(st.booleans()):
        ep["sticky"] = {"header": "x-user-id"}
    if draw(st.booleans()):
        ep["shadow"] = [{"name": "s", "model": draw(st.sampled_from([*MODELS, "missing"])),
                         "fraction": draw(st.sampled_from([1, 0.5, 5e-324]))}]
    return ep


@st.composite
def documents(draw) -> bytes:
    kind = draw(st.sampled_from(["config"] * 4 + ["plausible"] * 3 + ["raw", "deep", "large", "not-object"]))
    if kind == "plausible":
        eps = draw(st.lists(st.tuples(st.sampled_from(["churn", "price", "segment", "other"]),
                                      plausible_endpoints()), min_size=1, max_size=3))
        return emit({"endpoints": dict(eps)})
    if kind == "raw":
        return draw(st.one_of(st.binary(max_size=100),
                              st.sampled_from([b"", b"{", b"null", b"[]", b'{"endpoints": NaN}',
                                               b"\xef\xbb\xbf{\"endpoints\": {}}", b'{"endpoints": {}}x'])))
    if kind == "deep":
        depth = draw(st.sampled_from([100, 999, 1000, 5000, 100_000]))
        return b'{"endpoints": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "large":
        filler = "x" * draw(st.sampled_from([MAX_CONFIG_BYTES - 100, MAX_CONFIG_BYTES + 1]))
        return json.dumps({"endpoints": {}, "pad": filler}).encode()
    if kind == "not-object":
        return emit(draw(anything))
    endpoints = draw(st.lists(st.tuples(names, endpoint_configs()), max_size=3))
    doc = {"endpoints": Pairs(endpoints) if draw(st.booleans()) else dict(endpoints)}
    if draw(st.integers(0, 9)) == 0:
        doc["version"] = 2
    return emit(doc)


def check_routes(config) -> None:
    """An accepted config routes: every key goes to one of the endpoint's variants and the
    shares are finite and add up to 1."""
    router = Router(config, rng=random.Random(7))
    described = router.describe()
    for ep in described["endpoints"]:
        shares = [v["share"] for v in ep["variants"]]
        assert all(math.isfinite(s) and s >= 0 for s in shares), ep
        assert abs(sum(shares) - 1) < 1e-5, f"shares of {ep['name']!r} add up to {sum(shares)}: {ep}"
        names = {v["name"] for v in ep["variants"]}
        for key in (None, "u1", "u2", "ü", "x" * 200):
            route = router.route(ep["name"], key=key)
            assert route.variant in names
        counts = Counter(router.route(ep["name"]).variant for _ in range(200))
        for v in ep["variants"]:  # the random split follows the weights (a 60% share wins often)
            if v["share"] >= 0.6:
                assert counts[v["name"]] > 60, (ep, counts)


def test_the_parser_accepts_only_configs_that_route(request):
    tally: Counter[str] = Counter()

    @hypothesis_settings(600)
    @given(documents())
    def run(document):
        try:
            config = parse_config(document)
        except InvalidRouterConfig as exc:
            tally["rejected"] += 1
            assert len(exc.message) < 400, exc.message
            return
        tally["accepted"] += 1
        check_routes(config)

    run()
    report(request, "fuzz_router_parser", tried=sum(tally.values()), **tally, other_exceptions=0)
    assert tally["accepted"] and tally["rejected"]


@pytest.mark.parametrize("weight", [1e308, int(1.7e308)])
def test_weights_whose_sum_overflows_are_rejected(weight):
    """Found while writing this fuzzer (and by it, once plausible configs were generated):
    two variants weighted 1e308 each passed validation, but their sum is inf, so every share
    read 0.0 and the weighted split sent all traffic to the last variant."""
    doc = {"endpoints": {"churn": {"variants": [{"name": "a", "model": "churn", "weight": weight},
                                                {"name": "b", "model": "churn", "weight": weight}]}}}
    with pytest.raises(InvalidRouterConfig):
        parse_config(json.dumps(doc))


# -- the holder on Azurite --------------------------------------------------------------------

WORKING = json.dumps({"endpoints": {"churn": {"variants": [
    {"name": "control", "model": "churn", "weight": 1}, {"name": "candidate", "model": "churn_v1"}]}}})


def loads_with_same_features(config) -> bool:
    for ep in config.endpoints.values():
        groups = set()
        for v in ep.variants:
            if v.model not in MODELS:
                return False
            groups.add(FEATURE_GROUP[MODELS[v.model]])
        if len(groups) != 1 or any(s.model not in MODELS for s in ep.shadow):
            return False
    return True


def test_random_configs_never_replace_a_working_one(blob_service, demo_models, request):
    container = new_container(blob_service, unique("rt"))
    try:
        for name in ("churn", "churn_v1", "price", "segment"):
            container.upload_blob(f"{name}.txt", demo_models[name].path.read_bytes())
        container.upload_blob(BLOB, WORKING.encode())
        store = ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600)
        source = RouterConfigSource(blob_path=BLOB, blobs=BlobSource(container, MAX_CONFIG_BYTES))
        holder = RouterHolder(source, refresh_seconds=3600, check_models=models_loadable(store))
        holder.current()
        tally: Counter[str] = Counter()

        @hypothesis_settings(60)
        @given(documents())
        def run(document):
            before_router, before_version = holder.current(), holder.version
            container.upload_blob(BLOB, document, overwrite=True)
            swapped = holder.refresh()
            try:
                config = parse_config(document)
                expected = loads_with_same_features(config)
            except InvalidRouterConfig:
                expected = False
            assert swapped == expected, (document[:300], swapped)
            if swapped:
                tally["replaced"] += 1
                check_routes(holder.current().config)
                assert holder.version != before_version
            else:
                tally["kept"] += 1
                assert holder.current() is before_router and holder.version == before_version
            # Whatever is in use works: its models load with the same features per endpoint.
            if holder.current().config is not None:
                models_loadable(store)(holder.current().config)

        run()
        report(request, "fuzz_router_holder", tried=sum(tally.values()), **tally,
               working_config_lost=0, rejected_by_holder=holder.stats.rejected)
        assert tally["kept"]
    finally:
        container.delete_container()
