"""Every app setting scorefn reads, validated in one place.

Settings come from environment variables (Azure app settings; locally the ``Values`` of
``local.settings.json``). Each has a safe default; an invalid value raises
:class:`~shared.errors.SettingsError` naming the setting, at first use rather than at
import time, so that a bad setting shows as a clear error instead of a worker crash.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

from .errors import SettingsError

_CONTAINER_RE = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_QUEUE_RE = _CONTAINER_RE
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Setting:
    """One app setting: its variable, default and what it means (the README lists them)."""

    env: str
    default: Any
    parse: Callable[[str], Any]
    doc: str


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value
    return parse


def _float(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw.strip())
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value
    return parse


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("must be true or false")


def _name(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if not pattern.match(value):
            raise ValueError(f"is not a valid {what} name")
        return value
    return parse


def _triggered_queue(raw: str) -> str:
    """A queue name with room for its poison queue's, ``<name>-poison`` (at most 63 too)."""
    value = _name(_QUEUE_RE, "queue")(raw)
    if len(value) > 56:
        raise ValueError("is longer than 56 characters: its poison queue, <name>-poison, would "
                         "be over the 63 a queue name may have")
    return value


def _text(raw: str) -> str:
    return raw.strip()


def _blob_path(raw: str) -> str:
    value = raw.strip()
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,255}$", value) or ".." in value:
        raise ValueError("is not a valid blob path")
    return value


_PATTERN_RE = re.compile(r"^[A-Za-z0-9._\-/*?\[\]]{1,256}$")


def _model_patterns(raw: str) -> tuple[str, ...]:
    patterns = tuple(p.strip() for p in raw.split(","))
    if len(patterns) > 100 or not all(_PATTERN_RE.match(p) for p in patterns):
        raise ValueError("must be comma-separated model names or glob patterns (letters, digits, "
                         "'.', '_', '-', '/', '*', '?', '[', ']'; at most 100)")
    return patterns


def _absolute_dir(raw: str) -> str:
    value = raw.strip()
    if not os.path.isabs(value) or "\0" in value or len(value) > 1024:
        raise ValueError("must be an absolute directory path")
    return value


# The Functions host's own containers (keys, leases, the Flex deployment package): never
# a batch job's input or output.
_HOST_CONTAINER_PREFIXES = ("azure-webjobs-", "app-package-")


def _container_list(raw: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    if len(names) > 50 or not all(_CONTAINER_RE.match(n) for n in names):
        raise ValueError("must be comma-separated blob container names (at most 50)")
    if any(n.startswith(_HOST_CONTAINER_PREFIXES) for n in names):
        raise ValueError("must not name the Functions host's own containers "
                         "(azure-webjobs-*, app-package-*)")
    return names


def _connection_name(raw: str) -> str:
    value = raw.strip()
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", value):
        raise ValueError("must be a setting name such as AzureWebJobsStorage")
    return value


MiB = 1024 * 1024

SPEC: dict[str, Setting] = {
    "storage_connection": Setting(
        "MODEL_STORAGE_CONNECTION", "AzureWebJobsStorage", _connection_name,
        "Name of the storage connection for models and config (a connection string, or "
        "identity-based `<NAME>__blobServiceUri` / `<NAME>__accountName`)."),
    "model_container": Setting(
        "MODEL_CONTAINER", "models", _name(_CONTAINER_RE, "blob container"),
        "Blob container holding the models."),
    "model_refresh_seconds": Setting(
        "MODEL_REFRESH_SECONDS", 30.0, _float(0.1, 86400.0),
        "How often a cached model is revalidated against its blob's ETag (off the request "
        "path); 0.1 to 86400 (each check is a storage call per model and instance)."),
    "model_cache_max_mb": Setting(
        "MODEL_CACHE_MAX_MB", 128, _int(1, 1024 * 1024),
        "Memory bound of the model cache; least recently used models are evicted beyond it. "
        "The default fits the smallest (512 MB) Flex Consumption instance."),
    "max_model_mb": Setting(
        "MAX_MODEL_MB", 64, _int(1, 64 * 1024),
        "Largest model blob (after decompression) that will be loaded; parsing briefly "
        "needs about 3x its size."),
    "max_request_bytes": Setting(
        "MAX_REQUEST_BYTES", 4 * MiB, _int(1024, 100 * MiB),
        "Largest HTTP request body accepted."),
    "max_rows_per_request": Setting(
        "MAX_ROWS_PER_REQUEST", 10_000, _int(1, 10_000_000),
        "Most rows accepted in one HTTP request or inline queue message."),
    "max_response_values": Setting(
        "MAX_RESPONSE_VALUES", 2_000_000, _int(1, 1_000_000_000),
        "Most prediction values one request or inline job may produce (rows x outputs; with "
        "pred_contrib rows x outputs x (features + 1)), checked before predicting: a small "
        "body must not make a response of hundreds of MB."),
    "predict_parallel_min_rows": Setting(
        "PREDICT_PARALLEL_MIN_ROWS", 2_000, _int(1, 100_000_000),
        "Requests with fewer rows predict on one thread (OpenMP hurts small requests)."),
    "predict_max_threads": Setting(
        "PREDICT_MAX_THREADS", 0, _int(0, 1024),
        "Threads for large predictions; 0 means one per core."),
    "storage_timeout_seconds": Setting(
        "STORAGE_TIMEOUT_SECONDS", 20.0, _float(0.5, 600.0),
        "Connect/read timeout for storage calls, so an outage fails fast instead of hanging."),
    "score_queue_name": Setting(
        "SCORE_QUEUE_NAME", "score-requests", _triggered_queue,
        "Queue of batch scoring jobs (in the `AzureWebJobsStorage` account). The queue trigger "
        "binds to `%SCORE_QUEUE_NAME%`, so the app setting must be present (set it to "
        "`score-requests`); the default here only serves the CLI and tools."),
    "results_queue_name": Setting(
        "RESULTS_QUEUE_NAME", "score-results", _name(_QUEUE_RE, "queue"),
        "Queue receiving one completion message per batch job (`succeeded` or `failed`)."),
    "batch_container": Setting(
        "BATCH_CONTAINER", "batch", _name(_CONTAINER_RE, "blob container"),
        "Blob container (in the `AzureWebJobsStorage` account) for batch inputs and outputs "
        "by default, job records (`jobs/`) and large inline results (`results/`)."),
    "batch_allowed_containers": Setting(
        "BATCH_ALLOWED_CONTAINERS", (), _container_list,
        "Comma-separated containers (in the `AzureWebJobsStorage` account) that a blob job may "
        "name as `input.container` or `output.container` besides `BATCH_CONTAINER`; empty: "
        "jobs use `BATCH_CONTAINER` only. Whoever may send to the job queue may read and write "
        "these with the app's identity, so never the model, log or host containers (refused)."),
    "batch_chunk_rows": Setting(
        "BATCH_CHUNK_ROWS", 50_000, _int(1, 10_000_000),
        "Rows a batch job writes as one staged block of its output (read, parsed and scored "
        "in smaller units of at most 8,192 rows); memory stays flat whatever the input's "
        "size."),
    "batch_max_input_mb": Setting(
        "BATCH_MAX_INPUT_MB", 2048, _int(1, 1024 * 1024),
        "Largest input blob a batch job accepts; a larger one fails the job (`input_too_large`)."),
    "batch_fanout_bytes": Setting(
        "BATCH_FANOUT_BYTES", 64 * MiB, _int(0, 1024 * 1024 * MiB),
        "Blob jobs whose input is larger than this many bytes are split into chunks scored in "
        "parallel, on any number of instances, through CHUNK_QUEUE_NAME; 0 scores every job in "
        "one invocation."),
    "batch_fanout_chunk_bytes": Setting(
        "BATCH_FANOUT_CHUNK_BYTES", 32 * MiB, _int(1024, 4096 * MiB),
        "Bytes of input per chunk of a fanned-out job (cut at the next line break)."),
    "batch_fanout_concurrency": Setting(
        "BATCH_FANOUT_CONCURRENCY", 2, _int(0, 256),
        "Chunks one process scores at the same time (0: one per core); further chunk messages "
        "delivered to the instance wait their turn, so memory stays bounded."),
    "chunk_queue_name": Setting(
        "CHUNK_QUEUE_NAME", "score-chunks", _triggered_queue,
        "Work queue of the chunks of fanned-out batch jobs (in the `AzureWebJobsStorage` "
        "account). The chunk trigger binds `%CHUNK_QUEUE_NAME%` (and `%CHUNK_QUEUE_NAME%-poison`), "
        "so the app setting must be present."),
    "router_config": Setting(
        "ROUTER_CONFIG", "", _text,
        "Inline router config (JSON); see Routing. Mutually exclusive with ROUTER_CONFIG_BLOB."),
    "router_config_blob": Setting(
        "ROUTER_CONFIG_BLOB", "", _blob_path,
        "Path of the router config blob in MODEL_CONTAINER, e.g. `config/router.json`."),
    "router_refresh_seconds": Setting(
        "ROUTER_REFRESH_SECONDS", 30.0, _float(0.1, 86400.0),
        "How often the router config blob is revalidated by ETag (off the request path); 0.1 "
        "to 86400."),
    "router_check_models": Setting(
        "ROUTER_CHECK_MODELS", True, _bool,
        "A new router config must load all its models (with the same features per endpoint) "
        "before it replaces the working one."),
    "shadow_workers": Setting(
        "SHADOW_WORKERS", 2, _int(0, 64),
        "Threads scoring shadow variants off the request path; 0 disables shadows."),
    "shadow_max_pending": Setting(
        "SHADOW_MAX_PENDING", 64, _int(1, 100_000),
        "Shadow scorings allowed to wait; beyond that they are dropped and counted."),
    "prediction_log_connection": Setting(
        "PREDICTION_LOG_CONNECTION", "AzureWebJobsStorage", _connection_name,
        "Name of the storage connection the prediction and outcome logs are written to (same "
        "convention as MODEL_STORAGE_CONNECTION; the identity needs Storage Blob Data "
        "Contributor on the two log containers)."),
    "prediction_log_container": Setting(
        "PREDICTION_LOG_CONTAINER", "predictions", _name(_CONTAINER_RE, "blob container"),
        "Blob container of the prediction log (JSON Lines append blobs, "
        "`{endpoint}/{yyyy}/{mm}/{dd}/{hh}/{instance}.jsonl`); created when missing."),
    "outcome_log_container": Setting(
        "OUTCOME_LOG_CONTAINER", "outcomes", _name(_CONTAINER_RE, "blob container"),
        "Blob container of the outcomes posted to `POST /api/outcomes/{endpoint}`, partitioned "
        "like the prediction log; created when missing."),
    "prediction_log_flush_seconds": Setting(
        "PREDICTION_LOG_FLUSH_SECONDS", 5.0, _float(0.05, 3600.0),
        "Longest time a prediction log record waits in memory before it is written (a buffer a "
        "quarter full is written sooner)."),
    "prediction_log_max_buffer": Setting(
        "PREDICTION_LOG_MAX_BUFFER", 10_000, _int(10, 10_000_000),
        "Most prediction log records held in memory; beyond it new records are dropped and "
        "counted (`scorefn.log.dropped`), never waited for."),
    "prediction_log_max_buffer_mb": Setting(
        "PREDICTION_LOG_MAX_BUFFER_MB", 64, _int(1, 16 * 1024),
        "Memory bound of the prediction log buffer (estimated from the numbers it holds); "
        "beyond it new records are dropped and counted."),
    "compiled_models": Setting(
        "COMPILED_MODELS", (), _model_patterns,
        "Comma-separated model names or glob patterns (`churn`, `churn/*`, `*`) whose trees are "
        "compiled to native code with lleaves (needs `requirements-compiled.txt`); empty: off. "
        "Matched against the model name and its blob path."),
    "compiled_cache_dir": Setting(
        "COMPILED_CACHE_DIR", "", _absolute_dir,
        "Local directory caching compiled-tree artifacts (private to the app's user); empty: "
        "`scorefn-compiled` in the temp directory."),
    "compiled_timeout_seconds": Setting(
        "COMPILED_TIMEOUT_SECONDS", 900.0, _float(10.0, 86400.0),
        "Longest one model's compilation may take; it is stopped beyond, and the model stays "
        "on LightGBM."),
}


@dataclass(frozen=True)
class Settings:
    """Validated settings. Build with :meth:`from_env`; tests pass their own mapping."""

    storage_connection: str
    model_container: str
    model_refresh_seconds: float
    model_cache_max_mb: int
    max_model_mb: int
    max_request_bytes: int
    max_rows_per_request: int
    max_response_values: int
    predict_parallel_min_rows: int
    predict_max_threads: int
    storage_timeout_seconds: float
    score_queue_name: str
    results_queue_name: str
    batch_container: str
    batch_allowed_containers: tuple[str, ...]
    batch_chunk_rows: int
    batch_max_input_mb: int
    batch_fanout_bytes: int
    batch_fanout_chunk_bytes: int
    batch_fanout_concurrency: int
    chunk_queue_name: str
    router_config: str
    router_config_blob: str
    router_refresh_seconds: float
    router_check_models: bool
    shadow_workers: int
    shadow_max_pending: int
    prediction_log_connection: str
    prediction_log_container: str
    outcome_log_container: str
    prediction_log_flush_seconds: float
    prediction_log_max_buffer: int
    prediction_log_max_buffer_mb: int
    compiled_models: tuple[str, ...]
    compiled_cache_dir: str
    compiled_timeout_seconds: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read and validate every setting from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in fields(cls):
            spec = SPEC[field.name]
            if field.name in overrides:
                values[field.name] = overrides[field.name]
                continue
            raw = env.get(spec.env)
            if raw is None or raw.strip() == "":
                values[field.name] = spec.default
                continue
            try:
                values[field.name] = spec.parse(raw)
            except ValueError as exc:
                # The value itself is not echoed: a misplaced secret must not reach logs.
                raise SettingsError(f"app setting {spec.env} {_reason(exc)}") from None
        _check_together(values)
        return cls(**values)


def _check_together(values: dict[str, Any]) -> None:
    """Rules between settings, each of which is valid alone."""
    if values["router_config"] and values["router_config_blob"]:
        raise SettingsError("app settings ROUTER_CONFIG and ROUTER_CONFIG_BLOB are both set; "
                            "set one (the Bicep sets ROUTER_CONFIG_BLOB unless its "
                            "routerConfigBlob parameter is '')")
    if values["max_model_mb"] > values["model_cache_max_mb"]:
        raise SettingsError("app setting MAX_MODEL_MB must not exceed MODEL_CACHE_MAX_MB: a "
                            "model that size could never stay in the cache")
    guarded = {values["model_container"]: "MODEL_CONTAINER",
               values["prediction_log_container"]: "PREDICTION_LOG_CONTAINER",
               values["outcome_log_container"]: "OUTCOME_LOG_CONTAINER"}
    for setting, names in (("BATCH_CONTAINER", (values["batch_container"],)),
                           ("BATCH_ALLOWED_CONTAINERS", values["batch_allowed_containers"])):
        for name in names:
            if name in guarded:
                raise SettingsError(f"app setting {setting} must not name {guarded[name]}: "
                                    f"batch jobs would read and write it")
            if name.startswith(_HOST_CONTAINER_PREFIXES):
                raise SettingsError(f"app setting {setting} must not name the Functions host's "
                                    f"own containers (azure-webjobs-*, app-package-*)")


def _reason(exc: ValueError) -> str:
    text = str(exc)
    return text if text.startswith(("must", "is ")) else "must be a number"


@dataclass(frozen=True)
class StorageConnection:
    """A storage connection resolved from the Functions connection convention.

    Either ``connection_string`` (local runs, Azurite) or service URIs used with an
    Entra ID credential (managed identity in Azure); never an account key in code.
    """

    name: str
    connection_string: str | None = None
    blob_service_uri: str | None = None
    queue_service_uri: str | None = None
    client_id: str | None = None
    credential: str | None = None

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None


def resolve_connection(name: str, env: Mapping[str, str] | None = None) -> StorageConnection:
    """Resolve connection ``name`` as the Functions host does.

    ``NAME`` holds a connection string, or ``NAME__blobServiceUri`` (or, as for a blob
    binding, ``NAME__serviceUri``) / ``NAME__queueServiceUri`` / ``NAME__accountName``
    select identity-based access, with
    ``NAME__clientId`` naming a user-assigned identity and ``NAME__credential``
    (``managedidentity``) forcing managed identity.
    """
    env = os.environ if env is None else env
    raw = (env.get(name) or "").strip()
    if raw:
        return StorageConnection(name=name, connection_string=raw)
    account = (env.get(f"{name}__accountName") or "").strip()
    blob_uri = (env.get(f"{name}__blobServiceUri") or env.get(f"{name}__serviceUri") or "").strip()
    queue_uri = (env.get(f"{name}__queueServiceUri") or "").strip()
    if account:
        if not re.match(r"^[a-z0-9]{3,24}$", account):
            raise SettingsError(f"app setting {name}__accountName is not a storage account name")
        blob_uri = blob_uri or f"https://{account}.blob.core.windows.net"
        queue_uri = queue_uri or f"https://{account}.queue.core.windows.net"
    if not (blob_uri or queue_uri):
        raise SettingsError(
            f"storage connection {name} is not configured: set {name} (a connection string) "
            f"or {name}__accountName / {name}__blobServiceUri for identity-based access")
    for setting, uri in ((f"{name}__blobServiceUri", blob_uri), (f"{name}__queueServiceUri", queue_uri)):
        if uri and not uri.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise SettingsError(f"app setting {setting} must be an https:// URI")
    credential = (env.get(f"{name}__credential") or "").strip().lower() or None
    if credential not in (None, "managedidentity"):
        raise SettingsError(f"app setting {name}__credential must be managedidentity when set")
    return StorageConnection(
        name=name, blob_service_uri=blob_uri or None, queue_service_uri=queue_uri or None,
        client_id=(env.get(f"{name}__clientId") or "").strip() or None, credential=credential)


@dataclass(frozen=True)
class TelemetrySettings:
    """How telemetry is exported (see shared/telemetry.py)."""

    connection_string: str | None
    aad_client_id: str | None  # None: no Entra ID; "": system-assigned identity
    worker_managed: bool
    log_payloads: bool
    export_interval_ms: int
    trace_sample_ratio: float
    local_reader: bool = False


TELEMETRY_SPEC: dict[str, str] = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING":
        "Application Insights connection string; telemetry is exported only when set.",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING":
        "`Authorization=AAD;ClientId=<id>`: send telemetry with the managed identity (Entra ID).",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY":
        "`true` when the Python worker configures Azure Monitor itself; scorefn then adds its "
        "meters and spans to that pipeline instead of configuring a second one.",
    "TELEMETRY_LOG_PAYLOADS":
        "`true` to include the request body (its first 2 KiB) in failure logs (default false: "
        "never payloads).",
    "TELEMETRY_EXPORT_INTERVAL_SECONDS": "How often metrics are exported (default 60).",
    "TELEMETRY_TRACE_SAMPLE_RATIO":
        "Share of requests traced when the caller sent no sampled `traceparent` (default 0.05); "
        "metrics are never sampled.",
    "TELEMETRY_LOCAL_READER":
        "`true` (local runs, the demo) keeps metrics in memory and serves a latency summary at "
        "`GET /api/metrics/latency` (admin key); ignored when exporting.",
}


def telemetry_settings(env: Mapping[str, str] | None = None) -> TelemetrySettings:
    """Read and validate the telemetry settings."""
    env = os.environ if env is None else env
    auth = (env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING") or "").strip()
    client_id: str | None = None
    if auth:
        parts = dict(p.split("=", 1) for p in auth.split(";") if "=" in p)
        if parts.get("Authorization", "").upper() != "AAD":
            raise SettingsError("app setting APPLICATIONINSIGHTS_AUTHENTICATION_STRING must be "
                                "Authorization=AAD[;ClientId=<client id>]")
        client_id = parts.get("ClientId", "")
    flags = {}
    for name in ("TELEMETRY_LOG_PAYLOADS", "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
                 "TELEMETRY_LOCAL_READER"):
        try:
            flags[name] = _bool(env.get(name) or "false")
        except ValueError:
            raise SettingsError(f"app setting {name} must be true or false") from None
    try:
        interval = _float(1.0, 3600.0)(env.get("TELEMETRY_EXPORT_INTERVAL_SECONDS") or "60")
    except ValueError as exc:
        raise SettingsError(f"app setting TELEMETRY_EXPORT_INTERVAL_SECONDS {_reason(exc)}") from None
    try:
        ratio = _float(0.0, 1.0)(env.get("TELEMETRY_TRACE_SAMPLE_RATIO") or "0.05")
    except ValueError as exc:
        raise SettingsError(f"app setting TELEMETRY_TRACE_SAMPLE_RATIO {_reason(exc)}") from None
    return TelemetrySettings(
        trace_sample_ratio=ratio,
        connection_string=(env.get("APPLICATIONINSIGHTS_CONNECTION_STRING") or "").strip() or None,
        aad_client_id=client_id, worker_managed=flags["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"],
        log_payloads=flags["TELEMETRY_LOG_PAYLOADS"], local_reader=flags["TELEMETRY_LOCAL_READER"],
        export_interval_ms=int(interval * 1000))
