"""An input blob read by byte ranges: a range as a stream of blocks (one GET each, read only as
the stream is consumed), its first line, and its cut into line-aligned ranges of about a given
size (the chunks of a fanned-out job), reading only a small window around each cut.

``read(offset, length)`` is the blob's ranged read; callers pin it to the version they saw
(an ETag), so that one job never mixes two versions of its input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from shared.batch.lines import PIECE_BYTES
from shared.errors import InvalidPayload

# One GET per block of a streamed input: small enough that the first unit is parsed soon,
# large enough to be cheap per byte (Azurite spent ~3x the CPU per byte on 4 MiB ranges).
READ_BYTES = 8 * 1024 * 1024
WINDOW_BYTES = 64 * 1024  # read around each cut to find the next line break
LINE_SEARCH_LIMIT = 16 * 1024 * 1024  # no line break this far after a cut: not line-based input


def range_blocks(read: Callable[[int, int], bytes], start: int, end: int,
                 block_bytes: int = READ_BYTES) -> Iterator[bytes]:
    """Bytes ``[start, end)`` as blocks of ``block_bytes``, one ``read(offset, length)`` each,
    read only as the stream is consumed (the SDK's own download reads 32 MiB first)."""
    for offset in range(start, end, block_bytes):
        yield read(offset, min(block_bytes, end - offset))


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
