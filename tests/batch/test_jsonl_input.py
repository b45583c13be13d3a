"""JSON Lines batch input, without storage: records or lists, ids of any JSON type, blank
lines, a BOM, and a code naming the line for every fault."""

from __future__ import annotations

import numpy as np
import pytest

from shared.batch.jsonl_input import parse_jsonl_chunk
from shared.batch.lines import Chunk
from shared.errors import InvalidPayload
from tests.batch_support import sample, to_jsonl

NAMES = ("a", "b", "c")


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


def test_two_json_values_on_one_line_are_refused_not_read_as_two_rows():
    lines = [b'{"a": %d}' % i for i in range(50)]
    lines[20] = b'{"a": 1},{"a": 2}'
    with pytest.raises(InvalidPayload) as err:
        parse_jsonl_chunk(Chunk(b"\n".join(lines) + b"\n", 1), NAMES, None)
    assert err.value.code == "invalid_json" and "line 21" in str(err.value)


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
