"""``upload-model`` and ``train-demo``: put models where the functions find them."""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

from scorefn.commands.compile import add_compile_args, build_with_progress, upload_artifact
from scorefn.commands.storage_args import add_storage_args, app_settings, blob_service


def register(subparsers) -> None:
    from scorefn.commands.latency import add_latency_args

    up = subparsers.add_parser(
        "upload-model", help="validate a LightGBM model, check its latency, compile and upload it",
        description="Read the model (a LightGBM text model, plain or gzip, or an MLflow model "
                    "folder of the lightgbm flavor; pickles and joblib files are refused, never "
                    "unpickled), parse it locally as the app will (so a broken file never "
                    "reaches production), measure its latency on this machine beside the "
                    "reference model, compile its trees for the platform and check them against "
                    "LightGBM (on x86-64 Linux with lleaves), then upload the compiled trees and "
                    "the text model as NAME.txt (or NAME.txt.gz with --gzip) with the figures as "
                    "blob metadata; with --reference-data, its reference profile for drift "
                    "monitoring beside it. See docs/model-files.md, docs/latency-check.md and "
                    "docs/compiled-trees.md.")
    up.add_argument("file", type=Path,
                    help="LightGBM text model (booster.save_model output) or MLflow model folder")
    up.add_argument("name", help="model name, e.g. churn or churn/v2")
    up.add_argument("--container", default=None, metavar="NAME",
                    help="models container (default $MODEL_CONTAINER or models)")
    up.add_argument("--gzip", action="store_true", help="store compressed (faster downloads)")
    up.add_argument("--force", action="store_true",
                    help="upload even when the single-row p99 is over --max-p99-ms")
    up.add_argument("--no-latency-check", action="store_true",
                    help="upload without measuring (e.g. a pipeline that ran check-latency "
                         "already); no figures are stored, so `router set` refuses the model "
                         "under a latency budget unless --force")
    ref = up.add_argument_group("monitoring")
    ref.add_argument("--reference-data", type=Path, default=None, metavar="FILE",
                     help="training or validation rows (CSV, or Parquet with pyarrow installed; "
                          "the columns of batch job inputs) to profile: each feature's bins, "
                          "missing and category shares, and the model's predictions on them, "
                          "stored beside the model as NAME.txt.reference.json; drift monitoring "
                          "compares served rows with it (docs/monitoring.md)")
    ref.add_argument("--reference-label", default=None, metavar="COLUMN",
                     help="a column of --reference-data that is not a feature (the label) and is "
                          "skipped")
    ref.add_argument("--reference-max-rows", type=int, default=None, metavar="N",
                     help="profile a uniform sample of at most N rows (default 200,000)")
    add_latency_args(up)
    add_compile_args(up)
    add_storage_args(up)
    up.set_defaults(run=upload_model)

    train = subparsers.add_parser("train-demo", help="train the demo models on generated data")
    train.add_argument("out_dir", type=Path, nargs="?", default=Path(".demo/models"))
    train.set_defaults(run=train_demo)


def upload_model(args: argparse.Namespace) -> int:
    from scorefn.commands.latency import parse_or_report, read_model_or_report, run_check, summary
    from shared.errors import InvalidName
    from shared.models.store import blob_candidates

    found = read_model_or_report(args.file, "not uploaded")
    if found is None:
        return 1
    model = parse_or_report(found.data, args.name, "not uploaded")
    if model is None:
        return 1
    try:
        blob_candidates(args.name)
    except InvalidName as exc:
        print(f"not uploaded: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    print(f"found: {summary(found.describe(), found.data, model)}")
    reference = None
    if args.reference_data is not None:
        reference = profile_reference(args, model)
        if reference is None:
            return 1
    # Storage is resolved before measuring: a missing or invalid connection fails at once.
    container_name = args.container or app_settings().model_container
    container = blob_service(args).get_container_client(container_name)
    if args.no_latency_check:
        if args.max_p99_ms is not None:
            print("not uploaded: --max-p99-ms needs the latency check (drop --no-latency-check)",
                  file=sys.stderr)
            return 1
        report = None
        print("latency check: skipped (--no-latency-check); no figures are stored with the model")
    else:
        report = run_check(args, found.data, str(args.file))
        if report is None:
            print("not uploaded", file=sys.stderr)
            return 1
    if report is not None and report.over_budget(args.max_p99_ms):
        over = (f"single-row p99 {report.model.p99_ms:.3f} ms is over --max-p99-ms "
                f"{args.max_p99_ms:g}")
        if not args.force:
            print(f"not uploaded: {over} (--force uploads it anyway)", file=sys.stderr)
            return 1
        print(f"uploading anyway (--force): {over}")
    blob_name = args.name if args.name.endswith((".txt", ".txt.gz")) else args.name + ".txt"
    if args.gzip and not blob_name.endswith(".gz"):
        blob_name += ".gz"
    artifact = None
    if not args.no_compile:
        artifact = build_with_progress(model, args, blob_name)
    data = gzip.compress(found.data) if blob_name.endswith(".gz") else found.data
    if not container.exists():
        container.create_container()
    if artifact is not None:
        upload_artifact(container, artifact, blob_name)
    result = container.get_blob_client(blob_name).upload_blob(
        data, overwrite=True, metadata=report.figures().to_metadata() if report is not None else {})
    info = model.info
    if reference is not None:
        from shared.monitoring.blobs import write_reference

        name = write_reference(container, blob_name, reference)
        print(f"reference profile: {container_name}/{name} ({len(reference.encode()):,} bytes)")
    print(f"uploaded {container_name}/{blob_name} ({len(data):,} bytes): {info.objective}, "
          f"{info.num_features} features, version {str(result.get('etag', '')).strip(chr(34))}"
          + (", with its latency figures" if report is not None else "")
          + (", served compiled" if artifact is not None else ""))
    return 0


def profile_reference(args: argparse.Namespace, model):
    """The reference profile of ``--reference-data`` (``None``: refused, and said why)."""
    from scorefn.monitoring.reference_data import MAX_ROWS, ReferenceError, build_reference

    max_rows = args.reference_max_rows or MAX_ROWS
    if max_rows < 100:
        print("not uploaded: --reference-max-rows must be at least 100", file=sys.stderr)
        return None
    if not args.reference_data.is_file():
        print(f"not uploaded: no file {args.reference_data}", file=sys.stderr)
        return None

    def progress(rows: int) -> None:
        print(f"\rreference: {rows:,} rows read", end="", flush=True)

    try:
        reference, total = build_reference(args.reference_data, model,
                                           label=args.reference_label, max_rows=max_rows,
                                           progress=progress)
    except ReferenceError as exc:
        print(f"\nnot uploaded: reference refused: {exc}", file=sys.stderr)
        return None
    kept = reference.profile.rows
    print(f"\rreference: {total:,} rows read, {kept:,} profiled"
          + (" (a uniform sample)" if kept < total else ""))
    return reference


def train_demo(args: argparse.Namespace) -> int:
    from scorefn.demo.models import train_demo_models

    for model in train_demo_models(args.out_dir).values():
        print(f"{model.name:10s} {model.objective:11s} {model.path}")
    return 0
