"""Rows bodies read directly (read_rows_body), without decoding them whole: taken only when read
as the full parser reads them, with the simdjson parser each thread keeps."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import InvalidJson, InvalidPayload, PayloadTooLarge
from shared.models.schema import FeatureSchema
from shared.payloads import decode_json, parse_score_body
from shared.payloads.common import dumps

# -- read_rows_body: the direct path takes a body only when it reads it as the full parser --


def full_parser(body: bytes, width: int, max_rows: int = 100):
    """What the full path makes of a body, or the error code it raises."""
    try:
        schema = FeatureSchema(tuple(f"f{i}" for i in range(width)))
        return parse_score_body(decode_json(body), schema, max_rows).X
    except (InvalidJson, InvalidPayload, PayloadTooLarge) as exc:
        return exc.code


@pytest.mark.parametrize("body", [
    b'{"rows": [[1.5, 2, -3e-5]]}',
    b'{"rows":[[0.1,0.2,0.30000000000000004],[5e-324,1.7976931348623157e308,-0.0]]}',
    b'{ "rows" : [ [ 1 , 2 , 3 ] ,\n [ 4 , 5 , 6 ] ] }',
    b'{"rows": [[9007199254740993, 18446744073709551615, -9223372036854775808]]}',
    b'{"rows": [[1e-400, 2.2250738585072014e-308, 123456789012345678901234567890.5]]}',
])
def test_plain_number_rows_are_read_exactly_as_the_full_parser_reads_them(body):
    from shared.payloads.rows import read_rows_body

    X = read_rows_body(body, 100)
    assert X is not None and X.dtype == np.float64
    expected = full_parser(body, X.shape[1])
    assert np.array_equal(X, expected) and np.array_equal(np.signbit(X), np.signbit(expected))


@pytest.mark.parametrize("body", [
    b'{"rows": [[1, null, 3]]}', b'{"rows": [[1, true, 3]]}', b'{"rows": [[1, "2", 3]]}',
    b'{"rows": [[1, [2], 3]]}', b'{"rows": [[[1]], [2]]}', b'{"rows": [[1, {"a": 2}, 3]]}',
    b'{"rows": [[1, 2, 3], [4, 5]]}', b'{"rows": [[1, 2, 3], 4]}', b'{"rows": []}',
    b'{"rows": [[]]}', b'{"rows": [1, 2, 3]}', b'{"rows": {"a": 1}}', b'{"rows": 5}',
    b'{"rows": [[1, 2, 3]], "options": {"raw_score": true}}', b'{"records": [{"f0": 1}]}',
    b'{"rows": [[1, 2, 3]], "rows": [[4, 5, 6]]}', b'{"rows": [[1, 2, 3]]', b'[[1, 2, 3]]',
    b'{"rows": [[1, 2, NaN]]}', b'{"rows": [[1, 2, 1e400]]}', b'{"rows": [[01, 2, 3]]}',
    b'{"rows": [[1, 2, 3]]} x', b"", b'{"rows": [[1, 2, 3]]}\xff',
    b'\xef\xbb\xbf{"rows": [[1, 2, 3]]}',  # a BOM: orjson refuses it, so must this path
    b'{"rows": [[' + b",".join([b"1"] * 3) + b"]" + b", [1, 2, 3]" * 100 + b"]}",  # 101 rows
])
def test_anything_else_is_left_to_the_full_parser(body):
    from shared.payloads.rows import read_rows_body

    assert read_rows_body(body, 100) is None


def test_directly_read_values_outlive_the_parser():
    import gc

    from shared.payloads.rows import read_rows_body

    rows = np.random.default_rng(2).normal(size=(50, 20))
    X = read_rows_body(dumps({"rows": rows}), 100)
    gc.collect()
    junk = [bytes(1000) for _ in range(10_000)]  # reuse whatever memory was freed
    assert np.array_equal(X, rows) and len(junk) == 10_000


# -- the parser each thread keeps for direct reads ---------------------------------------------


def test_a_matrix_read_earlier_is_untouched_when_the_threads_parser_reads_the_next_body():
    from shared.payloads.rows import read_rows_body

    first, second = np.random.default_rng(3).normal(size=(2, 4, 10))
    X = read_rows_body(dumps({"rows": first}), 100)
    Y = read_rows_body(dumps({"rows": second}), 100)
    assert np.array_equal(X, first) and np.array_equal(Y, second)


def test_a_document_someone_still_holds_does_not_stop_the_next_direct_read():
    from shared.payloads import simd
    from shared.payloads.rows import read_rows_body

    held = simd.parse(b'{"rows": [[1, 2]]}')["rows"]  # keeps the thread's parser's document
    assert read_rows_body(b'{"rows": [[3, 4]]}', 100).tolist() == [[3.0, 4.0]]
    assert held.as_list() == [[1, 2]]  # ... which is still intact


def test_invalid_json_leaves_the_threads_parser_usable():
    from shared.payloads import simd
    from shared.payloads.rows import read_rows_body

    with pytest.raises(ValueError):
        simd.parse(b'{"rows": [[1, 2]')
    assert read_rows_body(b'{"rows": [[5, 6]]}', 100).tolist() == [[5.0, 6.0]]


def test_every_thread_reads_with_a_parser_of_its_own():
    import threading

    from shared.payloads.rows import read_rows_body

    barrier = threading.Barrier(4)
    results: dict[int, list] = {}

    def read(k: int) -> None:
        body = dumps({"rows": [[float(k)] * 50] * 20})
        barrier.wait()
        results[k] = [read_rows_body(body, 100) for _ in range(300)]

    threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(X, np.full((20, 50), float(k))) for k in range(4)
               for X in results[k])


def test_a_large_body_gets_a_parser_of_its_own_so_the_kept_one_stays_small():
    from shared.payloads import simd
    from shared.payloads.rows import read_rows_body

    read_rows_body(b'{"rows": [[1, 2]]}', 100)
    kept = simd._local.parser
    big = dumps({"rows": np.ones((2_000, 10))})
    assert len(big) > simd.REUSE_MAX_BYTES
    assert read_rows_body(big, 10_000).shape == (2_000, 10)
    assert simd._local.parser is kept
