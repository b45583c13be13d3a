"""Chooses the model blob (and shadows) that score a request, from one config snapshot.

A :class:`Router` is immutable: a new config means a new router, swapped in whole by
:class:`~shared.router.holder.RouterHolder`, so a request sees one config from start to end.
"""

from __future__ import annotations

import random as _random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from shared.errors import InvalidPayload, OverrideNotAllowed, UnknownVariant
from shared.models.store import blob_candidates
from shared.router.assignment import EndpointPlan
from shared.router.config import DEFAULT_VARIANT, EndpointConfig, RouterConfig

OVERRIDE_HEADER = "x-scorefn-variant"
# Sticky keys whose routes a router remembers, over all its endpoints (~200 bytes each): a
# returning key skips ~3 us of hashing. Keys are callers' values, so the memo is bounded in
# count and keys longer than STICKY_MEMO_KEY_CHARS are never kept; past the count it starts over.
STICKY_MEMO_KEYS = 8192
STICKY_MEMO_KEY_CHARS = 128
# A longer sticky key is refused (400): outcomes join by keys of at most this length too, and
# a key is kept in the prediction log's buffer with each record.
MAX_STICKY_KEY_CHARS = 128


class ShadowTarget(NamedTuple):
    name: str
    model: str


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes.

    ``how`` says why: ``single`` (no config for the endpoint: the same-name model),
    ``only`` (one variant), ``sticky`` (from ``key``), ``weighted`` (random by weight)
    or ``override`` (pinned by the caller).
    """

    endpoint: str
    variant: str
    model: str
    shadows: tuple[ShadowTarget, ...]
    key: str | None
    how: str


class Router:
    """Routes requests by a validated :class:`RouterConfig`; ``None`` is single-model mode,
    where every endpoint name is served by the model of the same name (variant ``default``).
    Endpoints the config does not list are served that way too."""

    def __init__(self, config: RouterConfig | None = None, *,
                 rng: _random.Random | None = None) -> None:
        self.config = config
        self._random = (rng or _random).random
        self._plans = {name: EndpointPlan(ep) for name, ep in (config.endpoints.items() if config else ())}
        # (endpoint, sticky key) -> its route: a pure function of both and this config, so a
        # new config (a new router) starts afresh.
        self._sticky_routes: dict[tuple[str, str], Route] = {}

    def endpoint(self, endpoint: str) -> EndpointConfig | None:
        """The config of ``endpoint``, or ``None`` when it is served by its same-name model."""
        plan = self._plans.get(endpoint)
        return plan.config if plan is not None else None

    def sticky_body_field(self, endpoint: str) -> str | None:
        """The top-level body field holding ``endpoint``'s sticky key, if the key is in the body."""
        plan = self._plans.get(endpoint)
        return plan.config.sticky_body_field if plan is not None else None

    def route(self, endpoint: str, *, key: str | None = None, override: str | None = None) -> Route:
        """Choose the variant and shadows for one request to ``endpoint``.

        ``key`` is the sticky key (see :func:`sticky_key`); ``override`` the value of the
        ``x-scorefn-variant`` header. An empty key or override counts as none. Raises
        :class:`OverrideNotAllowed` (403) when the endpoint does not allow overrides,
        :class:`UnknownVariant` (400) for an override naming no variant, and
        :class:`~shared.errors.InvalidName` for an unconfigured endpoint whose name is
        not a valid model name.
        """
        plan = self._plans.get(endpoint)
        if plan is None:
            return self._single(endpoint, key, override)
        memo_key = (endpoint, key) if key and not override and \
            len(key) <= STICKY_MEMO_KEY_CHARS else None
        if memo_key is not None:
            route = self._sticky_routes.get(memo_key)
            if route is not None:
                return route
        hashed = bool(plan.config.shadow) or (len(plan.variants) > 1 and not override)
        state = plan.keyed(key) if key and hashed else None
        if override:
            i = self._pinned(plan, override)
            how = "override"
        elif len(plan.variants) == 1:
            i, how = 0, "only"
        elif state is not None:
            i, how = plan.sticky_index(state), "sticky"
        else:
            i, how = plan.random_index(self._random), "weighted"
        variant = plan.variants[i]
        shadows: tuple[ShadowTarget, ...] = ()
        if plan.config.shadow:
            shadows = tuple(ShadowTarget(plan.config.shadow[j].name, plan.config.shadow[j].model)
                            for j in plan.shadow_indexes(state, self._random))
        route = Route(endpoint, variant.name, variant.model, shadows, key or None, how)
        if memo_key is not None and state is not None:  # a pure function of the key: keep it
            if len(self._sticky_routes) >= STICKY_MEMO_KEYS:
                self._sticky_routes.clear()
            self._sticky_routes[memo_key] = route
        return route

    def describe(self) -> dict[str, Any]:
        """The routing table, for ``GET /api/endpoints``. Salts are left out."""
        endpoints = []
        for name, plan in self._plans.items():
            ep = plan.config
            sticky = {ep.sticky.source: ep.sticky.name} if ep.sticky else None
            endpoints.append({
                "name": name,
                "variants": [{"name": v.name, "model": v.model, "weight": v.weight,
                              "share": round(v.weight / plan.total, 6)} for v in ep.variants],
                "shadow": [{"name": s.name, "model": s.model, "fraction": s.fraction} for s in ep.shadow],
                "sticky": sticky,
                "allow_override": ep.allow_override,
                "log": {"sample": ep.log.sample, "features": ep.log.features} if ep.log else None,
                "max_p99_ms": ep.max_p99_ms,
            })
        return {"mode": "configured" if self.config is not None else "single-model",
                "endpoints": endpoints,
                "unlisted_endpoints": f"served by the model of the same name (variant {DEFAULT_VARIANT!r})"}

    def _single(self, endpoint: str, key: str | None, override: str | None) -> Route:
        blob_candidates(endpoint)  # raises InvalidName for a name that is no model name
        if override:
            raise OverrideNotAllowed(f"endpoint {endpoint[:64]!r} does not allow choosing a variant "
                                     f"with {OVERRIDE_HEADER}")
        return Route(endpoint, DEFAULT_VARIANT, endpoint, (), key or None, "single")

    @staticmethod
    def _pinned(plan: EndpointPlan, override: str) -> int:
        if not plan.config.allow_override:
            raise OverrideNotAllowed(f"endpoint {plan.config.name!r} does not allow choosing a variant "
                                     f"with {OVERRIDE_HEADER}")
        i = plan.by_name.get(override)
        if i is None:
            raise UnknownVariant(f"endpoint {plan.config.name!r} has no variant {override[:64]!r} "
                                 f"(variants: {', '.join(plan.by_name)})")
        return i


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, whatever the case of its name in ``headers``; ``name`` is lower-case."""
    value = headers.get(name)
    if value is not None or not isinstance(headers, dict):
        # Header mappings of the transports (func.HttpRequest's) match names case-insensitively
        # already; only a plain dict needs the walk (each request without the header paid it).
        return value
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def sticky_key(config: EndpointConfig | None, headers: Mapping[str, str] | None = None,
               query: Mapping[str, str] | None = None,
               body_fields: Mapping[str, Any] | None = None) -> str | None:
    """The sticky key of a request for an endpoint configured as ``config``, or ``None``.

    Headers are matched case-insensitively; query parameters and body fields exactly. A
    body value may be a string or an integer (``42`` and ``"42"`` are the same key); a
    missing, ``null`` or empty value means no key (the request is routed at random by
    weight). Any other body value, or a key over :data:`MAX_STICKY_KEY_CHARS` characters,
    raises :class:`InvalidPayload` (``invalid_sticky_key``).
    """
    if config is None or config.sticky is None:
        return None
    source, name = config.sticky.source, config.sticky.name
    if source == "header":
        value: Any = header(headers or {}, name)
    elif source == "query":
        value = (query or {}).get(name)
    else:
        value = (body_fields or {}).get(name)
    if value is None or value == "":
        return None
    if type(value) is int:
        value = str(value)
    elif not isinstance(value, str):
        raise InvalidPayload(f"sticky key {source} {name!r} must be a string or an integer",
                             code="invalid_sticky_key")
    if len(value) > MAX_STICKY_KEY_CHARS:
        raise InvalidPayload(f"sticky key {source} {name!r} is longer than "
                             f"{MAX_STICKY_KEY_CHARS} characters", code="invalid_sticky_key")
    return value
