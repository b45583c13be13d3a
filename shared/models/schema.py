"""A model's features as its training code knew them: names, and categories by value.

LightGBM's text model carries what ``Booster.predict(DataFrame)`` needs to read a
DataFrame the way training did, and this module reads it so that requests can use the
same names and values:

- **Names.** LightGBM stores a column ``mean radius`` as ``mean_radius`` (its C++
  ``Dataset::set_feature_names`` replaces every space with ``_``; characters JSON gives a
  meaning to are refused at training). A sent name resolves to a feature when it is the
  stored name, or becomes it under that same rule.
- **Categories.** A model trained from a DataFrame with ``category`` columns ends with
  ``pandas_categorical:[[...], ...]``: each category column's categories in code order.
  ``Booster.predict(DataFrame)`` maps a value to its position in that list; a value not in
  it, or a missing one, becomes NaN (missing). The lists belong, in order, to the features
  named by the ``[categorical_feature: i,j]`` parameter. When the two do not pair up
  (ordered categoricals, or a ``categorical_feature`` list other than the DataFrame's
  category columns) the file does not say which feature a list belongs to, and values are
  refused (:class:`CategoryMapping` ``unknown``): codes still work, as they always did.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

from shared.errors import InvalidModel, InvalidPayload

CategoryKind = Literal["str", "int", "float", "bool"]
CategoryMapping = Literal["none", "mapped", "unknown"]
# The most categories one feature may declare: a model's category list is read into a dict.
MAX_CATEGORIES = 1_000_000


def lightgbm_name(name: str) -> str:
    """The name LightGBM stores for a column called ``name`` at training."""
    return name.replace(" ", "_")


@dataclass(frozen=True)
class Categories:
    """One categorical feature's categories, in code order (code ``i`` is ``values[i]``)."""

    index: int
    name: str
    values: tuple[Any, ...]
    kind: CategoryKind
    lookup: dict[Any, int] = field(compare=False, repr=False, hash=False)

    @classmethod
    def build(cls, index: int, name: str, values: Sequence[Any]) -> Categories:
        kinds = {_kind_of(v) for v in values}
        if len(kinds) > 1 and kinds <= {"int", "float"}:
            kinds = {"float"}
        kind = next(iter(kinds), None)
        if len(kinds) != 1 or kind is None:
            raise InvalidModel(f"feature {name!r}: its pandas categories mix types or hold "
                               f"values JSON cannot carry ({sorted(map(str, kinds))})")
        lookup: dict[Any, int] = {}
        for code, value in enumerate(values):
            lookup.setdefault(value, code)
        return cls(index, name, tuple(values), kind, lookup)

    def code_of(self, value: Any) -> float:
        """The code of a category value sent as JSON; NaN for null or an unseen value.
        A value of another type than the categories' is an error, never a guess."""
        if value is None:
            return math.nan
        kind = _kind_of(value)
        if kind != self.kind and not (kind in _NUMBERS and self.kind in _NUMBERS):
            raise InvalidPayload(
                f"feature {self.name!r} takes category values of type {self.kind} "
                f"(one of {_preview(self.values)}); got {_describe(value)}",
                code="invalid_category_value")
        # A number that is no category (1.5 among integer categories) is unseen, as in pandas.
        code = self.lookup.get(value)
        return math.nan if code is None else float(code)

    def codes_of(self, values: Iterable[Any]) -> np.ndarray:
        return np.fromiter((self.code_of(v) for v in values), dtype=np.float64)

    def code_of_text(self, text: str) -> float:
        """The code of a category value written as text (a CSV cell, already known not to be
        a missing-value token): read as the categories' type, then looked up."""
        if self.kind == "str":
            code = self.lookup.get(text)
        elif self.kind == "bool":
            code = self.lookup.get({"True": True, "False": False, "true": True,
                                    "false": False}.get(text, text))
        else:
            try:
                number = float(text) if self.kind == "float" else int(text)
            except ValueError:
                raise InvalidPayload(
                    f"feature {self.name!r} takes {self.kind} category values; got {text[:32]!r}",
                    code="invalid_category_value") from None
            code = self.lookup.get(number)
        return math.nan if code is None else float(code)

    def value_of(self, code: float) -> Any:
        """The category value of a code (``None`` for NaN or a code out of range)."""
        if math.isnan(code):
            return None
        i = int(code)
        return self.values[i] if 0 <= i < len(self.values) and i == code else None

    def describe(self) -> dict[str, Any]:
        return {"type": self.kind, "categories": list(self.values)}


@dataclass(frozen=True)
class FeatureSchema:
    """The features a model reads, in order, and how requests may name and fill them."""

    names: tuple[str, ...]
    categorical: tuple[Categories, ...] = ()
    mapping: CategoryMapping = "none"
    # Why categories could not be placed (``mapping == "unknown"``), for error messages.
    mapping_problem: str = ""

    @functools.cached_property
    def by_index(self) -> dict[int, Categories]:
        return {c.index: c for c in self.categorical}

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {name: j for j, name in enumerate(self.names)}

    @functools.cached_property
    def name_set(self) -> frozenset[str]:
        return frozenset(self.names)

    def resolve(self, name: str) -> int | None:
        """The index of the feature a sent name means (stored name, or the name it was
        trained with before LightGBM's renaming); ``None`` when it means none."""
        j = self._index.get(name)
        if j is None and " " in name:
            j = self._index.get(lightgbm_name(name))
        return j

    def resolve_all(self, names: Iterable[str], where: str) -> dict[str, int]:
        """Sent names to feature indexes. An unknown name is ``unknown_feature``; two sent
        names for one feature (``mean radius`` and ``mean_radius``) are ``ambiguous_feature``."""
        found: dict[str, int] = {}
        owner: dict[int, str] = {}
        for name in names:
            j = self.resolve(name)
            if j is None:
                raise InvalidPayload(f"{where} has unknown feature {name[:64]!r}; the model's "
                                     f"features are {list(self.names)[:20]}",
                                     code="unknown_feature")
            if j in owner:
                raise InvalidPayload(
                    f"{where} names feature {self.names[j]!r} twice, as {owner[j][:64]!r} and "
                    f"{name[:64]!r}: send one of them", code="ambiguous_feature")
            owner[j] = name
            found[name] = j
        return found

    def needs_values(self) -> None:
        """Raise unless category values can be read for this model."""
        if self.mapping == "unknown":
            raise InvalidPayload(f"this model's categories cannot be matched to its features "
                                 f"({self.mapping_problem}): send category codes",
                                 code="categories_unknown")

    def describe(self) -> list[dict[str, Any]]:
        """Each feature's name, the name a request may also use, and its categories."""
        out = []
        for j, name in enumerate(self.names):
            entry: dict[str, Any] = {"name": name}
            cats = self.by_index.get(j)
            if cats is not None:
                entry.update(cats.describe())
            out.append(entry)
        return out


_NUMBERS = ("int", "float")


def _kind_of(value: Any) -> CategoryKind | None:
    t = type(value)
    if t is bool:
        return "bool"
    if t is int:
        return "int"
    if t is float:
        return "float"
    if t is str:
        return "str"
    return None


def _describe(value: Any) -> str:
    kind = {bool: "a boolean", str: "a string", int: "a number", float: "a number",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text[:32]}" if kind not in ("a list", "an object") else kind


def _preview(values: Sequence[Any]) -> str:
    shown = ", ".join(repr(v)[:24] for v in values[:8])
    return f"[{shown}{', ...' if len(values) > 8 else ''}]"


_PANDAS = re.compile(r"^pandas_categorical:(.*)$", re.M)
_CAT_PARAM = re.compile(r"^\[categorical_feature: ([^\]]*)\]$", re.M)


def read_schema(text: str, names: Sequence[str], feature_infos: Sequence[str]) -> FeatureSchema:
    """The schema of a model from its text: ``names`` as LightGBM reports them,
    ``feature_infos`` from the header (a categorical feature's entry lists its codes)."""
    tail_start = text.rfind("\nend of trees")
    tail = text[tail_start:] if tail_start >= 0 else ""
    match = _PANDAS.search(tail)
    lists = _pandas_lists(match.group(1)) if match else None
    if not lists:
        return FeatureSchema(tuple(names))
    param = _CAT_PARAM.search(tail)
    if param is not None:
        positions = [int(p) for p in param.group(1).split(",") if p.strip().lstrip("-").isdigit()]
    else:  # no parameters section: the features whose infos list categories
        positions = [j for j, info in enumerate(feature_infos)
                     if info and info != "none" and not info.startswith("[")]
    problem = ""
    if len(positions) != len(lists):
        problem = (f"{len(lists)} pandas category lists but {len(positions)} categorical "
                   f"features: ordered categoricals or a categorical_feature list other than "
                   f"the DataFrame's category columns")
    elif any(not 0 <= j < len(names) for j in positions):
        problem = "categorical_feature names a feature the model does not have"
    else:
        for j, values in zip(positions, lists):
            codes = _info_codes(feature_infos[j] if j < len(feature_infos) else "")
            if codes is not None and any(c >= len(values) for c in codes):
                problem = (f"feature {names[j]!r} was trained on code {max(codes)} but its pandas "
                           f"category list has {len(values)} values")
                break
    if problem:
        return FeatureSchema(tuple(names), mapping="unknown", mapping_problem=problem)
    cats = tuple(Categories.build(j, names[j], values) for j, values in zip(positions, lists))
    return FeatureSchema(tuple(names), cats, mapping="mapped")


def _pandas_lists(raw: str) -> list[list[Any]] | None:
    raw = raw.strip()
    if raw in ("", "null"):
        return None
    try:
        lists = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidModel("the model's pandas_categorical line is not valid JSON") from None
    if not isinstance(lists, list) or not all(isinstance(v, list) for v in lists):
        raise InvalidModel("the model's pandas_categorical line is not a list of lists")
    if sum(map(len, lists)) > MAX_CATEGORIES:
        raise InvalidModel(f"the model declares more than {MAX_CATEGORIES:,} categories")
    return lists


def _info_codes(info: str) -> list[int] | None:
    if not info or info == "none" or info.startswith("["):
        return None
    try:
        return [int(c) for c in info.split(":") if int(c) >= 0]
    except ValueError:
        return None
