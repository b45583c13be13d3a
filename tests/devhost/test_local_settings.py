"""Settings files and host.json are read the way the Functions host and Core Tools read them."""

import json

import pytest

from devhost.local_settings import (
    ConfigError,
    config_get,
    load_host_json,
    load_local_settings,
    parse_duration,
)
from devhost.queue_runner import QueueOptions, connection_string, processor_count


def write_settings(path, values, encrypted=False):
    path.write_text(json.dumps({"IsEncrypted": encrypted, "Values": values}))
    return path


def test_values_become_environment_variables_without_overriding_existing_ones(tmp_path):
    env = {"ALREADY": "from-env"}
    settings = write_settings(tmp_path / "local.settings.json",
                              {"ALREADY": "from-file", "NEW": "x", "NUMBER": 3, "FLAG": True})
    load_local_settings(settings, env)
    assert env == {"ALREADY": "from-env", "NEW": "x", "NUMBER": "3", "FLAG": "true"}


def test_a_missing_settings_file_is_an_error_only_when_asked_for(tmp_path):
    env: dict[str, str] = {}
    assert load_local_settings(tmp_path / "absent.json", env) == {}
    with pytest.raises(ConfigError, match="does not exist"):
        load_local_settings(tmp_path / "absent.json", env, required=True)


def test_encrypted_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="encrypted"):
        load_local_settings(write_settings(tmp_path / "s.json", {}, encrypted=True), {})


@pytest.mark.parametrize("value, seconds", [
    ("00:00:01", 1), ("00:02:00", 120), ("01:00:00", 3600), ("00:00:00.5", 0.5),
    ("1.00:00:00", 86400), (" 00:00:30 ", 30)])
def test_durations_are_timespans(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [2, 2.5, "2", " 45 ", "1e3"])
def test_a_bare_number_is_refused_since_the_host_would_read_it_as_days(value):
    with pytest.raises(ConfigError, match="bare number as days"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["soon", "00:60:00", "24:00:00", "00:00:60", None, True])
def test_a_bad_duration_is_a_clear_error(value):
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration(value)


def test_host_json_keys_are_case_insensitive(tmp_path):
    (tmp_path / "host.json").write_text(json.dumps(
        {"Extensions": {"HTTP": {"RoutePrefix": ""}}}))
    host = load_host_json(tmp_path)
    assert config_get(host, "extensions", "http", "routePrefix") == ""
    assert config_get(host, "extensions", "queues", "batchSize", default=16) == 16


def test_queue_options_default_to_the_hosts_defaults():
    options = QueueOptions.from_host_json({}, processors=1)
    assert (options.batch_size, options.new_batch_threshold, options.max_polling_interval,
            options.visibility_timeout, options.max_dequeue_count, options.message_encoding) == (
        16, 8, 60.0, 0.0, 5, "base64")


def test_the_default_new_batch_threshold_is_half_a_batch_per_processor():
    queues = {"extensions": {"queues": {"batchSize": 5}}}
    assert QueueOptions.from_host_json(queues, processors=3).new_batch_threshold == 6
    assert QueueOptions.from_host_json({}).new_batch_threshold == 8 * processor_count({})
    assert processor_count({"WEBSITE_SKU": "Dynamic"}) == 1  # the Consumption plan


def test_queue_options_are_read_from_host_json():
    options = QueueOptions.from_host_json({"extensions": {"queues": {
        "batchSize": 4, "newBatchThreshold": 0, "maxDequeueCount": 2,
        "visibilityTimeout": "00:00:01", "maxPollingInterval": "00:00:02",
        "messageEncoding": "none"}}})
    assert (options.batch_size, options.new_batch_threshold, options.max_polling_interval,
            options.visibility_timeout, options.max_dequeue_count, options.message_encoding) == (
        4, 0, 2.0, 1.0, 2, "none")


@pytest.mark.parametrize("key, value, message", [
    ("batchSize", 0, "batchSize must be between 1 and 32"),
    ("batchSize", 33, "batchSize must be between 1 and 32"),
    ("newBatchThreshold", -1, "newBatchThreshold must not be negative"),
    ("maxPollingInterval", "00:00:00.05", "maxPollingInterval must not be less than"),
    ("maxDequeueCount", 0, "maxDequeueCount must be at least 1"),
    ("maxDequeueCount", 2.5, "maxDequeueCount must be an integer"),
    ("visibilityTimeout", 10, "visibilityTimeout: .*bare number as days")])
def test_queue_options_the_host_would_refuse_at_startup_are_config_errors(key, value, message):
    with pytest.raises(ConfigError, match=message):
        QueueOptions.from_host_json({"extensions": {"queues": {key: value}}})


def test_a_connection_is_looked_up_prefixed_first_and_in_connection_strings_first():
    assert connection_string("Storage", {"Storage": "plain", "AzureWebJobsStorage": "prefixed"}) \
        == "prefixed"
    assert connection_string("Conn", {"Conn": "root", "ConnectionStrings__Conn": "section"}) \
        == "section"
    assert connection_string("Conn", {"AzureWebJobsConn": "prefixed",
                                      "ConnectionStrings:Conn": "section"}) == "prefixed"
    assert connection_string("AzureWebJobsStorage", {"azurewebjobsstorage": "any case"}) \
        == "any case"


def test_an_empty_connection_setting_is_not_skipped_but_refused():
    with pytest.raises(ConfigError, match="'AzureWebJobsConn' is empty"):
        connection_string("Conn", {"AzureWebJobsConn": "", "Conn": "root"})
    with pytest.raises(ConfigError, match="neither app setting 'AzureWebJobsConn' nor 'Conn'"):
        connection_string("Conn", {})
