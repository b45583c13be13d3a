"""What the service tells about itself: readiness, V2 model readiness and metadata, and the
endpoints with their loaded models."""

from __future__ import annotations

import threading
import time
from typing import Any

from shared.errors import ModelUnavailable, ScoreError
from shared.models.latency_figures import read_latency_figures
from shared.models.model import ModelInfo
from shared.models.schema import FeatureSchema
from shared.models.store import ModelStore
from shared.payloads.v2_binary import OUTPUT_NAME
from shared.router import RouterHolder

READINESS_CACHE_SECONDS = 5.0
_CATEGORY_DATATYPES = {"str": "BYTES", "int": "INT64", "float": "FP64", "bool": "BOOL"}


class ServiceStatus:
    """Answers the status routes from the model store and the router."""

    def __init__(self, store: ModelStore, routing: RouterHolder | None) -> None:
        self.store = store
        self.routing = routing
        self._readiness: tuple[float, dict[str, Any]] | None = None
        self._readiness_lock = threading.Lock()

    def readiness(self) -> dict[str, Any]:
        """Ready when model storage answers, or when models are loaded to serve meanwhile."""
        cached = self._readiness
        if cached is not None and time.monotonic() - cached[0] < READINESS_CACHE_SECONDS:
            return cached[1]
        # One probe asks storage at a time; the others answer with the last report meanwhile
        # (or, before there is one, wait for it): probes must not hold every function thread.
        if not self._readiness_lock.acquire(blocking=cached is None):
            assert cached is not None
            return cached[1]
        try:
            cached = self._readiness
            if cached is not None and time.monotonic() - cached[0] < READINESS_CACHE_SECONDS:
                return cached[1]  # made while this probe waited
            try:
                self.store.source.ping()
                storage = "ok"
            except ScoreError as exc:
                storage = exc.code
            # The probe is anonymous: a count, not the models' names and versions.
            loaded = len(self.store.loaded())
            report = {"ready": storage == "ok" or loaded > 0, "storage": storage,
                      "models_loaded": loaded}
            self._readiness = (time.monotonic(), report)
            return report
        finally:
            self._readiness_lock.release()

    def model_ready(self, endpoint: str) -> dict[str, Any]:
        """V2 model readiness: ``{"name", "ready": true}`` once every model the endpoint may
        route to is loaded (loading them now if need be); a model that cannot load raises its
        typed error (404 ``model_not_found``, 422 ``invalid_model``, 503 ``model_unavailable``),
        which the protocol reads as not ready."""
        config = self.routing.current().endpoint(endpoint) if self.routing is not None else None
        names = [v.model for v in config.variants] if config is not None else [endpoint]
        for name in names:
            self.store.get(name)
        # Loading one may have evicted another (MODEL_CACHE_MAX_MB): ready only if all stayed.
        evicted = [n for n in names if not self.store.is_cached(n)]
        if evicted:
            raise ModelUnavailable(f"the models of {endpoint!r} do not fit the model cache "
                                   f"together (MODEL_CACHE_MAX_MB): {evicted[0]!r} was evicted")
        return {"name": endpoint, "ready": True}

    def metadata(self, endpoint: str) -> dict[str, Any]:
        """V2 model metadata: inputs (both accepted shapes) and outputs."""
        config = self.routing.current().endpoint(endpoint) if self.routing is not None else None
        # The first variant's model: metadata must be stable, not a random pick.
        model, _ = self.store.get(config.variants[0].model if config is not None else endpoint)
        info = model.info
        outputs_shape = [-1] if info.num_outputs == 1 else [-1, info.num_outputs]
        matrix_params: dict[str, Any] = {"feature_names": list(info.feature_names)}
        categorical = categorical_features(info)
        if categorical:
            # In the matrix a categorical feature holds its code: its category's position.
            matrix_params["category_codes"] = categorical
        return {
            "name": endpoint,
            "versions": [info.version],
            "platform": "lightgbm",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, info.num_features],
                        "parameters": matrix_params}]
                      + [feature_input(info.schema, j) for j in range(len(info.schema.names))],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP64", "shape": outputs_shape}],
            "parameters": {"objective": info.objective, "num_classes": info.num_classes,
                           "blob": info.path, "backend": model.backend, **model_notes(info)},
        }

    def endpoints(self) -> dict[str, Any]:
        """Configured endpoints with their variants and weights, and the loaded model versions."""
        routing = (self.routing.describe() if self.routing is not None
                   else {"mode": "single-model", "endpoints": []})
        return {**routing, "loaded_models": [loaded_model(info) for info in self.store.loaded()]}


def loaded_model(info: ModelInfo) -> dict[str, Any]:
    """A loaded model as ``GET /api/endpoints`` lists it."""
    entry: dict[str, Any] = {
        "name": info.name, "version": info.version, "blob": info.path,
        "last_modified": info.last_modified.isoformat() if info.last_modified else None}
    categorical = categorical_features(info)
    if categorical:
        entry["categorical_features"] = categorical
    return {**entry, **model_notes(info)}


def feature_input(schema: FeatureSchema, j: int) -> dict[str, Any]:
    """A feature's own V2 input: category values for a categorical feature."""
    name = schema.names[j]
    cats = schema.by_index.get(j)
    if cats is None:
        return {"name": name, "datatype": "FP64", "shape": [-1]}
    return {"name": name, "datatype": _CATEGORY_DATATYPES[cats.kind], "shape": [-1],
            "parameters": {"categories": list(cats.values)}}


def categorical_features(info: ModelInfo) -> dict[str, Any]:
    """Each categorical feature's categories, in code order."""
    return {c.name: c.describe() for c in info.schema.categorical}


def model_notes(info: ModelInfo) -> dict[str, Any]:
    """What a caller should know beyond the inputs: names as trained, categories that could
    not be placed, the pre-deployment latency figures stored with the model."""
    notes: dict[str, Any] = {}
    if any("_" in name for name in info.feature_names):
        notes["feature_name_rule"] = ("a name may also be sent as the model was trained with "
                                      "it: LightGBM stored each space as '_'")
    if info.schema.mapping == "unknown":
        notes["categories"] = f"send codes: {info.schema.mapping_problem}"
    figures = read_latency_figures(info.blob_metadata)
    if figures is not None:
        notes["latency_check"] = figures.to_dict()
    return notes
