"""Batch output formatting: exact float text, ids copied through, one column per class, and
non-finite predictions spelled as each format (and pandas) spells them."""

from __future__ import annotations

import numpy as np
import orjson

from shared.batch.output import CsvWriter, JsonlWriter, prediction_texts
from shared.batch.parsed_rows import Ids


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
