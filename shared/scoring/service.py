"""The one scoring entry point every transport calls: resolve -> load -> parse -> predict.

HTTP routes and queue jobs differ only in how they parse their trigger and shape the
result; everything between is here. Built lazily from the app settings on first use.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

import numpy as np

from shared.errors import OverrideNotAllowed, PayloadTooLarge, ScoreError, UnsupportedMediaType
from shared.models.latency_figures import read_latency_figures
from shared.models.model import LoadedModel, ModelInfo
from shared.models.store import ModelStore, NotCached
from shared.payloads import ScoringInput, decode_json, parse_score_body, parse_v2
from shared.payloads.common import DEFAULT_OPTIONS
from shared.payloads.rows import read_rows_body
from shared.payloads.v2 import OUTPUT_NAME, read_v2_body
from shared.ablog.predictions import PredictionLog, build_logs, output_kind
from shared.router import (OVERRIDE_HEADER, EndpointConfig, Route, RouterHolder, ShadowRunner, header,
                     sticky_key)
from shared.scoring.predict import predict_with_backend
from shared.settings import Settings, resolve_connection
from shared.telemetry.core import NO_TRACE, RequestTrace, Telemetry, get_telemetry

log = logging.getLogger("scorefn.scoring")

Format = Literal["score", "v2"]
_NONE: frozenset[str] = frozenset()
# Bodies up to this size may be scored on an event loop when warm: ~15 rows of 100 features,
# ~1 ms of CPU at most; larger ones go to a thread so the loop keeps serving others.
INLINE_MAX_BYTES = 32 * 1024
READINESS_CACHE_SECONDS = 5.0


@dataclass(slots=True)
class ScoreResult:
    """What a scoring produced, for the transport to shape."""

    predictions: np.ndarray
    model: ModelInfo
    request: ScoringInput
    cold: bool
    predict_seconds: float
    body: bytes | None = None
    route: Route | None = None
    request_id: str | None = None
    logged: bool = False  # in the prediction log (its shadows are logged too)
    log_features: bool = False  # ... with the request's features
    backend: str = "lightgbm"  # what predicted: "lightgbm" or "compiled" (compiled trees)
    parse_seconds: float = 0.0  # the body's rows to a matrix (after JSON decoding)

    @property
    def variant(self) -> str:
        return self.route.variant if self.route is not None else "default"


def check_content_type(content_type: str | None) -> None:
    """Accept JSON bodies (or no declared type); anything else is a 415."""
    if not content_type or content_type == "application/json":
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(f"content type {media[:64]!r} is not supported; send application/json")


def _fits(direct: tuple[ScoringInput, str | None], info: ModelInfo) -> bool:
    """Whether a directly read input is the model's matrix: its width, and for V2 a tensor not
    named after a feature (that one tensor would be a column, see ``parse_v2``)."""
    request, tensor = direct
    return request.X.shape[1] == info.num_features and (
        tensor is None or info.schema.resolve(tensor) is None)


@functools.lru_cache(maxsize=256)
def _single_route(endpoint: str) -> Route:
    return Route(endpoint, "default", endpoint, (), None, "single")


class ScoringService:
    """Scores requests against models from a :class:`ModelStore`."""

    def __init__(self, settings: Settings, store: ModelStore,
                 telemetry: Telemetry | None = None, routing: RouterHolder | None = None,
                 shadows: ShadowRunner | None = None,
                 prediction_log: PredictionLog | None = None, outcome_log: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.telemetry = telemetry or get_telemetry()
        self.routing = routing
        self.shadows = shadows
        self.prediction_log = prediction_log
        self.outcome_log = outcome_log
        self._readiness: tuple[float, dict[str, Any]] | None = None
        self._readiness_lock = threading.Lock()

    def can_score_inline(self, endpoint: str, body_bytes: int) -> bool:
        """Whether scoring this request needs neither storage nor much CPU: the body is at
        most :data:`INLINE_MAX_BYTES`, the router config is loaded and every model the
        endpoint may route to is cached. Async transports score such requests on their
        event loop (a hop to a worker thread costs more than a warm single-row scoring) and
        hand the rest to a thread."""
        if body_bytes > INLINE_MAX_BYTES:
            return False
        if self.routing is None:
            return self.store.is_cached(endpoint)
        router = self.routing.loaded()
        if router is None:
            return False
        config = router.endpoint(endpoint)
        if config is None:
            return self.store.is_cached(endpoint)
        return all(self.store.is_cached(v.model) for v in config.variants)

    def route(self, endpoint: str, *, key: str | None = None,
              override: str | None = None) -> Route:
        """Which variant (and shadows) serve this request of ``endpoint``."""
        if self.routing is None:
            return Route(endpoint, "default", endpoint, (), key, "single")
        return self.routing.current().route(endpoint, key=key, override=override)

    def sticky_body_field(self, endpoint: str) -> str | None:
        if self.routing is None:
            return None
        return self.routing.current().sticky_body_field(endpoint)

    def model(self, endpoint: str, key: str | None = None) -> tuple[LoadedModel, bool]:
        """The model serving ``endpoint`` for ``key`` (a queue job routes by its key or id)."""
        return self.store.get(self.route(endpoint, key=key).model)

    def resolve(self, endpoint: str, key: str | None = None) -> tuple[Route, LoadedModel, bool]:
        """Route ``endpoint`` for ``key`` and load the chosen model: (route, model, cold)."""
        route = self.route(endpoint, key=key)
        model, cold = self.store.get(route.model)
        return route, model, cold

    def score(self, endpoint: str, body: bytes, *, fmt: Format = "score",
              content_type: str | None = None, trigger: str = "http",
              carrier: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
              query: Mapping[str, str] | None = None,
              encode: Callable[[ScoreResult], bytes] | None = None,
              request_id: str | None = None,
              binary_header_length: int | None = None) -> ScoreResult:
        """Score a JSON request body for ``endpoint``: check, route, load, parse, predict,
        encode (with the transport's ``encode``), record telemetry; then hand shadows a copy.

        ``headers``/``query`` carry the sticky key and the variant override, ``carrier`` the
        caller's trace context (``traceparent``), ``request_id`` the id the prediction log
        records (the transport's ``x-request-id``). ``binary_header_length``: a V2 body in
        the binary tensor data extension, whose JSON header is that many bytes. Raises a :class:`ScoreError` subclass for
        anything the caller got wrong or storage could not do; the failure is recorded and
        logged once, with its code.
        """
        start = time.perf_counter()
        tel = self.telemetry
        attrs: dict[str, Any] = {"trigger": trigger, "endpoint": endpoint}
        with tel.request_span("scorefn.score", carrier, attrs) as request_trace:
            try:
                if binary_header_length is None:
                    self.check_body(body, content_type)
                    direct = self._read_direct(body, fmt)
                    doc = decode_json(body) if direct is None else None
                else:
                    from shared.payloads.v2_binary import decode_binary_request

                    self.check_body(body, None)  # the extension's body is not JSON
                    direct, doc = None, decode_binary_request(body, binary_header_length)
                decoded = time.perf_counter()
                # A directly read body's only field besides its format's own (reserved, never
                # a sticky key) is V2's "id", which a sticky key may name.
                route, config = self._route_request(
                    endpoint, doc if doc is not None else direct[0].fields, headers, query)
                attrs["variant"] = route.variant
                model, cold = self._get_model(route.model, attrs, request_trace)
                if direct is not None and _fits(direct, model.info):
                    result = self._predict_parsed(model, direct[0], cold)
                    result.route = route
                else:
                    if doc is None:  # e.g. the wrong width: the full parser says what is wrong
                        doc = decode_json(body)
                    sticky = config.sticky_body_field if config is not None else None
                    result = self.score_document(
                        model, doc, fmt=fmt, cold=cold, route=route,
                        extra_fields=frozenset((sticky,)) if sticky else _NONE)
                attrs["backend"] = result.backend
                scored = time.perf_counter()
                if encode is not None:
                    result.body = encode(result)
            except ScoreError as exc:
                self._record_failure(exc, attrs, request_trace, start, body)
                raise
            except NotCached:
                # Not a failure: the transport scores this request again in a thread.
                request_trace.set_attribute("scorefn.scored_again_in_thread", True)
                raise
            except Exception:
                # A bug, not the caller's fault: counted as internal_error so that it shows in
                # scorefn's own metrics too; the transport logs the traceback.
                self._record_failure(ScoreError("internal error"), attrs, request_trace, start, body)
                raise
            attrs["outcome"] = "ok"
            end = time.perf_counter()
            elapsed_ms = (end - start) * 1000
            if request_trace is not NO_TRACE:
                request_trace.set_attributes(attrs)
                # Stage times as attributes of the one span: child spans cost ~30 us each.
                request_trace.set_attributes({
                    "scorefn.decode_ms": (decoded - start) * 1000,
                    "scorefn.parse_ms": result.parse_seconds * 1000,
                    "scorefn.predict_ms": result.predict_seconds * 1000,
                    "scorefn.serialize_ms": (end - scored) * 1000})
            tel.record(attrs, duration_ms=elapsed_ms, predict_ms=result.predict_seconds * 1000,
                       rows=result.request.X.shape[0])
        result.request_id = request_id
        if config is not None and config.log is not None and self.prediction_log is not None:
            self._log_prediction(result, config, trigger, elapsed_ms)
        if route.shadows and self.shadows is not None:
            for target in route.shadows:
                self.shadows.submit(self._run_shadow, target, doc, body, fmt, result, trigger)
        return result

    def _read_direct(self, body: bytes, fmt: Format) -> tuple[ScoringInput, str | None] | None:
        """The common bodies read without a Python object per value: ``{"rows": [[numbers]]}``,
        or a V2 request with one FP64 tensor (and the tensor's name); ``None`` for any other
        body, which is decoded whole."""
        limit = self.settings.max_rows_per_request
        if fmt == "v2":
            return read_v2_body(body, limit)
        X = read_rows_body(body, limit)
        return (ScoringInput(X, DEFAULT_OPTIONS), None) if X is not None else None

    def _route_request(self, endpoint: str, doc: dict[str, Any], headers: Mapping[str, str] | None,
                       query: Mapping[str, str] | None) -> tuple[Route, EndpointConfig | None]:
        """The route of a request, and the endpoint's config (``None``: not configured)."""
        if self.routing is None:
            if headers and header(headers, OVERRIDE_HEADER):
                # As for an endpoint a router config does not list: pinning a variant that
                # does not exist must not quietly get the default model.
                raise OverrideNotAllowed(f"endpoint {endpoint[:64]!r} does not allow choosing a "
                                         f"variant with {OVERRIDE_HEADER} (no router config)")
            return _single_route(endpoint), None
        router = self.routing.current()
        config = router.endpoint(endpoint)
        key = sticky_key(config, headers or {}, query or {}, doc) if config is not None else None
        override = header(headers, OVERRIDE_HEADER) if headers else None
        return router.route(endpoint, key=key, override=override), config

    def log_prediction(self, result: ScoreResult, *, trigger: str, latency_ms: float,
                       request_id: str | None) -> None:
        """Offer a scoring made outside :meth:`score` (an inline queue job, routed as a whole)
        to the prediction log, when its endpoint's config has a ``log`` block. Never raises."""
        if self.routing is None or self.prediction_log is None or result.route is None:
            return
        config = self.routing.current().endpoint(result.route.endpoint)
        if config is not None and config.log is not None:
            result.request_id = request_id
            self._log_prediction(result, config, trigger, latency_ms)

    def _log_prediction(self, result: ScoreResult, config: EndpointConfig, trigger: str,
                        latency_ms: float) -> None:
        """Hand the prediction log a record (the endpoint's config has a ``log`` block; the
        request may be sampled out); never raises, never waits on storage."""
        try:
            route = result.route
            log_config = config.log
            if not self.prediction_log.wants(log_config, route.endpoint, route.key):
                return
            if result.request_id is None:
                result.request_id = uuid.uuid4().hex
            index = None
            for i, v in enumerate(config.variants):
                if v.name == route.variant:
                    index = i
                    break
            result.logged = self.prediction_log.record(
                endpoint=route.endpoint, request_id=result.request_id, key=route.key,
                trigger=trigger, variant=route.variant, variant_index=index, model=result.model,
                predictions=result.predictions, latency_ms=latency_ms,
                output=output_kind(result.request.options), rows=result.request.X.shape[0],
                features=result.request.X if log_config.features else None,
                pinned=route.how == "override")
            result.log_features = log_config.features
        except Exception:  # the log must never fail a request
            log.exception("prediction log: could not record a prediction")

    def _run_shadow(self, target: Any, doc: dict[str, Any] | None, body: bytes, fmt: Format,
                    primary: ScoreResult, trigger: str) -> None:
        """Score a shadow variant on a copy of the request, off the request path; its
        latency and its disagreement with the answer are recorded, its failure only counted.
        ``doc`` is the decoded body, or ``None`` when the request skipped decoding."""
        start = time.perf_counter()
        attrs: dict[str, Any] = {"trigger": trigger, "endpoint": primary.route.endpoint,
                                 "variant": target.name, "shadow": True}
        try:
            model, cold = self.store.get(target.model)
            attrs.update({"model.name": model.info.name, "model.version": model.info.version,
                          "cold": cold})
            if model.info.schema == primary.model.schema:
                # Same features: reuse the answer's matrix. Parsing again would hold the GIL
                # and slow the request threads; predict releases it.
                result = self._predict_parsed(model, primary.request, cold)
            else:  # the route: the sticky key's body field is allowed here as for the answer
                result = self.score_document(model, doc if doc is not None else decode_json(body),
                                             fmt=fmt, cold=cold, route=primary.route)
        except Exception as exc:  # a bug or a native failure counts as score() counts it
            attrs["outcome"] = exc.code if isinstance(exc, ScoreError) else "internal_error"
            self.telemetry.record(attrs, duration_ms=(time.perf_counter() - start) * 1000)
            raise
        attrs["outcome"] = "ok"
        self.telemetry.record(attrs, duration_ms=(time.perf_counter() - start) * 1000,
                              predict_ms=result.predict_seconds * 1000,
                              rows=result.request.X.shape[0])
        if result.predictions.shape == primary.predictions.shape:
            diff = float(np.mean(np.abs(result.predictions - primary.predictions)))
            self.telemetry.record_shadow_difference(diff, attrs)
        if primary.logged and self.prediction_log is not None:
            self.prediction_log.record(
                endpoint=primary.route.endpoint, request_id=primary.request_id,
                key=primary.route.key, trigger=trigger, variant=target.name, model=result.model,
                predictions=result.predictions, latency_ms=(time.perf_counter() - start) * 1000,
                output=output_kind(result.request.options), rows=result.request.X.shape[0],
                features=result.request.X if primary.log_features else None, shadow=True)

    def _check_response_size(self, info: ModelInfo, request: ScoringInput) -> None:
        values = request.X.shape[0] * info.num_outputs
        if request.options.pred_contrib:
            values *= info.num_features + 1
        if values > self.settings.max_response_values:
            raise PayloadTooLarge(f"the response would hold {values:,} values, over the limit of "
                                  f"{self.settings.max_response_values:,} (MAX_RESPONSE_VALUES): "
                                  f"send fewer rows", code="response_too_large")

    def _predict_parsed(self, model: LoadedModel, request: ScoringInput, cold: bool) -> ScoreResult:
        self._check_response_size(model.info, request)
        start = time.perf_counter()
        predictions, backend = predict_with_backend(
            model, request, parallel_min_rows=self.settings.predict_parallel_min_rows,
            max_threads=self.settings.predict_max_threads)
        return ScoreResult(predictions, model.info, request, cold, time.perf_counter() - start,
                           backend=backend)

    def _get_model(self, name: str, attrs: dict[str, Any],
                   request_trace: RequestTrace = NO_TRACE) -> tuple[LoadedModel, bool]:
        start = time.perf_counter()
        model, cold = self.store.get(name)
        info = model.info
        attrs["model.name"] = info.name
        attrs["model.version"] = info.version
        attrs["cold"] = cold
        if cold:
            load_ms = (time.perf_counter() - start) * 1000
            started_ns = time.time_ns() - int(load_ms * 1e6)
            self.telemetry.record_load(load_ms, {"model.name": model.info.name,
                                                 "model.version": model.info.version})
            # The load span is made after the fact: warm requests should not pay for one.
            request_trace.child_after_the_fact("model.load", started_ns,
                                               {"model.name": model.info.name})
        return model, cold

    def _record_failure(self, exc: ScoreError, attrs: dict[str, Any], request_trace: RequestTrace,
                        start: float, body: bytes) -> None:
        if "model.name" not in attrs:
            # Names of models that do not exist must not become metric dimensions.
            attrs["endpoint"] = "(unresolved)"
        attrs["outcome"] = exc.code
        request_trace.mark_error(exc.code)
        self.telemetry.record(attrs, duration_ms=(time.perf_counter() - start) * 1000)
        extra = {"error_code": exc.code, "status": exc.status, "trigger": attrs["trigger"],
                 "endpoint": attrs["endpoint"]}
        if self.telemetry.log_payloads:
            extra["payload"] = body[:2048].decode("utf-8", "replace")
        log.log(logging.WARNING if exc.status >= 500 else logging.INFO,
                "scoring failed: %s (%d) on %s", exc.code, exc.status, attrs["endpoint"], extra=extra)

    def record_outcomes(self, endpoint: str, body: bytes, *, content_type: str | None = None) -> int:
        """Validate an outcomes body (see :mod:`shared.ablog.outcomes`) for ``endpoint`` and append
        it to the outcome log; returns how many were stored. Raises typed errors: 4xx for a
        bad payload, 503 ``outcome_log_unavailable`` when storage cannot be written."""
        from shared.errors import NotEnabled
        from shared.ablog.outcomes import check_endpoint, parse_outcomes

        try:
            self.check_body(body, content_type)
            check_endpoint(endpoint)
            now = time.time()
            outcomes = parse_outcomes(body, now=now)
            if self.outcome_log is None:
                raise NotEnabled("the outcome log is not configured in this process")
            return self.outcome_log.append(endpoint, outcomes, received=now)
        except ScoreError as exc:
            log.log(logging.WARNING if exc.status >= 500 else logging.INFO,
                    "outcomes failed: %s (%d)", exc.code, exc.status,
                    extra={"error_code": exc.code, "status": exc.status, "route": "outcomes"})
            raise

    def check_body(self, body: bytes, content_type: str | None) -> None:
        check_content_type(content_type)
        if len(body) > self.settings.max_request_bytes:
            raise PayloadTooLarge(f"body of {len(body)} bytes is over the limit of "
                                  f"{self.settings.max_request_bytes} bytes")

    def score_document(self, model: LoadedModel, doc: dict[str, Any], *, fmt: Format,
                       cold: bool = False, route: Route | None = None,
                       extra_fields: frozenset[str] | None = None) -> ScoreResult:
        """Parse a decoded body for ``model`` and predict it. ``extra_fields``: top-level
        fields the body may carry besides the format's own (the sticky key's field); by
        default the field ``route``'s endpoint is configured with."""
        schema = model.info.schema
        limit = self.settings.max_rows_per_request
        start = time.perf_counter()
        if fmt == "v2":
            request = parse_v2(doc, schema, limit)
        else:
            if extra_fields is None:
                sticky = self.sticky_body_field(route.endpoint) if route is not None else None
                extra_fields = frozenset((sticky,)) if sticky else _NONE
            request = parse_score_body(doc, schema, limit, extra_fields=extra_fields)
        parsed = time.perf_counter()
        self._check_response_size(model.info, request)
        predictions, backend = predict_with_backend(
            model, request, parallel_min_rows=self.settings.predict_parallel_min_rows,
            max_threads=self.settings.predict_max_threads)
        return ScoreResult(predictions, model.info, request, cold, time.perf_counter() - parsed,
                           route=route, backend=backend, parse_seconds=parsed - start)

    def endpoints(self) -> dict[str, Any]:
        """Configured endpoints with their variants and weights, and the loaded model versions."""
        routing = (self.routing.describe() if self.routing is not None
                   else {"mode": "single-model", "endpoints": []})
        return {**routing, "loaded_models": [_loaded_model(info) for info in self.store.loaded()]}

    def close(self) -> None:
        """Stop background work: model refreshes, config refreshes, shadows; then write
        what the prediction log still buffers."""
        self.store.close()
        if self.routing is not None:
            self.routing.close()
        if self.shadows is not None:
            self.shadows.close()
        if self.prediction_log is not None:
            self.prediction_log.close()

    def readiness(self) -> dict[str, Any]:
        """Ready when model storage answers, or when models are loaded to serve meanwhile."""
        cached = self._readiness
        if cached is not None and time.monotonic() - cached[0] < READINESS_CACHE_SECONDS:
            return cached[1]
        # One probe asks storage at a time; the others answer with the last report meanwhile
        # (or, before there is one, wait for it): probes must not hold every function thread.
        if not self._readiness_lock.acquire(blocking=cached is None):
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
            from shared.errors import ModelUnavailable

            raise ModelUnavailable(f"the models of {endpoint!r} do not fit the model cache "
                                   f"together (MODEL_CACHE_MAX_MB): {evicted[0]!r} was evicted")
        return {"name": endpoint, "ready": True}

    def metadata(self, endpoint: str) -> dict[str, Any]:
        """V2 model metadata: inputs (both accepted shapes) and outputs."""
        config = self.routing.current().endpoint(endpoint) if self.routing is not None else None
        # The first variant's model: metadata must be stable, not a random pick.
        model, _ = self.store.get(config.variants[0].model if config is not None else endpoint)
        info = model.info
        schema = info.schema
        outputs_shape = [-1] if info.num_outputs == 1 else [-1, info.num_outputs]
        matrix_params: dict[str, Any] = {"feature_names": list(info.feature_names)}
        categorical = _categorical_features(info)
        if categorical:
            # In the matrix a categorical feature holds its code: its category's position.
            matrix_params["category_codes"] = categorical
        return {
            "name": endpoint,
            "versions": [info.version],
            "platform": "lightgbm",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, info.num_features],
                        "parameters": matrix_params}]
                      + [_feature_input(schema, j, name) for j, name in enumerate(schema.names)],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP64", "shape": outputs_shape}],
            "parameters": {"objective": info.objective, "num_classes": info.num_classes,
                           "blob": info.path, **_model_notes(info)},
        }


def _loaded_model(info: ModelInfo) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": info.name, "version": info.version, "blob": info.path,
        "last_modified": info.last_modified.isoformat() if info.last_modified else None}
    categorical = _categorical_features(info)
    if categorical:
        entry["categorical_features"] = categorical
    return {**entry, **_model_notes(info)}


_CATEGORY_DATATYPES = {"str": "BYTES", "int": "INT64", "float": "FP64", "bool": "BOOL"}


def _feature_input(schema: Any, j: int, name: str) -> dict[str, Any]:
    """A feature's own V2 input: category values for a categorical feature."""
    cats = schema.by_index.get(j)
    if cats is None:
        return {"name": name, "datatype": "FP64", "shape": [-1]}
    return {"name": name, "datatype": _CATEGORY_DATATYPES[cats.kind], "shape": [-1],
            "parameters": {"categories": list(cats.values)}}


def _categorical_features(info: ModelInfo) -> dict[str, Any]:
    """Each categorical feature's categories, in code order."""
    return {c.name: c.describe() for c in info.schema.categorical}


def _model_notes(info: ModelInfo) -> dict[str, Any]:
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


_service: ScoringService | None = None
_service_lock = threading.Lock()


def build_service(settings: Settings) -> ScoringService:
    """A service reading models from the blob container the settings name."""
    from shared.models.blob_source import BlobSource
    from shared.storage import blob_service

    conn = resolve_connection(settings.storage_connection)
    container = blob_service(conn, settings.storage_timeout_seconds).get_container_client(
        settings.model_container)
    from shared.router import MAX_CONFIG_BYTES, RouterConfigSource, feature_parity, models_loadable

    source = BlobSource(container, settings.max_model_mb * 1024 * 1024)
    compiler = None
    if settings.compiled_models:  # opt-in compiled trees (lleaves); None when not installed
        from shared.models.compiled.core import make_compiler

        compiler = make_compiler(settings, container)
    telemetry = get_telemetry()
    store = ModelStore(source, refresh_seconds=settings.model_refresh_seconds,
                       max_cache_bytes=settings.model_cache_max_mb * 1024 * 1024,
                       compiler=compiler, on_refresh_failure=telemetry.record_refresh_failure)
    routing = None
    if settings.router_config or settings.router_config_blob:
        config_source = RouterConfigSource(
            inline=settings.router_config or None, blob_path=settings.router_config_blob or None,
            blobs=BlobSource(container, MAX_CONFIG_BYTES))
        routing = RouterHolder(config_source, refresh_seconds=settings.router_refresh_seconds,
                               check_models=models_loadable(store) if settings.router_check_models
                               else None)
        if settings.router_check_models:
            store.check_swap = feature_parity(routing, store)
    shadows = (ShadowRunner(workers=settings.shadow_workers, max_pending=settings.shadow_max_pending)
               if settings.shadow_workers else None)
    prediction_log, outcome_log = build_logs(settings, telemetry)
    return ScoringService(settings, store, telemetry, routing=routing, shadows=shadows,
                          prediction_log=prediction_log, outcome_log=outcome_log)


def get_service() -> ScoringService:
    """The process-wide service, built on first use (never at import: cold start)."""
    global _service
    if _service is None:
        with _service_lock:
            if _service is None:
                _service = build_service(Settings.from_env())
    return _service


def built_service() -> ScoringService | None:
    """The process-wide service if it is built already, else ``None`` (builds nothing)."""
    return _service


def reset_service() -> None:
    """Forget the process-wide service (tests and the local host use this after changing settings)."""
    global _service
    with _service_lock:
        if _service is not None:
            _service.close()
        _service = None
