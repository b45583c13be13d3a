"""App settings: safe defaults, clear errors naming the setting, and the connection convention."""

from __future__ import annotations

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
])
def test_an_invalid_value_names_the_setting_but_not_the_value(env, name):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert name in str(err.value)
    assert list(env.values())[0] not in str(err.value).replace(name, "")


def test_spec_documents_every_field():
    assert set(SPEC) == set(Settings.__dataclass_fields__)
    assert all(spec.doc for spec in SPEC.values())


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
