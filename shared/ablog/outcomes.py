"""Outcomes (the labels that become known after a prediction), posted to
``POST /api/outcomes/{endpoint}`` and appended to the outcome log.

A body is ``{"outcomes": [...]}`` with 1 to :data:`MAX_OUTCOMES` entries, each::

    {"request_id": "6f1c...", "label": 1}                       # joins that request's prediction
    {"key": "user-42", "label": 0, "time": "2026-11-24T10:00Z"}  # joins the key's latest
                                                                 # prediction at or before time
    {"request_id": "...", "row": 3, "label": 0.5}                # row 3 of a multi-row request

Exactly one of ``request_id`` / ``key`` (a string of 1 to 128 characters; a key may also be
an integer, as sticky keys may), ``label`` a finite number (whether it fits the objective,
0/1 for a binary model, is the report's business), optional ``time`` (ISO 8601; without
a zone it is UTC; default: when it was received) and ``row`` (0-based row of a multi-row
request). Every fault is a 400 ``invalid_outcome`` naming the entry.

Unlike prediction log records, outcomes are written before the answer (``202`` means
stored): a caller whose post failed with a 503 retries it, so no label is silently lost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.ablog.blobs import MAX_BLOCK_BYTES, AppendTarget, hour_prefix, pack_lines
from shared.ablog.times import iso_time
from shared.errors import InvalidName, InvalidOutcome, OutcomeLogUnavailable, PayloadTooLarge

MAX_OUTCOMES = 10_000
MAX_ID_CHARS = 128
MAX_ROW = 100_000_000
FUTURE_SLACK_SECONDS = 24 * 3600  # clocks differ; a time further ahead is a mistake
_FIELDS = frozenset({"request_id", "key", "label", "time", "row"})


def check_endpoint(endpoint: str) -> None:
    """Outcome endpoints are router endpoint names (letters, digits, ``.``, ``_``, ``-``)."""
    from shared.router.fields import NAME_RE

    if not isinstance(endpoint, str) or not NAME_RE.match(endpoint):
        raise InvalidName(f"{str(endpoint)[:64]!r} is not a valid endpoint name: use up to 64 "
                          f"letters, digits, '.', '_', '-', starting with a letter or digit")


def parse_outcomes(body: bytes, *, now: float | None = None) -> list[dict[str, Any]]:
    """Validate an outcomes body into records (without ``endpoint``/``received``)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidOutcome(f"body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(doc, dict):
        raise InvalidOutcome("body must be a JSON object {\"outcomes\": [...]}")
    unknown = sorted(set(doc) - {"outcomes"})
    if unknown:
        raise InvalidOutcome(f"unknown field {unknown[0][:64]!r}; the body is {{\"outcomes\": [...]}}")
    items = doc.get("outcomes")
    if not isinstance(items, list):
        raise InvalidOutcome("'outcomes' must be a list")
    if not items:
        raise InvalidOutcome("'outcomes' is empty: send at least one", code="empty_input")
    if len(items) > MAX_OUTCOMES:
        raise PayloadTooLarge(f"{len(items)} outcomes is more than the limit of {MAX_OUTCOMES} "
                              f"per request", code="too_many_outcomes")
    now = time.time() if now is None else now
    return [validate_outcome(item, f"outcomes[{i}]", now) for i, item in enumerate(items)]


def validate_outcome(item: Any, where: str, now: float) -> dict[str, Any]:
    """One validated outcome: ``{"request_id"|"key", "label", "time"[, "row"]}``; ``time``
    is epoch seconds here (given, or ``now``)."""
    if not isinstance(item, dict):
        raise InvalidOutcome(f"{where}: must be an object")
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        raise InvalidOutcome(f"{where}: unknown field {unknown[0][:64]!r} "
                             f"(allowed: {', '.join(sorted(_FIELDS))})")
    has_id, has_key = item.get("request_id") is not None, item.get("key") is not None
    if has_id == has_key:
        raise InvalidOutcome(f"{where}: give exactly one of 'request_id' and 'key'")
    out: dict[str, Any] = {}
    if has_id:
        out["request_id"] = _identifier(item["request_id"], f"{where}.request_id", allow_int=False)
    else:
        out["key"] = _identifier(item["key"], f"{where}.key", allow_int=True)
    label = item.get("label")
    if not (type(label) is int or type(label) is float) or not _finite(label):
        raise InvalidOutcome(f"{where}.label: must be a finite number")
    out["label"] = label
    if item.get("row") is not None:
        row = item["row"]
        if type(row) is not int or not 0 <= row < MAX_ROW:
            raise InvalidOutcome(f"{where}.row: must be a row index (an integer from 0)")
        out["row"] = row
    if item.get("time") is not None:
        out["time"] = parse_time(item["time"], f"{where}.time", now)
    else:
        out["time"] = now
    return out


def parse_time(value: Any, where: str, now: float) -> float:
    """An ISO 8601 time (UTC when it has no zone) as epoch seconds, not far in the future."""
    if not isinstance(value, str) or len(value) > 40:
        raise InvalidOutcome(f"{where}: must be an ISO 8601 time such as 2026-11-24T10:00:00Z")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidOutcome(f"{where}: must be an ISO 8601 time such as 2026-11-24T10:00:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    t = parsed.timestamp()
    if t > now + FUTURE_SLACK_SECONDS:
        raise InvalidOutcome(f"{where}: is more than a day in the future")
    return t


def _identifier(value: Any, where: str, *, allow_int: bool) -> str:
    if allow_int and type(value) is int:
        value = str(value)
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_CHARS:
        what = "a string or an integer" if allow_int else "a string"
        raise InvalidOutcome(f"{where}: must be {what} of 1 to {MAX_ID_CHARS} characters")
    if any(ord(c) < 32 for c in value):
        raise InvalidOutcome(f"{where}: must not contain control characters")
    return value


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def encode_records(endpoint: str, outcomes: list[dict[str, Any]], received: float) -> list[bytes]:
    """The JSON lines of validated outcomes as stored in the outcome log."""
    stamp = iso_time(received)
    lines = []
    for o in outcomes:
        record: dict[str, Any] = {"time": iso_time(o["time"]), "received": stamp, "endpoint": endpoint}
        for name in ("request_id", "key", "row", "label"):
            if name in o:
                record[name] = o[name]
        lines.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    return lines


class OutcomeLog:
    """Appends outcomes to the outcome log synchronously (the caller gets 202 once stored)."""

    def __init__(self, target_factory: Callable[[], AppendTarget]) -> None:
        self._target_factory = target_factory
        self._target: AppendTarget | None = None

    def append(self, endpoint: str, outcomes: list[dict[str, Any]], received: float | None = None) -> int:
        """Write validated outcomes of ``endpoint``; raises :class:`OutcomeLogUnavailable`."""
        received = time.time() if received is None else received
        lines = encode_records(endpoint, outcomes, received)
        prefix = hour_prefix(endpoint, received)
        if self._target is None:
            self._target = self._target_factory()  # a SettingsError is a 500, not a 503
        try:
            for block, _ in pack_lines(lines, MAX_BLOCK_BYTES):
                self._target.append(prefix, block)
        except Exception as exc:
            code = getattr(exc, "status_code", None)
            hint = (" (check the app's identity has Storage Blob Data Contributor)"
                    if code in (401, 403) else "")
            raise OutcomeLogUnavailable(f"the outcome log could not be written: "
                                        f"{type(exc).__name__}{hint}; retry later") from None
        return len(lines)
