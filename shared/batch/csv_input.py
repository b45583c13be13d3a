"""CSV input: a chunk of lines parsed into rows in feature order, and its ids.

Each piece of the chunk (about ``PIECE_BYTES``) takes the vectorised path when it is plain
numeric CSV (``shared.batch.csv_fast``), else the per-value path here, which reads every cell
with pandas' rules (``shared.batch.cells``) and names the offending line. Blank lines are
skipped; CRLF line ends are read as LF.
"""

from __future__ import annotations

import csv

import numpy as np

from shared.batch.cells import NA_TOKENS, category_code, csv_number, not_a_number
from shared.batch.csv_fast import parse_plain_piece
from shared.batch.csv_layout import CsvLayout
from shared.batch.lines import Chunk, pieces
from shared.batch.parsed_rows import Ids, ParsedRows, csv_field
from shared.errors import InvalidPayload
from shared.models.schema import Categories


def parse_csv_chunk(chunk: Chunk, layout: CsvLayout,
                    unseen: dict[int, int] | None = None) -> ParsedRows:
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
        parsed = parse_plain_piece(piece, layout, counts)
        if parsed is None:
            parsed = parse_piece_by_value(piece, layout, counts)
        n = len(parsed.X)
        if layout.in_order:
            X[rows:rows + n] = parsed.X
        else:
            X[rows:rows + n, layout.targets] = parsed.X
        if ids is not None and parsed.ids is not None:
            ids.extend(parsed.ids.values)
        rows += n
    return ParsedRows(X[:rows], Ids("csv", ids) if ids is not None else None)


def parse_piece_by_value(piece: Chunk, layout: CsvLayout, unseen: dict[int, int]) -> ParsedRows:
    """Parse a piece cell by cell (any CSV pandas reads: quotes, missing-value tokens,
    ``+1``, ``inf``...); a cell that is not a number, or a line of the wrong width, raises
    :class:`InvalidPayload` naming its line."""
    try:
        text = piece.data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayload(f"CSV lines {piece.first_line}-{piece.first_line + piece.data.count(10)} "
                             f"are not UTF-8 text", code="invalid_csv") from None
    width, j_id = layout.width, layout.id_index
    names = layout.scored_names
    kinds: list[Categories | None] = [None] * len(names)
    for p, placed in layout.categorical:
        kinds[p] = placed
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
        if ids is not None and j_id is not None:
            ids.append(csv_field(fields[j_id] if layout.id_is_feature else fields.pop(j_id)))
        row = []
        for name, cats, field in zip(names, kinds, fields):
            if cats is not None:
                code = category_code(field, cats, number, name)
                if code != code and field not in NA_TOKENS:
                    counts[cats.index] = counts.get(cats.index, 0) + 1
                row.append(code)
                continue
            value = csv_number(field)
            if value is None:
                raise not_a_number(f"CSV line {number}, column {name[:64]!r}", repr(field[:32]),
                                   layout.schema, "a number (nor a missing-value token such as "
                                   "NA or an empty cell)")
            row.append(value)
        values.append(row)
    for j, count in counts.items():  # the piece parsed: its unseen values count
        unseen[j] = unseen.get(j, 0) + count
    matrix = np.array(values, dtype=np.float64).reshape(len(values), len(names))
    return ParsedRows(matrix, Ids("csv", ids) if ids is not None else None)
