"""Storage options shared by the commands: a connection string, or an account URL used with
the user's own Entra ID login (no account keys needed)."""

from __future__ import annotations

import argparse
import os


def add_storage_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("storage")
    group.add_argument("--connection-string", default=None,
                       help="storage connection string (default: $AzureWebJobsStorage)")
    group.add_argument("--account-url", default=None,
                       help="blob service URL, e.g. https://ACCOUNT.blob.core.windows.net "
                            "(uses your Entra ID login)")


def connection(args: argparse.Namespace):
    """A StorageConnection for the command's storage options."""
    from shared.settings import StorageConnection

    if args.account_url:
        url = args.account_url.rstrip("/")
        return StorageConnection(name="cli", blob_service_uri=url,
                                 queue_service_uri=url.replace(".blob.", ".queue."))
    value = args.connection_string or os.environ.get("AzureWebJobsStorage")
    if not value:
        raise SystemExit("no storage: pass --connection-string or --account-url "
                         "(or set AzureWebJobsStorage)")
    return StorageConnection(name="cli", connection_string=value)


def blob_service(args: argparse.Namespace):
    from shared.storage import blob_service as make

    return make(connection(args))


def queue_service(args: argparse.Namespace):
    from shared.storage import queue_service as make

    return make(connection(args))
