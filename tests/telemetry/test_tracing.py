"""Request traces: one span per request with its stage times, continuing the caller's trace
context, carrying the metric attributes; unsampled requests make no span."""

from __future__ import annotations

from tests.telemetry.conftest import body

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_one_span_per_request_with_stage_times_continuing_the_callers_trace(service, readers):
    _, _, spans = readers
    service.score("price", body(), carrier={"traceparent": TRACEPARENT})
    finished = spans.get_finished_spans()
    root = next(s for s in finished if s.name == "scorefn.score")
    assert format(root.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert format(root.parent.span_id, "016x") == "00f067aa0ba902b7"
    children = [s.name for s in finished if s.parent and s.parent.span_id == root.context.span_id]
    assert children == ["model.load"]  # a cold request; stages are attributes, not spans
    load = next(s for s in finished if s.name == "model.load")
    assert root.start_time <= load.start_time <= load.end_time <= root.end_time
    stages = ("scorefn.decode_ms", "scorefn.parse_ms", "scorefn.predict_ms", "scorefn.serialize_ms")
    assert all(root.attributes[name] >= 0 for name in stages)
    assert root.attributes["scorefn.predict_ms"] > 0


def test_the_request_span_carries_the_metric_attributes(service, readers):
    _, _, spans = readers
    service.score("price", body())
    root = next(s for s in spans.get_finished_spans() if s.name == "scorefn.score")
    assert root.attributes["model.name"] == "price" and root.attributes["variant"] == "default"
    assert root.attributes["outcome"] == "ok" and root.attributes["cold"] is True


def test_unsampled_requests_make_no_span_and_a_sampled_caller_is_always_traced(service, readers):
    telemetry, _, spans = readers
    telemetry.trace_sample_ratio = 0.0
    service.score("price", body())
    assert [s for s in spans.get_finished_spans() if s.name == "scorefn.score"] == []
    service.score("price", body(), carrier={"traceparent": TRACEPARENT})  # flag 01: sampled
    assert len([s for s in spans.get_finished_spans() if s.name == "scorefn.score"]) == 1
    unsampled_parent = TRACEPARENT[:-2] + "00"
    service.score("price", body(), carrier={"traceparent": unsampled_parent})
    assert len([s for s in spans.get_finished_spans() if s.name == "scorefn.score"]) == 1
    # Other flag bits set as well: the sampled bit still decides (W3C: flags & 01).
    service.score("price", body(), carrier={"traceparent": TRACEPARENT[:-2] + "03"})
    assert len([s for s in spans.get_finished_spans() if s.name == "scorefn.score"]) == 2
    service.score("price", body(), carrier={"traceparent": TRACEPARENT[:-2] + "02"})
    assert len([s for s in spans.get_finished_spans() if s.name == "scorefn.score"]) == 2
