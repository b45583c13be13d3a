"""Functions (ASP.NET) route templates: prefix, literals, ``{name}``, ``{name:constraint}``,
optional ``{name?}``/``{name=default}`` and catch-all ``{*rest}``; matched case-insensitively,
the most specific template winning when several match."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")

_PARAM = re.compile(r"\{([^{}]*)\}")
# "{{" and "}}" are a literal brace (in a literal or in a constraint such as regex(\d{{3}})).
_OPEN, _CLOSE = "\x00", "\x01"


def _unescape(text: str) -> str:
    return text.replace(_OPEN, "{").replace(_CLOSE, "}")
_GUID = (r"(?:[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
         r"|\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}"
         r"|\([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\))")
_CONSTRAINTS = {"int": r"[+-]?\d+", "alpha": r"[a-z]+", "guid": _GUID}
# The host refuses function routes starting with these (its own endpoints live there).
RESERVED_ROUTE_PREFIXES = ("admin", "runtime")
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
    checks: tuple[Callable[[str], bool], ...] = ()


def _integer(low: int, high: int) -> Callable[[str], bool]:
    return lambda v: re.fullmatch(r"[+-]?[0-9]+", v) is not None and low <= int(v) <= high


def _is_file(v: str) -> bool:
    """ASP.NET's ``file``: the last path segment has a "." followed by something not a "."."""
    last = v.rsplit("/", 1)[-1]
    dot = last.find(".")
    return dot >= 0 and last[dot + 1:].strip(".") != ""


def _number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _date(v: str) -> bool:
    try:
        datetime.fromisoformat(v)
    except ValueError:
        return False
    return True


def _check(constraint: str, template: str) -> Callable[[str], bool]:
    """ASP.NET's inline route constraint ``constraint`` (``int``, ``min(5)``, ...) as a test of
    a value; an unknown one is an error when the app loads, as in the host."""
    name, paren, rest = constraint.partition("(")
    name = name.strip().lower()
    if paren and not rest.endswith(")"):
        raise RouteTemplateError(f"route {template!r}: bad constraint {constraint!r}")
    arg = rest[:-1]
    args = [a.strip() for a in arg.split(",")] if paren and name != "regex" else []
    try:
        if name in ("int", "long"):
            bits = 31 if name == "int" else 63
            return _integer(-2 ** bits, 2 ** bits - 1)
        simple = {"bool": lambda v: v.lower() in ("true", "false"),
                  "alpha": lambda v: re.fullmatch(r"[a-z]+", v, re.IGNORECASE) is not None,
                  "guid": lambda v: re.fullmatch(_GUID, v, re.IGNORECASE) is not None,
                  "double": _number, "float": _number, "decimal": _number, "datetime": _date,
                  "required": bool, "file": _is_file, "nonfile": lambda v: not _is_file(v)}
        if name in simple and not paren:
            return simple[name]
        if name == "regex" and paren:
            pattern = re.compile(arg, re.IGNORECASE)
            return lambda v: pattern.search(v) is not None
        if name in ("min", "max", "minlength", "maxlength") and len(args) == 1:
            n = int(args[0])
            return {"min": lambda v: _integer(-2 ** 63, 2 ** 63 - 1)(v) and int(v) >= n,
                    "max": lambda v: _integer(-2 ** 63, 2 ** 63 - 1)(v) and int(v) <= n,
                    "minlength": lambda v: len(v) >= n, "maxlength": lambda v: len(v) <= n}[name]
        if name in ("length", "range") and len(args) in (1, 2) and (name == "length" or len(args) == 2):
            low, high = int(args[0]), int(args[-1])
            if name == "length":
                return lambda v: low <= len(v) <= high
            return lambda v: _integer(-2 ** 63, 2 ** 63 - 1)(v) and low <= int(v) <= high
    except (ValueError, re.error):
        pass
    raise RouteTemplateError(f"route {template!r}: unknown or malformed constraint {constraint!r}")


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
        stripped = self.template.replace("{{", _OPEN).replace("}}", _CLOSE).strip("/")
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
                if not all(check(value) for check in param.checks):
                    return None  # the route's constraint refuses it: another route may match
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
            return re.escape(_unescape(segment)), _LITERAL, False
        pattern = ""
        parsed: list[_Param] = []
        for i, part in enumerate(parts):
            if i % 2 == 0:
                pattern += re.escape(_unescape(part))
                continue
            param = self._param(_unescape(part),
                                alone=len(params) == 1 and segment == "{" + part + "}")
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
        cut = _outside_parentheses(text, "=")  # an "=" inside regex(...) is the regex's
        if cut >= 0:
            text, default = text[:cut], text[cut + 1:]
        optional = text.endswith("?") or default is not None
        name, *constraints = _split_constraints(text.rstrip("?"))
        if not name:
            raise RouteTemplateError(f"route {self.template!r}: parameter without a name")
        checks = tuple(_check(c, self.template) for c in constraints)
        # int, alpha and guid also shape the pattern (a complex segment splits by them).
        known = [_CONSTRAINTS[c.lower()] for c in constraints if c.lower() in _CONSTRAINTS]
        if catch_all:
            pattern = ".*"
        elif known:
            pattern = f"(?:{known[0]})"
        else:
            # In a complex segment ("{a}-{b}") ASP.NET matches literals from the right: the
            # first parameters take as much as they can.
            pattern = "[^/]+"
        return _Param(name, pattern, optional, default, catch_all, bool(constraints), checks)


def _outside_parentheses(text: str, char: str) -> int:
    """The index of the first ``char`` of ``text`` not inside parentheses, or -1."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == char and depth == 0:
            return i
    return -1


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
        """Add a function's route; raises :class:`RouteTemplateError` where the host would
        refuse to load it: a route under its reserved ``admin``/``runtime`` prefixes, or the
        same route as another function's for a method both take."""
        if route.strip("/").lower().startswith(RESERVED_ROUTE_PREFIXES):
            raise RouteTemplateError(f"route {route!r}: routes may not start with 'admin' or "
                                     f"'runtime' (the host's own)")
        full = "/".join(p for p in (self.prefix, route.strip("/")) if p)
        allowed = frozenset(m.upper() for m in methods) if methods else None
        for other in self._routes:
            same = other.template.template.lower() == full.lower()
            if same and (other.methods is None or allowed is None or other.methods & allowed):
                raise RouteTemplateError(f"route {route!r} is also the route of another function "
                                         f"for the same method(s)")
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
