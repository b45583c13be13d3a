"""Typed errors. Each carries a stable machine-readable code and an HTTP status, so that
every transport maps all of them in one place to ``{"error": code, "message": ...}``."""

from __future__ import annotations


class ScoreError(Exception):
    """Base of every error a caller may see. ``permanent`` says a retry cannot help."""

    code = "internal_error"
    status = 500
    permanent = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        """The JSON error body."""
        return {"error": self.code, "message": self.message}


class BadRequest(ScoreError):
    """The request itself is wrong; the same request will always fail."""

    code = "bad_request"
    status = 400
    permanent = True


class InvalidJson(BadRequest):
    code = "invalid_json"


class InvalidPayload(BadRequest):
    """Valid JSON that does not follow a request format (codes name the exact fault)."""

    code = "invalid_payload"


class UnsupportedMediaType(BadRequest):
    code = "unsupported_media_type"
    status = 415


class PayloadTooLarge(BadRequest):
    code = "payload_too_large"
    status = 413


class InvalidName(BadRequest):
    code = "invalid_name"


class ModelNotFound(ScoreError):
    code = "model_not_found"
    status = 404
    permanent = True


class InvalidModel(ScoreError):
    """The blob exists but is not a LightGBM model this runtime can load."""

    code = "invalid_model"
    status = 422
    permanent = True


class ModelUnavailable(ScoreError):
    """Storage could not be reached for a model never loaded; retrying later may work."""

    code = "model_unavailable"
    status = 503
    retry_after_seconds = 5


class InvalidRouterConfig(ScoreError):
    """The router configuration is invalid; the message names the path of the bad field.

    A server-side misconfiguration (like a bad app setting): a 500, and not permanent,
    since a corrected config blob is picked up without a restart."""

    code = "invalid_router_config"
    status = 500


class OverrideNotAllowed(BadRequest):
    """A caller pinned a variant on an endpoint whose config does not allow it."""

    code = "override_not_allowed"
    status = 403


class UnknownVariant(BadRequest):
    code = "unknown_variant"


class InputNotFound(BadRequest):
    """A batch job names an input blob (or container) that does not exist."""

    code = "input_not_found"
    status = 404


class JobBusy(ScoreError):
    """Another worker holds the batch job's lease; the queue delivers the message again later."""

    code = "job_busy"
    status = 409


class SettingsError(ValueError):
    """An app setting is missing or invalid; raised at first use, naming the setting."""


class NotEnabled(ScoreError):
    """A feature that is switched off by configuration."""

    code = "not_enabled"
    status = 404
    permanent = True


class InvalidOutcome(BadRequest):
    """An outcomes payload that does not follow the format; the message names the entry."""

    code = "invalid_outcome"


class OutcomeLogUnavailable(ModelUnavailable):
    """The outcome log could not be written (storage unreachable); retrying later may work.

    A 503 with ``Retry-After``, like :class:`ModelUnavailable`."""

    code = "outcome_log_unavailable"
