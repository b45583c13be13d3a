"""Times as the A/B log writes them: UTC ISO 8601 with microseconds (``2026-11-24T21:05:09.123456Z``),
and read back as epoch seconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime

_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def iso_time(t: float) -> str:
    """Epoch seconds as UTC ISO 8601 with microseconds: ``2026-11-24T21:05:09.123456Z``."""
    global _second
    whole = int(t // 1)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    micros = min(999_999, int(round((t - whole) * 1e6)))
    return f"{cached[1]}.{micros:06d}Z"


def epoch_seconds(text: str) -> float:
    """An ISO 8601 time (UTC when it has no zone) as epoch seconds; ``ValueError`` when it
    is not one."""
    if not isinstance(text, str):
        raise ValueError(f"not an ISO 8601 time: {text!r}")
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
