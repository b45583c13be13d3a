"""Runs shadow scorings off the request path, never blocking or failing the caller.

A few daemon threads take tasks from a bounded queue. When ``max_pending`` tasks are
already waiting, a new one is dropped and counted: shadows are best-effort, and a slow
shadow model must never slow down or fail the requests it shadows. A failing task is
counted and logged (at most one line per ``log_every_seconds``), never raised.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.errors import ScoreError

log = logging.getLogger("scorefn.shadow")


@dataclass
class ShadowStats:
    """``submitted`` were queued; ``dropped`` were refused (queue full or closed);
    ``failed`` raised; ``completed`` returned."""

    submitted: int = 0
    dropped: int = 0
    failed: int = 0
    completed: int = 0


class ShadowRunner:
    """A bounded pool: ``workers`` threads, at most ``max_pending`` tasks waiting."""

    def __init__(self, *, workers: int = 2, max_pending: int = 64,
                 log_every_seconds: float = 60.0) -> None:
        if workers < 1 or max_pending < 1:
            raise ValueError("workers and max_pending must be at least 1")
        self._workers = workers
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple, dict] | None] = queue.Queue(max_pending)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._log_every = log_every_seconds
        self._last_log = float("-inf")
        self.stats = ShadowStats()

    @property
    def pending(self) -> int:
        """Tasks waiting for a thread (not counting those running)."""
        return self._queue.qsize()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """Queue ``fn(*args, **kwargs)``; False (and counted as dropped) when the queue is
        full or the runner is closed. Never blocks, never raises."""
        if not self._threads and not self._closed:
            self._start()
        if self._closed:
            return self._count_drop()
        try:
            self._queue.put_nowait((fn, args, kwargs))
        except queue.Full:
            return self._count_drop()
        with self._lock:
            self.stats.submitted += 1
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Refuse new tasks, let queued ones finish, and wait up to ``timeout`` seconds."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        try:
            for _ in threads:
                self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            pass  # threads busy past the timeout: they are daemons and die with the process
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- internals -------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._threads or self._closed:
                return
            for i in range(self._workers):
                thread = threading.Thread(target=self._work, name=f"scorefn-shadow-{i}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _count_drop(self) -> bool:
        with self._lock:
            self.stats.dropped += 1
        return False

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            fn, args, kwargs = task
            try:
                fn(*args, **kwargs)
            except Exception as exc:
                with self._lock:
                    self.stats.failed += 1
                self._log_failure(exc)
            else:
                with self._lock:
                    self.stats.completed += 1

    def _log_failure(self, exc: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_log < self._log_every:
                return
            self._last_log = now
            failed = self.stats.failed
        # The code only: a message may quote the request (field or feature names), and payloads
        # reach logs only when TELEMETRY_LOG_PAYLOADS says so.
        what = exc.code if isinstance(exc, ScoreError) else type(exc).__name__
        log.warning("shadow task failed: %s; %d shadow failure(s) so far", what,
                    failed, exc_info=not isinstance(exc, ScoreError))
