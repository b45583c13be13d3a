"""Chunk messages: one per chunk of a fanned-out job, on ``CHUNK_QUEUE_NAME`` (base64 JSON),
small and self-describing::

    {"kind": "scorefn.chunk", "v": 1, "job": "job-43", "token": "5f0c1a9e2b7d",
     "chunk": 7, "chunks": 217, "start": 234881092, "end": 268435499}

``token`` is the plan's: a message of another plan of the same job id is an orphan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from shared.batch.messages import JOB_ID_RE, MAX_MESSAGE_BYTES
from shared.errors import InvalidPayload

CHUNK_KIND = "scorefn.chunk"
MAX_CHUNKS = 50_000  # a block blob commits at most 50,000 blocks
TOKEN_RE = re.compile(r"^[0-9a-f]{12}$")


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
    raw = [doc.get(k) for k in ("chunk", "chunks", "start", "end")]
    numbers = [n for n in raw if type(n) is int and n >= 0]
    if not (isinstance(job_id, str) and JOB_ID_RE.match(job_id) and isinstance(token, str)
            and TOKEN_RE.match(token) and len(numbers) == len(raw)):
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
