"""Functions (ASP.NET) route templates: prefix, literals, ``{name}``, ``{name:constraint}``,
optional ``{name?}``/``{name=default}`` and catch-all ``{*rest}``; matched case-insensitively,
the most specific template winning when several match."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Generic, Iterable, TypeVar

T = TypeVar("T")

_PARAM = re.compile(r"\{([^{}]*)\}")
_GUID = (r"(?:[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
         r"|\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}"
         r"|\([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\))")
_CONSTRAINTS = {"int": r"[+-]?\d+", "alpha": r"[a-z]+", "guid": _GUID}
# ASP.NET inbound precedence per segment: lower is more specific.
_LITERAL, _COMPLEX, _CONSTRAINED, _PLAIN, _CATCH_ALL = 1, 2, 3, 4, 5


class RouteTemplateError(ValueError):
    """A route template that cannot be parsed."""


@dataclass(frozen=True)
class _Param:
    name: str
    pattern: str
    optional: bool
    default: str | None
    catch_all: bool
    constrained: bool


@dataclass
class RouteTemplate:
    """One compiled template; ``match`` returns route parameters or ``None``."""

    template: str
    regex: re.Pattern[str] = field(init=False)
    precedence: tuple[int, ...] = field(init=False)
    _params: dict[str, _Param] = field(init=False)

    def __post_init__(self) -> None:
        self._params = {}
        pieces: list[str] = []
        ranks: list[int] = []
        stripped = self.template.strip("/")
        segments = stripped.split("/") if stripped else []
        for index, segment in enumerate(segments):
            sep = "/" if index else ""
            pattern, rank, optional = self._segment(segment, last=index == len(segments) - 1)
            pieces.append(f"(?:{sep}{pattern})?" if optional else f"{sep}{pattern}")
            ranks.append(rank)
        self.regex = re.compile("^" + "".join(pieces) + "$", re.IGNORECASE | re.DOTALL)
        self.precedence = tuple(ranks)

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.match(path.strip("/"))
        if found is None:
            return None
        values: dict[str, str] = {}
        for group, param in self._params.items():
            value = found.group(group)
            if value:
                values[param.name] = value
            elif param.default is not None:
                values[param.name] = param.default
        return values

    def _segment(self, segment: str, *, last: bool) -> tuple[str, int, bool]:
        parts = _PARAM.split(segment)  # literal, param, literal, param, ..., literal
        params = parts[1::2]
        if not params:
            if "{" in segment or "}" in segment:
                raise RouteTemplateError(f"route {self.template!r}: bad segment {segment!r}")
            return re.escape(segment), _LITERAL, False
        pattern = ""
        parsed: list[_Param] = []
        for i, part in enumerate(parts):
            if i % 2 == 0:
                pattern += re.escape(part)
                continue
            param = self._param(part, alone=len(params) == 1 and segment == "{" + part + "}")
            if param.catch_all and not last:
                raise RouteTemplateError(f"route {self.template!r}: catch-all must be last")
            group = f"p{len(self._params)}"
            self._params[group] = param
            parsed.append(param)
            pattern += f"(?P<{group}>{param.pattern})"
        if len(params) > 1 or parts[0] or parts[-1]:
            return pattern, _COMPLEX, False
        param = parsed[0]
        if param.optional and not last:
            raise RouteTemplateError(
                f"route {self.template!r}: only the last segment can be optional")
        rank = _CATCH_ALL if param.catch_all else _CONSTRAINED if param.constrained else _PLAIN
        return pattern, rank, param.optional or param.catch_all

    def _param(self, text: str, *, alone: bool) -> _Param:
        catch_all = text.startswith("*")
        text = text.lstrip("*")
        default = None
        if "=" in text:
            text, default = text.split("=", 1)
        optional = text.endswith("?") or default is not None
        name, *constraints = _split_constraints(text.rstrip("?"))
        if not name:
            raise RouteTemplateError(f"route {self.template!r}: parameter without a name")
        # Only int, alpha and guid are checked; other constraints accept any value.
        known = [_CONSTRAINTS[c.lower()] for c in constraints if c.lower() in _CONSTRAINTS]
        if catch_all:
            pattern = ".*"
        elif known:
            pattern = f"(?:{known[0]})"
        else:
            pattern = "[^/]+" if alone else "[^/]+?"
        return _Param(name, pattern, optional, default, catch_all, bool(constraints))


def _split_constraints(text: str) -> list[str]:
    """``name:c1:c2(arg:with:colons)`` -> ``[name, c1, c2(...)]``."""
    items, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == ":" and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    return [i.strip() for i in items]


@dataclass
class Route(Generic[T]):
    template: RouteTemplate
    methods: frozenset[str] | None
    target: T


class RouteTable(Generic[T]):
    """Routes under one prefix; ``match`` picks the most specific template whose methods allow
    the request (ties go to the route registered first)."""

    def __init__(self, prefix: str = "api") -> None:
        self.prefix = prefix.strip("/")
        self._routes: list[Route[T]] = []

    def add(self, route: str, methods: Iterable[str] | None, target: T) -> None:
        full = "/".join(p for p in (self.prefix, route.strip("/")) if p)
        allowed = frozenset(m.upper() for m in methods) if methods else None
        self._routes.append(Route(RouteTemplate(full), allowed, target))
        self._routes.sort(key=lambda r: r.template.precedence)  # stable: keeps registration order

    def match(self, method: str, path: str) -> tuple[T, dict[str, str]] | None:
        method = method.upper()
        for route in self._routes:
            if route.methods is not None and method not in route.methods:
                continue
            params = route.template.match(path)
            if params is not None:
                return route.target, params
        return None
