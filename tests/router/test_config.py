"""The router config: one schema, validated in one place, every fault named by its path."""

from __future__ import annotations

import copy
import json

import pytest

from shared.errors import InvalidRouterConfig
from shared.router import MAX_CONFIG_BYTES, LogConfig, Shadow, Sticky, Variant, parse_config

GOOD = {"endpoints": {"churn": {
    "variants": [{"name": "control", "model": "churn/v1.txt", "weight": 90},
                 {"name": "candidate", "model": "churn/v2.txt", "weight": 10}],
    "sticky": {"header": "X-User-Id"},
    "salt": "exp-2026-11",
    "allow_override": True,
    "shadow": [{"name": "next", "model": "churn/v3.txt", "fraction": 0.5}],
    "log": {"sample": 1.0, "features": False}}}}


def changed(edit) -> str:
    """The good config with one edit applied, as JSON."""
    doc = copy.deepcopy(GOOD)
    edit(doc)
    return json.dumps(doc)


def ep(doc):
    return doc["endpoints"]["churn"]


def test_the_documented_example_parses():
    config = parse_config(json.dumps(GOOD))
    churn = config.endpoints["churn"]
    assert churn.variants == (Variant("control", "churn/v1.txt", 90),
                              Variant("candidate", "churn/v2.txt", 10))
    assert churn.sticky == Sticky("header", "x-user-id")  # header names are case-insensitive
    assert churn.salt == "exp-2026-11" and churn.allow_override is True
    assert churn.shadow == (Shadow("next", "churn/v3.txt", 0.5),)
    assert churn.log == LogConfig(sample=1.0, features=False)
    assert config.models() == ["churn/v1.txt", "churn/v2.txt", "churn/v3.txt"]


def test_defaults_of_a_minimal_endpoint():
    config = parse_config('{"endpoints": {"price": {"variants": [{"name": "a", "model": "price/v7"}]}}}')
    price = config.endpoints["price"]
    assert price.variants == (Variant("a", "price/v7", 1),)
    assert price.salt == "price"  # the endpoint name
    assert (price.sticky, price.allow_override, price.shadow, price.log) == (None, False, (), None)


def test_bytes_and_an_empty_endpoint_map_are_accepted():
    assert parse_config(b'{"endpoints": {}}').endpoints == {}


def test_sticky_body_field_is_exposed_for_the_payload_parser():
    config = parse_config(changed(lambda d: ep(d).update(sticky={"body": "user_id"})))
    assert config.endpoints["churn"].sticky_body_field == "user_id"
    assert parse_config(json.dumps(GOOD)).endpoints["churn"].sticky_body_field is None


def test_a_variant_of_weight_zero_gets_no_share_but_stays_in_the_config():
    # A rolled-back candidate keeps its place (and its sticky users' hashes) at weight 0.
    config = parse_config(changed(lambda d: ep(d)["variants"][1].update(weight=0)))
    assert [v.weight for v in config.endpoints["churn"].variants] == [90, 0]


def test_float_weights_are_allowed():
    config = parse_config(changed(lambda d: ep(d)["variants"][0].update(weight=0.25)))
    assert config.endpoints["churn"].variants[0].weight == 0.25


BAD = [
    # (what, edit or raw document, path the message must start with)
    ("all weights zero", lambda d: [v.update(weight=0) for v in ep(d)["variants"]],
     "endpoints.churn.variants: at least one variant must have a weight above 0"),
    ("weight negative", lambda d: ep(d)["variants"][1].update(weight=-5),
     "endpoints.churn.variants[1].weight: must be a number of at least 0"),
    ("weight bool", lambda d: ep(d)["variants"][0].update(weight=True),
     "endpoints.churn.variants[0].weight:"),
    ("weight string", lambda d: ep(d)["variants"][0].update(weight="90"),
     "endpoints.churn.variants[0].weight:"),
    ("weight huge int", lambda d: ep(d)["variants"][0].update(weight=10 ** 400),
     "endpoints.churn.variants[0].weight:"),
    ("no variants", lambda d: ep(d).update(variants=[]),
     "endpoints.churn.variants: must list at least one variant"),
    ("variants not a list", lambda d: ep(d).update(variants={"a": 1}),
     "endpoints.churn.variants: must be a list"),
    ("variants missing", lambda d: ep(d).pop("variants"), "endpoints.churn.variants: is required"),
    ("duplicate variant", lambda d: ep(d)["variants"][1].update(name="control"),
     "endpoints.churn.variants[1].name:"),
    ("duplicate shadow", lambda d: ep(d)["shadow"].append({"name": "next", "model": "x", "fraction": 1}),
     "endpoints.churn.shadow[1].name:"),
    ("shadow named like a variant", lambda d: ep(d)["shadow"][0].update(name="control"),
     "endpoints.churn.shadow[0].name:"),
    ("bad variant name", lambda d: ep(d)["variants"][0].update(name="-x"),
     "endpoints.churn.variants[0].name:"),
    ("variant name too long", lambda d: ep(d)["variants"][0].update(name="v" * 65),
     "endpoints.churn.variants[0].name:"),
    ("bad model name", lambda d: ep(d)["variants"][1].update(model="../etc/passwd"),
     "endpoints.churn.variants[1].model: invalid model name"),
    ("model not a string", lambda d: ep(d)["variants"][1].update(model=7),
     "endpoints.churn.variants[1].model:"),
    ("bad shadow model", lambda d: ep(d)["shadow"][0].update(model="a//b"),
     "endpoints.churn.shadow[0].model:"),
    ("missing model", lambda d: ep(d)["variants"][0].pop("model"),
     "endpoints.churn.variants[0].model: is required"),
    ("fraction zero", lambda d: ep(d)["shadow"][0].update(fraction=0), "endpoints.churn.shadow[0].fraction:"),
    ("fraction over one", lambda d: ep(d)["shadow"][0].update(fraction=1.5),
     "endpoints.churn.shadow[0].fraction:"),
    ("fraction missing", lambda d: ep(d)["shadow"][0].pop("fraction"),
     "endpoints.churn.shadow[0].fraction: is required"),
    ("unknown top-level field", lambda d: d.update(version=2), "config: unknown field 'version'"),
    ("unknown endpoint field", lambda d: ep(d).update(weights=[1]),
     "endpoints.churn: unknown field 'weights'"),
    ("unknown variant field", lambda d: ep(d)["variants"][0].update(wieght=3),
     "endpoints.churn.variants[0]: unknown field 'wieght'"),
    ("unknown shadow field", lambda d: ep(d)["shadow"][0].update(weight=3),
     "endpoints.churn.shadow[0]: unknown field 'weight'"),
    ("unknown sticky field", lambda d: ep(d).update(sticky={"cookie": "u"}),
     "endpoints.churn.sticky: unknown field 'cookie'"),
    ("unknown log field", lambda d: ep(d)["log"].update(level="debug"),
     "endpoints.churn.log: unknown field 'level'"),
    ("two sticky sources", lambda d: ep(d).update(sticky={"header": "a", "query": "b"}),
     "endpoints.churn.sticky: must have exactly one"),
    ("empty sticky", lambda d: ep(d).update(sticky={}), "endpoints.churn.sticky: must have exactly one"),
    ("sticky body on a format field", lambda d: ep(d).update(sticky={"body": "rows"}),
     "endpoints.churn.sticky.body:"),
    ("sticky header with a space", lambda d: ep(d).update(sticky={"header": "x user"}),
     "endpoints.churn.sticky.header:"),
    ("salt empty", lambda d: ep(d).update(salt=""), "endpoints.churn.salt:"),
    ("salt not a string", lambda d: ep(d).update(salt=5), "endpoints.churn.salt:"),
    ("allow_override not bool", lambda d: ep(d).update(allow_override="yes"),
     "endpoints.churn.allow_override:"),
    ("log sample over one", lambda d: ep(d)["log"].update(sample=2), "endpoints.churn.log.sample:"),
    ("log features not bool", lambda d: ep(d)["log"].update(features=1), "endpoints.churn.log.features:"),
    ("bad endpoint name", lambda d: d["endpoints"].update({"a b": ep(d)}),
     "endpoints: 'a b' is not a valid endpoint name"),
    ("endpoints not an object", lambda d: d.update(endpoints=[]), "endpoints: must be an object"),
    ("endpoint not an object", lambda d: d["endpoints"].update(churn=[]),
     "endpoints.churn: must be an object"),
    ("too many variants",
     lambda d: ep(d).update(variants=[{"name": f"v{i}", "model": "m"} for i in range(17)]),
     "endpoints.churn.variants: 17 variants; the limit is 16"),
    ("too many shadows",
     lambda d: ep(d).update(shadow=[{"name": f"s{i}", "model": "m", "fraction": 1} for i in range(5)]),
     "endpoints.churn.shadow: 5 shadows"),
    ("too many endpoints",
     lambda d: d.update(endpoints={f"e{i}": {"variants": [{"name": "a", "model": "m"}]} for i in range(501)}),
     "endpoints: 501 endpoints; the limit is 500"),
    ("bad JSON", '{"endpoints": {"churn": }}', "config: not valid JSON"),
    ("not an object", "[1, 2]", "config: must be an object"),
    ("NaN weight", '{"endpoints": {"e": {"variants": [{"name": "a", "model": "m", "weight": NaN}]}}}',
     "config: not valid JSON: NaN"),
    ("duplicate key",
     '{"endpoints": {"e": {"variants": [{"name": "a", "model": "m", "weight": 1, "weight": 2}]}}}',
     "endpoints.e.variants[0]: field 'weight' is given more than once"),
    ("duplicate endpoint", '{"endpoints": {"e": {"variants": []}, "e": {"variants": []}}}',
     "endpoints: field 'e' is given more than once"),
    ("deeply nested", "[" * 100_000 + "]" * 100_000, "config:"),
    ("not UTF-8", b'{"endpoints": {"\xff": 1}}', "config: not valid JSON"),
    ("too large", json.dumps({"endpoints": {}, "pad": "x" * MAX_CONFIG_BYTES}), "config: the document is"),
]


@pytest.mark.parametrize("edit,path", [(e, p) for _, e, p in BAD], ids=[w for w, _, _ in BAD])
def test_each_fault_is_a_typed_error_naming_its_path(edit, path):
    document = edit if isinstance(edit, (str, bytes)) else changed(edit)
    with pytest.raises(InvalidRouterConfig) as err:
        parse_config(document)
    assert err.value.message.startswith(path), err.value.message
    assert err.value.code == "invalid_router_config"
    assert err.value.status == 500 and not err.value.permanent  # an operator fault, fixable live


def test_an_endpoint_name_with_a_dot_is_quoted_in_paths():
    doc = {"endpoints": {"churn.eu": {"variants": [{"name": "a", "model": "m", "weight": -1}]}}}
    with pytest.raises(InvalidRouterConfig) as err:
        parse_config(json.dumps(doc))
    assert err.value.message.startswith('endpoints["churn.eu"].variants[0].weight:')


def test_messages_never_echo_the_document():
    doc = copy.deepcopy(GOOD)
    ep(doc)["salt"] = "s3cret-marker"
    ep(doc)["variants"][1]["weight"] = "heavy"
    with pytest.raises(InvalidRouterConfig) as err:
        parse_config(json.dumps(doc))
    assert "s3cret-marker" not in err.value.message and "heavy" not in err.value.message


def test_an_endpoint_may_set_a_latency_budget_in_milliseconds():
    config = parse_config(changed(lambda d: ep(d).update(max_p99_ms=5)))
    assert config.endpoints["churn"].max_p99_ms == 5
    config = parse_config(changed(lambda d: ep(d).update(max_p99_ms=0.25)))
    assert config.endpoints["churn"].max_p99_ms == 0.25
    assert parse_config(json.dumps(GOOD)).endpoints["churn"].max_p99_ms is None  # no budget


@pytest.mark.parametrize("budget", [0, -1, "5", True, None, [5], {"ms": 5}, 10 ** 400])
def test_a_latency_budget_that_is_not_a_positive_number_is_named_by_its_path(budget):
    with pytest.raises(InvalidRouterConfig) as err:
        parse_config(changed(lambda d: ep(d).update(max_p99_ms=budget)))
    assert err.value.message.startswith(
        "endpoints.churn.max_p99_ms: must be a positive number of milliseconds"), err.value.message
