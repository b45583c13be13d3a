"""``router``: validate, set and show the router config the functions read (A/B splits,
sticky keys, shadows, overrides, the prediction log).

``validate`` runs the app's own parser (``shared.router.parse_config``), so a file it accepts
is one the app accepts; with ``--check-models`` (and always for ``set``) it also loads every
model the config names, as the app does before it swaps a config in (``ROUTER_CHECK_MODELS``).
``set`` uploads only a config that passed, optionally only over a known version (``--if-match``).
An endpoint's latency budget (``max_p99_ms``) is checked against the latency figures stored
with each variant's model blob (``shared/models/latency_figures.py``, written by ``upload-model``):
``set`` refuses a model over its budget or without figures unless ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from scorefn.commands.storage_args import (
    add_config_location_args,
    app_settings,
    blob_service,
    config_location,
)


def register(subparsers) -> None:
    router = subparsers.add_parser(
        "router", help="validate, set or show the router config (A/B splits, shadows)",
        description="The router config is a JSON blob in the models container (ROUTER_CONFIG_BLOB); "
                    "running instances pick up a new one within ROUTER_REFRESH_SECONDS, without "
                    "a restart. See the README's Routing section for the format.")
    actions = router.add_subparsers(dest="action", metavar="ACTION")

    validate = actions.add_parser(
        "validate", help="check a config file as the app does and print its routing table",
        description="Parse and validate FILE with the app's own rules; print each endpoint's "
                    "variants and shares. Exit 0 when valid, 1 otherwise.")
    validate.add_argument("file", type=Path, help="router config (JSON)")
    validate.add_argument("--check-models", action="store_true",
                          help="also load every model it names from storage, check that the "
                               "variants of each endpoint take the same features and that their "
                               "models' stored latency figures are within the endpoint's "
                               "max_p99_ms")
    add_config_location_args(validate)
    validate.set_defaults(run=validate_config)

    put = actions.add_parser(
        "set", help="validate a config file, check its models and upload it",
        description="Validate FILE, load every model it names (a config naming a missing or "
                    "broken model would be refused by the app and the previous one kept), check "
                    "each endpoint's latency budget (max_p99_ms) against the figures stored with "
                    "its variants' models, then upload it as the router config blob.")
    put.add_argument("file", type=Path, help="router config (JSON)")
    put.add_argument("--if-match", metavar="ETAG",
                     help="upload only if the config in storage is still this version (from "
                          "`router show`), so that a concurrent change is not overwritten")
    put.add_argument("--no-check-models", dest="check_models", action="store_false",
                     help="upload without loading the models (the app still checks them) or "
                          "checking latency budgets")
    put.add_argument("--force", action="store_true",
                     help="upload even when a variant's model is over its endpoint's max_p99_ms "
                          "or has no latency figures")
    add_config_location_args(put)
    put.set_defaults(run=set_config, check_models=True)

    show = actions.add_parser(
        "show", help="print the config in storage, its routing table and whether the app accepts it",
        description="Download the router config blob, print its version and routing table, and "
                    "run the checks the app runs before it swaps a config in (valid, every model "
                    "loads, the variants of an endpoint take the same features): a config the "
                    "app refuses is said to be refused, with the reason (instances keep serving "
                    "the config they had). Exit 1 when refused.")
    show.add_argument("--json", action="store_true", help="print the document as stored")
    show.add_argument("--no-check-models", dest="check_models", action="store_false",
                      help="do not load the models (only the document is checked)")
    add_config_location_args(show)
    show.set_defaults(run=show_config, check_models=True)
    router.set_defaults(run=lambda args: _usage(router))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# -- actions ---------------------------------------------------------------------------------

def validate_config(args: argparse.Namespace) -> int:
    config = _parse_file(args.file)
    if config is None:
        return 1
    print(f"{args.file}: valid")
    _print_table(config)
    if args.check_models:
        infos = _models_load(args, config)
        if infos is None or not _budgets_met(config, infos, force=False):
            return 1
    return 0


def set_config(args: argparse.Namespace) -> int:
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

    config = _parse_file(args.file)
    if config is None:
        return 1
    if args.check_models:
        infos = _models_load(args, config)
        if infos is None:
            print("not uploaded", file=sys.stderr)
            return 1
        if not _budgets_met(config, infos, force=args.force):
            print("not uploaded (--force uploads it anyway)", file=sys.stderr)
            return 1
    elif any(ep.max_p99_ms is not None for ep in config.endpoints.values()):
        print("latency budgets not checked (--no-check-models)")
    container_name, blob_name = config_location(args)
    container = blob_service(args).get_container_client(container_name)
    if not container.exists():
        container.create_container()
    data = args.file.read_bytes()
    conditions: dict[str, Any] = {}
    if args.if_match:
        # ETags are quoted on the wire; `show` prints them bare.
        etag = args.if_match if args.if_match.startswith('"') else f'"{args.if_match}"'
        conditions = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
    try:
        result = container.get_blob_client(blob_name).upload_blob(
            data, overwrite=True, content_settings=_json_content(), **conditions)
    except (ResourceModifiedError, ResourceNotFoundError):  # 412: also when there is none
        if not container.get_blob_client(blob_name).exists():
            print(f"not uploaded: there is no config at {container_name}/{blob_name} yet (leave "
                  f"out --if-match to create it)", file=sys.stderr)
        else:
            print(f"not uploaded: the config at {container_name}/{blob_name} is no longer "
                  f"version {args.if_match} (see `router show`)", file=sys.stderr)
        return 1
    print(f"uploaded {container_name}/{blob_name}, version {_etag(result.get('etag'))}")
    print("running instances switch to it within ROUTER_REFRESH_SECONDS (default 30 s); one "
          "that cannot load a model it names keeps its current config and logs why")
    _print_table(config)
    return 0


def show_config(args: argparse.Namespace) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    from shared.errors import InvalidRouterConfig
    from shared.router import MAX_CONFIG_BYTES, parse_config

    container_name, blob_name = config_location(args)
    blob = blob_service(args).get_blob_client(container_name, blob_name)
    try:
        downloader = blob.download_blob()
        if downloader.size > MAX_CONFIG_BYTES:
            print(f"{container_name}/{blob_name} is {downloader.size:,} bytes, over the "
                  f"{MAX_CONFIG_BYTES:,} a config may have", file=sys.stderr)
            return 1
        data = downloader.readall()
    except ResourceNotFoundError:
        print(f"no router config at {container_name}/{blob_name}: every endpoint is served by "
              f"the model of the same name")
        return 0
    if args.json:
        sys.stdout.write(data.decode("utf-8", "replace"))
        return 0
    print(f"{container_name}/{blob_name}, version {_etag(downloader.properties.etag)}, "
          f"modified {downloader.properties.last_modified:%Y-%m-%d %H:%M:%S} UTC")
    try:
        config = parse_config(data)
    except InvalidRouterConfig as exc:
        print(f"REFUSED by the app: invalid router config: {exc.message}", file=sys.stderr)
        print("(instances keep serving the config they had)", file=sys.stderr)
        return 1
    _print_table(config)
    if not args.check_models:
        print("the document is valid (models not checked: --no-check-models)")
        return 0
    if _models_load(args, config) is None:
        print("REFUSED by the app: a model it names does not load (above); instances keep "
              "serving the config they had", file=sys.stderr)
        return 1
    print("accepted: the app's checks pass; running instances use this version within "
          "ROUTER_REFRESH_SECONDS")
    return 0


# -- helpers ---------------------------------------------------------------------------------

def _parse_file(path: Path) -> Any:
    """The validated config in ``path``, or ``None`` after printing why it is not one."""
    from shared.errors import InvalidRouterConfig
    from shared.router import MAX_CONFIG_BYTES, parse_config

    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            print(f"invalid router config: {path} is over {MAX_CONFIG_BYTES:,} bytes",
                  file=sys.stderr)
            return None
        return parse_config(path.read_bytes())
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
    except InvalidRouterConfig as exc:
        print(f"invalid router config: {exc.message}", file=sys.stderr)
    return None


def _models_load(args: argparse.Namespace, config: Any) -> dict[str, Any] | None:
    """Load every model ``config`` names (printing each as it goes), then apply the app's
    check that an endpoint's variants take the same features. The models' infos by name, or
    ``None`` after printing why not."""
    from shared.errors import ScoreError
    from shared.models.blob_source import BlobSource
    from shared.models.store import ModelStore
    from shared.router import models_loadable

    container_name, _ = config_location(args)
    max_bytes = app_settings().max_model_mb * 1024 * 1024
    store = ModelStore(BlobSource(blob_service(args).get_container_client(container_name),
                                  max_bytes), refresh_seconds=3600)
    names = sorted({m for ep in config.endpoints.values()
                    for m in [v.model for v in ep.variants] + [s.model for s in ep.shadow]})
    infos: dict[str, Any] = {}
    try:
        for i, name in enumerate(names, start=1):
            print(f"  [{i}/{len(names)}] model {name} ... ", end="", flush=True)
            try:
                info = store.get(name)[0].info
            except ScoreError as exc:
                print(f"{exc.code}")
                print(f"model {name!r}: {exc.message}", file=sys.stderr)
                return None
            infos[name] = info
            print(f"ok: version {info.version}, {info.num_features} features, {info.objective}")
        try:
            models_loadable(store)(config)
        except ScoreError as exc:
            print(f"invalid router config: {exc.message}", file=sys.stderr)
            return None
        return infos
    finally:
        store.close()


def _budgets_met(config: Any, infos: dict[str, Any], *, force: bool) -> bool:
    """Check each endpoint's ``max_p99_ms`` against the latency figures stored with its
    variants' model blobs (shadows score off the request path: not counted). Prints each
    endpoint's verdict; with ``force`` a fault is a warning. False when one is at fault."""
    from shared.models.latency_figures import read_latency_figures
    from shared.router.fields import endpoint_path

    faults = []
    for ep in config.endpoints.values():
        if ep.max_p99_ms is None:
            continue
        within = []
        for v in ep.variants:
            where = f"{endpoint_path(ep.name)}: variant {v.name} (model {v.model})"
            figures = read_latency_figures(infos[v.model].blob_metadata)
            if figures is None:
                faults.append(f"{where} has no latency figures: upload it with `python -m "
                              f"scorefn upload-model`, or run `python -m scorefn check-latency "
                              f"--blob {v.model} --save`")
            elif figures.single_row_p99_ms > ep.max_p99_ms:
                faults.append(f"{where}: single-row p99 {figures.single_row_p99_ms:.3f} ms is "
                              f"over the budget of {ep.max_p99_ms:g} ms (measured "
                              f"{figures.measured_at} on {figures.machine}; reference p99 "
                              f"{figures.reference_p99_ms:.3f} ms)")
            else:
                within.append(f"{v.name} {figures.single_row_p99_ms:.3f} ms")
        if within:
            print(f"latency budget of {endpoint_path(ep.name)} (p99 <= {ep.max_p99_ms:g} ms): "
                  f"within: {', '.join(within)}")
    for fault in faults:
        print(f"{'warning: ' if force else ''}latency budget not met: {fault}", file=sys.stderr)
    if faults and force:
        print(f"uploading anyway (--force): {len(faults)} variant(s) over budget or without "
              f"figures")
    return force or not faults


def _print_table(config: Any) -> None:
    from shared.router import Router

    table = Router(config).describe()
    if not table["endpoints"]:
        print("no endpoints: every endpoint is served by the model of the same name")
    for ep in table["endpoints"]:
        sticky = ", ".join(f"{source} {name}" for source, name in (ep["sticky"] or {}).items())
        notes = [f"sticky by {sticky}" if sticky else "not sticky (weighted random)",
                 "overrides allowed" if ep["allow_override"] else "no overrides"]
        if ep["log"]:
            notes.append(f"logged: {ep['log']['sample']:.0%} of requests"
                         f"{' with features' if ep['log']['features'] else ''}")
        budget = config.endpoints[ep["name"]].max_p99_ms
        if budget is not None:
            notes.append(f"latency budget p99 <= {budget:g} ms")
        print(f"endpoint {ep['name']}: {'; '.join(notes)}")
        for v in ep["variants"]:
            print(f"  variant {v['name']:<16s} model {v['model']:<24s} weight {v['weight']:<8g} "
                  f"share {v['share']:.1%}")
        for s in ep["shadow"]:
            print(f"  shadow  {s['name']:<16s} model {s['model']:<24s} fraction {s['fraction']:g}")
        rollout = config.endpoints[ep["name"]].rollout
        if rollout is not None:
            state = rollout.state
            print(f"  rollout {rollout.candidate} against {rollout.control}: {state.status}"
                  + (f", step {state.step + 1} of {len(rollout.steps)}" if state.status != "pending" else "")
                  + (f" ({state.reason})" if state.reason else "")
                  + f"; see `python -m scorefn rollout status {ep['name']}`")


def _etag(value: Any) -> str:
    return str(value or "").strip('"')


def _json_content() -> Any:
    from azure.storage.blob import ContentSettings

    return ContentSettings(content_type="application/json")
