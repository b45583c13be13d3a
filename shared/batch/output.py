"""Output rows: each row's prediction(s) written with exact (shortest round-trip) floats, as
CSV (``prediction`` or ``p0,p1,...``) or JSON Lines (``{"prediction": ...}``), after the id
the input gave. Non-finite predictions (a linear-tree model on huge inputs gives inf) are
spelled as pandas reads them back in CSV, and as the proto3 JSON mapping's strings in JSON.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from itertools import chain, repeat

import numpy as np
import orjson

from shared.batch.parsed_rows import Ids

# Non-finite predictions (a linear-tree model on huge inputs gives inf): CSV writes what
# pandas writes and reads back (NaN an empty cell, "" when it is the only one); JSON the
# proto3 JSON mapping's strings, distinct from null (a missing value).
CSV_NON_FINITE = (b"inf", b"-inf", b"")
JSON_NON_FINITE = (b'"Infinity"', b'"-Infinity"', b'"NaN"')


def prediction_texts(predictions: np.ndarray,
                     non_finite: tuple[bytes, bytes, bytes] = CSV_NON_FINITE) -> list[bytes]:
    """Each row's prediction(s) as text, shortest round-trip repr (``p0,p1,...`` for several
    classes); +inf, -inf and NaN as ``non_finite`` gives them (CSV by default)."""
    if predictions.shape[0] == 0:
        return []
    text = orjson.dumps(np.ascontiguousarray(predictions), option=orjson.OPT_SERIALIZE_NUMPY)
    texts = text[1:-1].split(b",") if predictions.ndim == 1 else text[2:-2].split(b"],[")
    finite = np.isfinite(predictions)
    if not finite.all():  # orjson wrote them as null: spelled out row by row
        bad = ~finite if predictions.ndim == 1 else ~finite.all(axis=1)
        for i in np.flatnonzero(bad).tolist():
            row = np.atleast_1d(predictions[i]).tolist()
            texts[i] = b",".join(map(_value_text, row, repeat(non_finite)))
    return texts


def _value_text(value: float, non_finite: tuple[bytes, bytes, bytes]) -> bytes:
    if value != value:
        return non_finite[2]
    if value in (math.inf, -math.inf):
        return non_finite[0] if value > 0 else non_finite[1]
    return orjson.dumps(value)


class CsvWriter:
    content_type = "text/csv"

    def __init__(self, id_column: str | None, num_outputs: int) -> None:
        self.id_column = id_column
        columns = ["prediction"] if num_outputs == 1 else [f"p{k}" for k in range(num_outputs)]
        if id_column is not None:
            columns.insert(0, id_column)
        self.header = _csv_line(columns)
        # In a one-column CSV an empty cell would be a blank line, which readers skip (pandas
        # does): NaN is written "" there, as pandas' to_csv writes it.
        self.non_finite = CSV_NON_FINITE if len(columns) > 1 else (b"inf", b"-inf", b'""')

    def rows(self, predictions: np.ndarray, ids: Ids | None) -> bytes:
        texts = prediction_texts(predictions, self.non_finite)
        if not texts:
            return b""
        if ids is None:
            return b"\n".join(texts) + b"\n"
        return b"\n".join(map(b",".join, zip(ids.csv_fields(), texts))) + b"\n"


class JsonlWriter:
    content_type = "application/x-ndjson"
    header = b""

    def __init__(self, id_column: str | None, num_outputs: int) -> None:
        self.id_column = id_column
        self.multi = num_outputs > 1

    def rows(self, predictions: np.ndarray, ids: Ids | None) -> bytes:
        texts = prediction_texts(predictions, JSON_NON_FINITE)
        if not texts:
            return b""
        if self.multi:
            texts = [b"[" + t + b"]" for t in texts]
        if ids is None:
            return b'{"prediction":' + b'}\n{"prediction":'.join(texts) + b"}\n"
        prefix = b"{" + orjson.dumps(self.id_column) + b":"
        id_texts = map(orjson.dumps, ids.json_values())
        parts = zip(repeat(prefix), id_texts, repeat(b',"prediction":'), texts, repeat(b"}\n"))
        return b"".join(chain.from_iterable(parts))


OutputWriter = CsvWriter | JsonlWriter


def writer_for(fmt: str, id_column: str | None, num_outputs: int) -> OutputWriter:
    """The writer of an output in ``fmt`` (``csv`` or ``jsonl``)."""
    return (CsvWriter if fmt == "csv" else JsonlWriter)(id_column, num_outputs)


def content_type(fmt: str) -> str:
    """The content type of an output in ``fmt``."""
    return (CsvWriter if fmt == "csv" else JsonlWriter).content_type


def _csv_line(fields: Sequence[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(fields)
    return out.getvalue().encode("utf-8")
