"""The fast path of CSV parsing: a piece of plain numeric CSV (its category columns aside)
parsed without a Python loop per value.

numpy finds the delimiters, checks every line has the header's width, cuts the id column out,
blanks the category columns (their cells are looked up separately) and writes ``0`` into
empty cells (remembering where); the remaining text is then numbers and commas, which
simdjson parses as one flat JSON array (correctly rounded) straight into a float64 buffer, no
Python object per value (a 1 MiB piece's numbers in ~1.9 ms against ~7.6 ms as orjson's list
of floats; the whole parse 0.42 CPU-s per 100,000 rows against 0.93); the empty cells then
become NaN. simdjson only takes JSON numbers, a subset of what pandas reads as numbers, so
nothing it accepts is read differently. A piece that is anything else (quotes, ``NA``, ``+1``,
``inf``, blank lines, a bad value) is left to the per-value path (``shared.batch.csv_input``),
which also names the offending line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain

import numpy as np
import simdjson

from shared.batch.cells import category_codes
from shared.batch.csv_layout import CsvLayout
from shared.batch.lines import NEWLINE, Chunk
from shared.batch.parsed_rows import Ids, ParsedRows
from shared.models.schema import Categories

_COMMA = 44
_ZERO = ord("0")
# A negative zero written as an integer: simdjson reads "-0" as 0 (an int), pandas as -0.0.
_MINUS, _DIGIT_ZERO = ord("-"), ord("0")
_AFTER_NUMBER = np.array([_COMMA, NEWLINE, ord(" "), ord("\t")], dtype=np.uint8)


def parse_plain_piece(chunk: Chunk, layout: CsvLayout,
                      unseen: dict[int, int]) -> ParsedRows | None:
    """Parse a piece of plain numeric CSV (its category columns aside); None when it needs
    the per-value path. Nothing is counted in ``unseen`` unless the piece is parsed here."""
    piece = chunk.data
    b = np.frombuffer(piece, dtype=np.uint8)
    newlines = np.flatnonzero(b == NEWLINE)
    rows, width = len(newlines), layout.width
    if rows == 0 or newlines[0] == 0 or (np.diff(newlines) == 1).any():
        return None  # blank lines (the slow path skips them, or refuses them in one column)
    commas = np.flatnonzero(b == _COMMA)
    if len(commas) != rows * (width - 1):
        return None
    if width > 1 and not np.array_equal(np.searchsorted(commas, newlines),
                                        np.arange(1, rows + 1) * (width - 1)):
        return None
    ids = None
    columns = width
    if layout.categorical and b'"' in piece:
        return None  # quoted category values: the slow path unquotes them
    if layout.id_index is not None:
        if b'"' in piece:
            return None
        cut, ids = _cut_column(piece, newlines, commas.reshape(rows, width - 1), layout.id_index)
        try:
            b"\n".join(ids).decode("utf-8")  # separated: halves of a character never pair up
        except UnicodeDecodeError:
            return None  # the slow path names the line
        if not layout.id_is_feature:
            piece = cut
            b = np.frombuffer(piece, dtype=np.uint8)
            columns -= 1
            if columns == 0:
                return ParsedRows(np.empty((rows, 0)), Ids("csv", ids))
            newlines, commas = np.flatnonzero(b == NEWLINE), np.flatnonzero(b == _COMMA)
    # Only a bracket could make JSON read something other than a flat list of scalars (as
    # the JSON of a field like "[1" and the next "2]"); everything else that is not a JSON
    # number (letters, quotes, "+1", ".5") fails below and takes the slow path.
    if b"[" in piece or b"{" in piece:
        return None
    cells: list[tuple[int, Categories, list[bytes]]] = []
    if layout.categorical:  # their cells are taken out; the numbers parse around them
        b, cells = _take_cells(b, newlines, commas.reshape(rows, columns - 1), layout.categorical)
        newlines, commas = np.flatnonzero(b == NEWLINE), np.flatnonzero(b == _COMMA)
    text, empty = _zero_empty(b, newlines, commas, rows, columns)
    try:
        flat = simdjson.Parser().parse(b"[" + text[:-1].replace(b"\n", b",") + b"]")
        if not isinstance(flat, simdjson.Array):
            return None
        buffer = flat.as_buffer(of_type="d")  # numbers only: a string, bool or null raises
    except (ValueError, TypeError, RuntimeError):
        return None  # e.g. "+1", ".5", "007", "nan": valid numbers for the slow path
    values = np.frombuffer(buffer, dtype=np.float64)
    if len(values) != rows * columns:
        return None
    values = values.reshape(rows, columns)
    if len(empty):
        values.flat[empty] = np.nan  # the buffer is this call's own
    if not values.all() and b"-0" in text and _int_negative_zero(text):
        return None  # "-0" is -0.0 in pandas; simdjson reads an integer 0
    if cells:
        names = layout.scored_names
        counts: dict[int, int] = {}  # counted once every category column is read
        for p, cats, raw in cells:
            try:
                texts = [cell.decode("utf-8") for cell in raw]
            except UnicodeDecodeError:
                return None  # the slow path names the line
            values[:, p] = category_codes(texts, cats, chunk.first_line, names[p], counts)
        for j, count in counts.items():
            unseen[j] = unseen.get(j, 0) + count
    return ParsedRows(values, Ids("csv", ids) if ids is not None else None)


def _int_negative_zero(text: bytes) -> bool:
    """Whether some number is ``-0`` (``1e-0`` too: rare, and the per-value path is right for
    it anyway). A regex took ~70 ms per MiB; this ~0.5 ms."""
    a = np.frombuffer(text, dtype=np.uint8)
    minus = np.flatnonzero(a[:-2] == _MINUS)
    minus = minus[a[minus + 1] == _DIGIT_ZERO]
    return bool(np.isin(a[minus + 2], _AFTER_NUMBER).any())


def _cut_column(piece: bytes, newlines: np.ndarray, commas: np.ndarray,
                j: int) -> tuple[bytes, list[bytes]]:
    """Remove column ``j`` (and one adjacent comma) from every line; return its fields.
    One slice per line (never per value): numpy masks over the piece cost more here."""
    rows, last = len(newlines), commas.shape[1]
    line_start = np.empty(rows, dtype=np.intp)
    line_start[0] = 0
    line_start[1:] = newlines[:-1] + 1
    start = line_start if j == 0 else commas[:, j - 1] + 1
    end = newlines if j == last else commas[:, j]
    starts, ends = start.tolist(), end.tolist()
    fields = list(map(piece.__getitem__, map(slice, starts, ends)))
    if last == 0:  # the id is the only column: every line becomes one empty field
        return b"\n" * rows, fields
    if j == 0:  # keep from after the field's comma to the line end
        keep = map(slice, (commas[:, 0] + 1).tolist(), (newlines + 1).tolist())
        return b"".join(map(piece.__getitem__, keep)), fields
    # keep the line up to the field, then after its following comma (or its newline)
    heads: Iterable[bytes] = map(piece.__getitem__, map(slice, line_start.tolist(), starts))
    tail_from = (end + 1 if j < last else end).tolist()
    tails = map(piece.__getitem__, map(slice, tail_from, (newlines + 1).tolist()))
    if j == last:  # drop the comma before the field too
        heads = (h[:-1] for h in heads)
    return b"".join(chain.from_iterable(zip(heads, tails))), fields


def _zero_empty(b: np.ndarray, newlines: np.ndarray, commas: np.ndarray, rows: int,
                columns: int) -> tuple[bytes, np.ndarray]:
    """Write ``0`` into every empty field and return the text with the flat indexes of those
    fields, to be set to NaN once parsed. Each of the ``rows`` lines holds ``columns - 1``
    commas (checked), so the delimiters in file order are each line's commas, then its
    newline: no pass over the bytes is needed. A field is empty when its delimiter comes
    right after the previous one (or at the start)."""
    ends = np.concatenate((commas.reshape(rows, columns - 1), newlines.reshape(rows, 1)),
                          axis=1).ravel()
    gaps = np.empty_like(ends)
    gaps[0] = ends[0] + 1
    gaps[1:] = ends[1:] - ends[:-1]
    fields = np.flatnonzero(gaps == 1)
    if not len(fields):
        return b.tobytes(), fields
    return np.insert(b, ends[fields], _ZERO).tobytes(), fields


def _take_cells(b: np.ndarray, newlines: np.ndarray, commas: np.ndarray,
                positions: Sequence[tuple[int, Categories]]
                ) -> tuple[np.ndarray, list[tuple[int, Categories, list[bytes]]]]:
    """Take the cells of columns ``positions`` out of every line, leaving them empty (the
    commas stay, so every line keeps its width); return the bytes left and the cells."""
    rows, last = len(newlines), commas.shape[1]
    line_start = np.empty(rows, dtype=np.intp)
    line_start[0] = 0
    line_start[1:] = newlines[:-1] + 1
    data = b.tobytes()
    depth = np.zeros(len(b) + 1, dtype=np.int32)
    taken = []
    for p, cats in positions:
        start = line_start if p == 0 else commas[:, p - 1] + 1
        end = newlines if p == last else commas[:, p]
        taken.append((p, cats, list(map(data.__getitem__, map(slice, start.tolist(),
                                                                end.tolist())))))
        depth[start] += 1  # starts (and ends) differ between cells: no index repeats
        depth[end] -= 1
    keep = np.cumsum(depth[:-1]) == 0
    return b[keep], taken
