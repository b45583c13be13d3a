"""Batch job messages: the schema of a queue scoring request, validated into a typed job.

Two kinds of job share one queue (the Functions host base64-decodes the message):

- inline, the rows travel in the message (at most 48 KiB of JSON: 64 KiB in base64)::

    {"id": "job-42", "endpoint": "churn", "rows": [[...], ...], "options": {...}}
    {"id": "job-42", "endpoint": "churn", "records": [{...}, ...]}

- by reference, input and output are blobs (in ``BATCH_CONTAINER`` unless named)::

    {"id": "job-43", "endpoint": "churn",
     "input": {"blob": "inputs/2026-11-24.csv", "container": "...", "format": "csv"},
     "output": {"blob": "predictions/job-43.csv", "container": "...", "format": "csv"},
     "id_column": "customer_id", "options": {"raw_score": true}}

``id`` is the caller's idempotency key. Without one, an id is derived from the queue
message id, which stays the same across redeliveries of one message, so a job without an
id is still scored once. An id names one job: the job record keeps :func:`job_digest` of
the message that first used it, and a different message with that id fails
(``job_id_reused``) instead of getting the first job's result. Every fault raises a
permanent typed error whose code names it.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from shared.errors import InvalidJson, InvalidPayload, PayloadTooLarge
from shared.payloads.common import Options, parse_options

# A queue message holds 64 KiB of text; the host's base64 makes that 48 KiB of JSON.
MAX_MESSAGE_BYTES = 48 * 1024
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
FORMATS = {"csv": "csv", "jsonl": "jsonl", "ndjson": "jsonl"}
RESERVED_PREFIXES = ("jobs/", "results/")  # the batch container's own records and results
_CONTAINER_RE = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_ENDPOINT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,255}$")
_INLINE_FIELDS = {"id", "key", "endpoint", "rows", "records", "options"}
_BLOB_FIELDS = {"id", "key", "endpoint", "input", "output", "id_column", "options"}
_REF_FIELDS = {"blob", "container", "format"}


@dataclass(frozen=True)
class JobIdentity:
    """The job's id and whether scorefn made it up (then results say ``id_generated``)."""

    job_id: str
    generated: bool


@dataclass(frozen=True)
class BlobRef:
    container: str
    blob: str
    format: str  # "csv" or "jsonl"

    def describe(self) -> str:
        return f"{self.container}/{self.blob}"


@dataclass(frozen=True)
class InlineJob:
    identity: JobIdentity
    endpoint: str
    document: dict[str, Any]  # "rows" or "records", and "options": the HTTP body's shape
    key: str | None = None  # the router's sticky key for the whole job (default: the job id)


@dataclass(frozen=True)
class BlobJob:
    identity: JobIdentity
    endpoint: str
    input: BlobRef
    output: BlobRef
    id_column: str | None
    options: Options
    key: str | None = None  # the router's sticky key for the whole job (default: the job id)


Job = InlineJob | BlobJob


def decode_message(body: bytes) -> dict[str, Any]:
    """The message as a JSON object; too large, not JSON or not an object raise."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise PayloadTooLarge(f"message of {len(body)} bytes is over the queue's limit of "
                              f"{MAX_MESSAGE_BYTES}; put large inputs in a blob",
                              code="message_too_large")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"message is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidPayload("message must be a JSON object", code="invalid_message")
    return doc


def job_digest(doc: dict[str, Any] | None, body: bytes = b"") -> str:
    """SHA-256 of what defines a job: every field of its message but ``id``, as canonical JSON
    (keys sorted at every level), so the same job sent again with its fields in another order
    or other spacing is the same job. A message that is not a JSON object: its bytes."""
    if doc is None:
        return hashlib.sha256(body).hexdigest()
    fields = {k: v for k, v in doc.items() if k != "id"}
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


def job_identity(doc: dict[str, Any] | None, message_id: str | None) -> JobIdentity:
    """The caller's ``id`` when it is valid; otherwise one derived from the queue message id
    (stable across redeliveries), or a random one when there is no message id either."""
    given = doc.get("id") if doc is not None else None
    if isinstance(given, str) and JOB_ID_RE.match(given):
        return JobIdentity(given, False)
    if message_id:
        safe = message_id if JOB_ID_RE.match(f"msg-{message_id}") else \
            hashlib.sha256(message_id.encode("utf-8", "replace")).hexdigest()[:32]
        return JobIdentity(f"msg-{safe}", True)
    return JobIdentity(f"gen-{uuid.uuid4().hex}", True)


def parse_job(doc: dict[str, Any], identity: JobIdentity, *, batch_container: str,
              allowed_containers: frozenset[str] | tuple[str, ...] = ()) -> Job:
    """Validate a decoded message into an :class:`InlineJob` or a :class:`BlobJob`.

    A blob job's input and output are in ``batch_container`` unless they name one of
    ``allowed_containers`` (``BATCH_ALLOWED_CONTAINERS``): the queue's senders act with the
    app's identity, which may also write models and logs."""
    given = doc.get("id")
    if given is not None and (not isinstance(given, str) or not JOB_ID_RE.match(given)):
        raise InvalidPayload("'id' must be 1-128 letters, digits, '.', '_', ':' or '-', starting "
                             "with a letter or digit", code="invalid_job_id")
    endpoint = doc.get("endpoint")
    if not isinstance(endpoint, str) or not _ENDPOINT_RE.match(endpoint):
        raise InvalidPayload("'endpoint' must name a model or endpoint, e.g. \"churn\"",
                             code="invalid_message")
    key = doc.get("key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 128):
        raise InvalidPayload("'key' (the router's sticky key) must be a string of 1-128 characters",
                             code="invalid_message")
    inline = "rows" in doc or "records" in doc
    if inline:
        _no_unknown(doc, _INLINE_FIELDS, "an inline job ('rows' or 'records')")
        return InlineJob(identity, endpoint,
                         {k: doc[k] for k in ("rows", "records", "options") if k in doc}, key)
    if "input" not in doc:
        raise InvalidPayload("a job needs 'rows', 'records' or 'input': {\"blob\": ...}",
                             code="invalid_message")
    _no_unknown(doc, _BLOB_FIELDS, "a blob job ('input')")
    containers = {batch_container, *allowed_containers}
    source = _blob_ref(doc["input"], "input", batch_container, containers, default_format=None)
    options = parse_options(doc.get("options"))
    if options.pred_contrib:
        raise InvalidPayload("pred_contrib is not supported for blob jobs; send the rows inline",
                             code="invalid_options")
    id_column = doc.get("id_column")
    if id_column is not None and (not isinstance(id_column, str) or not id_column
                                  or len(id_column) > 256):
        raise InvalidPayload("'id_column' must be a column name", code="invalid_message")
    raw_output = doc.get("output", {})
    if not isinstance(raw_output, dict):
        raise InvalidPayload("'output' must be an object", code="invalid_message")
    if "blob" not in raw_output:
        fmt = _format(raw_output.get("format"), "output") or source.format
        raw_output = {**raw_output, "blob": f"predictions/{identity.job_id}.{fmt}"}
    target = _blob_ref(raw_output, "output", batch_container, containers,
                       default_format=source.format)
    if target.container == batch_container and target.blob.startswith(RESERVED_PREFIXES):
        raise InvalidPayload(f"output blobs under {' or '.join(RESERVED_PREFIXES)} are reserved "
                             f"in the batch container", code="invalid_message")
    if (target.container, target.blob) == (source.container, source.blob):
        raise InvalidPayload("the output blob must not be the input blob", code="invalid_message")
    return BlobJob(identity, endpoint, source, target, id_column, options, key)


def _no_unknown(doc: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = set(doc) - allowed
    if unknown:
        raise InvalidPayload(f"unknown field(s) {sorted(unknown)[:5]} for {what}; allowed: "
                             f"{sorted(allowed)}", code="invalid_message")


def _format(raw: Any, where: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or raw.lower() not in FORMATS:
        raise InvalidPayload(f"'{where}.format' must be \"csv\" or \"jsonl\"", code="invalid_format")
    return FORMATS[raw.lower()]


def _blob_ref(raw: Any, where: str, batch_container: str, containers: set[str], *,
              default_format: str | None) -> BlobRef:
    if not isinstance(raw, dict):
        raise InvalidPayload(f"'{where}' must be an object like {{\"blob\": \"path/name.csv\"}}",
                             code="invalid_message")
    unknown = set(raw) - _REF_FIELDS
    if unknown:
        raise InvalidPayload(f"unknown field(s) {sorted(unknown)[:5]} in '{where}'; allowed: "
                             f"{sorted(_REF_FIELDS)}", code="invalid_message")
    blob = raw.get("blob")
    if not _valid_blob_name(blob):
        raise InvalidPayload(f"'{where}.blob' must be a blob name (1-1024 characters, no '..' "
                             f"segments, no leading '/')", code="invalid_blob_name")
    container = raw.get("container", batch_container)
    if not isinstance(container, str) or not _CONTAINER_RE.match(container):
        raise InvalidPayload(f"'{where}.container' is not a valid container name",
                             code="invalid_message")
    if container not in containers:
        raise InvalidPayload(f"'{where}.container' {container!r} is not open to batch jobs: "
                             f"leave it out (the batch container) or add it to "
                             f"BATCH_ALLOWED_CONTAINERS", code="container_not_allowed")
    fmt = _format(raw.get("format"), where)
    if fmt is None:
        suffix = blob.rsplit(".", 1)[-1].lower() if "." in blob.rsplit("/", 1)[-1] else ""
        fmt = FORMATS.get(suffix) or default_format
    if fmt is None:
        raise InvalidPayload(f"cannot tell the format of '{where}.blob' from its name: end it "
                             f"in .csv or .jsonl, or give '{where}.format'", code="invalid_format")
    return BlobRef(container, blob, fmt)


def _valid_blob_name(name: Any) -> TypeGuard[str]:
    if not isinstance(name, str) or not 0 < len(name) <= 1024:
        return False
    if name.startswith("/") or name.endswith(("/", ".")) or "\\" in name:
        return False
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))
