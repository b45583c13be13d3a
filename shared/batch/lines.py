"""Lines of a batch input: a stream of byte blocks regrouped into chunks of whole lines (one
output block each), cut into units (parsed and predicted at a time) and pieces (parsed at a
time, small enough to stay in the CPU cache); every line's length bounded as it streams by.

A line is held whole and parsed whole, so its length is what bounds memory
(:func:`max_line_bytes`). Line numbers travel with the bytes (``Chunk.first_line``) so that
errors name the line of the whole file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain

import numpy as np

from shared.errors import InvalidPayload

PIECE_BYTES = 1 << 20
NEWLINE = 10


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
        newlines = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == NEWLINE)
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
