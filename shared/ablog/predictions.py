"""The prediction log: one :class:`~shared.ablog.record.PredictionRecord` per logged
request, written off the request path.

Opt-in per endpoint with the router config's ``log`` block (``{"sample": 1.0,
"features": false}``); an endpoint without one logs nothing. The request path only builds
a small record (numpy arrays are referenced, not copied or encoded) and offers it here;
the :class:`~shared.ablog.writer.BufferedLogWriter` buffers it and appends it, as a JSON
line, to the endpoint's hourly blob (see :mod:`shared.ablog.blobs`) in the background.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

from shared.ablog.record import PredictionRecord
from shared.ablog.writer import BufferedLogWriter


def sampled(sample: float, endpoint: str, key: str | None, rand: Callable[[], float]) -> bool:
    """Whether a request is logged at rate ``sample``. With a sticky key the choice is a
    hash of (endpoint, key), so a user's requests are all logged or all not (outcomes by
    key then find their prediction); without one it is random."""
    if sample >= 1.0:
        return True
    if sample <= 0.0:
        return False
    if key:
        digest = hashlib.blake2b(f"{endpoint}\0{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2.0 ** 64 < sample
    return rand() < sample


def estimated_bytes(record: PredictionRecord) -> int:
    """About how many bytes ``record`` takes encoded (what the writer's buffer counts)."""
    size = 320 + len(record.request_id or "") + len(record.key or "")
    if record.predictions is not None:
        size += 24 * record.predictions.size
    if record.features is not None:
        size += 24 * record.features.size + 24 * len(record.feature_names or ())
    return size


class PredictionLog:
    """Decides which requests are logged, and hands their records to a writer."""

    def __init__(self, writer: BufferedLogWriter, *, rand: Callable[[], float] | None = None) -> None:
        self.writer = writer
        self._rand = rand or random.random

    def wants(self, config: Any, endpoint: str, key: str | None) -> bool:
        """Whether a request to an endpoint whose ``log`` block is ``config`` is logged."""
        return config is not None and sampled(config.sample, endpoint, key, self._rand)

    def offer(self, record: PredictionRecord) -> bool:
        """Buffer ``record`` for writing (never blocks on storage, never raises); False when
        it was dropped (and counted)."""
        try:
            size = estimated_bytes(record)
        except Exception:  # never fail a request because of its log record
            return False
        return self.writer.enqueue(record, size)

    def close(self) -> None:
        self.writer.close()
