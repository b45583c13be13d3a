"""The app is indexed through azure.functions' own ``get_functions()``."""

import sys

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
    assert [f.name for f in index.http + index.queues] == ["score", "hello", "jobs"]  # no timer


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
                 getattr(f, "auth_level", None), getattr(f, "queue_name", None))
                for f in index.http + index.queues]

    assert shape(own) == shape(worker)
