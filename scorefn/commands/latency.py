"""``check-latency``: how fast a model would serve, measured here beside the reference model.

Also the pieces ``upload-model`` shares: the latency options, reading a model file (or MLflow
folder) with a one-line refusal, and running the check with progress.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from scorefn.commands.storage_args import add_storage_args, app_settings, blob_service


def register(subparsers) -> None:
    check = subparsers.add_parser(
        "check-latency", help="measure a model's latency on this machine, beside the reference",
        description="Measure a model on this machine through the app's own code path (a JSON "
                    "body in, the JSON response out): parse time, memory of the loaded model, "
                    "single-row p50/p99 and rows/s in 1,000-row requests, beside the project's "
                    "reference model (500 trees, 63 leaves, 100 features) measured in the same "
                    "run. A pre-deployment estimate: live figures come from telemetry. See "
                    "docs/latency-check.md.")
    check.add_argument("model", type=Path, nargs="?",
                       help="a LightGBM text model file or an MLflow model folder (lightgbm "
                            "flavor); or use --blob")
    check.add_argument("--blob", metavar="NAME", default=None,
                       help="measure the model NAME in the models container instead (churn, "
                            "churn/v2, churn.txt.gz)")
    check.add_argument("--save", action="store_true",
                       help="with --blob: store the figures with the blob (as upload-model "
                            "does), unless the blob changed meanwhile")
    check.add_argument("--container", default=None, metavar="NAME",
                       help="models container for --blob (default $MODEL_CONTAINER or models)")
    add_latency_args(check)
    add_storage_args(check)
    check.set_defaults(run=check_latency_command)


def add_latency_args(parser: argparse.ArgumentParser) -> None:
    from scorefn.latency_check import DEFAULT_SECONDS

    group = parser.add_argument_group("latency check")
    group.add_argument("--max-p99-ms", type=_positive_ms, default=None, metavar="MS",
                       help="refuse a model whose single-row p99 measured here is over MS "
                            "milliseconds")
    group.add_argument("--seconds", type=_positive_seconds, default=DEFAULT_SECONDS, metavar="S",
                       help=f"how long the timing loops run (default {DEFAULT_SECONDS:g}); "
                            f"longer is steadier")
    group.add_argument("--reference", type=Path, default=None, metavar="FILE",
                       help="compare with this model (a text model file or MLflow folder, "
                            "e.g. the one serving now) instead of the project's reference model")


def check_latency_command(args: argparse.Namespace) -> int:
    from shared.errors import ScoreError
    from shared.models.latency_figures import read_latency_figures

    if (args.model is None) == (args.blob is None):
        print("error: give a model file or folder, or --blob NAME (one of them)", file=sys.stderr)
        return 2
    if args.save and args.blob is None:
        print("error: --save stores figures with a blob: use it with --blob NAME", file=sys.stderr)
        return 2
    stored: Any = None
    if args.model is not None:
        found = read_model_or_report(args.model, "not measured")
        if found is None:
            return 1
        data, label = found.data, str(args.model)
        description = found.describe()
    else:
        try:
            blob_path, content, container = fetch_model_blob(args, args.blob)
        except ScoreError as exc:
            print(f"not measured: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
        data, label = content.data, args.blob
        description = f"LightGBM text model (blob {container.container_name}/{blob_path})"
        stored = read_latency_figures(content.metadata)
    model = parse_or_report(data, label, "not measured")
    if model is None:
        return 1
    print(f"found: {summary(description, data, model)}")
    if stored is not None:
        print(f"stored with the blob: single-row p99 {stored.single_row_p99_ms:.3f} ms "
              f"(reference {stored.reference_p99_ms:.3f} ms), measured {stored.measured_at} "
              f"on {stored.machine}")
    report = run_check(args, data, label)
    if report is None:
        return 1
    if args.save:
        if not _save(args, container, blob_path, content.etag, content.metadata, report):
            return 1
    if report.over_budget(args.max_p99_ms):
        print(f"over budget: single-row p99 {report.model.p99_ms:.3f} ms is over --max-p99-ms "
              f"{args.max_p99_ms:g}", file=sys.stderr)
        return 1
    return 0


# -- shared with upload-model -----------------------------------------------------------------

def read_model_or_report(path: Path, refused: str) -> Any:
    """The :class:`~scorefn.model_files.ModelFile` at ``path``, or ``None`` after one line
    saying why not (``refused`` starts it: ``not uploaded``)."""
    from scorefn.model_files import read_model_file
    from shared.errors import ScoreError

    try:
        return read_model_file(path)
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
    except ScoreError as exc:
        print(f"{refused}: {exc.code}: {exc.message}", file=sys.stderr)
    return None


def parse_or_report(data: bytes, name: str, refused: str) -> Any:
    """The model parsed as the app parses it, or ``None`` after one line saying why not."""
    from shared.errors import ScoreError
    from shared.models.model import parse_model

    try:
        return parse_model(data, name=name, path=name, version="local", last_modified=None)
    except ScoreError as exc:  # a broken file never reaches storage
        print(f"{refused}: {exc.code}: {exc.message}", file=sys.stderr)
        return None


def summary(description: str, data: bytes, model: Any) -> str:
    """``LightGBM text model (...), 500 trees, 100 features, 2 categorical, binary``."""
    from scorefn.model_files import model_shape

    shape = model_shape(data)
    info = model.info
    kind = (f"{info.objective}, {info.num_classes} classes" if info.num_classes > 1
            else info.objective)
    return (f"{description}, {shape.trees} trees, {info.num_features} features, "
            f"{shape.categorical} categorical, {kind}")


def run_check(args: argparse.Namespace, data: bytes, label: str) -> Any:
    """Run the latency check with progress lines and print its table; ``None`` after one
    line when it could not run (a reference that is not a model, a model that cannot score)."""
    from scorefn.latency_check import check_latency
    from shared.errors import ScoreError

    reference = None
    reference_label = None
    if args.reference is not None:
        found = read_model_or_report(args.reference, "reference refused")
        if found is None:
            return None
        reference, reference_label = found.data, f"reference ({args.reference.name})"
    print(f"latency check on this machine (about {args.seconds:g} s of timing):", flush=True)
    try:
        kwargs = {"reference_label": reference_label} if reference_label else {}
        report = check_latency(data, label=_short(label), reference=reference,
                               seconds=args.seconds,
                               progress=lambda m: print(f"  {m}", flush=True), **kwargs)
    except ScoreError as exc:
        print(f"latency check failed: {exc.code}: {exc.message}", file=sys.stderr)
        return None
    print(report.table())
    return report


# -- --blob -------------------------------------------------------------------------------------

def fetch_model_blob(args: argparse.Namespace, name: str) -> tuple[str, Any, Any]:
    """(blob path, content, container client) of the model ``name`` in the models container
    (``--container``), found as the app finds it (``NAME.txt``, then ``NAME.txt.gz``)."""
    from shared.errors import ModelNotFound
    from shared.models.blob_source import BlobSource
    from shared.models.store import blob_candidates

    settings = app_settings()
    container_name = args.container or settings.model_container
    container = blob_service(args).get_container_client(container_name)
    source = BlobSource(container, settings.max_model_mb * 1024 * 1024)
    candidates = blob_candidates(name)
    for path in candidates:
        try:
            return path, source.fetch(path), container
        except ModelNotFound:
            continue
    raise ModelNotFound(f"no model {name!r} in container {container_name!r} (looked for "
                        f"{', '.join(candidates)})")


def _save(args: argparse.Namespace, container: Any, blob_path: str, etag: str,
          metadata: Any, report: Any) -> bool:
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

    from shared.models.latency_figures import without_latency_figures

    merged = {**without_latency_figures(metadata), **report.figures().to_metadata()}
    try:
        container.get_blob_client(blob_path).set_blob_metadata(
            merged, etag=f'"{etag}"', match_condition=MatchConditions.IfNotModified)
    except (ResourceModifiedError, ResourceNotFoundError):
        print(f"not saved: {container.container_name}/{blob_path} changed while it was being "
              f"measured; measure it again", file=sys.stderr)
        return False
    print(f"figures saved with {container.container_name}/{blob_path} (its ETag changes: "
          f"running instances reload the same model)")
    return True


def _short(label: str) -> str:
    return label if len(label) <= 40 else "..." + label[-37:]


def _positive_ms(text: str) -> float:
    return _positive(text, "milliseconds")


def _positive_seconds(text: str) -> float:
    return _positive(text, "seconds")


def _positive(text: str, unit: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of {unit}")
    return value
