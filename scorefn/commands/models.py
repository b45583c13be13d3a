"""``upload-model`` and ``train-demo``: put models where the functions find them."""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

from .storage_args import add_storage_args, app_settings, blob_service


def register(subparsers) -> None:
    up = subparsers.add_parser("upload-model", help="validate a LightGBM text model and upload it",
                               description="Parse the model locally (so a broken file never "
                                           "reaches production), then upload it as NAME.txt "
                                           "(or NAME.txt.gz with --gzip).")
    up.add_argument("file", type=Path, help="LightGBM text model (booster.save_model output)")
    up.add_argument("name", help="model name, e.g. churn or churn/v2")
    up.add_argument("--container", default=None, metavar="NAME",
                    help="models container (default $MODEL_CONTAINER or models)")
    up.add_argument("--gzip", action="store_true", help="store compressed (faster downloads)")
    add_storage_args(up)
    up.set_defaults(run=upload_model)

    train = subparsers.add_parser("train-demo", help="train the demo models on generated data")
    train.add_argument("out_dir", type=Path, nargs="?", default=Path(".demo/models"))
    train.set_defaults(run=train_demo)


def upload_model(args: argparse.Namespace) -> int:
    from shared.errors import ScoreError
    from shared.model import parse_model

    try:
        data = args.file.read_bytes()
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        model = parse_model(data, name=args.name, path=args.name, version="local",
                            last_modified=None)
    except ScoreError as exc:  # a broken file never reaches storage
        print(f"not uploaded: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    blob_name = args.name if args.name.endswith((".txt", ".txt.gz")) else args.name + ".txt"
    if args.gzip and not blob_name.endswith(".gz"):
        blob_name += ".gz"
    if blob_name.endswith(".gz"):
        data = gzip.compress(data)
    container_name = args.container or app_settings().model_container
    container = blob_service(args).get_container_client(container_name)
    if not container.exists():
        container.create_container()
    result = container.get_blob_client(blob_name).upload_blob(data, overwrite=True)
    info = model.info
    print(f"uploaded {container_name}/{blob_name} ({len(data):,} bytes): {info.objective}, "
          f"{info.num_features} features, version {str(result.get('etag', '')).strip(chr(34))}")
    return 0


def train_demo(args: argparse.Namespace) -> int:
    from .. import demo_models

    for model in demo_models.train_demo_models(args.out_dir).values():
        print(f"{model.name:10s} {model.objective:11s} {model.path}")
    return 0
