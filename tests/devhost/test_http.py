"""HTTP functions are served as the Functions host serves them."""

import json
import re
import socket
import threading
from urllib.parse import urlsplit

import httpx
import pytest

from devhost.process import DevHost

from .conftest import FUNCTION_KEY, MASTER_KEY, SAMPLE_APP, WORKERS, wait_for, worker_library_unavailable


@pytest.fixture(scope="module", params=WORKERS)
def host(request, tmp_path_factory):
    """A host with auth on; its keys and two SAMPLE_* values come from a settings file. Every
    test runs against Microsoft's worker library (where it can be loaded) and devhost's own
    invocation code."""
    tmp = tmp_path_factory.mktemp("http")
    settings = tmp / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": {
        "DEVHOST_FUNCTION_KEY": FUNCTION_KEY, "DEVHOST_MASTER_KEY": MASTER_KEY,
        "SAMPLE_FROM_FILE": "file", "SAMPLE_OVERRIDDEN": "file"}}))
    with DevHost(SAMPLE_APP, {"SAMPLE_OVERRIDDEN": "env"}, queues=False, settings_file=settings,
                 log_path=tmp / "devhost.log", worker=request.param) as running:
        yield running


@pytest.fixture(scope="module")
def client(host):
    with httpx.Client(base_url=host.url, timeout=10) as c:
        yield c


def test_it_listens_on_loopback_only(host):
    assert urlsplit(host.url).hostname == "127.0.0.1"


def test_http_is_parsed_by_httptools(host):
    # What the running uvicorn instantiates for each connection, as devhost reports it.
    assert ("HTTP/1.1 parser: httptools (uvicorn.protocols.http.httptools_impl.HttpToolsProtocol)"
            in host.log_path.read_text())


def test_the_server_configuration_selects_the_httptools_protocol():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from devhost.__main__ import server_config

    config = server_config(lambda scope, receive, send: None, 0)
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol


def test_the_functions_are_invoked_by_the_chosen_worker(host):
    log = host.log_path.read_text()
    if host.worker == "library":
        assert "invoked by Microsoft's Python worker, azure-functions-runtime" in log
    else:
        assert "invoked by devhost's own invocation code" in log


def test_routes_sit_under_the_prefix_and_pass_route_and_query_parameters(client, host):
    r = client.get("/api/echo/Bob", params={"q": "1"})
    assert r.status_code == 200
    seen = r.json()
    assert (seen["name"], seen["method"], seen["params"]) == ("Bob", "GET", {"q": "1"})
    assert seen["url"] == f"{host.url}/api/echo/Bob?q=1"
    assert client.get("/echo/Bob").status_code == 404


def test_query_parameters_without_a_value_are_left_out_as_the_host_does(client):
    seen = client.get("/api/echo/Bob?q=1&flag&empty=").json()
    assert seen["params"] == {"q": "1"}


def test_returning_what_the_worker_cannot_encode_fails_the_invocation(client, host):
    # azure.functions encodes an HttpResponse or a str only: None or bytes is a 500 in Azure.
    assert (client.get("/api/nothing").status_code, client.get("/api/nothing?bytes=1").status_code) \
        == (500, 500)
    assert "NoneType" in host.log_path.read_text()  # each worker says it in its own words


def test_the_request_body_and_headers_reach_the_function(client):
    r = client.post("/api/echo/x", content=b'{"a": 1}',
                    headers={"content-type": "application/json", "X-Custom": "yes"})
    seen = r.json()
    assert (seen["method"], seen["body"], seen["content_type"], seen["x_custom"]) == (
        "POST", '{"a": 1}', "application/json", "yes")


def test_methods_not_listed_by_the_function_are_not_found(client):
    assert client.put("/api/echo/x").status_code == 404
    assert client.delete("/api/items/latest").text == "latest"  # no methods: any method


def test_unmatched_paths_answer_404_with_an_empty_body(client):
    r = client.get("/api/no/such/route")
    assert (r.status_code, r.content) == (404, b"")


def test_literal_routes_win_and_constraints_choose_between_parameter_routes(client):
    assert client.get("/api/items/latest").text == "latest"
    assert client.get("/api/items/42").text == "id:42"
    assert client.get("/api/items/abc").text == "slug:abc"
    assert client.get("/API/ITEMS/LATEST").text == "latest"


def test_status_headers_and_body_are_passed_through(client):
    r = client.get("/api/echo/bob", params={"status": "201"})
    assert r.status_code == 201
    assert r.headers["x-echo"] == "bob"
    assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-length"] == str(len(r.content))


def test_a_text_mimetype_gets_its_charset(client):
    r = client.get("/api/text")
    assert (r.text, r.headers["content-type"]) == ("plain", "text/plain; charset=utf-8")


def test_async_functions_are_awaited_and_get_the_context(client):
    assert client.get("/api/async").text == "async:async_route"


def test_an_exception_is_a_500_with_an_empty_body_and_a_logged_traceback(client, host):
    r = client.post("/api/boom", content=b"private-payload-123")
    assert (r.status_code, r.content) == (500, b"")
    log = host.log_path.read_text()
    assert "RuntimeError: boom" in log
    assert "private-payload-123" not in log


def test_the_trace_context_comes_from_the_incoming_headers(client):
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    seen = client.get("/api/context", headers={"traceparent": parent,
                                               "tracestate": "vendor=1"}).json()
    assert (seen["trace_parent"], seen["trace_state"]) == (parent, "vendor=1")
    assert seen["function_name"] == "show_context"
    assert seen["function_directory"] == str(SAMPLE_APP.resolve())


def test_without_a_traceparent_each_invocation_starts_a_trace(client):
    first, second = client.get("/api/context").json(), client.get("/api/context").json()
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", first["trace_parent"])
    assert first["trace_parent"] != second["trace_parent"]
    assert first["invocation_id"] != second["invocation_id"]


def test_settings_file_values_reach_the_app_without_overriding_the_environment(client):
    assert client.get("/api/setting/SAMPLE_FROM_FILE").text == "file"
    assert client.get("/api/setting/SAMPLE_OVERRIDDEN").text == "env"


def test_bodies_over_100_mib_are_refused_with_413(host):
    url = urlsplit(host.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"POST /api/echo/x HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 104857601\r\n\r\n")
        assert sock.recv(200).startswith(b"HTTP/1.1 413")


class TestAuth:
    def test_function_routes_need_a_key(self, client):
        r = client.get("/api/secure")
        assert (r.status_code, r.content) == (401, b"")
        assert client.get("/api/secure", headers={"x-functions-key": "wrong"}).status_code == 401

    def test_the_function_key_or_the_master_key_opens_function_routes(self, client):
        assert client.get("/api/secure", headers={"x-functions-key": FUNCTION_KEY}).text == "secret"
        assert client.get("/api/secure", headers={"x-functions-key": MASTER_KEY}).text == "secret"

    def test_the_key_may_be_the_code_query_parameter(self, client):
        assert client.get("/api/secure", params={"code": FUNCTION_KEY}).status_code == 200
        assert client.get("/api/secure", params={"code": "wrong"}).status_code == 401

    def test_the_header_is_read_before_the_code_parameter(self, client):
        # As the host: the x-functions-key header when present, else ?code=.
        assert client.get("/api/secure", params={"code": FUNCTION_KEY},
                          headers={"x-functions-key": "wrong"}).status_code == 401
        assert client.get("/api/secure", params={"code": "wrong"},
                          headers={"x-functions-key": FUNCTION_KEY}).status_code == 200

    def test_admin_routes_need_the_master_key(self, client):
        assert client.get("/api/ops", headers={"x-functions-key": FUNCTION_KEY}).status_code == 401
        assert client.get("/api/ops", headers={"x-functions-key": MASTER_KEY}).text == "admin"

    def test_anonymous_routes_need_no_key(self, client):
        assert client.get("/api/echo/x").status_code == 200


def test_no_auth_opens_every_route_and_sigterm_stops_the_host_cleanly(start_host):
    host = start_host({}, auth=False, queues=False)
    assert httpx.get(f"{host.url}/api/secure").text == "secret"
    assert httpx.get(f"{host.url}/api/ops").text == "admin"
    assert host.stop() == 0


def test_with_auth_on_and_no_keys_configured_keyed_routes_answer_401(start_host):
    host = start_host({"DEVHOST_FUNCTION_KEY": "", "DEVHOST_MASTER_KEY": ""}, queues=False)
    assert httpx.get(f"{host.url}/api/secure", params={"code": ""}).status_code == 401
    assert httpx.get(f"{host.url}/api/ops").status_code == 401
    assert host.log_path.read_text().count("neither DEVHOST_FUNCTION_KEY nor") == 1


def test_sigterm_lets_in_flight_requests_finish(start_host):
    host = start_host({}, queues=False)
    answers = []
    caller = threading.Thread(target=lambda: answers.append(
        httpx.get(f"{host.url}/api/sleep", params={"seconds": "1.5"}, timeout=10)))
    caller.start()
    wait_for(lambda: "sleep started" in host.log_path.read_text(), timeout=10)  # in flight
    assert host.stop() == 0
    caller.join()
    assert [(a.status_code, a.text) for a in answers] == [(200, "slept")]


def test_a_startup_error_is_reported_clearly(start_host):
    with pytest.raises(RuntimeError, match="SAMPLE_QUEUE.*not set"):
        start_host({})  # the queue trigger names %SAMPLE_QUEUE%, which is not set


def test_a_bad_thread_count_setting_is_warned_about_and_the_default_kept(caplog):
    import os

    from devhost.invocation import default_thread_count

    default = min(32, (os.cpu_count() or 1) + 4)
    assert default_thread_count({"PYTHON_THREADPOOL_THREAD_COUNT": "3"}) == 3
    with caplog.at_level("WARNING", logger="devhost"):
        assert default_thread_count({"PYTHON_THREADPOOL_THREAD_COUNT": "many"}) == default
        assert default_thread_count({"PYTHON_THREADPOOL_THREAD_COUNT": "0"}) == default
    assert caplog.text.count("PYTHON_THREADPOOL_THREAD_COUNT") == 2


def test_by_default_the_worker_library_is_used_when_it_can_be_loaded(start_host):
    host = start_host({}, queues=False)
    log = host.log_path.read_text()
    reason = worker_library_unavailable()
    if reason is None:
        assert "invoked by Microsoft's Python worker" in log
    else:
        assert "invoked by devhost's own invocation code" in log
        assert "Microsoft's worker library is not used" in log


@pytest.mark.skipif(worker_library_unavailable() is None, reason="the worker library is available")
def test_asking_for_the_worker_library_where_it_cannot_be_loaded_is_a_startup_error(start_host):
    with pytest.raises(RuntimeError, match="--worker library: "):
        start_host({}, queues=False, worker="library")


@pytest.mark.skipif(worker_library_unavailable() is not None,
                    reason=f"worker library unavailable: {worker_library_unavailable()}")
def test_the_worker_checks_the_functions_signatures_at_load(tmp_path, start_host):
    # The worker refuses a trigger parameter whose annotation does not match its binding;
    # devhost's own code would only fail when the function is called.
    app = tmp_path / "bad_app"
    app.mkdir()
    (app / "host.json").write_text('{"version": "2.0"}')
    (app / "function_app.py").write_text(
        "import azure.functions as func\n"
        "app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)\n"
        "@app.route(route='bad')\n"
        "def bad(req: int) -> func.HttpResponse:\n"
        "    return func.HttpResponse('never')\n")
    host = DevHost(app, {}, queues=False, log_path=tmp_path / "bad.log", worker="library")
    with pytest.raises(RuntimeError, match="exited"):
        host.start(timeout=30)
    log = host.log_path.read_text()
    assert "the worker could not index" in log and "FunctionLoadError" in log
