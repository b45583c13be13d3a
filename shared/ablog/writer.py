"""A bounded in-memory buffer of log records, written to append blobs in the background.

:meth:`BufferedLogWriter.enqueue` is called on the request path: it never blocks on
storage and never raises. A daemon thread encodes and writes the buffer every
``flush_seconds``, or sooner when it fills up. When storage is slow or down the requests
are still answered; records that cannot be kept (buffer full, a block that failed again
after a retry, a record over the block size, records arriving after shutdown) are counted
in ``scorefn.log.dropped`` (attributes ``endpoint`` and ``reason``) and logged in one line
per flush. The buffer is written on ``close()`` and at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.ablog.blobs import MAX_BLOCK_BYTES, AppendTarget, hour_prefix, pack_lines

log = logging.getLogger("scorefn.predlog")

# Reasons a record is dropped (the ``reason`` attribute of ``scorefn.log.dropped``).
BUFFER_FULL = "buffer_full"
STORAGE_ERROR = "storage_error"
TOO_LARGE = "too_large"
CLOSED = "closed"


class LogRecord(Protocol):
    """What the writer buffers: a record of an endpoint made at epoch time ``time``, which
    encodes itself as one JSON line (trimmed, when it can be, to ``max_bytes``)."""

    @property
    def endpoint(self) -> str: ...

    @property
    def time(self) -> float: ...

    def json_line(self, max_bytes: int) -> bytes: ...


@dataclass
class WriterStats:
    """Counts since the writer was made: ``enqueued`` accepted into the buffer,
    ``written`` appended to storage, ``dropped`` by reason (also those refused at enqueue)."""

    enqueued: int = 0
    written: int = 0
    flushes: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class BufferedLogWriter:
    """A bounded buffer of :class:`LogRecord`\\ s, written to append blobs in the background.

    ``target_factory`` builds the :class:`~shared.ablog.blobs.AppendTarget` on first flush
    (so that no storage client is made for a process that never logs). At most
    ``max_records`` records and about ``max_bytes`` bytes wait; one more batch may be in
    flight while being written. Records are encoded when written, not when enqueued.
    """

    def __init__(self, target_factory: Callable[[], AppendTarget], *, flush_seconds: float = 5.0,
                 max_records: int = 10_000, max_bytes: int = 64 * 1024 * 1024,
                 telemetry: Any = None, name: str = "prediction log",
                 retry_delay: float = 0.5, close_timeout: float = 10.0) -> None:
        self._target_factory = target_factory
        self._target: AppendTarget | None = None
        self.flush_seconds = flush_seconds
        self.max_records = max_records
        self.max_bytes = max_bytes
        # Write early when a quarter of either bound is used, so a burst does not fill it.
        self._flush_records = max(1, max_records // 4)
        self._flush_bytes = max(1, min(max_bytes // 4, MAX_BLOCK_BYTES))
        self.telemetry = telemetry
        self.name = name
        self.retry_delay = retry_delay
        self.close_timeout = close_timeout
        self.stats = WriterStats()
        self._buffer: list[LogRecord] = []
        self._bytes = 0
        self._lock = threading.Lock()         # the buffer, the stats, the drop tallies
        self._wake = threading.Event()        # a flush is due early (size) or closing
        self._flush_lock = threading.Lock()   # one flush at a time (thread, close, tests)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._abandoned = False               # close() gave up waiting on a stuck write
        self._in_flight: list[LogRecord] = []
        self._unreported: dict[tuple[str, str], int] = {}
        self._last_error: str | None = None

    # -- the request path --------------------------------------------------------------

    def enqueue(self, record: LogRecord, size: int = 256) -> bool:
        """Buffer ``record`` (kept by reference: it must not change afterwards).

        ``size`` estimates its encoded bytes. Never blocks on storage, never raises; False
        when the record was dropped (buffer full, or the writer is closed), which is counted.
        """
        try:
            with self._lock:
                buffer = self._buffer
                if (not self._closed and len(buffer) < self.max_records
                        and self._bytes + size <= self.max_bytes):
                    buffer.append(record)
                    self._bytes += size
                    self.stats.enqueued += 1
                    n, reason = len(buffer), None
                else:
                    reason = CLOSED if self._closed else BUFFER_FULL
                    self._tally(record.endpoint, reason, 1)
            if reason is None:
                if n == self._flush_records or self._bytes >= self._flush_bytes:
                    self._wake.set()
                if self._thread is None:
                    self._start()
                return True
            self._count(1, record.endpoint, reason)
            return False
        except Exception:  # never fail a request because of its log record
            return False

    # -- background --------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"scorefn-{self.name.replace(' ', '-')}")
            self._thread.start()
        atexit.register(self._at_exit)

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_seconds
        while True:
            self._wake.wait(max(0.0, next_flush - time.monotonic()))
            self._wake.clear()
            closing = self._closed
            try:
                self.flush()
            except Exception:  # pragma: no cover - flush handles its own failures
                log.exception("%s: flush failed unexpectedly", self.name)
            next_flush = time.monotonic() + self.flush_seconds
            if closing:
                return

    def flush(self) -> int:
        """Write everything buffered now; returns the records written. Failures are
        counted as dropped (after one retry per block) and logged in one line."""
        with self._flush_lock:
            with self._lock:
                batch, self._buffer, self._bytes = self._buffer, [], 0
                self._in_flight = batch
            written = self._write(batch) if batch else 0
            with self._lock:
                self._in_flight = []
                if self._abandoned:
                    return written  # close() has counted this batch already
                self.stats.flushes += 1
                self.stats.written += written
                unreported, self._unreported = self._unreported, {}
                error, self._last_error = self._last_error, None
            if unreported:
                self._report(unreported, error)
            return written

    def _write(self, batch: list[LogRecord]) -> int:
        groups: dict[tuple[str, str], list[bytes]] = {}
        for record in batch:
            endpoint = record.endpoint
            try:
                line = record.json_line(MAX_BLOCK_BYTES)
            except Exception:  # not encodable: never expected
                self._drop(endpoint, TOO_LARGE, 1)
                continue
            if len(line) > MAX_BLOCK_BYTES:
                self._drop(endpoint, TOO_LARGE, 1)
                continue
            groups.setdefault((endpoint, hour_prefix(endpoint, record.time)), []).append(line)
        written = 0
        storage_down = False
        for (endpoint, prefix), lines in groups.items():
            for block, count in pack_lines(lines):
                if storage_down:
                    self._drop(endpoint, STORAGE_ERROR, count)
                    continue
                if self._append(prefix, block):
                    written += count
                else:
                    # Failed twice (with the SDK's own quick retries inside each attempt):
                    # storage is down or refusing; do not wait on it again in this flush.
                    storage_down = True
                    self._drop(endpoint, STORAGE_ERROR, count)
        return written

    def _append(self, prefix: str, block: bytes) -> bool:
        for attempt in range(2):
            try:
                if self._target is None:
                    self._target = self._target_factory()
                self._target.append(prefix, block)
                return True
            except Exception as exc:
                self._last_error = _describe(exc)
                if attempt == 0 and not self._closed:
                    time.sleep(self.retry_delay)
        return False

    def _tally(self, endpoint: str, reason: str, count: int) -> None:
        # Called with the lock held.
        self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + count
        self._unreported[(endpoint, reason)] = self._unreported.get((endpoint, reason), 0) + count

    def _drop(self, endpoint: str, reason: str, count: int) -> None:
        with self._lock:
            if self._abandoned:
                return
            self._tally(endpoint, reason, count)
        self._count(count, endpoint, reason)

    def _count(self, count: int, endpoint: str, reason: str) -> None:
        if self.telemetry is not None:
            try:
                self.telemetry.record_log_dropped(count, endpoint, reason)
            except Exception:  # pragma: no cover - telemetry must not break logging
                pass

    def _report(self, dropped: dict[tuple[str, str], int], error: str | None) -> None:
        total = sum(dropped.values())
        detail = ", ".join(f"{endpoint}/{reason}: {n}" for (endpoint, reason), n in sorted(dropped.items()))
        log.warning("%s: dropped %d record(s) since the last flush (%s)%s", self.name, total, detail,
                    f"; last storage error: {error}" if error else "",
                    extra={"dropped": total, "log_name": self.name})

    # -- shutdown ----------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Refuse new records and write the buffer (waiting up to ``timeout`` seconds).
        Records still unwritten after that are counted as dropped (``closed``)."""
        timeout = self.close_timeout if timeout is None else timeout
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is None:
            self.flush()  # nothing can be buffered without a thread, but be safe
        elif thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                # A write is stuck: count what is buffered and what is in flight as lost
                # (the stuck write may still land; it is not counted twice).
                with self._lock:
                    left = self._buffer + self._in_flight
                    self._buffer, self._bytes, self._in_flight = [], 0, []
                    by_endpoint: dict[str, int] = {}
                    for record in left:
                        by_endpoint[record.endpoint] = by_endpoint.get(record.endpoint, 0) + 1
                    for endpoint, n in by_endpoint.items():
                        self._tally(endpoint, CLOSED, n)
                    self._abandoned = True
                    unreported, self._unreported = self._unreported, {}
                for endpoint, n in by_endpoint.items():
                    self._count(n, endpoint, CLOSED)
                if unreported:
                    self._report(unreported, self._last_error)
        try:
            atexit.unregister(self._at_exit)
        except Exception:  # pragma: no cover
            pass

    def _at_exit(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - never fail interpreter exit
            pass


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    status = getattr(exc, "status_code", None)
    return type(exc).__name__ + (f" {status}" if status else "") + (f" {code}" if code else "")
