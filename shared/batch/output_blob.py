"""A job's output blob: staged as blocks and committed once, atomically, as a block list whose
metadata names the job (and, for a fanned-out job, the plan) that wrote it. A delivery that
finds its job's output committed (a crash came after the commit) does not score again: the
result is rebuilt from this metadata.

Metadata (blob metadata values are ASCII strings)::

    scorefn_job_id, scorefn_model, scorefn_model_version, scorefn_rows, scorefn_elapsed_ms,
    scorefn_unseen (j:count,...; single-invocation jobs, when short enough),
    scorefn_plan, scorefn_chunks (fanned-out jobs: the plan's token and chunk count)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobClient

from shared.batch.results import ModelVersion

MAX_BLOCKS = 50_000  # committed blocks per block blob
_PREFIX = "scorefn_"


@dataclass(frozen=True)
class OutputMetadata:
    """Who wrote a committed output, and what it holds."""

    job_id: str
    model: ModelVersion
    rows: int
    elapsed_ms: float
    unseen: str = ""  # encoded counts (shared.batch.unseen), when short enough
    plan: str | None = None  # the plan's token (fanned-out jobs)
    chunks: int | None = None

    def to_metadata(self) -> dict[str, str]:
        meta = {f"{_PREFIX}job_id": self.job_id, f"{_PREFIX}model": self.model.name,
                f"{_PREFIX}model_version": self.model.version, f"{_PREFIX}rows": str(self.rows),
                f"{_PREFIX}elapsed_ms": f"{self.elapsed_ms:.1f}"}
        if self.plan is not None:
            meta[f"{_PREFIX}plan"] = self.plan
        if self.chunks is not None:
            meta[f"{_PREFIX}chunks"] = str(self.chunks)
        if self.unseen:
            meta[f"{_PREFIX}unseen"] = self.unseen
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> OutputMetadata | None:
        """The metadata of an output scorefn committed, or None (another blob, or damaged)."""
        try:
            chunks = meta.get(f"{_PREFIX}chunks")
            return cls(meta[f"{_PREFIX}job_id"],
                       ModelVersion(meta[f"{_PREFIX}model"], meta[f"{_PREFIX}model_version"]),
                       int(meta[f"{_PREFIX}rows"]), float(meta[f"{_PREFIX}elapsed_ms"]),
                       meta.get(f"{_PREFIX}unseen", ""), meta.get(f"{_PREFIX}plan"),
                       int(chunks) if chunks is not None else None)
        except (KeyError, ValueError):
            return None


def read_committed(out: BlobClient) -> OutputMetadata | None:
    """The metadata of ``out`` as committed by scorefn, or None (no such blob, or not ours)."""
    try:
        meta = out.get_blob_properties().metadata or {}
    except ResourceNotFoundError:
        return None
    return OutputMetadata.from_metadata(meta)


def committed_by_plan(out: BlobClient, job_id: str, plan: str) -> bool:
    """Whether ``out`` is committed, by the fanned-out job ``job_id`` under plan ``plan``."""
    try:
        meta = out.get_blob_properties().metadata or {}
    except ResourceNotFoundError:
        return False
    return meta.get(f"{_PREFIX}job_id") == job_id and meta.get(f"{_PREFIX}plan") == plan
