"""Parsing model text: real models load; damaged ones are typed errors, never a crash.

LightGBM's own parser aborts the process on some damaged files, so the damage cases run in
a child process: a crash there fails the test instead of killing the test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from shared.errors import InvalidModel
from shared.models.model import parse_model


def test_each_demo_model_parses_with_its_metadata(demo_models):
    for name, demo in demo_models.items():
        model = parse_model(demo.path.read_bytes(), name=name, path=f"{name}.txt", version="v1",
                            last_modified=None)
        assert model.info.feature_names == demo.feature_names
        assert model.info.objective == demo.objective


@pytest.mark.parametrize("data", [b"", b"\xff\xfe", b"tree\n", b"{\"not\": \"a model\"}",
                                  b"tree\nversion=v4\nnum_class=1\n\nTree=0\n"])
def test_non_models_are_invalid(data):
    with pytest.raises(InvalidModel):
        parse_model(data, name="m", path="m.txt", version="v", last_modified=None)


CHILD = textwrap.dedent("""
    import json, random, sys
    from shared.errors import InvalidModel
    from shared.models.model import parse_model
    text = open(sys.argv[1], "rb").read()
    rng = random.Random(11)
    cases = [text[:rng.randrange(len(text))] for _ in range(150)]
    for _ in range(150):  # overwrite a short run of bytes somewhere
        at = rng.randrange(len(text)); junk = bytes(rng.randrange(32, 127) for _ in range(rng.randint(1, 8)))
        cases.append(text[:at] + junk + text[at + len(junk):])
    for _ in range(50):  # drop a line
        lines = text.split(b"\\n"); del lines[rng.randrange(len(lines))]; cases.append(b"\\n".join(lines))
    parsed = rejected = 0
    for case in cases:
        try:
            parse_model(case, name="m", path="m.txt", version="v", last_modified=None)
            parsed += 1
        except InvalidModel:
            rejected += 1
    print(json.dumps({"parsed": parsed, "rejected": rejected}))
""")


def test_damaged_models_are_rejected_without_crashing_the_process(demo_models):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(demo_models["churn_v1"].path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"parser crashed: {proc.stderr[-2000:]}"
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["parsed"] + counts["rejected"] == 350
    assert counts["rejected"] >= 150  # every truncation at least
