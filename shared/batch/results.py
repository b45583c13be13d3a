"""A job's result: the one message every job ends with, sent to the results queue (base64 JSON,
as the Functions host expects) and kept in the job's record once committed, so that a
delivery after a crash sends the same message.

:class:`JobResult` is what the runner and the fan-out build; :meth:`JobResult.to_json` is the
message (its fields below). A stored message is sent again as it was stored.

    {"id": "job-43", "status": "succeeded", "rows": 1000,
     "output_blob": "predictions/job-43.csv", "output_container": "batch",
     "model": {"name": "churn", "version": "0x8DE..."}, "error": null,
     "elapsed_ms": 812.5, "rows_per_second": 1230.8, "variant": "control",
     "chunks": 217, "id_generated": true, "unseen_categories": {"colour": 3},
     "predictions": [...]}

``variant`` is left out when the job failed before its model was chosen, ``chunks`` unless
the job was fanned out, ``id_generated`` unless scorefn made the id up, ``unseen_categories``
unless some category values were new to the model, ``predictions`` unless an inline job's
predictions fit in the message.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from shared.models.model import LoadedModel
from shared.payloads import dumps


@dataclass(frozen=True)
class ModelVersion:
    """The model a job scored with."""

    name: str
    version: str

    @classmethod
    def of(cls, model: LoadedModel) -> ModelVersion:
        return cls(model.info.name, model.info.version)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class FailedChunk:
    """The chunk of a fanned-out job that failed it, and its input byte range."""

    index: int
    count: int
    start: int
    end: int

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "count": self.count, "input_bytes": [self.start, self.end]}


@dataclass(frozen=True)
class JobError:
    """Why a job failed: a typed error's stable code and its message."""

    code: str
    message: str
    chunk: FailedChunk | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.chunk is not None:
            doc["chunk"] = self.chunk.to_json()
        return doc


@dataclass(frozen=True)
class JobResult:
    """A finished job (see the module docstring for the message it becomes)."""

    job_id: str
    status: str  # "succeeded" or "failed"
    elapsed_ms: float
    rows: int = 0
    rows_per_second: float | None = None
    output_container: str | None = None
    output_blob: str | None = None
    model: ModelVersion | None = None
    error: JobError | None = None
    variant: str | None = None
    chunks: int | None = None
    id_generated: bool = False
    unseen_categories: Mapping[str, int] = field(default_factory=dict)
    predictions: Any = None  # an inline job's, as JSON numbers

    @classmethod
    def timed(cls, job_id: str, status: str, seconds: float, *, rows: int = 0,
              **fields: Any) -> JobResult:
        """A result whose job took ``seconds``: its elapsed time and rate filled in."""
        return cls(job_id, status, elapsed_ms=round(seconds * 1000, 1), rows=rows,
                   rows_per_second=rate(rows, seconds), **fields)

    def to_json(self) -> dict[str, Any]:
        """The result message."""
        doc: dict[str, Any] = {
            "id": self.job_id, "status": self.status, "rows": self.rows,
            "output_blob": self.output_blob, "output_container": self.output_container,
            "model": self.model.to_json() if self.model is not None else None,
            "error": self.error.to_json() if self.error is not None else None,
            "elapsed_ms": self.elapsed_ms, "rows_per_second": self.rows_per_second,
        }
        if self.variant is not None:
            doc["variant"] = self.variant
        if self.chunks is not None:
            doc["chunks"] = self.chunks
        if self.id_generated:
            doc["id_generated"] = True
        if self.unseen_categories:
            doc["unseen_categories"] = dict(self.unseen_categories)
        if self.predictions is not None:
            doc["predictions"] = self.predictions
        return doc


def rate(rows: int, seconds: float) -> float | None:
    """Rows per second, to one decimal (None for no rows or no time)."""
    return round(rows / seconds, 1) if seconds > 0 and rows else None


def status_of(message: Mapping[str, Any]) -> str:
    """The status of a result message (one stored in a job record)."""
    return message["status"]


class ResultQueue:
    """The results queue: one message per finished job."""

    def __init__(self, client: QueueClient) -> None:
        self.client = client

    def send(self, message: Mapping[str, Any]) -> None:
        """Put a result message on the queue (created on first use), base64-encoded as the
        Functions host expects."""
        text = base64.b64encode(dumps(message)).decode("ascii")
        try:
            self.client.send_message(text)
        except ResourceNotFoundError:
            try:
                self.client.create_queue()
            except ResourceExistsError:
                pass
            self.client.send_message(text)
