"""Storage clients built from a resolved connection (connection string or Entra ID).

This is the only module of the core that imports the storage SDK, and it is imported
lazily, on the first request that needs storage, to keep cold starts short.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from azure.storage.blob import BlobServiceClient
from azure.storage.blob import LinearRetry as BlobLinearRetry

from shared.errors import SettingsError
from shared.settings import StorageConnection

if TYPE_CHECKING:
    from azure.storage.queue import QueueServiceClient


# Job records and plans are a few hundred bytes; anything near this is not one of ours.
MAX_RECORD_BYTES = 1024 * 1024


class BlobTooLarge(Exception):
    """A blob is larger than the bound its reader set (see :func:`read_at_most`)."""


def read_at_most(blob: Any, max_bytes: int) -> bytes:
    """A whole blob of at most ``max_bytes``. A larger one raises :class:`BlobTooLarge` after
    the first GET (the client's single-get size at most), never read whole."""
    downloader = blob.download_blob()
    if downloader.size > max_bytes:
        raise BlobTooLarge(f"blob {blob.blob_name!r} is {downloader.size} bytes, over the "
                           f"limit of {max_bytes}")
    return downloader.readall()


def _client_options(timeout: float, retry_class) -> dict:
    # The SDK default retry waits 15 s before the first retry; a scoring request would
    # hang through an outage. Two quick retries, then the caller sees 503.
    return {
        "connection_timeout": timeout,
        "read_timeout": timeout,
        "retry_policy": retry_class(backoff=0.3, random_jitter_range=0.2, retry_total=2),
    }


def credential_for(conn: StorageConnection):
    """The Entra ID credential for an identity-based connection."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if conn.credential == "managedidentity":
        return ManagedIdentityCredential(client_id=conn.client_id)
    return DefaultAzureCredential(managed_identity_client_id=conn.client_id)


def blob_service(conn: StorageConnection, timeout: float = 20.0) -> BlobServiceClient:
    """A blob service client for ``conn``."""
    options = _client_options(timeout, BlobLinearRetry)
    if conn.connection_string:
        return BlobServiceClient.from_connection_string(conn.connection_string, **options)
    if not conn.blob_service_uri:
        raise SettingsError(f"storage connection {conn.name} has no blob service: set "
                            f"{conn.name}__blobServiceUri or {conn.name}__accountName")
    return BlobServiceClient(conn.blob_service_uri, credential=credential_for(conn), **options)


def queue_service(conn: StorageConnection, timeout: float = 20.0) -> QueueServiceClient:
    """A queue service client for ``conn`` (the queue SDK is imported here: ~40 ms that an
    HTTP-only cold start does not pay)."""
    from azure.storage.queue import LinearRetry as QueueLinearRetry
    from azure.storage.queue import QueueServiceClient

    options = _client_options(timeout, QueueLinearRetry)
    if conn.connection_string:
        return QueueServiceClient.from_connection_string(conn.connection_string, **options)
    if not conn.queue_service_uri:
        raise SettingsError(f"storage connection {conn.name} has no queue service: set "
                            f"{conn.name}__queueServiceUri or {conn.name}__accountName")
    return QueueServiceClient(conn.queue_service_uri, credential=credential_for(conn), **options)
