"""A loaded LightGBM model: metadata plus predict(), with LightGBM's fast single-row path.

Models are parsed and scored by LightGBM's C library called directly
(:mod:`shared.models.native`): the ``lightgbm`` Python package, and the ``scipy`` it imports,
are never imported to serve, which takes ~165 ms off a cold start.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import queue
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from shared.errors import InvalidModel, InvalidPayload
from shared.models.native import (
    DTYPE_FLOAT64,
    PREDICT_CONTRIB,
    PREDICT_NORMAL,
    PREDICT_RAW,
    NativeBooster,
    NativeError,
    check,
    library,
    library_holding_gil,
)
from shared.models.schema import FeatureSchema, read_schema


@dataclass(frozen=True)
class ModelInfo:
    """What handlers and the router need to know about a loaded model."""

    name: str
    path: str
    version: str
    last_modified: datetime | None
    feature_names: tuple[str, ...]
    num_features: int
    objective: str
    num_classes: int
    num_outputs: int
    size_bytes: int
    schema: FeatureSchema = None  # type: ignore[assignment]  # set by parse_model
    linear_tree: bool = False  # LightGBM refuses pred_contrib for linear trees
    blob_metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    sha256: str = ""  # of the model file's bytes as stored (decompressed): names its artifact
    # Each feature's training range or codes as the header's feature_infos says: "[lo:hi]", a
    # categorical feature's codes "0:1:4", or "none" (a feature no tree uses).
    feature_infos: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}

    @functools.cached_property
    def feature_set(self) -> frozenset[str]:
        return frozenset(self.feature_names)


def _header(text: str) -> dict[str, str]:
    """The ``key=value`` lines before the first tree of a LightGBM text model."""
    header: dict[str, str] = {}
    for line in text[: text.find("\nTree=")].splitlines():
        key, sep, value = line.partition("=")
        if sep:
            header[key.strip()] = value.strip()
    return header


class LoadedModel:
    """A parsed LightGBM booster. Thread-safe: ``predict`` may be called concurrently.

    A checked compiled forest (``shared/models/compiled/``) may be attached, at load or later;
    it then serves predictions and raw scores, and LightGBM keeps serving ``pred_contrib``.
    """

    def __init__(self, booster: NativeBooster, info: ModelInfo) -> None:
        self.booster = booster
        self.info = info
        # A booster loaded from text has no best_iteration: Booster.predict uses every
        # iteration (-1), and so do both paths here.
        self._num_iteration = -1
        # One FastConfig per concurrent caller, as LightGBM's own threaded tests use them.
        self._fast_pools: dict[int, queue.SimpleQueue] = {
            PREDICT_NORMAL: queue.SimpleQueue(), PREDICT_RAW: queue.SimpleQueue()}
        self._fast_all: list[ctypes.c_void_p] = []
        # A single row keeps the GIL through its ~50 us call (see library_holding_gil).
        self._single_row_fast = library_holding_gil().LGBM_BoosterPredictForMatSingleRowFast
        self.compiled: Any = None  # a checked CompiledForest once it has taken over

    @property
    def num_iteration(self) -> int:
        """The iterations prediction uses (-1: all), as ``Booster.predict`` would."""
        return self._num_iteration

    @property
    def backend(self) -> str:
        """What scores ``predict`` requests now: ``compiled`` or ``lightgbm``."""
        return "lightgbm" if self.compiled is None else "compiled"

    @property
    def compiled_bytes(self) -> int:
        compiled = self.compiled
        return compiled.size_bytes if compiled is not None else 0

    def attach_compiled(self, forest: Any) -> None:
        """Let a checked compiled forest serve this model from now on (an atomic swap)."""
        self.compiled = forest

    def release_compiled(self) -> None:
        """Back to LightGBM; the compiled code is freed once no request is using it."""
        self.compiled = None

    def predict(self, X: np.ndarray, *, raw_score: bool = False, pred_contrib: bool = False,
                num_threads: int = 1) -> np.ndarray:
        """Predict ``X`` (float64, shape (n, num_features)); equal to ``Booster.predict``,
        whichever backend serves it (compiled trees are checked bit for bit first)."""
        return self.predict_with_backend(X, raw_score=raw_score, pred_contrib=pred_contrib,
                                         num_threads=num_threads)[0]

    def predict_with_backend(self, X: np.ndarray, *, raw_score: bool = False,
                             pred_contrib: bool = False, num_threads: int = 1
                             ) -> tuple[np.ndarray, str]:
        """Predictions and the backend that made them (``compiled`` or ``lightgbm``)."""
        compiled = self.compiled  # one read: a concurrent release never leaves us half-way
        if compiled is not None and not pred_contrib:
            return compiled.predict(X, raw_score=raw_score, num_threads=num_threads), "compiled"
        return self.predict_lightgbm(X, raw_score=raw_score, pred_contrib=pred_contrib,
                                     num_threads=num_threads), "lightgbm"

    def predict_lightgbm(self, X: np.ndarray, *, raw_score: bool = False,
                         pred_contrib: bool = False, num_threads: int = 1) -> np.ndarray:
        """Predict with LightGBM, whatever else is attached; equal to ``Booster.predict``."""
        if pred_contrib and self.info.linear_tree:
            # LightGBM's Booster.predict refuses it; the C API would answer with numbers that
            # do not add up to the prediction.
            raise InvalidPayload("pred_contrib is not implemented for linear trees "
                                 "(LightGBM refuses it too)", code="invalid_options")
        if X.shape[0] == 1 and not pred_contrib:
            return self._predict_one(X, PREDICT_RAW if raw_score else PREDICT_NORMAL)
        kind = PREDICT_CONTRIB if pred_contrib else PREDICT_RAW if raw_score else PREDICT_NORMAL
        try:
            return self.booster.predict(X, predict_type=kind, num_iteration=self._num_iteration,
                                        num_threads=num_threads)
        except NativeError as exc:
            raise InvalidModel(f"prediction failed: {exc}") from None

    def _predict_one(self, X: np.ndarray, predict_type: int) -> np.ndarray:
        pool = self._fast_pools[predict_type]
        try:
            slot = pool.get_nowait()
        except queue.Empty:
            slot = self._new_fast_slot(predict_type)
        try:
            config, in_buf, in_view, out_buf, out_view, out_len = slot
            in_view[:] = X[0]
            if self._single_row_fast(config, in_buf, out_len, out_buf):
                raise InvalidModel(f"prediction failed: {library().LGBM_GetLastError().decode()}")
            out = out_view.copy()
        finally:
            pool.put(slot)
        # Booster.predict returns shape (n,) for one output and (n, k) for k classes.
        return out.reshape(1, -1) if self.info.num_outputs > 1 else out

    def _new_fast_slot(self, predict_type: int) -> tuple:
        """A FastConfig with its own ctypes input/output buffers (and numpy views of them):
        passing ready ctypes arrays avoids ~2 us per numpy array and call."""
        config = ctypes.c_void_p()
        check(library().LGBM_BoosterPredictForMatSingleRowFastInit(
            self.booster.handle, ctypes.c_int(predict_type), ctypes.c_int(0),
            ctypes.c_int(self._num_iteration), ctypes.c_int(DTYPE_FLOAT64),
            ctypes.c_int32(self.info.num_features), ctypes.c_char_p(b"num_threads=1"),
            ctypes.byref(config)))
        self._fast_all.append(config)
        in_buf = (ctypes.c_double * self.info.num_features)()
        out_buf = (ctypes.c_double * self.info.num_outputs)()
        return (config, in_buf, np.frombuffer(in_buf, dtype=np.float64), out_buf,
                np.frombuffer(out_buf, dtype=np.float64), ctypes.byref(ctypes.c_int64(0)))

    def __del__(self) -> None:
        try:
            free = library().LGBM_FastConfigFree
            for config in getattr(self, "_fast_all", ()):
                free(config)
        except Exception:  # interpreter shutting down
            pass
        self._fast_all = []



_TREE_SIZES = re.compile(r"^tree_sizes=[^\n]*\n", re.M)


def safe_text_end(text: str) -> int:
    """Where the trees end (0 when they do not): what follows is parameters and mappings."""
    return max(text.rfind("\nend of trees"), 0)


def check_structure(text: str, name: str) -> str:
    """Check the text is a whole LightGBM model and return it ready for LightGBM's parser.

    LightGBM parses trees in an OpenMP loop when the header has ``tree_sizes``, and an
    error inside that loop aborts the whole process (seen here on a truncated file and on
    a few bytes of junk in a tree). Without ``tree_sizes`` it parses them one after the
    other and raises a normal error, so the header is dropped (parsing takes ~2x longer,
    ~20 ms for a 500-tree model); a truncated file is rejected before LightGBM sees it.
    """
    first_tree = text.find("\nTree=") + 1
    if not text.startswith("tree\n") or first_tree <= 0:
        raise InvalidModel(f"model {name!r} is not a LightGBM text model")
    header = _header(text)
    missing = [k for k in ("version", "num_class", "max_feature_idx", "feature_names", "objective")
               if k not in header]
    if missing:
        raise InvalidModel(f"model {name!r} is not a LightGBM text model (no {', '.join(missing)})")
    end = text.find("\nend of trees\n", first_tree)
    if end < 0:
        raise InvalidModel(f"model {name!r} is truncated (no 'end of trees')")
    # What follows the trees (feature importances, training parameters) plays no part in
    # prediction, and a damaged parameters section crashes LightGBM: it is left out.
    return _TREE_SIZES.sub("", text[:first_tree], count=1) + text[first_tree:end + 14]


_LINEAR_TREE = re.compile(r"^\[linear_tree: 1\]$", re.M)


def parse_model(text_bytes: bytes, *, name: str, path: str, version: str,
                last_modified: datetime | None,
                metadata: Mapping[str, str] | None = None, sha256: str | None = None) -> LoadedModel:
    """Parse a LightGBM text model; anything else raises :class:`InvalidModel`. ``sha256``: of
    ``text_bytes``, when the caller has it already."""
    try:
        text = text_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidModel(f"model {name!r} is not a LightGBM text model (not UTF-8 text)") from None
    safe_text = check_structure(text, name)
    try:
        booster = NativeBooster(safe_text)
    except NativeError as exc:  # LightGBM's parser refused it
        raise InvalidModel(f"model {name!r} could not be parsed: {exc}") from None
    header = _header(text)
    objective = (header.get("objective") or "unknown").split()[0]
    num_classes = int(header.get("num_class", "1") or 1)
    feature_infos = tuple(header.get("feature_infos", "").split(" "))
    schema = read_schema(text, booster.feature_names, feature_infos)
    # The parameters section (after the trees) is where LightGBM itself reads linear_tree;
    # trees of a linear model also carry is_linear=1.
    linear = bool(_LINEAR_TREE.search(text, safe_text_end(text))) or "\nis_linear=1\n" in text
    info = ModelInfo(
        name=name, path=path, version=version, last_modified=last_modified,
        feature_names=booster.feature_names, num_features=booster.num_features,
        objective=objective, num_classes=num_classes,
        num_outputs=booster.num_model_per_iteration, size_bytes=len(text_bytes),
        schema=schema, linear_tree=linear, blob_metadata=dict(metadata or {}),
        sha256=sha256 or hashlib.sha256(text_bytes).hexdigest(),
        feature_infos=feature_infos if len(feature_infos) == booster.num_features else ())
    return LoadedModel(booster, info)
