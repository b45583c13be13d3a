"""Measurements recorded off the request thread, in a bounded queue; a flush returns once every
measurement before it is recorded."""

from __future__ import annotations

import threading

from tests.telemetry.conftest import points


def test_metrics_are_recorded_off_the_request_thread_and_bounded(readers):
    telemetry, reader, _ = readers
    attrs = {"trigger": "http", "endpoint": "e", "outcome": "ok"}
    threads, recorded = [], threading.Event()
    telemetry.deferred.put(lambda: (threads.append(threading.current_thread().name),
                                    recorded.set()))
    assert recorded.wait(10) and threads == ["scorefn-metrics"]  # no flush: the drainer did it

    telemetry.deferred.max_pending = 3
    busy, release = threading.Event(), threading.Event()
    telemetry.deferred.put(lambda: (busy.set(), release.wait(10)))  # the drainer is held here
    assert busy.wait(10)
    for _ in range(5):
        telemetry.record(attrs, duration_ms=1.0)
    assert telemetry.deferred.dropped == 2  # bounded: never an unlimited queue
    release.set()
    (_, point), = points(reader, "scorefn.request.duration")
    assert point.count == 3


def test_a_flush_returns_once_every_measurement_before_it_is_recorded(readers):
    telemetry, reader, _ = readers
    attrs = {"trigger": "http", "endpoint": "e", "outcome": "ok"}
    for i in range(2000):
        telemetry.record(attrs, duration_ms=0.1, rows=1)
        if i % 500 == 0:
            telemetry.flush()
    (_, point), = points(reader, "scorefn.request.duration")
    (_, rows), = points(reader, "scorefn.rows")
    assert point.count == 2000 and rows.value == 2000  # counter sums added by the flush too
