"""Functions (ASP.NET) route templates: prefix, literals, ``{name}``, ``{name:constraint}``,
optional ``{name?}``/``{name=default}`` and catch-all ``{*rest}``/``{**rest}``; matched
case-insensitively against the path as the host decodes it (:func:`request_path`), the most
specific template winning when several match."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

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
        simple: dict[str, Callable[[str], bool]] = {
            "bool": lambda v: v.lower() in ("true", "false"),
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


@dataclass(frozen=True)
class _Segment:
    """One segment of a template: ``regex`` matches a whole request segment (its groups are
    ``params``); ``alone`` is the parameter of a segment that is nothing else."""

    regex: re.Pattern[str]
    params: tuple[tuple[str, _Param], ...]
    rank: int
    alone: _Param | None


@dataclass
class RouteTemplate:
    """One compiled template; ``match`` returns route parameters or ``None``.

    Matching follows ASP.NET Core's ``RoutePatternMatcher`` (the Functions host's routing):
    the path is split at "/" (the leading one skipped, a trailing one ending the path), each
    segment matched case-insensitively; an empty segment ("//") never matches, a catch-all
    included; a catch-all (``{*rest}`` or ``{**rest}``, last segment only) takes the rest of
    the path as it is, "/" and a trailing "/" included, and may be empty (no value, or its
    default).
    """

    template: str
    precedence: tuple[int, ...] = field(init=False)
    _segments: tuple[_Segment, ...] = field(init=False)

    def __post_init__(self) -> None:
        self._names: set[str] = set()
        stripped = self.template.replace("{{", _OPEN).replace("}}", _CLOSE).strip("/")
        parts = stripped.split("/") if stripped else []
        if "" in parts:
            raise RouteTemplateError(f"route {self.template!r}: consecutive '/' (an empty segment)")
        self._segments = tuple(self._segment(part, last=i == len(parts) - 1)
                               for i, part in enumerate(parts))
        self.precedence = tuple(s.rank for s in self._segments)

    def match(self, path: str) -> dict[str, str] | None:
        values: dict[str, str] = {}
        segments = self._segments
        i = 0
        for start, end in _tokens(path):
            if start == end or i == len(segments):
                return None  # "//", or more segments than the template has
            segment = segments[i]
            if segment.alone is not None and segment.alone.catch_all:
                return self._rest(values, i, path[start:])
            found = segment.regex.fullmatch(path, start, end)
            if found is None:
                return None
            for group, param in segment.params:
                value = found.group(group)
                if value:
                    if not all(check(value) for check in param.checks):
                        return None  # the route's constraint refuses it: another route may match
                    values[param.name] = value
                elif param.default is not None:
                    values[param.name] = param.default
            i += 1
        return self._rest(values, i, None)

    def _rest(self, values: dict[str, str], i: int, rest: str | None) -> dict[str, str] | None:
        """The template's segments from ``i`` on, once the path has no more segments (or,
        ``rest``, what a catch-all at ``i`` takes): each must be a parameter that may be
        absent, a default filling in."""
        for segment in self._segments[i:]:
            param = segment.alone
            if param is None or not (param.optional or param.catch_all):
                return None
            if rest:
                if not all(check(rest) for check in param.checks):
                    return None
                values[param.name] = rest
            elif param.default is not None:
                values[param.name] = param.default
            rest = None
        return values

    def _segment(self, segment: str, *, last: bool) -> _Segment:
        parts = _PARAM.split(segment)  # literal, param, literal, param, ..., literal
        texts = parts[1::2]
        if not texts:
            if "{" in segment or "}" in segment:
                raise RouteTemplateError(f"route {self.template!r}: bad segment {segment!r}")
            return _Segment(re.compile(re.escape(_unescape(segment)), _FLAGS), (), _LITERAL, None)
        alone = len(texts) == 1 and not parts[0] and not parts[-1]
        pattern = ""
        params: list[tuple[str, _Param]] = []
        for i, part in enumerate(parts):
            if i % 2 == 0:
                pattern += re.escape(_unescape(part))
                continue
            param = self._param(_unescape(part))
            if param.catch_all and not alone:
                raise RouteTemplateError(f"route {self.template!r}: a catch-all parameter must be "
                                         f"a segment of its own, not part of {segment!r}")
            if param.catch_all and not last:
                raise RouteTemplateError(f"route {self.template!r}: a catch-all parameter must be "
                                         f"the last segment")
            group = f"p{len(self._names)}"
            params.append((group, param))
            pattern += f"(?P<{group}>{param.pattern})"
        regex = re.compile(pattern, _FLAGS)
        if not alone:
            return _Segment(regex, tuple(params), _COMPLEX, None)
        param = params[0][1]
        if param.optional and not last:
            raise RouteTemplateError(
                f"route {self.template!r}: only the last segment can be optional")
        rank = _CATCH_ALL if param.catch_all else _CONSTRAINED if param.constrained else _PLAIN
        return _Segment(regex, tuple(params), rank, param)

    def _param(self, text: str) -> _Param:
        stars = len(text) - len(text.lstrip("*"))
        if stars > 2:
            raise RouteTemplateError(f"route {self.template!r}: bad parameter {{{text}}}")
        catch_all = stars > 0  # "**" only changes how ASP.NET generates URLs, not matching
        text = text[stars:]
        default = None
        cut = _outside_parentheses(text, "=")  # an "=" inside regex(...) is the regex's
        if cut >= 0:
            text, default = text[:cut], text[cut + 1:]
        optional = text.endswith("?") or default is not None
        if catch_all and text.endswith("?"):
            raise RouteTemplateError(f"route {self.template!r}: a catch-all parameter cannot be "
                                     f"optional (it may already be empty)")
        name, *constraints = _split_constraints(text.rstrip("?"))
        if not name or any(c in name for c in "/{}?*"):
            raise RouteTemplateError(f"route {self.template!r}: parameter without a valid name")
        if name.lower() in self._names:
            raise RouteTemplateError(f"route {self.template!r}: parameter {name!r} twice")
        self._names.add(name.lower())
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


_FLAGS = re.IGNORECASE | re.DOTALL


def _tokens(path: str) -> Iterator[tuple[int, int]]:
    """ASP.NET's ``PathTokenizer``: the (start, end) of each segment of ``path``, the leading
    "/" skipped; a trailing "/" ends the path (no empty last segment), "//" is an empty one."""
    index, n = 1, len(path)
    while index < n:
        slash = path.find("/", index)
        if slash < 0:
            yield index, n
            return
        yield index, slash
        index = slash + 1


class BadRequestPath(ValueError):
    """A request path the host refuses before routing (Kestrel answers 400)."""


def request_path(raw: bytes) -> str:
    """The path routes are matched against, as the Functions host (ASP.NET Core on Kestrel)
    makes it from the raw request target (``/api/score/churn%2Fv2``, no query):

    - percent-escapes are decoded once, each run of them as a UTF-8 sequence; a run that is
      not valid UTF-8 (a stray byte, an overlong form, a surrogate) stays as written;
    - ``%2F`` (either case) is never decoded: an escaped "/" stays the three characters
      ``%2F`` and so never splits a segment (ASP.NET: "%2F can only be unescaped once the
      path is split into segments", which routing does not do);
    - then "." and ".." segments are removed (RFC 3986, section 5.2.4), escaped dots too;
    - ``%00`` is refused (:class:`BadRequestPath`: Kestrel's 400).
    """
    if not raw.startswith(b"/"):
        raise BadRequestPath("the request target is not an absolute path")
    decoded = _percent_decode(raw)
    return _remove_dot_segments(decoded.decode("utf-8", "replace"))


_HEX = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}


def _escaped_byte(raw: bytes, i: int) -> int | None:
    """The byte an escape ``%XX`` at ``raw[i]`` stands for; None where there is none, and
    for ``%2F`` (Kestrel never decodes it)."""
    if i + 3 > len(raw) or raw[i] != 0x25:
        return None
    high, low = _HEX.get(raw[i + 1]), _HEX.get(raw[i + 2])
    if high is None or low is None:
        return None
    value = high * 16 + low
    return None if value == 0x2F else value


def _percent_decode(raw: bytes) -> bytes:
    """Kestrel's ``UrlDecoder.DecodeRequestLine`` for a path (not form encoding)."""
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        first = _escaped_byte(raw, i)
        if first is None:
            out.append(raw[i])
            i += 1
            continue
        if first == 0:
            raise BadRequestPath("the path contains a null character (%00)")
        if first < 0x80:
            out.append(first)
            i += 3
            continue
        if first & 0xE0 == 0xC0:
            bits, count, least = first & 0x1F, 2, 0x80
        elif first & 0xF0 == 0xE0:
            bits, count, least = first & 0x0F, 3, 0x800
        elif first & 0xF8 == 0xF0:
            bits, count, least = first & 0x07, 4, 0x10000
        else:  # not a lead byte
            bits, count, least = 0, 0, 0
        j = i + 3  # after the escapes read so far
        sequence = bytearray((first,))  # the bytes they stand for
        ok = count > 0
        remaining = count - 1
        while ok and remaining > 0:
            nxt = _escaped_byte(raw, j)
            if nxt is None or nxt & 0xC0 != 0x80:
                ok = False
                break
            bits = (bits << 6) | (nxt & 0x3F)
            sequence.append(nxt)
            remaining -= 1
            if (remaining == 1 and 0x360 <= bits <= 0x37F) or (remaining == 2 and bits >= 0x110):
                ok = False  # a UTF-16 surrogate (U+D800-U+DFFF), or beyond U+10FFFF
                break
            j += 3
        if ok and bits >= least:
            out += sequence
        else:  # not UTF-8 (or an overlong form): the escapes read so far stay as written
            out += raw[i:j]
        i = j
    return bytes(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986's ``remove_dot_segments`` for an absolute path (Kestrel's PathNormalizer)."""
    if "." not in path:
        return path
    segments = path.split("/")[1:]
    out: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
            continue
        if last:
            out.append("")  # "/a/.." is "/a/", not "/a"
    return "/" + "/".join(out)


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
