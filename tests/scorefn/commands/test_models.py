"""``python -m scorefn upload-model``: a model is checked locally, then uploaded where the
functions look for it; a broken file never reaches storage."""

from __future__ import annotations

import gzip

from scorefn.__main__ import main as cli

# The latency check and the compile step have their own specifications
# (tests/scorefn/test_latency_check.py, tests/scorefn/commands/test_compile.py): skipped here,
# except where a test is about what upload-model prints around the check.
QUICK = ("--no-latency-check", "--no-compile")
MEASURED = ("--seconds", "0.3", "--no-compile")


def upload(container, azurite, *args: str, options: tuple[str, ...] = QUICK) -> int:
    return cli(["upload-model", *args, *options, "--container", container.container_name,
                "--connection-string", azurite.connection_string])


def test_without_the_latency_check_no_figures_are_stored_and_a_budget_is_refused(
        container, azurite, demo_models, capsys):
    path = str(demo_models["churn"].path)
    assert upload(container, azurite, path, "churn") == 0
    assert "latency check: skipped" in capsys.readouterr().out
    assert not any(k.startswith("scorefn_latency")
                   for k in container.get_blob_client("churn.txt").get_blob_properties().metadata)
    assert upload(container, azurite, path, "other", options=(*QUICK, "--max-p99-ms", "5")) == 1
    assert "--max-p99-ms needs the latency check" in capsys.readouterr().err
    assert not container.get_blob_client("other.txt").exists()


def test_a_model_is_uploaded_as_name_txt_and_the_version_printed(container, azurite, demo_models,
                                                                  capsys):
    path = demo_models["churn"].path
    assert upload(container, azurite, str(path), "churn") == 0
    out = capsys.readouterr().out
    etag = container.get_blob_client("churn.txt").get_blob_properties().etag.strip('"')
    assert f"uploaded {container.container_name}/churn.txt" in out and etag in out
    assert "binary, 8 features" in out
    assert container.download_blob("churn.txt").readall() == path.read_bytes()


def test_gzip_stores_the_compressed_model(container, azurite, demo_models, capsys):
    path = demo_models["price"].path
    assert upload(container, azurite, str(path), "price/v2", "--gzip") == 0
    stored = container.download_blob("price/v2.txt.gz").readall()
    assert gzip.decompress(stored) == path.read_bytes()


def test_a_broken_model_is_refused_in_one_line_and_not_uploaded(container, azurite, demo_models,
                                                                tmp_path, capsys):
    broken = tmp_path / "broken.txt"
    broken.write_bytes(demo_models["churn"].path.read_bytes()[:5000])  # truncated
    assert upload(container, azurite, str(broken), "broken") == 1
    err = capsys.readouterr().err
    assert err.startswith("not uploaded: invalid_model:") and "Traceback" not in err
    assert not container.get_blob_client("broken.txt").exists()


def test_the_container_defaults_to_the_model_container_setting(azurite, blob_service, demo_models,
                                                               monkeypatch):
    import uuid

    name = f"m{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("MODEL_CONTAINER", name)
    assert cli(["upload-model", str(demo_models["churn"].path), "churn", *QUICK,
                "--connection-string", azurite.connection_string]) == 0
    client = blob_service.get_container_client(name)
    assert client.get_blob_client("churn.txt").exists()
    client.delete_container()


def test_without_storage_options_the_app_settings_connection_is_used(container, azurite,
                                                                    demo_models, monkeypatch):
    # As the app does: MODEL_STORAGE_CONNECTION names the connection, not AzureWebJobsStorage.
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("MODEL_STORAGE_CONNECTION", "ModelStore")
    monkeypatch.setenv("ModelStore", azurite.connection_string)
    monkeypatch.setenv("MODEL_CONTAINER", container.container_name)
    assert cli(["upload-model", str(demo_models["churn"].path), "churn", *QUICK]) == 0
    assert container.get_blob_client("churn.txt").exists()


def test_an_unconfigured_connection_is_named_in_one_line(demo_models, monkeypatch, capsys):
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("MODEL_STORAGE_CONNECTION", "Nowhere")
    monkeypatch.delenv("Nowhere", raising=False)
    try:
        code = cli(["upload-model", str(demo_models["churn"].path), "churn"])
    except SystemExit as exc:
        code = exc.code
    assert code not in (0, None)
    message = str(code) + capsys.readouterr().err
    assert "Nowhere" in message and "--connection-string" in message


def test_an_invalid_model_container_setting_is_one_error_line(demo_models, monkeypatch, capsys):
    monkeypatch.setenv("MODEL_CONTAINER", "Not_A_Container")
    assert cli(["upload-model", str(demo_models["churn"].path), "churn",
                "--connection-string", "UseDevelopmentStorage=true"]) == 2
    err = capsys.readouterr().err
    assert "MODEL_CONTAINER" in err and "Traceback" not in err


def test_a_connection_without_a_blob_service_is_one_error_line(demo_models, monkeypatch, capsys):
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("MODEL_STORAGE_CONNECTION", "QueuesOnly")
    monkeypatch.setenv("QueuesOnly__queueServiceUri", "https://acct.queue.core.windows.net")
    assert cli(["upload-model", str(demo_models["churn"].path), "churn"]) == 2
    err = capsys.readouterr().err
    assert "QueuesOnly__blobServiceUri" in err and "Traceback" not in err


def test_an_invalid_connection_setting_is_reported_as_invalid_not_missing(demo_models, monkeypatch,
                                                                         capsys):
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "Not_An_Account")
    assert cli(["upload-model", str(demo_models["churn"].path), "churn"]) == 2
    err = capsys.readouterr().err
    assert "AzureWebJobsStorage__accountName" in err and "no storage" not in err


def test_the_command_line_uses_your_login_even_where_the_app_forces_managed_identity(monkeypatch):
    import argparse

    from scorefn.commands.storage_args import connection

    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "acct")
    monkeypatch.setenv("AzureWebJobsStorage__credential", "managedidentity")
    monkeypatch.setenv("AzureWebJobsStorage__clientId", "00000000-0000-0000-0000-000000000001")
    conn = connection(argparse.Namespace(account_url=None, connection_string=None))
    assert conn.blob_service_uri == "https://acct.blob.core.windows.net"
    assert conn.credential is None  # DefaultAzureCredential: az login here, managed identity in Azure
    assert conn.client_id == "00000000-0000-0000-0000-000000000001"


def test_upload_says_what_it_found_and_measured_before_uploading(container, azurite, demo_models,
                                                                 capsys):
    import lightgbm as lgb

    path = demo_models["segment"].path
    assert upload(container, azurite, str(path), "segment", options=MEASURED) == 0
    out = capsys.readouterr().out
    booster = lgb.Booster(model_file=str(path))
    assert (f"found: LightGBM text model, {booster.num_trees()} trees, {booster.num_feature()} "
            f"features, 0 categorical, multiclass, {booster.dump_model()['num_class']} classes"
            ) in out
    found, table, uploaded = (out.index("found:"), out.index("single row p99"),
                              out.index("uploaded "))
    assert found < table < uploaded


def test_an_invalid_model_name_is_refused_before_measuring_or_uploading(container, azurite,
                                                                       demo_models, capsys):
    assert upload(container, azurite, str(demo_models["churn"].path), "../churn") == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("not uploaded: invalid_name:") and "latency" not in captured.out
    assert list(container.list_blobs()) == []
