"""Every app setting scorefn reads, declared once and validated in one place.

Settings come from environment variables (Azure app settings; locally the ``Values`` of
``local.settings.json``). Each is declared once, as a field of :class:`Settings` (or an entry
of :data:`TELEMETRY_SPEC`) carrying its variable, default, parser (which holds its bounds and
validation), meaning and group; the typed attributes, the validation and docs/settings.md
(``python -m shared.settings_doc``) all come from that declaration. Each has a safe default;
an invalid value raises :class:`~shared.errors.SettingsError` naming the setting, at first use
rather than at import time, so that a bad setting shows as a clear error instead of a worker
crash.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from shared.errors import SettingsError

_CONTAINER_RE = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_QUEUE_RE = _CONTAINER_RE
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB


@dataclass(frozen=True)
class Kind:
    """How a setting's text is read: ``parse`` returns the value or raises ``ValueError``
    saying what is wrong (its bounds and validation); ``allowed`` says in words what it
    accepts, for docs/settings.md."""

    parse: Callable[[str], Any]
    allowed: str


@dataclass(frozen=True)
class Setting:
    """One app setting: its variable, default, parser, what it accepts and what it means."""

    env: str
    default: Any
    parse: Callable[[str], Any]
    allowed: str
    doc: str
    group: str


@dataclass(frozen=True)
class Rule:
    """A rule between settings each valid alone: ``check`` raises :class:`SettingsError`."""

    doc: str
    check: Callable[[Settings], None]


# -- kinds of value --------------------------------------------------------------------------


def _num(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else repr(value)


def _size(n: int) -> str:
    for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n:,} bytes"


def _int(lo: int, hi: int, allowed: str | None = None) -> Kind:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value
    return Kind(parse, allowed or f"an integer from {_num(lo)} to {_num(hi)}")


def _bytes(lo: int, hi: int) -> Kind:
    """A number of bytes (an integer; described in KiB/MiB)."""
    return _int(lo, hi, f"a number of bytes from {_num(lo)}"
                        f"{f' ({_size(lo)})' if lo >= KiB else ''} to {_num(hi)} ({_size(hi)})")


def _float(lo: float, hi: float) -> Kind:
    def parse(raw: str) -> float:
        value = float(raw.strip())
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value
    return Kind(parse, f"a number from {_num(lo)} to {_num(hi)}")


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("must be true or false")


_BOOL = Kind(_parse_bool, "`true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`; any case)")


def _name(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if not pattern.match(value):
            raise ValueError(f"is not a valid {what} name")
        return value
    return parse


_NAME_RULES = ("3 to 63 lowercase letters, digits and hyphens, starting and ending with a letter "
               "or digit, no `--`")
_CONTAINER = Kind(_name(_CONTAINER_RE, "blob container"), f"a blob container name: {_NAME_RULES}")
_QUEUE = Kind(_name(_QUEUE_RE, "queue"), f"a queue name: {_NAME_RULES}")


def _parse_triggered_queue(raw: str) -> str:
    """A queue name with room for its poison queue's, ``<name>-poison`` (at most 63 too)."""
    value = _name(_QUEUE_RE, "queue")(raw)
    if len(value) > 56:
        raise ValueError("is longer than 56 characters: its poison queue, <name>-poison, would "
                         "be over the 63 a queue name may have")
    return value


_TRIGGERED_QUEUE = Kind(_parse_triggered_queue,
                        f"a queue name of at most 56 characters, so that its poison queue "
                        f"`<name>-poison` fits 63: {_NAME_RULES}")


def _text(raw: str) -> str:
    return raw.strip()


_ROUTER_JSON = Kind(_text, "a router config in JSON (checked when the router loads it)")


def _blob_path(raw: str) -> str:
    value = raw.strip()
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,255}$", value) or ".." in value:
        raise ValueError("is not a valid blob path")
    return value


def _schedule(raw: str) -> str:
    value = " ".join(raw.split())
    fields = value.split(" ")
    if len(fields) != 6 or not all(re.match(r"^[0-9A-Za-z*/,\-]{1,64}$", f) for f in fields):
        raise ValueError("must be an NCRONTAB schedule of six fields: second minute hour day "
                         "month day-of-week")
    return value


_SCHEDULE = Kind(_schedule, "an NCRONTAB schedule of six fields (`{second} {minute} {hour} {day} "
                            "{month} {day-of-week}`), e.g. `0 */5 * * * *`")

_BLOB_PATH = Kind(_blob_path, "a blob path: a letter or digit, then letters, digits, `.`, `_`, "
                              "`-` and `/` (at most 256 characters, no `..`)")

_PATTERN_RE = re.compile(r"^[A-Za-z0-9._\-/*?\[\]]{1,256}$")


def _model_patterns(raw: str) -> tuple[str, ...]:
    patterns = tuple(p.strip() for p in raw.split(","))
    if len(patterns) > 100 or not all(_PATTERN_RE.match(p) for p in patterns):
        raise ValueError("must be comma-separated model names or glob patterns (letters, digits, "
                         "'.', '_', '-', '/', '*', '?', '[', ']'; at most 100)")
    return patterns


_MODEL_PATTERNS = Kind(_model_patterns,
                       "comma-separated model names or glob patterns (at most 100, each of "
                       "letters, digits, `.`, `_`, `-`, `/`, `*`, `?`, `[`, `]`)")


def _absolute_dir(raw: str) -> str:
    value = raw.strip()
    if not os.path.isabs(value) or "\0" in value or len(value) > 1024:
        raise ValueError("must be an absolute directory path")
    return value


_ABSOLUTE_DIR = Kind(_absolute_dir, "an absolute directory path (at most 1,024 characters)")

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


_CONTAINER_LIST = Kind(_container_list,
                       "comma-separated blob container names (at most 50), none of the Functions "
                       "host's own (`azure-webjobs-*`, `app-package-*`)")


def _connection_name(raw: str) -> str:
    value = raw.strip()
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", value):
        raise ValueError("must be a setting name such as AzureWebJobsStorage")
    return value


_CONNECTION_NAME = Kind(_connection_name,
                        "the name of a storage connection: a letter or `_`, then letters, digits "
                        "and `_` (at most 128 characters)")


def _setting(env: str, default: Any, kind: Kind, group: str, doc: str) -> Any:
    """A :class:`Settings` field declaring app setting ``env`` (the field's metadata)."""
    return field(metadata={"setting": Setting(env, default, kind.parse, kind.allowed, doc, group)})


# Groups, in the order docs/settings.md shows them (as the README grouped its tables).
MODELS = "Models, limits and prediction"
BATCH = "Batch jobs (queue)"
ROUTING = "Routing (A/B, canary, shadow)"
LOGS = "Prediction and outcome logs"
MONITORING = "Monitoring (drift)"
TELEMETRY = "Telemetry"
GROUPS = (MODELS, BATCH, ROUTING, LOGS, MONITORING, TELEMETRY)


@dataclass(frozen=True)
class Settings:
    """Validated settings. Build with :meth:`from_env`; tests pass their own mapping.

    Each field is one app setting, declared by :func:`_setting`: variable, default, kind
    (parser and bounds), group and meaning. Fields are plain typed attributes.
    """

    # -- Models, limits and prediction ---------------------------------------------------------
    storage_connection: str = _setting(
        "MODEL_STORAGE_CONNECTION", "AzureWebJobsStorage", _CONNECTION_NAME, MODELS,
        "Name of the storage connection holding the models and the router config blob: a "
        "connection string, or identity-based `<NAME>__blobServiceUri` / `<NAME>__accountName` "
        "(see Storage connections).")
    model_container: str = _setting(
        "MODEL_CONTAINER", "models", _CONTAINER, MODELS,
        "Blob container holding the models.")
    model_refresh_seconds: float = _setting(
        "MODEL_REFRESH_SECONDS", 30.0, _float(0.1, 86400.0), MODELS,
        "How often a cached model is revalidated against its blob's ETag, off the request path "
        "(each check is a storage call per model and instance).")
    model_cache_max_mb: int = _setting(
        "MODEL_CACHE_MAX_MB", 128, _int(1, 1024 * 1024), MODELS,
        "Memory bound of the model cache (the model texts' sizes plus their compiled code, if "
        "any); least recently used models are evicted beyond it (after a load). With "
        "`MAX_MODEL_MB`'s default it fits the smallest (512 MB) Flex Consumption instance: "
        "~75 MB of process + a full cache + a 64 MB model loading (~3x) ≈ 400 MB. `infra/` sets "
        "a quarter of the instance memory.")
    max_model_mb: int = _setting(
        "MAX_MODEL_MB", 64, _int(1, 64 * 1024), MODELS,
        "Largest model blob (after decompression) that will be loaded; parsing briefly needs "
        "about 3x its size (a 3.3 MB model: ~10 MB peak). At most `MODEL_CACHE_MAX_MB`. "
        "`infra/` sets `min(512, an eighth of the instance memory)`.")
    max_request_bytes: int = _setting(
        "MAX_REQUEST_BYTES", 4 * MiB, _bytes(1024, 100 * MiB), MODELS,
        "Largest HTTP request body accepted (413 beyond).")
    max_rows_per_request: int = _setting(
        "MAX_ROWS_PER_REQUEST", 10_000, _int(1, 10_000_000), MODELS,
        "Most rows in one HTTP request or inline queue message (413 `too_many_rows` beyond).")
    max_response_values: int = _setting(
        "MAX_RESPONSE_VALUES", 2_000_000, _int(1, 1_000_000_000), MODELS,
        "Most prediction values one request or inline job may produce (rows x outputs; with "
        "`pred_contrib` rows x outputs x (features + 1)), checked before predicting (413 "
        "`response_too_large` beyond): a small body cannot make a response of hundreds of MB.")
    predict_parallel_min_rows: int = _setting(
        "PREDICT_PARALLEL_MIN_ROWS", 2_000, _int(1, 100_000_000), MODELS,
        "Requests with fewer rows predict on one thread (OpenMP start-up and spinning hurt "
        "small requests on a shared box).")
    predict_max_threads: int = _setting(
        "PREDICT_MAX_THREADS", 0, _int(0, 1024), MODELS,
        "Threads for large predictions; 0 means one per core.")
    storage_timeout_seconds: float = _setting(
        "STORAGE_TIMEOUT_SECONDS", 20.0, _float(0.5, 600.0), MODELS,
        "Connect/read timeout of storage calls (two quick retries), so an outage fails fast "
        "instead of hanging; prediction and outcome log writes use at most 10 s of it.")

    # -- Batch jobs (queue) --------------------------------------------------------------------
    score_queue_name: str = _setting(
        "SCORE_QUEUE_NAME", "score-requests", _TRIGGERED_QUEUE, BATCH,
        "Queue of batch scoring jobs (in the `AzureWebJobsStorage` account). The triggers bind "
        "`%SCORE_QUEUE_NAME%` and `%SCORE_QUEUE_NAME%-poison`, so the app setting must be "
        "present (set it to `score-requests`); the default here only serves the CLI and tools.")
    results_queue_name: str = _setting(
        "RESULTS_QUEUE_NAME", "score-results", _QUEUE, BATCH,
        "Queue receiving one completion message per batch job (`succeeded` or `failed`).")
    batch_container: str = _setting(
        "BATCH_CONTAINER", "batch", _CONTAINER, BATCH,
        "Blob container (in the `AzureWebJobsStorage` account) for batch inputs and outputs by "
        "default, job records (`jobs/`) and large inline results (`results/`).")
    batch_allowed_containers: tuple[str, ...] = _setting(
        "BATCH_ALLOWED_CONTAINERS", (), _CONTAINER_LIST, BATCH,
        "Containers (in the `AzureWebJobsStorage` account) that a blob job may name as "
        "`input.container` or `output.container` besides `BATCH_CONTAINER`; empty: jobs use "
        "`BATCH_CONTAINER` only. Whoever may send to the job queue may read and write these "
        "with the app's identity, so never the model, log or host containers (refused).")
    batch_chunk_rows: int = _setting(
        "BATCH_CHUNK_ROWS", 50_000, _int(1, 10_000_000), BATCH,
        "Rows a batch job writes as one staged block of its output (read, parsed and scored in "
        "smaller units of at most 8,192 rows); memory stays flat whatever the input's size.")
    batch_max_input_mb: int = _setting(
        "BATCH_MAX_INPUT_MB", 2048, _int(1, 1024 * 1024), BATCH,
        "Largest input blob a batch job accepts; a larger one fails the job (`input_too_large`).")
    batch_fanout_bytes: int = _setting(
        "BATCH_FANOUT_BYTES", 64 * MiB, _bytes(0, 1024 * 1024 * MiB), BATCH,
        "Blob jobs whose input is larger than this are split into chunks scored in parallel, "
        "on any number of instances, through `CHUNK_QUEUE_NAME`; 0 scores every job in one "
        "invocation.")
    batch_fanout_chunk_bytes: int = _setting(
        "BATCH_FANOUT_CHUNK_BYTES", 32 * MiB, _bytes(1024, 4096 * MiB), BATCH,
        "Bytes of input per chunk of a fanned-out job (32 MiB: about 45,000 rows of 100 "
        "features), cut at the next line start.")
    batch_fanout_concurrency: int = _setting(
        "BATCH_FANOUT_CONCURRENCY", 2, _int(0, 256), BATCH,
        "Chunks one process scores at the same time (0: one per core); further chunk messages "
        "delivered to the instance wait their turn, so memory stays bounded.")
    chunk_queue_name: str = _setting(
        "CHUNK_QUEUE_NAME", "score-chunks", _TRIGGERED_QUEUE, BATCH,
        "Work queue of the chunks of fanned-out batch jobs (in the `AzureWebJobsStorage` "
        "account). The chunk triggers bind `%CHUNK_QUEUE_NAME%` and "
        "`%CHUNK_QUEUE_NAME%-poison`, so the app setting must be present.")

    # -- Routing (A/B, canary, shadow) ---------------------------------------------------------
    router_config: str = _setting(
        "ROUTER_CONFIG", "", _ROUTER_JSON, ROUTING,
        "Inline router config (see the README's Routing). Mutually exclusive with "
        "`ROUTER_CONFIG_BLOB`.")
    router_config_blob: str = _setting(
        "ROUTER_CONFIG_BLOB", "", _BLOB_PATH, ROUTING,
        "Path of the router config blob in `MODEL_CONTAINER`, e.g. `config/router.json`.")
    router_refresh_seconds: float = _setting(
        "ROUTER_REFRESH_SECONDS", 30.0, _float(0.1, 86400.0), ROUTING,
        "How often the router config blob is revalidated by ETag, off the request path.")
    router_check_models: bool = _setting(
        "ROUTER_CHECK_MODELS", True, _BOOL, ROUTING,
        "A new router config must load all its models (with the same features per endpoint) "
        "before it replaces the working one.")
    rollout_schedule: str = _setting(
        "ROLLOUT_SCHEDULE", "0 */5 * * * *", _SCHEDULE, ROUTING,
        "When the rollout controller (a timer trigger binding `%ROLLOUT_SCHEDULE%`, so the app "
        "setting must be present) evaluates the rollouts of the router config blob: advance, "
        "hold, promote, roll back or pause each (see docs/rollout.md). Needs "
        "`ROUTER_CONFIG_BLOB`; it does nothing without rollouts.")
    shadow_workers: int = _setting(
        "SHADOW_WORKERS", 2, _int(0, 64), ROUTING,
        "Threads scoring shadow variants off the request path; 0 disables shadows.")
    shadow_max_pending: int = _setting(
        "SHADOW_MAX_PENDING", 64, _int(1, 100_000), ROUTING,
        "Shadow scorings allowed to wait; beyond that they are dropped and counted.")

    # -- Prediction and outcome logs -----------------------------------------------------------
    prediction_log_connection: str = _setting(
        "PREDICTION_LOG_CONNECTION", "AzureWebJobsStorage", _CONNECTION_NAME, LOGS,
        "Name of the storage connection the prediction and outcome logs are written to (same "
        "convention as `MODEL_STORAGE_CONNECTION`; the identity needs Storage Blob Data "
        "Contributor on the two log containers).")
    prediction_log_container: str = _setting(
        "PREDICTION_LOG_CONTAINER", "predictions", _CONTAINER, LOGS,
        "Blob container of the prediction log (JSON Lines append blobs, "
        "`{endpoint}/{yyyy}/{mm}/{dd}/{hh}/{instance}.jsonl`); created when missing.")
    outcome_log_container: str = _setting(
        "OUTCOME_LOG_CONTAINER", "outcomes", _CONTAINER, LOGS,
        "Blob container of the outcomes posted to `POST /api/outcomes/{endpoint}`, partitioned "
        "like the prediction log; created when missing.")
    prediction_log_flush_seconds: float = _setting(
        "PREDICTION_LOG_FLUSH_SECONDS", 5.0, _float(0.05, 3600.0), LOGS,
        "Longest time a prediction log record waits in memory before it is written (a buffer a "
        "quarter full is written sooner).")
    prediction_log_max_buffer: int = _setting(
        "PREDICTION_LOG_MAX_BUFFER", 10_000, _int(10, 10_000_000), LOGS,
        "Most prediction log records held in memory; beyond it new records are dropped and "
        "counted (`scorefn.log.dropped`), never waited for.")
    prediction_log_max_buffer_mb: int = _setting(
        "PREDICTION_LOG_MAX_BUFFER_MB", 64, _int(1, 16 * 1024), LOGS,
        "Memory bound of the prediction log buffer (estimated from the numbers it holds); "
        "beyond it new records are dropped and counted.")

    # -- Monitoring (drift) --------------------------------------------------------------------
    monitor_enabled: bool = _setting(
        "MONITOR_ENABLED", True, _BOOL, MONITORING,
        "Count every scored row per endpoint, variant and model version (bins, missing and "
        "out-of-range values, predictions; never the values) and write the counts to "
        "`MONITOR_CONTAINER` (see docs/monitoring.md). `false`: nothing is counted.")
    monitor_container: str = _setting(
        "MONITOR_CONTAINER", "monitoring", _CONTAINER, MONITORING,
        "Blob container (on `PREDICTION_LOG_CONNECTION`) of the served counts "
        "(`served/{endpoint}/{hour}/{writer}.json`) and the drift summaries "
        "(`summaries/{endpoint}/`); created when missing.")
    monitor_flush_seconds: float = _setting(
        "MONITOR_FLUSH_SECONDS", 300.0, _float(1.0, 3600.0), MONITORING,
        "How often each instance writes its counts of the current hour (one blob per instance, "
        "endpoint and hour, written again with the running totals).")
    monitor_max_pending_rows: int = _setting(
        "MONITOR_MAX_PENDING_ROWS", 50_000, _int(1_000, 100_000_000), MONITORING,
        "Most scored rows held in memory until the background thread counts them (it counts "
        "every 10 s or 8,192 rows: this is reached only when counting falls behind; 8 bytes "
        "per feature and row, 40 MB for 100 features); beyond it rows go uncounted and are "
        "counted in `scorefn.monitor.dropped`, never waited for.")
    monitor_schedule: str = _setting(
        "MONITOR_SCHEDULE", "0 10 * * * *", _SCHEDULE, MONITORING,
        "When the drift evaluation runs (a timer trigger binding `%MONITOR_SCHEDULE%`, so the "
        "app needs this setting; NCRONTAB, default ten minutes past every hour).")
    monitor_window_hours: int = _setting(
        "MONITOR_WINDOW_HOURS", 24, _int(1, 24 * 90), MONITORING,
        "Hours of served counts each evaluation compares (ending with the current hour).")
    monitor_psi_threshold: float = _setting(
        "MONITOR_PSI_THRESHOLD", 0.2, _float(0.01, 10.0), MONITORING,
        "Population stability index at or over which a feature (or the predictions) counts as "
        "drifted (see docs/monitoring-statistics.md for the false-alarm rates).")
    monitor_min_rows: int = _setting(
        "MONITOR_MIN_ROWS", 200, _int(1, 100_000_000), MONITORING,
        "Fewest rows for a drift to count: a feature's effective rows for its PSI (its values "
        "on both sides, `nb*ns/(nb+ns)`), served rows for a jump in its missing or "
        "out-of-range rate. Fewer give PSI values over the threshold by chance "
        "(docs/monitoring-statistics.md).")

    # -- Compiled trees (models) ---------------------------------------------------------------
    compiled_trees: bool = _setting(
        "COMPILED_TREES", True, _BOOL, MODELS,
        "Serve a model compiled (native code, lleaves/LLVM) from its first request when an "
        "artifact built at upload is stored beside it (`scorefn upload-model`, `scorefn "
        "compile-model`; see docs/compiled-trees.md); LightGBM serves otherwise. `false`: "
        "LightGBM serves every model and no artifact is read.")
    compile_on_instance: tuple[str, ...] = _setting(
        "COMPILE_ON_INSTANCE", (), _MODEL_PATTERNS, MODELS,
        "Model names or glob patterns (`churn`, `churn/*`, `*` for all) compiled on the "
        "instance, in the background, when they load without an artifact (a fallback for models "
        "uploaded by other tools: it costs the instance minutes of CPU); empty: off. Matched "
        "against the model name and its blob path.")
    compiled_cache_dir: str = _setting(
        "COMPILED_CACHE_DIR", "", _ABSOLUTE_DIR, MODELS,
        "Local directory caching compiled-tree artifacts, private to the app's user (created "
        "mode 0700); empty: `scorefn-compiled` in the temp directory.")
    compiled_timeout_seconds: float = _setting(
        "COMPILED_TIMEOUT_SECONDS", 900.0, _float(10.0, 86400.0), MODELS,
        "Longest one model's compilation may take; it is stopped beyond, and the model stays on "
        "LightGBM.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read and validate every setting from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, spec in SPEC.items():
            if name in overrides:
                values[name] = overrides[name]
                continue
            raw = env.get(spec.env)
            values[name] = spec.default if raw is None or raw.strip() == "" else _parse(spec, raw)
        settings = cls(**values)
        for rule in RULES:
            rule.check(settings)
        return settings


# Every setting of :class:`Settings` by attribute name (its declaration, from the field).
SPEC: dict[str, Setting] = {f.name: f.metadata["setting"] for f in fields(Settings)}


def _parse(spec: Setting, raw: str) -> Any:
    try:
        return spec.parse(raw)
    except ValueError as exc:
        # The value itself is not echoed: a misplaced secret must not reach logs.
        raise SettingsError(f"app setting {spec.env} {_reason(exc)}") from None


def _reason(exc: ValueError) -> str:
    text = str(exc)
    return text if text.startswith(("must", "is ")) else "must be a number"


# -- rules between settings ------------------------------------------------------------------


def _one_router_config(s: Settings) -> None:
    if s.router_config and s.router_config_blob:
        raise SettingsError("app settings ROUTER_CONFIG and ROUTER_CONFIG_BLOB are both set; "
                            "set one (the Bicep sets ROUTER_CONFIG_BLOB unless its "
                            "routerConfigBlob parameter is '')")


def _largest_model_fits_cache(s: Settings) -> None:
    if s.max_model_mb > s.model_cache_max_mb:
        raise SettingsError("app setting MAX_MODEL_MB must not exceed MODEL_CACHE_MAX_MB: a "
                            "model that size could never stay in the cache")


def _batch_containers_apart(s: Settings) -> None:
    guarded = {s.model_container: "MODEL_CONTAINER",
               s.prediction_log_container: "PREDICTION_LOG_CONTAINER",
               s.outcome_log_container: "OUTCOME_LOG_CONTAINER",
               s.monitor_container: "MONITOR_CONTAINER"}
    for setting, names in (("BATCH_CONTAINER", (s.batch_container,)),
                           ("BATCH_ALLOWED_CONTAINERS", s.batch_allowed_containers)):
        for name in names:
            if name in guarded:
                raise SettingsError(f"app setting {setting} must not name {guarded[name]}: "
                                    f"batch jobs would read and write it")
            if name.startswith(_HOST_CONTAINER_PREFIXES):
                raise SettingsError(f"app setting {setting} must not name the Functions host's "
                                    f"own containers (azure-webjobs-*, app-package-*)")


# Checked in this order by :meth:`Settings.from_env`, after every setting parsed alone.
RULES: tuple[Rule, ...] = (
    Rule("`ROUTER_CONFIG` and `ROUTER_CONFIG_BLOB` are not both set (the Bicep sets "
         "`ROUTER_CONFIG_BLOB` unless its `routerConfigBlob` parameter is `''`).",
         _one_router_config),
    Rule("`MAX_MODEL_MB` is at most `MODEL_CACHE_MAX_MB`: a larger model could never stay in "
         "the cache.", _largest_model_fits_cache),
    Rule("`BATCH_CONTAINER` and `BATCH_ALLOWED_CONTAINERS` name neither `MODEL_CONTAINER`, "
         "`PREDICTION_LOG_CONTAINER`, `OUTCOME_LOG_CONTAINER`, `MONITOR_CONTAINER` nor the "
         "Functions host's own "
         "containers (`azure-webjobs-*`, `app-package-*`): batch jobs read and write them.",
         _batch_containers_apart),
)


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
    """How telemetry is exported (see shared/telemetry/setup.py)."""

    connection_string: str | None
    aad_client_id: str | None  # None: no Entra ID; "": system-assigned identity
    worker_managed: bool
    log_payloads: bool
    export_interval_ms: int
    trace_sample_ratio: float
    local_reader: bool = False


def _optional_text(raw: str) -> str | None:
    return raw.strip() or None


def _aad_client_id(raw: str) -> str | None:
    """``Authorization=AAD[;ClientId=<id>]``: the client id ("" for system-assigned), or None."""
    auth = raw.strip()
    if not auth:
        return None
    parts = dict(p.split("=", 1) for p in auth.split(";") if "=" in p)
    if parts.get("Authorization", "").upper() != "AAD":
        raise ValueError("must be Authorization=AAD[;ClientId=<client id>]")
    return parts.get("ClientId", "")


def _telemetry_setting(env: str, default: Any, kind: Kind, doc: str) -> Setting:
    return Setting(env, default, kind.parse, kind.allowed, doc, TELEMETRY)


# The telemetry settings by variable, read by :func:`telemetry_settings`.
TELEMETRY_SPEC: dict[str, Setting] = {s.env: s for s in (
    _telemetry_setting(
        "APPLICATIONINSIGHTS_CONNECTION_STRING", None,
        Kind(_optional_text, "an Application Insights connection string"),
        "Application Insights connection string; telemetry is exported only when set."),
    _telemetry_setting(
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING", None,
        Kind(_aad_client_id, "`Authorization=AAD` or `Authorization=AAD;ClientId=<client id>`"),
        "Send telemetry with the managed identity (Entra ID): the user-assigned one whose "
        "client id is given, else the system-assigned one."),
    _telemetry_setting(
        "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", False, _BOOL,
        "`true` when the Python worker configures Azure Monitor itself; scorefn then adds its "
        "meters and spans to that pipeline instead of configuring a second one."),
    _telemetry_setting(
        "TELEMETRY_LOG_PAYLOADS", False, _BOOL,
        "`true` to include the request body (its first 2 KiB) in failure logs (default: never "
        "payloads)."),
    _telemetry_setting(
        "TELEMETRY_EXPORT_INTERVAL_SECONDS", 60.0, _float(1.0, 3600.0),
        "How often metrics are exported."),
    _telemetry_setting(
        "TELEMETRY_TRACE_SAMPLE_RATIO", 0.05, _float(0.0, 1.0),
        "Share of requests traced when the caller sent no sampled `traceparent` (a caller's "
        "sampled trace is always continued); metrics are never sampled."),
    _telemetry_setting(
        "TELEMETRY_LOCAL_READER", False, _BOOL,
        "`true` (local runs, the demo) keeps metrics in memory and serves a latency summary at "
        "`GET /api/metrics/latency` (admin key); ignored when exporting."),
)}


def telemetry_settings(env: Mapping[str, str] | None = None) -> TelemetrySettings:
    """Read and validate the telemetry settings."""
    env = os.environ if env is None else env

    def read(name: str) -> Any:
        spec = TELEMETRY_SPEC[name]
        raw = env.get(name)
        # Unlike Settings.from_env, only an unset or empty value takes the default here.
        return spec.default if not raw else _parse(spec, raw)

    client_id = read("APPLICATIONINSIGHTS_AUTHENTICATION_STRING")
    flags = {name: read(name) for name in ("TELEMETRY_LOG_PAYLOADS",
                                           "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
                                           "TELEMETRY_LOCAL_READER")}
    interval = read("TELEMETRY_EXPORT_INTERVAL_SECONDS")
    ratio = read("TELEMETRY_TRACE_SAMPLE_RATIO")
    return TelemetrySettings(
        trace_sample_ratio=ratio,
        connection_string=read("APPLICATIONINSIGHTS_CONNECTION_STRING"),
        aad_client_id=client_id, worker_managed=flags["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"],
        log_payloads=flags["TELEMETRY_LOG_PAYLOADS"], local_reader=flags["TELEMETRY_LOCAL_READER"],
        export_interval_ms=int(interval * 1000))


# Settings scorefn's code does not validate: read by the Functions host, the local host
# (devhost) or set by the platform. Listed so that docs/settings.md and the checks of
# local.settings.example.json know every name.
HOST_SETTINGS: dict[str, str] = {
    "AzureWebJobsStorage":
        "The Functions host's storage connection (triggers, keys, leases); the default connection "
        "of `MODEL_STORAGE_CONNECTION` and `PREDICTION_LOG_CONNECTION`, and the account of the "
        "batch queues and containers. Locally `UseDevelopmentStorage=true` (Azurite); deployed, "
        "identity-based (`AzureWebJobsStorage__blobServiceUri` etc.).",
    "FUNCTIONS_WORKER_RUNTIME":
        "`python`: the Functions host's worker runtime (local runs; Flex Consumption takes it "
        "from the app's configuration).",
    "AzureWebJobsFeatureFlags":
        "Functions host feature flags; `EnableWorkerIndexing` for the Python v2 programming "
        "model (local runs).",
    "DEVHOST_FUNCTION_KEY":
        "The key the local host (devhost) accepts for function-level routes (in Azure the host "
        "manages its keys).",
    "DEVHOST_MASTER_KEY":
        "The key the local host (devhost) accepts for admin-level routes.",
    "WEBSITE_SITE_NAME":
        "Set by the platform: the app's name, used as the service name in telemetry (`scorefn` "
        "when absent).",
}
