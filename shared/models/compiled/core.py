"""Opt-in compiled trees: a model's forest compiled to native code with lleaves (LLVM).

Models named in ``COMPILED_MODELS`` are compiled off the request path once they have loaded;
LightGBM serves them meanwhile. A compiled forest takes over only after it has predicted the
same as LightGBM (within ``TOLERANCE``, absolute) on sample rows drawn over the model's own
feature ranges and split thresholds, missing values included, for predictions and raw scores,
batch and single rows. Anything lleaves cannot do (categorical splits, linear trees, some
objectives), ``pred_contrib`` requests, a failed or timed-out compilation and a failed check
leave the model on LightGBM.

Compilation runs in a child process (``shared/models/compiled/worker.py``) at a lower CPU priority, one
at a time, with a time limit. Artifacts are cached on local disk and as blobs under
``.compiled/`` in the models container, keyed by the model's blob path and version (ETag), the
container, lleaves/llvmlite/LLVM versions, the compile options and the host CPU (name and
features), so other instances load them instead of compiling. A cached artifact is wrapped in
an envelope naming its key and SHA-256: a corrupted or misplaced artifact is refused before LLVM
sees it (LLVM aborts the process on some malformed objects), and one that loads must still pass
the equality check. The envelope and the check are correctness checks, not a security
boundary: an artifact is native code run in this process, so only the app's identity may write
where artifacts are cached (see the README, "Compiled trees").

llvmlite and lleaves are optional (``requirements-compiled.txt``) and imported only when a model
is compiled or loaded, in the background.
"""

from __future__ import annotations

import collections
import ctypes
import fnmatch
import hashlib
import importlib.util
import json
import logging
import math
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger("scorefn.compiled")

FORMAT = 1
TOLERANCE = 1e-12
BLOB_PREFIX = ".compiled/"
ARTIFACT_SUFFIX = ".bin"
MAX_ARTIFACT_BYTES = 512 * 1024 * 1024
LOCAL_CACHE_MAX_BYTES = 2 * 1024 * 1024 * 1024
# lleaves' defaults: trees in blocks of 34 (instruction-cache blocking), large code model
# (needed by big forests), O3; doubles throughout.
COMPILE_OPTIONS = {"fblocksize": 34, "codemodel": "large", "speed_level": 3, "raw_score": True,
                   "fp64": True}
_MAGIC = b"scorefn-compiled-trees\n"
_ROOT = Path(__file__).resolve().parents[3]  # the app folder (shared/models/compiled/..)
_ENTRY = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double),
                          ctypes.c_int32, ctypes.c_int32)
_ELF_MACHINES = {"x86_64": 62, "aarch64": 183, "arm64": 183}
# LightGBM reads every input with |x| <= kZeroThreshold (1e-35f) as 0.0 (its row iterators skip
# them as zeros); lleaves compares the value itself. They differ only for features with a split
# threshold in [-K, K) (LightGBM puts zero splits at -K): those inputs are zeroed first.
ZERO_THRESHOLD = float(np.float32(1e-35))


class CompileError(Exception):
    """A forest could not be compiled, loaded or checked; ``reason`` is a short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def available() -> bool:
    """lleaves and llvmlite are installed (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("lleaves", "llvmlite"))


# -- what the model is -------------------------------------------------------------------------

_IDENTITY = {"regression", "regression_l2", "l2", "mean_squared_error", "mse", "regression_l1",
             "l1", "mean_absolute_error", "mae", "huber", "fair", "quantile", "mape",
             "mean_absolute_percentage_error", "lambdarank", "rank_xendcg", "xendcg", "none"}
_EXP = {"poisson", "gamma", "tweedie"}


@dataclass(frozen=True)
class Traits:
    """What decides whether and how a model's forest can be compiled."""

    objective: str
    params: dict[str, str]
    num_outputs: int
    num_features: int
    unsupported: str | None
    zero_features: tuple[int, ...] = ()  # features with a threshold in [-K, K), see ZERO_THRESHOLD


def analyse(text: str, num_features: int, num_outputs: int) -> Traits:
    """The model text's objective and anything lleaves would get wrong or cannot compile."""
    head = text[: text.find("\nTree=") + 1] if "\nTree=" in text else text
    header = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    tokens = (header.get("objective") or "").split()
    objective = tokens[0] if tokens else ""
    params = dict(t.split(":", 1) for t in tokens[1:] if ":" in t)
    params.update({t: "" for t in tokens[1:] if ":" not in t})
    reason = None
    num_class = int(header.get("num_class", "1") or 1)
    per_iteration = int(header.get("num_tree_per_iteration", str(num_class)) or num_class)
    infos = (header.get("feature_infos") or "").split()
    if objective not in _IDENTITY | _EXP | {"binary", "cross_entropy", "xentropy",
                                             "cross_entropy_lambda", "xentlambda", "multiclass",
                                             "softmax", "multiclassova", "multiclass_ova", "ova",
                                             "ovr"}:
        reason = f"objective {objective or '(none)'!r} is not supported"
    elif per_iteration != num_class or num_outputs != num_class:
        reason = "trees per iteration differ from the number of classes"
    elif "\nTree=" not in text:
        reason = "the model has no trees"
    elif any(not (i.startswith("[") or i == "none") for i in infos) or re.search(
            r"^num_cat=[1-9]", text, re.M):
        # lleaves casts categorical values to int32 differently from LightGBM (negative and
        # very large values, fractions): left to LightGBM.
        reason = "categorical features are not supported"
    elif re.search(r"^is_linear=1", text, re.M):
        reason = "linear trees are not supported by lleaves"
    elif re.search(r"^average_output$", head, re.M):
        # LightGBM's raw scores of a random forest are not averaged, its predictions are.
        reason = "random forests (average_output) are not supported"
    if "sigmoid" in params:
        try:
            if not float(params["sigmoid"]) > 0:
                reason = "sigmoid parameter must be positive"
        except ValueError:
            reason = "unreadable sigmoid parameter"
    thresholds, zero_missing = _splits(text, num_features)
    zero_features = tuple(j for j, ts in enumerate(thresholds)
                          if j in zero_missing or any(-ZERO_THRESHOLD <= t < ZERO_THRESHOLD for t in ts))
    return Traits(objective, params, num_outputs, num_features, reason, zero_features)


def _splits(text: str, num_features: int) -> tuple[list[list[float]], set[int]]:
    """The split thresholds of each feature, and the features with a zero-as-missing split
    (LightGBM takes |x| <= K as zero there; lleaves only 0.0)."""
    thresholds: list[list[float]] = [[] for _ in range(num_features)]
    zero_missing: set[int] = set()
    split_features: list[int] = []
    for line in text.splitlines():
        if line.startswith("split_feature="):
            split_features = [int(v) for v in line[14:].split()]
        elif line.startswith("threshold=") and split_features:
            for j, t in zip(split_features, line[10:].split()):
                if 0 <= j < num_features:
                    thresholds[j].append(float(t))
        elif line.startswith("decision_type=") and split_features:
            for j, d in zip(split_features, line[14:].split()):
                if (int(d) >> 2) & 3 == 1:  # MissingType::Zero
                    zero_missing.add(j)
    return thresholds, zero_missing


def output_transform(traits: Traits) -> Callable[[np.ndarray], np.ndarray]:
    """LightGBM's conversion of raw scores (n, k) to predictions, in its own formulas."""
    objective, params = traits.objective, traits.params
    if objective in ("binary", "multiclassova", "multiclass_ova", "ova", "ovr"):
        s = float(params.get("sigmoid", "1"))
        return lambda raw: 1.0 / (1.0 + np.exp(-s * raw))
    if objective in ("cross_entropy", "xentropy"):
        return lambda raw: 1.0 / (1.0 + np.exp(-raw))
    if objective in ("cross_entropy_lambda", "xentlambda"):
        return lambda raw: np.log1p(np.exp(raw))
    if objective in _EXP:
        return np.exp
    if objective in ("multiclass", "softmax"):
        def softmax(raw: np.ndarray) -> np.ndarray:
            e = np.exp(raw - raw.max(axis=1, keepdims=True))
            total = np.zeros((raw.shape[0], 1))
            for j in range(raw.shape[1]):  # LightGBM's order of summation
                total[:, 0] += e[:, j]
            return e / total
        return softmax
    if "sqrt" in params:
        return lambda raw: np.sign(raw) * raw * raw
    return lambda raw: raw


def scalar_transform(traits: Traits) -> Callable[[float], float] | None:
    """The same for one output value in plain floats (single rows), when there is one."""
    objective, params = traits.objective, traits.params
    if traits.num_outputs != 1:
        return None
    if objective == "binary":
        s = float(params.get("sigmoid", "1"))
        return lambda v: 1.0 / (1.0 + math.exp(-s * v))
    if objective in ("cross_entropy", "xentropy"):
        return lambda v: 1.0 / (1.0 + math.exp(-v))
    if objective in ("cross_entropy_lambda", "xentlambda"):
        return lambda v: math.log1p(math.exp(v))
    if objective in _EXP:
        return math.exp
    if "sqrt" in params:
        return lambda v: ((v > 0) - (v < 0)) * v * v  # LightGBM: Sign(x) * x * x
    return lambda v: v


# -- the host and the cache key ----------------------------------------------------------------

_TARGET: dict[str, str] | None = None
_TARGET_LOCK = threading.Lock()


def _llvm():
    import llvmlite.binding as llvm

    return llvm


def host_target() -> dict[str, str]:
    """This process's target: triple, CPU name and features (what artifacts are built for)."""
    global _TARGET
    with _TARGET_LOCK:
        if _TARGET is None:
            llvm = _llvm()
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            try:
                features = llvm.get_host_cpu_features().flatten()
            except RuntimeError:  # LLVM cannot always tell
                features = ""
            _TARGET = {"triple": llvm.get_process_triple(), "cpu": llvm.get_host_cpu_name(),
                       "features": features}
        return dict(_TARGET)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    llvm = _llvm()
    return {"lleaves": version("lleaves"), "llvmlite": version("llvmlite"),
            "llvm": ".".join(map(str, llvm.llvm_version_info))}


def cache_key(*, source: str, path: str, version: str, target: dict[str, str],
              tool_versions: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The artifact's key (hex) and what it is made of."""
    inputs = {"format": FORMAT, "source": source, "model_path": path, "model_version": version,
              "versions": tool_versions, "target": target, "options": COMPILE_OPTIONS}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return digest[:40], inputs


def blob_path(model_path: str, key: str) -> str:
    return f"{BLOB_PREFIX}{model_path}/{key}{ARTIFACT_SUFFIX}"


# -- the artifact envelope ---------------------------------------------------------------------


def pack(payload: bytes, key: str, inputs: dict[str, Any], compile_seconds: float) -> bytes:
    """An artifact: magic, header (key, inputs, SHA-256 and size of the object), object."""
    header = json.dumps({"key": key, "inputs": inputs, "sha256": hashlib.sha256(payload).hexdigest(),
                         "size": len(payload), "compile_seconds": round(compile_seconds, 3),
                         "created": time.time()}, sort_keys=True).encode()
    return _MAGIC + len(header).to_bytes(4, "big") + header + payload


def header_of(data: bytes) -> dict[str, Any]:
    """An artifact's header, unverified (for tools and tests)."""
    start = len(_MAGIC) + 4
    return json.loads(data[start:start + int.from_bytes(data[len(_MAGIC):start], "big")])


def unpack(data: bytes, key: str, inputs: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The object inside an artifact made for ``key``; :class:`CompileError` otherwise.

    Nothing reaches LLVM unless the envelope names this key and the object's digest matches:
    LLVM aborts the whole process on some malformed objects instead of raising."""
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
        raise CompileError("bad_artifact", "not a scorefn compiled-trees artifact")
    start = len(_MAGIC) + 4
    size = int.from_bytes(data[len(_MAGIC):start], "big")
    if size > 1 << 20 or start + size > len(data):
        raise CompileError("bad_artifact", "artifact header is damaged")
    try:
        header = json.loads(data[start:start + size])
    except ValueError:
        raise CompileError("bad_artifact", "artifact header is damaged") from None
    if not isinstance(header, dict) or header.get("key") != key or header.get("inputs") != inputs:
        raise CompileError("foreign_artifact", "artifact was made for another model, version, "
                                               "CPU or toolchain")
    payload = data[start + size:]
    if len(payload) != header.get("size") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CompileError("bad_artifact", "artifact is corrupted (size or SHA-256 mismatch)")
    _check_object_header(payload)
    return payload, header


def _check_object_header(obj: bytes) -> None:
    machine = os.uname().machine if hasattr(os, "uname") else ""
    if sys.platform.startswith("linux"):
        expected = _ELF_MACHINES.get(machine)
        if (obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != (1 if sys.byteorder == "little" else 2)
                or int.from_bytes(obj[16:18], sys.byteorder) != 1  # ET_REL
                or expected is None or int.from_bytes(obj[18:20], sys.byteorder) != expected):
            raise CompileError("bad_artifact", "object is not a relocatable ELF file for this machine")
    elif sys.platform == "darwin":
        if obj[:4] not in (b"\xcf\xfa\xed\xfe", b"\xfe\xed\xfa\xcf"):
            raise CompileError("bad_artifact", "object is not a Mach-O file")


# -- a loaded forest ---------------------------------------------------------------------------


class CompiledForest:
    """A compiled forest loaded into this process; ``predict`` mirrors ``Booster.predict``
    (shape (n,) for one output, (n, k) otherwise). Thread-safe."""

    def __init__(self, obj: bytes, traits: Traits) -> None:
        llvm = _llvm()
        target = host_target()
        machine = llvm.Target.from_triple(target["triple"]).create_target_machine(
            cpu=target["cpu"], features=target["features"], reloc="pic",
            codemodel=COMPILE_OPTIONS["codemodel"])
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
        # lleaves' own cache mechanism: MCJIT takes the object instead of compiling the module.
        engine.set_object_cache(getbuffer_func=lambda _module: obj)
        engine.finalize_object()
        engine.run_static_constructors()
        engine.set_object_cache()  # drop the reference to the bytes (LLVM copied them)
        address = engine.get_function_address("forest_root")
        if not address:
            raise CompileError("bad_artifact", "object has no forest_root function")
        self._engine = engine
        self._fn = _ENTRY(address)
        self.traits = traits
        self.size_bytes = len(obj)
        self._k = traits.num_outputs
        self._f = traits.num_features
        self._transform = output_transform(traits)
        self._scalar = scalar_transform(traits)
        self._zero_cols = list(traits.zero_features)
        self._slots: queue.SimpleQueue = queue.SimpleQueue()

    def predict(self, X: np.ndarray, *, raw_score: bool = False, num_threads: int = 1) -> np.ndarray:
        n = X.shape[0]
        if n == 1:
            return self._predict_one(X, raw_score)
        if n >= 2**31 - 1:
            raise ValueError("too many rows for one compiled call")
        X = np.ascontiguousarray(X, dtype=np.float64)
        if self._zero_cols:
            cols = X[:, self._zero_cols]
            tiny = np.abs(cols) <= ZERO_THRESHOLD  # NaN is not tiny
            if tiny.any():
                X = X.copy()
                X[:, self._zero_cols] = np.where(tiny, 0.0, cols)
        raw = np.empty((n, self._k), dtype=np.float64)
        ptr = ctypes.POINTER(ctypes.c_double)
        x_ptr, out_ptr = X.ctypes.data_as(ptr), raw.ctypes.data_as(ptr)
        threads = max(1, min(num_threads, n // 256))
        if threads == 1:
            self._fn(x_ptr, out_ptr, 0, n)
        else:  # the compiled function releases the GIL (ctypes), so threads run in parallel
            step = -(-n // threads)
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for f in [pool.submit(self._fn, x_ptr, out_ptr, s, min(s + step, n))
                          for s in range(0, n, step)]:
                    f.result()
        out = raw if raw_score else self._transform(raw)
        return out[:, 0] if self._k == 1 else out

    def _predict_one(self, X: np.ndarray, raw_score: bool) -> np.ndarray:
        try:
            slot = self._slots.get_nowait()
        except queue.Empty:
            in_buf = (ctypes.c_double * self._f)()
            out_buf = (ctypes.c_double * self._k)()
            slot = (in_buf, np.frombuffer(in_buf, dtype=np.float64), out_buf,
                    np.frombuffer(out_buf, dtype=np.float64))
        try:
            in_buf, in_view, out_buf, out_view = slot
            in_view[:] = X[0]
            for j in self._zero_cols:
                if -ZERO_THRESHOLD <= in_buf[j] <= ZERO_THRESHOLD:
                    in_buf[j] = 0.0
            self._fn(in_buf, out_buf, 0, 1)
            if raw_score:
                out = out_view.copy()
            elif self._scalar is not None:
                out = np.array([self._scalar(out_buf[0])])
            else:
                out = self._transform(out_view.reshape(1, -1))[0]
        finally:
            self._slots.put(slot)
        return out.reshape(1, -1) if self._k > 1 else out


# -- the equality check ------------------------------------------------------------------------


def sample_rows(text: str, num_features: int, n: int = 256, seed: int = 20260601) -> np.ndarray:
    """Seeded rows over the model's feature ranges, with values at and next to its split
    thresholds (where a wrong comparison shows), missing values (NaN), zeros and tiny values."""
    rng = np.random.default_rng(seed)
    head = text[: text.find("\nTree=")]
    infos = next((line.split("=", 1)[1].split() for line in head.splitlines()
                  if line.startswith("feature_infos=")), [])
    lo, hi = np.full(num_features, -1.0), np.full(num_features, 1.0)
    for j, info in enumerate(infos[:num_features]):
        if info.startswith("[") and ":" in info:
            a, b = info[1:-1].split(":", 1)
            lo[j], hi[j] = float(a), float(b)
    thresholds, _ = _splits(text, num_features)
    span = np.maximum(hi - lo, 1e-6)
    X = rng.uniform(lo - 0.1 * span, hi + 0.1 * span, size=(n, num_features))
    kind = rng.random((n, num_features))
    for j in range(num_features):
        if thresholds[j]:
            ts = np.asarray(thresholds[j])
            rows = np.nonzero(kind[:, j] < 0.4)[0]
            picked = ts[rng.integers(0, len(ts), len(rows))]
            step = rng.integers(-1, 2, len(rows))  # the threshold, or the next double either side
            X[rows, j] = np.where(step == 0, picked,
                                  np.nextafter(picked, np.where(step > 0, np.inf, -np.inf)))
    X[(kind >= 0.4) & (kind < 0.5)] = np.nan
    X[(kind >= 0.5) & (kind < 0.54)] = 0.0
    tiny = (kind >= 0.54) & (kind < 0.56)
    X[tiny] = rng.choice([1e-36, -1e-36, -0.0], size=int(tiny.sum()))
    return X


def check(model: Any, forest: CompiledForest, text: str, tolerance: float = TOLERANCE) -> None:
    """Raise :class:`CompileError` unless ``forest`` predicts what LightGBM does on sample rows:
    predictions and raw scores, same shapes, within ``tolerance`` (absolute), as a batch (one
    and two threads) and row by row through the single-row path."""
    X = sample_rows(text, forest.traits.num_features)
    for raw in (False, True):
        expected = model.predict_lightgbm(X, raw_score=raw, num_threads=1)
        for threads in (1, 2):
            _compare(forest.predict(X, raw_score=raw, num_threads=threads), expected, tolerance,
                     f"{'raw scores' if raw else 'predictions'}, batch, {threads} thread(s)")
        for i in range(16):
            one = X[i:i + 1]
            _compare(forest.predict(one, raw_score=raw), model.predict_lightgbm(one, raw_score=raw),
                     tolerance, f"{'raw scores' if raw else 'predictions'}, single row {i}")


def _compare(got: np.ndarray, expected: np.ndarray, tolerance: float, what: str) -> None:
    if got.shape != expected.shape:
        raise CompileError("check_failed", f"{what}: shape {got.shape}, LightGBM {expected.shape}")
    if not np.array_equal(np.isnan(got), np.isnan(expected)):
        raise CompileError("check_failed", f"{what}: missing values differ from LightGBM's")
    diff = np.abs(np.nan_to_num(got) - np.nan_to_num(expected))
    worst = float(diff.max()) if diff.size else 0.0
    if not worst <= tolerance:
        raise CompileError("check_failed", f"{what}: differs from LightGBM by {worst:.3g} "
                                           f"(tolerance {tolerance:g})")


# -- compiling in a child process --------------------------------------------------------------


def compile_in_child(text: str, target: dict[str, str], timeout: float,
                     on_start: Callable[[subprocess.Popen], None] | None = None) -> tuple[bytes, float]:
    """Compile ``text`` in a child process (lower priority, killed after ``timeout`` seconds):
    the object code and the compile time."""
    with tempfile.TemporaryDirectory(prefix="scorefn-compile-") as tmp:
        model_file, out_file = os.path.join(tmp, "model.txt"), os.path.join(tmp, "forest.o")
        with open(model_file, "w", encoding="utf-8") as f:
            f.write(text)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_ROOT)] + [p for p in sys.path if p])
        spec = json.dumps({**target, **COMPILE_OPTIONS})
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "shared.models.compiled.worker", model_file, out_file,
                                 spec], cwd=str(_ROOT), env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if on_start is not None:
            on_start(proc)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise CompileError("timeout", f"compilation took longer than {timeout:g} s; stopped") from None
        seconds = time.perf_counter() - start
        tail = err.decode("utf-8", "replace").strip()[-500:]
        if proc.returncode == 3:
            raise CompileError("unsupported", tail or "lleaves cannot compile this model")
        if proc.returncode != 0:
            raise CompileError("compile_failed", f"compiler exited with {proc.returncode}: {tail}")
        with open(out_file, "rb") as f:
            return f.read(), seconds


# -- caches --------------------------------------------------------------------------------------


class LocalCache:
    """Artifacts in a directory only this user can write (else it is not used)."""

    def __init__(self, directory: str | os.PathLike | None) -> None:
        self.directory: Path | None = Path(directory or Path(tempfile.gettempdir()) / "scorefn-compiled")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = self.directory.stat()
            if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
                log.warning("compiled trees: local cache directory %s is not private to this user "
                            "(owner or group/other write access); not used", self.directory)
                self.directory = None
        except OSError as exc:
            log.warning("compiled trees: local cache directory %s is not usable (%s); not used",
                        self.directory, type(exc).__name__)
            self.directory = None

    def read(self, key: str) -> bytes | None:
        if self.directory is None:
            return None
        try:
            return (self.directory / f"{key}{ARTIFACT_SUFFIX}").read_bytes()
        except OSError:
            return None

    def write(self, key: str, data: bytes) -> None:
        if self.directory is None:
            return
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.directory / f"{key}{ARTIFACT_SUFFIX}")
            self._trim()
        except OSError as exc:
            log.warning("compiled trees: could not write the local cache (%s)", type(exc).__name__)

    def remove(self, key: str) -> None:
        if self.directory is not None:
            try:
                (self.directory / f"{key}{ARTIFACT_SUFFIX}").unlink()
            except OSError:
                pass

    def _trim(self) -> None:
        files = sorted((p.stat().st_mtime, p.stat().st_size, p)
                       for p in self.directory.glob(f"*{ARTIFACT_SUFFIX}"))
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= LOCAL_CACHE_MAX_BYTES:
                break
            path.unlink(missing_ok=True)
            total -= size


class BlobCache:
    """Artifacts as blobs under ``.compiled/`` in the models container, and a lock blob per
    key so that one instance compiles while the others wait for its artifact."""

    def __init__(self, container: Any) -> None:
        from shared.models.blob_source import BlobSource

        self.container = container
        self.reader = BlobSource(container, MAX_ARTIFACT_BYTES)
        self.source_id = container.url.split("?", 1)[0]

    def read(self, path: str) -> bytes | None:
        from shared.errors import ModelNotFound, ScoreError

        try:
            content = self.reader.fetch(path)
        except ModelNotFound:
            return None
        except ScoreError as exc:
            log.warning("compiled trees: could not read %s: %s", path, exc.message)
            return None
        return content.data if content is not None else None

    def write(self, path: str, data: bytes, metadata: dict[str, str]) -> bool:
        from azure.core.exceptions import AzureError

        try:
            self.container.upload_blob(path, data, overwrite=True, metadata=metadata)
            return True
        except AzureError as exc:
            log.warning("compiled trees: could not write %s (%s): other instances will compile "
                        "for themselves; the app's identity needs write access to %s in the "
                        "models container", path, _status(exc), BLOB_PREFIX)
            return False

    def try_lock(self, path: str, stale_after: float) -> bool:
        """True when this instance may compile: it created the lock, or the lock is stale."""
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

        lock = path + ".lock"
        for _ in range(2):
            try:
                self.container.upload_blob(lock, b"", overwrite=False)
                return True
            except ResourceExistsError:
                pass
            except AzureError:
                return True  # cannot coordinate (read-only identity, storage down): compile anyway
            try:
                props = self.container.get_blob_client(lock).get_blob_properties()
            except ResourceNotFoundError:
                continue  # released meanwhile: try to take it
            except AzureError:
                return True
            if time.time() - props.last_modified.timestamp() <= stale_after:
                return False
            self.unlock(path)  # left by an instance that died while compiling
        return True

    def unlock(self, path: str) -> None:
        from azure.core.exceptions import AzureError

        try:
            self.container.delete_blob(path + ".lock")
        except AzureError:
            pass


def _status(exc: Exception) -> str:
    code = getattr(exc, "status_code", None)
    return f"status {code}" if code else type(exc).__name__


# -- the background compiler -------------------------------------------------------------------


@dataclass
class CompileStats:
    """Counters for tests and logs."""

    compiles: int = 0
    compile_seconds: float = 0.0
    failures: int = 0
    unsupported: int = 0
    check_failures: int = 0
    rejected_artifacts: int = 0
    local_hits: int = 0
    blob_hits: int = 0
    uploads: int = 0
    attached: int = 0
    dropped: int = 0
    lock_waits: int = 0


@dataclass
class _Job:
    name: str
    model: weakref.ref
    is_current: Callable[[Any], bool]
    not_before: float = 0.0
    waiting_since: float | None = None
    seq: int = 0


@dataclass
class _Outcome:
    key: str
    reason: str
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Compiler:
    """Compiles the opted-in models one at a time in a background thread (see module doc)."""

    def __init__(self, patterns: tuple[str, ...] | list[str], *, container: Any = None,
                 cache_dir: str | os.PathLike | None = None, timeout_seconds: float = 900.0,
                 max_pending: int = 64, poll_seconds: float = 10.0,
                 tolerance: float = TOLERANCE) -> None:
        self.patterns = tuple(patterns)
        self.blobs = BlobCache(container) if container is not None else None
        self.local = LocalCache(cache_dir)
        self.timeout_seconds = timeout_seconds
        self.max_pending = max_pending
        self.poll_seconds = poll_seconds
        self.tolerance = tolerance
        self.stats = CompileStats()
        self.outcomes: dict[str, _Outcome] = {}  # by "name@version": the latest outcome
        self.history: collections.deque = collections.deque(maxlen=256)  # (label, outcome)
        self._cond = threading.Condition()
        self._jobs: list[_Job] = []
        self._busy = False
        self._closed = False
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen | None = None
        self._given_up: set[str] = set()  # keys that failed: not retried in this process

    def wants(self, name: str, path: str) -> bool:
        """The model is opted in (its name or blob path matches a pattern)."""
        return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(path, p) for p in self.patterns)

    def submit(self, name: str, model: Any, is_current: Callable[[Any], bool]) -> bool:
        """Queue ``model`` for compilation; never blocks. False when the queue is full."""
        with self._cond:
            if self._closed:
                return False
            self._jobs = [j for j in self._jobs if j.name != name]  # the newest version wins
            if len(self._jobs) >= self.max_pending:
                self.stats.dropped += 1
                log.warning("compiled trees: %d models already waiting; %s stays on LightGBM",
                            len(self._jobs), name)
                return False
            self._seq += 1
            self._jobs.append(_Job(name, weakref.ref(model), is_current, seq=self._seq))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="scorefn-compiler", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is queued or running (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._jobs or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self) -> None:
        """Stop: drop queued jobs, stop a running compilation, wait for the thread."""
        with self._cond:
            self._closed = True
            self._jobs.clear()
            child = self._child
            self._cond.notify_all()
        if child is not None and child.poll() is None:
            child.kill()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- internals -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                job = None
                while job is None:
                    if self._closed:
                        return
                    now = time.monotonic()
                    ready = [j for j in self._jobs if j.not_before <= now]
                    if ready:
                        job = min(ready, key=lambda j: (j.not_before, j.seq))
                        self._jobs.remove(job)
                        self._busy = True
                    else:
                        wait = min((j.not_before for j in self._jobs), default=now + 60) - now
                        self._cond.wait(max(0.01, min(wait, 60)))
            try:
                self._process(job)
            except Exception:  # a bug must not kill the worker: the model stays on LightGBM
                log.exception("compiled trees: unexpected error for model %s", job.name)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _defer(self, job: _Job) -> None:
        with self._cond:
            if not self._closed and not any(j.name == job.name for j in self._jobs):
                job.not_before = time.monotonic() + self.poll_seconds
                self._jobs.append(job)

    def _process(self, job: _Job) -> None:
        model = job.model()
        if model is None or not job.is_current(model):
            return  # evicted or replaced while waiting
        info = model.info
        label = f"{info.name}@{info.version}"
        text = model.booster.model_to_string(num_iteration=model.num_iteration)
        traits = analyse(text, info.num_features, info.num_outputs)
        if traits.unsupported:
            self.stats.unsupported += 1
            self._outcome(label, "", "unsupported", traits.unsupported)
            log.warning("compiled trees: model %s version %s stays on LightGBM: %s",
                        info.name, info.version, traits.unsupported)
            return
        target = host_target()
        key, inputs = cache_key(source=self.blobs.source_id if self.blobs else "local",
                                path=info.path, version=info.version, target=target,
                                tool_versions=versions())
        if key in self._given_up:
            return
        path = blob_path(info.path, key)

        # 1. this machine's cache, 2. the shared blob cache: loaded only if they pass the check
        data = self.local.read(key)
        if data is not None:
            if self._take_over(job, model, text, traits, data, key, inputs, label, "local"):
                self.stats.local_hits += 1
                return
            self.local.remove(key)
            data = None
        locked = False
        if self.blobs is not None:
            data = self.blobs.read(path)
            if data is None:
                if not self.blobs.try_lock(path, stale_after=self.timeout_seconds + 60):
                    # Another instance is compiling this artifact: look again later.
                    if job.waiting_since is None:
                        job.waiting_since = time.monotonic()
                        self.stats.lock_waits += 1
                        log.info("compiled trees: model %s version %s is being compiled by "
                                 "another instance; waiting for its artifact", info.name, info.version)
                    self._defer(job)
                    return
                locked = True
                data = self.blobs.read(path)  # it may have been written before we got the lock
        try:
            if data is not None:
                if self._take_over(job, model, text, traits, data, key, inputs, label, "blob"):
                    self.stats.blob_hits += 1
                    self.local.write(key, data)
                    return
            # 3. compile (a refused blob artifact is then replaced by a good one)
            self._compile(job, model, text, traits, target, key, inputs, label, path)
        finally:
            if locked:
                self.blobs.unlock(path)

    def _compile(self, job: _Job, model: Any, text: str, traits: Traits, target: dict[str, str],
                 key: str, inputs: dict[str, Any], label: str, path: str) -> None:
        info = model.info
        try:
            try:
                obj, seconds = compile_in_child(text, target, self.timeout_seconds, self._set_child)
            finally:
                self._set_child(None)
            self.stats.compiles += 1
            self.stats.compile_seconds += seconds
        except CompileError as exc:
            with self._cond:
                if self._closed:
                    return
            self._given_up.add(key)
            if exc.reason == "unsupported":
                self.stats.unsupported += 1
            else:
                self.stats.failures += 1
            self._outcome(label, key, exc.reason, exc.message)
            log.warning("compiled trees: model %s version %s stays on LightGBM: %s (%s)",
                        info.name, info.version, exc.reason, exc.message)
            return
        artifact = pack(obj, key, inputs, seconds)
        if not self._take_over(job, model, text, traits, artifact, key, inputs, label, "compiled",
                               compile_seconds=seconds):
            self._given_up.add(key)
            return
        self.local.write(key, artifact)
        if self.blobs is not None:
            metadata = {"scorefn_model": info.path[:200], "scorefn_model_version": info.version,
                        "scorefn_key": key}
            if self.blobs.write(path, artifact, metadata):
                self.stats.uploads += 1

    def _take_over(self, job: _Job, model: Any, text: str, traits: Traits, data: bytes, key: str,
                   inputs: dict[str, Any], label: str, origin: str,
                   compile_seconds: float | None = None) -> bool:
        """Unpack, load and check an artifact; attach it to ``model`` when all pass."""
        info = model.info
        try:
            obj, header = unpack(data, key, inputs)
            try:
                forest = CompiledForest(obj, traits)
            except CompileError:
                raise
            except Exception as exc:  # llvmlite: no executable memory, unresolved symbols, ...
                raise CompileError("load_failed", f"could not load the object: "
                                                  f"{type(exc).__name__}: {str(exc)[:200]}") from None
            try:
                check(model, forest, text, self.tolerance)
            except CompileError:
                raise
            except Exception as exc:
                raise CompileError("check_failed", f"the check raised {type(exc).__name__}: "
                                                   f"{str(exc)[:200]}") from None
        except CompileError as exc:
            if origin == "compiled":
                self.stats.check_failures += 1
                log.warning("compiled trees: model %s version %s stays on LightGBM: %s",
                            info.name, info.version, exc.message)
            else:
                self.stats.rejected_artifacts += 1
                log.warning("compiled trees: cached artifact of model %s version %s (%s) not "
                            "used: %s", info.name, info.version, origin, exc.message)
            self._outcome(label, key, exc.reason if origin == "compiled" else "rejected_" + origin,
                          exc.message)
            return False
        if not job.is_current(model):
            return True  # replaced meanwhile: nothing to attach, nothing more to do
        model.attach_compiled(forest)
        self.stats.attached += 1
        seconds = compile_seconds if compile_seconds is not None else header.get("compile_seconds")
        self._outcome(label, key, "compiled" if origin == "compiled" else origin + "_cache", "",
                      {"compile_seconds": seconds, "bytes": forest.size_bytes})
        log.info("compiled trees: model %s version %s now served compiled (%s; %d KiB)",
                 info.name, info.version,
                 f"compiled in {seconds:.1f} s" if origin == "compiled" else f"from the {origin} cache",
                 forest.size_bytes // 1024)
        return True

    def _outcome(self, label: str, key: str, reason: str, detail: str,
                 extra: dict[str, Any] | None = None) -> None:
        with self._cond:
            if len(self.outcomes) > 1000:
                self.outcomes.clear()
            outcome = _Outcome(key, reason, detail, extra or {})
            self.outcomes[label] = outcome
            self.history.append((label, outcome))

    def _set_child(self, proc: subprocess.Popen | None) -> None:
        with self._cond:
            self._child = proc
            closed = self._closed
        if closed and proc is not None:
            proc.kill()


def make_compiler(settings: Any, container: Any) -> Compiler | None:
    """The compiler the settings ask for, or ``None`` (off, or lleaves not installed)."""
    if not settings.compiled_models:
        return None
    if not available():
        log.warning("COMPILED_MODELS is set but lleaves/llvmlite are not installed "
                    "(requirements-compiled.txt); every model is served by LightGBM")
        return None
    return Compiler(settings.compiled_models, container=container,
                    cache_dir=settings.compiled_cache_dir or None,
                    timeout_seconds=settings.compiled_timeout_seconds)
