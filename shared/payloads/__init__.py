"""Request and response formats, one module each (``rows``, ``records``, ``v2``).

Every parser turns a decoded JSON document into a :class:`ScoringInput` (a float64
matrix in the model's feature order plus options) or raises a typed error whose code
names the fault. ``null`` is a missing value (NaN) in every format.
"""

from __future__ import annotations

from shared.payloads.common import Options, ScoringInput, decode_json, dumps
from shared.payloads.records import parse_records
from shared.payloads.rows import parse_rows
from shared.payloads.score_body import encode_score_response, parse_score_body
from shared.payloads.v2 import encode_v2_response, parse_v2

__all__ = ["Options", "ScoringInput", "decode_json", "dumps", "parse_rows", "parse_records",
           "parse_v2", "encode_v2_response", "parse_score_body", "encode_score_response"]
