"""The compiler's processes: the forest cut at tree blocks into parts of about equal size,
compiled in parallel, adding the trees in LightGBM's order, so raw scores equal LightGBM's to
the bit whatever the number of parts."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from shared.models.compiled.build import compile_forest, load_forest, model_text, traits_of
from shared.models.compiled.target import can_compile, host_problem
from shared.models.compiled.worker import split_blocks
from shared.models.model import parse_model


@pytest.mark.parametrize("sizes, parts", [([5] * 10, 3), ([100, 1, 1, 1, 1], 2), ([3], 4),
                                          ([1, 2, 3, 4, 5, 6, 7], 7), ([9, 9], 1)])
def test_parts_are_contiguous_cover_every_block_and_are_never_empty(sizes, parts):
    ranges = split_blocks(sizes, parts)
    assert len(ranges) == min(parts, len(sizes))
    assert ranges[0][0] == 0 and ranges[-1][1] == len(sizes)
    assert all(a < b for a, b in ranges) and all(ranges[i][1] == ranges[i + 1][0]
                                                 for i in range(len(ranges) - 1))


def test_equal_blocks_split_evenly():
    assert split_blocks([5] * 12, 3) == [(0, 4), (4, 8), (8, 12)]


@pytest.mark.skipif(not can_compile() or host_problem() is not None,
                    reason="needs lleaves and an x86-64-v3 Linux machine")
def test_one_part_or_several_give_the_same_bits_as_lightgbm():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(3000, 6))
    y = rng.integers(0, 3, 3000)
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "num_leaves": 7,
                         "verbosity": -1, "seed": 2}, lgb.Dataset(X, y), 40)  # 120 trees: 4 blocks
    model = parse_model(booster.model_to_string().encode(), name="m", path="m.txt", version="1",
                        last_modified=None)
    text = model_text(model)
    rows = rng.normal(size=(500, 6))
    rows[rng.random(rows.shape) < 0.1] = np.nan
    expected = booster.predict(rows, raw_score=True)
    for parts in (1, 3):
        objects, _, used = compile_forest(text, parts=parts, timeout=600, nice=0)
        assert used == parts and len(objects) == (1 if parts == 1 else parts + 1)  # + the root
        forest = load_forest(objects, traits_of(model, text))
        assert np.array_equal(forest.predict(rows, raw_score=True), expected)
        assert np.array_equal(forest.predict(rows), booster.predict(rows))
