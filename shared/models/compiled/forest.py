"""A compiled forest loaded into this process (MCJIT), predicting as ``Booster.predict`` does."""

from __future__ import annotations

import ctypes
import queue
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from shared.models.compiled.errors import CompileError
from shared.models.compiled.target import COMPILE_OPTIONS, PLATFORM_TARGET, llvm_binding
from shared.models.compiled.traits import ZERO_THRESHOLD, Traits, output_transform, scalar_transform
from shared.models.native import SHORT_CALL_ROWS

_SIGNATURE = (None, ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double),
              ctypes.c_int32, ctypes.c_int32)
_ENTRY = ctypes.CFUNCTYPE(*_SIGNATURE)  # lets the GIL go: long calls, threads in parallel
# Keeps the GIL: calls of microseconds, which would otherwise wait up to the switch interval
# (5 ms) to get the GIL back from any busy Python thread (see shared/models/native.py).
_ENTRY_HOLDING_GIL = ctypes.PYFUNCTYPE(*_SIGNATURE)


class CompiledForest:
    """A compiled forest loaded into this process; ``predict`` mirrors ``Booster.predict``
    (shape (n,) for one output, (n, k) otherwise). Thread-safe."""

    def __init__(self, objects: list[bytes], traits: Traits,
                 target: dict[str, str] = PLATFORM_TARGET) -> None:
        llvm = llvm_binding()
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        machine = llvm.Target.from_triple(target["triple"]).create_target_machine(
            cpu=target["cpu"], features=target["features"], reloc="pic",
            codemodel=COMPILE_OPTIONS["codemodel"])
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
        for obj in objects:  # the parts and the root; MCJIT links them together
            engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
        engine.run_static_constructors()
        address = engine.get_function_address("forest_root")
        if not address:
            raise CompileError("damaged", "the objects have no forest_root function")
        self._engine = engine
        self._fn = _ENTRY(address)
        self._fn_short = _ENTRY_HOLDING_GIL(address)
        self.traits = traits
        self.size_bytes = sum(map(len, objects))
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
        if n <= SHORT_CALL_ROWS:
            self._fn_short(x_ptr, out_ptr, 0, n)
        elif threads == 1:
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
            self._fn_short(in_buf, out_buf, 0, 1)
            if raw_score:
                out = out_view.copy()
            elif self._scalar is not None:
                out = np.array([self._scalar(out_buf[0])])
            else:
                out = self._transform(out_view.reshape(1, -1))[0]
        finally:
            self._slots.put(slot)
        return out.reshape(1, -1) if self._k > 1 else out
