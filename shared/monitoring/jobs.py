"""A batch job's counts: each unit of rows counted as it is scored, written once as the job's
(or the chunk's) own served blob, ``job-{job id}`` or ``job-{job id}-{chunk}``, in the hour the
job was accepted. A retried job or chunk writes the same blob again: nothing is counted twice,
and a job scored in one invocation counts exactly what its chunks would."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from shared.models.model import ModelInfo
from shared.monitoring.binning import Binning
from shared.monitoring.blobs import ServedBlob, ServedEntry
from shared.monitoring.profile import Profile, count

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class JobCounts:
    """The counts of one job or chunk (see the module docstring)."""

    endpoint: str
    variant: str
    info: ModelInfo
    binning: Binning
    hour: str
    writer: str
    profile: Profile

    def observe(self, X: np.ndarray, predictions: np.ndarray | None) -> None:
        """Count one unit of scored rows (``predictions`` ``None``: not the default output)."""
        self.profile.add(count(self.binning, X, predictions))

    def blob(self) -> ServedBlob:
        info = self.info
        return ServedBlob(self.endpoint, self.hour, self.writer, (ServedEntry(
            self.variant, info.name, info.version, info.path, info.sha256, self.binning,
            self.profile),))


def job_writer(job_id: str, chunk: int | None = None) -> str:
    """The writer name of a job (or one of its chunks) in served blob names: the job id, with
    any character a writer name cannot hold (``:``) replaced and a digest of the id added, so
    two ids never share a name."""
    safe = _UNSAFE.sub("_", job_id)
    if safe != job_id:
        safe += "-" + hashlib.sha256(job_id.encode()).hexdigest()[:10]
    return f"job-{safe}" if chunk is None else f"job-{safe}-{chunk:05d}"
