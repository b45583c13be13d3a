"""What one scoring produced: a finished, immutable record for the transport to shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from shared.models.model import ModelInfo
from shared.payloads import ScoringInput
from shared.router import Route

Format = Literal["score", "v2"]  # the scoring route's JSON, or the Open Inference Protocol


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """Predictions and how they were made; ``body`` is the encoded response (``None`` for a
    scoring no transport answers directly: a queue job's, a shadow's)."""

    predictions: np.ndarray
    model: ModelInfo
    request: ScoringInput
    cold: bool
    predict_seconds: float
    route: Route | None = None
    backend: str = "lightgbm"  # what predicted: "lightgbm" or "compiled" (compiled trees)
    parse_seconds: float = 0.0  # the body's rows to a matrix (after JSON decoding)
    body: bytes | None = None
    binary_header_length: int | None = None  # V2 binary output: its JSON header's length
    request_id: str | None = None  # the id the prediction log keeps (when logged)
    logged: bool = False  # in the prediction log (its shadows are logged too)
    log_features: bool = False  # ... with the request's features

    @property
    def response_body(self) -> bytes:
        """``body``, for a scoring a transport answers (``score`` and ``score_cached`` encode it)."""
        if self.body is None:
            raise ValueError("this scoring has no encoded response")
        return self.body

    @property
    def variant(self) -> str:
        return self.route.variant if self.route is not None else "default"
