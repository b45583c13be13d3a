"""The process-wide telemetry, replaceable."""

from __future__ import annotations

from shared.telemetry import get_telemetry, set_telemetry


def test_the_process_wide_telemetry_can_be_replaced(readers):
    from shared.telemetry.process import current_setup

    telemetry, _, _ = readers
    before = current_setup()
    set_telemetry(telemetry)
    try:
        assert get_telemetry() is telemetry
    finally:
        set_telemetry(before.telemetry if before else None)
