"""CSV batch input, without storage: columns by name with the id anywhere, exact float values,
the slow path's cases (quotes, CRLF, blank lines), and a code naming the line and column for
every fault (pandas' own reading rules: test_cells.py)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.batch.csv_input import parse_csv_chunk
from shared.batch.csv_layout import csv_layout
from shared.batch.jsonl_input import parse_jsonl_chunk
from shared.batch.lines import Chunk, line_chunks, split_first_line
from shared.errors import InvalidPayload
from tests.batch_support import sample, to_csv

NAMES = ("a", "b", "c")


def parse_csv(data: bytes, names=NAMES, id_column=None, chunk_rows=1000, block=1 << 20):
    blocks = [data[i:i + block] for i in range(0, len(data), block)]
    header, rest = split_first_line(blocks)
    layout = csv_layout(header, names, id_column)
    parts = [parse_csv_chunk(c, layout) for c in line_chunks(rest, chunk_rows, first_line=2)]
    X = np.vstack([p.X for p in parts]) if parts else np.empty((0, len(names)))
    ids = [i for p in parts if p.ids is not None for i in p.ids.values]
    return X, ids


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


@pytest.mark.parametrize("data,where", [
    (b"a,b,c\r1,2,3\r4,5,6\r", "CR line breaks"),                          # old Mac line ends
    (b'k,a,b,c\n"' + b"x" * 140_000 + b'",1,2,3\n', "line 2"),              # a huge quoted field
    (b"k,a,b,c\ncaf\xe9,1,2,3\n", "not UTF-8"),                             # a Latin-1 id
])
def test_unreadable_csv_is_a_failed_job_with_a_code_not_a_crash(data, where):
    with pytest.raises(InvalidPayload) as err:
        parse_csv(data, id_column="k" if data.startswith(b"k") else None)
    assert err.value.code == "invalid_csv" and where in str(err.value)


def test_ids_whose_bytes_only_form_utf8_together_are_still_refused():
    with pytest.raises(InvalidPayload) as err:
        parse_csv(b"k,a,b,c\nx\xc3,1,2,3\n\xa9y,4,5,6\n", id_column="k")
    assert err.value.code == "invalid_csv"
