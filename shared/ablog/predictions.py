"""The prediction log: one JSON Lines record per scored request, off the request path.

Opt-in per endpoint with the router config's ``log`` block (``{"sample": 1.0,
"features": false}``); an endpoint without one logs nothing. Records are appended to
append blobs partitioned by endpoint and hour::

    {container}/{endpoint}/{yyyy}/{mm}/{dd}/{hh}/{instance}.jsonl

where ``instance`` is ``WEBSITE_INSTANCE_ID`` (Azure) or ``hostname-pid``, so instances
never write the same blob (and several worker processes on one instance may: each append
is atomic, records never interleave).

The request path only builds a small dict (numpy arrays are referenced, not copied or
encoded) and appends it to a bounded in-memory buffer: :meth:`BufferedLogWriter.enqueue`
never blocks on storage and never raises. A daemon thread encodes and writes the buffer
every ``flush_seconds``, or sooner when it fills up. When storage is slow or down the
requests are still answered; records that cannot be kept (buffer full, a block that failed
again after a retry, a record over the block size, records arriving after shutdown) are
counted in ``scorefn.log.dropped`` (attributes ``endpoint`` and ``reason``) and logged in
one line per flush. The buffer is written on ``close()`` and at interpreter exit.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import random as _random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import orjson

log = logging.getLogger("scorefn.predlog")

MAX_BLOCK_BYTES = 4 * 1024 * 1024  # the append-block size every service version accepts
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE

# Reasons a record is dropped (the ``reason`` attribute of ``scorefn.log.dropped``).
BUFFER_FULL = "buffer_full"
STORAGE_ERROR = "storage_error"
TOO_LARGE = "too_large"
CLOSED = "closed"


def instance_name(env: Mapping[str, str] | None = None) -> str:
    """This process's part of the blob names: ``WEBSITE_INSTANCE_ID`` or ``hostname-pid``,
    reduced to letters, digits, ``.``, ``_`` and ``-`` (at most 64 characters)."""
    env = os.environ if env is None else env
    raw = (env.get("WEBSITE_INSTANCE_ID") or "").strip() or f"{socket.gethostname()}-{os.getpid()}"
    return _UNSAFE.sub("-", raw).strip("-.")[:64] or f"instance-{os.getpid()}"


def hour_prefix(endpoint: str, t: float) -> str:
    """``{endpoint}/{yyyy}/{mm}/{dd}/{hh}`` of the UTC hour holding epoch time ``t``."""
    return f"{endpoint}/{time.strftime('%Y/%m/%d/%H', time.gmtime(t))}"


_second: tuple[int, str] = (-1, "")


def iso_time(t: float) -> str:
    """Epoch seconds as UTC ISO 8601 with microseconds: ``2026-11-24T21:05:09.123456Z``."""
    global _second
    whole = int(t // 1)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    micros = min(999_999, int(round((t - whole) * 1e6)))
    return f"{cached[1]}.{micros:06d}Z"


def sampled(sample: float, endpoint: str, key: str | None, rand: Callable[[], float]) -> bool:
    """Whether a request is logged at rate ``sample``. With a sticky key the choice is a
    hash of (endpoint, key), so a user's requests are all logged or all not (outcomes by
    key then find their prediction); without one it is random."""
    if sample >= 1.0:
        return True
    if sample <= 0.0:
        return False
    if key:
        digest = hashlib.blake2b(f"{endpoint}\0{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2.0 ** 64 < sample
    return rand() < sample


class AppendTarget:
    """Appends bytes (whole JSON lines) to this instance's hourly append blob of a prefix,
    creating the container and the blob when missing and moving on to a new blob
    (``{instance}.1.jsonl``, ...) when one reaches the 50,000-block limit.

    ``container`` is an ``azure.storage.blob.ContainerClient``; storage errors are raised
    (``AzureError``) for the caller to handle.
    """

    def __init__(self, container: Any, instance: str | None = None) -> None:
        self.container = container
        self.instance = instance or instance_name()
        self._rollover: dict[str, int] = {}
        self._lock = threading.Lock()

    def blob_name(self, prefix: str) -> str:
        n = self._rollover.get(prefix, 0)
        return f"{prefix}/{self.instance}{f'.{n}' if n else ''}.jsonl"

    def append(self, prefix: str, block: bytes) -> None:
        """Append one block (at most :data:`MAX_BLOCK_BYTES`) to the blob of ``prefix``."""
        from azure.core import MatchConditions
        from azure.core.exceptions import (HttpResponseError, ResourceExistsError,
                                           ResourceNotFoundError)

        if len(block) > MAX_BLOCK_BYTES:
            raise ValueError("a block is larger than the append-block limit")
        for _ in range(4):
            blob = self.container.get_blob_client(self.blob_name(prefix))
            try:
                blob.append_block(block, length=len(block))
                return
            except ResourceNotFoundError as exc:
                if exc.error_code == "ContainerNotFound":
                    try:
                        self.container.create_container()
                    except ResourceExistsError:
                        pass
                try:
                    blob.create_append_blob(match_condition=MatchConditions.IfMissing)
                except ResourceExistsError:
                    pass  # another process created it meanwhile
            except HttpResponseError as exc:
                if exc.error_code != "BlockCountExceedsLimit":
                    raise
                with self._lock:
                    self._rollover[prefix] = self._rollover.get(prefix, 0) + 1
        raise RuntimeError(f"could not append to a blob under {prefix!r}")


def pack_lines(lines: Iterable[bytes], limit: int = MAX_BLOCK_BYTES) -> list[tuple[bytes, int]]:
    """Whole lines packed into blocks of at most ``limit`` bytes: ``(block, lines in it)``.
    A single line longer than ``limit`` must be left out by the caller."""
    blocks: list[tuple[bytes, int]] = []
    parts: list[bytes] = []
    size = 0
    for line in lines:
        if parts and size + len(line) > limit:
            blocks.append((b"".join(parts), len(parts)))
            parts, size = [], 0
        parts.append(line)
        size += len(line)
    if parts:
        blocks.append((b"".join(parts), len(parts)))
    return blocks


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
    """A bounded buffer of records, written to append blobs in the background.

    ``target_factory`` builds the :class:`AppendTarget` on first flush (so that no storage
    client is made for a process that never logs). At most ``max_records`` records and
    about ``max_bytes`` bytes wait; one more batch may be in flight while being written.
    A record is a dict, or anything ``build`` turns into one at write time (so that the
    request path only stores a tuple).
    """

    def __init__(self, target_factory: Callable[[], AppendTarget], *, flush_seconds: float = 5.0,
                 max_records: int = 10_000, max_bytes: int = 64 * 1024 * 1024,
                 telemetry: Any = None, name: str = "prediction log",
                 build: Callable[[Any], dict[str, Any]] | None = None,
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
        self._build = build
        self.retry_delay = retry_delay
        self.close_timeout = close_timeout
        self.stats = WriterStats()
        self._buffer: list[tuple[str, float, Any]] = []
        self._bytes = 0
        self._lock = threading.Lock()         # the buffer, the stats, the drop tallies
        self._wake = threading.Event()        # a flush is due early (size) or closing
        self._flush_lock = threading.Lock()   # one flush at a time (thread, close, tests)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._abandoned = False               # close() gave up waiting on a stuck write
        self._in_flight: list[tuple[str, float, Any]] = []
        self._unreported: dict[tuple[str, str], int] = {}
        self._last_error: str | None = None

    # -- the request path --------------------------------------------------------------

    def enqueue(self, endpoint: str, t: float, record: Any, size: int = 256) -> bool:
        """Buffer ``record`` of ``endpoint``, made at epoch time ``t`` (written as ``time``).

        ``size`` estimates its encoded bytes. Never blocks on storage, never raises; False
        when the record was dropped (buffer full, or the writer is closed), which is counted.
        """
        try:
            with self._lock:
                buffer = self._buffer
                if (not self._closed and len(buffer) < self.max_records
                        and self._bytes + size <= self.max_bytes):
                    buffer.append((endpoint, t, record))
                    self._bytes += size
                    self.stats.enqueued += 1
                    n, reason = len(buffer), None
                else:
                    reason = CLOSED if self._closed else BUFFER_FULL
                    self._tally(endpoint, reason, 1)
            if reason is None:
                if n == self._flush_records or self._bytes >= self._flush_bytes:
                    self._wake.set()
                if self._thread is None:
                    self._start()
                return True
            self._count(1, endpoint, reason)
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

    def _encode(self, t: float, record: Any) -> bytes:
        doc = self._build(record) if self._build is not None else record
        line = orjson.dumps({"time": iso_time(t), **doc}, option=_JSON_OPTIONS)
        if len(line) > MAX_BLOCK_BYTES and "features" in doc:
            trimmed = {k: v for k, v in doc.items() if k not in ("features", "feature_names")}
            trimmed["features_omitted"] = "too_large"
            line = orjson.dumps({"time": iso_time(t), **trimmed}, option=_JSON_OPTIONS)
        return line

    def _write(self, batch: list[tuple[str, float, Any]]) -> int:
        groups: dict[tuple[str, str], list[bytes]] = {}
        for endpoint, t, record in batch:
            try:
                line = self._encode(t, record)
            except Exception:  # not encodable: never expected
                self._drop(endpoint, TOO_LARGE, 1)
                continue
            if len(line) > MAX_BLOCK_BYTES:
                self._drop(endpoint, TOO_LARGE, 1)
                continue
            groups.setdefault((endpoint, hour_prefix(endpoint, t)), []).append(line)
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
                    for endpoint, _, _ in left:
                        by_endpoint[endpoint] = by_endpoint.get(endpoint, 0) + 1
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


class PredictionLog:
    """Builds prediction log records for the scoring service and hands them to a writer.

    The request path stores a tuple; the record (see :func:`record_dict`) is built and
    encoded when the buffer is written."""

    def __init__(self, writer: BufferedLogWriter, *, rand: Callable[[], float] | None = None) -> None:
        self.writer = writer
        if writer._build is None:
            writer._build = record_dict
        self._rand = rand or _random.random

    def wants(self, config: Any, endpoint: str, key: str | None) -> bool:
        """Whether a request to an endpoint whose ``log`` block is ``config`` is logged."""
        return config is not None and sampled(config.sample, endpoint, key, self._rand)

    def record(self, *, endpoint: str, request_id: str, key: str | None, trigger: str,
               variant: str, model: Any, predictions: np.ndarray, latency_ms: float,
               output: str, rows: int, features: np.ndarray | None = None,
               variant_index: int | None = None, shadow: bool = False,
               pinned: bool = False) -> bool:
        """Enqueue one record (``model`` is a :class:`~shared.models.model.ModelInfo`; the arrays
        are kept by reference, never modified afterwards). ``pinned``: the caller chose the
        variant (``x-scorefn-variant``), so the request was not randomised."""
        size = 320 + 24 * predictions.size + len(request_id or "") + len(key or "")
        if features is not None:
            size += 24 * features.size + 24 * len(model.feature_names)
        return self.writer.enqueue(endpoint, time.time(), (
            endpoint, request_id, key, trigger, variant, variant_index, shadow, pinned, model,
            output, rows, predictions, latency_ms, features), size)

    def close(self) -> None:
        self.writer.close()


def record_dict(payload: tuple) -> dict[str, Any]:
    """A prediction log record (without ``time``, which the writer puts first)."""
    (endpoint, request_id, key, trigger, variant, variant_index, shadow, pinned, model, output,
     rows, predictions, latency_ms, features) = payload
    record: dict[str, Any] = {"endpoint": endpoint, "request_id": request_id}
    if key is not None:
        record["key"] = key
    record.update(trigger=trigger, variant=variant, shadow=shadow)
    if variant_index is not None:
        record["variant_index"] = variant_index
    if pinned:
        record["pinned"] = True
    record.update(model={"name": model.name, "version": model.version},
                  objective=model.objective, output=output, rows=rows,
                  predictions=predictions if output != "pred_contrib" else None,
                  latency_ms=round(latency_ms, 4))
    if features is not None:
        record["feature_names"] = model.feature_names
        record["features"] = _as_sent(features, model.schema)
    return record


def _as_sent(features: np.ndarray, schema: Any) -> Any:
    """The features as a request sends them: a categorical feature's category value rather
    than the code it was scored with (``null`` for a missing or unseen value)."""
    if schema is None or not schema.categorical:
        return features
    rows = features.tolist()
    for cats in schema.categorical:
        j = cats.index
        for row in rows:
            row[j] = cats.value_of(row[j])
    return rows  # orjson writes NaN as null


def output_kind(options: Any) -> str:
    """What the predictions of a request are: ``predict``, ``raw_score`` or ``pred_contrib``."""
    if getattr(options, "pred_contrib", False):
        return "pred_contrib"
    if getattr(options, "raw_score", False):
        return "raw_score"
    return "predict"


def build_logs(settings: Any, telemetry: Any = None) -> tuple[PredictionLog, Any]:
    """The prediction log and the outcome log the app settings describe. Nothing connects
    to storage until the first record or outcome; a bad connection setting shows then
    (as dropped records, or a 500 on the outcomes route), never as a failed scoring."""
    from shared.ablog.outcomes import OutcomeLog

    def target(container_name: str) -> Callable[[], AppendTarget]:
        def make() -> AppendTarget:
            from shared.settings import resolve_connection
            from shared.storage import blob_service

            conn = resolve_connection(settings.prediction_log_connection)
            service = blob_service(conn, min(settings.storage_timeout_seconds, 10.0))
            return AppendTarget(service.get_container_client(container_name))
        return make

    writer = BufferedLogWriter(
        target(settings.prediction_log_container),
        flush_seconds=settings.prediction_log_flush_seconds,
        max_records=settings.prediction_log_max_buffer,
        max_bytes=settings.prediction_log_max_buffer_mb * 1024 * 1024, telemetry=telemetry)
    return PredictionLog(writer), OutcomeLog(target(settings.outcome_log_container))
