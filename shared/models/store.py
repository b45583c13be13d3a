"""Lazy, per-process model cache over a blob source.

- Nothing is fetched until a model is first asked for; concurrent first requests for one
  model share a single download (single-flight).
- A cached model is revalidated by ETag at most every ``refresh_seconds``, in a background
  thread: requests keep using the cached model meanwhile, and a changed blob replaces it
  only once it has parsed. A blob that fails to download or parse never replaces a model
  that works; the failure is logged and retried at the next interval.
- Beyond ``max_cache_bytes`` the least recently used models are evicted.
- With ``artifacts`` (``shared/models/compiled/loader.py``), a model's compiled-trees artifact
  is fetched, loaded and checked while the model parses, and a model version that has one
  serves compiled from its first request. With a ``compiler`` (the opt-in on-instance
  fallback), models that loaded without one are queued for compilation; LightGBM serves them
  until a checked compiled forest takes over. A swapped-out or evicted model lets go of its
  compiled code.
- :meth:`ModelStore.get_cached` answers from the cache only, never reading storage (an
  event loop scoring a request it found warm must not download a model that left the
  cache since).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.errors import InvalidName, ModelNotFound, ScoreError
from shared.models.model import LoadedModel, ModelInfo, parse_model

log = logging.getLogger("scorefn.models")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,255}$")
MODEL_SUFFIXES = (".txt", ".txt.gz")

class Source(Protocol):
    def fetch(self, path: str, etag: str | None = None): ...

    def ping(self) -> None: ...


def blob_candidates(name: str) -> tuple[str, ...]:
    """The blob paths a model name may refer to: ``churn`` -> ``churn.txt``, ``churn.txt.gz``."""
    if not _NAME_RE.match(name) or ".." in name or "//" in name or name.endswith("/"):
        raise InvalidName(f"invalid model name {name[:80]!r}: use letters, digits, '.', '_', '-', '/'")
    if name.endswith(MODEL_SUFFIXES):
        return (name,)
    return tuple(name + suffix for suffix in MODEL_SUFFIXES)


@dataclass
class StoreStats:
    """Counters for tests and telemetry."""

    downloads: int = 0
    not_modified: int = 0
    swaps: int = 0
    failed_refreshes: int = 0
    evictions: int = 0


@dataclass
class _Entry:
    model: LoadedModel
    next_check: float
    refreshing: bool = False
    rejected_etag: str | None = None  # a newer version check_swap refused: not fetched again


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    model: LoadedModel | None = None
    error: BaseException | None = None


class ModelStore:
    """Get models by name; see the module docstring for the caching rules."""

    def __init__(self, source: Source, *, refresh_seconds: float = 30.0,
                 max_cache_bytes: int = 1024 * 1024 * 1024,
                 parse: Callable[..., LoadedModel] = parse_model,
                 clock: Callable[[], float] = time.monotonic, compiler: Any = None,
                 artifacts: Any = None,
                 on_refresh_failure: Callable[[str, str], Any] | None = None) -> None:
        self.source = source
        self.compiler = compiler
        self.artifacts = artifacts
        # Called with (model name, error code) when a background refresh fails (the cached
        # version keeps serving): the service counts these in telemetry.
        self._on_refresh_failure = on_refresh_failure
        self._refresh_seconds = refresh_seconds
        self._max_cache_bytes = max_cache_bytes
        self._parse = parse
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._flights: dict[str, _Flight] = {}
        self._executor: ThreadPoolExecutor | None = None
        self.stats = StoreStats()
        # Called with (name, new ModelInfo) before a refreshed version replaces a cached one;
        # a ScoreError keeps the old version (see shared.router.feature_parity).
        self.check_swap: Callable[[str, ModelInfo], None] | None = None

    def get(self, name: str) -> tuple[LoadedModel, bool]:
        """The model called ``name`` and whether this call had to load it (a cold start).

        Raises :class:`ModelNotFound`, :class:`ModelUnavailable` or :class:`InvalidModel`
        for a model that is not cached and cannot be loaded.
        """
        with self._lock:
            model = self._cached(name)
            if model is not None:
                return model, False
            flight = self._flights.get(name)
            leader = flight is None
            if flight is None:
                flight = self._flights[name] = _Flight()
        if leader:
            self._lead(name, flight)
        else:
            flight.done.wait()
        if flight.error is not None:
            raise flight.error
        assert flight.model is not None
        return flight.model, True

    def get_cached(self, name: str) -> LoadedModel | None:
        """The model called ``name`` if it is cached, else ``None``; never reads storage."""
        with self._lock:
            return self._cached(name)

    def _cached(self, name: str) -> LoadedModel | None:
        """A cache hit (most recently used now; its revalidation started when due). Called
        with the lock held."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        self._entries.move_to_end(name)
        if self._clock() >= entry.next_check and not entry.refreshing:
            entry.refreshing = True
            self._refresh_pool().submit(self._refresh, name, entry)
        return entry.model

    def is_cached(self, name: str) -> bool:
        """Whether ``get(name)`` would answer from the cache, without storage access."""
        return name in self._entries

    def loaded(self) -> list[ModelInfo]:
        """Info of every cached model, least recently used first."""
        with self._lock:
            return [entry.model.info for entry in self._entries.values()]

    def refresh(self, name: str) -> bool:
        """Revalidate ``name`` now, in this thread; True when a new version was swapped in."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.refreshing:
                return False
            entry.refreshing = True
        return self._refresh(name, entry)

    def close(self) -> None:
        """Stop background refreshes (waits for one in progress) and compilations."""
        if self.compiler is not None:
            self.compiler.close()
        if self.artifacts is not None:
            self.artifacts.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- internals -------------------------------------------------------------------

    def _lead(self, name: str, flight: _Flight) -> None:
        try:
            model = self._load(name)
        except BaseException as exc:
            flight.error = exc
            with self._lock:
                del self._flights[name]
            if isinstance(exc, ScoreError):
                log.warning("model %s could not be loaded: %s (%s)", name, exc.code, exc.message)
            else:
                log.exception("model %s could not be loaded", name)
        else:
            flight.model = model
            with self._lock:
                self._entries[name] = _Entry(model, self._clock() + self._refresh_seconds)
                del self._flights[name]
                self._evict(keep=name)
        finally:
            flight.done.set()
        if flight.model is not None:
            self._compile_later(name, flight.model)

    def _load(self, name: str) -> LoadedModel:
        candidates = blob_candidates(name)
        if self.artifacts is not None:
            self.artifacts.warm()
        for path in candidates:
            try:
                content = self.source.fetch(path)
            except ModelNotFound:
                continue
            self.stats.downloads += 1
            return self._parse_with_artifact(name, path, content)
        raise ModelNotFound(f"no model {name!r} (looked for {', '.join(candidates)})")

    def _parse_with_artifact(self, name: str, path: str, content: Any) -> LoadedModel:
        """Parse a downloaded model; its compiled artifact, if any, is fetched and loaded
        meanwhile and attached once it passes the check."""
        sha256 = hashlib.sha256(content.data).hexdigest()
        pending = (self.artifacts.begin(name, path, content.data, sha256)
                   if self.artifacts is not None else None)
        model = self._parse(content.data, name=name, path=path, version=content.etag,
                            last_modified=content.last_modified, metadata=content.metadata,
                            sha256=sha256)
        if pending is not None:
            pending.finish(model)
        return model

    def _refresh(self, name: str, entry: _Entry) -> bool:
        current = entry.model.info
        swapped = False
        try:
            # After a refused version, ask only whether the blob changed again since.
            content = self.source.fetch(current.path, etag=entry.rejected_etag or current.version)
            if content is None:
                self.stats.not_modified += 1
            else:
                self.stats.downloads += 1
                model = self._parse_with_artifact(name, current.path, content)
                if self.check_swap is not None:
                    try:
                        self.check_swap(name, model.info)
                    except ScoreError:
                        entry.rejected_etag = content.etag
                        raise
                entry.rejected_etag = None
                with self._lock:
                    if self._entries.get(name) is entry:
                        old = entry.model
                        entry.model = model  # atomic swap: readers see old or new, never half
                        swapped = True
                        self.stats.swaps += 1
                        self._evict(keep=name)
                log.info("model %s updated to version %s", name, content.etag)
                if swapped:
                    old.release_compiled()  # LightGBM first, then the new version's own
                    self._compile_later(name, model)
        except ScoreError as exc:
            self._refresh_failed(name, exc.code)
            log.warning("refresh of model %s failed: %s (%s); keeping version %s",
                        name, exc.code, exc.message, current.version)
        except Exception:
            self._refresh_failed(name, "internal_error")
            log.exception("refresh of model %s failed; keeping version %s", name, current.version)
        finally:
            with self._lock:
                entry.refreshing = False
                entry.next_check = self._clock() + self._refresh_seconds
        return swapped

    def _refresh_failed(self, name: str, code: str) -> None:
        self.stats.failed_refreshes += 1
        if self._on_refresh_failure is not None:
            try:
                self._on_refresh_failure(name, code)
            except Exception:  # counting must never break the refresh loop
                log.debug("refresh failure callback failed", exc_info=True)

    def _compile_later(self, name: str, model: LoadedModel) -> None:
        """Queue an opted-in model for compilation (never blocks; see shared/models/compiled/compiler.py)."""
        compiler = self.compiler
        if compiler is not None and model.compiled is None and compiler.wants(name, model.info.path):
            compiler.submit(name, model, lambda m: self._is_current(name, m))

    def _is_current(self, name: str, model: LoadedModel) -> bool:
        with self._lock:
            entry = self._entries.get(name)
            return entry is not None and entry.model is model

    def _evict(self, keep: str) -> None:
        # Caller holds self._lock. Compiled code counts towards the bound too.
        total = sum(e.model.info.size_bytes + e.model.compiled_bytes for e in self._entries.values())
        for victim in list(self._entries):
            if total <= self._max_cache_bytes:
                break
            if victim == keep:
                continue
            model = self._entries.pop(victim).model
            total -= model.info.size_bytes + model.compiled_bytes
            model.release_compiled()
            self.stats.evictions += 1
            log.info("model %s evicted from the cache (memory bound)", victim)

    def _refresh_pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scorefn-refresh")
        return self._executor
