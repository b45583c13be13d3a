"""Helpers of the hardening tests (tests/hardening/test_*.py): run-size knobs, the per-run
report, a host over the demo models, an independent prediction oracle, and process sampling.

Run sizes: ``make test`` runs every fuzz test, drill and the soak in a bounded short form.
``SCOREFN_FUZZ_SCALE`` multiplies the number of fuzz examples (``make fuzz``: 20),
``SCOREFN_KILL_CYCLES`` sets the SIGKILL cycles of the batch drill (``make drills``: 10) and
``SCOREFN_SOAK_SECONDS`` the soak's length (``make soak``: 600).
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson

from tests.azurite_support import new_container, unique

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_KEY = "hardening-function-key"
MASTER_KEY = "hardening-master-key"
REPORT_PATH = ROOT / ".pytest_cache" / "hardening" / "report.json"
MODELS = ("churn", "price", "segment")


def fuzz_scale() -> int:
    return max(1, int(os.environ.get("SCOREFN_FUZZ_SCALE", "1")))


def long_run() -> bool:
    """Whether this is one of the long runs (make fuzz / drills / soak)."""
    return fuzz_scale() > 1 or "SCOREFN_KILL_CYCLES" in os.environ or "SCOREFN_SOAK_SECONDS" in os.environ


def hypothesis_settings(max_examples: int, **kwargs: Any):
    """Settings for a fuzz test: ``max_examples`` times the fuzz scale, no deadline (the
    host is on a shared machine), the example database under .pytest_cache, and no
    shrinking in the short runs (shrinking over HTTP can take minutes; the failing example
    is printed as found)."""
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    if long_run():
        phases.append(Phase.shrink)
    return settings(max_examples=max_examples * fuzz_scale(), deadline=None, phases=phases,
                    database=DirectoryBasedExampleDatabase(str(ROOT / ".pytest_cache" / "hypothesis")),
                    suppress_health_check=list(HealthCheck), print_blob=False, **kwargs)


def report(request, name: str, **figures: Any) -> None:
    """Record a run's figures in .pytest_cache/hardening/report.json and print one line
    (through pytest's terminal writer, so ``-s`` is not needed)."""
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(REPORT_PATH.read_text())
    except (OSError, ValueError):
        data = {}
    figures = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "scale": fuzz_scale(), **figures}
    data[name] = figures
    REPORT_PATH.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    text = ", ".join(f"{k}={_short(v)}" for k, v in figures.items() if k != "when")
    line = f"[hardening] {name}: {text}"
    writer = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if writer is None or capture is None:  # pragma: no cover - plugins disabled
        print(line)
        return
    with capture.global_and_fixture_disabled():
        writer.ensure_newline()
        writer.write_line(line)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in sorted(value.items(), key=str)) + "}"
    return str(value)



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then closed)."""
    return free_port()


def host_env(connection_string: str, container: str, **extra: str) -> dict[str, str]:
    """App settings of a hardening host: its own containers for the logs, no real queues."""
    return {"AzureWebJobsStorage": connection_string, "MODEL_CONTAINER": container,
            "DEVHOST_FUNCTION_KEY": FUNCTION_KEY, "DEVHOST_MASTER_KEY": MASTER_KEY,
            "SCORE_QUEUE_NAME": unique("q"), "RESULTS_QUEUE_NAME": unique("r"),
            "CHUNK_QUEUE_NAME": unique("c"),
            "PREDICTION_LOG_CONTAINER": unique("pl"), "OUTCOME_LOG_CONTAINER": unique("ol"),
            # The Azure Monitor exporter's own telemetry and remote configuration reach the
            # internet; hardening hosts only ever talk to 127.0.0.1.
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
            "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
            "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
            **extra}


def make_models_container(connection_string: str, demo_models, names: Iterable[str] = MODELS):

    container = new_container(connection_string, unique("hm"))
    for name in names:
        container.upload_blob(f"{name}.txt", demo_models[name].path.read_bytes(), overwrite=True)
    return container


def json_rows(X: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(v) else float(v) for v in row] for row in X]


# -- JSON texts with odd tokens -------------------------------------------------------------

class Raw:
    """A token written verbatim into a JSON text (NaN, 1e999, a duplicate key ...)."""

    def __init__(self, text: bytes) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text!r})"


class Pairs(list):
    """A JSON object given as (key, value) pairs, so keys may repeat."""


def emit(value) -> bytes:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return b"{" + b",".join(emit(k) + b":" + emit(v) for k, v in value) + b"}"
    if isinstance(value, dict):
        return emit(Pairs(value.items()))
    if isinstance(value, list):
        return b"[" + b",".join(emit(v) for v in value) + b"]"
    if type(value) is int:  # any size (orjson writes 64-bit integers only)
        return str(value).encode()
    return orjson.dumps(value)


# -- the oracle ---------------------------------------------------------------------------

_INT_RANGES = {"INT8": 8, "INT16": 16, "INT32": 32, "INT64": 64,
               "UINT8": 8, "UINT16": 16, "UINT32": 32, "UINT64": 64}
_FLOAT_TYPES = ("FP16", "FP32", "FP64")
BYTES = "BYTES"


class NotScorable(Exception):
    """The oracle would refuse this body (the server should answer 4xx)."""


@dataclass
class _Table:
    """A parsed request: ``X`` in the model's feature order (NaN where a categorical
    feature's values are in ``values``); ``values`` holds, for the frame path (records and
    per-feature V2 tensors of a model with pandas categories), each categorical feature's
    category values as sent (``None`` for null or absent)."""

    X: np.ndarray
    values: dict[int, list[Any]] = field(default_factory=dict)


@dataclass
class Oracle:
    """What ``lightgbm.Booster.predict`` says a body should score, written independently of
    shared/payloads (a reading of the README's request formats and docs/models.md).

    Names: a feature is named by its stored name, or by a name that becomes it when every
    space is replaced by ``_`` (LightGBM's renaming at training); two names for one feature
    in one record (or two V2 tensors) are refused. Categories come from lightgbm itself
    (``Booster.pandas_categorical``, paired with the ``categorical_feature`` parameter the
    Booster read from the file): category values are scored as ``Booster.predict`` scores a
    DataFrame whose categorical columns are ``pd.Categorical(values, categories=...)`` (pandas
    maps them; unseen values are missing), codes (numbers in ``rows`` and the V2 matrix) as it
    scores a numpy matrix."""

    boosters: dict[str, lgb.Booster]
    features: dict[str, list[str]]
    max_rows: int
    # model -> feature index -> its pandas categories, in code order
    categories: dict[str, dict[int, list[Any]]] = field(default_factory=dict)
    # models with pandas categories that cannot be paired with features: values refused
    unplaced: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, demo_models, max_rows: int, names: Sequence[str] = MODELS) -> Oracle:
        boosters = {n: lgb.Booster(model_file=str(demo_models[n].path)) for n in names}
        categories: dict[str, dict[int, list[Any]]] = {}
        unplaced: set[str] = set()
        for n, b in boosters.items():
            lists = b.pandas_categorical or []
            positions = b.params.get("categorical_feature", [])
            if not isinstance(positions, list):
                positions = [positions]
            width = b.num_feature()
            if lists and (len(lists) != len(positions)
                          or not all(type(p) is int and 0 <= p < width for p in positions)):
                unplaced.add(n)
            elif lists:
                categories[n] = {p: list(v) for p, v in zip(positions, lists)}
        return cls(boosters, {n: b.feature_name() for n, b in boosters.items()}, max_rows,
                   categories, unplaced)

    def model_of(self, name: str) -> str | None:
        for suffix in (".txt.gz", ".txt"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        return name if name in self.boosters else None

    def resolve(self, model: str, name: str) -> int | None:
        """The feature a sent name means: its stored name, or spaces for its '_'."""
        names = self.features[model]
        for candidate in (name, name.replace(" ", "_")):
            if candidate in names:
                return names.index(candidate)
        return None

    def predict(self, name: str, doc: Any, fmt: str) -> np.ndarray:
        """The expected predictions, or :class:`NotScorable`."""
        model = self.model_of(name)
        if model is None:
            raise NotScorable("no such model")
        table, options = (self._v2 if fmt == "v2" else self._score)(doc, model)
        if not 0 < table.X.shape[0] <= self.max_rows:
            raise NotScorable("row count")
        booster = self.boosters[model]
        if table.values:
            data = self._frame(model, table)
        else:
            data = table.X
        with self._lock:
            return booster.predict(data, **options)

    def _frame(self, model: str, table: _Table):
        """The DataFrame training code would have held: categorical columns as pandas
        categoricals of the model's categories (an unseen value is given as None, which is
        what pandas makes of it, without its deprecation warning), the rest float64."""
        import pandas as pd

        cats = self.categories[model]
        columns: dict[str, Any] = {}
        for j, feature in enumerate(self.features[model]):
            if j in cats:
                known = cats[j]
                columns[feature] = pd.Categorical(
                    [v if v is not None and v in known else None for v in table.values[j]],
                    categories=known)
            else:
                columns[feature] = table.X[:, j]
        return pd.DataFrame(columns)

    # -- cells

    def _category_value(self, model: str, j: int, value: Any) -> Any:
        """A category value as sent for feature ``j``: null, or of its categories' type."""
        if model in self.unplaced:
            raise NotScorable("categories cannot be placed")
        if value is None:
            return None
        kind = _category_kind(self.categories[model][j])
        if kind == "str" and type(value) is str or kind == "bool" and type(value) is bool \
                or kind == "number" and type(value) in (int, float):
            return value
        raise NotScorable("category value of the wrong type")

    def _codes_of(self, model: str, j: int, values: list[Any]) -> np.ndarray:
        """Category values to codes, by pandas (-1, unseen or null, as NaN)."""
        import pandas as pd

        known = self.categories[model][j]
        codes = pd.Categorical([v if v in known else None for v in values], categories=known).codes
        return np.where(codes < 0, np.nan, codes.astype(np.float64))

    # -- score: rows / records

    def _score(self, doc: Any, model: str) -> tuple[_Table, dict[str, bool]]:
        if not isinstance(doc, dict) or set(doc) - {"rows", "records", "options"}:
            raise NotScorable("fields")
        if ("rows" in doc) == ("records" in doc):
            raise NotScorable("rows xor records")
        options = self._options(doc.get("options"), strict=True)
        names = self.features[model]
        cats = self.categories.get(model, {})
        if "rows" in doc:
            rows = doc["rows"]
            if not isinstance(rows, list) or not rows:
                raise NotScorable("rows")
            for row in rows:
                if not isinstance(row, list) or len(row) != len(names):
                    raise NotScorable("row width")
            return self._rows(rows, model), options
        records = doc["records"]
        if not isinstance(records, list) or not records:
            raise NotScorable("records")
        X = np.full((len(records), len(names)), np.nan)
        values: dict[int, list[Any]] = {j: [None] * len(records) for j in cats}
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise NotScorable("record")
            seen: set[int] = set()
            for key, value in rec.items():
                j = self.resolve(model, key)
                if j is None:
                    raise NotScorable("unknown feature")
                if j in seen:
                    raise NotScorable("one feature named twice")
                seen.add(j)
                if j in cats:
                    values[j][i] = self._category_value(model, j, value)
                else:
                    X[i, j] = self._number(value)
        return _Table(X, values), options

    def _rows(self, rows: list[list[Any]], model: str) -> _Table:
        """Rows in feature order: numbers (codes in categorical places, as a numpy matrix is
        read), and in categorical places category values too (strings, or the categories'
        own type), mapped to codes by pandas."""
        cats = self.categories.get(model, {})
        X = np.empty((len(rows), len(self.features[model])))
        for j in range(X.shape[1]):
            column = [row[j] for row in rows]
            if j not in cats:
                X[:, j] = [self._number(v) for v in column]
                continue
            kind = _category_kind(cats[j])
            as_value = [type(v) is str or type(v) is bool for v in column]
            for v, is_value in zip(column, as_value):
                if is_value and not (kind == "str" and type(v) is str or kind == "bool" and type(v) is bool):
                    raise NotScorable("category value of the wrong type")
            X[:, j] = [self._number(v) if not is_value else np.nan
                       for v, is_value in zip(column, as_value)]
            picked = [i for i, is_value in enumerate(as_value) if is_value]
            if picked:
                X[picked, j] = self._codes_of(model, j, [column[i] for i in picked])
        return _Table(X)

    # -- V2

    def _v2(self, doc: Any, model: str) -> tuple[_Table, dict[str, bool]]:
        if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
            raise NotScorable("inputs")
        if doc.get("id") is not None and not isinstance(doc["id"], str):
            raise NotScorable("id")
        params = doc.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise NotScorable("parameters")
        options = self._options({k: v for k, v in (params or {}).items()
                                 if k in ("raw_score", "pred_contrib")}, strict=True)
        outputs = doc.get("outputs")
        if outputs is not None and (not isinstance(outputs, list) or not all(
                isinstance(o, dict) and o.get("name") == "predict" for o in outputs)):
            raise NotScorable("outputs")
        names = self.features[model]
        cats = self.categories.get(model, {})
        tensors = [self._tensor(t) for t in doc["inputs"]]
        if len(tensors) == 1 and self.resolve(model, tensors[0][0]) is None:
            _, shape, datatype, values = tensors[0]
            if datatype == BYTES:
                raise NotScorable("BYTES matrix")
            if len(shape) != 2 or shape[1] != len(names):
                raise NotScorable("matrix shape")
            return _Table(values.reshape(shape[0], len(names))), options
        rows = None
        sent: dict[int, tuple[str, Any]] = {}
        for name, shape, datatype, values in tensors:
            j = self.resolve(model, name)
            if j is None or j in sent:
                raise NotScorable("column name")
            if not (len(shape) == 1 or shape[1] == 1):
                raise NotScorable("column shape")
            if rows is None:
                rows = shape[0]
            elif rows != shape[0]:
                raise NotScorable("column rows")
            sent[j] = (datatype, values)
        X = np.full((rows or 0, len(names)), np.nan)
        by_value: dict[int, list[Any]] = {j: [None] * (rows or 0) for j in cats}
        for j, (datatype, values) in sent.items():
            if j not in cats:
                if datatype == BYTES:
                    raise NotScorable("BYTES tensor for a numeric feature")
                X[:, j] = values
            elif datatype == BYTES:
                by_value[j] = [self._category_value(model, j, v) for v in values]
            elif _category_kind(cats[j]) == "number":
                by_value[j] = [None if np.isnan(v) else float(v) for v in values]
            else:
                raise NotScorable("numeric tensor for a categorical feature")
        return _Table(X, by_value), options

    def _tensor(self, raw: Any) -> tuple[str, list[int], str, Any]:
        """A tensor's name, shape, datatype and values: float64 for a numeric tensor, the
        strings (or None) of a BYTES one."""
        if not isinstance(raw, dict):
            raise NotScorable("tensor")
        name, shape, datatype, data = (raw.get(k) for k in ("name", "shape", "datatype", "data"))
        if not isinstance(name, str) or not name:
            raise NotScorable("tensor name")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 2
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise NotScorable("tensor shape")
        if not isinstance(datatype, str) or datatype not in (*_FLOAT_TYPES, *_INT_RANGES, BYTES):
            raise NotScorable("datatype")
        if not isinstance(data, list):
            raise NotScorable("tensor data")
        if data and all(isinstance(d, list) for d in data):
            # nested: the shape's rows, each of its width (1 for a [n] tensor)
            inner = shape[1] if len(shape) == 2 else 1
            if len(data) != shape[0] or any(len(d) != inner for d in data):
                raise NotScorable("nesting other than the shape's rows")
            flat = [v for d in data for v in d]
        elif any(isinstance(d, list) for d in data):
            raise NotScorable("mixed nesting")
        else:
            flat = data
        if len(flat) != math.prod(shape):
            raise NotScorable("tensor size")
        if datatype == BYTES:
            if not all(v is None or type(v) is str for v in flat):
                raise NotScorable("BYTES data that is not strings")
            return name, shape, datatype, flat
        values = np.array([self._number(v) for v in flat], dtype=np.float64)
        if datatype in ("FP16", "FP32"):
            with np.errstate(over="ignore"):
                values = values.astype(np.float16 if datatype == "FP16" else np.float32).astype(np.float64)
            if np.isinf(values).any():
                raise NotScorable("overflow")
        elif datatype in _INT_RANGES:
            bits = _INT_RANGES[datatype]
            lo, hi = ((0, 2 ** bits - 1) if datatype.startswith("U")
                      else (-2 ** (bits - 1), 2 ** (bits - 1) - 1))
            # Exactly, as Python ints (in float64, 2**63 would pass as INT64); a float only below
            # 2**53, where it cannot be a literal that JSON parsing rounded.
            for v in flat:
                if not (type(v) is int or type(v) is float and v.is_integer() and abs(v) < 2 ** 53) \
                        or not lo <= int(v) <= hi:
                    raise NotScorable("integer")
        return name, shape, datatype, values

    @staticmethod
    def _number(value: Any) -> float:
        if value is None:
            return math.nan
        if type(value) not in (int, float):
            raise NotScorable("not a number")
        return float(value)

    @staticmethod
    def _options(raw: Any, strict: bool) -> dict[str, bool]:
        if raw is None:
            return {}
        if not isinstance(raw, dict) or (strict and set(raw) - {"raw_score", "pred_contrib"}):
            raise NotScorable("options")
        if not all(isinstance(v, bool) for v in raw.values()):
            raise NotScorable("option value")
        if raw.get("raw_score") and raw.get("pred_contrib"):
            raise NotScorable("both options")
        return {k: v for k, v in raw.items() if v}


def _category_kind(values: Sequence[Any]) -> str:
    """What a categorical feature's values are: "str", "number", "bool" (or "mixed")."""
    kinds = {"str" if type(v) is str else "bool" if type(v) is bool else
             "number" if type(v) in (int, float) else "other" for v in values}
    return kinds.pop() if len(kinds) == 1 else "mixed"


_NON_FINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def _read_numbers(values: Any) -> Any:
    if isinstance(values, list):
        return [_read_numbers(v) for v in values]
    if isinstance(values, str):
        return _NON_FINITE[values]  # any other string: a KeyError, the test fails
    return values


def predictions_of(doc: Mapping[str, Any], fmt: str) -> np.ndarray:
    """The predictions of a 200 response body, shaped as Booster.predict returns them
    (non-finite values are written "Infinity", "-Infinity" and "NaN")."""
    if fmt == "v2":
        out = doc["outputs"][0]
        return np.array(_read_numbers(out["data"]), dtype=np.float64).reshape(out["shape"])
    return np.array(_read_numbers(doc["predictions"]), dtype=np.float64)


# -- process sampling -----------------------------------------------------------------------

@dataclass
class Sample:
    t: float
    rss_mb: float
    threads: int
    fds: int


class ProcessSampler:
    """Samples a process's RSS, threads and file descriptors every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")
        self._t0 = time.monotonic()

    def sample(self) -> Sample:
        with self.process.oneshot():
            s = Sample(time.monotonic() - self._t0, self.process.memory_info().rss / 2**20,
                       self.process.num_threads(), self.process.num_fds())
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # the process is gone: the test will say so
                return

    def start(self) -> ProcessSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def slope_mb_per_min(self, since: float) -> float:
        """Least-squares slope of RSS over the samples from ``since`` seconds on."""
        pts = [(s.t, s.rss_mb) for s in self.samples if s.t >= since]
        if len(pts) < 3:
            return 0.0
        t = np.array([p[0] for p in pts])
        y = np.array([p[1] for p in pts])
        return float(np.polyfit(t, y, 1)[0] * 60)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else math.nan


# -- a slow TCP proxy -------------------------------------------------------------------------

class DelayProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream_port`` (asyncio, in a thread) that
    waits ``delay`` seconds before forwarding each chunk the client sends: every storage
    request through it is slowed by ``delay``, responses are not. ``requests_delayed``
    counts the chunks that were held back."""

    def __init__(self, upstream_port: int) -> None:
        import asyncio

        self.upstream_port = upstream_port
        self.delay = 0.0
        self.requests_delayed = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="delay-proxy")

    def start(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self._loop)

        async def pipe(reader, writer, slow: bool) -> None:
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    if slow and self.delay > 0:
                        self.requests_delayed += 1
                        await asyncio.sleep(self.delay)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                try:
                    writer.close()
                except Exception:
                    pass

        async def handle(client_reader, client_writer) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                client_writer.close()
                return
            await asyncio.gather(pipe(client_reader, up_writer, True),
                                 pipe(up_reader, client_writer, False))

        async def main() -> None:
            self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            async with self._server:
                await self._server.serve_forever()

        try:
            self._loop.run_until_complete(main())
        except Exception:
            pass

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


class Load:
    """``threads`` client threads calling ``fn(client)`` in a loop until stopped; each call
    returns (ok, seconds, detail). Results are kept with their time."""

    def __init__(self, base_url: str, fn, threads: int = 4, headers: Mapping[str, str] | None = None) -> None:
        import httpx

        self.fn = fn
        self.results: list[tuple[float, bool, float, Any]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._clients = [httpx.Client(base_url=base_url, timeout=30, headers=dict(headers or {}))
                         for _ in range(threads)]
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in self._clients]
        self.t0 = time.monotonic()

    def _run(self, client) -> None:
        while not self._stop.is_set():
            try:
                ok, seconds, detail = self.fn(client)
            except Exception as exc:  # a transport error is a failed request
                ok, seconds, detail = False, 0.0, repr(exc)
            with self._lock:
                self.results.append((time.monotonic() - self.t0, ok, seconds, detail))

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        for c in self._clients:
            c.close()

    def failures(self) -> list:
        return [r for r in self.results if not r[1]]
