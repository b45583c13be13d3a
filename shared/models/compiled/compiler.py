"""The on-instance compiler (opt-in fallback): models named in ``COMPILE_ON_INSTANCE`` that
loaded without a usable artifact are compiled in the background on the instance; LightGBM
serves them meanwhile. Artifacts are normally built at upload (``build.py``, called by
``scorefn upload-model``) and loaded with the model (``loader.py``); this covers models put in
storage by other means.

Compilation runs in child processes (``worker.py``) at a lower CPU priority, one model at a
time, with a time limit. The artifact is kept in a private local directory and written to the
models container where the upload would have put it (``caches.py``), so other instances load
it with the model; while one instance compiles, a lock blob makes the others wait for its
artifact. A compiled forest takes over only after the equality check (``check.py``); an
artifact is native code, so only the app's identity and the model uploaders may write where
artifacts are kept (docs/compiled-trees.md, "Trust boundary").
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import logging
import os
import subprocess
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.models.compiled.artifact import blob_path, pack, unpack
from shared.models.compiled.build import (
    LOAD_CHECK_ROWS,
    LOAD_CHECK_SEED,
    artifact_key,
    compile_forest,
    default_parts,
    load_forest,
    model_text,
    run_check,
    traits_of,
)
from shared.models.compiled.caches import BlobCache, LocalCache
from shared.models.compiled.check import TOLERANCE, sample_rows
from shared.models.compiled.errors import CompileError
from shared.models.compiled.target import can_compile, host_problem
from shared.models.compiled.traits import Traits

log = logging.getLogger("scorefn.compiled")

@dataclass
class CompileStats:
    """Counters for tests and logs."""

    compiles: int = 0
    compile_seconds: float = 0.0
    failures: int = 0
    unsupported: int = 0
    check_failures: int = 0
    rejected_artifacts: int = 0
    local_hits: int = 0
    blob_hits: int = 0
    uploads: int = 0
    attached: int = 0
    dropped: int = 0
    lock_waits: int = 0


@dataclass
class _Job:
    name: str
    model: weakref.ref
    is_current: Callable[[Any], bool]
    not_before: float = 0.0
    waiting_since: float | None = None
    seq: int = 0


@dataclass
class CompileOutcome:
    """The latest outcome for one model version: ``reason`` is ``compiled``, ``local_cache``,
    ``blob_cache``, ``unsupported``, a :class:`CompileError` reason or ``rejected_<origin>``."""

    key: str
    reason: str
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Compiler:
    """Compiles the opted-in models one at a time in a background thread (see module doc)."""

    def __init__(self, patterns: tuple[str, ...] | list[str], *, container: Any = None,
                 cache_dir: str | os.PathLike | None = None, timeout_seconds: float = 900.0,
                 max_pending: int = 64, poll_seconds: float = 10.0,
                 tolerance: float = TOLERANCE, parts: int | None = None) -> None:
        self.patterns = tuple(patterns)
        self.blobs = BlobCache(container) if container is not None else None
        self.local = LocalCache(cache_dir)
        self.timeout_seconds = timeout_seconds
        self.max_pending = max_pending
        self.poll_seconds = poll_seconds
        self.tolerance = tolerance
        self.parts = parts or default_parts()
        self.stats = CompileStats()
        self.outcomes: dict[str, CompileOutcome] = {}  # by "name@version": the latest outcome
        self.history: collections.deque = collections.deque(maxlen=256)  # (label, outcome)
        self._cond = threading.Condition()
        self._jobs: list[_Job] = []
        self._busy = False
        self._closed = False
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen | None = None
        self._given_up: set[str] = set()  # keys that failed: not retried in this process

    def wants(self, name: str, path: str) -> bool:
        """The model is opted in (its name or blob path matches a pattern)."""
        return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(path, p) for p in self.patterns)

    def submit(self, name: str, model: Any, is_current: Callable[[Any], bool]) -> bool:
        """Queue ``model`` for compilation; never blocks. False when the queue is full."""
        with self._cond:
            if self._closed:
                return False
            self._jobs = [j for j in self._jobs if j.name != name]  # the newest version wins
            if len(self._jobs) >= self.max_pending:
                self.stats.dropped += 1
                log.warning("compiled trees: %d models already waiting; %s stays on LightGBM",
                            len(self._jobs), name)
                return False
            self._seq += 1
            self._jobs.append(_Job(name, weakref.ref(model), is_current, seq=self._seq))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="scorefn-compiler", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is queued or running (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._jobs or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self) -> None:
        """Stop: drop queued jobs, stop a running compilation, wait for the thread."""
        with self._cond:
            self._closed = True
            self._jobs.clear()
            child = self._child
            self._cond.notify_all()
        if child is not None and child.poll() is None:
            child.kill()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- internals -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                job = None
                while job is None:
                    if self._closed:
                        return
                    now = time.monotonic()
                    ready = [j for j in self._jobs if j.not_before <= now]
                    if ready:
                        job = min(ready, key=lambda j: (j.not_before, j.seq))
                        self._jobs.remove(job)
                        self._busy = True
                    else:
                        wait = min((j.not_before for j in self._jobs), default=now + 60) - now
                        self._cond.wait(max(0.01, min(wait, 60)))
            try:
                self._process(job)
            except Exception:  # a bug must not kill the worker: the model stays on LightGBM
                log.exception("compiled trees: unexpected error for model %s", job.name)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _defer(self, job: _Job) -> None:
        with self._cond:
            if not self._closed and not any(j.name == job.name for j in self._jobs):
                job.not_before = time.monotonic() + self.poll_seconds
                self._jobs.append(job)

    def _process(self, job: _Job) -> None:
        model = job.model()
        if model is None or not job.is_current(model):
            return  # evicted or replaced while waiting
        info = model.info
        label = f"{info.name}@{info.version}"
        text = model_text(model)
        traits = traits_of(model, text)
        problem = host_problem()
        if problem is not None:
            self._outcome(label, "", "wrong_host", problem)
            return
        if traits.unsupported:
            self.stats.unsupported += 1
            self._outcome(label, "", "unsupported", traits.unsupported)
            log.warning("compiled trees: model %s version %s stays on LightGBM: %s",
                        info.name, info.version, traits.unsupported)
            return
        key, inputs = artifact_key(info.sha256)
        if key in self._given_up:
            return
        path = blob_path(info.path, key)

        # 1. this machine's cache, 2. the shared blob cache: loaded only if they pass the check
        data = self.local.read(key)
        if data is not None:
            if self._take_over(job, model, text, traits, data, key, inputs, label, "local"):
                self.stats.local_hits += 1
                return
            self.local.remove(key)
            data = None
        locked = False
        if self.blobs is not None:
            data = self.blobs.read(path)
            if data is None:
                if not self.blobs.try_lock(path, stale_after=self.timeout_seconds + 60):
                    # Another instance is compiling this artifact: look again later.
                    if job.waiting_since is None:
                        job.waiting_since = time.monotonic()
                        self.stats.lock_waits += 1
                        log.info("compiled trees: model %s version %s is being compiled by "
                                 "another instance; waiting for its artifact", info.name, info.version)
                    self._defer(job)
                    return
                locked = True
                data = self.blobs.read(path)  # it may have been written before we got the lock
        try:
            if data is not None:
                if self._take_over(job, model, text, traits, data, key, inputs, label, "blob"):
                    self.stats.blob_hits += 1
                    self.local.write(key, data)
                    return
            # 3. compile (a refused blob artifact is then replaced by a good one)
            self._compile(job, model, text, traits, key, inputs, label, path)
        finally:
            if locked and self.blobs is not None:  # locked: in the blob cache
                self.blobs.unlock(path)

    def _compile(self, job: _Job, model: Any, text: str, traits: Traits, key: str,
                 inputs: dict[str, Any], label: str, path: str) -> None:
        info = model.info
        try:
            try:
                objects, seconds, _parts = compile_forest(text, parts=self.parts,
                                                          timeout=self.timeout_seconds,
                                                          on_start=self._set_child)
            finally:
                self._set_child(None)
            self.stats.compiles += 1
            self.stats.compile_seconds += seconds
        except CompileError as exc:
            with self._cond:
                if self._closed:
                    return
            self._given_up.add(key)
            if exc.reason == "unsupported":
                self.stats.unsupported += 1
            else:
                self.stats.failures += 1
            self._outcome(label, key, exc.reason, exc.message)
            log.warning("compiled trees: model %s version %s stays on LightGBM: %s (%s)",
                        info.name, info.version, exc.reason, exc.message)
            return
        rows = sample_rows(text, traits.num_features, n=LOAD_CHECK_ROWS, seed=LOAD_CHECK_SEED)
        artifact = pack(objects, key, inputs, seconds, traits=dataclasses.asdict(traits), rows=rows)
        if not self._take_over(job, model, text, traits, artifact, key, inputs, label, "compiled",
                               compile_seconds=seconds):
            self._given_up.add(key)
            return
        self.local.write(key, artifact)
        if self.blobs is not None:
            metadata = {"scorefn_model": info.path[:200], "scorefn_model_version": info.version,
                        "scorefn_key": key}
            if self.blobs.write(path, artifact, metadata):
                self.stats.uploads += 1

    def _take_over(self, job: _Job, model: Any, text: str, traits: Traits, data: bytes, key: str,
                   inputs: dict[str, Any], label: str, origin: str,
                   compile_seconds: float | None = None) -> bool:
        """Unpack, load and check an artifact; attach it to ``model`` when all pass."""
        info = model.info
        try:
            objects, header = unpack(data, key, inputs)
            forest = load_forest(objects, traits)
            run_check(model, forest, text, self.tolerance)
        except CompileError as exc:
            if origin == "compiled":
                self.stats.check_failures += 1
                log.warning("compiled trees: model %s version %s stays on LightGBM: %s",
                            info.name, info.version, exc.message)
            else:
                self.stats.rejected_artifacts += 1
                log.warning("compiled trees: cached artifact of model %s version %s (%s) not "
                            "used: %s", info.name, info.version, origin, exc.message)
            self._outcome(label, key, exc.reason if origin == "compiled" else "rejected_" + origin,
                          exc.message)
            return False
        if not job.is_current(model):
            return True  # replaced meanwhile: nothing to attach, nothing more to do
        model.attach_compiled(forest)
        self.stats.attached += 1
        seconds = compile_seconds if compile_seconds is not None else header.get("compile_seconds")
        self._outcome(label, key, "compiled" if origin == "compiled" else origin + "_cache", "",
                      {"compile_seconds": seconds, "bytes": forest.size_bytes})
        log.info("compiled trees: model %s version %s now served compiled (%s; %d KiB)",
                 info.name, info.version,
                 f"compiled in {seconds:.1f} s" if origin == "compiled" else f"from the {origin} cache",
                 forest.size_bytes // 1024)
        return True

    def _outcome(self, label: str, key: str, reason: str, detail: str,
                 extra: dict[str, Any] | None = None) -> None:
        with self._cond:
            if len(self.outcomes) > 1000:
                self.outcomes.clear()
            outcome = CompileOutcome(key, reason, detail, extra or {})
            self.outcomes[label] = outcome
            self.history.append((label, outcome))

    def _set_child(self, proc: subprocess.Popen | None) -> None:
        with self._cond:
            self._child = proc
            closed = self._closed
        if closed and proc is not None:
            proc.kill()


def make_compiler(settings: Any, container: Any) -> Compiler | None:
    """The on-instance compiler the settings ask for, or ``None`` (off, or lleaves missing)."""
    if not settings.compile_on_instance or not settings.compiled_trees:
        return None
    if not can_compile():
        log.warning("COMPILE_ON_INSTANCE is set but lleaves/llvmlite are not installed; models "
                    "without an artifact are served by LightGBM")
        return None
    return Compiler(settings.compile_on_instance, container=container,
                    cache_dir=settings.compiled_cache_dir or None,
                    timeout_seconds=settings.compiled_timeout_seconds)
