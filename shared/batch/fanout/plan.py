"""A fanned-out job's plan: what every chunk of the job needs, fixed once when the job is
planned (the model, the input's version, the CSV header, the byte ranges), stored as
``jobs/{id}/plan.json``, created once with If-None-Match (a redelivered planner reuses it, so
a job has exactly one plan and one ``token``)::

    {"kind": "scorefn.plan", "v": 1, "id": "job-43", "token": "5f0c1a9e2b7d",
     "created": "2026-11-24T21:05:09.123Z", "created_at": 1795381509.123,
     "endpoint": "churn", "variant": "control", "id_generated": false,
     "model": {"name": "churn/v1.txt", "version": "0x8DE2...", "path": "churn/v1.txt",
               "copy": "jobs/job-43/model-5f0c1a9e2b7d.txt"},
     "input": {"container": "batch", "blob": "in.csv", "format": "csv", "etag": "\\"0x8DE...\\"",
               "size": 7260000000},
     "output": {"container": "batch", "blob": "predictions/job-43.csv", "format": "csv"},
     "id_column": "customer_id", "options": {"raw_score": false}, "header": "customer_id,f0,...",
     "num_outputs": 1, "categorical": {"3": "colour"}, "chunk_rows": 50000,
     "chunk_bytes": 33554432, "chunks": 217, "ranges": [[23, 33554467], [33554467, 67108901], ...]}

:class:`Plan` is that document as a record: :meth:`Plan.to_json` writes it, :meth:`Plan.from_json`
reads it back and checks every field (:func:`read_plan`: a blob that is not a valid plan is
no plan). Plans written before ``categorical`` and ``id_generated`` existed read as having
none and ``false``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.storage.blob import ContainerClient

from shared.batch.fanout.chunk_messages import TOKEN_RE
from shared.batch.fanout.job_blobs import plan_name, read_json
from shared.batch.messages import BlobRef
from shared.batch.results import ModelVersion

log = logging.getLogger("scorefn.batch")

PLAN_KIND = "scorefn.plan"
# A plan holds every chunk's byte range (~30 bytes each) and the CSV header (at most 1 MiB).
MAX_PLAN_BYTES = 4 * 1024 * 1024


class InvalidPlan(ValueError):
    """A plan document with a missing or mistyped field."""


@dataclass(frozen=True)
class PinnedModel:
    """The model every chunk of a job scores with: its name, its version (the model blob's
    ETag when the job was planned), the live blob's path, and the job-scoped copy of its
    text (``copy``) that chunks parse."""

    name: str
    version: str
    path: str
    copy: str

    @property
    def version_ref(self) -> ModelVersion:
        return ModelVersion(self.name, self.version)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "path": self.path, "copy": self.copy}

    @classmethod
    def from_json(cls, doc: Any) -> PinnedModel:
        doc = _object(doc, "model")
        return cls(*(_str(doc, k, "model") for k in ("name", "version", "path", "copy")))


@dataclass(frozen=True)
class PinnedInput:
    """The input blob at the version (ETag) and size it had when the job was planned."""

    container: str
    blob: str
    format: str
    etag: str
    size: int

    def describe(self) -> str:
        return f"{self.container}/{self.blob}"

    def to_json(self) -> dict[str, Any]:
        return {"container": self.container, "blob": self.blob, "format": self.format,
                "etag": self.etag, "size": self.size}

    @classmethod
    def from_json(cls, doc: Any) -> PinnedInput:
        doc = _object(doc, "input")
        return cls(_str(doc, "container", "input"), _str(doc, "blob", "input"),
                   _str(doc, "format", "input"), _str(doc, "etag", "input"),
                   _int(doc, "size", "input"))


@dataclass(frozen=True)
class Plan:
    """A fanned-out job's plan (see the module docstring)."""

    job_id: str
    token: str
    created: str
    created_at: float  # time.time() when planned
    endpoint: str
    variant: str
    id_generated: bool
    model: PinnedModel
    input: PinnedInput
    output: BlobRef
    id_column: str | None
    raw_score: bool
    header: str | None  # a CSV input's header line (every chunk reads its columns by it)
    num_outputs: int
    categorical: Mapping[int, str]  # the names of categorical features, by feature index
    chunk_rows: int  # rows per output block
    chunk_bytes: int
    ranges: tuple[tuple[int, int], ...]  # each chunk's input bytes [start, end)
    # When the job was accepted (its record's creation): the hour its monitoring counts go to,
    # as for a job scored in one invocation. Plans written before it was kept: created_at.
    accepted_at: float | None = None

    @property
    def chunks(self) -> int:
        return len(self.ranges)

    def feature_name(self, j: int) -> str:
        """The name of categorical feature ``j`` (for the result's unseen counts)."""
        return self.categorical.get(j, f"feature {j}")

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": PLAN_KIND, "v": 1, "id": self.job_id, "token": self.token,
            "created": self.created, "created_at": self.created_at,
            **({"accepted_at": self.accepted_at} if self.accepted_at is not None else {}),
            "endpoint": self.endpoint,
            "variant": self.variant, "id_generated": self.id_generated,
            "model": self.model.to_json(), "input": self.input.to_json(),
            "output": {"container": self.output.container, "blob": self.output.blob,
                       "format": self.output.format},
            "id_column": self.id_column, "options": {"raw_score": self.raw_score},
            "header": self.header, "num_outputs": self.num_outputs,
            "categorical": {str(j): name for j, name in self.categorical.items()},
            "chunk_rows": self.chunk_rows, "chunk_bytes": self.chunk_bytes,
            "chunks": self.chunks, "ranges": [list(r) for r in self.ranges],
        }

    @classmethod
    def from_json(cls, doc: Any) -> Plan:
        """The plan ``doc`` holds; :class:`InvalidPlan` when it is not a valid plan."""
        doc = _object(doc, "plan")
        if doc.get("kind") != PLAN_KIND or doc.get("v") != 1:
            raise InvalidPlan("not a scorefn plan (kind, v)")
        token = _str(doc, "token")
        if not TOKEN_RE.match(token):
            raise InvalidPlan("'token' is not a plan token")
        output = _object(doc.get("output"), "output")
        options = _object(doc.get("options"), "options")
        categorical = _object(doc.get("categorical", {}), "categorical")
        if not all(k.isdigit() and isinstance(v, str) for k, v in categorical.items()):
            raise InvalidPlan("'categorical' must map feature indexes to names")
        ranges = doc.get("ranges")
        if not isinstance(ranges, list) or not all(
                isinstance(r, list) and len(r) == 2 and all(type(n) is int for n in r)
                for r in ranges):
            raise InvalidPlan("'ranges' must be a list of [start, end] pairs")
        if _int(doc, "chunks") != len(ranges):
            raise InvalidPlan("'chunks' is not the number of ranges")
        id_generated = doc.get("id_generated", False)
        if not isinstance(id_generated, bool):
            raise InvalidPlan("'id_generated' must be a boolean")
        return cls(
            job_id=_str(doc, "id"), token=token, created=_str(doc, "created"),
            created_at=_number(doc, "created_at"), endpoint=_str(doc, "endpoint"),
            variant=_str(doc, "variant"), id_generated=id_generated,
            model=PinnedModel.from_json(doc.get("model")),
            input=PinnedInput.from_json(doc.get("input")),
            output=BlobRef(_str(output, "container", "output"), _str(output, "blob", "output"),
                           _str(output, "format", "output")),
            id_column=_optional_str(doc, "id_column"), raw_score=bool(options.get("raw_score")),
            header=_optional_str(doc, "header"), num_outputs=_int(doc, "num_outputs"),
            categorical={int(k): v for k, v in categorical.items()},
            chunk_rows=_int(doc, "chunk_rows"), chunk_bytes=_int(doc, "chunk_bytes"),
            ranges=tuple((start, end) for start, end in ranges),
            accepted_at=_number(doc, "accepted_at") if "accepted_at" in doc else None)


def read_plan(container: ContainerClient, job_id: str) -> Plan | None:
    """The job's plan, or None when it has none (not fanned out, not planned yet) or the blob
    is not a valid plan."""
    doc = read_json(container, plan_name(job_id), MAX_PLAN_BYTES)
    if doc is None or doc.get("kind") != PLAN_KIND:
        return None
    try:
        return Plan.from_json(doc)
    except InvalidPlan as exc:
        log.warning("job %s: its plan is damaged (%s); treating the job as not planned",
                    job_id, exc)
        return None


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidPlan(f"'{where}' must be an object")
    return value


def _str(doc: Mapping[str, Any], key: str, where: str = "plan") -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise InvalidPlan(f"'{key}' of the {where} must be a string")
    return value


def _optional_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidPlan(f"'{key}' must be a string or null")
    return value


def _int(doc: Mapping[str, Any], key: str, where: str = "plan") -> int:
    value = doc.get(key)
    if type(value) is not int or value < 0:
        raise InvalidPlan(f"'{key}' of the {where} must be a whole number")
    return value


def _number(doc: Mapping[str, Any], key: str) -> int | float:
    value = doc.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidPlan(f"'{key}' must be a number")
    return value  # as written: it is written back the same
