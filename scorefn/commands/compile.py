"""``compile-model``, and the compile step of ``upload-model``: build a model's compiled-trees
artifact on this machine (all cores), check it against LightGBM, upload it beside the model.
See docs/compiled-trees.md."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

from scorefn.commands.storage_args import add_storage_args

PROGRESS_SECONDS = 15.0


def register(subparsers) -> None:
    cmd = subparsers.add_parser(
        "compile-model", help="build and upload the compiled trees of models already in storage",
        description="For each model NAME in the models container: download it, compile its "
                    "trees for the platform (x86-64-v3 Linux) with lleaves on all cores here, "
                    "check the compiled forest against LightGBM on sample rows, and upload the "
                    "artifact beside the model. Instances then serve the model compiled from its "
                    "next load. `upload-model` does this for new models. Needs x86-64 Linux "
                    "(e.g. CI). See docs/compiled-trees.md.")
    cmd.add_argument("names", nargs="+", metavar="NAME", help="model names (churn, churn/v2, ...)")
    cmd.add_argument("--container", default=None, metavar="NAME",
                     help="models container (default $MODEL_CONTAINER or models)")
    cmd.add_argument("--force", action="store_true",
                     help="build again even when the artifact is already stored")
    add_compile_args(cmd, with_switch=False)
    add_storage_args(cmd)
    cmd.set_defaults(run=compile_model_command)


def add_compile_args(parser: argparse.ArgumentParser, with_switch: bool = True) -> None:
    group = parser.add_argument_group("compiled trees")
    if with_switch:
        group.add_argument("--no-compile", action="store_true",
                           help="upload without compiled trees (LightGBM serves the model)")
    group.add_argument("--compile-processes", type=int, default=None, metavar="N",
                       help="compiler processes (default: one per core here)")
    group.add_argument("--compile-timeout", type=float, default=3600.0, metavar="SECONDS",
                       help="give up compiling after this long (default 3600)")


def build_with_progress(model: Any, args: argparse.Namespace, model_path: str) -> Any:
    """The checked artifact of ``model`` (to be stored at ``model_path``), or ``None`` after one
    line saying why LightGBM will serve it instead. Prints progress while it compiles."""
    from shared.models.compiled.errors import CompileError
    from shared.models.compiled.target import can_compile

    if not can_compile():
        print("compiled trees: skipped, lleaves/llvmlite are not installed here; LightGBM will "
              "serve this model")
        return None
    if args.compile_processes is not None and args.compile_processes < 1:
        raise SystemExit("--compile-processes must be at least 1")
    from shared.models.compiled.build import build_artifact, default_parts

    parts = args.compile_processes or default_parts()
    print(f"compiled trees: compiling for x86-64-v3 on {parts} process(es)...", flush=True)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["artifact"] = build_artifact(model, model_path=model_path, parts=parts,
                                                timeout=args.compile_timeout, nice=0)
        except CompileError as exc:
            result["error"] = exc
        except Exception as exc:  # report, never lose the upload over it
            result["error"] = CompileError("compile_failed", f"{type(exc).__name__}: {exc}")

    start = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(PROGRESS_SECONDS)
        if worker.is_alive():
            print(f"  still compiling ({time.monotonic() - start:.0f} s)", flush=True)
    if "error" in result:
        exc = result["error"]
        what = {"unsupported": "not for this model", "wrong_host": "skipped"}.get(exc.reason, "failed")
        print(f"compiled trees: {what}: {exc.message}; LightGBM will serve this model"
              + ("" if exc.reason == "unsupported" else
                 " (`scorefn compile-model NAME` builds it later, on x86-64 Linux)"))
        return None
    artifact = result["artifact"]
    print(f"compiled trees: built in {artifact.compile_seconds:.1f} s on {artifact.parts} "
          f"process(es), {artifact.objects_bytes / 1e6:.1f} MB, equal to LightGBM on the check's "
          f"sample rows")
    return artifact


def upload_artifact(container: Any, artifact: Any, model_path: str) -> None:
    """Store the artifact in the models container (before the model: an instance that loads
    the new model finds it)."""
    container.get_blob_client(artifact.path).upload_blob(
        artifact.data, overwrite=True, metadata=artifact.metadata(model_path))
    print(f"compiled trees: uploaded {container.container_name}/{artifact.path}")


def compile_model_command(args: argparse.Namespace) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    from scorefn.commands.latency import fetch_model_blob
    from shared.errors import ScoreError
    from shared.models.compiled.artifact import blob_path
    from shared.models.compiled.build import artifact_key
    from shared.models.model import parse_model

    failures = 0
    for name in args.names:
        try:
            path, content, container = fetch_model_blob(args, name)
            model = parse_model(content.data, name=name, path=path, version=content.etag,
                                last_modified=content.last_modified, metadata=content.metadata)
        except ScoreError as exc:
            print(f"{name}: {exc.code}: {exc.message}", file=sys.stderr)
            failures += 1
            continue
        key, _ = artifact_key(model.info.sha256)
        where = blob_path(path, key)
        if not args.force:
            try:
                container.get_blob_client(where).get_blob_properties()
                print(f"{name}: already compiled ({container.container_name}/{where}); --force "
                      f"builds it again")
                continue
            except ResourceNotFoundError:
                pass
        print(f"{name}: {container.container_name}/{path}, {model.info.size_bytes:,} bytes")
        artifact = build_with_progress(model, args, path)
        if artifact is None:
            failures += 1
            continue
        upload_artifact(container, artifact, path)
    return 1 if failures else 0
