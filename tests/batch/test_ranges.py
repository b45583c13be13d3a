"""Byte ranges of an input blob read block by block, only when consumed."""

from __future__ import annotations

from shared.batch.ranges import range_blocks


def test_range_blocks_read_a_byte_range_in_order_only_when_consumed():
    data = bytes(range(256)) * 10
    calls = []

    def read(offset, length):
        calls.append((offset, length))
        return data[offset:offset + length]

    stream = range_blocks(read, 3, 2000, block_bytes=512)
    assert calls == []
    assert b"".join(stream) == data[3:2000]
    assert calls == [(3, 512), (515, 512), (1027, 512), (1539, 461)]
    assert list(range_blocks(read, 5, 5)) == []
