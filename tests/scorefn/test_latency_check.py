"""The pre-deployment latency check: a model measured on this machine through the app's own
code path, beside the reference model measured in the same run; figures stored with the
model blob and read back from its metadata; budgets enforced by upload-model (and, in
tests/scorefn/commands/test_router.py, by router set) unless --force."""

from __future__ import annotations

import inspect
import re
import time

import numpy as np
import pytest

from scorefn.__main__ import main as cli
from scorefn.latency_check import check_latency, reference_text
from scorefn.model_files import model_shape
from shared.models.latency_figures import (
    LATENCY_METADATA_KEYS,
    LatencyFigures,
    read_latency_figures,
    without_latency_figures,
)
from tests.conftest import upload as put_blob

lgb = pytest.importorskip("lightgbm")

QUICK = ("--seconds", "0.3")
NO_COMPILE = ("--no-compile",)  # upload-model: compiled trees are tests/scorefn/commands/test_compile.py's


def slow_model_file(tmp_path_factory):
    """A model with many large trees (noise fitted leaf by leaf: deep trees), trained once per
    session and kept in the session's temporary folder (other test modules use it too)."""
    path = tmp_path_factory.getbasetemp() / "slow_model.txt"
    if not path.exists():
        rng = np.random.default_rng(5)
        X, y = rng.normal(size=(3000, 10)), rng.normal(size=3000)
        params = {"objective": "regression", "num_leaves": 255, "min_data_in_leaf": 2,
                  "min_sum_hessian_in_leaf": 0, "learning_rate": 0.01, "max_bin": 63,
                  "verbosity": -1, "seed": 7, "deterministic": True, "num_threads": 1}
        booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=120)
        booster.save_model(str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").rename(path)
    return path


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    return slow_model_file(tmp_path_factory)


def lightgbm_seconds_per_row(path) -> float:
    """LightGBM's own time per row for a model (a 1,000-row batch on one thread, best of 3):
    the trees' traversal, which no single-row request through the app can beat."""
    booster = lgb.Booster(model_file=str(path))
    X = np.random.default_rng(1).normal(size=(1000, booster.num_feature()))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        booster.predict(X, num_threads=1)
        best = min(best, time.perf_counter() - t0)
    return best / 1000


def budget_below(path) -> float:
    """A --max-p99-ms budget the model cannot meet: half of LightGBM's own time per row."""
    return 0.5 * lightgbm_seconds_per_row(path) * 1e3


FIGURES = LatencyFigures(
    single_row_p50_ms=0.0412, single_row_p99_ms=0.1375, batch_rows_per_second=41234.5,
    parse_ms=12.5, memory_mb=0.75, reference_p50_ms=0.0613, reference_p99_ms=0.152,
    reference_batch_rows_per_second=6350.25, reference_model="500 trees, 63 leaves, 100 features",
    measured_at="2026-12-07T04:31:24Z", machine="2 cores x86_64 Linux, LightGBM 4.7.0")


# -- the figures as blob metadata ----------------------------------------------------------------

def test_figures_are_stored_as_small_ascii_metadata_and_read_back():
    meta = FIGURES.to_metadata()
    assert set(meta) <= set(LATENCY_METADATA_KEYS)
    # Blob metadata names are C# identifiers; values travel as header values.
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]*", key) for key in meta)
    assert all(value.isascii() and value.isprintable() and len(value) <= 120
               for value in meta.values())
    assert read_latency_figures(meta) == FIGURES


def test_metadata_keys_are_read_case_insensitively_as_storage_keeps_them():
    shouted = {key.upper(): value for key, value in FIGURES.to_metadata().items()}
    assert read_latency_figures(shouted) == FIGURES


def test_unknown_memory_is_left_out_and_read_back_as_none():
    figures = LatencyFigures(**{**FIGURES.__dict__, "memory_mb": None})
    assert "scorefn_latency_memory_mb" not in figures.to_metadata()
    assert read_latency_figures(figures.to_metadata()) == figures


@pytest.mark.parametrize("edit", [
    lambda m: m.clear(),
    lambda m: m.pop("scorefn_latency_p99_ms"),
    lambda m: m.update(scorefn_latency_p99_ms="fast"),
    lambda m: m.update(scorefn_latency_p99_ms="nan"),
    lambda m: m.update(scorefn_latency_p99_ms="-1"),
    lambda m: m.update(scorefn_latency_ref_p99_ms="0"),
    lambda m: m.update(scorefn_latency_format="2"),
], ids=["none", "missing", "not-a-number", "nan", "negative", "zero", "other-format"])
def test_absent_or_malformed_figures_read_as_none_never_an_error(edit):
    meta = {**FIGURES.to_metadata(), "owner": "team-a"}
    edit(meta)
    assert read_latency_figures(meta) is None


def test_replacing_figures_keeps_the_blobs_other_metadata():
    meta = {**FIGURES.to_metadata(), "owner": "team-a", "SCOREFN_LATENCY_P99_MS": "9"}
    assert without_latency_figures(meta) == {"owner": "team-a"}


def test_the_json_view_carries_the_figures_and_the_reference():
    view = FIGURES.to_dict()
    assert view["single_row_p99_ms"] == FIGURES.single_row_p99_ms
    assert view["reference"]["single_row_p99_ms"] == FIGURES.reference_p99_ms
    assert view["p99_vs_reference"] == round(FIGURES.single_row_p99_ms / FIGURES.reference_p99_ms, 3)


# -- the measurement ---------------------------------------------------------------------------

def test_the_shipped_reference_is_the_bench_model_shape():
    from scorefn.demo.models import train_bench_model

    defaults = {k: p.default for k, p in inspect.signature(train_bench_model).parameters.items()}
    booster = lgb.Booster(model_str=reference_text().decode())
    assert booster.num_trees() == defaults["trees"]
    assert booster.num_feature() == defaults["features"]
    assert max(t["num_leaves"] for t in booster.dump_model()["tree_info"]) == defaults["leaves"]


def test_the_check_describes_both_models_as_lightgbm_does(demo_models):
    text = demo_models["segment"].path.read_bytes()
    report = check_latency(text, label="segment", seconds=0.3)
    booster = lgb.Booster(model_file=str(demo_models["segment"].path))
    assert report.model.shape.trees == booster.num_trees()
    assert report.model.shape.features == booster.num_feature()
    assert report.model.text_bytes == len(text)
    assert report.reference.shape == model_shape(reference_text())
    for timing in (report.model, report.reference):
        assert 0 < timing.p50_ms <= timing.p99_ms
        assert 0 < timing.cpu_p99_ms
        assert timing.parse_ms > 0 and timing.batch_rows_per_second > 0
        assert timing.single_samples >= 200 and timing.batches >= 3
    figures = read_latency_figures(report.figures().to_metadata())
    assert figures.single_row_p99_ms == pytest.approx(report.model.p99_ms, rel=1e-5)
    assert figures.reference_p99_ms == pytest.approx(report.reference.p99_ms, rel=1e-5)


def test_the_check_ranks_models_as_lightgbm_itself_does(demo_models, slow_model):
    small = demo_models["price"].path
    report = check_latency(slow_model.read_bytes(), reference=small.read_bytes(), seconds=0.5)
    # LightGBM's own per-row times order the two models; so do the check's figures.
    assert lightgbm_seconds_per_row(slow_model) > lightgbm_seconds_per_row(small)
    assert report.model.p50_ms > report.reference.p50_ms
    assert report.model.batch_rows_per_second < report.reference.batch_rows_per_second
    assert report.model.parse_ms > report.reference.parse_ms
    # The single-row path cannot beat LightGBM's own traversal of the trees.
    assert report.model.p50_ms > 0.5 * lightgbm_seconds_per_row(slow_model) * 1e3


# -- check-latency -------------------------------------------------------------------------------

def test_check_latency_prints_what_it_found_and_the_table(demo_models, capsys):
    path = demo_models["churn"].path
    assert cli(["check-latency", str(path), *QUICK]) == 0
    out = capsys.readouterr().out
    booster = lgb.Booster(model_file=str(path))
    assert (f"found: LightGBM text model, {booster.num_trees()} trees, {booster.num_feature()} "
            f"features, 0 categorical, binary") in out
    for row in ("parse", "memory (loaded)", "single row p50", "single row p99",
                "1,000-row requests", "reference (bench model)"):
        assert row in out
    assert "pre-deployment estimate" in out and "telemetry" in out


def test_check_latency_over_max_p99_exits_1(slow_model, capsys):
    budget = budget_below(slow_model)
    assert cli(["check-latency", str(slow_model), *QUICK, "--max-p99-ms", f"{budget:.6f}"]) == 1
    assert "over budget: single-row p99" in capsys.readouterr().err


def test_check_latency_refuses_a_pickle_in_one_line(tmp_path, capsys):
    import pickle

    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"not": "a model"}))
    assert cli(["check-latency", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("not measured: pickled_model:") and err.count("\n") == 1


def test_check_latency_needs_a_file_or_a_blob_not_both(demo_models, capsys):
    assert cli(["check-latency"]) == 2
    assert cli(["check-latency", str(demo_models["churn"].path), "--blob", "churn"]) == 2
    assert "one of them" in capsys.readouterr().err


def test_check_latency_of_a_blob_saves_figures_keeping_its_other_metadata(
        container, azurite, demo_models, capsys):
    container.upload_blob("churn.txt", demo_models["churn"].path.read_bytes(),
                          metadata={"owner": "team-a"})
    args = ["check-latency", "--blob", "churn", *QUICK, "--container", container.container_name,
            "--connection-string", azurite.connection_string]
    assert cli(args) == 0
    assert "found: LightGBM text model (blob " in capsys.readouterr().out
    assert read_latency_figures(container.get_blob_client("churn.txt").get_blob_properties().metadata) is None
    assert cli([*args, "--save"]) == 0
    assert "figures saved" in capsys.readouterr().out
    meta = container.get_blob_client("churn.txt").get_blob_properties().metadata
    assert meta["owner"] == "team-a" and read_latency_figures(meta) is not None
    assert cli(args) == 0  # measured again: what is stored is shown first
    assert "stored with the blob: single-row p99" in capsys.readouterr().out


def test_check_latency_of_a_missing_blob_is_one_line(container, azurite, capsys):
    assert cli(["check-latency", "--blob", "nothing", "--container", container.container_name,
                "--connection-string", azurite.connection_string]) == 1
    err = capsys.readouterr().err
    assert err.startswith("not measured: model_not_found:") and "nothing.txt" in err


def test_saving_figures_never_lands_on_a_blob_that_changed_since_it_was_measured(
        container, azurite, demo_models, capsys):
    import argparse

    from scorefn.commands.latency import _save

    put_blob(container, "churn.txt", demo_models["churn"].path)
    measured = container.get_blob_client("churn.txt").get_blob_properties().etag.strip('"')
    put_blob(container, "churn.txt", demo_models["churn_v1"].path)  # replaced meanwhile

    class Report:
        def figures(self):
            return FIGURES

    assert not _save(argparse.Namespace(), container, "churn.txt", measured, {}, Report())
    assert "changed while it was being measured" in capsys.readouterr().err
    assert read_latency_figures(container.get_blob_client("churn.txt").get_blob_properties().metadata) is None


# -- upload-model ----------------------------------------------------------------------------

def upload(container, azurite, *args: str) -> int:
    return cli(["upload-model", *args, *QUICK, *NO_COMPILE, "--container",
                container.container_name,
                "--connection-string", azurite.connection_string])


def test_upload_model_stores_the_figures_it_printed_with_the_blob(container, azurite, demo_models,
                                                                  capsys):
    assert upload(container, azurite, str(demo_models["churn"].path), "churn") == 0
    out = capsys.readouterr().out
    figures = read_latency_figures(container.get_blob_client("churn.txt").get_blob_properties().metadata)
    assert figures is not None
    assert re.search(rf"single row p99 +{figures.single_row_p99_ms:.3f} ms +"
                     rf"{figures.reference_p99_ms:.3f} ms", out)
    shape = model_shape(reference_text())
    assert figures.reference_model == (f"{shape.trees} trees, {shape.max_leaves} leaves, "
                                       f"{shape.features} features")


def test_the_figures_reach_the_loaded_model_as_the_app_loads_it(container, azurite, demo_models):
    from shared.models.blob_source import BlobSource
    from shared.models.store import ModelStore

    assert upload(container, azurite, str(demo_models["price"].path), "price", "--gzip") == 0
    store = ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600)
    try:
        model, _ = store.get("price")
        assert read_latency_figures(model.info.blob_metadata) is not None
    finally:
        store.close()


def test_upload_model_refuses_a_model_over_max_p99_and_uploads_it_with_force(
        container, azurite, slow_model, capsys):
    budget = f"{budget_below(slow_model):.6f}"
    assert upload(container, azurite, str(slow_model), "slow", "--max-p99-ms", budget) == 1
    err = capsys.readouterr().err
    assert err.startswith("not uploaded: single-row p99") and "--force" in err
    assert not container.get_blob_client("slow.txt").exists()

    assert upload(container, azurite, str(slow_model), "slow", "--max-p99-ms", budget,
                  "--force") == 0
    assert "uploading anyway (--force)" in capsys.readouterr().out
    figures = read_latency_figures(container.get_blob_client("slow.txt").get_blob_properties().metadata)
    assert figures.single_row_p99_ms > float(budget)


def test_upload_model_within_max_p99_uploads(container, azurite, demo_models):
    # A second per row: no model of this size misses it, however busy the machine.
    assert upload(container, azurite, str(demo_models["churn"].path), "churn",
                  "--max-p99-ms", "1000") == 0
    assert container.get_blob_client("churn.txt").exists()


@pytest.mark.parametrize("value", ["0", "-1", "fast", "nan"])
def test_a_bad_max_p99_is_a_usage_error(demo_models, value, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["upload-model", str(demo_models["churn"].path), "churn", "--max-p99-ms", value])
    assert exc.value.code == 2
    assert "--max-p99-ms" in capsys.readouterr().err


def test_another_reference_may_be_given(container, azurite, demo_models, capsys):
    assert upload(container, azurite, str(demo_models["churn"].path), "churn",
                  "--reference", str(demo_models["churn_v1"].path)) == 0
    out = capsys.readouterr().out
    assert "reference (churn_v1.txt)" in out
    booster = lgb.Booster(model_file=str(demo_models["churn_v1"].path))
    figures = read_latency_figures(container.get_blob_client("churn.txt").get_blob_properties().metadata)
    assert figures.reference_model.startswith(f"{booster.num_trees()} trees")


def test_v2_metadata_and_endpoints_show_the_stored_figures(container, demo_models):
    from shared.models.blob_source import BlobSource
    from shared.models.store import ModelStore
    from shared.scoring.service import ScoringService
    from shared.settings import Settings

    container.upload_blob("price.txt", demo_models["price"].path.read_bytes(),
                          metadata=FIGURES.to_metadata())
    put_blob(container, "segment.txt", demo_models["segment"].path)  # never checked
    service = ScoringService(Settings.from_env({}),
                             ModelStore(BlobSource(container, 64 << 20), refresh_seconds=3600))
    try:
        assert service.status.metadata("price")["parameters"]["latency_check"] == FIGURES.to_dict()
        assert "latency_check" not in service.status.metadata("segment")["parameters"]
        loaded = {m["name"]: m for m in service.status.endpoints()["loaded_models"]}
        assert loaded["price"]["latency_check"]["single_row_p99_ms"] == FIGURES.single_row_p99_ms
        assert "latency_check" not in loaded["segment"]
    finally:
        service.close()
