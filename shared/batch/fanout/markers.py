"""Chunk markers: ``jobs/{id}/chunks/{index:06d}``, one per scored chunk, written after its
output blocks are staged (a chunk whose marker exists is not scored again). Metadata
``token`` (the plan's), ``rows``, ``blocks``, ``elapsed_ms``, and ``unseen`` when the chunk
had category values the model was not trained on (``j:count,...`` by feature index; ``body``
when too long for metadata: then the marker's JSON body holds them)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from shared.batch.fanout.chunk_messages import ChunkMessage
from shared.batch.fanout.job_blobs import marker_name, marker_prefix, read_json
from shared.batch.unseen import decode_unseen, encode_unseen, fits_metadata

MAX_BODY_BYTES = 4 * 1024 * 1024  # a marker's body, read back for its unseen counts
IN_BODY = "body"  # the ``unseen`` metadata of a marker whose counts are in its body


@dataclass(frozen=True)
class Marker:
    """A scored chunk, as its marker's metadata says."""

    index: int
    token: str
    rows: int
    blocks: int
    elapsed_ms: float
    unseen: str = ""  # unseen category values, "j:count,..." (or IN_BODY)


def write_marker(container: ContainerClient, msg: ChunkMessage, *, rows: int, blocks: int,
                 elapsed: float, unseen: dict[int, int] | None = None) -> None:
    """Mark chunk ``msg`` scored: ``rows`` rows in ``blocks`` staged blocks, in ``elapsed``
    seconds, with ``unseen`` category values by feature index."""
    meta = {"token": msg.token, "rows": str(rows), "blocks": str(blocks),
            "elapsed_ms": f"{elapsed * 1000:.1f}"}
    extra: dict[str, str] = {}
    if unseen:
        text = encode_unseen(unseen)
        meta["unseen"] = text if fits_metadata(text) else IN_BODY
        extra["unseen"] = text
    body = orjson.dumps({"chunk": msg.index, "start": msg.start, "end": msg.end, **meta,
                         **extra})
    container.upload_blob(marker_name(msg.job_id, msg.index), body, overwrite=True,
                          metadata=meta,
                          content_settings=ContentSettings(content_type="application/json"))


def marker_exists(container: ContainerClient, job_id: str, index: int) -> bool:
    return container.get_blob_client(marker_name(job_id, index)).exists()


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


def marker_unseen(container: ContainerClient, job_id: str, marker: Marker) -> dict[int, int]:
    """A scored chunk's unseen category values by feature index (from its body when its
    metadata could not hold them)."""
    text: str | None = marker.unseen
    if text == IN_BODY:
        body = read_json(container, marker_name(job_id, marker.index), MAX_BODY_BYTES) or {}
        text = body.get("unseen")
    return decode_unseen(text)
