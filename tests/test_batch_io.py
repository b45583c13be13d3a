"""Batch input parsing and output formatting, without storage: chunking at any block and chunk
size, units within chunks, CSV columns by name with the id anywhere, the slow path's cases,
exact float input and output."""

from __future__ import annotations

from itertools import accumulate

import numpy as np
import orjson
import pytest

from shared.batch.csv_input import parse_csv_chunk
from shared.batch.csv_layout import csv_layout
from shared.batch.jsonl_input import parse_jsonl_chunk
from shared.batch.lines import Chunk, line_chunks, max_line_bytes, split_first_line, unit_sizes
from shared.batch.output import CsvWriter, JsonlWriter, prediction_texts
from shared.batch.parsed_rows import Ids
from shared.batch.ranges import range_blocks
from shared.errors import InvalidPayload
from tests.batch_support import sample, to_csv, to_jsonl

NAMES = ("a", "b", "c")


def parse_csv(data: bytes, names=NAMES, id_column=None, chunk_rows=1000, block=1 << 20):
    blocks = [data[i:i + block] for i in range(0, len(data), block)]
    header, rest = split_first_line(blocks)
    layout = csv_layout(header, names, id_column)
    parts = [parse_csv_chunk(c, layout) for c in line_chunks(rest, chunk_rows, first_line=2)]
    X = np.vstack([p.X for p in parts]) if parts else np.empty((0, len(names)))
    ids = [i for p in parts if p.ids is not None for i in p.ids.values]
    return X, ids


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


def test_csv_values_equal_python_float_of_their_text(monkeypatch):
    import shared.batch.csv_input as csv_input

    monkeypatch.setattr(csv_input, "parse_piece_by_value", None)  # all take the fast path
    texts = ["0", "-1", "3.14159", "1e-7", "-2.5E+10", "123456789012345678", "0.1", "5e-324",
             "1.7976931348623157e308", "", "2.2250738585072014e-308", "9007199254740993",
             "0.30000000000000004", "-7.0e0"]
    rows = [texts[i:] + texts[:i] for i in range(len(texts))]  # every text in every column
    names = [f"f{j}" for j in range(len(texts))]
    data = (",".join(names) + "\n" + "".join(",".join(r) + "\n" for r in rows)).encode()
    got, _ = parse_csv(data, names=names)
    expected = [[float(t) if t else np.nan for t in r] for r in rows]
    assert np.array_equal(got, expected, equal_nan=True)


@pytest.mark.parametrize("position", [0, 1, 3])
def test_csv_values_are_exact_and_the_id_column_may_be_anywhere(position):
    X = sample(3, 50, seed=1)
    ids = [f"id-{i}" for i in range(50)]
    data = to_csv(X, NAMES, ids, "key", id_position=position)
    got, got_ids = parse_csv(data, id_column="key")
    assert np.array_equal(got, X, equal_nan=True)
    assert got_ids == [i.encode() for i in ids]


def test_csv_columns_are_matched_by_name_and_missing_features_are_nan():
    X = sample(3, 20, seed=2)
    data = to_csv(X[:, [2, 0]], ["c", "a"])
    got, _ = parse_csv(data)
    assert np.array_equal(got[:, [2, 0]], X[:, [2, 0]], equal_nan=True)
    assert np.isnan(got[:, 1]).all()


@pytest.mark.parametrize("id_position", [None, 0, 2, 3])
def test_empty_cells_anywhere_are_nan_with_or_without_an_id_column(id_position):
    lines = [["", "", ""], ["1", "", ""], ["", "", "2"], ["", "3", ""], ["4", "5", "6"]]
    expected = [[float(t) if t else np.nan for t in line] for line in lines]
    header = ["a", "b", "c"]
    if id_position is not None:
        header.insert(id_position, "key")
        lines = [line[:id_position] + [f"k{i}"] + line[id_position:] for i, line in enumerate(lines)]
    data = "\n".join(",".join(r) for r in [header, *lines]).encode() + b"\n"
    got, ids = parse_csv(data, id_column="key" if id_position is not None else None)
    assert np.array_equal(got, expected, equal_nan=True)
    assert ids == ([f"k{i}".encode() for i in range(5)] if id_position is not None else [])


def test_an_only_id_column_gives_all_nan_rows():
    got, ids = parse_csv(b"key\nx\ny\n", id_column="key")
    assert got.shape == (2, 3) and np.isnan(got).all() and ids == [b"x", b"y"]


def test_the_slow_path_handles_quotes_crlf_blank_lines_nan_and_plus_signs():
    data = (b'\xef\xbb\xbfkey,a,b,c\r\n"x,1",+1,.5,nan\r\n\r\n"y""2", 2 ,1e3,\r\n')
    got, ids = parse_csv(data, id_column="key")
    assert np.array_equal(got, [[1, 0.5, np.nan], [2, 1000, np.nan]], equal_nan=True)
    assert ids == [b'"x,1"', b'"y""2"']


@pytest.mark.parametrize("data,code,where", [
    (b"a,b,c\n1,2,3\n1,2\n", "wrong_row_width", "line 3"),
    (b"a,b,c\n1,2,3\n1,x,3\n", "non_numeric_value", "line 3, column 'b'"),
    (b"a,b,c\n1,true,3\n", "non_numeric_value", "line 2"),
    (b"a,b,c\n1,1_000,3\n", "non_numeric_value", "line 2, column 'b': '1_000'"),
    ("a,b,c\n1,2,3\n1,2,\u0661\u0662\n".encode(), "non_numeric_value", "line 3, column 'c'"),
    (b"a,b,c\n1,2,3\n[1,2,3]\n", "non_numeric_value", "line 3"),  # never read as a JSON list
    (b"a,b,c\n{1,2,3}\n", "non_numeric_value", "line 2"),
    (b"a,b,zz\n1,2,3\n", "unknown_column", "'zz'"),
    (b"a,b,a\n1,2,3\n", "invalid_csv", "twice"),
    (b"", "invalid_csv", "header"),
])
def test_bad_csv_names_the_fault(data, code, where):
    with pytest.raises(InvalidPayload) as err:
        parse_csv(data)
    assert err.value.code == code and where in err.value.message


def test_a_missing_id_column_is_an_error():
    with pytest.raises(InvalidPayload) as err:
        parse_csv(b"a,b,c\n1,2,3\n", id_column="customer_id")
    assert err.value.code == "missing_id_column"


def test_jsonl_records_with_ids_of_any_json_type():
    X = sample(3, 30, seed=4)
    ids = [i if i % 2 else f"s{i}" for i in range(30)]
    data = to_jsonl(X, NAMES, ids, "key")
    parsed = parse_jsonl_chunk(Chunk(data, 1), NAMES, "key")
    assert np.array_equal(parsed.X, X, equal_nan=True) and parsed.ids.values == ids


@pytest.mark.parametrize("data,code,line", [
    (b'{"a": 1}\n{"a": "x"}\n', "non_numeric_value", "line 2"),
    (b'{"a": 1}\n{"zz": 1}\n', "unknown_feature", "line 2"),
    (b'{"a": 1}\n[1, 2]\n', "wrong_row_width", "line 2"),  # a list holds every feature
    (b'{"a": 1}\n"x"\n', "invalid_records", "line 2"),
    (b'[1, 2, 3]\n[1, "x", 3]\n', "non_numeric_value", "line 2, feature 'b'"),
    (b'{"a": 1}\n\n{"a": 1\n', "invalid_json", "line 3"),
    (b'{"a": true}\n', "non_numeric_value", "line 1"),
])
def test_bad_jsonl_names_the_line(data, code, line):
    with pytest.raises(InvalidPayload) as err:
        parse_jsonl_chunk(Chunk(data, 1), NAMES, None)
    assert err.value.code == code and line in err.value.message


def test_prediction_text_round_trips_exactly():
    values = np.random.default_rng(3).random(1000) ** 9
    assert np.array_equal(np.array([float(t) for t in prediction_texts(values)]), values)
    multi = np.random.default_rng(4).random((5, 3))
    assert [list(map(float, t.split(b","))) for t in prediction_texts(multi)] == multi.tolist()


def test_writers_keep_ids_and_write_one_column_per_class():
    ids = Ids("json", ["a,b", 7, None])
    csv_out = CsvWriter("key", 2)
    assert csv_out.header == b"key,p0,p1\n"
    assert csv_out.rows(np.array([[0.25, 0.75]] * 3), ids) == \
        b'"a,b",0.25,0.75\n7,0.25,0.75\n,0.25,0.75\n'
    jsonl = JsonlWriter("key", 2).rows(np.array([[0.25, 0.75]] * 3), ids)
    assert [orjson.loads(line) for line in jsonl.splitlines()] == [
        {"key": "a,b", "prediction": [0.25, 0.75]}, {"key": 7, "prediction": [0.25, 0.75]},
        {"key": None, "prediction": [0.25, 0.75]}]
    csv_ids = Ids("csv", [b'"q""x"', b"plain"])
    assert JsonlWriter("key", 1).rows(np.array([0.5, 1.0]), csv_ids) == \
        b'{"key":"q\\"x","prediction":0.5}\n{"key":"plain","prediction":1.0}\n'


# -- inputs a careful user might send (found by review) -------------------------------------

@pytest.mark.parametrize("quoted", [False, True])
def test_an_id_column_that_is_also_a_feature_is_scored_and_copied_through_as_in_json_lines(quoted):
    rows = b'"25",1,2\n"85",3,4\n' if quoted else b"25,1,2\n85,3,4\n"
    X, ids = parse_csv(b"a,b,c\n" + rows, id_column="a")
    assert X.tolist() == [[25.0, 1.0, 2.0], [85.0, 3.0, 4.0]]
    assert [bytes(i).strip(b'"') for i in ids] == [b"25", b"85"]
    parsed = parse_jsonl_chunk(Chunk(b'{"a": 25, "b": 1, "c": 2}\n{"a": 85, "b": 3, "c": 4}\n', 1),
                               NAMES, "a")
    assert np.array_equal(parsed.X, X) and parsed.ids.values == [25, 85]


def test_a_blank_line_in_a_one_column_csv_is_refused_not_skipped():
    # Skipping it would shift every later row onto the wrong input (no id to join back by).
    with pytest.raises(InvalidPayload) as err:
        parse_csv(b"a\n10\n\n40\n", names=("a",))
    assert err.value.code == "invalid_csv" and "line 3" in str(err.value)
    X, _ = parse_csv(b'a\n10\n""\n40\n', names=("a",))  # a missing value, written as ""
    assert X[:, 0].tolist()[0] == 10 and np.isnan(X[1, 0]) and X[2, 0] == 40


def test_two_json_values_on_one_line_are_refused_not_read_as_two_rows():
    lines = [b'{"a": %d}' % i for i in range(50)]
    lines[20] = b'{"a": 1},{"a": 2}'
    with pytest.raises(InvalidPayload) as err:
        parse_jsonl_chunk(Chunk(b"\n".join(lines) + b"\n", 1), NAMES, None)
    assert err.value.code == "invalid_json" and "line 21" in str(err.value)


@pytest.mark.parametrize("data,where", [
    (b"a,b,c\r1,2,3\r4,5,6\r", "CR line breaks"),                          # old Mac line ends
    (b'k,a,b,c\n"' + b"x" * 140_000 + b'",1,2,3\n', "line 2"),              # a huge quoted field
    (b"k,a,b,c\ncaf\xe9,1,2,3\n", "not UTF-8"),                             # a Latin-1 id
])
def test_unreadable_csv_is_a_failed_job_with_a_code_not_a_crash(data, where):
    with pytest.raises(InvalidPayload) as err:
        parse_csv(data, id_column="k" if data.startswith(b"k") else None)
    assert err.value.code == "invalid_csv" and where in str(err.value)


@pytest.mark.parametrize("id_column", [None, "key"])
def test_json_lines_of_blank_lines_only_are_no_rows(id_column):
    parsed = parse_jsonl_chunk(Chunk(b"\n \n\n", 1), NAMES, id_column)
    assert parsed.X.shape == (0, 3) and (parsed.ids is None or parsed.ids.values == [])
    lines = b'{"a": 1, "key": 5}\n\n\n[1, 2, 3, 4]\n' if id_column is None else \
        b'{"a": 1, "key": 5}\n\n\n{"b": 2, "key": 6}\n'
    parsed = parse_jsonl_chunk(Chunk(lines, 1), (*NAMES, "key") if id_column is None else NAMES,
                               id_column)
    assert parsed.X.shape[0] == 2


def test_a_bom_at_the_start_of_json_lines_is_ignored_as_in_csv():
    X = parse_jsonl_chunk(Chunk(b'\xef\xbb\xbf{"a": 1, "b": 2, "c": 3}\n', 1), NAMES, None).X
    assert X.tolist() == [[1.0, 2.0, 3.0]]


def test_ids_whose_bytes_only_form_utf8_together_are_still_refused():
    with pytest.raises(InvalidPayload) as err:
        parse_csv(b"k,a,b,c\nx\xc3,1,2,3\n\xa9y,4,5,6\n", id_column="k")
    assert err.value.code == "invalid_csv"


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


# -- non-finite predictions ------------------------------------------------------------------

def test_non_finite_predictions_are_inf_in_csv_and_proto3_strings_in_json():
    import io

    import pandas as pd

    values = np.array([0.25, np.inf, -np.inf, np.nan, -0.0, 1e308])
    csv_rows = CsvWriter("key", 1).rows(values, Ids("json", list("abcdef")))
    back = pd.read_csv(io.BytesIO(CsvWriter("key", 1).header + csv_rows))
    assert np.array_equal(back["prediction"].to_numpy(), values, equal_nan=True)  # as pandas reads
    assert csv_rows.splitlines()[1:4] == [b"b,inf", b"c,-inf", b"d,"]
    docs = [orjson.loads(line) for line in JsonlWriter(None, 1).rows(values, None).splitlines()]
    assert [d["prediction"] for d in docs] == [0.25, "Infinity", "-Infinity", "NaN", -0.0, 1e308]
    multi = np.array([[0.5, np.inf], [np.nan, -np.inf], [0.1, 0.2]])
    lines = JsonlWriter("k", 2).rows(multi, Ids("json", [1, None, "z"])).splitlines()
    assert [orjson.loads(line) for line in lines] == [
        {"k": 1, "prediction": [0.5, "Infinity"]}, {"k": None, "prediction": ["NaN", "-Infinity"]},
        {"k": "z", "prediction": [0.1, 0.2]}]
    assert CsvWriter(None, 2).rows(multi, None) == b"0.5,inf\n,-inf\n0.1,0.2\n"
    # alone on its line, NaN is "" (a blank line would be skipped), as pandas writes it
    alone = CsvWriter(None, 1)
    written = alone.header + alone.rows(values, None)
    assert written.splitlines()[2:5] == [b"inf", b"-inf", b'""'] == \
        pd.DataFrame({"p": values}).to_csv(index=False).encode().splitlines()[2:5]
    assert np.array_equal(pd.read_csv(io.BytesIO(written))["prediction"].to_numpy(), values,
                          equal_nan=True)
