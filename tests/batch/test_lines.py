"""Batch input cut into lines, without storage: chunking at any block and chunk size, units within
chunks, and the longest line a row may take (refused when seen, before it is read whole)."""

from __future__ import annotations

from itertools import accumulate

import orjson
import pytest

from shared.batch.lines import line_chunks, max_line_bytes, unit_sizes
from shared.errors import InvalidPayload


@pytest.mark.parametrize("chunk_rows", [1, 3, 1000])
@pytest.mark.parametrize("block", [1, 7, 1 << 20])
def test_chunks_regroup_lines_whatever_the_block_size(chunk_rows, block):
    data = b"".join(b"%d,%d\n" % (i, i * 7) for i in range(10))
    blocks = [data[i:i + block] for i in range(0, len(data), block)]
    chunks = list(line_chunks(blocks, chunk_rows))
    assert b"".join(c.data for c in chunks) == data
    assert all(c.data.count(b"\n") == chunk_rows for c in chunks[:-1])
    assert [c.first_line for c in chunks] == list(range(1, 11, chunk_rows))


def test_a_last_line_without_newline_is_kept():
    assert [c.data for c in line_chunks([b"1,2\n3,4"], 10)] == [b"1,2\n3,4\n"]


@pytest.mark.parametrize("block", [1, 5, 1 << 20])
def test_units_are_small_and_mark_where_each_chunk_ends(block):
    data = b"".join(b"%d\n" % i for i in range(93))
    blocks = [data[i:i + block] for i in range(0, len(data), block)]
    units = list(line_chunks(blocks, 20, first_line=2, unit_rows=6, first_unit_rows=3))
    assert b"".join(u.data for u in units) == data
    lines = [u.data.count(b"\n") for u in units]
    ends = list(accumulate(lines))
    assert lines[0] == 3 and max(lines) <= 6
    assert [e for e, u in zip(ends, units) if u.ends_block] == [20, 40, 60, 80, 93]
    assert [u.first_line for u in units] == [2 + e - n for e, n in zip(ends, lines)]
    assert lines[1:4] == [6, 6, 5] and lines[4:8] == [5, 5, 5, 5]  # no small remainders


@pytest.mark.parametrize("rows,unit", [(50_000, 8192), (7, 8192), (8193, 8192), (10, 3), (1, 1)])
def test_unit_sizes_are_the_fewest_of_near_equal_size(rows, unit):
    sizes = unit_sizes(rows, unit)
    assert sum(sizes) == rows and max(sizes) <= unit and max(sizes) - min(sizes) <= 1
    assert len(sizes) == -(-rows // unit)


@pytest.mark.parametrize("block", [3, 64, 1 << 20])
def test_a_line_longer_than_its_columns_may_take_is_refused_when_seen(block):
    # Lines are held and parsed whole: their length bounds memory, whatever the input's size.
    limit = 100
    ok = b"1,2\n" + b"9" * (limit - 1) + b"\n" + b"3,4\n"  # a line of exactly the limit
    blocks = lambda data: [data[i:i + block] for i in range(0, len(data), block)]  # noqa: E731
    assert b"".join(c.data for c in line_chunks(blocks(ok), 2, max_line_bytes=limit)) == ok
    for data, line in ((b"1,2\n" + b"9" * limit + b"\n3,4\n", 2),  # ends with a newline
                       (b"1,2\n3,4\n" + b"9" * (10 * limit), 3)):  # never ends
        with pytest.raises(InvalidPayload) as err:
            list(line_chunks(blocks(data), 2, max_line_bytes=limit, code="invalid_csv"))
        assert err.value.code == "invalid_csv" and f"line {line} " in err.value.message


def test_one_huge_line_fails_before_it_is_read_whole():
    read = []

    def endless():  # 1 MiB blocks of digits without a newline, for ever
        while True:
            read.append(1)
            yield b"7" * (1 << 20)

    with pytest.raises(InvalidPayload):
        list(line_chunks(endless(), 10, max_line_bytes=max_line_bytes([f"f{i}" for i in range(100)])))
    assert len(read) == 1  # 100 columns may take ~11 KB: the first block is already too much


def test_the_longest_line_counts_every_column_and_its_name():
    names = ["alpha", "beta"]
    assert max_line_bytes(names) == len("alpha") + len("beta") + 2 * 64 + 4096
    # a JSON Lines record of doubles written in full fits easily
    record = orjson.dumps({"alpha": -1.2345678901234567e-308, "beta": 1.7976931348623157e308,
                           "id": "x" * 1000})
    assert len(record) < max_line_bytes(["alpha", "beta", "id"])
