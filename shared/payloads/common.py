"""Pieces every payload format shares: JSON decoding, options, and the row matrix check."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import orjson

from shared.errors import InvalidJson, InvalidPayload, PayloadTooLarge
from shared.models.schema import FeatureSchema

_NUMBER_TYPES = frozenset((float, int, type(None)))


@dataclass(frozen=True)
class Options:
    """How to predict: ``raw_score`` (margins, no sigmoid/softmax) or ``pred_contrib``
    (per-feature SHAP contributions plus the expected value, per class)."""

    raw_score: bool = False
    pred_contrib: bool = False


DEFAULT_OPTIONS = Options()


@dataclass(slots=True)
class ScoringInput:
    """A parsed request: the matrix to score and how."""

    X: np.ndarray
    options: Options = field(default_factory=Options)
    format: str = "rows"
    request_id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    binary_output: bool = False  # V2: the outputs as binary tensor data


def decode_json(body: bytes) -> dict[str, Any]:
    """Decode a JSON object strictly (no NaN/Infinity literals, UTF-8 only)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidPayload("body must be a JSON object", code="invalid_payload")
    return doc


def dumps(doc: Any) -> bytes:
    """Encode a response; numpy arrays are written directly, shortest round-trip floats."""
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


# How a non-finite number is written in JSON output (proto3's JSON mapping of doubles):
# JSON has no such numbers, and ``null`` already means a missing value.
NON_FINITE_JSON = {math.inf: "Infinity", -math.inf: "-Infinity"}


def json_numbers(values: np.ndarray) -> np.ndarray | list[Any]:
    """``values`` ready for :func:`dumps`: the array itself when every value is finite
    (written as numbers, no copy), else nested lists with ``"Infinity"``, ``"-Infinity"``
    and ``"NaN"`` in place of the non-finite values."""
    if np.isfinite(values).all():
        return values
    return _spell(values.tolist())


def _spell(values: list[Any]) -> list[Any]:
    return [_spell(v) if type(v) is list else
            v if math.isfinite(v) else NON_FINITE_JSON.get(v, "NaN") for v in values]


def parse_options(raw: Any, *, where: str = "options", strict: bool = True) -> Options:
    if raw is None:
        return DEFAULT_OPTIONS
    if not isinstance(raw, dict):
        raise InvalidPayload(f"'{where}' must be an object", code="invalid_options")
    known = {"raw_score", "pred_contrib"}
    unknown = set(raw) - known
    if strict and unknown:
        raise InvalidPayload(f"unknown option(s) {sorted(unknown)} in '{where}'; known: {sorted(known)}",
                             code="invalid_options")
    values = {}
    for name in known & set(raw):
        if not isinstance(raw[name], bool):
            raise InvalidPayload(f"option '{name}' must be true or false", code="invalid_options")
        values[name] = raw[name]
    options = Options(**values)
    if options.raw_score and options.pred_contrib:
        raise InvalidPayload("raw_score and pred_contrib cannot be combined", code="invalid_options")
    return options


def check_count(n: int, max_rows: int, what: str) -> None:
    if n == 0:
        raise InvalidPayload(f"'{what}' is empty: send at least one row", code="empty_input")
    if n > max_rows:
        raise PayloadTooLarge(f"{n} rows is more than the limit of {max_rows} per request",
                              code="too_many_rows")


def rows_to_matrix(rows: Any, schema: FeatureSchema, max_rows: int,
                   what: str = "rows") -> np.ndarray:
    """Validate a list of equal-width rows in the model's feature order and convert it to
    float64 (null -> NaN). As in ``Booster.predict`` on a matrix, a number in a categorical
    feature's place is its code; a string there is a category value, mapped to its code.

    The checks run as C-level passes (``map``/``set``); only on an error do we walk the
    rows in Python, to name the first bad one.
    """
    feature_names = schema.names
    if type(rows) is list and len(rows) == 1 and max_rows >= 1:
        row = rows[0]  # one row (most online requests): the same checks, fewer passes
        if type(row) is list and len(row) == len(feature_names) and \
                set(map(type, row)) <= _NUMBER_TYPES:
            return np.array(rows, dtype=np.float64)
    if not isinstance(rows, list):
        raise InvalidPayload(f"'{what}' must be a list of rows", code="invalid_rows")
    check_count(len(rows), max_rows, what)
    width = len(feature_names)
    if set(map(type, rows)) != {list}:
        i = next(i for i, row in enumerate(rows) if type(row) is not list)
        raise InvalidPayload(f"{what}[{i}] is not a list of values", code="invalid_rows")
    if set(map(len, rows)) != {width}:
        i = next(i for i, row in enumerate(rows) if len(row) != width)
        raise InvalidPayload(f"{what}[{i}] has {len(rows[i])} values; the model expects {width}",
                             code="wrong_row_width")
    if not set(map(type, chain.from_iterable(rows))) <= _NUMBER_TYPES:
        return _matrix_with_category_values(rows, schema, what)
    return np.array(rows, dtype=np.float64)


def _matrix_with_category_values(rows: list[list[Any]], schema: FeatureSchema,
                                 what: str) -> np.ndarray:
    """Rows holding something other than numbers: strings in categorical places are
    category values; anything else is an error naming the first bad value."""
    X = np.empty((len(rows), len(schema.names)))
    for j, name in enumerate(schema.names):
        column = [row[j] for row in rows]
        cats = schema.by_index.get(j)
        if cats is not None and set(map(type, column)) - _NUMBER_TYPES <= {str, bool}:
            X[:, j] = [cats.code_of(v) if type(v) in (str, bool) else
                       (math.nan if v is None else v) for v in column]
            continue
        if set(map(type, column)) <= _NUMBER_TYPES:
            X[:, j] = np.array(column, dtype=np.float64)
            continue
        i, value = next((i, v) for i, v in enumerate(column) if type(v) not in _NUMBER_TYPES)
        if type(value) in (str, bool):
            schema.needs_values()  # categories the model cannot place: say so
        expected = "a number, a category value or null" if cats is not None else \
            "a number or null"
        raise InvalidPayload(f"{what}[{i}][{j}] ({name}) is {_kind(value)}, not {expected}",
                             code="non_numeric_value" if cats is None else
                             "invalid_category_value")
    return X


def _kind(value: Any) -> str:
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)
