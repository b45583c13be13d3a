"""Building an artifact for one model: compile its forest in child processes (``worker.py``),
load the objects, check them against LightGBM and wrap them in the envelope. Used at upload
(``scorefn upload-model``, ``scorefn compile-model``) and by the opt-in on-instance compiler."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.models.compiled.artifact import blob_path, cache_key, pack
from shared.models.compiled.check import TOLERANCE, check, sample_rows
from shared.models.compiled.errors import CompileError
from shared.models.compiled.forest import CompiledForest
from shared.models.compiled.target import COMPILE_OPTIONS, PLATFORM_TARGET, host_problem, versions
from shared.models.compiled.traits import Traits, analyse

_ROOT = Path(__file__).resolve().parents[3]  # the app folder (shared/models/compiled/..)

# The check each instance runs before an artifact serves: fewer rows than at upload (256), on
# the first request's path; it guards against mix-ups and toolchain or CPU faults there. Its
# rows travel in the artifact, so an instance need not analyse the model's text.
LOAD_CHECK_ROWS = 64
LOAD_CHECK_SEED = 20261207


def default_parts() -> int:
    """Compile on every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def compile_forest(text: str, *, parts: int, timeout: float, nice: int = 10,
                   target: dict[str, str] = PLATFORM_TARGET,
                   on_start: Callable[[subprocess.Popen], None] | None = None
                   ) -> tuple[list[bytes], float, int]:
    """Compile the model ``text`` in child processes (``parts`` of them, at ``nice``, killed
    after ``timeout`` seconds): the objects, the seconds it took and the parts used."""
    with tempfile.TemporaryDirectory(prefix="scorefn-compile-") as tmp:
        model_file, out_file = os.path.join(tmp, "model.txt"), os.path.join(tmp, "forest.o")
        with open(model_file, "w", encoding="utf-8") as f:
            f.write(text)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_ROOT)] + [p for p in sys.path if p])
        spec = json.dumps({**target, **COMPILE_OPTIONS, "parts": parts, "nice": nice})
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "shared.models.compiled.worker", model_file,
                                 out_file, spec], cwd=str(_ROOT), env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        if on_start is not None:
            on_start(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise CompileError("timeout", f"compilation took longer than {timeout:g} s; stopped") from None
        seconds = time.perf_counter() - start
        tail = err.decode("utf-8", "replace").strip()[-500:]
        if proc.returncode == 3:
            raise CompileError("unsupported", tail or "lleaves cannot compile this model")
        if proc.returncode != 0:
            raise CompileError("compile_failed", f"compiler exited with {proc.returncode}: {tail}")
        report = json.loads(out.decode().strip().splitlines()[-1])
        objects = [Path(path).read_bytes() for path in report["objects"]]
        return objects, seconds, int(report["parts"])


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop the worker and the part processes it started (its own process group)."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    proc.communicate()


@dataclass(frozen=True)
class Artifact:
    """A checked artifact for one model version, ready to upload."""

    key: str
    path: str  # its blob path in the models container
    data: bytes
    compile_seconds: float
    parts: int
    objects_bytes: int

    def metadata(self, model_path: str) -> dict[str, str]:
        """Blob metadata: which model it was made for (the blob's content is the proof)."""
        return {"scorefn_model": model_path[:200], "scorefn_key": self.key}


def artifact_key(model_sha256: str) -> tuple[str, dict[str, Any]]:
    """The key (and inputs) of the artifact for a model with this content, as built here."""
    return cache_key(model_sha256=model_sha256, target=PLATFORM_TARGET, tool_versions=versions())


def model_text(model: Any) -> str:
    """The text the forest is compiled from: the model as LightGBM loaded it."""
    return model.booster.model_to_string(num_iteration=model.num_iteration)


def traits_of(model: Any, text: str) -> Traits:
    return analyse(text, model.info.num_features, model.info.num_outputs)


def build_artifact(model: Any, *, model_path: str | None = None, parts: int | None = None,
                   timeout: float = 3600.0,
                   nice: int = 10, tolerance: float = TOLERANCE,
                   on_start: Callable[[subprocess.Popen], None] | None = None) -> Artifact:
    """Compile, load and check ``model`` (a :class:`LoadedModel`); :class:`CompileError` when
    it cannot be compiled for the platform or the compiled forest differs from LightGBM.
    ``model_path``: the model's blob path (default: where it was loaded from)."""
    problem = host_problem()
    if problem is not None:
        raise CompileError("wrong_host", f"cannot build or check artifacts here: {problem}")
    text = model_text(model)
    traits = traits_of(model, text)
    if traits.unsupported:
        raise CompileError("unsupported", traits.unsupported)
    objects, seconds, used = compile_forest(text, parts=parts or default_parts(), timeout=timeout,
                                            nice=nice, on_start=on_start)
    forest = load_forest(objects, traits)
    run_check(model, forest, text, tolerance)
    key, inputs = artifact_key(model.info.sha256)
    rows = sample_rows(text, traits.num_features, n=LOAD_CHECK_ROWS, seed=LOAD_CHECK_SEED)
    data = pack(objects, key, inputs, seconds, traits=dataclasses.asdict(traits), rows=rows)
    return Artifact(key=key, path=blob_path(model_path or model.info.path, key),
                    data=data, compile_seconds=seconds, parts=used,
                    objects_bytes=sum(map(len, objects)))


def load_forest(objects: list[bytes], traits: Traits) -> CompiledForest:
    """Load objects into this process; :class:`CompileError` ``load_failed`` otherwise."""
    try:
        return CompiledForest(objects, traits)
    except CompileError:
        raise
    except Exception as exc:  # llvmlite: no executable memory, unresolved symbols, ...
        raise CompileError("load_failed", f"could not load the object code: "
                                          f"{type(exc).__name__}: {str(exc)[:200]}") from None


def run_check(model: Any, forest: CompiledForest, text: str, tolerance: float = TOLERANCE,
              rows: Any = None) -> None:
    """The equality check, any failure as :class:`CompileError` ``check_failed``."""
    try:
        check(model, forest, text, tolerance, rows)
    except CompileError:
        raise
    except Exception as exc:
        raise CompileError("check_failed", f"the check raised {type(exc).__name__}: "
                                           f"{str(exc)[:200]}") from None
