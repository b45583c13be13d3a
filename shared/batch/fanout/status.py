"""A fanned-out job's progress, from storage alone (its plan and chunk markers): what
``scorefn jobs status`` and ``jobs wait`` show for a job split across instances."""

from __future__ import annotations

import time
from typing import Any

from azure.storage.blob import ContainerClient

from shared.batch.fanout.markers import list_markers
from shared.batch.fanout.plan import read_plan


def read_status(container: ContainerClient, job_id: str,
                now: float | None = None) -> dict[str, Any] | None:
    """The job's progress as a JSON document, or None when the job has no plan (not fanned
    out, or not planned yet). ``elapsed_s`` is wall time since planning, so
    ``rows_per_second`` is the whole job's rate across instances."""
    plan = read_plan(container, job_id)
    if plan is None:
        return None
    markers = [m for m in list_markers(container, job_id).values() if m.token == plan.token]
    rows = sum(m.rows for m in markers)
    elapsed = max(0.0, (time.time() if now is None else now) - float(plan.created_at))
    return {"id": job_id, "chunks": plan.chunks, "chunks_done": len(markers),
            "rows": rows, "elapsed_s": round(elapsed, 1),
            "rows_per_second": round(rows / elapsed, 1) if elapsed > 0 and rows else None,
            "input_bytes": plan.input.size, "model": plan.model.version_ref.to_json()}
