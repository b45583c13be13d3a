"""Served rows counted in process and written to storage by each instance: no raw value
leaves the process.

:meth:`Collector.observe` is called on the request path: it keeps a reference to the
finished scoring and returns (no counting, no lock held while counting, no storage). A daemon
thread counts what is pending, vectorised over many requests at once, under each model
version's :class:`~shared.monitoring.binning.Binning`, and every ``flush_seconds`` writes the
current hour's counts of each endpoint to one blob per instance (written again, with the
hour's running totals, at each flush: a failed write loses nothing while the hour lasts).

Bounded: at most ``max_pending_rows`` rows wait to be counted (more are dropped and counted
in ``scorefn.monitor.dropped``, reason ``pending_full``); counts are kept for the hours not yet
written (an hour whose writes still fail an hour after it ended is dropped, reason
``storage_error``).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from shared.ablog.blobs import instance_name
from shared.models.model import ModelInfo
from shared.monitoring.binning import Binning
from shared.monitoring.blobs import ServedBlob, ServedEntry, hour_of, write_served
from shared.monitoring.jobs import JobCounts
from shared.monitoring.profile import Profile, count
from shared.monitoring.references import Binnings

log = logging.getLogger("scorefn.monitor")

PENDING_FULL = "pending_full"
STORAGE_ERROR = "storage_error"
COUNT_ERROR = "count_error"
CLOSED = "closed"
COUNT_ROWS = 8192  # count early once this many rows wait
COUNT_SECONDS = 10.0


class Observation(NamedTuple):
    """One scoring's rows, kept by reference until counted; ``predictions`` ``None`` when they
    are not the model's default output (raw scores, contributions)."""

    endpoint: str
    variant: str
    info: ModelInfo
    X: np.ndarray
    predictions: np.ndarray | None


class _Key(NamedTuple):
    endpoint: str
    hour: str
    variant: str
    model: str
    version: str
    binning: str


@dataclass
class _Counts:
    info: ModelInfo
    binning: Binning
    profile: Profile


@dataclass
class CollectorStats:
    """Counts since the collector was made."""

    observed_rows: int = 0
    counted_rows: int = 0
    flushes: int = 0
    failed_writes: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


def writer_name() -> str:
    """This process's writer name: the instance's name and a per-process token (an instance
    may run several worker processes, and each writes its own totals)."""
    return f"{instance_name()[:48]}-{uuid.uuid4().hex[:8]}"


class Collector:
    """Counts of served rows per endpoint, variant and model version, written by one thread.

    ``target_factory`` makes the monitoring container's client on first write;
    ``binnings`` gives each model version its bins.
    """

    def __init__(self, target_factory: Callable[[], Any], binnings: Binnings, *,
                 flush_seconds: float = 300.0, max_pending_rows: int = 50_000,
                 telemetry: Any = None, writer: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._target_factory = target_factory
        self._target: Any = None
        self.binnings = binnings
        self.flush_seconds = flush_seconds
        self.max_pending_rows = max_pending_rows
        self.telemetry = telemetry
        self.writer = writer or writer_name()
        self.clock = clock
        self.stats = CollectorStats()
        # Plain tuples in Observation's order: a NamedTuple costs ~0.5 us more per request.
        self._pending: deque[tuple[str, str, ModelInfo, np.ndarray, np.ndarray | None]] = deque()
        self._pending_rows = 0
        self._counts: dict[_Key, _Counts] = {}
        self._dirty: set[tuple[str, str]] = set()  # (endpoint, hour) changed since written
        self._lock = threading.Lock()  # the counts, dirty set and stats (not the pending deque)
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- the request path --------------------------------------------------------------

    def observe(self, endpoint: str, variant: str, info: ModelInfo, X: np.ndarray,
                predictions: np.ndarray | None) -> None:
        """Keep one scoring's rows for counting (``X`` and ``predictions`` by reference: they
        must not change afterwards). Never blocks on storage or counting, never raises.

        About 0.3 us: a plain tuple appended to a deque (atomic), no lock, no event unless the
        backlog just crossed :data:`COUNT_ROWS`."""
        try:
            n = X.shape[0]
            before = self._pending_rows
            if before + n > self.max_pending_rows or self._closed:
                self._dropped(endpoint, CLOSED if self._closed else PENDING_FULL, n)
                self._wake.set()
                return
            self._pending.append((endpoint, variant, info, X, predictions))
            self._pending_rows = before + n  # a bound, not a ledger: recounted when counting
            if self._thread is None:
                self._start()
            elif before < COUNT_ROWS <= before + n:
                self._wake.set()
        except Exception:  # pragma: no cover - monitoring must never fail a request
            log.exception("monitoring: could not keep a scoring's rows")

    # -- background --------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, daemon=True, name="scorefn-monitor")
            try:
                thread.start()
            except RuntimeError:  # no thread to be had: try again at the next request
                log.warning("monitoring: could not start its thread")
                return
            self._thread = thread
        atexit.register(self._at_exit)

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_seconds
        while not self._closed:
            self._wake.wait(min(COUNT_SECONDS, max(0.0, next_flush - time.monotonic())))
            self._wake.clear()
            try:
                self.count_pending()
                if time.monotonic() >= next_flush:
                    self.flush()
                    next_flush = time.monotonic() + self.flush_seconds
            except Exception:  # pragma: no cover - never let the thread die
                log.exception("monitoring: counting or writing failed unexpectedly")

    def count_pending(self) -> int:
        """Count the rows waiting (grouped by model version: one vectorised count per group);
        returns how many were counted."""
        taken: list[Observation] = []
        pending = self._pending
        while pending:
            try:
                taken.append(Observation(*pending.popleft()))
            except IndexError:  # pragma: no cover - emptied meanwhile
                break
        # What still waits (observations appended meanwhile), counted again: the request path's
        # unlocked additions never drift into a permanent "full".
        self._pending_rows = sum(o[3].shape[0] for o in list(pending))
        if not taken:
            return 0
        rows = sum(o.X.shape[0] for o in taken)
        hour = hour_of(self.clock())
        groups: dict[tuple[str, str, str, str], list[Observation]] = {}
        for o in taken:
            groups.setdefault((o.endpoint, o.variant, o.info.path, o.info.version), []).append(o)
        for group in groups.values():
            try:
                self._count_group(group, hour)
            except Exception:  # never expected; the rows are lost, and said so
                log.exception("monitoring: counting %s's rows failed", group[0].endpoint)
                self._dropped(group[0].endpoint, COUNT_ERROR, sum(o.X.shape[0] for o in group))
        with self._lock:
            self.stats.observed_rows += rows
        return rows

    def _count_group(self, group: list[Observation], hour: str) -> None:
        """Count one model version's observations at once (those with predictions, then
        those without)."""
        first = group[0]
        binning = self.binnings.get(first.info)
        profile = Profile.empty(binning)
        for with_predictions in (True, False):
            part = [o for o in group if (o.predictions is not None) == with_predictions]
            if not part:
                continue
            X = np.concatenate([o.X for o in part]) if len(part) > 1 else part[0].X
            predictions = (np.concatenate([o.predictions for o in part if o.predictions is not None])
                           if with_predictions else None)
            profile.add(count(binning, X, predictions))
        self.add(first.endpoint, first.variant, first.info, binning, profile, hour)

    def add(self, endpoint: str, variant: str, info: ModelInfo, binning: Binning,
            profile: Profile, hour: str) -> None:
        """Add counted rows to the hour's running totals."""
        key = _Key(endpoint, hour, variant, info.name, info.version, binning.id)
        with self._lock:
            counts = self._counts.get(key)
            if counts is None:
                self._counts[key] = _Counts(info, binning, profile)
            else:
                counts.profile.add(profile)
            self._dirty.add((endpoint, hour))
            self.stats.counted_rows += profile.rows

    def flush(self) -> int:
        """Count what is pending, then write each changed (endpoint, hour); returns the blobs
        written. A failed write is retried at the next flush with the hour's totals."""
        with self._flush_lock:
            self.count_pending()
            now_hour = hour_of(self.clock())
            with self._lock:
                dirty, self._dirty = self._dirty, set()
                blobs = [self._blob(endpoint, hour) for endpoint, hour in sorted(dirty)]
            written = 0
            for blob in blobs:
                if self._write(blob):
                    written += 1
                else:
                    with self._lock:
                        self._dirty.add((blob.endpoint, blob.hour))
            self._forget_old(now_hour)
            with self._lock:
                self.stats.flushes += 1
            return written

    def _blob(self, endpoint: str, hour: str) -> ServedBlob:
        entries = tuple(
            ServedEntry(k.variant, c.info.name, c.info.version, c.info.path, c.info.sha256,
                        c.binning, c.profile)
            for k, c in self._counts.items() if k.endpoint == endpoint and k.hour == hour)
        return ServedBlob(endpoint, hour, self.writer, entries)

    def _write(self, blob: ServedBlob) -> bool:
        try:
            if self._target is None:
                self._target = self._target_factory()
            write_served(self._target, blob)
            return True
        except Exception as exc:
            with self._lock:
                self.stats.failed_writes += 1
            log.warning("monitoring: could not write %s's counts of %s for %s (%s)",
                        blob.writer, blob.endpoint, blob.hour, type(exc).__name__)
            return False

    def _forget_old(self, now_hour: str) -> None:
        """Forget written hours before the current one, and unwritten hours over an hour old
        (their rows are counted as dropped)."""
        previous = hour_of(self.clock() - 3600)
        with self._lock:
            for key in [k for k in self._counts if k.hour < now_hour]:
                unwritten = (key.endpoint, key.hour) in self._dirty
                if not unwritten or key.hour < previous:
                    counts = self._counts.pop(key)
                    if unwritten:
                        self._tally(key.endpoint, STORAGE_ERROR, counts.profile.rows)
            self._dirty = {d for d in self._dirty
                           if any(k.endpoint == d[0] and k.hour == d[1] for k in self._counts)}

    # -- batch jobs -------------------------------------------------------------------

    def for_job(self, endpoint: str, variant: str, info: ModelInfo, accepted: float,
                writer: str) -> JobCounts:
        """Counts for a batch job or chunk accepted at epoch time ``accepted`` (its served
        blob's hour), written by :meth:`write_job` when it has scored."""
        binning = self.binnings.get(info)
        return JobCounts(endpoint, variant, info, binning, hour_of(accepted), writer,
                         Profile.empty(binning))

    def write_job(self, counts: JobCounts) -> bool:
        """Write a job's counts (its own blob, written over on a retry). Never raises: a
        failure is logged and its rows counted as dropped; the job's output stands."""
        if self._write(counts.blob()):
            return True
        self._dropped(counts.endpoint, STORAGE_ERROR, counts.profile.rows)
        return False

    # -- drops, shutdown ---------------------------------------------------------------

    def _dropped(self, endpoint: str, reason: str, rows: int) -> None:
        with self._lock:
            self._tally(endpoint, reason, rows)

    def _tally(self, endpoint: str, reason: str, rows: int) -> None:
        # Called with the lock held.
        self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + rows
        if self.telemetry is not None:
            try:
                self.telemetry.record_monitor_dropped(rows, endpoint, reason)
            except Exception:  # pragma: no cover - telemetry must not break monitoring
                pass

    def close(self, timeout: float = 10.0) -> None:
        """Stop counting new rows, count and write what is held."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        try:
            self.flush()
        except Exception:  # pragma: no cover - shutdown must not fail
            log.exception("monitoring: the last write failed")
        try:
            atexit.unregister(self._at_exit)
        except Exception:  # pragma: no cover
            pass

    def _at_exit(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover
            pass
