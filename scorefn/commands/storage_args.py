"""Storage options shared by the commands: a connection string, or an account URL used with
the user's own Entra ID login (no account keys needed). Without either, a command uses the
connection the app itself uses for that data, named by the app settings."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

# Which app setting names the connection of each kind of data (as the app reads them).
MODELS = "storage_connection"  # MODEL_STORAGE_CONNECTION: models and the router config
LOGS = "prediction_log_connection"  # PREDICTION_LOG_CONNECTION: prediction and outcome logs
JOBS = None  # batch jobs: always AzureWebJobsStorage, the queue trigger's connection

# A command moves whole models and reports over links of any speed: it waits longer than a
# serving request would.
CLI_TIMEOUT_SECONDS = 120.0


def add_storage_args(parser: argparse.ArgumentParser, data: str = "models") -> None:
    group = parser.add_argument_group("storage")
    default = {"models": "the connection MODEL_STORAGE_CONNECTION names (AzureWebJobsStorage "
                         "unless set)",
               "logs": "the connection PREDICTION_LOG_CONNECTION names (AzureWebJobsStorage "
                       "unless set)",
               "jobs": "the connection AzureWebJobsStorage"}[data]
    group.add_argument("--connection-string", default=None,
                       help=f"storage connection string (default: {default}, read from the "
                            f"environment as the app reads it: NAME holding a connection "
                            f"string, or NAME__blobServiceUri / NAME__accountName for your "
                            f"Entra ID login)")
    group.add_argument("--account-url", default=None,
                       help="blob service URL, e.g. https://ACCOUNT.blob.core.windows.net "
                            "(uses your Entra ID login)")
    group.add_argument("--storage-timeout", type=float, default=CLI_TIMEOUT_SECONDS, metavar="SECONDS",
                       help=f"connect/read timeout of each storage call (default: "
                            f"{CLI_TIMEOUT_SECONDS:g}; the app's own STORAGE_TIMEOUT_SECONDS is "
                            f"for serving and fails fast)")


def add_config_location_args(parser: argparse.ArgumentParser) -> None:
    """``--container`` and ``--blob`` of the router config, and the storage options."""
    group = parser.add_argument_group("where the config lives")
    group.add_argument("--container", default=None, metavar="NAME",
                       help="models container (default $MODEL_CONTAINER or models)")
    group.add_argument("--blob", default=None, metavar="PATH",
                       help="config blob (default $ROUTER_CONFIG_BLOB or config/router.json)")
    add_storage_args(parser)


def config_location(args: argparse.Namespace) -> tuple[str, str]:
    """The router config's container and blob: the options, else the app settings."""
    settings = app_settings()
    container = args.container or settings.model_container
    blob = args.blob or settings.router_config_blob or "config/router.json"
    return container, blob


def container_name(value: str | None, setting: str) -> str:
    """``value`` from the command line (checked as the app setting ``setting`` would be), else
    the app setting's own value."""
    from shared.settings import SPEC

    if not value:
        return getattr(app_settings(), setting)
    try:
        return SPEC[setting].parse(value)
    except ValueError:
        raise SystemExit(f"{value[:64]!r} is not a valid container name") from None


def app_settings() -> Any:
    """The app settings of this shell's environment, read and checked as the app reads them
    (an invalid one is a ``SettingsError``: one error line)."""
    from shared.settings import Settings

    return Settings.from_env(os.environ)


def connection(args: argparse.Namespace, setting: str | None = MODELS):
    """A StorageConnection for the command's storage options; without any, the connection
    the app setting ``setting`` names (``None``: AzureWebJobsStorage)."""
    from shared.settings import StorageConnection, resolve_connection

    if args.account_url:
        url = args.account_url.rstrip("/")
        return StorageConnection(name="cli", blob_service_uri=url,
                                 queue_service_uri=url.replace(".blob.", ".queue."))
    if args.connection_string:
        return StorageConnection(name="cli", connection_string=args.connection_string)
    name = getattr(app_settings(), setting) if setting else "AzureWebJobsStorage"
    if not any(key == name or key.startswith(f"{name}__") for key in os.environ):
        raise SystemExit(f"no storage: pass --connection-string or --account-url, or set the "
                         f"connection {name} (a connection string, or {name}__accountName)")
    # Set but invalid: a SettingsError, which the command line reports as one error line.
    conn = resolve_connection(name, os.environ)
    # The command runs as you, not as the app: your Entra ID login (DefaultAzureCredential,
    # which also finds a managed identity when run in Azure), never managed identity only.
    return dataclasses.replace(conn, credential=None)


def blob_service(args: argparse.Namespace, setting: str | None = MODELS):
    from shared.storage import blob_service as make

    return make(connection(args, setting), timeout=_timeout(args))


def queue_service(args: argparse.Namespace):
    from shared.storage import queue_service as make

    return make(connection(args, JOBS), timeout=_timeout(args))


def _timeout(args: argparse.Namespace) -> float:
    timeout = getattr(args, "storage_timeout", CLI_TIMEOUT_SECONDS)
    if not timeout > 0:
        raise SystemExit("--storage-timeout must be a positive number of seconds")
    return timeout
