"""Checks of JSON fields for configuration schemas (the router config and its rollout blocks):
each fault raises :class:`~shared.errors.InvalidRouterConfig` whose message starts with the
path of the bad field."""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn, TypeGuard

from shared.errors import InvalidName, InvalidRouterConfig
from shared.models.store import blob_candidates

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")

class JsonObject(dict):
    """A decoded JSON object that remembers keys given more than once."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.duplicates = [k for k, n in _counts(pairs).items() if n > 1] if len(self) < len(pairs) else []


def _counts(pairs: list[tuple[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key, _ in pairs:
        counts[key] = counts.get(key, 0) + 1
    return counts


class JsonConstant(Exception):
    pass


def no_constant(name: str) -> Any:
    raise JsonConstant(name)


def fail(path: str, problem: str) -> NoReturn:
    raise InvalidRouterConfig(f"{path}: {problem}")


def endpoint_path(name: str) -> str:
    """The path of an endpoint in messages: ``endpoints.churn``, ``endpoints["churn.eu"]``."""
    return f"endpoints.{name}" if _PLAIN_KEY_RE.match(name) else f"endpoints[{json.dumps(name)}]"


def obj(value: Any, path: str, *, required: set[str] | None = None,
            optional: set[str] | None = None) -> dict[str, Any]:
    """``value`` as an object; with ``required``/``optional``, no other field is allowed."""
    if not isinstance(value, dict):
        fail(path, "must be an object")
    duplicates = getattr(value, "duplicates", [])
    if duplicates:
        fail(path, f"field {duplicates[0][:64]!r} is given more than once")
    if required is None or optional is None:
        return value
    allowed = required | optional
    unknown = [key for key in value if key not in allowed]
    if unknown:
        fail(path, f"unknown field {unknown[0][:64]!r} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - value.keys())
    if missing:
        fail(f"{path}.{missing[0]}", "is required")
    return value


def items(value: Any, path: str, item, limit: int, what: str) -> list:
    if not isinstance(value, list):
        fail(path, "must be a list")
    if len(value) > limit:
        fail(path, f"{len(value)} {what}; the limit is {limit}")
    return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]


def unique(names: list[str], path: str, what: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            fail(f"{path}[{i}].name", f"{what} name {name!r} is used more than once")
        seen.add(name)


def name_field(value: Any, path: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        fail(path, "must be a name of up to 64 letters, digits, '.', '_', '-', "
                    "starting with a letter or digit")
    return value


def model_field(value: Any, path: str) -> str:
    if not isinstance(value, str):
        fail(path, "must be a model name (a string)")
    try:
        blob_candidates(value)
    except InvalidName as exc:
        fail(path, exc.message)
    return value


def is_number(value: Any) -> TypeGuard[int | float]:
    """An int or float (never a bool) that is finite as a float."""
    if type(value) not in (int, float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False
