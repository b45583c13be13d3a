"""Where a fanned-out job lives in the batch container, beside its record ``jobs/{id}.json``:

- ``jobs/{id}/plan.json``: the plan (``shared.batch.fanout.plan``);
- ``jobs/{id}/model-{token}.txt``: the pinned model's text (every chunk scores with it);
- ``jobs/{id}/chunks/{index:06d}``: one marker per scored chunk (``shared.batch.fanout.markers``).

Output block ids are ``{token}-{chunk:06d}-{sub:05d}`` (base64): deterministic, so a chunk
scored twice stages the same blocks again instead of adding rows.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient

from shared.batch.records import RECORDS_PREFIX
from shared.storage import BlobTooLarge, read_at_most


def job_prefix(job_id: str) -> str:
    return f"{RECORDS_PREFIX}{job_id}/"


def plan_name(job_id: str) -> str:
    return f"{job_prefix(job_id)}plan.json"


def marker_prefix(job_id: str) -> str:
    return f"{job_prefix(job_id)}chunks/"


def marker_name(job_id: str, index: int) -> str:
    return f"{marker_prefix(job_id)}{index:06d}"


def model_copy_prefix(job_id: str) -> str:
    return f"{job_prefix(job_id)}model-"


def model_copy_name(job_id: str, token: str) -> str:
    return f"{model_copy_prefix(job_id)}{token}.txt"


def block_id(token: str, index: int, sub: int) -> str:
    """The output block id of sub-block ``sub`` of chunk ``index`` (all of one length)."""
    return base64.b64encode(f"{token}-{index:06d}-{sub:05d}".encode()).decode()


def read_json(container: ContainerClient, name: str, max_bytes: int) -> dict[str, Any] | None:
    """A JSON object blob (a plan, a marker's body), or ``None`` when missing, larger than
    ``max_bytes`` or not an object."""
    try:
        raw = read_at_most(container.get_blob_client(name), max_bytes)
    except (ResourceNotFoundError, BlobTooLarge):
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def delete_quietly(blob: BlobClient) -> None:
    """Delete ``blob`` if possible (what is left is harmless, and deleted with the job's)."""
    try:
        blob.delete_blob()
    except Exception:
        pass
