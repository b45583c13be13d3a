"""Batch inputs and outputs: streamed line chunks, vectorised CSV and JSON Lines parsing, and
output rows written with exact (shortest round-trip) floats.

Parsing works on bytes, a piece of about ``PIECE_BYTES`` at a time (small enough to stay
in the CPU cache), without a Python loop per value:

- CSV: numpy finds the delimiters, checks every line has the header's width, cuts the id
  column out, blanks the category columns (their cells are looked up separately) and writes
  ``0`` into empty cells (remembering where); the remaining text is then numbers and commas,
  which simdjson parses as one flat JSON array (correctly rounded) straight into a float64
  buffer, no Python object per value (a 1 MiB piece's numbers in ~1.9 ms against ~7.6 ms as
  orjson's list of floats; the whole parse 0.42 CPU-s per 100,000 rows against 0.93); the
  empty cells then become NaN. simdjson only takes JSON numbers, a subset of what pandas
  reads as numbers, so nothing it accepts is read differently. A piece that is anything else
  (quotes, ``NA``, ``+1``, ``inf``, blank lines, a bad value) takes a slower per-value path
  (:func:`csv_number`) that also names the offending line.
- JSON Lines: one orjson call per piece, then one C-level pass per feature.

Rules (docs/batch-data.md): cells follow pandas' ``read_csv`` defaults: its missing-value
tokens (:data:`NA_TOKENS`) are NaN, a cell is a number only if pandas reads it as a float,
anything else in a numeric column is an error. The CSV header names the columns (any order),
by the names the model stores or the names it was trained with (``mean radius`` for
``mean_radius``); a column that is neither a feature nor ``id_column`` is an error; a feature
without a column is missing (NaN). A pandas-categorical feature's cells are category values,
read as the model's training categories (an unseen value is missing, and counted). Blank
lines are skipped. Fields may be quoted but must not contain line breaks.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

import numpy as np
import orjson
import simdjson

from shared.errors import InvalidPayload
from shared.models.schema import Categories, FeatureSchema

PIECE_BYTES = 1 << 20
_NUMBER_TYPES = frozenset((float, int, type(None)))
_COMMA, _NEWLINE = 44, 10
_ZERO = ord("0")

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
# A negative zero written as an integer: simdjson reads "-0" as 0 (an int), pandas as -0.0.
_MINUS, _DIGIT_ZERO = ord("-"), ord("0")
_AFTER_NUMBER = np.array([_COMMA, _NEWLINE, ord(" "), ord("\t")], dtype=np.uint8)

Features = Union[FeatureSchema, Sequence[str]]


def as_schema(features: Features) -> FeatureSchema:
    """A model's schema, or one for plain feature names (no categories)."""
    return features if isinstance(features, FeatureSchema) else FeatureSchema(tuple(features))


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


# -- streaming -----------------------------------------------------------------------------

@dataclass
class Chunk:
    """Complete lines of the input: ``data`` ends with a newline; ``first_line`` is the
    1-based line number of its first line in the whole file (for error messages);
    ``ends_block``: the last unit of its chunk (see :func:`line_chunks`)."""

    data: bytes
    first_line: int
    ends_block: bool = True


def line_chunks(blocks: Iterable[bytes], chunk_rows: int, first_line: int = 1, *,
                unit_rows: int | None = None, first_unit_rows: int | None = None,
                max_line_bytes: int | None = None, code: str = "invalid_input") -> Iterator[Chunk]:
    """Regroup a stream of byte blocks into chunks of ``chunk_rows`` lines (the last one may
    have fewer). With ``unit_rows``, each chunk comes as units of at most that many lines (of
    near equal sizes; the stream's very first unit only ``first_unit_rows``), the last one
    marked ``ends_block``: small units to parse and predict, whole chunks to write. Only each
    new block is scanned for newlines, once.

    A line longer than ``max_line_bytes`` (newline included) raises :class:`InvalidPayload`
    with ``code`` as soon as it is seen: a line is held whole, and parsed whole, so its
    length is what bounds memory."""
    plan = _units(chunk_rows, unit_rows or chunk_rows, first_unit_rows or chunk_rows)
    want, ends_block = next(plan)
    pending: list[bytes] = []
    have = 0  # complete lines in pending
    line = first_line
    carried = 0  # bytes of the unfinished line at the end of the blocks so far
    seen = 0  # complete lines so far
    for block in blocks:
        if not block:
            continue
        newlines = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == _NEWLINE)
        if max_line_bytes is not None:
            carried = _check_lines(newlines, len(block), carried, max_line_bytes,
                                   first_line + seen, code)
            seen += len(newlines)
        start = used = 0
        while len(newlines) - used >= want - have:
            used += want - have
            end = int(newlines[used - 1]) + 1
            pending.append(block[start:end])
            yield Chunk(b"".join(pending), line, ends_block)
            line += want
            want, ends_block = next(plan)
            pending, have, start = [], 0, end
        if start < len(block):
            pending.append(block[start:] if start else block)
            have += len(newlines) - used
    tail = b"".join(pending)
    if tail.strip():
        yield Chunk(tail if tail.endswith(b"\n") else tail + b"\n", line)


def _check_lines(newlines: np.ndarray, size: int, carried: int, limit: int, line: int,
                 code: str) -> int:
    """Raise if a line ending in this block (``carried`` bytes of it came before) or the
    unfinished one after its last newline is over ``limit`` bytes; returns the latter's length."""
    if len(newlines):
        lengths = np.diff(newlines, prepend=-1)
        lengths[0] += carried
        longest = int(np.argmax(lengths))
        if lengths[longest] > limit:
            raise InvalidPayload(f"line {line + longest} is longer than {limit:,} bytes, the "
                                 f"most its columns may take", code=code)
        carried = size - int(newlines[-1]) - 1
    else:
        carried += size
    if carried > limit:
        raise InvalidPayload(f"line {line + len(newlines)} is longer than {limit:,} bytes, the "
                             f"most its columns may take", code=code)
    return carried


def max_line_bytes(names: Iterable[str], per_value: int = 64, slack: int = 4096) -> int:
    """The longest line a batch input may have: ``per_value`` bytes per column (a double
    takes at most 24 characters; quotes, spaces and a JSON name's punctuation fit too), plus
    the names (JSON Lines repeat them), plus ``slack`` for an id and line ending."""
    return sum(len(name.encode("utf-8")) + per_value for name in names) + slack


def _units(chunk_rows: int, unit_rows: int, first_unit_rows: int) -> Iterator[tuple[int, bool]]:
    """(lines, ends_block) of each unit, for ever."""
    rows = chunk_rows
    if first_unit_rows < chunk_rows:
        yield first_unit_rows, False
        rows -= first_unit_rows
    while True:
        sizes = unit_sizes(rows, unit_rows)
        for i, size in enumerate(sizes):
            yield size, i == len(sizes) - 1
        rows = chunk_rows


def unit_sizes(chunk_rows: int, unit_rows: int) -> list[int]:
    """``chunk_rows`` cut into the fewest parts of at most ``unit_rows``, of near equal sizes
    (never a small remainder: a unit under ``PREDICT_PARALLEL_MIN_ROWS`` predicts on one
    thread)."""
    parts = -(-chunk_rows // max(1, unit_rows))
    size, extra = divmod(chunk_rows, parts)
    return [size + 1] * extra + [size] * (parts - extra)


# One GET per block of a streamed input: small enough that the first unit is parsed soon,
# large enough to be cheap per byte (Azurite spent ~3x the CPU per byte on 4 MiB ranges).
READ_BYTES = 8 * 1024 * 1024


def range_blocks(read: Callable[[int, int], bytes], start: int, end: int,
                 block_bytes: int = READ_BYTES) -> Iterator[bytes]:
    """Bytes ``[start, end)`` as blocks of ``block_bytes``, one ``read(offset, length)`` each,
    read only as the stream is consumed (the SDK's own download reads 32 MiB first)."""
    for offset in range(start, end, block_bytes):
        yield read(offset, min(block_bytes, end - offset))


def split_first_line(blocks: Iterable[bytes]) -> tuple[bytes, Iterator[bytes]]:
    """The first line (without its newline and a UTF-8 BOM) and the stream after it."""
    stream = iter(blocks)
    head = b""
    for block in stream:
        head += block
        cut = head.find(b"\n")
        if cut >= 0:
            rest = head[cut + 1:]
            return head[:cut].removeprefix(b"\xef\xbb\xbf").rstrip(b"\r"), chain([rest], stream)
        if len(head) > PIECE_BYTES:
            raise InvalidPayload("the CSV header line is longer than 1 MiB", code="invalid_csv")
    return head.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r"), iter(())


# -- byte ranges (fanned-out jobs) -----------------------------------------------------------

WINDOW_BYTES = 64 * 1024  # read around each cut to find the next line break
LINE_SEARCH_LIMIT = 16 * 1024 * 1024  # no line break this far after a cut: not line-based input


def read_first_line(read: Callable[[int, int], bytes], size: int) -> tuple[bytes, int]:
    """The first line of a blob read by ranges (``read(offset, length)``), without its
    newline, a UTF-8 BOM and a trailing CR; and the offset right after it."""
    head, at = b"", 0
    while at < size:
        block = read(at, min(WINDOW_BYTES, size - at))
        if not block:
            break
        cut = block.find(b"\n")
        if cut >= 0:
            head += block[:cut]
            at += cut + 1
            break
        head += block
        at += len(block)
        if len(head) > PIECE_BYTES:
            raise InvalidPayload("the CSV header line is longer than 1 MiB", code="invalid_csv")
    return head.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r"), at


def line_start_at_or_after(read: Callable[[int, int], bytes], pos: int, size: int, *,
                           code: str = "invalid_payload") -> int:
    """The first offset >= ``pos`` where a line begins (``size`` when none does), reading
    only small windows from ``pos - 1`` on."""
    if pos <= 0:
        return 0
    at = pos - 1  # a newline right before pos makes pos itself a line start
    while at < size:
        block = read(at, min(WINDOW_BYTES, size - at))
        if not block:
            break
        found = block.find(b"\n")
        if found >= 0:
            return at + found + 1
        at += len(block)
        if at - pos > LINE_SEARCH_LIMIT:
            raise InvalidPayload(f"no line break within {LINE_SEARCH_LIMIT >> 20} MiB after byte "
                                 f"{pos:,}: the input must have one record per line", code=code)
    return size


def byte_ranges(read: Callable[[int, int], bytes], size: int, start: int, chunk_bytes: int, *,
                code: str = "invalid_payload",
                map_: Callable[..., Iterable[int]] = map) -> list[tuple[int, int]]:
    """Cut ``[start, size)`` into ranges of about ``chunk_bytes``, each beginning at a line
    start and ending right after a line break (or at the end): every line lands in exactly
    one range, in order. Only a window around each nominal cut is read (``map_`` may read
    them in parallel). An input of no data bytes is one empty range."""
    nominal = range(start + chunk_bytes, size, chunk_bytes)
    found = map_(lambda p: line_start_at_or_after(read, p, size, code=code), nominal)
    cuts = sorted({c for c in found if start < c < size})
    bounds = [start, *cuts, size]
    return list(zip(bounds, bounds[1:]))


def pieces(chunk: Chunk) -> Iterator[Chunk]:
    """``chunk`` cut at line ends into pieces of about ``PIECE_BYTES``."""
    data, start, line = chunk.data, 0, chunk.first_line
    while start < len(data):
        end = data.rfind(b"\n", start, start + PIECE_BYTES)
        if end < 0:
            end = data.find(b"\n", start)
        piece = data[start:end + 1]
        yield Chunk(piece, line)
        line += piece.count(b"\n")
        start = end + 1


# -- ids -------------------------------------------------------------------------------------

@dataclass
class Ids:
    """The id column of a chunk: raw CSV field text (``kind="csv"``) or JSON values."""

    kind: str
    values: list[Any]

    def csv_fields(self) -> list[bytes]:
        if self.kind == "csv":
            return self.values
        return [_csv_field(v) for v in self.values]

    def json_values(self) -> list[Any]:
        if self.kind == "json":
            return self.values
        return [_unquote_csv(v) for v in self.values]


def _csv_field(value: Any) -> bytes:
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


# -- CSV -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CsvLayout:
    """How the columns of a CSV file map to the model's features."""

    columns: tuple[str, ...]
    feature_names: tuple[str, ...]
    id_index: int | None
    targets: np.ndarray  # feature index of each scored column, in file order
    in_order: bool  # the scored columns are exactly the features, in order
    id_is_feature: bool = False  # the id column is scored too (as JSON Lines does)
    # (position among the scored columns, categories) of each pandas-categorical feature
    categorical: tuple[tuple[int, Categories], ...] = ()
    schema: FeatureSchema | None = None

    @property
    def width(self) -> int:
        return len(self.columns)

    @property
    def scored_names(self) -> list[str]:
        """The scored columns' names as the header gives them, in file order."""
        return [c for j, c in enumerate(self.columns) if j != self.id_index or self.id_is_feature]


def csv_layout(header: bytes, features: Features, id_column: str | None) -> CsvLayout:
    """The layout of a CSV file whose first line is ``header``, for a model's schema (or plain
    feature names). Columns name features as stored or as trained (``mean radius``)."""
    schema = as_schema(features)
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayload("the CSV header is not UTF-8 text", code="invalid_csv") from None
    if not text.strip():
        raise InvalidPayload("the CSV input has no header line naming its columns", code="invalid_csv")
    if "\r" in text:
        raise InvalidPayload("the CSV input has CR line breaks (old Mac style) or a CR inside its "
                             "header: use LF or CRLF line breaks", code="invalid_csv")
    try:
        columns = tuple(name.strip() for name in next(csv.reader([text])))
    except csv.Error as exc:
        raise InvalidPayload(f"the CSV header cannot be read: {exc}", code="invalid_csv") from None
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise InvalidPayload(f"column {name[:64]!r} appears twice in the CSV header",
                                 code="invalid_csv")
        seen.add(name)
    id_index = None
    if id_column is not None:
        if id_column not in seen:
            raise InvalidPayload(f"id_column {id_column[:64]!r} is not a column of the CSV input",
                                 code="missing_id_column")
        id_index = columns.index(id_column)
    # An id column that is also a feature is copied through and scored, as in JSON Lines.
    id_is_feature = id_column is not None and schema.resolve(id_column) is not None
    scored = [c for c in columns if c != id_column or id_is_feature]
    unknown = [c for c in scored if schema.resolve(c) is None]
    if unknown:
        raise InvalidPayload(f"column {unknown[0][:64]!r} is not a feature of the model (nor the "
                             f"id_column); the model's features are {list(schema.names)[:20]}",
                             code="unknown_column")
    index = schema.resolve_all(scored, "the CSV header")  # one feature named twice: ambiguous
    targets = np.array([index[c] for c in scored], dtype=np.intp)
    n = len(schema.names)
    in_order = len(targets) == n and bool((targets == np.arange(n)).all())
    categorical = tuple((p, schema.by_index[j]) for p, j in enumerate(targets.tolist())
                        if j in schema.by_index)
    return CsvLayout(columns, schema.names, id_index, targets, in_order, id_is_feature,
                     categorical, schema)


def parse_csv_chunk(chunk: Chunk, layout: CsvLayout,
                    unseen: dict[int, int] | None = None) -> tuple[np.ndarray, Ids | None]:
    """The chunk's rows as a float64 matrix in feature order, and its ids. Category cells not
    among the training categories are NaN, counted by feature index in ``unseen``."""
    capacity = chunk.data.count(b"\n")
    X = np.empty((capacity, len(layout.feature_names))) if layout.in_order else \
        np.full((capacity, len(layout.feature_names)), np.nan)
    ids: list[bytes] | None = [] if layout.id_index is not None else None
    counts = unseen if unseen is not None else {}
    rows = 0
    for piece in pieces(chunk):
        if b"\r" in piece.data:  # CRLF line ends (and stray CRs, whitespace anyway)
            piece = Chunk(piece.data.replace(b"\r", b""), piece.first_line)
        parsed = _csv_piece_fast(piece, layout, counts)
        if parsed is None:
            parsed = _csv_piece_slow(piece, layout, counts)
        values, piece_ids = parsed
        n = len(values)
        if layout.in_order:
            X[rows:rows + n] = values
        else:
            X[rows:rows + n, layout.targets] = values
        if ids is not None:
            ids.extend(piece_ids)
        rows += n
    return X[:rows], (Ids("csv", ids) if ids is not None else None)


def _csv_piece_fast(chunk: Chunk, layout: CsvLayout, unseen: dict[int, int]
                    ) -> tuple[np.ndarray, list[bytes] | None] | None:
    """Parse a piece of plain numeric CSV (its category columns aside); None when it needs
    the slow path. Nothing is counted in ``unseen`` unless the piece is parsed here."""
    piece = chunk.data
    b = np.frombuffer(piece, dtype=np.uint8)
    newlines = np.flatnonzero(b == _NEWLINE)
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
                return np.empty((rows, 0)), ids
            newlines, commas = np.flatnonzero(b == _NEWLINE), np.flatnonzero(b == _COMMA)
    # Only a bracket could make JSON read something other than a flat list of scalars (as
    # the JSON of a field like "[1" and the next "2]"); everything else that is not a JSON
    # number (letters, quotes, "+1", ".5") fails below and takes the slow path.
    if b"[" in piece or b"{" in piece:
        return None
    cells: list[tuple[int, Categories, list[bytes]]] = []
    if layout.categorical:  # their cells are taken out; the numbers parse around them
        b, cells = _take_cells(b, newlines, commas.reshape(rows, columns - 1), layout.categorical)
        newlines, commas = np.flatnonzero(b == _NEWLINE), np.flatnonzero(b == _COMMA)
    text, empty = _zero_empty(b, newlines, commas, rows, columns)
    try:
        flat = simdjson.Parser().parse(b"[" + text[:-1].replace(b"\n", b",") + b"]")
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
        for p, cats, raw in cells:
            try:
                texts = [cell.decode("utf-8") for cell in raw]
            except UnicodeDecodeError:
                return None  # the slow path names the line
            values[:, p], count = _csv_category_codes(texts, cats, chunk.first_line, names[p])
            if count:
                unseen[cats.index] = unseen.get(cats.index, 0) + count
    return values, ids


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
    heads = map(piece.__getitem__, map(slice, line_start.tolist(), starts))
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


def _csv_category_codes(texts: Sequence[str], cats: Categories, first_line: int,
                        name: str) -> tuple[np.ndarray, int]:
    """The codes of a category column's cells (line ``first_line`` on) and how many were
    values the model was not trained on."""
    codes = np.empty(len(texts))
    unseen = 0
    for i, text in enumerate(texts):
        code = _category_code(text, cats, first_line + i, name)
        codes[i] = code
        if code != code and text not in NA_TOKENS:
            unseen += 1
    return codes, unseen


def _category_code(cell: str, cats: Categories, line: int, name: str) -> float:
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


def _not_a_number(where: str, shown: str, schema: FeatureSchema | None,
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


def _csv_piece_slow(piece: Chunk, layout: CsvLayout,
                    unseen: dict[int, int]) -> tuple[np.ndarray, list[bytes] | None]:
    try:
        text = piece.data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayload(f"CSV lines {piece.first_line}-{piece.first_line + piece.data.count(10)} "
                             f"are not UTF-8 text", code="invalid_csv") from None
    width, j_id = layout.width, layout.id_index
    names = layout.scored_names
    kinds: list[Categories | None] = [None] * len(names)
    for p, cats in layout.categorical:
        kinds[p] = cats
    values: list[list[float]] = []
    ids: list[bytes] | None = [] if j_id is not None else None
    counts: dict[int, int] = {}
    for offset, line in enumerate(text.split("\n")[:-1]):
        number = piece.first_line + offset
        if not line.strip():
            if width == 1:  # an empty value or no row at all: skipping would shift later rows
                raise InvalidPayload(f"CSV line {number} is blank: in a one-column CSV write a "
                                     f"missing value as \"\"", code="invalid_csv")
            continue
        try:
            fields = next(csv.reader([line]))
        except csv.Error as exc:
            raise InvalidPayload(f"CSV line {number} cannot be read: {exc}",
                                 code="invalid_csv") from None
        if len(fields) != width:
            raise InvalidPayload(f"CSV line {number} has {len(fields)} fields; the header has "
                                 f"{width}", code="wrong_row_width")
        if ids is not None:
            ids.append(_csv_field(fields[j_id] if layout.id_is_feature else fields.pop(j_id)))
        row = []
        for name, cats, field in zip(names, kinds, fields):
            if cats is not None:
                code = _category_code(field, cats, number, name)
                if code != code and field not in NA_TOKENS:
                    counts[cats.index] = counts.get(cats.index, 0) + 1
                row.append(code)
                continue
            value = csv_number(field)
            if value is None:
                raise _not_a_number(f"CSV line {number}, column {name[:64]!r}", repr(field[:32]),
                                    layout.schema, "a number (nor a missing-value token such as "
                                    "NA or an empty cell)")
            row.append(value)
        values.append(row)
    for j, count in counts.items():  # the piece parsed: its unseen values count
        unseen[j] = unseen.get(j, 0) + count
    matrix = np.array(values, dtype=np.float64).reshape(len(values), len(names))
    return matrix, ids


# -- JSON Lines ----------------------------------------------------------------------------

def parse_jsonl_chunk(chunk: Chunk, features: Features, id_column: str | None,
                      unseen: dict[int, int] | None = None) -> tuple[np.ndarray, Ids | None]:
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
    return X[:rows], (Ids("json", ids) if ids is not None else None)


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
    for j, spelled in spellings.items():
        if len(spelled) > 1:  # two names of one feature: an error only within one record
            for i, rec in enumerate(records):
                if sum(key in rec for key in spelled) > 1:
                    schema.resolve_all([k for k in rec if k != id_column or
                                        schema.resolve(k) is not None],
                                       f"JSON Lines line {lines[at[i]]}")
    for j in range(len(schema.names)):
        spelled = spellings.get(j)
        if not spelled:
            out[:, j] = np.nan
            continue
        if len(spelled) == 1:
            column = list(map(dict.get, records, repeat(spelled[0])))
        else:
            column = [next((rec[k] for k in spelled if k in rec), None) for rec in records]
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
            raise _not_a_number(f"JSON Lines line {lines[at[i]]}, feature {name[:64]!r}",
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


# -- outputs -------------------------------------------------------------------------------

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


def writer_for(fmt: str, id_column: str | None, num_outputs: int) -> CsvWriter | JsonlWriter:
    return (CsvWriter if fmt == "csv" else JsonlWriter)(id_column, num_outputs)


def _csv_line(fields: Sequence[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(fields)
    return out.getvalue().encode("utf-8")
