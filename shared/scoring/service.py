"""The one scoring entry point every transport calls: decode -> route -> load -> parse ->
predict -> encode, in that order, with telemetry; then the prediction log and shadows.

HTTP routes and queue jobs differ only in how they parse their trigger and shape the
finished :class:`~shared.scoring.result.ScoreResult`; everything between is here.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.ablog.predictions import PredictionLog
from shared.ablog.record import PredictionRecord, output_kind
from shared.errors import (
    BadRequest,
    NotEnabled,
    OverrideNotAllowed,
    PayloadTooLarge,
    ScoreError,
    UnsupportedMediaType,
)
from shared.models.model import LoadedModel, ModelInfo
from shared.models.store import ModelStore
from shared.payloads import (
    ScoringInput,
    decode_json,
    encode_score_response,
    encode_v2_response,
    parse_score_body,
    parse_v2,
)
from shared.payloads.common import DEFAULT_OPTIONS
from shared.payloads.rows import read_rows_body
from shared.payloads.v2 import read_v2_body
from shared.router import (
    OVERRIDE_HEADER,
    EndpointConfig,
    Route,
    RouterHolder,
    ShadowRunner,
    header,
    sticky_key,
)
from shared.scoring.predict import predict_with_backend
from shared.scoring.result import Format, ScoreResult
from shared.scoring.shadows import score_shadow
from shared.scoring.status import ServiceStatus
from shared.settings import Settings
from shared.telemetry import NO_TRACE, RequestTrace, Telemetry, get_telemetry

if TYPE_CHECKING:
    from shared.monitoring.collector import Collector

log = logging.getLogger("scorefn.scoring")

_NONE: frozenset[str] = frozenset()
# Bodies up to this size may be scored on an event loop when warm: ~15 rows of 100 features,
# ~1 ms of CPU at most; larger ones go to a thread so the loop keeps serving others.
INLINE_MAX_BYTES = 32 * 1024


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


def encode_response(result: ScoreResult, fmt: Format, endpoint: str,
                    request_id: str | None) -> tuple[bytes, int | None]:
    """The response body of a scoring in its format (and, for V2 binary output, the length
    of its JSON header)."""
    if fmt == "score":
        return encode_score_response(result.predictions, result.model.to_dict(), request_id,
                                     {"variant": result.variant}), None
    v2_request_id = result.request.request_id or request_id
    parameters = {"variant": result.variant, "model": result.model.name}
    if result.request.binary_output:
        from shared.payloads.v2_binary import encode_binary_response

        return encode_binary_response(result.predictions, model_name=endpoint,
                                      model_version=result.model.version,
                                      request_id=v2_request_id, parameters=parameters)
    return encode_v2_response(result.predictions, model_name=endpoint,
                              model_version=result.model.version, request_id=v2_request_id,
                              parameters=parameters), None


class ScoringService:
    """Scores requests against models from a :class:`ModelStore`."""

    def __init__(self, settings: Settings, store: ModelStore,
                 telemetry: Telemetry | None = None, routing: RouterHolder | None = None,
                 shadows: ShadowRunner | None = None,
                 prediction_log: PredictionLog | None = None, outcome_log: Any = None,
                 monitor: Collector | None = None) -> None:
        self.settings = settings
        self.store = store
        self.telemetry = telemetry or get_telemetry()
        self.routing = routing
        self.shadows = shadows
        self.prediction_log = prediction_log
        self.outcome_log = outcome_log
        self.monitor = monitor
        self.status = ServiceStatus(store, routing)

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

    def resolve(self, endpoint: str, key: str | None = None) -> tuple[Route, LoadedModel, bool]:
        """Route ``endpoint`` for ``key`` and load the chosen model: (route, model, cold)."""
        route = self.route(endpoint, key=key)
        model, cold = self.store.get(route.model)
        return route, model, cold

    def score(self, endpoint: str, body: bytes, *, fmt: Format = "score",
              content_type: str | None = None, trigger: str = "http",
              carrier: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
              query: Mapping[str, str] | None = None, request_id: str | None = None,
              binary_header_length: int | None = None) -> ScoreResult:
        """Score a request body for ``endpoint``: check, decode, route, load, parse, predict,
        encode the response, record telemetry; then offer it to the prediction log and hand
        shadows a copy.

        ``headers``/``query`` carry the sticky key and the variant override, ``carrier`` the
        caller's trace context (``traceparent``), ``request_id`` the transport's request id
        (``x-request-id``: in the response and the prediction log). ``binary_header_length``:
        a V2 body in the binary tensor data extension, whose JSON header is that many bytes.
        Raises a :class:`ScoreError` subclass for anything the caller got wrong or storage
        could not do; the failure is recorded and logged once, with its code.
        """
        result = self._score(endpoint, body, fmt, content_type, trigger, carrier, headers, query,
                             request_id, binary_header_length, cached_only=False)
        assert result is not None  # only a cached-only scoring stops short
        return result

    def score_cached(self, endpoint: str, body: bytes, *, fmt: Format = "score",
                     content_type: str | None = None, trigger: str = "http",
                     carrier: Mapping[str, str] | None = None,
                     headers: Mapping[str, str] | None = None,
                     query: Mapping[str, str] | None = None, request_id: str | None = None,
                     binary_header_length: int | None = None) -> ScoreResult | None:
        """As :meth:`score`, without ever reading storage: ``None`` when the model the
        request routes to is not cached (an event loop then scores it in a thread)."""
        return self._score(endpoint, body, fmt, content_type, trigger, carrier, headers, query,
                           request_id, binary_header_length, cached_only=True)

    def _score(self, endpoint: str, body: bytes, fmt: Format, content_type: str | None,
               trigger: str, carrier: Mapping[str, str] | None,
               headers: Mapping[str, str] | None, query: Mapping[str, str] | None,
               request_id: str | None, binary_header_length: int | None,
               cached_only: bool) -> ScoreResult | None:
        start = time.perf_counter()
        tel = self.telemetry
        attrs: dict[str, Any] = {"trigger": trigger, "endpoint": endpoint}
        route: Route | None = None
        config: EndpointConfig | None = None
        with tel.request_span("scorefn.score", carrier, attrs) as request_trace:
            try:
                direct, doc = self._decode(body, fmt, content_type, binary_header_length)
                decoded = time.perf_counter()
                # A directly read body's only field besides its format's own (reserved, never
                # a sticky key) is V2's "id", which a sticky key may name.
                if doc is not None:
                    fields = doc
                else:
                    assert direct is not None  # _decode gives the one or the other
                    fields = direct[0].fields
                route, config = self._route_request(endpoint, fields, headers, query)
                attrs["variant"] = route.variant
                loaded = self._get_model(route.model, attrs, request_trace, cached_only)
                if loaded is None:
                    # Not a failure: the transport scores this request again in a thread.
                    request_trace.set_attribute("scorefn.scored_again_in_thread", True)
                    return None
                model, cold = loaded
                if direct is not None and _fits(direct, model.info):
                    result = self.predict_parsed(model, direct[0], cold, route)
                else:
                    if doc is None:  # e.g. the wrong width: the full parser says what is wrong
                        doc = decode_json(body)
                    sticky = config.sticky_body_field if config is not None else None
                    result = self.score_document(
                        model, doc, fmt=fmt, cold=cold, route=route,
                        extra_fields=frozenset((sticky,)) if sticky else _NONE)
                attrs["backend"] = result.backend
                scored = time.perf_counter()
                encoded, binary_length = encode_response(result, fmt, endpoint, request_id)
            except ScoreError as exc:
                self._record_failure(exc, attrs, request_trace, start, body)
                self._log_failure(exc, route, config, trigger, start, request_id)
                raise
            except Exception:
                # A bug, not the caller's fault: counted as internal_error so that it shows in
                # scorefn's own metrics too; the transport logs the traceback.
                internal = ScoreError("internal error")
                self._record_failure(internal, attrs, request_trace, start, body)
                self._log_failure(internal, route, config, trigger, start, request_id)
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
        if self.monitor is not None:
            self.observe(result)
        logged_id, log_features = None, False
        if config is not None and config.log is not None and self.prediction_log is not None:
            logged_id, log_features = self._offer_to_log(result, config, trigger, elapsed_ms,
                                                         request_id)
        result = dataclasses.replace(
            result, body=encoded, binary_header_length=binary_length,
            request_id=logged_id or request_id, logged=logged_id is not None,
            log_features=log_features)
        if route.shadows and self.shadows is not None:
            for target in route.shadows:
                self.shadows.submit(score_shadow, self, target, doc, body, fmt, result, trigger)
        return result

    def _decode(self, body: bytes, fmt: Format, content_type: str | None,
                binary_header_length: int | None
                ) -> tuple[tuple[ScoringInput, str | None] | None, dict[str, Any] | None]:
        """The body read directly (the common shapes) or decoded: (direct, document)."""
        if binary_header_length is not None:
            from shared.payloads.v2_binary import decode_binary_request

            self.check_body(body, None)  # the extension's body is not JSON
            return None, decode_binary_request(body, binary_header_length)
        self.check_body(body, content_type)
        direct = self._read_direct(body, fmt)
        return direct, (decode_json(body) if direct is None else None)

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

    def observe(self, result: ScoreResult) -> None:
        """Hand monitoring a finished scoring's rows (and predictions, when they are the
        model's default output). Never raises, never waits."""
        monitor, route, request = self.monitor, result.route, result.request
        if monitor is None or route is None:
            return
        options = request.options
        monitor.observe(route.endpoint, route.variant, result.model, request.X,
                        None if options.raw_score or options.pred_contrib else result.predictions)

    def log_prediction(self, result: ScoreResult, *, trigger: str, latency_ms: float,
                       request_id: str | None) -> None:
        """Offer a scoring made outside :meth:`score` (an inline queue job, routed as a whole)
        to the prediction log, when its endpoint's config has a ``log`` block. Never raises."""
        if self.routing is None or self.prediction_log is None or result.route is None:
            return
        config = self.routing.current().endpoint(result.route.endpoint)
        if config is not None and config.log is not None:
            self._offer_to_log(result, config, trigger, latency_ms, request_id)

    def _offer_to_log(self, result: ScoreResult, config: EndpointConfig, trigger: str,
                      latency_ms: float, request_id: str | None) -> tuple[str | None, bool]:
        """Hand the prediction log a record (the endpoint's config has a ``log`` block; the
        request may be sampled out): the request id it was logged under (``None``: not
        logged) and whether with its features. Never raises, never waits on storage."""
        assert self.prediction_log is not None and config.log is not None
        try:
            route = result.route
            assert route is not None
            log_config = config.log
            if not self.prediction_log.wants(log_config, route.endpoint, route.key):
                return None, False
            request_id = request_id or uuid.uuid4().hex
            index = next((i for i, v in enumerate(config.variants) if v.name == route.variant),
                         None)
            logged = self.prediction_log.offer(PredictionRecord.scored_by(
                result.model, endpoint=route.endpoint, request_id=request_id, key=route.key,
                trigger=trigger, variant=route.variant, variant_index=index,
                predictions=result.predictions, latency_ms=latency_ms,
                output=output_kind(result.request.options), rows=result.request.X.shape[0],
                features=result.request.X if log_config.features else None,
                pinned=route.how == "override"))
            return (request_id if logged else None), log_config.features
        except Exception:  # the log must never fail a request
            log.exception("prediction log: could not record a prediction")
            return None, False

    def _log_failure(self, exc: ScoreError, route: Route | None, config: EndpointConfig | None,
                     trigger: str, start: float, request_id: str | None) -> None:
        """Log a routed request that failed through no fault of its own (its model is missing
        or broken, storage is down, a bug: not a :class:`BadRequest`), when its endpoint logs:
        a rollout compares the variants' failure rates. Never raises."""
        if (route is None or config is None or config.log is None or isinstance(exc, BadRequest)
                or self.prediction_log is None):
            return
        try:
            if not self.prediction_log.wants(config.log, route.endpoint, route.key):
                return
            index = next((i for i, v in enumerate(config.variants) if v.name == route.variant),
                         None)
            self.prediction_log.offer(PredictionRecord.failed(
                endpoint=route.endpoint, request_id=request_id or uuid.uuid4().hex,
                key=route.key, trigger=trigger, variant=route.variant, model_name=route.model,
                error=exc.code, latency_ms=(time.perf_counter() - start) * 1000,
                variant_index=index, pinned=route.how == "override"))
        except Exception:  # the log must never fail a request
            log.exception("prediction log: could not record a failed request")

    def _check_response_size(self, info: ModelInfo, request: ScoringInput) -> None:
        values = request.X.shape[0] * info.num_outputs
        if request.options.pred_contrib:
            values *= info.num_features + 1
        if values > self.settings.max_response_values:
            raise PayloadTooLarge(f"the response would hold {values:,} values, over the limit of "
                                  f"{self.settings.max_response_values:,} (MAX_RESPONSE_VALUES): "
                                  f"send fewer rows", code="response_too_large")

    def predict_parsed(self, model: LoadedModel, request: ScoringInput, cold: bool,
                       route: Route | None = None) -> ScoreResult:
        """Predict an already parsed request with ``model``."""
        self._check_response_size(model.info, request)
        start = time.perf_counter()
        predictions, backend = predict_with_backend(
            model, request, parallel_min_rows=self.settings.predict_parallel_min_rows,
            max_threads=self.settings.predict_max_threads)
        return ScoreResult(predictions, model.info, request, cold, time.perf_counter() - start,
                           route=route, backend=backend)

    def _get_model(self, name: str, attrs: dict[str, Any], request_trace: RequestTrace,
                   cached_only: bool) -> tuple[LoadedModel, bool] | None:
        """The model and whether it was loaded now; ``None`` when ``cached_only`` and it is
        not cached."""
        start = time.perf_counter()
        if cached_only:
            model = self.store.get_cached(name)
            if model is None:
                return None
            cold = False
        else:
            model, cold = self.store.get(name)
        info = model.info
        attrs["model.name"] = info.name
        attrs["model.version"] = info.version
        attrs["cold"] = cold
        if cold:
            load_ms = (time.perf_counter() - start) * 1000
            started_ns = time.time_ns() - int(load_ms * 1e6)
            self.telemetry.record_load(load_ms, {"model.name": info.name,
                                                 "model.version": info.version})
            # The load span is made after the fact: warm requests should not pay for one.
            request_trace.child_after_the_fact("model.load", started_ns, {"model.name": info.name})
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
        result = self.predict_parsed(model, request, cold, route)
        return dataclasses.replace(result, parse_seconds=parsed - start)

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
        if self.monitor is not None:
            self.monitor.close()
