"""App settings: safe defaults, clear errors naming the setting, and the connection convention."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from shared.errors import SettingsError
from shared.settings import SPEC, Settings, resolve_connection


def test_every_setting_has_a_safe_default():
    settings = Settings.from_env({})
    assert settings.model_container == "models"
    assert settings.model_refresh_seconds == 30
    assert settings.max_request_bytes == 4 * 1024 * 1024
    assert settings.max_rows_per_request == 10_000
    assert settings.storage_connection == "AzureWebJobsStorage"


def test_values_are_read_from_the_environment():
    settings = Settings.from_env({"MODEL_CONTAINER": "ml-models", "MODEL_REFRESH_SECONDS": "5",
                                  "MAX_ROWS_PER_REQUEST": "50"})
    assert (settings.model_container, settings.model_refresh_seconds, settings.max_rows_per_request) \
        == ("ml-models", 5.0, 50)


@pytest.mark.parametrize("env,name", [
    ({"MODEL_REFRESH_SECONDS": "soon"}, "MODEL_REFRESH_SECONDS"),
    ({"MAX_ROWS_PER_REQUEST": "-7"}, "MAX_ROWS_PER_REQUEST"),
    ({"MODEL_CONTAINER": "Bad_Name"}, "MODEL_CONTAINER"),
    ({"MAX_REQUEST_BYTES": "-5"}, "MAX_REQUEST_BYTES"),
    ({"MODEL_REFRESH_SECONDS": "0.05"}, "MODEL_REFRESH_SECONDS"),  # ~a storage call a request
    ({"ROUTER_REFRESH_SECONDS": "0.05"}, "ROUTER_REFRESH_SECONDS"),
])
def test_an_invalid_value_names_the_setting_but_not_the_value(env, name):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert name in str(err.value)
    assert list(env.values())[0] not in str(err.value).replace(name, "")


def test_spec_documents_every_field():
    assert set(SPEC) == set(Settings.__dataclass_fields__)
    assert all(spec.doc and spec.allowed and spec.group for spec in SPEC.values())
    assert len({spec.env for spec in SPEC.values()}) == len(SPEC)


def test_each_setting_is_declared_once_on_its_field():
    # The declaration is the field's metadata: SPEC is derived from it, not written beside it.
    for f in dataclasses.fields(Settings):
        assert f.metadata["setting"] is SPEC[f.name]


def test_each_default_has_its_fields_type_and_is_a_value_the_setting_accepts():
    from shared.settings_doc import env_text

    hints = typing.get_type_hints(Settings)
    for name, spec in SPEC.items():
        expected = typing.get_origin(hints[name]) or hints[name]
        assert type(spec.default) is expected, name
        text = env_text(spec.default)
        if text:  # an empty value means the default and is never parsed
            assert spec.parse(text) == spec.default, name


def test_each_telemetry_default_is_a_value_the_setting_accepts():
    from shared.settings import TELEMETRY_SPEC, telemetry_settings
    from shared.settings_doc import env_text

    for name, spec in TELEMETRY_SPEC.items():
        assert spec.env == name and spec.doc and spec.allowed and spec.group
        text = env_text(spec.default)
        if text:
            assert spec.parse(text) == spec.default, name
    assert telemetry_settings({}) == telemetry_settings(
        {name: env_text(spec.default) for name, spec in TELEMETRY_SPEC.items()})


def test_overrides_skip_reading_but_not_the_rules_between_settings():
    settings = Settings.from_env({"MAX_ROWS_PER_REQUEST": "soon"}, max_rows_per_request=5)
    assert settings.max_rows_per_request == 5
    with pytest.raises(SettingsError) as err:
        Settings.from_env({}, max_model_mb=500)
    assert "MAX_MODEL_MB" in str(err.value)


def test_a_connection_string_is_used_as_is():
    conn = resolve_connection("AzureWebJobsStorage", {"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert conn.connection_string == "UseDevelopmentStorage=true" and not conn.uses_identity


def test_identity_connections_use_the_account_name_and_client_id():
    conn = resolve_connection("Store", {"Store__accountName": "mystore",
                                        "Store__clientId": "1111-2222",
                                        "Store__credential": "managedidentity"})
    assert conn.uses_identity
    assert conn.blob_service_uri == "https://mystore.blob.core.windows.net"
    assert conn.queue_service_uri == "https://mystore.queue.core.windows.net"
    assert conn.client_id == "1111-2222" and conn.credential == "managedidentity"


def test_service_uris_may_be_given_directly():
    conn = resolve_connection("S", {"S__blobServiceUri": "https://x.blob.core.windows.net"})
    assert conn.blob_service_uri == "https://x.blob.core.windows.net" and conn.queue_service_uri is None


@pytest.mark.parametrize("env", [{}, {"S__accountName": "Not An Account"},
                                 {"S__blobServiceUri": "ftp://x"},
                                 {"S__accountName": "abc", "S__credential": "password"}])
def test_a_missing_or_invalid_connection_is_a_settings_error(env):
    with pytest.raises(SettingsError) as err:
        resolve_connection("S", env)
    assert "S" in str(err.value)


def test_a_blob_connection_may_name_its_service_uri_as_a_blob_binding_does():
    conn = resolve_connection("ModelStore", {"ModelStore__serviceUri": "https://m.blob.core.windows.net"})
    assert conn.uses_identity and conn.blob_service_uri == "https://m.blob.core.windows.net"
    both = resolve_connection("S", {"S__serviceUri": "https://a.blob.core.windows.net",
                                    "S__blobServiceUri": "https://b.blob.core.windows.net"})
    assert both.blob_service_uri == "https://b.blob.core.windows.net"


def test_inline_and_blob_router_configs_are_not_both_accepted():
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"ROUTER_CONFIG": '{"endpoints": {}}', "ROUTER_CONFIG_BLOB": "config/r.json"})
    assert "ROUTER_CONFIG" in str(err.value) and "routerConfigBlob" in str(err.value)


def test_batch_jobs_use_the_batch_container_unless_others_are_opened_to_them():
    assert Settings.from_env({}).batch_allowed_containers == ()
    opened = Settings.from_env({"BATCH_ALLOWED_CONTAINERS": "inputs, exports"})
    assert opened.batch_allowed_containers == ("inputs", "exports")


@pytest.mark.parametrize("env", [
    {"BATCH_ALLOWED_CONTAINERS": "models"},
    {"BATCH_ALLOWED_CONTAINERS": "inputs,mlmodels", "MODEL_CONTAINER": "mlmodels"},
    {"BATCH_ALLOWED_CONTAINERS": "predictions"},
    {"BATCH_ALLOWED_CONTAINERS": "outcomes"},
    {"BATCH_ALLOWED_CONTAINERS": "azure-webjobs-secrets"},
    {"BATCH_ALLOWED_CONTAINERS": "app-package-scorefn-1a2b"},
    {"BATCH_ALLOWED_CONTAINERS": "Bad_Name"},
])
def test_the_model_log_and_host_containers_are_never_opened_to_batch_jobs(env):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert "BATCH_ALLOWED_CONTAINERS" in str(err.value)


@pytest.mark.parametrize("raw,expected", [("true", True), ("1", True), ("on", True), ("false", False),
                                          ("", False)])
def test_the_local_latency_reader_is_a_setting_like_the_others(raw, expected):
    from shared.settings import telemetry_settings

    assert telemetry_settings({"TELEMETRY_LOCAL_READER": raw}).local_reader is expected


def test_a_bad_telemetry_flag_names_the_setting():
    from shared.settings import telemetry_settings

    with pytest.raises(SettingsError) as err:
        telemetry_settings({"TELEMETRY_LOCAL_READER": "sometimes"})
    assert "TELEMETRY_LOCAL_READER" in str(err.value) and "sometimes" not in str(err.value)


def test_the_largest_model_must_fit_the_model_cache():
    assert Settings.from_env({"MAX_MODEL_MB": "128", "MODEL_CACHE_MAX_MB": "128"}).max_model_mb == 128
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"MAX_MODEL_MB": "200", "MODEL_CACHE_MAX_MB": "128"})
    assert "MAX_MODEL_MB" in str(err.value) and "MODEL_CACHE_MAX_MB" in str(err.value)


def test_a_connection_without_a_queue_service_is_a_settings_error_when_queues_are_used():
    from shared.storage import queue_service

    conn = resolve_connection("S", {"S__blobServiceUri": "https://x.blob.core.windows.net"})
    with pytest.raises(SettingsError) as err:
        queue_service(conn)
    assert "S__queueServiceUri" in str(err.value)


@pytest.mark.parametrize("name", ["models", "predictions", "azure-webjobs-secrets", "app-package-x1"])
def test_the_batch_container_itself_is_never_a_model_log_or_host_container(name):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"BATCH_CONTAINER": name})
    assert "BATCH_CONTAINER" in str(err.value)


@pytest.mark.parametrize("setting", ["SCORE_QUEUE_NAME", "CHUNK_QUEUE_NAME"])
def test_a_triggered_queue_name_leaves_room_for_its_poison_queue(setting):
    # Queue names are at most 63 characters; the host adds "-poison" (7) for the poison queue.
    assert len(getattr(Settings.from_env({setting: "q" * 56}), setting.lower())) == 56
    with pytest.raises(SettingsError) as err:
        Settings.from_env({setting: "q" * 57})
    assert setting in str(err.value) and "-poison" in str(err.value)
    with pytest.raises(SettingsError) as err:  # a bad name is not said to be too long
        Settings.from_env({setting: "Bad_Name"})
    assert "not a valid queue name" in str(err.value) and "poison" not in str(err.value)
    # Queues nothing triggers on may use the whole length.
    assert len(Settings.from_env({"RESULTS_QUEUE_NAME": "r" * 63}).results_queue_name) == 63
