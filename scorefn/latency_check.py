"""The pre-deployment latency check: a model measured on this machine, beside the reference.

What is measured, for the model and for the project's reference model (the bench model:
500 trees, 63 leaves, 100 features, shipped here as ``reference_model.txt.gz``) in the same
run, calls of the two interleaved round by round so that both see the same machine:

- **parse**: the model text to a loaded model (``shared.models.model.parse_model``, as the app loads
  a blob), the median of a few parses;
- **memory**: the resident memory the loaded model added (RSS before and after, freed memory
  handed back to the system first); a rough figure, ``None`` where RSS cannot be read;
- **single row p50/p99**: one row through the app's core path, as ``bench/core_path.py``
  measures it: a JSON body ``{"rows": [[...]]}`` in, ``ScoringService.score`` (check, read
  the body, predict, encode the response) out, one model and no router, telemetry off;
- **batch rows/s**: 1,000-row requests through the same path (one thread: the app predicts
  requests under ``PREDICT_PARALLEL_MIN_ROWS`` rows on one thread).

Rows are drawn from a seeded generator over each model's own feature ranges (its
``feature_infos``; categories from its category lists). The figures are an estimate from
this machine before deployment; live figures come from telemetry.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import gzip
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from scorefn.model_files import ModelShape, model_shape
from shared.models.latency_figures import LatencyFigures

REFERENCE_MODEL = Path(__file__).with_name("reference_model.txt.gz")
REFERENCE_NAME = "reference (bench model)"
DEFAULT_SECONDS = 8.0  # the timing loops' budget; parsing and start-up come on top
BATCH_ROWS = 1000
DISTINCT_ROWS = 1024
MIN_SINGLE_SAMPLES = 200
MAX_SINGLE_SAMPLES = 20_000
MIN_BATCHES = 3
MAX_BATCHES = 60
MAX_PARSES = 5
BUSY_TAIL = 10  # a reference p99 beyond this many times its p50: the machine is busy

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ModelTiming:
    """One model's figures from one run."""

    label: str
    shape: ModelShape
    text_bytes: int
    parse_ms: float
    memory_bytes: int | None
    p50_ms: float
    p99_ms: float
    cpu_p99_ms: float  # the thread's CPU time: without the time spent waiting for a CPU
    single_samples: int
    batch_rows: int
    batches: int
    batch_rows_per_second: float

    def describe_shape(self) -> str:
        return f"{self.shape.trees} trees, {self.shape.max_leaves} leaves, {self.shape.features} features"


@dataclass(frozen=True)
class LatencyReport:
    """The model's and the reference's figures from the same run, and where they come from."""

    model: ModelTiming
    reference: ModelTiming
    machine: str
    measured_at: str  # ISO 8601, UTC
    seconds: float  # how long the whole check took

    def over_budget(self, max_p99_ms: float | None) -> bool:
        return max_p99_ms is not None and self.model.p99_ms > max_p99_ms

    def figures(self) -> LatencyFigures:
        """The model's figures as stored with its blob (see ``shared.models.latency_figures``)."""
        m, r = self.model, self.reference
        return LatencyFigures(
            single_row_p50_ms=m.p50_ms, single_row_p99_ms=m.p99_ms,
            batch_rows_per_second=m.batch_rows_per_second, parse_ms=m.parse_ms,
            memory_mb=None if m.memory_bytes is None else m.memory_bytes / 2**20,
            reference_p50_ms=r.p50_ms, reference_p99_ms=r.p99_ms,
            reference_batch_rows_per_second=r.batch_rows_per_second,
            reference_model=r.describe_shape(), measured_at=self.measured_at,
            machine=self.machine)

    def table(self) -> str:
        """The figures side by side, with the model / reference ratio."""
        m, r = self.model, self.reference
        rows = [
            ("trees x leaves (most)", f"{m.shape.trees} x {m.shape.max_leaves}",
             f"{r.shape.trees} x {r.shape.max_leaves}", ""),
            ("features", f"{m.shape.features}", f"{r.shape.features}", ""),
            ("model text", _mb(m.text_bytes), _mb(r.text_bytes), _ratio(m.text_bytes, r.text_bytes)),
            ("parse", f"{m.parse_ms:.1f} ms", f"{r.parse_ms:.1f} ms", _ratio(m.parse_ms, r.parse_ms)),
            ("memory (loaded)", _mb(m.memory_bytes), _mb(r.memory_bytes),
             _ratio(m.memory_bytes, r.memory_bytes)),
            ("single row p50", f"{m.p50_ms:.3f} ms", f"{r.p50_ms:.3f} ms", _ratio(m.p50_ms, r.p50_ms)),
            ("single row p99", f"{m.p99_ms:.3f} ms", f"{r.p99_ms:.3f} ms", _ratio(m.p99_ms, r.p99_ms)),
            ("single row p99, CPU time", f"{m.cpu_p99_ms:.3f} ms", f"{r.cpu_p99_ms:.3f} ms",
             _ratio(m.cpu_p99_ms, r.cpu_p99_ms)),
            (f"{m.batch_rows:,}-row requests", f"{m.batch_rows_per_second:,.0f} rows/s",
             f"{r.batch_rows_per_second:,.0f} rows/s",
             _ratio(m.batch_rows_per_second, r.batch_rows_per_second)),
        ]
        head = ("", m.label, r.label, "model / reference")
        widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(4)]
        lines = [f"measured {self.measured_at} on {self.machine}"]
        for row in [head, *rows]:
            lines.append("  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
                                   for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
        lines.append(f"{m.single_samples:,} single rows and {m.batches} requests of {m.batch_rows:,} "
                     f"rows per model, interleaved with the reference's; JSON body in -> JSON "
                     f"body out, one thread; {self.seconds:.1f} s")
        if r.p99_ms > BUSY_TAIL * r.p50_ms:
            lines.append(f"note: the reference's p99 is {r.p99_ms / r.p50_ms:.0f}x its p50: this "
                         f"machine is busy, and p99 figures mostly measure waiting for a CPU "
                         f"(compare the CPU time row); run again on a quieter machine for a "
                         f"better estimate")
        lines.append("a pre-deployment estimate from this machine: compare with the reference "
                     "column; live latency comes from telemetry")
        return "\n".join(lines)


def reference_text() -> bytes:
    """The reference model's text (the bench model, shipped compressed with the package)."""
    return gzip.decompress(REFERENCE_MODEL.read_bytes())


def check_latency(model_text: bytes, *, label: str = "model", reference: bytes | None = None,
                  reference_label: str = REFERENCE_NAME, seconds: float = DEFAULT_SECONDS,
                  progress: Progress | None = None) -> LatencyReport:
    """Measure ``model_text`` (a LightGBM text model) beside ``reference`` (default: the
    project's reference model) on this machine; the timing loops take about ``seconds``."""
    from shared.errors import ScoreError
    from shared.models.model import parse_model

    say = progress or (lambda _message: None)
    started = time.perf_counter()
    ref_text = reference if reference is not None else reference_text()
    texts = {"model": model_text, "reference": ref_text}

    say(f"parsing the model and the reference (up to {MAX_PARSES} times each) ...")
    parse_ms: dict[str, float] = {}
    memory: dict[str, int | None] = {}
    kept = []
    for key, text in texts.items():
        budget = max(0.1 * seconds, 0.2)
        times: list[float] = []
        while len(times) < MAX_PARSES and (not times or sum(times) < budget):
            before = _rss_after_trim()
            t0 = time.perf_counter()
            loaded = parse_model(text, name=key, path=key, version="latency-check",
                                 last_modified=None)
            times.append(time.perf_counter() - t0)
            if len(times) == 1:
                after = _rss_after_trim()
                memory[key] = None if before is None or after is None else max(after - before, 0)
                kept.append(loaded)  # kept while the next model's memory is measured
            del loaded
        parse_ms[key] = statistics.median(times) * 1e3
    del kept

    service, bodies, batch_bodies, batch_rows = _service(texts)
    try:
        for key in texts:  # load, and warm each body once
            service.score(key, bodies[key][0], content_type="application/json",
                          request_id="latency-check")
        cases = {key: _caller(service, key, bodies[key]) for key in texts}
        warm = min(DISTINCT_ROWS, 256)
        for i in range(warm):
            for case in cases.values():
                case(i)
        per_call = sum(statistics.mean(_timed(case, 25)) for case in cases.values())
        say(f"single rows: about {0.6 * seconds:.0f} s, calls of the model and the reference "
            f"interleaved ...")
        single = _interleaved(cases, seconds=0.6 * seconds, per_round=_clamp(
            int(0.03 * seconds / per_call), 1, MAX_SINGLE_SAMPLES // 20),
            least=MIN_SINGLE_SAMPLES, most=MAX_SINGLE_SAMPLES)

        batch_cases = {key: _caller(service, key, batch_bodies[key]) for key in texts}
        per_batch = sum(_timed(case, 1)[0] for case in batch_cases.values())
        say(f"{batch_rows:,}-row requests: about {max(0.4 * seconds, MIN_BATCHES * per_batch):.0f}"
            f" s, interleaved ...")
        batches = _interleaved(batch_cases, seconds=0.4 * seconds, per_round=1,
                               least=MIN_BATCHES, most=MAX_BATCHES)
    except ScoreError as exc:  # the model parsed but does not score: say so as the app would
        raise type(exc)(f"the latency check could not score the model: {exc.message}") from None
    finally:
        service.store.close()

    timings = {}
    for key, text in texts.items():
        samples = np.asarray([wall for wall, _ in single[key]])
        cpu = np.asarray([cpu for _, cpu in single[key]])
        batch_p50 = float(np.median([wall for wall, _ in batches[key]]))
        timings[key] = ModelTiming(
            label=label if key == "model" else reference_label, shape=model_shape(text),
            text_bytes=len(text), parse_ms=parse_ms[key], memory_bytes=memory[key],
            p50_ms=float(np.percentile(samples, 50)) * 1e3,
            p99_ms=float(np.percentile(samples, 99)) * 1e3,
            cpu_p99_ms=float(np.percentile(cpu, 99)) * 1e3, single_samples=len(samples),
            batch_rows=batch_rows, batches=len(batches[key]),
            batch_rows_per_second=batch_rows / batch_p50)
    return LatencyReport(model=timings["model"], reference=timings["reference"],
                         machine=machine(), measured_at=_now(),
                         seconds=time.perf_counter() - started)


def machine() -> str:
    """This machine in a few words: cores, architecture, system, CPU, LightGBM version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        lgbm = version("lightgbm")
    except PackageNotFoundError:
        lgbm = "?"
    cpu = _cpu_model()
    text = (f"{os.cpu_count()} cores {platform.machine()} {platform.system()}"
            f"{', ' + cpu if cpu else ''}, Python {platform.python_version()}, LightGBM {lgbm}")
    return text[:120]


# -- the app's code path ------------------------------------------------------------------

class _Memory:
    """A blob source over texts in memory: this measures the request path, not storage."""

    def __init__(self, texts: dict[str, bytes]) -> None:
        self.texts = texts

    def fetch(self, path: str, etag: str | None = None):
        from shared.models.blob_source import BlobContent

        if etag:
            return None
        name = path.removesuffix(".gz").removesuffix(".txt")
        if name not in self.texts or not path.endswith(".txt"):
            from shared.errors import ModelNotFound

            raise ModelNotFound(f"no model {path!r}")
        return BlobContent(self.texts[name], "latency-check", None)

    def ping(self) -> None:
        pass


def _service(texts: dict[str, bytes]):
    """A ScoringService as the app builds one for a single model (no router, telemetry off),
    and the request bodies of each model: single rows and batches."""
    import orjson

    from shared.models.store import ModelStore
    from shared.scoring.service import ScoringService
    from shared.settings import Settings
    from shared.telemetry import Telemetry

    settings = Settings.from_env({})
    store = ModelStore(_Memory(texts), refresh_seconds=3600)
    service = ScoringService(settings, store, telemetry=Telemetry())
    bodies: dict[str, list[bytes]] = {}
    batch_bodies: dict[str, list[bytes]] = {}
    batch_rows = BATCH_ROWS
    for i, (key, text) in enumerate(texts.items()):
        X = sample_rows(text, DISTINCT_ROWS, seed=20261207 + i)
        bodies[key] = [orjson.dumps({"rows": [row]}) for row in X.tolist()]
        row_bytes = max(len(b) for b in bodies[key])
        fits = int(0.9 * settings.max_request_bytes / row_bytes)
        batch_rows = max(1, min(batch_rows, fits, settings.max_rows_per_request))
    for i, (key, text) in enumerate(texts.items()):
        X = sample_rows(text, DISTINCT_ROWS, seed=20261207 + i).tolist()
        batch_bodies[key] = [orjson.dumps({"rows": [X[(start + j) % len(X)]
                                                    for j in range(batch_rows)]})
                             for start in range(0, 3 * batch_rows, batch_rows)]
    return service, bodies, batch_bodies, batch_rows


def _caller(service, key: str, bodies: list[bytes]) -> Callable[[int], None]:
    def call(i: int) -> None:
        service.score(key, bodies[i % len(bodies)], content_type="application/json",
                      request_id="latency-check")
    return call


def sample_rows(text: bytes, n: int, seed: int) -> np.ndarray:
    """``n`` seeded rows over a model's feature ranges: numeric features uniform within the
    ``[min:max]`` its ``feature_infos`` records, categorical ones one of its categories."""
    rng = np.random.default_rng(seed)
    shape = model_shape(text)
    head = text[: max(text.find(b"\nTree="), 0)]
    infos = next((line.split(b"=", 1)[1].split() for line in head.split(b"\n")
                  if line.startswith(b"feature_infos=")), [])
    X = rng.uniform(-1.0, 1.0, size=(n, shape.features))
    for j, info in enumerate(infos[:shape.features]):
        if info.startswith(b"[") and b":" in info:
            lo, hi = (float(v) for v in info[1:-1].split(b":", 1))
            if math.isfinite(lo) and math.isfinite(hi):
                X[:, j] = rng.uniform(lo, hi, n) if hi > lo else lo
        elif info != b"none":
            codes = [float(c) for c in info.split(b":") if c.lstrip(b"-").isdigit()]
            if codes:
                X[:, j] = rng.choice(codes, n)
        else:
            X[:, j] = 0.0  # a feature no tree splits on
    return X


# -- timing ---------------------------------------------------------------------------------

def _timed(case: Callable[[int], None], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        case(i)
        out.append(time.perf_counter() - t0)
    return out


def _interleaved(cases: dict[str, Callable[[int], None]], *, seconds: float, per_round: int,
                 least: int, most: int) -> dict[str, list[tuple[float, float]]]:
    """Timed calls of each case, ``per_round`` at a time, the cases taken in turn round by
    round, until ``seconds`` have passed (at least ``least``, at most ``most`` calls each).
    Each call's (wall time, this thread's CPU time), in seconds."""
    samples: dict[str, list[tuple[float, float]]] = {key: [] for key in cases}
    counter = 0
    deadline = time.perf_counter() + seconds
    clock, cpu_clock = time.perf_counter, time.thread_time
    while True:
        for key, case in cases.items():
            out = samples[key]
            for _ in range(per_round):
                c0 = cpu_clock()
                t0 = clock()
                case(counter)
                t1 = clock()
                out.append((t1 - t0, cpu_clock() - c0))
                counter += 1
        done = min(len(out) for out in samples.values())
        if done >= most or (done >= least and clock() >= deadline):
            return samples


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))


# -- memory ---------------------------------------------------------------------------------

def _rss_after_trim() -> int | None:
    """Resident memory after a collection and after freed heap memory went back to the system
    (glibc's ``malloc_trim``), so that what is left is what is in use."""
    gc.collect()
    _malloc_trim()
    return _rss()


def _malloc_trim() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # macOS and Windows (a development dependency)

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - not installed, or no permission: unknown
        return None


# -- formatting -----------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())[:48]
    except OSError:
        pass
    return platform.processor()[:48]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mb(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 2**20:.2f} MB" if value < 100 * 2**20 else f"{value / 2**20:.0f} MB"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return ""
    return f"{a / b:.2f}x"
