"""What parsing a chunk of input gives: its rows as a float64 matrix in feature order, and its
id column, carried through to the output as the input spelled it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson


@dataclass
class Ids:
    """The id column of a chunk: raw CSV field text (``kind="csv"``) or JSON values."""

    kind: str
    values: list[Any]

    def csv_fields(self) -> list[bytes]:
        if self.kind == "csv":
            return self.values
        return [csv_field(v) for v in self.values]

    def json_values(self) -> list[Any]:
        if self.kind == "json":
            return self.values
        return [_unquote_csv(v) for v in self.values]


@dataclass(frozen=True)
class ParsedRows:
    """A chunk's rows (``X``: one row per record, one column per feature, NaN where missing)
    and its ids (None when the job has no ``id_column``)."""

    X: np.ndarray
    ids: Ids | None = None


def csv_field(value: Any) -> bytes:
    """``value`` (a JSON value, or text) as one CSV field, quoted when it needs to be."""
    if value is None:
        return b""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    if any(c in text for c in ',"\r\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text.encode("utf-8")


def _unquote_csv(field: bytes) -> str:
    text = field.decode("utf-8")
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return text[1:-1].replace('""', '"')
    return text
