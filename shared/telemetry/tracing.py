"""Request spans: whether a request is traced, continuing the caller's trace context, and
:class:`RequestTrace`, what the scoring code holds to annotate its span.

The sampling decision is taken before any span exists, so an unsampled request pays nothing
for tracing (even the API's no-op spans cost ~8 us each: context attach and detach).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


class RequestTrace:
    """The span of one sampled request and a way to make its children."""

    def __init__(self, tracer: Any, span: Any) -> None:
        self.tracer = tracer
        self.span = span

    def child_after_the_fact(self, name: str, start_ns: int, attributes: dict[str, Any]) -> None:
        """A child span for work already done (a model load found to be cold afterwards)."""
        self.tracer.start_span(name, start_time=start_ns, attributes=attributes).end()

    def set_attribute(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        """Put the request's metric attributes (variant, model, outcome, cold) on its span too,
        so traces can be split the same way (the workbook's percentiles come from spans)."""
        self.span.set_attributes(attributes)

    def mark_error(self, code: str) -> None:
        self.span.set_status(Status(StatusCode.ERROR, code))
        self.span.set_attribute("scorefn.error", code)
        self.span.set_attribute("outcome", code)


class _NoTrace(RequestTrace):
    """Tracing off or this request not sampled: every method is (nearly) free."""

    def __init__(self) -> None:
        super().__init__(None, None)

    def child_after_the_fact(self, name: str, start_ns: int, attributes: dict[str, Any]) -> None:
        pass

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        pass

    def mark_error(self, code: str) -> None:
        pass


NO_TRACE = _NoTrace()
UNTRACED: AbstractContextManager[RequestTrace] = nullcontext(NO_TRACE)  # no generator, no context


def tracing_configured(provider: Any) -> bool:
    """Whether ``provider`` records spans: the API's default is a proxy to a no-op until an
    SDK provider is installed."""
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def sampled(carrier: Mapping[str, str] | None, ratio: float) -> bool:
    """Trace this request? A ``traceparent`` carrying the W3C sampled flag decides; else a
    share ``ratio`` of requests is traced."""
    parent = carrier.get("traceparent") if carrier else None
    if parent and len(parent) == 55:
        try:
            return bool(int(parent[53:], 16) & 1)  # the caller decided (W3C sampled flag)
        except ValueError:
            pass  # not a valid traceparent: decide here
    return ratio >= 1.0 or random.random() < ratio


@contextmanager
def traced_span(tracer: Any, name: str, carrier: Mapping[str, str] | None,
                attributes: dict[str, Any]) -> Iterator[RequestTrace]:
    """A server span named ``name``, the child of the trace in ``carrier`` when it holds one."""
    context = _PROPAGATOR.extract(carrier) if carrier else None
    with tracer.start_as_current_span(name, context=context, attributes=attributes,
                                      kind=trace.SpanKind.SERVER, record_exception=False,
                                      set_status_on_exception=False) as span:
        yield RequestTrace(tracer, span) if span.is_recording() else NO_TRACE
