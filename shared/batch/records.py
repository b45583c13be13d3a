"""Job records: what makes a batch job's output and result land once, whatever the deliveries.

Each job has a small JSON record, ``jobs/{id}.json`` in the batch container, created with
If-None-Match (the first delivery creates it) and changed only under a blob lease that the
worker renews while it runs. Its ``state`` moves

    running  ->  committed (output in place; the result message to send is in the record)
             ->  done      (result message sent)
    running  ->  fanned_out (a large input split into chunks: ``shared.batch.fanout``)
             ->  committed  ->  done   (by whichever chunk delivery completes the job)

A delivery that finds ``done`` acknowledges without doing anything. One that finds
``committed`` sends the stored result and marks the job done (a crash between committing
and sending is repaired). One that finds ``running`` with the lease free takes the job over
(the previous worker died; its uncommitted output blocks are discarded). One that finds the
lease held waits up to one lease period for it: a dead holder's lease runs out by then. If
the holder is alive and processing another message with the same job id, this delivery is
acknowledged as a duplicate (the holder's own message guarantees completion); if it is the
same message (its visibility lapsed while it was processed), the delivery fails and the queue
retries it later.

A job id names one job. The record keeps ``job_sha256``, the digest of the message that
created it (``shared.batch.messages.job_digest``: its fields but ``id``); a delivery whose
message has another digest gets the state ``reused`` whatever the record's state, and
nothing of the record is changed: that message fails (``job_id_reused``), the job it
collided with goes on. The same message delivered again (at-least-once queues) has the
same digest and finds the job as described above.

A fanned-out job has no single delivery that runs it to the end: the chunk deliveries that
complete it (or fail it) take the same lease with :meth:`JobRecords.hold`, which never creates
a record, and move it to ``committed`` and ``done`` exactly as above.

The window left: a crash after the result message is sent and before the record says
``done`` sends the result again on the next delivery. Consumers dedupe results by ``id``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobLeaseClient, ContainerClient, ContentSettings

from shared.errors import JobBusy
from shared.storage import MAX_RECORD_BYTES, BlobTooLarge, read_at_most

log = logging.getLogger("scorefn.batch")

LEASE_SECONDS = 15  # Blob Storage's shortest lease: a dead worker's job is free soonest
RECORDS_PREFIX = "jobs/"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass
class Claim:
    """This delivery's hold on a job. ``state`` is ``done`` or ``duplicate`` (nothing to do),
    ``committed`` (send ``doc["result"]`` then :meth:`mark_done`), ``running`` (do the job),
    ``fanned_out`` (chunks do it) or ``reused`` (the id belongs to another job: fail this
    message, leave the record alone; no lease is held)."""

    state: str
    job_id: str
    doc: dict[str, Any] = field(default_factory=dict)
    blob: BlobClient | None = None
    lease: BlobLeaseClient | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lost: str | None = None
    _last_progress: float = 0.0

    @property
    def result(self) -> dict[str, Any] | None:
        """The result message committed in the record (sent again as it is)."""
        return self.doc.get("result")

    @property
    def recorded_state(self) -> str:
        """The state the record holds (a ``reused`` claim's is the other job's)."""
        return self.doc.get("state", "running")

    @property
    def created(self) -> str | None:
        return self.doc.get("created")

    @property
    def accepted_at(self) -> float:
        """When the job's record was created (epoch seconds; now if the record does not say):
        the same on every delivery of the job."""
        try:
            return datetime.fromisoformat(str(self.doc["created"])).timestamp()
        except (KeyError, ValueError):
            return time.time()

    def check(self) -> None:
        """Renew the lease now; raise :class:`JobBusy` if it was lost. Called right before
        the output is committed, so that only the lease holder commits."""
        if self.lease is None:
            raise JobBusy(f"job {self.job_id} is not leased by this delivery")
        if self._lost:
            raise JobBusy(f"job {self.job_id}: lease lost ({self._lost})")
        try:
            self.lease.renew()
        except HttpResponseError as exc:
            self._lost = f"renew failed: HTTP {exc.status_code}"
            raise JobBusy(f"job {self.job_id}: lease lost ({self._lost})") from None

    def progress(self, rows: int, *, every_seconds: float = 2.0) -> None:
        """Record the rows done so far (for ``scorefn jobs wait``), at most every few seconds."""
        now = time.monotonic()
        if now - self._last_progress < every_seconds:
            return
        self._last_progress = now
        self.doc["progress"] = {"rows": rows, "updated": _now()}
        try:
            self._write()
        except Exception as exc:  # progress is best effort; the lease check guards commits
            log.info("job %s: progress update failed (%s)", self.job_id, type(exc).__name__)

    def commit(self, result: dict[str, Any]) -> None:
        """The output is in place: store the result message to send
        (``shared.batch.results.JobResult.to_json``)."""
        self.doc.update(state="committed", result=result)
        self.doc.pop("progress", None)
        self._write()

    def mark_done(self) -> None:
        self.doc["state"] = "done"
        self._write()

    def fan_out(self, *, plan: str, chunks: int, token: str) -> None:
        """The job was split into ``chunks`` chunks (its plan: blob ``plan``, token ``token``);
        chunk deliveries complete it."""
        self.doc.update(state="fanned_out", fanout={"plan": plan, "chunks": chunks, "token": token})
        self.doc.pop("progress", None)
        self._write()

    def _write(self) -> None:
        assert self.blob is not None and self.lease is not None
        self.doc["updated"] = _now()
        self.blob.upload_blob(_dumps(self.doc), overwrite=True, lease=self.lease,
                              content_settings=ContentSettings(content_type="application/json"))

    def _renew_forever(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                assert self.lease is not None
                self.lease.renew()
            except Exception as exc:
                status = getattr(exc, "status_code", None)
                if status in (409, 412):  # another worker has it now: stop
                    self._lost = f"HTTP {status}"
                    log.warning("job %s: lease lost while running", self.job_id)
                    return
                log.info("job %s: lease renewal failed (%s); retrying", self.job_id,
                         type(exc).__name__)

    def release(self) -> None:
        self._stop.set()
        if self.lease is not None and not self._lost:
            try:
                self.lease.release()
            except Exception:  # it expires by itself
                pass
        self.lease = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class JobRecords:
    """Claims jobs in ``container`` (see the module docstring)."""

    def __init__(self, container: ContainerClient, *, lease_seconds: int = LEASE_SECONDS,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.container = container
        self.lease_seconds = lease_seconds
        self._sleep = sleep
        self._clock = clock

    def blob(self, job_id: str) -> BlobClient:
        return self.container.get_blob_client(f"{RECORDS_PREFIX}{job_id}.json")

    def read(self, job_id: str) -> dict[str, Any] | None:
        """The job's record, or None when there is none."""
        return self._read(self.blob(job_id))

    def state_of(self, job_id: str) -> str | None:
        """The state in the job's record (``running`` when it says none, as for a claim), or
        None when there is no record."""
        doc = self.read(job_id)
        return None if doc is None else doc.get("state", "running")

    def claim(self, job_id: str, *, message_id: str | None, digest: str,
              job_digest: str | None = None) -> Claim:
        """This delivery's claim on job ``job_id``. ``digest``: the message's bytes' SHA-256;
        ``job_digest``: what defines the job (``shared.batch.messages.job_digest``), compared
        with the record's to tell a redelivery from another job sent with the same id."""
        blob = self.blob(job_id)
        fresh = {"id": job_id, "state": "running", "message_id": message_id,
                 "message_sha256": digest, "attempts": 0, "created": _now(), "updated": _now()}
        if job_digest is not None:
            fresh["job_sha256"] = job_digest
        if not self._create(blob, fresh):
            doc = self._read(blob)
            if doc is not None and _reused(doc, job_digest):
                return Claim("reused", job_id, doc)
            if doc is not None and doc.get("state") == "done":
                self._note_reuse(job_id, doc, digest)
                return Claim("done", job_id, doc)
        lease, doc = self._acquire(blob, job_id, message_id)
        if lease is None:
            if _reused(doc, job_digest):
                return Claim("reused", job_id, doc)
            return Claim("duplicate" if doc.get("state") != "done" else "done", job_id, doc)
        claim = Claim(doc.get("state", "running"), job_id, doc, blob, lease)
        try:
            if _reused(doc, job_digest):
                claim.release()
                claim.state = "reused"
                return claim
            if claim.state == "done":
                self._note_reuse(job_id, doc, digest)
                claim.release()
                return claim
            if claim.state not in ("running", "committed", "fanned_out"):
                log.warning("job %s: record has unknown state; running the job again", job_id)
                claim.state = doc["state"] = "running"
            if "job_sha256" not in doc and doc.get("message_sha256") not in (None, digest):
                log.warning("job %s: another message with this id got here first; it wins", job_id)
            if job_digest is not None and "job_sha256" not in doc:
                doc["job_sha256"] = job_digest  # a record written before digests (or damaged)
            doc["attempts"] = int(doc.get("attempts") or 0) + 1
            doc["message_id"] = message_id
            claim._write()
        except BaseException:
            claim.release()
            raise
        threading.Thread(target=claim._renew_forever, args=(self.lease_seconds / 3,),
                         name=f"scorefn-lease-{job_id[:16]}", daemon=True).start()
        return claim

    def hold(self, job_id: str, *, message_id: str | None) -> tuple[Claim | None, str]:
        """Lease an existing record (a chunk delivery finishing or failing a fanned-out job).

        Returns ``(claim, state)`` with the lease held, or ``(None, why)``: ``missing`` (no
        record), ``done``, or ``busy`` (another delivery held the lease for a whole lease
        period: it is alive and will finish what it is doing). Waits like :meth:`claim`."""
        blob = self.blob(job_id)
        if self._read(blob) is None:
            return None, "missing"
        lease, doc = self._acquire(blob, job_id, message_id)
        if lease is None:
            return None, "done" if doc.get("state") == "done" else "busy"
        claim = Claim(doc.get("state", "running"), job_id, doc, blob, lease)
        if claim.state == "done":
            claim.release()
            return None, "done"
        threading.Thread(target=claim._renew_forever, args=(self.lease_seconds / 3,),
                         name=f"scorefn-lease-{job_id[:16]}", daemon=True).start()
        return claim, claim.state

    # -- internals -------------------------------------------------------------------------

    def _create(self, blob: BlobClient, doc: dict[str, Any]) -> bool:
        """Create the record unless it exists (If-None-Match: *); True when created here."""
        for attempt in range(2):
            try:
                blob.upload_blob(_dumps(doc), overwrite=False,
                                 content_settings=ContentSettings(content_type="application/json"))
                return True
            except ResourceExistsError:
                return False
            except HttpResponseError as exc:
                if exc.status_code == 412:
                    return False  # exists and is leased
                if exc.status_code != 404 or attempt:
                    raise
                self._create_container()  # the batch container's first job
        return False

    def _create_container(self) -> None:
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass

    def _read(self, blob: BlobClient) -> dict[str, Any] | None:
        try:
            raw = read_at_most(blob, MAX_RECORD_BYTES)
        except ResourceNotFoundError:
            return None
        except BlobTooLarge:
            raw = b""  # not one of ours: treated as any other damaged record
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            log.warning("job record %s is not a JSON object (or over 1 MiB); treating the job "
                        "as not done",
                        blob.blob_name)
            return {"state": "running"}
        return doc

    def _acquire(self, blob: BlobClient, job_id: str,
                 message_id: str | None) -> tuple[BlobLeaseClient | None, dict[str, Any]]:
        """Lease the record, waiting up to one lease period for a holder. Returns the lease
        (None: a duplicate to acknowledge) and the record as read under it."""
        deadline = self._clock() + self.lease_seconds + 2
        waited = False
        while True:
            try:
                lease = blob.acquire_lease(lease_duration=self.lease_seconds)
            except HttpResponseError as exc:
                if exc.status_code != 409:
                    raise
                doc = self._read(blob) or {}
                if doc.get("state") == "done":
                    return None, doc
                if self._clock() >= deadline:
                    # The holder renewed for a whole lease period: it is alive, and its
                    # message id is in the record by now.
                    if doc.get("message_id") != message_id:
                        log.info("job %s: running under another message; this one is a "
                                 "duplicate", job_id)
                        return None, doc
                    raise JobBusy(f"job {job_id} is being processed by another worker") from None
                if not waited:
                    log.info("job %s: waiting for the lease of another delivery", job_id)
                    waited = True
                self._sleep(1.0)
                continue
            try:
                doc = self._read(blob) or {"id": job_id, "state": "running"}
            except BaseException:
                lease.release()
                raise
            return lease, doc

    @staticmethod
    def _note_reuse(job_id: str, doc: dict[str, Any], digest: str) -> None:
        """A record from before job digests: a different message can only be logged."""
        if "job_sha256" not in doc and doc.get("message_sha256") not in (None, digest):
            log.warning("job %s: id reused by a different message after the job finished; "
                        "acknowledged without scoring (use a new id for a new job)", job_id)


def _reused(doc: dict[str, Any], job_digest: str | None) -> bool:
    """Whether the record belongs to another job than the message of ``job_digest``."""
    recorded = doc.get("job_sha256")
    return job_digest is not None and isinstance(recorded, str) and recorded != job_digest
