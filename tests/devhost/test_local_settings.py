"""Settings files and host.json are read the way the Functions host and Core Tools read them."""

import json

import pytest

from devhost.local_settings import (ConfigError, config_get, load_host_json,
                                    load_local_settings, parse_duration)
from devhost.queue_runner import QueueOptions


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
    ("1.00:00:00", 86400), (30, 30), ("45", 45)])
def test_durations_are_timespans_or_seconds(value, seconds):
    assert parse_duration(value) == seconds


def test_a_bad_duration_is_a_clear_error():
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration("soon")


def test_host_json_keys_are_case_insensitive(tmp_path):
    (tmp_path / "host.json").write_text(json.dumps(
        {"Extensions": {"HTTP": {"RoutePrefix": ""}}}))
    host = load_host_json(tmp_path)
    assert config_get(host, "extensions", "http", "routePrefix") == ""
    assert config_get(host, "extensions", "queues", "batchSize", default=16) == 16


def test_queue_options_default_to_the_hosts_defaults():
    options = QueueOptions.from_host_json({})
    assert (options.batch_size, options.new_batch_threshold, options.max_polling_interval,
            options.visibility_timeout, options.max_dequeue_count, options.message_encoding) == (
        16, 8, 60.0, 0.0, 5, "base64")


def test_queue_options_are_read_from_host_json():
    options = QueueOptions.from_host_json({"extensions": {"queues": {
        "batchSize": 4, "maxDequeueCount": 2, "visibilityTimeout": "00:00:01",
        "maxPollingInterval": "00:00:02", "messageEncoding": "none"}}})
    assert (options.batch_size, options.new_batch_threshold, options.max_polling_interval,
            options.visibility_timeout, options.max_dequeue_count, options.message_encoding) == (
        4, 2, 2.0, 1.0, 2, "none")
