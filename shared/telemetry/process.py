"""The process-wide telemetry: set up on first use, replaceable by tests and the demo.

The package's only module-level state. A composition root that builds the app will own it;
until then :func:`get_telemetry` and :func:`set_telemetry` are the way in.
"""

from __future__ import annotations

import os
import threading

from shared.telemetry.recorder import Telemetry
from shared.telemetry.setup import TelemetrySetup, set_up

_current: TelemetrySetup | None = None
_lock = threading.Lock()


def get_telemetry() -> Telemetry:
    """The process-wide telemetry, configuring the exporter on first use when set up."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = set_up(os.environ)
    return _current.telemetry


def set_telemetry(telemetry: Telemetry | None) -> None:
    """Use ``telemetry`` process-wide (tests and the demo's in-memory reader); ``None`` sets
    it up again on next use. A local reader already set up stays."""
    global _current
    if telemetry is None:
        _current = None
    else:
        _current = TelemetrySetup(telemetry, _current.local_reader if _current else None)


def current_setup() -> TelemetrySetup | None:
    """What the process uses now, if anything has been set up or set yet."""
    return _current
