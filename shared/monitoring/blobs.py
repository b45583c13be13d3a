"""Where monitoring keeps its data, and reading and writing it.

In ``MONITOR_CONTAINER``:

- ``served/{endpoint}/{YYYY-MM-DDTHH}/{writer}.json``: served counts (:class:`ServedBlob`),
  one blob per instance flush (``{instance}-{n}``) or per batch job or chunk
  (``job-{job id}[-{chunk}]``, written again, not added to, when a job is retried);
- ``summaries/{endpoint}/latest.json`` and ``summaries/{endpoint}/{time}.json``: what each
  drift evaluation found (:class:`~shared.monitoring.records.DriftSummary`).

Beside each model in ``MODEL_CONTAINER``: ``{model blob}.reference.json``, its reference
profile (:class:`Reference`), written by ``upload-model --reference-data``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from shared.monitoring.binning import Binning
from shared.monitoring.profile import Profile
from shared.monitoring.records import DriftSummary

FORMAT = 1
MAX_SERVED_BYTES = 16 * 1024 * 1024  # a served blob: an instance's counts for one endpoint
MAX_REFERENCE_BYTES = 8 * 1024 * 1024
MAX_SUMMARY_BYTES = 32 * 1024 * 1024


def hour_of(epoch: float) -> str:
    """The UTC hour of an epoch time, as served blobs are partitioned: ``2026-12-07T18``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H")


def served_blob_name(endpoint: str, hour: str, writer: str) -> str:
    return f"served/{endpoint}/{hour}/{writer}.json"


def reference_blob_name(model_path: str) -> str:
    """The reference profile of the model stored at ``model_path`` (in the models container)."""
    return f"{model_path}.reference.json"


@dataclass(frozen=True)
class ServedEntry:
    """Counts of one variant's model version under one binning."""

    variant: str
    model: str
    version: str
    model_path: str
    model_sha256: str
    binning: Binning
    profile: Profile

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "model": self.model, "version": self.version,
                "model_path": self.model_path, "model_sha256": self.model_sha256,
                "binning": self.binning.to_dict(), "profile": self.profile.to_dict()}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ServedEntry:
        binning = Binning.from_dict(doc["binning"])
        return cls(str(doc["variant"]), str(doc["model"]), str(doc["version"]),
                   str(doc["model_path"]), str(doc["model_sha256"]), binning,
                   Profile.from_dict(doc["profile"], binning))


@dataclass(frozen=True)
class ServedBlob:
    """One writer's counts for one endpoint in one hour."""

    endpoint: str
    hour: str
    writer: str
    entries: tuple[ServedEntry, ...]

    def encode(self) -> bytes:
        return orjson.dumps({"format": FORMAT, "endpoint": self.endpoint, "hour": self.hour,
                             "writer": self.writer,
                             "entries": [e.to_dict() for e in self.entries]})

    @classmethod
    def decode(cls, data: bytes) -> ServedBlob:
        doc = orjson.loads(data)
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown served profile format {doc.get('format')!r}")
        return cls(str(doc["endpoint"]), str(doc["hour"]), str(doc["writer"]),
                   tuple(ServedEntry.from_dict(e) for e in doc["entries"]))


@dataclass(frozen=True)
class Reference:
    """A model's reference profile: the binning served rows are counted under and the
    reference rows' counts. ``model_sha256``: the model file it was made for."""

    model_sha256: str
    binning: Binning
    profile: Profile
    source: str  # the reference file's name, for reports
    created: str

    def encode(self) -> bytes:
        return orjson.dumps({"format": FORMAT, "model_sha256": self.model_sha256,
                             "source": self.source, "created": self.created,
                             "binning": self.binning.to_dict(),
                             "profile": self.profile.to_dict()})

    @classmethod
    def decode(cls, data: bytes) -> Reference:
        doc = orjson.loads(data)
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown reference profile format {doc.get('format')!r}")
        binning = Binning.from_dict(doc["binning"])
        return cls(str(doc["model_sha256"]), binning, Profile.from_dict(doc["profile"], binning),
                   str(doc.get("source", "")), str(doc.get("created", "")))


def _read(blob: Any, limit: int) -> bytes | None:
    """A blob's bytes (``None`` when it does not exist); over ``limit`` is an error. Instances
    write their blobs again while they are read: the first ``limit + 1`` bytes of whatever
    version is there are read, never more."""
    try:
        data = blob.download_blob(offset=0, length=limit + 1, max_concurrency=1).readall()
    except ResourceNotFoundError:
        return None
    except HttpResponseError as exc:
        if getattr(exc, "status_code", None) == 416:  # an empty blob: no range to read
            return b""
        raise
    if len(data) > limit:
        raise ValueError(f"{blob.blob_name}: over the limit of {limit} bytes")
    return data


def read_reference(models: Any, model_path: str) -> Reference | None:
    """The reference profile beside the model at ``model_path``; ``None`` when there is none."""
    data = _read(models.get_blob_client(reference_blob_name(model_path)), MAX_REFERENCE_BYTES)
    return Reference.decode(data) if data is not None else None


def write_reference(models: Any, model_path: str, reference: Reference) -> str:
    name = reference_blob_name(model_path)
    models.get_blob_client(name).upload_blob(reference.encode(), overwrite=True)
    return name


def write_served(container: Any, blob: ServedBlob) -> None:
    """Write (over) one writer's served blob, creating the container when missing."""
    _upload(container, served_blob_name(blob.endpoint, blob.hour, blob.writer), blob.encode())


def _upload(container: Any, name: str, data: bytes) -> None:
    client = container.get_blob_client(name)
    try:
        client.upload_blob(data, overwrite=True)
    except ResourceNotFoundError as exc:
        if getattr(exc, "error_code", None) != "ContainerNotFound":
            raise
        try:
            container.create_container()
        except ResourceExistsError:
            pass
        client.upload_blob(data, overwrite=True)


def hours_between(start: datetime, end: datetime) -> list[str]:
    """The UTC hours from ``start``'s to ``end``'s, both included."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    out = []
    while hour <= end:
        out.append(hour.strftime("%Y-%m-%dT%H"))
        hour += timedelta(hours=1)
    return out


_SERVED = re.compile(r"^served/(.+)/(\d{4}-\d{2}-\d{2}T\d{2})/([A-Za-z0-9._-]{1,200})\.json$")


def served_index(container: Any, hours: list[str], endpoint: str | None = None
                 ) -> dict[str, list[str]]:
    """The served blobs of ``hours`` by endpoint (names only), for one ``endpoint`` or all: an
    endpoint named ``churn`` never gets those of ``churn/v2``."""
    wanted = set(hours)
    prefix = "served/" if endpoint is None else f"served/{endpoint}/"
    found: dict[str, list[str]] = {}
    for props in container.list_blobs(name_starts_with=prefix):
        match = _SERVED.match(props.name)
        if match is None or match.group(2) not in wanted:
            continue
        if endpoint is not None and match.group(1) != endpoint:
            continue
        found.setdefault(match.group(1), []).append(props.name)
    return found


def read_served(container: Any, name: str) -> ServedBlob | None:
    """A served blob (``None`` when it is gone); damaged or too large raises ``ValueError``."""
    data = _read(container.get_blob_client(name), MAX_SERVED_BYTES)
    if data is None:
        return None
    try:
        return ServedBlob.decode(data)
    except Exception as exc:  # any shape of damage
        raise ValueError(f"{name} is not a served profile ({type(exc).__name__})") from None


def summary_blob_names(endpoint: str, evaluated_at: datetime) -> tuple[str, str]:
    stamp = evaluated_at.astimezone(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    return f"summaries/{endpoint}/latest.json", f"summaries/{endpoint}/{stamp}.json"


def write_summary(container: Any, summary: DriftSummary, evaluated_at: datetime) -> str:
    data = orjson.dumps(summary.to_dict())
    latest, stamped = summary_blob_names(summary.endpoint, evaluated_at)
    _upload(container, stamped, data)
    _upload(container, latest, data)
    return stamped


def latest_summary(container: Any, endpoint: str) -> DriftSummary | None:
    """The last drift evaluation written for ``endpoint``; ``None`` when there is none."""
    latest, _ = summary_blob_names(endpoint, datetime.now(UTC))
    data = _read(container.get_blob_client(latest), MAX_SUMMARY_BYTES)
    return DriftSummary.from_dict(orjson.loads(data)) if data is not None else None
