"""CSV cells are read as pandas' ``read_csv`` reads them with its defaults, checked against
pandas itself: its missing-value tokens are NaN, a cell is a number only if pandas reads it
as a float (the same float), and what pandas reads as text (or as a boolean) fails the job
naming the line and column. The fast (simdjson) path and the per-value path agree."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas._libs.parsers import STR_NA_VALUES

import shared.batch.csv_input as csv_input
from shared.batch.cells import NA_TOKENS, csv_number
from shared.batch.csv_input import parse_csv_chunk
from shared.batch.csv_layout import csv_layout
from shared.batch.lines import line_chunks, split_first_line
from shared.errors import InvalidPayload

TEXT = "text"  # what pandas reads as text (or a boolean): an error here


def pandas_cell(data: str) -> float | str:
    """What pandas reads in column ``a`` of the CSV ``data`` (one row): a float, or TEXT."""
    inferred = pd.read_csv(io.StringIO(data))["a"]
    if inferred.dtype == bool:  # true/false: a boolean column in pandas, not a number
        return TEXT
    try:
        value = pd.read_csv(io.StringIO(data), dtype={"a": "float64"})["a"].iloc[0]
    except ValueError:  # "could not convert string to float"
        return TEXT
    return float(value)


def ours(data: str) -> float | str:
    blocks = [data.encode()]
    header, rest = split_first_line(blocks)
    layout = csv_layout(header, ("a", "b"), None)
    try:
        [chunk] = list(line_chunks(rest, 10, first_line=2))
        X = parse_csv_chunk(chunk, layout).X
    except InvalidPayload as exc:
        assert exc.code == "non_numeric_value", exc
        assert "line 2, column 'a'" in exc.message, exc.message
        return TEXT
    return float(X[0, 0])


def same(a: float | str, b: float | str) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if np.isnan(a) or np.isnan(b):
        return bool(np.isnan(a) and np.isnan(b))
    return a == b and np.signbit(a) == np.signbit(b)


CELLS = [
    # numbers, with the whitespace pandas allows around them
    "1", "-1", "+1", "007", "1e5", "1E5", "1e+05", "1E-5", ".5", "-.5", "+.5e-3", "5.", "5.e3",
    "0.1", "-0", "-0.0", "-00", "+0", "-0e0", " 1", "1 ", " 1 ", "\t1\t", "1\x0b", "\x0c1",
    "9007199254740993", "123456789012345678", "123456789012345678901234567890",
    "18446744073709551616", "-99999999999999999999", "1.7976931348623157e308",
    "1.7976931348623159e308", "1e400", "-1e400", "1e-400", "5e-324", "2.4703282292062328e-324",
    "0." + "0" * 400 + "1e401", "1" * 400, "0.30000000000000004", "1e0000000000000000000005",
    # infinities: any case, but no whitespace around them
    "inf", "-inf", "+inf", "Inf", "INF", "iNf", "infinity", "Infinity", "-Infinity", "+Infinity",
    "INFINITY", " inf", "inf ", "infinite",
    # pandas' missing-value tokens (exactly), and near misses
    "nan", "NaN", "-nan", "-NaN", "NA", "N/A", "n/a", "#N/A", "#N/A N/A", "#NA", "NULL", "null",
    "None", "<NA>", "1.#IND", "-1.#IND", "1.#QNAN", "-1.#QNAN", "", '""', '"NA"', '"nan"',
    "NAN", "+nan", " nan", "nan ", " NA", "na", "none", "Null", "nil", "-",
    # quoted numbers
    '"1"', '" 1"', '" "',
    # text: separators, other scripts' digits, unicode spaces, hex, broken numbers
    "1_000", "1_0.5", "1e1_0", "\u0661\u0662\u0663", "\u0967", "\uff11", "\u00a01", "1\u00a0",
    "\u20031", "\x1c1", "1\x1f", "0x10", "-0x1", "1d5", "1e", "1e+", "1.5e", "e5", ".", "1.5.2",
    "1 2", "--1", "+-1", "1e5.5", "- 1", "1 e5", " ", "  ", "\t", "abc", '"1,5"',
    # booleans: pandas reads a boolean column, not numbers
    "true", "True", "TRUE", "false", "FALSE",
]


@pytest.mark.parametrize("cell", CELLS, ids=repr)
def test_a_cell_reads_as_pandas_reads_it(cell):
    data = f"a,b\n{cell},1\n"
    assert same(ours(data), pandas_cell(data)), (cell, ours(data), pandas_cell(data))


def test_the_missing_value_tokens_are_pandas_defaults():
    assert NA_TOKENS == STR_NA_VALUES
    for token in sorted(STR_NA_VALUES):
        data = f"a,b\n{token},1\n"
        assert np.isnan(pandas_cell(data)) and np.isnan(ours(data))


_CHARS = st.sampled_from(list("0123456789+-.eE_ \t\x0bxinfatyINFATY") +
                         ["\u0661", "\u00a0", "\uff11", "#", "/", "<", ">"])


@settings(max_examples=300, deadline=None)
@given(st.text(_CHARS, max_size=8))
def test_any_cell_reads_as_pandas_reads_it(cell):
    data = f"a,b\n{cell},1\n"
    assert same(ours(data), pandas_cell(data)), (cell, ours(data), pandas_cell(data))


@pytest.mark.parametrize("cell", [c for c in CELLS if '"' not in c and "," not in c], ids=repr)
def test_csv_number_is_the_per_value_rule(cell):
    got = csv_number(cell)
    expected = pandas_cell(f"a,b\n{cell},1\n")
    assert same(TEXT if got is None else got, expected)


def test_the_fast_path_and_the_per_value_path_read_the_same_numbers(monkeypatch):
    """Plain JSON-style numbers go through simdjson, anything else per value: mixing cells of
    both kinds in one piece gives each its pandas value."""
    rng = np.random.default_rng(7)
    plain = [repr(float(v)) for v in rng.normal(0, 1e3, 200)] + ["0", "-0", "-0.0", "12", ""]
    other = ["+1", ".5", "NA", "inf", "-Infinity", " 7 ", "null", "1e400", "007"]
    cells = plain + other
    rows = [(cells[i], cells[(i * 7 + 3) % len(cells)]) for i in range(len(cells))]
    data = "a,b\n" + "".join(f"{x},{y}\n" for x, y in rows)
    expected = pd.read_csv(io.StringIO(data), dtype="float64").to_numpy()
    header, rest = split_first_line([data.encode()])
    layout = csv_layout(header, ("a", "b"), None)
    got = np.vstack([parse_csv_chunk(c, layout).X for c in line_chunks(rest, 50, first_line=2)])
    assert np.array_equal(got, expected, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(expected))
    # plain numbers alone never leave the fast path (an integer "-0" does: simdjson reads 0)
    monkeypatch.setattr(csv_input, "parse_piece_by_value", None)
    plain = [c for c in plain if c != "-0"]
    plain_data = "a,b\n" + "".join(f"{x},{y}\n" for x, y in zip(plain, plain[::-1]))
    header, rest = split_first_line([plain_data.encode()])
    fast = np.vstack([parse_csv_chunk(c, layout).X for c in line_chunks(rest, 50, first_line=2)])
    assert np.array_equal(fast, pd.read_csv(io.StringIO(plain_data), dtype="float64").to_numpy(),
                          equal_nan=True)


@pytest.mark.parametrize("cell,line", [("1_000", 3), ("\u0661\u0662", 4), (" inf", 3),
                                       ("NAN", 4), ("true", 3), (" ", 3)])
def test_text_in_a_numeric_column_fails_naming_line_and_column(cell, line):
    rows = ["1,2", "3,4", "5,6"]
    rows[line - 2] = f"{cell},9" if line == 3 else f"9,{cell}"
    data = ("a,b\n" + "\n".join(rows) + "\n").encode()
    header, rest = split_first_line([data])
    layout = csv_layout(header, ("a", "b"), None)
    with pytest.raises(InvalidPayload) as err:
        for chunk in line_chunks(rest, 10, first_line=2):
            parse_csv_chunk(chunk, layout)
    column = "a" if line == 3 else "b"
    assert err.value.code == "non_numeric_value"
    assert f"CSV line {line}, column {column!r}: {cell!r} is not a number" in err.value.message
