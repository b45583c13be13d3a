"""The ``/api/score`` body (``rows`` or ``records``, plus ``options``) and its response."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.errors import InvalidPayload
from shared.models.schema import FeatureSchema
from shared.payloads.common import DEFAULT_OPTIONS, ScoringInput, dumps, json_numbers, parse_options
from shared.payloads.records import parse_records
from shared.payloads.rows import parse_rows

_FIELDS = frozenset(("rows", "records", "options"))


def parse_score_body(doc: dict[str, Any], schema: FeatureSchema, max_rows: int,
                     extra_fields: frozenset[str] = frozenset()) -> ScoringInput:
    """Parse the ``/api/score`` body: ``rows`` or ``records``, plus ``options``."""
    if len(doc) == 1 and "rows" in doc:  # the common shape: no options, no extra fields
        return ScoringInput(X=parse_rows(doc["rows"], schema, max_rows), options=DEFAULT_OPTIONS,
                            format="rows", fields={})
    allowed = _FIELDS | extra_fields
    unknown = set(doc) - allowed
    if unknown:
        raise InvalidPayload(f"unknown field(s) {sorted(unknown)[:5]}; expected 'rows' or 'records' "
                             f"and optionally 'options'", code="invalid_payload")
    if ("rows" in doc) == ("records" in doc):
        raise InvalidPayload("send exactly one of 'rows' (lists in feature order) or 'records' "
                             "(objects by feature name)", code="invalid_payload")
    options = parse_options(doc.get("options"))
    if "rows" in doc:
        X = parse_rows(doc["rows"], schema, max_rows)
        fmt = "rows"
    else:
        X = parse_records(doc["records"], schema, max_rows)
        fmt = "records"
    return ScoringInput(X=X, options=options, format=fmt,
                        fields={k: doc[k] for k in extra_fields if k in doc})


def encode_score_response(predictions: np.ndarray, model: dict[str, Any], request_id: str | None,
                          extra: dict[str, Any] | None = None) -> bytes:
    """The ``/api/score`` response body."""
    doc: dict[str, Any] = {"predictions": json_numbers(predictions), "model": model, "request_id": request_id}
    if extra:
        doc.update(extra)
    return dumps(doc)
