"""``python -m scorefn router``: validate a config as the app does, set it only once its models
load (and only over the version the user saw), and show what is in storage."""

from __future__ import annotations

import json
import re

import pytest

from scorefn.__main__ import main as cli
from tests.conftest import upload

AB = {"endpoints": {"churn": {
    "variants": [{"name": "control", "model": "churn_v1", "weight": 3},
                 {"name": "candidate", "model": "churn", "weight": 1}],
    "shadow": [{"name": "next", "model": "churn", "fraction": 0.1}],
    "sticky": {"header": "x-user-id"}}}}


@pytest.fixture
def models(container, demo_models):
    for name in ("churn", "churn_v1", "price"):
        upload(container, f"{name}.txt", demo_models[name].path)
    return container


def router_cli(container, azurite, *args: str) -> int:
    return cli(["router", *args, "--container", container.container_name,
                "--connection-string", azurite.connection_string])


def write(tmp_path, doc, name="router.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_validate_prints_each_endpoints_variants_and_shares(tmp_path, capsys):
    assert cli(["router", "validate", str(write(tmp_path, AB))]) == 0
    out = capsys.readouterr().out
    assert "endpoint churn: sticky by header x-user-id" in out
    assert "variant control" in out and "share 75.0%" in out
    assert "variant candidate" in out and "share 25.0%" in out
    assert "shadow  next" in out and "fraction 0.1" in out


@pytest.mark.parametrize("doc,where", [
    ("{not json", "not valid JSON"),
    ({"endpoints": {"churn": {"variants": []}}}, "endpoints.churn.variants"),
    ({"endpoints": {"churn": {"variants": [{"name": "a", "model": "m", "weight": -1}]}}},
     "endpoints.churn.variants[0].weight"),
    ({"endpoints": {}, "extra": 1}, "unknown field 'extra'"),
])
def test_validate_names_the_bad_field_and_exits_1(tmp_path, capsys, doc, where):
    assert cli(["router", "validate", str(write(tmp_path, doc))]) == 1
    assert where in capsys.readouterr().err


def test_validate_with_check_models_loads_each_model_with_progress(models, azurite, tmp_path, capsys):
    assert router_cli(models, azurite, "validate", str(write(tmp_path, AB)), "--check-models") == 0
    out = capsys.readouterr().out
    assert "[1/2] model churn ... ok" in out and "[2/2] model churn_v1 ... ok" in out


def test_check_models_refuses_a_missing_model_or_variants_with_other_features(
        models, azurite, tmp_path, capsys):
    missing = {"endpoints": {"churn": {"variants": [{"name": "a", "model": "churn_v9", "weight": 1}]}}}
    assert router_cli(models, azurite, "validate", str(write(tmp_path, missing)),
                      "--check-models") == 1
    assert "churn_v9" in capsys.readouterr().err
    mixed = {"endpoints": {"churn": {"variants": [{"name": "a", "model": "churn", "weight": 1},
                                                  {"name": "b", "model": "price", "weight": 1}]}}}
    assert router_cli(models, azurite, "validate", str(write(tmp_path, mixed)),
                      "--check-models") == 1
    assert "same features" in capsys.readouterr().err


def test_set_uploads_a_checked_config_that_show_reads_back(models, azurite, tmp_path, capsys):
    path = write(tmp_path, AB)
    assert router_cli(models, azurite, "set", str(path)) == 0
    assert "uploaded" in capsys.readouterr().out
    stored = models.get_blob_client("config/router.json")
    assert stored.download_blob().readall() == path.read_bytes()
    assert stored.get_blob_properties().content_settings.content_type == "application/json"
    etag = stored.get_blob_properties().etag.strip('"')
    assert router_cli(models, azurite, "show") == 0
    out = capsys.readouterr().out
    assert f"version {etag}" in out and "share 75.0%" in out
    assert "accepted: the app's checks pass" in out
    assert router_cli(models, azurite, "show", "--json") == 0
    assert json.loads(capsys.readouterr().out) == AB


def test_set_refuses_a_config_whose_model_does_not_load_and_leaves_storage_alone(
        models, azurite, tmp_path, capsys):
    missing = {"endpoints": {"churn": {"variants": [{"name": "a", "model": "churn_v9", "weight": 1}]}}}
    assert router_cli(models, azurite, "set", str(write(tmp_path, missing))) == 1
    assert "not uploaded" in capsys.readouterr().err
    assert not models.get_blob_client("config/router.json").exists()


def test_set_with_if_match_never_overwrites_a_change_made_since(models, azurite, tmp_path, capsys):
    assert router_cli(models, azurite, "set", str(write(tmp_path, AB))) == 0
    seen = models.get_blob_client("config/router.json").get_blob_properties().etag.strip('"')
    other = {"endpoints": {}}
    upload(models, "config/router.json", json.dumps(other).encode())  # someone else's change
    capsys.readouterr()
    assert router_cli(models, azurite, "set", str(write(tmp_path, AB)), "--if-match", seen) == 1
    assert "no longer version" in capsys.readouterr().err
    assert json.loads(models.get_blob_client("config/router.json").download_blob().readall()) == other
    current = models.get_blob_client("config/router.json").get_blob_properties().etag.strip('"')
    assert router_cli(models, azurite, "set", str(write(tmp_path, AB)), "--if-match", current) == 0


def test_show_without_a_config_says_endpoints_are_served_by_same_name_models(models, azurite, capsys):
    assert router_cli(models, azurite, "show") == 0
    assert "no router config" in capsys.readouterr().out


def test_show_reports_an_invalid_stored_config(models, azurite, capsys):
    upload(models, "config/router.json", b'{"endpoints": {"churn": {}}}')
    assert router_cli(models, azurite, "show") == 1
    err = capsys.readouterr().err
    assert "REFUSED by the app: invalid router config" in err and "keep serving" in err


def test_show_says_the_app_refuses_a_valid_config_whose_model_does_not_load(models, azurite, capsys):
    # Written past `router set` (by hand, or by another tool): valid JSON, but the app's model
    # check refuses it, and instances keep their previous config. It must not read as live.
    missing = {"endpoints": {"churn": {"variants": [{"name": "a", "model": "churn_v9", "weight": 1}]}}}
    upload(models, "config/router.json", json.dumps(missing).encode())
    assert router_cli(models, azurite, "show") == 1
    captured = capsys.readouterr()
    assert "variant a" in captured.out  # the table is still shown
    assert "REFUSED by the app: a model it names does not load" in captured.err
    assert router_cli(models, azurite, "show", "--no-check-models") == 0
    assert "models not checked" in capsys.readouterr().out


def test_set_with_if_match_when_there_is_no_config_yet_says_so(models, azurite, tmp_path, capsys):
    assert router_cli(models, azurite, "set", str(write(tmp_path, AB)), "--if-match", "0x8DE2") == 1
    err = capsys.readouterr().err
    assert "there is no config" in err and "leave out --if-match" in err
    assert not models.get_blob_client("config/router.json").exists()


def test_an_invalid_app_setting_in_the_shell_is_one_line_not_a_traceback(tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.setenv("MAX_MODEL_MB", "500")  # over MODEL_CACHE_MAX_MB's default
    assert cli(["router", "validate", str(write(tmp_path, AB)), "--check-models",
                "--connection-string", "UseDevelopmentStorage=true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: app setting MAX_MODEL_MB") and "Traceback" not in err


# -- latency budgets (max_p99_ms) --------------------------------------------------------------

from tests.scorefn.test_latency_check import NO_COMPILE, QUICK, budget_below, slow_model  # noqa: E402,F401


def upload_model(container, azurite, path, name: str) -> None:
    """Upload through upload-model: the blob gets its latency figures."""
    assert cli(["upload-model", str(path), name, *QUICK, *NO_COMPILE, "--container",
                container.container_name,
                "--connection-string", azurite.connection_string]) == 0


def budgeted(budget, control="churn_v1", candidate="churn"):
    return {"endpoints": {"churn": {
        "variants": [{"name": "control", "model": control, "weight": 3},
                     {"name": "candidate", "model": candidate, "weight": 1}],
        "shadow": [{"name": "next", "model": "price", "fraction": 0.1}],
        "max_p99_ms": budget}}}


def test_the_routing_table_shows_an_endpoints_latency_budget(tmp_path, capsys):
    assert cli(["router", "validate", str(write(tmp_path, budgeted(5)))]) == 0
    assert "endpoint churn: not sticky (weighted random); no overrides; latency budget p99 <= 5 ms" \
        in capsys.readouterr().out


def test_set_refuses_models_without_latency_figures_naming_each(models, azurite, tmp_path, capsys):
    # The fixture's blobs were put there directly: no figures.
    assert router_cli(models, azurite, "set", str(write(tmp_path, budgeted(1000)))) == 1
    err = capsys.readouterr().err
    assert "endpoints.churn: variant control (model churn_v1) has no latency figures" in err
    assert "endpoints.churn: variant candidate (model churn) has no latency figures" in err
    assert "check-latency --blob churn --save" in err and "not uploaded" in err
    assert "price" not in err  # a shadow scores off the request path: no budget
    assert not models.get_blob_client("config/router.json").exists()


def test_validate_with_check_models_checks_budgets_too(models, azurite, tmp_path, capsys):
    assert router_cli(models, azurite, "validate", str(write(tmp_path, budgeted(1000))),
                      "--check-models") == 1
    assert "has no latency figures" in capsys.readouterr().err


def test_set_uploads_a_config_whose_models_are_within_budget(models, azurite, tmp_path, demo_models,
                                                            capsys):
    upload_model(models, azurite, demo_models["churn"].path, "churn")
    upload_model(models, azurite, demo_models["churn_v1"].path, "churn_v1")
    capsys.readouterr()
    # A second per row: no model of this size misses it, however busy the machine.
    assert router_cli(models, azurite, "set", str(write(tmp_path, budgeted(1000)))) == 0
    out = capsys.readouterr().out
    assert "latency budget of endpoints.churn (p99 <= 1000 ms): within: control" in out
    assert models.get_blob_client("config/router.json").exists()


def test_set_refuses_a_model_over_its_endpoints_budget_unless_forced(
        models, azurite, tmp_path, slow_model, capsys):
    upload_model(models, azurite, slow_model, "slow")
    capsys.readouterr()
    budget = round(budget_below(slow_model), 6)
    path = write(tmp_path, {"endpoints": {"forecast": {
        "variants": [{"name": "candidate", "model": "slow"}], "max_p99_ms": budget}}})
    assert router_cli(models, azurite, "set", str(path)) == 1
    err = capsys.readouterr().err
    assert re.search(r"endpoints\.forecast: variant candidate \(model slow\): single-row p99 "
                     r"[0-9.]+ ms is over the budget of [0-9.e-]+ ms", err)
    assert "--force" in err
    assert not models.get_blob_client("config/router.json").exists()

    assert router_cli(models, azurite, "set", str(path), "--force") == 0
    captured = capsys.readouterr()
    assert "warning: latency budget not met: endpoints.forecast: variant candidate (model slow)" \
        in captured.err
    assert "uploading anyway (--force)" in captured.out
    assert json.loads(models.get_blob_client("config/router.json").download_blob().readall()) \
        == json.loads(path.read_text())


def test_set_without_checking_models_says_budgets_were_not_checked(models, azurite, tmp_path,
                                                                   capsys):
    assert router_cli(models, azurite, "set", str(write(tmp_path, budgeted(1000))),
                      "--no-check-models") == 0
    assert "latency budgets not checked (--no-check-models)" in capsys.readouterr().out
