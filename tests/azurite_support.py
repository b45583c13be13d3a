"""Fresh storage names and containers on the test Azurite."""

from __future__ import annotations

import uuid
from typing import Any


def unique(prefix: str) -> str:
    """A fresh storage name: ``prefix`` and 12 hex digits (valid for containers and queues)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def new_container(service_or_connection: Any, name: str | None = None, prefix: str = "t"):
    """A newly created container (``name``, or a fresh one starting with ``prefix``).

    The name is fresh, so a 409 "already exists" can only be this create's own first attempt:
    the SDK retried after that attempt's answer was lost (a slow Azurite on a loaded machine).
    """
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    service = (BlobServiceClient.from_connection_string(service_or_connection)
               if isinstance(service_or_connection, str) else service_or_connection)
    client = service.get_container_client(name or unique(prefix))
    try:
        client.create_container()
    except ResourceExistsError:
        pass
    return client
