"""Batch jobs on a model trained from a pandas DataFrame with category columns and a column
name holding a space: CSV headers and JSON Lines keys use the names as trained, category
columns take category values (missing-value tokens missing, unseen values missing and
counted in the result), JSON Lines lists take codes. Predictions equal ``Booster.predict``
on the DataFrame pandas reads (category columns as ``pd.Categorical(values,
categories=<the training categories>)``), through real storage, fanned out or not."""

from __future__ import annotations

import dataclasses
import io
import warnings

import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.batch.csv_input import parse_csv_chunk
from shared.batch.csv_layout import csv_layout
from shared.batch.jsonl_input import parse_jsonl_chunk
from shared.batch.lines import Chunk, line_chunks, split_first_line
from shared.batch.runner import BatchJobs
from shared.errors import InvalidPayload
from shared.models.model import parse_model
from tests.batch_support import read_csv, rig  # noqa: F401

FEATURES = ["mean radius", "colour", "grade", "size"]  # as trained; stored "mean_radius"
COLOURS = ["red", "green", "blue", "n/a color"]  # "n/a color" is a value, "n/a" is missing
GRADES = [1, 2, 3, 5]


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    rng = np.random.default_rng(0)
    n = 3000
    df = pd.DataFrame({"mean radius": rng.normal(10, 3, n),
                       "colour": pd.Categorical(rng.choice(COLOURS, n)),
                       "grade": pd.Categorical(rng.choice(GRADES, n)),
                       "size": rng.integers(0, 5, n).astype(float)})
    y = (df["mean radius"] * 0.3 + (df["colour"] == "red") * 2 - (df["colour"] == "blue") * 1.5
         + (df["colour"] == "n/a color") * 0.8 + df["grade"].astype(int) * 0.7
         + rng.normal(0, 0.1, n))
    return lgb.train({"objective": "regression", "verbose": -1, "min_data_per_group": 5,
                      "cat_smooth": 1, "num_leaves": 15}, lgb.Dataset(df, y), 30)


@pytest.fixture(scope="module")
def model(booster):
    return parse_model(booster.model_to_string().encode(), name="shapes", path="shapes.txt",
                       version="1", last_modified=None)


def categories(booster) -> dict[str, list]:
    """The training categories of each category column, as LightGBM kept them."""
    return dict(zip(["colour", "grade"], booster.pandas_categorical))


def as_trained(values, cats) -> pd.Categorical:
    """``pd.Categorical(values, categories=cats)``: a value not among them becomes NaN (pandas
    3 warns it will refuse that some day; LightGBM's own predict sets categories the same way)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.Pandas4Warning)
        return pd.Categorical(values, categories=cats)


def reference_frame(booster, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """``frame`` (as pandas read it) in training order with category columns as trained, and
    how many values of each were not training categories (missing ones aside)."""
    ref = frame.reindex(columns=FEATURES).copy()
    unseen = {}
    for name, cats in categories(booster).items():
        values = ref[name]
        ref[name] = as_trained(values, cats)
        count = int(((ref[name].cat.codes == -1) & values.notna()).sum())
        if count:
            unseen[name] = count
    ref["mean radius"] = ref["mean radius"].astype(float)
    ref["size"] = ref["size"].astype(float)
    return ref, unseen


# A CSV a careful user might send: columns in another order, an id, names as trained,
# pandas' missing-value tokens, unseen values (one with a space pandas keeps), quotes,
# grades written as floats or with spaces, numbers pandas reads (+1, .5, inf).
CSV_LINES = [
    "a,red,10.5,1,2", "b,violet,11,2,", "c,NA,9,3,1", "d,,9,NA,1", 'e,"blue",8,5,3',
    "f, red,8,4,3", "g,n/a color,8,2.0,3", "h,n/a,1,1,1", "i,green,+1,  2 ,.5", "j,null,inf,1,1",
    'k,"red, dark",12,3,0', "l,None,7,#N/A,4", "m,blue,-0,1e0,2",
]
CSV_HEADER = "id,colour,mean radius,grade,size"


def csv_input(lines=CSV_LINES, repeat: int = 1) -> bytes:
    body = [f"{line.split(',', 1)[0]}{r},{line.split(',', 1)[1]}" for r in range(repeat)
            for line in lines]
    return (CSV_HEADER + "\n" + "\n".join(body) + "\n").encode()


def parse_csv(data: bytes, schema, id_column=None, chunk_rows=4):
    header, rest = split_first_line([data])
    layout = csv_layout(header, schema, id_column)
    unseen: dict[int, int] = {}
    parts = [parse_csv_chunk(c, layout, unseen).X for c in line_chunks(rest, chunk_rows, first_line=2)]
    return (np.vstack(parts) if parts else np.empty((0, 4))), unseen


# -- parsing ---------------------------------------------------------------------------------

def test_the_schema_pairs_the_categories_with_the_features(model, booster):
    schema = model.info.schema
    assert schema.names == ("mean_radius", "colour", "grade", "size")
    assert schema.resolve("mean radius") == 0 and schema.mapping == "mapped"
    assert {c.name: list(c.values) for c in schema.categorical} == categories(booster)


@pytest.mark.parametrize("chunk_rows", [1, 4, 100])
def test_csv_category_cells_are_values_read_as_pandas_and_lightgbm_read_them(model, booster,
                                                                            chunk_rows):
    data = csv_input()
    X, unseen = parse_csv(data, model.info.schema, "id", chunk_rows)
    ref, expected_unseen = reference_frame(booster, pd.read_csv(io.BytesIO(data)))
    assert np.array_equal(booster.predict(X), booster.predict(ref))
    assert {model.info.feature_names[j]: n for j, n in unseen.items()} == expected_unseen
    assert expected_unseen == {"colour": 3, "grade": 1}  # violet, " red", "red, dark"; 4


def test_plain_category_columns_keep_the_fast_path(model, booster, monkeypatch):
    import shared.batch.csv_input as csv_input

    rng = np.random.default_rng(3)
    n = 500
    values = {"colour": rng.choice(COLOURS + ["violet", "NA", ""], n),
              "mean radius": [repr(float(v)) for v in rng.normal(10, 3, n)],
              "grade": rng.choice(["1", "2", "3", "5", "4", "", "NA"], n),
              "size": rng.integers(0, 5, n).astype(str)}
    frame = pd.DataFrame(values)[["colour", "mean radius", "grade", "size"]]
    data = ("key," + ",".join(frame.columns) + "\n" + "".join(
        f"k{i}," + ",".join(row) + "\n" for i, row in enumerate(frame.itertuples(index=False)))).encode()
    monkeypatch.setattr(csv_input, "parse_piece_by_value", None)  # every piece parses fast
    X, unseen = parse_csv(data, model.info.schema, "key", chunk_rows=1000)
    ref, expected_unseen = reference_frame(booster, pd.read_csv(io.BytesIO(data)))
    assert np.array_equal(booster.predict(X), booster.predict(ref))
    assert {model.info.feature_names[j]: c for j, c in unseen.items()} == expected_unseen


@pytest.mark.parametrize("header,line,code,where", [
    ("mean radius,mean_radius", "1,2", "ambiguous_feature", "'mean_radius' twice"),
    ("mean radius,shape", "1,2", "unknown_column", "'shape'"),
    ("mean radius,grade", "1,abc", "invalid_category_value", "line 2, column 'grade': 'abc'"),
    ("grade,mean radius", "2,1_000", "non_numeric_value", "line 2, column 'mean radius'"),
])
def test_bad_csv_names_or_values_fail_with_a_code(model, header, line, code, where):
    with pytest.raises(InvalidPayload) as err:
        parse_csv(f"{header}\n{line}\n".encode(), model.info.schema)
    assert err.value.code == code and where in err.value.message


def jsonl_reference(booster, records: list[dict]) -> tuple[np.ndarray, dict[str, int]]:
    frame = pd.DataFrame.from_records(records)
    ref, unseen = reference_frame(booster, frame)
    return booster.predict(ref), unseen


JSON_RECORDS = [
    {"mean radius": 10.5, "colour": "red", "grade": 1, "size": 2},
    {"mean_radius": 11, "colour": "violet", "grade": 4, "size": None},  # stored name; unseen
    {"colour": None, "grade": None},
    {"mean radius": 9.25, "colour": "n/a color", "grade": 5.0, "size": 1},
    {"mean radius": 8, "colour": "NA", "grade": 3},  # in JSON "NA" is a value (unseen)
]


def test_jsonl_objects_take_category_values_and_names_as_trained(model, booster):
    data = b"".join(orjson.dumps(r) + b"\n" for r in JSON_RECORDS)
    unseen: dict[int, int] = {}
    X = parse_jsonl_chunk(Chunk(data, 1), model.info.schema, None, unseen).X
    records = [{("mean radius" if k == "mean_radius" else k): v for k, v in r.items()}
               for r in JSON_RECORDS]
    expected, expected_unseen = jsonl_reference(booster, records)
    assert np.array_equal(booster.predict(X), expected)
    assert {model.info.feature_names[j]: n for j, n in unseen.items()} == expected_unseen == \
        {"colour": 2, "grade": 1}


def test_jsonl_lists_take_codes_as_a_matrix_does_or_values(model, booster):
    """In a list, a number in a category position is a code (Booster.predict on a matrix), a
    string a category value (pandas' code for it, NaN when unseen)."""
    cats = categories(booster)
    coded = [[10.5, 3, 0, 2], [11, 7, None, 1], [9, None, 2.0, None]]  # 7: no such code
    valued = [[8, "blue", 3, 3], [7, "violet", 1, 1], [6, "n/a color", None, 0]]
    data = b"".join(orjson.dumps(r) + b"\n" for r in coded + valued)
    unseen: dict[int, int] = {}
    X = parse_jsonl_chunk(Chunk(data, 1), model.info.schema, None, unseen).X
    codes = as_trained([row[1] for row in valued], cats["colour"]).codes
    matrix = np.array([[np.nan if v is None else v for v in row] for row in coded] +
                      [[row[0], np.nan if c < 0 else c, np.nan if row[2] is None else row[2], row[3]]
                       for row, c in zip(valued, codes)], dtype=float)
    assert np.array_equal(booster.predict(X), booster.predict(matrix))
    assert {model.info.feature_names[j]: n for j, n in unseen.items()} == {"colour": 1}


@pytest.mark.parametrize("line,code,where", [
    (b'{"colour": 3}\n', "invalid_category_value", "JSON Lines line 1: feature 'colour'"),
    (b'{"mean radius": 1}\n{"grade": "2"}\n', "invalid_category_value", "line 2"),
    (b'[1, [2], 3, 4]\n', "invalid_category_value", "line 1"),
    (b'{"mean radius": 1, "mean_radius": 2}\n', "ambiguous_feature", "line 1"),
    (b'{"radius": 1}\n', "unknown_feature", "'radius'"),
    (b'{"size": "big"}\n', "non_numeric_value", "line 1, feature 'size': 'big'"),
])
def test_bad_jsonl_values_fail_naming_the_line(model, line, code, where):
    with pytest.raises(InvalidPayload) as err:
        parse_jsonl_chunk(Chunk(line, 1), model.info.schema, None)
    assert err.value.code == code and where in err.value.message


def test_a_model_whose_categories_cannot_be_placed_takes_codes_and_refuses_values():
    rng = np.random.default_rng(1)
    n = 600
    df = pd.DataFrame({"colour": pd.Categorical(rng.choice(COLOURS, n)),
                       "grade": rng.integers(0, 4, n)})
    y = (df["colour"] == "red") * 2.0 + df["grade"] + rng.normal(0, 0.1, n)
    # a categorical_feature list other than the DataFrame's category columns
    booster = lgb.train({"objective": "regression", "verbose": -1, "min_data_per_group": 5},
                        lgb.Dataset(df, y, categorical_feature=["colour", "grade"]), 5)
    schema = parse_model(booster.model_to_string().encode(), name="u", path="u.txt", version="1",
                         last_modified=None).info.schema
    assert schema.mapping == "unknown"
    X, _ = parse_csv(b"colour,grade\n3,1\n,2\n", schema)
    assert np.array_equal(booster.predict(X), booster.predict(np.array([[3, 1], [np.nan, 2]])))
    with pytest.raises(InvalidPayload) as err:
        parse_csv(b"colour,grade\nred,1\n", schema)
    assert err.value.code == "categories_unknown" and "line 2, column 'colour'" in err.value.message
    with pytest.raises(InvalidPayload) as err:
        parse_jsonl_chunk(Chunk(b'{"colour": "red"}\n', 1), schema, None)
    assert err.value.code == "categories_unknown" and "line 1" in err.value.message


# -- jobs through real storage -----------------------------------------------------------------

def jobs_with(rig, **changes) -> BatchJobs:
    return BatchJobs(dataclasses.replace(rig.settings, **changes), rig.jobs.service, rig.blobs,
                     rig.queues)


def predictions_csv(data: bytes) -> tuple[list[str], np.ndarray]:
    frame = pd.read_csv(io.BytesIO(data), dtype={"id": str})
    return frame["id"].tolist(), frame["prediction"].to_numpy()


def test_a_csv_job_equals_booster_predict_and_counts_unseen_values(rig, booster):
    rig.upload_model("shapes", booster)
    data = csv_input(repeat=3)
    rig.upload("inputs/shapes.csv", data)
    outcome = rig.run({"id": "cat-csv", "endpoint": "shapes", "input": {"blob": "inputs/shapes.csv"},
                       "id_column": "id"})
    assert outcome.status == "succeeded", outcome.result
    frame = pd.read_csv(io.BytesIO(data), dtype={"id": str})
    ref, unseen = reference_frame(booster, frame)
    ids, got = predictions_csv(rig.download("predictions/cat-csv.csv"))
    assert ids == frame["id"].tolist() and np.array_equal(got, booster.predict(ref))
    [result] = rig.sent_results()
    assert result["unseen_categories"] == unseen == {"colour": 9, "grade": 3}
    assert outcome.result["unseen_categories"] == unseen


def test_a_jsonl_job_equals_booster_predict_and_counts_unseen_values(rig, booster):
    rig.upload_model("shapes", booster)
    records = [{**r, "key": i} for i, r in enumerate(JSON_RECORDS)]
    rig.upload("inputs/shapes.jsonl", b"".join(orjson.dumps(r) + b"\n" for r in records))
    outcome = rig.run({"id": "cat-jsonl", "endpoint": "shapes",
                       "input": {"blob": "inputs/shapes.jsonl"}, "id_column": "key"})
    assert outcome.status == "succeeded", outcome.result
    lines = [orjson.loads(x) for x in rig.download("predictions/cat-jsonl.jsonl").splitlines()]
    renamed = [{("mean radius" if k == "mean_radius" else k): v for k, v in r.items()}
               for r in JSON_RECORDS]
    expected, unseen = jsonl_reference(booster, renamed)
    assert [x["key"] for x in lines] == list(range(len(records)))
    assert np.array_equal(np.array([x["prediction"] for x in lines]), expected)
    assert outcome.result["unseen_categories"] == unseen


def test_a_result_rebuilt_after_a_crash_still_counts_unseen_values(rig, booster, monkeypatch):
    """A worker that died after committing the output: the next delivery rebuilds the result
    from the output's metadata, counts included."""
    from shared.batch.records import Claim

    rig.upload_model("shapes", booster)
    rig.upload("inputs/crash.csv", csv_input())
    message = {"id": "cat-crash", "endpoint": "shapes", "input": {"blob": "inputs/crash.csv"},
               "id_column": "id"}
    real_commit = Claim.commit

    def crash(self, result):
        raise ConnectionError("died after committing the output")

    monkeypatch.setattr(Claim, "commit", crash)
    with pytest.raises(ConnectionError):
        rig.run(message)
    monkeypatch.setattr(Claim, "commit", real_commit)
    outcome = rig.run(message, dequeue_count=2)
    assert (outcome.status, outcome.scored) == ("succeeded", False), outcome.result["error"]
    assert outcome.result["unseen_categories"] == {"colour": 3, "grade": 1}


def test_a_job_without_unseen_values_reports_none(rig, booster):
    rig.upload_model("shapes", booster)
    rig.upload("inputs/seen.csv", b"colour,mean radius\nred,1\nNA,2\n,3\n")
    outcome = rig.run({"id": "cat-seen", "endpoint": "shapes", "input": {"blob": "inputs/seen.csv"}})
    assert outcome.status == "succeeded" and "unseen_categories" not in outcome.result


@pytest.mark.parametrize("fmt,in_body", [("csv", False), ("jsonl", False), ("csv", True)])
def test_fanned_out_or_not_a_category_job_gives_the_same_output_and_counts(rig, booster, fmt,
                                                                          in_body, monkeypatch):
    import shared.batch.unseen as unseen_module

    if in_body:  # counts too long for a chunk marker's metadata are kept in its body
        monkeypatch.setattr(unseen_module, "MAX_UNSEEN_METADATA", 0)
    rig.upload_model("shapes", booster)
    if fmt == "csv":
        data = csv_input(repeat=400)
    else:
        data = b"".join(orjson.dumps({**r, "key": f"{n}-{i}"}) + b"\n"
                        for n in range(800) for i, r in enumerate(JSON_RECORDS))
    rig.upload(f"inputs/big.{fmt}", data)
    message = {"endpoint": "shapes", "input": {"blob": f"inputs/big.{fmt}"},
               "id_column": "id" if fmt == "csv" else "key"}
    single = jobs_with(rig, batch_fanout_bytes=0).handle(
        orjson.dumps({"id": f"one-{fmt}", **message}), message_id=f"one-{fmt}")
    fanout = jobs_with(rig, batch_fanout_bytes=20_000, batch_fanout_chunk_bytes=16_000,
                       batch_chunk_rows=37)
    assert fanout.handle(orjson.dumps({"id": f"fan-{fmt}", **message}),
                         message_id=f"fan-{fmt}").status == "fanned_out"
    outcomes = rig.drain_chunks(fanout)
    [finisher] = [o for o in outcomes if o.finished]
    result = next(r for r in rig.sent_results() if r["id"] == f"fan-{fmt}")
    assert result["status"] == "succeeded" and result["chunks"] == len(outcomes) > 3
    assert result["unseen_categories"] == single.result["unseen_categories"]
    from shared.batch.fanout.markers import list_markers

    assert {m.unseen == "body" for m in list_markers(rig.batch, f"fan-{fmt}").values()} == {in_body}
    assert rig.download(f"predictions/fan-{fmt}.{fmt}") == \
        rig.download(f"predictions/one-{fmt}.{fmt}")
    if fmt == "csv":
        frame = pd.read_csv(io.BytesIO(data), dtype={"id": str})
        ref, unseen = reference_frame(booster, frame)
        assert result["unseen_categories"] == unseen
        assert np.array_equal(predictions_csv(rig.download("predictions/fan-csv.csv"))[1],
                              booster.predict(ref))


# -- anything else is a typed error ------------------------------------------------------------

_CELL = st.one_of(st.sampled_from(COLOURS + ["violet", "NA", "", " ", "n/a", "1", "2.0", "-0",
                                             "inf", "1_0", '"red"', '"a,b"', "\u0661", "true"]),
                  st.text(max_size=6))
_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(
    allow_nan=False, allow_infinity=False), st.sampled_from(COLOURS + ["violet", "x"])),
    lambda inner: st.lists(inner, max_size=5), max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(header=st.permutations(["id", "colour", "mean radius", "grade", "size"]),
       rows=st.lists(st.lists(_CELL, min_size=5, max_size=5), max_size=6))
def test_any_csv_parses_or_fails_with_a_typed_error(model, header, rows):
    text = ",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows)
    try:
        parse_csv(text.encode("utf-8", "surrogatepass"), model.info.schema, "id")
    except InvalidPayload as exc:
        assert exc.code in {"non_numeric_value", "invalid_category_value", "invalid_csv",
                            "wrong_row_width"}, exc


_BLANK = object()  # a blank line


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.one_of(
    st.dictionaries(st.sampled_from(["mean radius", "mean_radius", "colour", "grade", "size",
                                     "key", "other"]), _JSON, max_size=5),
    st.lists(_JSON, min_size=3, max_size=5), _JSON, st.just(_BLANK)), max_size=6),
    id_column=st.sampled_from([None, "key"]))
def test_any_json_lines_parse_or_fail_with_a_typed_error(model, lines, id_column):
    data = b"".join((b"" if line is _BLANK else orjson.dumps(line)) + b"\n" for line in lines)
    try:
        X = parse_jsonl_chunk(Chunk(data, 1), model.info.schema, id_column).X
    except InvalidPayload as exc:
        assert exc.code in {"non_numeric_value", "invalid_category_value", "invalid_records",
                            "wrong_row_width", "unknown_feature", "ambiguous_feature"}, exc
    else:
        assert X.shape == (sum(line is not _BLANK for line in lines), 4)
