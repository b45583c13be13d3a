"""Latency figures measured before deployment, stored as a model blob's metadata.

``python -m scorefn upload-model`` (and ``check-latency --save``) measures a model on the
uploader's machine, through the same code path the app serves with, next to the project's
reference model measured in the same run, and stores the figures with the model blob. They
are a pre-deployment estimate from that machine, not live figures (those come from
telemetry); the reference's figures make them comparable across machines.

This module defines the metadata keys in one place and reads them back into a typed record
from any ``Mapping[str, str]`` (a loaded model keeps its blob's metadata as
``model.info.blob_metadata``). It imports nothing beyond the standard library: serving code
may read figures without loading the measuring code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Blob metadata names must be C# identifiers (letters, digits, '_'); storage keeps them
# case-insensitively, so they are read back case-insensitively.
FORMAT_KEY = "scorefn_latency_format"
FORMAT = "1"
P50_KEY = "scorefn_latency_p50_ms"  # single row, JSON body in -> JSON body out
P99_KEY = "scorefn_latency_p99_ms"
BATCH_KEY = "scorefn_latency_batch_rows_per_s"  # rows per second in 1,000-row requests
PARSE_KEY = "scorefn_latency_parse_ms"  # the model text to a loaded model
MEMORY_KEY = "scorefn_latency_memory_mb"  # resident memory the loaded model added (absent: unknown)
REF_P50_KEY = "scorefn_latency_ref_p50_ms"  # the reference model, same machine, same run
REF_P99_KEY = "scorefn_latency_ref_p99_ms"
REF_BATCH_KEY = "scorefn_latency_ref_batch_rows_per_s"
REF_MODEL_KEY = "scorefn_latency_ref_model"  # e.g. "500 trees, 63 leaves, 100 features"
MEASURED_AT_KEY = "scorefn_latency_measured_at"  # ISO 8601, UTC
MACHINE_KEY = "scorefn_latency_machine"  # e.g. "2 cores x86_64 Linux, LightGBM 4.7.0"

LATENCY_METADATA_KEYS = (FORMAT_KEY, P50_KEY, P99_KEY, BATCH_KEY, PARSE_KEY, MEMORY_KEY,
                         REF_P50_KEY, REF_P99_KEY, REF_BATCH_KEY, REF_MODEL_KEY, MEASURED_AT_KEY,
                         MACHINE_KEY)
MAX_TEXT_CHARS = 120  # free-text values (machine, reference) are kept short and ASCII


@dataclass(frozen=True)
class LatencyFigures:
    """One model's pre-deployment latency figures and the reference's from the same run."""

    single_row_p50_ms: float
    single_row_p99_ms: float
    batch_rows_per_second: float
    parse_ms: float
    memory_mb: float | None
    reference_p50_ms: float
    reference_p99_ms: float
    reference_batch_rows_per_second: float
    reference_model: str
    measured_at: str
    machine: str

    @property
    def p99_vs_reference(self) -> float:
        """The single-row p99 as a multiple of the reference's (comparable across machines)."""
        return self.single_row_p99_ms / self.reference_p99_ms

    def to_metadata(self) -> dict[str, str]:
        """The figures as blob metadata: small ASCII strings under :data:`LATENCY_METADATA_KEYS`."""
        meta = {
            FORMAT_KEY: FORMAT,
            P50_KEY: _number(self.single_row_p50_ms),
            P99_KEY: _number(self.single_row_p99_ms),
            BATCH_KEY: _number(self.batch_rows_per_second),
            PARSE_KEY: _number(self.parse_ms),
            REF_P50_KEY: _number(self.reference_p50_ms),
            REF_P99_KEY: _number(self.reference_p99_ms),
            REF_BATCH_KEY: _number(self.reference_batch_rows_per_second),
            REF_MODEL_KEY: _text(self.reference_model),
            MEASURED_AT_KEY: _text(self.measured_at),
            MACHINE_KEY: _text(self.machine),
        }
        if self.memory_mb is not None:
            meta[MEMORY_KEY] = _number(self.memory_mb)
        return meta

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (for metadata routes): figures, the reference's, and where from."""
        return {
            "single_row_p50_ms": self.single_row_p50_ms,
            "single_row_p99_ms": self.single_row_p99_ms,
            "batch_rows_per_second": self.batch_rows_per_second,
            "parse_ms": self.parse_ms,
            "memory_mb": self.memory_mb,
            "reference": {"model": self.reference_model,
                          "single_row_p50_ms": self.reference_p50_ms,
                          "single_row_p99_ms": self.reference_p99_ms,
                          "batch_rows_per_second": self.reference_batch_rows_per_second},
            "p99_vs_reference": round(self.p99_vs_reference, 3),
            "measured_at": self.measured_at,
            "machine": self.machine,
            "source": "pre-deployment estimate (python -m scorefn check-latency)",
        }


def read_latency_figures(metadata: Mapping[str, str] | None) -> LatencyFigures | None:
    """The figures stored in ``metadata`` (keys matched case-insensitively), or ``None`` when
    there are none or they are not whole and well-formed (another format, a missing key, a
    number that is not a finite positive one). Never raises."""
    if not metadata:
        return None
    try:
        meta = {str(k).lower(): str(v) for k, v in metadata.items()}
        if meta.get(FORMAT_KEY) != FORMAT:
            return None
        memory = meta.get(MEMORY_KEY)
        return LatencyFigures(
            single_row_p50_ms=_positive(meta[P50_KEY]),
            single_row_p99_ms=_positive(meta[P99_KEY]),
            batch_rows_per_second=_positive(meta[BATCH_KEY]),
            parse_ms=_positive(meta[PARSE_KEY]),
            memory_mb=_non_negative(memory) if memory is not None else None,
            reference_p50_ms=_positive(meta[REF_P50_KEY]),
            reference_p99_ms=_positive(meta[REF_P99_KEY]),
            reference_batch_rows_per_second=_positive(meta[REF_BATCH_KEY]),
            reference_model=meta[REF_MODEL_KEY][:MAX_TEXT_CHARS],
            measured_at=meta[MEASURED_AT_KEY][:MAX_TEXT_CHARS],
            machine=meta[MACHINE_KEY][:MAX_TEXT_CHARS])
    except (KeyError, ValueError, TypeError, AttributeError):
        return None


def without_latency_figures(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """``metadata`` less any latency figures (to replace them and keep the rest)."""
    keys = set(LATENCY_METADATA_KEYS)
    return {k: v for k, v in (metadata or {}).items() if k.lower() not in keys}


def _number(value: float) -> str:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"a latency figure must be a finite non-negative number, not {value!r}")
    return f"{value:.6g}"


def _text(value: str) -> str:
    # Metadata values travel as HTTP header values: printable ASCII only.
    return "".join(c if " " <= c <= "~" else "?" for c in value)[:MAX_TEXT_CHARS]


def _non_negative(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise ValueError(text)
    return value
