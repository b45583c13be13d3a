"""What a value in a batch input means, by pandas' ``read_csv`` defaults (docs/batch-data.md):
its missing-value tokens (:data:`NA_TOKENS`) are NaN, a cell is a number only if pandas reads
it as a float, a category cell is one of the model's training categories (an unseen value is
missing, and counted). Both CSV paths read cells with these rules; the error for a value that
is not a number (:func:`not_a_number`) is JSON Lines' too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.errors import InvalidPayload
from shared.models.schema import Categories, FeatureSchema

# pandas.read_csv's default missing-value tokens (pandas._libs.parsers.STR_NA_VALUES),
# matched against the whole cell (after unquoting; no whitespace around them).
NA_TOKENS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                       "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                       "nan", "null"})
# What pandas' float parser takes: ASCII digits only (no '_', no other scripts), ASCII
# whitespace around the number, and these infinities (any case, no whitespace around).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPACE = " \t\v\f\r"
_INFINITIES = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "infinity": math.inf,
               "+infinity": math.inf, "-infinity": -math.inf}
# pandas' default true_values/false_values: a boolean category column's cells.
_BOOLEANS = {"True": True, "TRUE": True, "true": True, "False": False, "FALSE": False,
             "false": False}


def csv_number(cell: str) -> float | None:
    """The value pandas' ``read_csv`` reads from ``cell`` (unquoted) in a float column: NaN for
    a missing-value token; None when pandas reads it as text (``1_000``, ``١٢٣``, `` inf``,
    ``NAN``, ``true``, a blank cell...)."""
    if cell in NA_TOKENS:
        return math.nan
    text = cell.strip(_SPACE)
    if _NUMBER.fullmatch(text):
        return float(text)  # the same grammar: correctly rounded, 1e400 is inf as in pandas
    return _INFINITIES.get(cell.lower()) if cell.isascii() else None


def category_codes(texts: Sequence[str], cats: Categories, first_line: int, name: str,
                   unseen: dict[int, int]) -> np.ndarray:
    """The codes of a category column's cells (line ``first_line`` on); values the model was
    not trained on are counted in ``unseen`` (by feature index)."""
    codes = np.empty(len(texts))
    count = 0
    for i, text in enumerate(texts):
        code = category_code(text, cats, first_line + i, name)
        codes[i] = code
        if code != code and text not in NA_TOKENS:
            count += 1
    if count:
        unseen[cats.index] = unseen.get(cats.index, 0) + count
    return codes


def category_code(cell: str, cats: Categories, line: int, name: str) -> float:
    """A category cell's code as ``Booster.predict`` reads it from a DataFrame built by
    ``read_csv`` (NaN for a missing-value token or an unseen value)."""
    if cell in NA_TOKENS:
        return math.nan
    if cats.kind == "str":
        return cats.code_of_text(cell)
    if cats.kind == "bool":
        value: Any = _BOOLEANS.get(cell)
        if value is not None:
            return cats.code_of(value)
    else:
        number = csv_number(cell)
        if number is not None:  # as pd.Categorical matches it: 2.0 is the category 2
            code = cats.lookup.get(number)
            return math.nan if code is None else float(code)
    raise InvalidPayload(f"CSV line {line}, column {name[:64]!r}: {cell[:32]!r} is not a "
                         f"{cats.kind} category value (the model's categories are "
                         f"{_preview(cats.values)})", code="invalid_category_value")


def _preview(values: Sequence[Any]) -> str:
    shown = ", ".join(repr(v)[:24] for v in values[:8])
    return f"[{shown}{', ...' if len(values) > 8 else ''}]"


def not_a_number(where: str, shown: str, schema: FeatureSchema | None,
                 what: str) -> InvalidPayload:
    """The error for a value (``shown``) that is not a number where one is expected; for a
    model whose categories cannot be placed, that (the value may be a category by value)."""
    if schema is not None and schema.mapping == "unknown":
        try:
            schema.needs_values()
        except InvalidPayload as exc:
            return InvalidPayload(f"{where}: {shown} is not a number, and {exc.message}",
                                  code=exc.code)
    return InvalidPayload(f"{where}: {shown} is not {what}", code="non_numeric_value")
