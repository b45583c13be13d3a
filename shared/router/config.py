"""The router configuration: its schema, validated in one place.

Every fault raises :class:`~shared.errors.InvalidRouterConfig` whose message starts with
the path of the bad field (``endpoints.churn.variants[1].weight: must be a positive
number``). Messages quote at most a short name, never the document.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from shared.router.fields import NAME_RE, JsonConstant, JsonObject, endpoint_path, no_constant
from shared.router.fields import fail as _fail
from shared.router.fields import is_number as _is_number
from shared.router.fields import items as _list
from shared.router.fields import model_field as _model
from shared.router.fields import name_field as _name
from shared.router.fields import obj as _object
from shared.router.fields import unique as _unique

if TYPE_CHECKING:
    from shared.rollout.config import Rollout

MAX_CONFIG_BYTES = 256 * 1024
MAX_ENDPOINTS = 500
MAX_VARIANTS = 16
MAX_SHADOWS = 4
MAX_SALT_CHARS = 128

_HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")  # an HTTP token
_FIELD_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
# Body fields the request formats themselves use: a sticky key cannot be one of them.
RESERVED_BODY_FIELDS = frozenset({"rows", "records", "options", "inputs", "outputs", "parameters"})

DEFAULT_VARIANT = "default"


@dataclass(frozen=True)
class Variant:
    """One model an endpoint's traffic is split over; ``weight`` is relative."""

    name: str
    model: str
    weight: float = 1  # an int or a float, as given


@dataclass(frozen=True)
class Shadow:
    """A model that also scores a ``fraction`` of requests, off the request path."""

    name: str
    model: str
    fraction: float


@dataclass(frozen=True)
class Sticky:
    """Where a request's sticky key is read: a header, a query parameter or a body field."""

    source: Literal["header", "query", "body"]
    name: str  # header names are kept lower-case


@dataclass(frozen=True)
class LogConfig:
    """The prediction log of an endpoint: which share of requests, and whether with features."""

    sample: float = 1.0
    features: bool = False


@dataclass(frozen=True)
class EndpointConfig:
    """How one endpoint is routed."""

    name: str
    variants: tuple[Variant, ...]
    salt: str
    sticky: Sticky | None = None
    allow_override: bool = False
    shadow: tuple[Shadow, ...] = ()
    log: LogConfig | None = None
    # The latency budget: the most single-row p99 (milliseconds) the variants' models may have
    # in the pre-deployment figures stored with their blobs (shared/models/latency_figures.py).
    # Checked by `python -m scorefn router set`; the app itself does not act on it.
    max_p99_ms: float | None = None
    # A progressive rollout of one variant against another (shared/rollout/): the controller
    # moves the two variants' weights; routing itself reads only the weights.
    rollout: Rollout | None = None

    @property
    def sticky_body_field(self) -> str | None:
        """The top-level body field holding the sticky key, which the payload parser must allow."""
        return self.sticky.name if self.sticky is not None and self.sticky.source == "body" else None

    def models(self) -> list[str]:
        """Every model this endpoint may score with, variants first, without repeats."""
        return list(dict.fromkeys([v.model for v in self.variants] + [s.model for s in self.shadow]))


@dataclass(frozen=True)
class RouterConfig:
    """A validated configuration: endpoints by name."""

    endpoints: Mapping[str, EndpointConfig]

    def models(self) -> list[str]:
        """Every model any endpoint may score with (what ``check_models`` should verify)."""
        return list(dict.fromkeys(m for ep in self.endpoints.values() for m in ep.models()))


def parse_config(document: str | bytes) -> RouterConfig:
    """Parse and validate a JSON router configuration."""
    raw = document.encode("utf-8") if isinstance(document, str) else document
    if len(raw) > MAX_CONFIG_BYTES:
        _fail("config", f"the document is {len(raw)} bytes; the limit is {MAX_CONFIG_BYTES}")
    try:
        doc = json.loads(raw, object_pairs_hook=JsonObject, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        _fail("config", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except UnicodeDecodeError:
        _fail("config", "not valid JSON: the document is not UTF-8")
    except JsonConstant as exc:
        _fail("config", f"not valid JSON: {exc.args[0]} is not a number JSON allows")
    except RecursionError:
        _fail("config", "not valid JSON: nested too deeply")
    return validate_config(doc)


def validate_config(doc: Any) -> RouterConfig:
    """Validate an already-decoded configuration document."""
    top = _object(doc, "config", required={"endpoints"}, optional=set())
    endpoints = _object(top["endpoints"], "endpoints")
    if len(endpoints) > MAX_ENDPOINTS:
        _fail("endpoints", f"{len(endpoints)} endpoints; the limit is {MAX_ENDPOINTS}")
    parsed: dict[str, EndpointConfig] = {}
    for name, value in endpoints.items():
        if not NAME_RE.match(name):
            _fail("endpoints", f"{name[:64]!r} is not a valid endpoint name: use up to 64 letters, "
                               f"digits, '.', '_', '-', starting with a letter or digit")
        parsed[name] = _endpoint(name, value, endpoint_path(name))
    return RouterConfig(endpoints=parsed)


def _endpoint(name: str, value: Any, path: str) -> EndpointConfig:
    obj = _object(value, path, required={"variants"},
                  optional={"sticky", "salt", "allow_override", "shadow", "log", "max_p99_ms",
                            "rollout"})
    variants = tuple(_list(obj["variants"], f"{path}.variants", _variant, MAX_VARIANTS, "variants"))
    if not variants:
        _fail(f"{path}.variants", "must list at least one variant")
    _unique([v.name for v in variants], f"{path}.variants", "variant")
    total = sum(float(v.weight) for v in variants)
    if not math.isfinite(total):  # else every share reads 0
        _fail(f"{path}.variants", "the weights add up to more than a number can hold; use smaller weights")
    if total <= 0:
        _fail(f"{path}.variants", "at least one variant must have a weight above 0")
    shadows = tuple(_list(obj.get("shadow", []), f"{path}.shadow", _shadow, MAX_SHADOWS, "shadows"))
    _unique([s.name for s in shadows], f"{path}.shadow", "shadow")
    variant_names = {v.name for v in variants}
    for i, s in enumerate(shadows):
        if s.name in variant_names:
            _fail(f"{path}.shadow[{i}].name", f"{s.name!r} is also a variant name; use another name")
    salt = obj.get("salt", name)
    if not isinstance(salt, str) or not 1 <= len(salt) <= MAX_SALT_CHARS:
        _fail(f"{path}.salt", f"must be a string of 1 to {MAX_SALT_CHARS} characters")
    allow = obj.get("allow_override", False)
    if not isinstance(allow, bool):
        _fail(f"{path}.allow_override", "must be true or false")
    sticky = _sticky(obj["sticky"], f"{path}.sticky") if "sticky" in obj else None
    log = _log(obj["log"], f"{path}.log") if "log" in obj else None
    max_p99_ms = obj.get("max_p99_ms")
    if "max_p99_ms" in obj and (not _is_number(max_p99_ms) or not max_p99_ms > 0):
        _fail(f"{path}.max_p99_ms", "must be a positive number of milliseconds")
    rollout = None
    if "rollout" in obj:
        from shared.rollout.config import parse_rollout

        rollout = parse_rollout(obj["rollout"], f"{path}.rollout", variants)
    return EndpointConfig(name=name, variants=variants, salt=salt, sticky=sticky,
                          allow_override=allow, shadow=shadows, log=log, max_p99_ms=max_p99_ms,
                          rollout=rollout)


def _variant(value: Any, path: str) -> Variant:
    obj = _object(value, path, required={"name", "model"}, optional={"weight"})
    weight = obj.get("weight", 1)
    if not _is_number(weight) or not weight >= 0:
        _fail(f"{path}.weight", "must be a number of at least 0")
    return Variant(name=_name(obj["name"], f"{path}.name"), model=_model(obj["model"], f"{path}.model"),
                   weight=weight)


def _shadow(value: Any, path: str) -> Shadow:
    obj = _object(value, path, required={"name", "model", "fraction"}, optional=set())
    fraction = obj["fraction"]
    if not _is_number(fraction) or not 0 < fraction <= 1:
        _fail(f"{path}.fraction", "must be a number greater than 0 and at most 1")
    return Shadow(name=_name(obj["name"], f"{path}.name"), model=_model(obj["model"], f"{path}.model"),
                  fraction=fraction)


def _sticky(value: Any, path: str) -> Sticky:
    obj = _object(value, path, required=set(), optional={"header", "query", "body"})
    if len(obj) != 1:
        _fail(path, "must have exactly one of 'header', 'query' or 'body'")
    source, name = next(iter(obj.items()))
    pattern = _HEADER_RE if source == "header" else _FIELD_RE
    if not isinstance(name, str) or not pattern.match(name):
        _fail(f"{path}.{source}", f"must be a {'header' if source == 'header' else 'field'} name "
                                  f"(letters, digits, '.', '_', '-')")
    if source == "body" and name in RESERVED_BODY_FIELDS:
        _fail(f"{path}.body", f"{name!r} is a field of the request formats; use another field")
    # One of the optional fields _object allowed.
    where = cast(Literal["header", "query", "body"], source)
    return Sticky(source=where, name=name.lower() if source == "header" else name)


def _log(value: Any, path: str) -> LogConfig:
    obj = _object(value, path, required=set(), optional={"sample", "features"})
    sample = obj.get("sample", 1.0)
    if not _is_number(sample) or not 0 <= sample <= 1:
        _fail(f"{path}.sample", "must be a number from 0 to 1")
    features = obj.get("features", False)
    if not isinstance(features, bool):
        _fail(f"{path}.features", "must be true or false")
    return LogConfig(sample=sample, features=features)
