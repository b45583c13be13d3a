"""The app is indexed through azure.functions' own ``get_functions()``."""

import sys
from datetime import UTC, datetime

import pytest

from devhost.app_index import AppIndexError, index_app, load_function_app, resolve_expressions

from .conftest import SAMPLE_APP


@pytest.fixture
def fresh_app():
    """Import the sample FunctionApp anew (an app is indexed once, as by the worker); the
    modules imported are forgotten afterwards."""
    path, saved = list(sys.path), dict(sys.modules)

    def forget():
        for name in set(sys.modules) - set(saved):
            del sys.modules[name]
        # another app's (or a previous load's) function_app, imported under the same name
        if sys.modules.get("function_app") is not saved.get("function_app"):
            del sys.modules["function_app"]
        if "function_app" in saved:
            sys.modules["function_app"] = saved["function_app"]

    def load():
        forget()
        sys.modules.pop("function_app", None)
        return load_function_app(SAMPLE_APP)

    yield load
    sys.path[:] = path
    forget()


@pytest.fixture
def sample_app(fresh_app):
    return fresh_app()


def test_http_functions_are_described_with_route_methods_and_auth_level(sample_app):
    index = index_app(sample_app, SAMPLE_APP, {"SAMPLE_QUEUE": "q-1"})
    http = {f.name: f for f in index.http}
    assert http["echo"].route == "echo/{name}"
    assert http["echo"].methods == {"GET", "POST"}
    assert http["echo"].auth_level == "anonymous"
    assert http["echo"].binding_name == "req"
    assert http["secure"].auth_level == "function"  # the app's default level
    assert http["ops"].auth_level == "admin"
    assert http["item_by_slug"].methods is None
    assert http["async_route"].is_async and http["async_route"].wants_context
    assert not http["echo"].is_async and not http["echo"].wants_context


def test_queue_names_are_resolved_from_app_settings(sample_app):
    index = index_app(sample_app, SAMPLE_APP, {"SAMPLE_QUEUE": "orders"})
    [queue] = index.queues
    assert (queue.name, queue.queue_name, queue.connection, queue.binding_name) == (
        "record_message", "orders", "AzureWebJobsStorage", "msg")


def test_an_unset_setting_in_a_queue_name_is_a_clear_error(fresh_app):
    with pytest.raises(AppIndexError, match="SAMPLE_QUEUE.*not set"):
        index_app(fresh_app(), SAMPLE_APP, {})
    assert index_app(fresh_app(), SAMPLE_APP, {}, resolve_queues=False).queues


def test_functions_can_be_disabled_by_setting_or_host_json(fresh_app):
    env = {"SAMPLE_QUEUE": "q-1", "AzureWebJobs.echo.Disabled": "true"}
    assert "echo" not in {f.name for f in index_app(fresh_app(), SAMPLE_APP, env).http}
    only = index_app(fresh_app(), SAMPLE_APP, env, host_config={"functions": ["secure"]})
    assert [f.name for f in only.http] == ["secure"] and not only.queues


def test_function_names_in_settings_and_host_json_are_matched_case_insensitively(fresh_app):
    env = {"SAMPLE_QUEUE": "q-1", "azurewebjobs.ECHO.disabled": "TRUE",
           "AzureWebJobs_Text_Disabled": "1"}
    names = {f.name for f in index_app(fresh_app(), SAMPLE_APP, env).http}
    assert "echo" not in names and "text" not in names and "secure" in names
    only = index_app(fresh_app(), SAMPLE_APP, env, host_config={"functions": ["SECURE"]})
    assert [f.name for f in only.http] == ["secure"]


def test_queue_names_are_lowercased_after_settings_are_substituted(sample_app):
    [queue] = index_app(sample_app, SAMPLE_APP, {"SAMPLE_QUEUE": "Orders-EU"}).queues
    assert queue.queue_name == "orders-eu"


@pytest.mark.parametrize("name", ["ab", "a" * 64, "-orders", "orders-", "or--ders", "or_ders",
                                  "orders.eu", "ordérs"])
def test_an_invalid_queue_name_is_an_indexing_error(fresh_app, name):
    with pytest.raises(AppIndexError, match="not a valid queue name"):
        index_app(fresh_app(), SAMPLE_APP, {"SAMPLE_QUEUE": name})


def test_binding_expressions_may_sit_inside_text():
    assert resolve_expressions("in-%ENV%-%N%", {"ENV": "dev", "N": "1"}, what="x") == "in-dev-1"


def test_a_directory_without_function_app_is_refused(tmp_path):
    with pytest.raises(AppIndexError, match="no function_app.py"):
        load_function_app(tmp_path)


def _metadata(name, *bindings, function_id=None):
    """An RpcFunctionMetadata as the worker returns it: name, function_id, raw_bindings."""
    import json
    from types import SimpleNamespace

    return SimpleNamespace(name=name, function_id=function_id or f"id-{name}",
                           raw_bindings=[json.dumps(b) for b in bindings])


def test_the_worker_metadata_is_read_as_the_host_reads_it():
    from devhost.app_index import index_worker_metadata

    out = {"direction": "OUT", "type": "http", "name": "$return"}
    index = index_worker_metadata([
        _metadata("score", {"direction": "IN", "type": "httpTrigger", "name": "req",
                            "methods": ["post"], "authLevel": "FUNCTION",
                            "route": "score/{*name}"}, out),
        _metadata("hello", {"direction": "IN", "type": "httpTrigger", "name": "req",
                            "authLevel": "ANONYMOUS"}, out),
        _metadata("jobs", {"direction": "IN", "type": "queueTrigger", "name": "msg",
                           "queueName": "%Q%-In", "connection": "Storage"}),
        _metadata("tick", {"direction": "IN", "type": "timerTrigger", "name": "t",
                           "schedule": "0 * * * * *"}),
    ], SAMPLE_APP, {"Q": "Jobs"})
    score, hello = index.http
    assert (score.function_id, score.route, score.methods, score.auth_level,
            score.binding_name) == ("id-score", "score/{*name}", {"POST"}, "function", "req")
    assert (hello.route, hello.methods, hello.auth_level) == ("hello", None, "anonymous")
    assert score.user_function is None  # the worker calls the functions
    [jobs] = index.queues
    assert (jobs.function_id, jobs.queue_name, jobs.connection) == ("id-jobs", "jobs-in", "Storage")
    [tick] = index.timers
    assert (tick.function_id, tick.binding_name, tick.schedule.expression, tick.run_on_startup,
            tick.use_monitor) == ("id-tick", "t", "0 * * * * *", False, True)


def test_both_indexings_describe_the_sample_app_alike(sample_app):

    from types import SimpleNamespace

    from devhost.app_index import index_worker_metadata

    env = {"SAMPLE_QUEUE": "q-1"}
    functions = sample_app.get_functions()
    own = index_app(SimpleNamespace(get_functions=lambda: functions), SAMPLE_APP, env)
    worker = index_worker_metadata(
        [SimpleNamespace(name=f.get_function_name(), function_id=f.get_function_name(),
                         raw_bindings=f.get_raw_bindings()) for f in functions], SAMPLE_APP, env)

    def shape(index):
        return [(f.name, f.binding_name, getattr(f, "route", None), getattr(f, "methods", None),
                 getattr(f, "auth_level", None), getattr(f, "queue_name", None),
                 getattr(f, "schedule", None), getattr(f, "use_monitor", None))
                for f in index.http + index.queues + index.timers]

    assert shape(own) == shape(worker)


def _timer(name="tick", **binding):
    return _metadata(name, {"direction": "IN", "type": "timerTrigger", "name": "timer",
                            **binding})


def _timers(*metadata, env=None):
    from devhost.app_index import index_worker_metadata

    return index_worker_metadata(metadata, SAMPLE_APP, env or {}).timers


def test_the_sample_timer_is_described_with_its_schedule(sample_app):
    [tick] = index_app(sample_app, SAMPLE_APP, {"SAMPLE_QUEUE": "q-1"}).timers
    assert (tick.name, tick.binding_name, str(tick.schedule)) == ("tick", "timer",
                                                                  "Cron: '0 0 0 1 1 *'")
    assert not tick.run_on_startup and not tick.use_monitor  # the sample sets useMonitor false
    assert tick.wants_context and not tick.is_async


def test_timer_schedules_resolve_app_settings_and_take_the_host_defaults():
    [tick] = _timers(_timer(schedule="0 %MINUTES% * * * *"), env={"MINUTES": "*/5"})
    assert tick.schedule.expression == "0 */5 * * * *"
    assert tick.schedule.next_after(datetime(2024, 5, 1, 12, 1, tzinfo=UTC)) == \
        datetime(2024, 5, 1, 12, 5, tzinfo=UTC)
    assert (tick.run_on_startup, tick.use_monitor) == (False, True)  # the host's defaults
    [tick] = _timers(_timer(schedule="%WHOLE%", runOnStartup=True, useMonitor=False),
                     env={"WHOLE": "00:10:00"})
    assert (str(tick.schedule), tick.run_on_startup, tick.use_monitor) == (
        "Constant: 00:10:00", True, False)


def test_schedules_firing_more_than_once_a_minute_are_not_monitored():
    seconds, minutes, span = _timers(_timer("seconds", schedule="*/10 * * * * *"),
                                     _timer("minutes", schedule="0 */1 * * * *"),
                                     _timer("span", schedule="00:00:30"))
    assert (seconds.use_monitor, minutes.use_monitor, span.use_monitor) == (False, True, False)


@pytest.mark.parametrize("schedule, env, message", [
    ("0 */5 * * *  * *", {}, "function tick: '0 */5 * * *  * *' is not a valid NCRONTAB"),
    ("0 0 25 * * *", {}, "function tick: '0 0 25 * * *' is not a valid NCRONTAB expression: "
                         "hour field '25'"),
    ("%TICKS%", {}, "function tick schedule '%TICKS%' refers to app setting 'TICKS', which is "
                    "not set"),
    ("", {}, "function tick: '' is not a valid NCRONTAB expression"),
    ("00:00:15", {"website_sku": "Dynamic"}, "function tick: '00:00:15' is not a valid CRON "
                                             "expression"),
])
def test_a_schedule_the_host_would_refuse_is_an_error_naming_the_function(schedule, env,
                                                                          message):
    with pytest.raises(AppIndexError) as error:
        _timers(_timer(schedule=schedule), env=env)
    assert message in str(error.value)


def test_disabled_timer_functions_are_skipped():
    env = {"AzureWebJobs.tick.Disabled": "true", "NOT_USED": "x"}
    assert _timers(_timer(schedule="%UNSET%"), _timer("tock", schedule="0 * * * * *"),
                   env=env)[0].name == "tock"
