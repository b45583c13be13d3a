"""LightGBM's C library called directly: load a text model, predict dense float64 rows.

``import lightgbm`` costs ~240 ms here, half of it ``scipy.sparse``, all of it on a cold
start. Serving needs none of it: this module loads ``lib_lightgbm`` from the installed
``lightgbm`` package's folder (located, not imported) and calls the same C functions with
the same arguments as ``Booster.predict`` does for a dense float64 matrix
(``LGBM_BoosterCalcNumPredict``, then ``LGBM_BoosterPredictForMat`` with
``num_threads=N`` as the only parameter), so its predictions are the same numbers.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import sys
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger("scorefn.lightgbm")

PREDICT_NORMAL, PREDICT_RAW, PREDICT_CONTRIB = 0, 1, 3  # C_API_PREDICT_*
DTYPE_FLOAT64 = 1  # C_API_DTYPE_FLOAT64
_ROW_MAJOR = 1

# Calls for at most this many rows keep the GIL (see library_holding_gil): ~1 ms for a
# 500-tree model, shorter than the switch interval they would otherwise wait out.
SHORT_CALL_ROWS = 16

_lib: ctypes.CDLL | None = None
_lib_holding_gil: ctypes.PyDLL | None = None
_lib_lock = threading.Lock()


class NativeError(Exception):
    """LightGBM's C library reported an error (its message is the text)."""


def _library_file() -> Path:
    spec = importlib.util.find_spec("lightgbm")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise NativeError("the lightgbm package is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    name = {"win32": "lib_lightgbm.dll", "darwin": "lib_lightgbm.dylib"}.get(sys.platform,
                                                                            "lib_lightgbm.so")
    # The places lightgbm's own libpath.py looks, in its order.
    for folder in (package.parent, package / "bin", package / "lib"):
        if (folder / name).is_file():
            return folder / name
    raise NativeError(f"{name} not found in the lightgbm package at {package}")


@ctypes.CFUNCTYPE(None, ctypes.c_char_p)
def _log_callback(message: bytes) -> None:
    text = message.decode("utf-8", "replace").strip()
    if text:
        log.info("%s", text)


def library() -> ctypes.CDLL:
    """``lib_lightgbm``, loaded once per process (the same copy the lightgbm package uses)."""
    global _lib
    if _lib is None:
        with _lib_lock:
            if _lib is None:
                lib = ctypes.cdll.LoadLibrary(str(_library_file()))
                lib.LGBM_GetLastError.restype = ctypes.c_char_p
                if "lightgbm.basic" not in sys.modules:  # else the package routes its logs
                    lib.LGBM_RegisterLogCallback(_log_callback)
                _lib = lib
    return _lib


def library_holding_gil() -> ctypes.PyDLL:
    """The same ``lib_lightgbm``, with calls that keep the GIL: for calls of a few
    microseconds (a single row). A call through :func:`library` lets the GIL go, and when any
    other Python thread is busy (a telemetry drain, the rollout controller, a log writer) it
    takes the GIL and the request waits up to the switch interval (5 ms) to get it back: a
    convoy that made a 0.5 ms request take 6 ms. Never for long calls: they would stall
    every other thread."""
    global _lib_holding_gil
    if _lib_holding_gil is None:
        library()  # loaded and set up once; this handle shares it (dlopen counts references)
        with _lib_lock:
            if _lib_holding_gil is None:
                _lib_holding_gil = ctypes.PyDLL(str(_library_file()))
    return _lib_holding_gil


def check(status: int) -> None:
    """Raise :class:`NativeError` with LightGBM's message when a C call failed."""
    if status != 0:
        raise NativeError(library().LGBM_GetLastError().decode("utf-8", "replace"))


class NativeBooster:
    """A booster parsed from model text by ``LGBM_BoosterLoadModelFromString``. Thread-safe
    for prediction, as LightGBM's C API is."""

    def __init__(self, text: str) -> None:
        lib = library()
        self._handle = ctypes.c_void_p()
        iterations = ctypes.c_int(0)
        check(lib.LGBM_BoosterLoadModelFromString(ctypes.c_char_p(text.encode("utf-8")),
                                                  ctypes.byref(iterations),
                                                  ctypes.byref(self._handle)))
        self.num_iterations = iterations.value
        value = ctypes.c_int(0)
        check(lib.LGBM_BoosterGetNumFeature(self._handle, ctypes.byref(value)))
        self.num_features = value.value
        check(lib.LGBM_BoosterNumModelPerIteration(self._handle, ctypes.byref(value)))
        self.num_model_per_iteration = value.value
        self.feature_names = self._feature_names()

    @property
    def handle(self) -> ctypes.c_void_p:
        return self._handle

    def _feature_names(self) -> tuple[str, ...]:
        lib, n = library(), self.num_features
        out_len, needed = ctypes.c_int(0), ctypes.c_size_t(0)
        size = 256
        while True:
            buffers = [ctypes.create_string_buffer(size) for _ in range(n)]
            pointers = (ctypes.c_char_p * n)(*(ctypes.c_char_p(ctypes.addressof(b)) for b in buffers))
            check(lib.LGBM_BoosterGetFeatureNames(self._handle, ctypes.c_int(n),
                                                  ctypes.byref(out_len), ctypes.c_size_t(size),
                                                  ctypes.byref(needed), pointers))
            if needed.value <= size:
                return tuple(b.value.decode("utf-8") for b in buffers[:out_len.value])
            size = needed.value

    def predict(self, X: np.ndarray, *, predict_type: int = PREDICT_NORMAL,
                num_iteration: int = -1, num_threads: int = 1) -> np.ndarray:
        """Predictions for a 2-D float64 matrix, shaped as ``Booster.predict`` shapes them:
        ``(n,)`` for one output per row, else ``(n, outputs)``."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        rows, columns = X.shape
        lib = library_holding_gil() if rows <= SHORT_CALL_ROWS else library()
        count = ctypes.c_int64(0)
        check(lib.LGBM_BoosterCalcNumPredict(self._handle, ctypes.c_int(rows),
                                             ctypes.c_int(predict_type), ctypes.c_int(0),
                                             ctypes.c_int(num_iteration), ctypes.byref(count)))
        out: np.ndarray = np.empty(count.value, dtype=np.float64)  # reshaped below for 2-D output
        written = ctypes.c_int64(0)
        check(lib.LGBM_BoosterPredictForMat(
            self._handle, ctypes.c_void_p(X.ctypes.data), ctypes.c_int(DTYPE_FLOAT64),
            ctypes.c_int32(rows), ctypes.c_int32(columns), ctypes.c_int(_ROW_MAJOR),
            ctypes.c_int(predict_type), ctypes.c_int(0), ctypes.c_int(num_iteration),
            ctypes.c_char_p(f"num_threads={num_threads}".encode()), ctypes.byref(written),
            ctypes.c_void_p(out.ctypes.data)))
        if written.value != count.value:
            raise NativeError(f"LightGBM wrote {written.value} predictions, expected {count.value}")
        if rows and (out.size != rows or predict_type == PREDICT_CONTRIB):
            out = out.reshape(rows, -1)
        return out

    def model_to_string(self, num_iteration: int = -1) -> str:
        """The model as LightGBM text (``Booster.model_to_string``)."""
        lib = library()
        size, needed = 1 << 22, ctypes.c_int64(0)
        while True:
            buffer = ctypes.create_string_buffer(size)
            check(lib.LGBM_BoosterSaveModelToString(
                self._handle, ctypes.c_int(0), ctypes.c_int(num_iteration), ctypes.c_int(0),
                ctypes.c_int64(size), ctypes.byref(needed), buffer))
            if needed.value <= size:
                return buffer.value.decode("utf-8")
            size = needed.value

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle and _lib is not None:
            try:
                _lib.LGBM_BoosterFree(handle)
            except Exception:  # interpreter shutting down
                pass
