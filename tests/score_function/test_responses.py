"""Which trace an HTTP invocation continues."""

from types import SimpleNamespace

import azure.functions as func

from score_function.responses import trace_carrier

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HOST = "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01"


def request(headers=None):
    return func.HttpRequest("POST", "http://h/api/score/m", headers=headers or {}, body=b"{}")


def test_the_hosts_invocation_span_is_the_parent_when_the_host_traces():
    context = SimpleNamespace(trace_context=SimpleNamespace(trace_parent=HOST, trace_state="k=v"))
    assert trace_carrier(request({"traceparent": CALLER}), context) == \
        {"traceparent": HOST, "tracestate": "k=v"}


def test_otherwise_the_callers_traceparent_is_continued():
    context = SimpleNamespace(trace_context=SimpleNamespace(trace_parent="", trace_state=""))
    assert trace_carrier(request({"traceparent": CALLER}), context) == {"traceparent": CALLER}
    assert trace_carrier(request(), None) == {}
