"""Routing: weighted splits, sticky keys that never depend on process state, minimal key
movement when weights change, shadows and overrides (the shadow runner: test_shadow.py)."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from shared.errors import InvalidName, InvalidPayload, OverrideNotAllowed, UnknownVariant
from shared.router import Router, ShadowTarget, parse_config, sticky_key

ROOT = Path(__file__).resolve().parents[2]


def router(variants, *, shadow=(), sticky=None, allow_override=False, salt=None,
           seed: int | None = 7) -> Router:
    """A router for one endpoint ``churn``; ``variants`` maps name -> weight."""
    ep: dict = {"variants": [{"name": n, "model": f"churn/{n}.txt", "weight": w}
                             for n, w in variants.items()],
                "shadow": [{"name": n, "model": f"churn/{n}.txt", "fraction": f}
                           for n, f in dict(shadow).items()],
                "allow_override": allow_override}
    if sticky:
        ep["sticky"] = sticky
    if salt:
        ep["salt"] = salt
    config = parse_config(json.dumps({"endpoints": {"churn": ep}}))
    return Router(config, rng=random.Random(seed) if seed is not None else None)


def within_binomial(count: int, n: int, p: float, sds: float = 4.0) -> bool:
    return abs(count - n * p) <= sds * math.sqrt(n * p * (1 - p))


KEYS = [f"user-{i}" for i in range(10_000)]


# -- no config ---------------------------------------------------------------------------


def test_without_config_an_endpoint_is_served_by_the_model_of_the_same_name():
    route = Router(None).route("price", key="u1")
    assert (route.endpoint, route.variant, route.model, route.shadows, route.how) == \
        ("price", "default", "price", (), "single")
    assert Router(None).describe()["mode"] == "single-model"


def test_endpoints_the_config_does_not_list_are_served_by_their_same_name_model():
    assert router({"a": 1}).route("price").model == "price"


def test_an_unconfigured_endpoint_must_be_a_valid_model_name():
    with pytest.raises(InvalidName):
        Router(None).route("../secrets")


# -- weighted split ----------------------------------------------------------------------


def test_unkeyed_routes_follow_the_weights():
    r = router({"control": 90, "candidate": 10})
    n = 20_000
    candidate = sum(r.route("churn", key=None).variant == "candidate" for _ in range(n))
    assert within_binomial(candidate, n, 0.10), candidate / n


def test_unkeyed_routes_without_an_injected_rng_follow_the_weights_too():
    r = router({"a": 1, "b": 1, "c": 2}, seed=None)
    n = 20_000
    counts = {"a": 0, "b": 0, "c": 0}
    for _ in range(n):
        counts[r.route("churn").variant] += 1
    assert within_binomial(counts["c"], n, 0.5) and within_binomial(counts["a"], n, 0.25)


def test_keyed_routes_follow_the_weights_over_many_keys():
    r = router({"control": 90, "candidate": 10})
    keys = [f"k{i}" for i in range(20_000)]
    candidate = sum(r.route("churn", key=k).variant == "candidate" for k in keys)
    assert within_binomial(candidate, len(keys), 0.10), candidate / len(keys)


@pytest.mark.parametrize("order", [("off", "on"), ("on", "off")])
def test_a_variant_of_weight_zero_gets_no_request_keyed_or_not(order):
    # How a rolled-back candidate is kept in the config: weight 0.
    r = router({order[0]: 0 if order[0] == "off" else 5, order[1]: 0 if order[1] == "off" else 5})
    assert {r.route("churn", key=k).variant for k in KEYS[:2000]} == {"on"}
    assert {r.route("churn").variant for _ in range(2000)} == {"on"}


def test_raising_a_candidate_from_weight_zero_moves_keys_only_to_it():
    before, after = router({"control": 100, "candidate": 0}), router({"control": 95, "candidate": 5})
    moved = [k for k in KEYS if before.route("churn", key=k).variant != after.route("churn", key=k).variant]
    assert all(after.route("churn", key=k).variant == "candidate" for k in moved)
    assert within_binomial(len(moved), len(KEYS), 0.05)


def test_a_single_variant_takes_everything():
    r = router({"only": 3})
    assert {r.route("churn", key=k).how for k in KEYS[:50]} == {"only"}
    assert {r.route("churn").model for _ in range(50)} == {"churn/only.txt"}


# -- stickiness --------------------------------------------------------------------------


def test_the_same_key_always_gets_the_same_variant():
    r = router({"control": 50, "candidate": 50}, sticky={"header": "x-user-id"})
    first = {k: r.route("churn", key=k).variant for k in KEYS[:2000]}
    for _ in range(3):
        assert {k: r.route("churn", key=k).variant for k in KEYS[:2000]} == first
    assert set(first.values()) == {"control", "candidate"}
    assert r.route("churn", key="user-1").how == "sticky"
    # a new router (a restart, another instance) with another RNG agrees
    assert {k: router({"control": 50, "candidate": 50}, seed=99).route("churn", key=k).variant
            for k in KEYS[:2000]} == first


def test_a_returning_key_gets_the_route_its_hash_gives_and_the_memo_stays_bounded(monkeypatch):
    from shared.router import router as router_module

    monkeypatch.setattr(router_module, "STICKY_MEMO_KEYS", 500)
    r = router({"control": 70, "candidate": 30}, shadow={"next": 0.3})
    first = [r.route("churn", key=k) for k in KEYS[:2000]]  # four times the memo's size
    assert len(r._sticky_routes) <= 500
    again = [r.route("churn", key=k) for k in KEYS[:2000]]
    assert again == first  # remembered or hashed again, the same route
    fresh = router({"control": 70, "candidate": 30}, shadow={"next": 0.3}, seed=5)
    assert [fresh.route("churn", key=k) for k in KEYS[:2000]] == first
    # an override or no key is never answered from the memo
    pinned = router({"control": 70, "candidate": 30}, allow_override=True)
    key = next(k for k in KEYS if pinned.route("churn", key=k).variant == "control")
    assert pinned.route("churn", key=key, override="candidate").variant == "candidate"
    assert pinned.route("churn", key=key).variant == "control"
    # a long key (a caller's value, up to a request's size) is hashed every time, never kept
    long_key = "u" * (router_module.STICKY_MEMO_KEY_CHARS + 1)
    before = len(r._sticky_routes)
    assert r.route("churn", key=long_key) == fresh.route("churn", key=long_key)
    assert len(r._sticky_routes) == before


CHILD = """
import json, sys
from shared.router import Router, parse_config
router = Router(parse_config(sys.argv[1]))
print(json.dumps([router.route("churn", key=f"user-{i}").variant for i in range(1000)]))
"""


def test_another_process_with_another_hash_seed_assigns_every_key_the_same():
    config = {"endpoints": {"churn": {"salt": "exp-1", "variants": [
        {"name": "control", "model": "churn/v1.txt", "weight": 70},
        {"name": "candidate", "model": "churn/v2.txt", "weight": 20},
        {"name": "third", "model": "churn/v3.txt", "weight": 10}]}}}
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60, check=True)
    theirs = json.loads(child.stdout)
    r = Router(parse_config(json.dumps(config)))
    ours = [r.route("churn", key=f"user-{i}").variant for i in range(1000)]
    assert ours == theirs
    assert set(ours) == {"control", "candidate", "third"}


def test_the_salt_reshuffles_assignments():
    a = router({"x": 1, "y": 1}, salt="exp-1")
    b = router({"x": 1, "y": 1}, salt="exp-2")
    differ = sum(a.route("churn", key=k).variant != b.route("churn", key=k).variant for k in KEYS)
    assert within_binomial(differ, len(KEYS), 0.5)


def assignments(r: Router) -> list[str]:
    return [r.route("churn", key=k).variant for k in KEYS]


def test_changing_one_weight_moves_only_the_keys_that_must_move():
    before = assignments(router({"a": 50, "b": 50}))
    after = assignments(router({"a": 60, "b": 40}))
    moves = [(x, y) for x, y in zip(before, after) if x != y]
    assert len(moves) / len(KEYS) < 0.12  # the theoretical minimum is 0.10
    assert set(moves) == {("b", "a")}  # only toward the variant whose weight grew


def test_changing_an_early_weight_leaves_the_others_untouched():
    # With cumulative buckets, raising the first weight would shift b's and c's buckets too.
    before = assignments(router({"a": 20, "b": 40, "c": 40}))
    after = assignments(router({"a": 30, "b": 40, "c": 40}))
    moves = [(x, y) for x, y in zip(before, after) if x != y]
    assert {y for _, y in moves} == {"a"}
    # a's share goes from 0.2 to 30/110: the minimum movement is about 0.073
    assert len(moves) / len(KEYS) < 0.09


def test_adding_a_variant_moves_keys_only_to_it():
    before = assignments(router({"a": 50, "b": 50}))
    after = assignments(router({"a": 50, "b": 50, "c": 20}))
    moves = [(x, y) for x, y in zip(before, after) if x != y]
    assert {y for _, y in moves} == {"c"}
    assert within_binomial(len(moves), len(KEYS), 20 / 120)


def test_changing_a_variants_model_keeps_its_users():
    a = parse_config(json.dumps({"endpoints": {"churn": {"variants": [
        {"name": "control", "model": "churn/v1.txt"}, {"name": "candidate", "model": "churn/v2.txt"}]}}}))
    b = parse_config(json.dumps({"endpoints": {"churn": {"variants": [
        {"name": "control", "model": "churn/v1.txt"}, {"name": "candidate", "model": "churn/v5.txt"}]}}}))
    assert [Router(a).route("churn", key=k).variant for k in KEYS[:2000]] == \
        [Router(b).route("churn", key=k).variant for k in KEYS[:2000]]


# -- sticky keys from requests -----------------------------------------------------------


def endpoint_config(sticky):
    return router({"a": 1, "b": 1}, sticky=sticky).endpoint("churn")


def test_sticky_header_is_found_whatever_its_case():
    config = endpoint_config({"header": "X-User-Id"})
    assert sticky_key(config, {"X-USER-ID": "u7"}, {}, {}) == "u7"
    assert sticky_key(config, {"x-user-id": "u7"}) == "u7"
    assert sticky_key(config, {"other": "u7"}) is None
    assert sticky_key(config, {"x-user-id": ""}) is None  # empty: no key


def test_sticky_query_parameter_is_matched_exactly():
    config = endpoint_config({"query": "uid"})
    assert sticky_key(config, {}, {"uid": "42"}, {}) == "42"
    assert sticky_key(config, {}, {"UID": "42"}, {}) is None


def test_sticky_body_field_accepts_strings_and_integers_alike():
    r = router({"a": 1, "b": 1}, sticky={"body": "user_id"})
    config = r.endpoint("churn")
    assert r.sticky_body_field("churn") == "user_id" and r.sticky_body_field("price") is None
    assert sticky_key(config, body_fields={"user_id": 42}) == "42"
    assert sticky_key(config, body_fields={"user_id": "42"}) == "42"
    assert sticky_key(config, body_fields={"user_id": None}) is None
    assert sticky_key(config, body_fields={}) is None


@pytest.mark.parametrize("sticky", [{"header": "x-user-id"}, {"query": "uid"}, {"body": "uid"}])
def test_a_sticky_key_longer_than_128_characters_is_a_bad_request(sticky):
    config = endpoint_config(sticky)
    source, name = next(iter(sticky.items()))

    def key_of(value):
        where = {"header": "headers", "query": "query", "body": "body_fields"}[source]
        return sticky_key(config, **{where: {name: value}})

    assert key_of("k" * 128) == "k" * 128
    assert key_of(10 ** 127) == str(10 ** 127)  # an integer's digits count the same
    for value in ("k" * 129, 10 ** 128):
        with pytest.raises(InvalidPayload) as err:
            key_of(value)
        assert err.value.code == "invalid_sticky_key" and err.value.status == 400
        assert "128" in err.value.message


@pytest.mark.parametrize("value", [[1], {"a": 1}, 1.5, True])
def test_a_sticky_body_field_of_another_type_is_a_bad_request(value):
    with pytest.raises(InvalidPayload) as err:
        sticky_key(endpoint_config({"body": "user_id"}), body_fields={"user_id": value})
    assert err.value.code == "invalid_sticky_key" and err.value.status == 400


def test_no_sticky_config_means_no_key():
    assert sticky_key(endpoint_config(None), {"x-user-id": "u"}) is None
    assert sticky_key(None, {"x-user-id": "u"}) is None


# -- overrides ---------------------------------------------------------------------------


def test_an_allowed_override_pins_the_variant_even_against_the_key():
    r = router({"control": 99, "candidate": 1}, allow_override=True)
    routes = [r.route("churn", key=k, override="candidate") for k in KEYS[:200]]
    assert {(x.variant, x.model, x.how) for x in routes} == {("candidate", "churn/candidate.txt", "override")}


def test_an_override_on_an_endpoint_that_does_not_allow_it_is_forbidden():
    with pytest.raises(OverrideNotAllowed) as err:
        router({"control": 1, "candidate": 1}).route("churn", override="candidate")
    assert (err.value.status, err.value.code) == (403, "override_not_allowed")
    with pytest.raises(OverrideNotAllowed):
        Router(None).route("price", override="default")


def test_an_override_naming_no_variant_is_a_bad_request():
    r = router({"control": 1, "candidate": 1}, shadow={"next": 1.0}, allow_override=True)
    for name in ("nope", "next"):  # shadows cannot be pinned
        with pytest.raises(UnknownVariant) as err:
            r.route("churn", override=name)
        assert (err.value.status, err.value.code) == (400, "unknown_variant")
        assert "control, candidate" in err.value.message


def test_an_empty_override_counts_as_none():
    assert router({"a": 1, "b": 1}).route("churn", override="").how == "weighted"


# -- shadows -----------------------------------------------------------------------------


def test_shadows_are_chosen_at_their_fraction():
    r = router({"a": 1}, shadow={"s1": 0.25, "s2": 1.0})
    n = 20_000
    routes = [r.route("churn") for _ in range(n)]
    assert within_binomial(sum(ShadowTarget("s1", "churn/s1.txt") in x.shadows for x in routes), n, 0.25)
    assert all(ShadowTarget("s2", "churn/s2.txt") in x.shadows for x in routes)
    keyed = sum(bool(r.route("churn", key=k).shadows[:-1]) for k in KEYS)
    assert within_binomial(keyed, len(KEYS), 0.25)


def test_with_a_key_the_same_users_are_shadowed_every_time():
    r = router({"a": 1, "b": 1}, shadow={"next": 0.3})
    first = [bool(r.route("churn", key=k).shadows) for k in KEYS[:2000]]
    again = [bool(router({"a": 1, "b": 1}, shadow={"next": 0.3}, seed=3).route("churn", key=k).shadows)
             for k in KEYS[:2000]]
    assert first == again


def test_shadow_choice_is_independent_of_the_variant():
    r = router({"a": 1, "b": 1}, shadow={"next": 0.5})
    routes = [r.route("churn", key=k) for k in KEYS]
    in_a = [x for x in routes if x.variant == "a"]
    assert within_binomial(sum(bool(x.shadows) for x in in_a), len(in_a), 0.5)


# -- describe ----------------------------------------------------------------------------


def test_describe_lists_variants_shares_shadows_and_sticky_but_not_the_salt():
    r = router({"control": 90, "candidate": 10}, shadow={"next": 0.5}, sticky={"header": "x-user-id"},
               salt="hidden-salt", allow_override=True)
    report = r.describe()
    assert report["mode"] == "configured"
    [churn] = report["endpoints"]
    assert churn["variants"] == [
        {"name": "control", "model": "churn/control.txt", "weight": 90, "share": 0.9},
        {"name": "candidate", "model": "churn/candidate.txt", "weight": 10, "share": 0.1}]
    assert churn["shadow"] == [{"name": "next", "model": "churn/next.txt", "fraction": 0.5}]
    assert churn["sticky"] == {"header": "x-user-id"} and churn["allow_override"] is True
    assert "hidden-salt" not in json.dumps(report)
