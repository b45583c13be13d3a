"""Reads model (and config) blobs with conditional requests; maps storage faults to typed errors."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient

from shared.errors import InvalidModel, ModelNotFound, ModelUnavailable


@dataclass(frozen=True)
class BlobContent:
    """A blob's bytes (decompressed when the name ends in ``.gz``) and its version."""

    data: bytes
    etag: str
    last_modified: datetime | None
    metadata: Mapping[str, str] = field(default_factory=dict)  # the blob's user metadata


class BlobSource:
    """Fetches blobs from one container, at most ``max_bytes`` after decompression."""

    def __init__(self, container: ContainerClient, max_bytes: int) -> None:
        self.container = container
        self.max_bytes = max_bytes

    def ping(self) -> None:
        """Raise :class:`ModelUnavailable` unless the container answers."""
        try:
            self.container.get_container_properties()
        except ResourceNotFoundError:
            raise ModelUnavailable(f"container {self.container.container_name!r} does not exist") from None
        except AzureError as exc:
            raise ModelUnavailable(f"storage unreachable: {type(exc).__name__}") from None

    def fetch(self, path: str, etag: str | None = None) -> BlobContent | None:
        """The blob at ``path``, or ``None`` when ``etag`` is given and still current."""
        blob = self.container.get_blob_client(path)
        try:
            if etag:
                downloader = blob.download_blob(etag=etag, match_condition=MatchConditions.IfModified)
            else:
                downloader = blob.download_blob()
            size = downloader.size
            if size > self.max_bytes:
                raise InvalidModel(f"blob {path!r} is {size} bytes, over the limit of {self.max_bytes}")
            raw = downloader.readall()
            props = downloader.properties
        except ResourceModifiedError:
            return None  # 304: unchanged
        except ResourceNotFoundError:
            raise ModelNotFound(f"no blob {path!r} in container {self.container.container_name!r}") from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise ModelUnavailable(f"storage unreachable while reading {path!r}: "
                                   f"{type(exc).__name__}") from None
        except HttpResponseError as exc:
            if exc.status_code == 304:
                return None
            if exc.status_code in (401, 403):
                raise ModelUnavailable(f"access denied reading {path!r} (check the app's identity "
                                       f"has Storage Blob Data Reader)") from None
            raise ModelUnavailable(f"storage error {exc.status_code} reading {path!r}") from None
        except AzureError as exc:
            raise ModelUnavailable(f"storage error reading {path!r}: {type(exc).__name__}") from None
        data = _gunzip(raw, self.max_bytes, path) if path.endswith(".gz") else raw
        return BlobContent(data=data, etag=(props.etag or "").strip('"'), last_modified=props.last_modified,
                           metadata=dict(props.metadata or {}))


def _gunzip(raw: bytes, max_bytes: int, path: str) -> bytes:
    # Bounded decompression: a small compressed blob must not expand without limit.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidModel(f"blob {path!r} is not valid gzip: {exc}") from None
    if len(data) > max_bytes or inflater.unconsumed_tail:
        raise InvalidModel(f"blob {path!r} expands beyond the limit of {max_bytes} bytes")
    if not inflater.eof:
        raise InvalidModel(f"blob {path!r} is a truncated gzip stream")
    return data
