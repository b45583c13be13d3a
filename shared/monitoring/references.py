"""Each model version's bins: those of its reference profile when one was uploaded for this
very model file, else those of the model alone (the reference is read again every
``retry_seconds``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.models.model import ModelInfo
from shared.monitoring.binning import Binning, model_binning, with_training_codes
from shared.monitoring.blobs import Reference, read_reference

log = logging.getLogger("scorefn.monitor")


def reference_for(models: Any, model_path: str, sha256: str, num_features: int, *,
                  raise_storage_errors: bool = False) -> tuple[Reference | None, str]:
    """The reference profile of the model file at ``model_path`` with digest ``sha256``, or
    ``None`` and why not. A storage failure raises with ``raise_storage_errors``; a damaged
    profile never does."""
    from azure.core.exceptions import AzureError

    try:
        reference = read_reference(models, model_path)
    except AzureError:
        if raise_storage_errors:
            raise
        return None, "its reference profile could not be read (storage failed)"
    except Exception as exc:  # damaged: the model's own ranges still serve
        return None, f"its reference profile could not be read ({type(exc).__name__})"
    if reference is None:
        return None, "no reference profile was uploaded for it"
    if reference.model_sha256 != sha256:
        return None, "its reference profile was made for another version of the model file"
    if len(reference.binning.features) != num_features:
        return None, "its reference profile has another number of features"
    return reference, ""


class Binnings:
    """Bins per model version, from ``models`` (the models container; made on first use)."""

    def __init__(self, models_factory: Callable[[], Any], *, retry_seconds: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._models_factory = models_factory
        self._models: Any = None
        self.retry_seconds = retry_seconds
        self.clock = clock
        self._cache: dict[tuple[str, str], tuple[Binning, float]] = {}
        self._lock = threading.Lock()

    def get(self, info: ModelInfo) -> Binning:
        key = (info.path, info.sha256)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and self.clock() < cached[1]:
            return cached[0]
        binning, retry_at = self._resolve(info, cached[0] if cached is not None else None)
        with self._lock:
            self._cache[key] = (binning, retry_at)
            if len(self._cache) > 1024:  # model versions come and go; never grow without end
                self._cache.pop(next(iter(self._cache)))
        return binning

    def _resolve(self, info: ModelInfo, last: Binning | None) -> tuple[Binning, float]:
        try:
            if self._models is None:
                self._models = self._models_factory()
            reference, why = reference_for(self._models, info.path, info.sha256,
                                           info.num_features, raise_storage_errors=True)
        except Exception as exc:
            # Storage failed: keep counting under the bins known (switching bins would split
            # the counts), and look again soon.
            log.info("monitoring %s@%s: its reference could not be read (%s)", info.name,
                     info.version, type(exc).__name__)
            return last or model_binning(info), self.clock() + min(self.retry_seconds, 30.0)
        if reference is not None:
            # Looked for again too: a reference uploaded anew (other rows) takes over.
            return (with_training_codes(reference.binning, info),
                    self.clock() + self.retry_seconds)
        log.info("monitoring %s@%s with the model's training ranges: %s", info.name,
                 info.version, why)
        return model_binning(info), self.clock() + self.retry_seconds
