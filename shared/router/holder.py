"""Keeps the router of the current good config and swaps in new ones without a restart.

Rules (the same spirit as the model store's):

- The first :meth:`RouterHolder.current` loads the config (inline configs and "no
  config" are ready at construction and never reload).
- A blob config is revalidated by ETag at most every ``refresh_seconds``, in a background
  thread; requests keep routing with the current config meanwhile.
- A new config replaces the current one only when it parses, validates and passes
  ``check_models`` (when given); the swap is one reference assignment, so a request sees
  the old router or the new one, never a mix.
- A new config that fails never replaces a working one: one warning line (error code
  and the path of the bad field, never the document), the working config stays, and
  the next interval tries again. A config blob deleted while a config is working is
  treated the same way (kept, with a warning): to turn routing off, upload
  ``{"endpoints": {}}``.

First load of a blob config:

- no blob: no config, single-model mode (a blob uploaded later is picked up);
- a blob that is invalid, or whose models fail ``check_models`` with a permanent error:
  :class:`InvalidRouterConfig` (500, ``invalid_router_config``) for every request,
  retried at most every ``retry_seconds``. Silently routing everything to same-name
  models would hide the fault and send traffic where nobody meant it to go;
- storage unreachable: :class:`ModelUnavailable` (503), retried the same way.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from shared.errors import InvalidModel, InvalidRouterConfig, ScoreError
from shared.router.config import RouterConfig
from shared.router.fields import endpoint_path
from shared.router.router import Router
from shared.router.source import ConfigVersion, RouterConfigSource

log = logging.getLogger("scorefn.router")

CheckModels = Callable[[RouterConfig], None]


@dataclass
class HolderStats:
    """Counters for tests and telemetry."""

    loads: int = 0
    not_modified: int = 0
    swaps: int = 0
    rejected: int = 0
    failed_refreshes: int = 0


class RouterHolder:
    """The current :class:`Router`; see the module docstring for the reload rules.

    ``check_models(config)`` should raise a :class:`ScoreError` when some model of
    ``config`` cannot be loaded (see :func:`models_loadable`).
    """

    def __init__(self, source: RouterConfigSource, *, refresh_seconds: float = 30.0,
                 check_models: CheckModels | None = None, retry_seconds: float = 5.0,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self._refresh_seconds = refresh_seconds
        self._check_models = check_models
        self._retry_seconds = retry_seconds
        self._rng = rng
        self._clock = clock
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._current: tuple[Router, str | None] | None = None  # (router, etag), swapped whole
        self._next_check = 0.0
        self._refreshing = False
        self._failure: ScoreError | None = None
        self._retry_at = 0.0
        self._executor: ThreadPoolExecutor | None = None
        self.stats = HolderStats()
        if not source.watched:
            version = source.fetch()
            assert version is not None  # None only answers an etag: "unchanged"
            if version.config is None or check_models is None:
                self._install(version)
            # else an inline config is checked (its models loaded) on first use, as a blob's

    @property
    def version(self) -> str | None:
        """The ETag of the config in use (``inline`` for an app setting, ``None`` for none)."""
        current = self._current
        return current[1] if current is not None else None

    def loaded(self) -> Router | None:
        """The router in use, or ``None`` while the first config is not loaded yet (never
        reads storage; :meth:`current` may)."""
        current = self._current
        return current[0] if current is not None else None

    def current(self) -> Router:
        """The router to use for one request; starts a background revalidation when due."""
        current = self._current
        if current is None:
            return self._first_load()
        if self.source.watched and self._clock() >= self._next_check and not self._refreshing:
            with self._lock:
                start = not self._refreshing
                self._refreshing = True
            if start:
                self._pool().submit(self._refresh)
        return current[0]

    def refresh(self) -> bool:
        """Revalidate now, in this thread; True when a new config was swapped in."""
        if self._current is None:
            self._first_load()
            return False
        with self._lock:
            if self._refreshing or not self.source.watched:
                return False
            self._refreshing = True
        return self._refresh()

    def describe(self) -> dict[str, Any]:
        """The routing table plus where the config came from and its version."""
        self.current()
        current = self._current
        assert current is not None  # set by current()
        router, etag = current
        report = router.describe()
        report["config"] = {"source": self.source.origin, "version": etag}
        return report

    def close(self) -> None:
        """Stop background revalidation (waits for one in progress)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- internals -------------------------------------------------------------------

    def _first_load(self) -> Router:
        with self._load_lock:
            if self._current is not None:
                return self._current[0]
            now = self._clock()
            failure = self._failure
            if failure is not None and now < self._retry_at:
                raise type(failure)(failure.message, code=failure.code)
            try:
                version = self.source.fetch()
                assert version is not None
                if version.config is not None:
                    self._check(version.config)
            except ScoreError as exc:
                self._failure, self._retry_at = exc, now + self._retry_seconds
                log.warning("router config from %s could not be loaded: %s (%s); retrying in %g s",
                            self.source.origin, exc.code, exc.message, self._retry_seconds)
                raise
            self._failure = None
            return self._install(version)

    def _install(self, version: ConfigVersion) -> Router:
        router = Router(version.config, rng=self._rng)
        self._current = (router, version.etag)
        self._next_check = self._clock() + self._refresh_seconds
        self.stats.loads += 1
        count = len(version.config.endpoints) if version.config is not None else 0
        log.info("router config from %s in use: version %s, %d endpoint(s)",
                 self.source.origin, version.etag, count)
        return router

    def _check(self, config: RouterConfig) -> None:
        """Run ``check_models``; a permanent model fault makes the config invalid."""
        if self._check_models is None:
            return
        try:
            self._check_models(config)
        except InvalidRouterConfig as exc:
            raise InvalidRouterConfig(f"{self.source.origin}: {exc.message}") from None
        except ScoreError as exc:
            if not exc.permanent:
                raise  # storage trouble: a retry may pass
            raise InvalidRouterConfig(f"{self.source.origin}: a model of the config cannot be "
                                      f"loaded: {exc.code}: {exc.message}") from None

    def _refresh(self) -> bool:
        swapped = False
        assert self._current is not None
        working, etag = self._current
        try:
            version = self.source.fetch(etag)
            if version is None:
                self.stats.not_modified += 1
            elif version.config is None:
                if working.config is not None:
                    self.stats.failed_refreshes += 1
                    log.warning("router config %s is missing; keeping version %s (to turn routing "
                                "off, upload {\"endpoints\": {}})", self.source.origin, etag)
            else:
                self._check(version.config)
                self._current = (Router(version.config, rng=self._rng), version.etag)  # atomic swap
                self.stats.swaps += 1
                swapped = True
                log.info("router config from %s updated to version %s, %d endpoint(s)",
                         self.source.origin, version.etag, len(version.config.endpoints))
        except InvalidRouterConfig as exc:
            self.stats.rejected += 1
            log.warning("router config update rejected: %s (%s); keeping version %s",
                        exc.code, exc.message, etag)
        except ScoreError as exc:
            self.stats.failed_refreshes += 1
            log.warning("router config refresh from %s failed: %s (%s); keeping version %s",
                        self.source.origin, exc.code, exc.message, etag)
        except Exception:
            self.stats.failed_refreshes += 1
            log.exception("router config refresh from %s failed; keeping version %s",
                          self.source.origin, etag)
        finally:
            with self._lock:
                self._refreshing = False
                self._next_check = self._clock() + self._refresh_seconds
        return swapped

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorefn-router")
            return self._executor


def feature_parity(routing: RouterHolder, store: Any) -> Callable[[str, Any], None]:
    """A ``ModelStore.check_swap``: a new version of a model that an endpoint routes to must
    take the same features, in the same order, as the endpoint's other variants (the rule a
    config is checked by); otherwise it raises and the store keeps the old version serving,
    so positional ``rows`` never go to a model that reads them in another order."""
    def check(name: str, info: Any) -> None:
        router = routing.loaded()
        if router is None or router.config is None:
            return
        for endpoint, ep in router.config.endpoints.items():
            models = [v.model for v in ep.variants]
            if name not in models:
                continue
            for other in models:
                if other == name or not store.is_cached(other):
                    continue
                theirs = store.get(other)[0].info.schema  # cached: no storage access
                if theirs != info.schema:
                    raise InvalidModel(
                        f"the new version of {name!r} takes features that differ from those of "
                        f"{other!r} (names, order or categories), another variant of endpoint "
                        f"{endpoint!r}; "
                        f"to change features, name a new model blob in the router config",
                        code="feature_mismatch")
    return check


def models_loadable(store: Any) -> CheckModels:
    """A ``check_models`` over a :class:`~shared.models.store.ModelStore`: every model of a
    config must load (which also warms the cache before the config is used), and all
    variants of an endpoint must take the same features in the same order, since callers
    send one payload whichever variant scores it (with ``rows``, a different order would
    score silently wrong). Shadows only have to load."""
    def check(config: RouterConfig) -> None:
        for name, ep in config.endpoints.items():
            first = store.get(ep.variants[0].model)[0].info.schema
            for i, variant in enumerate(ep.variants[1:], start=1):
                features = store.get(variant.model)[0].info.schema
                if features != first:
                    raise InvalidRouterConfig(
                        f"{endpoint_path(name)}.variants[{i}].model: model {variant.model!r} takes features "
                        f"that differ from those of {ep.variants[0].model!r} (names, order or "
                        f"categories); all variants of an endpoint must take the same features")
            for shadow in ep.shadow:
                store.get(shadow.model)
    return check
