"""Serving compiled from the first request: a model that loads also fetches its artifact (built
and uploaded beside it by ``scorefn upload-model`` or ``scorefn compile-model``), verifies the
envelope and this CPU, loads the objects and runs the equality check, all before the model
serves its first request. LightGBM serves, after one warning and a metric, when the artifact is
missing, damaged, made for something else, fails the check, or the CPU lacks a feature.

The fetch, the envelope check and the load run in a background thread while LightGBM parses
the model (both release the GIL); the check then needs both.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.models.compiled.artifact import Contents, blob_path, unpack_all
from shared.models.compiled.build import (
    LOAD_CHECK_ROWS,
    LOAD_CHECK_SEED,
    artifact_key,
    load_forest,
    run_check,
)
from shared.models.compiled.check import sample_rows
from shared.models.compiled.errors import CompileError
from shared.models.compiled.forest import CompiledForest
from shared.models.compiled.target import host_problem, versions
from shared.models.compiled.traits import Traits, analyse, split_thresholds

log = logging.getLogger("scorefn.compiled")




@dataclass(frozen=True)
class Prepared:
    """What the background thread made ready: a loaded forest and the check's rows, or why
    there is none (``reason``: ``missing``, ``damaged``, ``foreign``, ``unsupported``,
    ``cpu``, ``load_failed``, ``unavailable``)."""

    forest: CompiledForest | None
    rows: np.ndarray | None
    text: str
    reason: str = ""
    message: str = ""


class Pending:
    """An artifact being fetched and loaded for one model version."""

    def __init__(self, loader: ArtifactLoader, name: str, path: str, future: Future) -> None:
        self._loader, self._name, self._path, self._future = loader, name, path, future

    def finish(self, model: Any) -> bool:
        """Check the loaded forest against ``model`` (LightGBM) and attach it when equal;
        otherwise warn once and count the fallback. True when ``model`` now serves compiled."""
        try:
            prepared: Prepared = self._future.result()
        except Exception as exc:  # a bug here must never fail the model's load
            prepared = Prepared(None, None, "", "load_failed", f"{type(exc).__name__}: {exc}")
        forest = prepared.forest
        if forest is not None:
            try:
                if (forest.traits.num_features != model.info.num_features
                        or forest.traits.num_outputs != model.info.num_outputs):
                    raise CompileError("check_failed", "the artifact's shape differs from the model's")
                assert prepared.rows is not None
                run_check(model, forest, prepared.text, rows=prepared.rows)
            except CompileError as exc:
                prepared = Prepared(None, None, "", exc.reason, exc.message)
            else:
                model.attach_compiled(forest)
                self._loader.counts["compiled"] += 1
                log.info("compiled trees: model %s version %s serves compiled (%d KiB)",
                         self._name, model.info.version, forest.size_bytes // 1024)
                return True
        self._loader.fell_back(self._name, model.info.version, prepared.reason, prepared.message)
        return False


class ArtifactLoader:
    """Fetches artifacts from the models container (see the module docstring)."""

    def __init__(self, source: Any, *, on_fallback: Callable[[str, str], Any] | None = None) -> None:
        self.source = source  # a BlobSource on the models container, limited to MAX_ARTIFACT_BYTES
        self._on_fallback = on_fallback
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scorefn-artifact")
        self._lock = threading.Lock()
        self._warned: set[tuple[str, str, str]] = set()
        self._warming: Future | None = None
        self.counts: Counter[str] = Counter()  # compiled, and fallbacks by reason (tests, status)

    def warm(self) -> None:
        """Read the compiler versions (the artifact's key) in the background, once: called
        before the first model downloads. LLVM itself (llvmlite: ~0.1 s and ~40 MB) is loaded
        only when an artifact is found, so an app without artifacts never pays for it."""
        with self._lock:
            if self._warming is None:
                self._warming = self._pool.submit(versions)

    def begin(self, name: str, path: str, data: bytes, sha256: str) -> Pending:
        """Start fetching and loading the artifact of the model file ``data`` (at ``path``)."""
        return Pending(self, name, path, self._pool.submit(self._prepare, path, data, sha256))

    def fell_back(self, name: str, version: str, reason: str, message: str) -> None:
        """LightGBM serves this version: one warning per model version and reason, a metric."""
        with self._lock:
            self.counts[reason] += 1
            first = (name, version, reason) not in self._warned
            if first:
                if len(self._warned) > 10_000:
                    self._warned.clear()
                self._warned.add((name, version, reason))
        if first:
            log.warning("compiled trees: model %s version %s is served by LightGBM: %s (%s)",
                        name, version, message, reason)
        if self._on_fallback is not None:
            try:
                self._on_fallback(name, reason)
            except Exception:  # counting must never fail a load
                log.debug("compiled fallback callback failed", exc_info=True)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _prepare(self, path: str, data: bytes, sha256: str) -> Prepared:
        from shared.errors import ModelNotFound, ScoreError

        text = data.decode("utf-8", "replace")
        key, inputs = artifact_key(sha256)  # versions() is cached: warm() read them
        where = blob_path(path, key)
        try:
            content = self.source.fetch(where)
        except ModelNotFound:
            tools = versions()
            return Prepared(None, None, text, "missing",
                            f"no compiled artifact {where} (built by `scorefn upload-model` or "
                            f"`scorefn compile-model` with lleaves {tools['lleaves']} and "
                            f"llvmlite {tools['llvmlite']}, as this app has)")
        except ScoreError as exc:
            return Prepared(None, None, text, "unavailable", f"could not read {where}: {exc.message}")
        assert content is not None
        try:
            contents = unpack_all(content.data, key, inputs)
            problem = host_problem()
            if problem is not None:
                raise CompileError("cpu", problem)
            traits, rows = _carried(contents)
            if traits is None or rows is None:  # an artifact without them: from the text
                traits, split = _traits(text)
                rows = sample_rows(text, traits.num_features, n=LOAD_CHECK_ROWS,
                                   seed=LOAD_CHECK_SEED, thresholds=split[0])
            if traits.unsupported:
                raise CompileError("unsupported", traits.unsupported)
            forest = load_forest(objects=contents.objects, traits=traits)
        except CompileError as exc:
            return Prepared(None, None, text, exc.reason, f"{where}: {exc.message}")
        return Prepared(forest, rows, text)


def _carried(contents: Contents) -> tuple[Traits | None, np.ndarray | None]:
    """The traits and check rows the artifact carries (made at build from the same text)."""
    raw = contents.header.get("traits")
    if not isinstance(raw, dict) or contents.rows is None:
        return None, None
    try:
        traits = Traits(objective=str(raw["objective"]), params=dict(raw["params"]),
                        num_outputs=int(raw["num_outputs"]), num_features=int(raw["num_features"]),
                        unsupported=raw.get("unsupported"),
                        zero_features=tuple(int(j) for j in raw["zero_features"]))
    except (KeyError, TypeError, ValueError):
        raise CompileError("damaged", "the artifact's traits are unreadable") from None
    if contents.rows.shape[1] != traits.num_features:
        raise CompileError("damaged", "the artifact's check rows do not fit its model")
    return traits, contents.rows


def _traits(text: str) -> tuple[Traits, tuple[list[list[float]], set[int]]]:
    """The traits of a model text (its shape read from its header), and its split thresholds."""
    head = text[: text.find("\nTree=")]
    header = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    try:
        num_features = int(header.get("max_feature_idx", "-1")) + 1
        num_outputs = int(header.get("num_tree_per_iteration") or header.get("num_class") or 1)
    except ValueError:
        raise CompileError("check_failed", "unreadable model header") from None
    split = split_thresholds(text, num_features)
    return analyse(text, num_features, num_outputs, split), split
