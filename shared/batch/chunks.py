"""Fanned-out batch jobs in storage: the plan, the chunk messages, chunk markers and status.

A blob job whose input is over ``BATCH_FANOUT_BYTES`` is planned once (``shared.batch.fanout``)
and then lives in the batch container under ``jobs/{id}/``:

- ``jobs/{id}/plan.json``: the plan, created once with If-None-Match (a redelivered planner
  reuses it, so a job has exactly one plan and one ``token``)::

    {"kind": "scorefn.plan", "v": 1, "id": "job-43", "token": "5f0c1a9e2b7d",
     "created": "2026-11-24T21:05:09.123Z", "created_at": 1795381509.123,
     "endpoint": "churn", "variant": "control", "id_generated": false,
     "model": {"name": "churn/v1.txt", "version": "0x8DE2...", "path": "churn/v1.txt",
               "copy": "jobs/job-43/model-5f0c1a9e2b7d.txt"},
     "input": {"container": "batch", "blob": "in.csv", "format": "csv", "etag": "\\"0x8DE...\\"",
               "size": 7260000000},
     "output": {"container": "batch", "blob": "predictions/job-43.csv", "format": "csv"},
     "id_column": "customer_id", "options": {"raw_score": false}, "header": "customer_id,f0,...",
     "num_outputs": 1, "chunk_rows": 50000, "chunk_bytes": 33554432, "chunks": 217,
     "ranges": [[23, 33554467], [33554467, 67108901], ...]}

- ``jobs/{id}/model-{token}.txt``: the pinned model's text (every chunk scores with it).
- ``jobs/{id}/chunks/{index:06d}``: one marker per scored chunk, written after its output
  blocks are staged; metadata ``token``, ``rows``, ``blocks``, ``elapsed_ms``, and
  ``unseen`` when the chunk had category values the model was not trained on
  (``j:count,...`` by feature index; ``body`` when too long for metadata: then the marker's
  JSON body holds them). The plan's ``categorical`` names those features by index.

Chunk messages (base64 JSON on ``CHUNK_QUEUE_NAME``) are small and self-describing::

    {"kind": "scorefn.chunk", "v": 1, "job": "job-43", "token": "5f0c1a9e2b7d",
     "chunk": 7, "chunks": 217, "start": 234881092, "end": 268435499}

Output block ids are ``{token}-{chunk:06d}-{sub:05d}`` (base64): deterministic, so a chunk
scored twice stages the same blocks again instead of adding rows.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from shared.errors import InvalidPayload
from shared.batch.messages import JOB_ID_RE, MAX_MESSAGE_BYTES
from shared.batch.records import RECORDS_PREFIX
from shared.storage import BlobTooLarge, read_at_most

CHUNK_KIND = "scorefn.chunk"
PLAN_KIND = "scorefn.plan"
MAX_CHUNKS = 50_000  # a block blob commits at most 50,000 blocks
# A plan holds every chunk's byte range (~30 bytes each) and the CSV header (at most 1 MiB).
MAX_PLAN_BYTES = 4 * 1024 * 1024
_TOKEN_RE = re.compile(r"^[0-9a-f]{12}$")


def job_prefix(job_id: str) -> str:
    return f"{RECORDS_PREFIX}{job_id}/"


def plan_name(job_id: str) -> str:
    return f"{job_prefix(job_id)}plan.json"


def marker_prefix(job_id: str) -> str:
    return f"{job_prefix(job_id)}chunks/"


def marker_name(job_id: str, index: int) -> str:
    return f"{marker_prefix(job_id)}{index:06d}"


def model_copy_name(job_id: str, token: str) -> str:
    return f"{job_prefix(job_id)}model-{token}.txt"


def block_id(token: str, index: int, sub: int) -> str:
    """The output block id of sub-block ``sub`` of chunk ``index`` (all of one length)."""
    return base64.b64encode(f"{token}-{index:06d}-{sub:05d}".encode()).decode()


@dataclass(frozen=True)
class ChunkMessage:
    job_id: str
    token: str
    index: int
    count: int
    start: int
    end: int

    def encode(self) -> bytes:
        return orjson.dumps({"kind": CHUNK_KIND, "v": 1, "job": self.job_id, "token": self.token,
                             "chunk": self.index, "chunks": self.count, "start": self.start,
                             "end": self.end})

    def describe(self) -> str:
        return (f"chunk {self.index} of {self.count} (input bytes {self.start:,}-{self.end:,})")


def decode_chunk(body: bytes) -> ChunkMessage:
    """A chunk message; anything else raises :class:`InvalidPayload` (``invalid_chunk``)."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise InvalidPayload("chunk message is larger than a queue message holds",
                             code="invalid_chunk")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidPayload("chunk message is not valid JSON", code="invalid_chunk") from None
    if not isinstance(doc, dict) or doc.get("kind") != CHUNK_KIND or doc.get("v") != 1:
        raise InvalidPayload("not a scorefn chunk message", code="invalid_chunk")
    job_id, token = doc.get("job"), doc.get("token")
    numbers = [doc.get(k) for k in ("chunk", "chunks", "start", "end")]
    if not (isinstance(job_id, str) and JOB_ID_RE.match(job_id) and isinstance(token, str)
            and _TOKEN_RE.match(token) and all(type(n) is int and n >= 0 for n in numbers)):
        raise InvalidPayload("chunk message has missing or invalid fields", code="invalid_chunk")
    index, count, start, end = numbers
    if not (index < count <= MAX_CHUNKS and start <= end):
        raise InvalidPayload("chunk message has inconsistent fields", code="invalid_chunk")
    return ChunkMessage(job_id, token, index, count, start, end)


def peek_job_id(body: bytes) -> str | None:
    """The job id of a (possibly invalid) chunk message, when it has a valid one."""
    if len(body) > MAX_MESSAGE_BYTES:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    job_id = doc.get("job") if isinstance(doc, dict) else None
    return job_id if isinstance(job_id, str) and JOB_ID_RE.match(job_id) else None


def read_json(container: ContainerClient, name: str,
              max_bytes: int = MAX_PLAN_BYTES) -> dict[str, Any] | None:
    """A JSON object blob (a plan), or ``None`` when missing, larger than ``max_bytes`` or not
    an object."""
    try:
        raw = read_at_most(container.get_blob_client(name), max_bytes)
    except (ResourceNotFoundError, BlobTooLarge):
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


@dataclass(frozen=True)
class Marker:
    index: int
    token: str
    rows: int
    blocks: int
    elapsed_ms: float
    unseen: str = ""  # unseen category values, "j:count,..." (or "body": in the marker's body)


def list_markers(container: ContainerClient, job_id: str) -> dict[int, Marker]:
    """The job's chunk markers by chunk index (one listing, with metadata)."""
    prefix = marker_prefix(job_id)
    found: dict[int, Marker] = {}
    try:
        for item in container.list_blobs(name_starts_with=prefix, include=["metadata"]):
            meta = item.metadata or {}
            try:
                index = int(item.name[len(prefix):])
                found[index] = Marker(index, meta.get("token", ""), int(meta.get("rows", 0)),
                                      int(meta.get("blocks", 0)), float(meta.get("elapsed_ms", 0)),
                                      meta.get("unseen", ""))
            except ValueError:
                continue
    except ResourceNotFoundError:
        return {}
    return found


def count_markers(container: ContainerClient, job_id: str) -> int:
    try:
        return sum(1 for _ in container.list_blobs(name_starts_with=marker_prefix(job_id)))
    except ResourceNotFoundError:
        return 0


def read_status(container: ContainerClient, job_id: str,
                now: float | None = None) -> dict[str, Any] | None:
    """A fanned-out job's progress, from storage alone (its plan and chunk markers): None
    when the job has no plan (not fanned out, or not planned yet). ``elapsed_s`` is wall time
    since planning, so ``rows_per_second`` is the whole job's rate across instances."""
    plan = read_json(container, plan_name(job_id))
    if plan is None or plan.get("kind") != PLAN_KIND:
        return None
    markers = [m for m in list_markers(container, job_id).values() if m.token == plan.get("token")]
    rows = sum(m.rows for m in markers)
    elapsed = max(0.0, (time.time() if now is None else now) - float(plan.get("created_at") or 0))
    return {"id": job_id, "chunks": int(plan.get("chunks") or 0), "chunks_done": len(markers),
            "rows": rows, "elapsed_s": round(elapsed, 1),
            "rows_per_second": round(rows / elapsed, 1) if elapsed > 0 and rows else None,
            "input_bytes": (plan.get("input") or {}).get("size"),
            "model": {k: (plan.get("model") or {}).get(k) for k in ("name", "version")}}
