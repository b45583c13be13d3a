"""JSON Lines input: a chunk of lines parsed into rows in feature order, and its ids.

One orjson call per piece of the chunk (a line holding two values, or a bad line, takes a
per-line pass that names it), then one C-level pass per feature. Blank lines are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np
import orjson

from shared.batch.cells import not_a_number
from shared.batch.features import Features, as_schema
from shared.batch.lines import Chunk, pieces
from shared.batch.parsed_rows import Ids, ParsedRows
from shared.errors import InvalidPayload
from shared.models.schema import FeatureSchema

_NUMBER_TYPES = frozenset((float, int, type(None)))


def parse_jsonl_chunk(chunk: Chunk, features: Features, id_column: str | None,
                      unseen: dict[int, int] | None = None) -> ParsedRows:
    """One record per line: an object of values by feature name (as for ``records``: an
    unknown key is an error, a missing feature or ``null`` is NaN; names as stored or as
    trained), or a list of values in feature order (without ``id_column``). A categorical
    feature's values are category values; in a list, a number there is a code. Unseen
    category values are NaN, counted by feature index in ``unseen``."""
    schema = as_schema(features)
    names = schema.names
    capacity = chunk.data.count(b"\n")
    X = np.empty((capacity, len(names)))
    ids: list[Any] | None = [] if id_column is not None else None
    counts = unseen if unseen is not None else {}
    rows = 0
    for piece in pieces(chunk):
        records, lines = _jsonl_records(piece)
        n = len(records)
        if n == 0:  # blank lines only
            continue
        types = set(map(type, records))
        if types - {dict, list}:
            i = next(i for i, rec in enumerate(records) if type(rec) not in (dict, list))
            raise InvalidPayload(f"JSON Lines line {lines[i]} is not an object (values by feature "
                                 f"name) or a list (values in feature order)",
                                 code="invalid_records")
        if types == {dict}:
            _jsonl_objects(records, lines, range(n), schema, id_column, X[rows:rows + n], counts)
        else:
            if id_column is not None:
                i = next(i for i, rec in enumerate(records) if type(rec) is list)
                raise InvalidPayload(f"JSON Lines line {lines[i]} is a list, but the job has an "
                                     f"id_column: write each record as an object holding "
                                     f"{id_column[:64]!r}", code="invalid_records")
            at = [i for i, rec in enumerate(records) if type(rec) is list]
            block = np.empty((len(at), len(names)))
            _jsonl_lists([records[i] for i in at], lines, at, schema, block, counts)
            X[rows + np.array(at, dtype=np.intp)] = block
            if types == {dict, list}:
                at = [i for i, rec in enumerate(records) if type(rec) is dict]
                block = np.empty((len(at), len(names)))
                _jsonl_objects([records[i] for i in at], lines, at, schema, None, block, counts)
                X[rows + np.array(at, dtype=np.intp)] = block
        if ids is not None:
            ids.extend(map(dict.get, records, repeat(id_column)))
        rows += n
    return ParsedRows(X[:rows], Ids("json", ids) if ids is not None else None)


def _jsonl_objects(records: list[dict], lines: Any, at: Sequence[int], schema: FeatureSchema,
                   id_column: str | None, out: np.ndarray, unseen: dict[int, int]) -> None:
    """Fill ``out`` (one row per record) from records by feature name; ``at[i]`` is record
    i's position in its piece (``lines[at[i]]`` its line)."""
    keys = set().union(*records)
    spellings: dict[int, list[str]] = {}
    for key in keys:
        j = schema.resolve(key)
        if j is None:
            if key == id_column:
                continue
            i = next(i for i, rec in enumerate(records) if key in rec)
            raise InvalidPayload(f"JSON Lines line {lines[at[i]]} has unknown feature {key[:64]!r}; "
                                 f"the model's features are {list(schema.names)[:20]}",
                                 code="unknown_feature")
        spellings.setdefault(j, []).append(key)
    for spelled in spellings.values():
        if len(spelled) > 1:  # two names of one feature: an error only within one record
            for i, rec in enumerate(records):
                if sum(key in rec for key in spelled) > 1:
                    schema.resolve_all([k for k in rec if k != id_column or
                                        schema.resolve(k) is not None],
                                       f"JSON Lines line {lines[at[i]]}")
    for j in range(len(schema.names)):
        names = spellings.get(j)
        if not names:
            out[:, j] = np.nan
            continue
        if len(names) == 1:
            column = list(map(dict.get, records, repeat(names[0])))
        else:
            column = [next((rec[k] for k in names if k in rec), None) for rec in records]
        _jsonl_column(column, j, schema, lines, at, out, unseen, positional=False)


def _jsonl_lists(rows: list[list], lines: Any, at: Sequence[int], schema: FeatureSchema,
                 out: np.ndarray, unseen: dict[int, int]) -> None:
    """Fill ``out`` from rows of values in feature order."""
    width = len(schema.names)
    if set(map(len, rows)) != {width}:
        i = next(i for i, row in enumerate(rows) if len(row) != width)
        raise InvalidPayload(f"JSON Lines line {lines[at[i]]} has {len(rows[i])} values; the model "
                             f"expects {width}", code="wrong_row_width")
    for j in range(width):
        column = [row[j] for row in rows]
        _jsonl_column(column, j, schema, lines, at, out, unseen, positional=True)


def _jsonl_column(column: list[Any], j: int, schema: FeatureSchema, lines: Any,
                  at: Sequence[int], out: np.ndarray, unseen: dict[int, int], *,
                  positional: bool) -> None:
    name = schema.names[j]
    cats = schema.by_index.get(j)
    types = set(map(type, column))
    if cats is None or (positional and types <= _NUMBER_TYPES):
        if not types <= _NUMBER_TYPES:  # (a code, in a list, is a number too)
            i = next(i for i, v in enumerate(column) if type(v) not in _NUMBER_TYPES)
            value = column[i]
            raise not_a_number(f"JSON Lines line {lines[at[i]]}, feature {name[:64]!r}",
                               repr(value[:32]) if type(value) is str else _describe(value),
                               schema, "a number or null")
        out[:, j] = column
        return
    codes = np.empty(len(column))
    count = 0
    for i, value in enumerate(column):
        if positional and type(value) in (int, float):
            codes[i] = value  # a code, as Booster.predict reads a matrix
            continue
        try:
            code = cats.code_of(value)
        except InvalidPayload as exc:
            raise InvalidPayload(f"JSON Lines line {lines[at[i]]}: {exc.message}",
                                 code=exc.code) from None
        if code != code and value is not None:
            count += 1
        codes[i] = code
    out[:, j] = codes
    if count:
        unseen[j] = unseen.get(j, 0) + count


def _describe(value: Any) -> str:
    return {bool: "a boolean", list: "a list", dict: "an object"}.get(type(value),
                                                                       type(value).__name__)


def _jsonl_records(piece: Chunk) -> tuple[list[Any], Any]:
    """The piece's values and a line-number lookup (``lines[i]`` is record i's line)."""
    data = piece.data.removeprefix(b"\xef\xbb\xbf") if piece.first_line == 1 else piece.data
    try:
        records = orjson.loads(b"[" + data[:-1].replace(b"\n", b",") + b"]")
        if len(records) == data.count(b"\n"):  # else a line held two values ("{..},{..}")
            return records, _LineNumbers(piece.first_line)
    except orjson.JSONDecodeError:
        pass
    records, numbers = [], []
    for offset, line in enumerate(data.split(b"\n")[:-1]):
        if not line.strip():
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise InvalidPayload(f"JSON Lines line {piece.first_line + offset} is not valid JSON",
                                 code="invalid_json") from None
        numbers.append(piece.first_line + offset)
    return records, numbers


class _LineNumbers:
    def __init__(self, first: int) -> None:
        self.first = first

    def __getitem__(self, i: int) -> int:
        return self.first + i
