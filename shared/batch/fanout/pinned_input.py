"""A fanned-out job's input read at the version it was planned at (its ETag): a changed input
fails the job (``input_changed``) instead of mixing two files in one output, and a deleted
one fails it too (``input_not_found``)."""

from __future__ import annotations

from collections.abc import Callable

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient

from shared.errors import InputNotFound, InvalidPayload


def pinned_reader(blob: BlobClient, etag: str, where: str) -> Callable[[int, int], bytes]:
    """``read(offset, length)`` of ``blob`` at version ``etag`` (``where`` names it in
    errors)."""
    def read(offset: int, length: int) -> bytes:
        try:
            return blob.download_blob(offset=offset, length=length, etag=etag,
                                      match_condition=MatchConditions.IfNotModified,
                                      max_concurrency=1).readall()
        except (ResourceModifiedError, ResourceNotFoundError, HttpResponseError) as exc:
            raise _input_error(exc, where) from None
    return read


def _input_error(exc: Exception, where: str) -> Exception:
    """A permanent error for an input that changed or vanished; the original error otherwise."""
    status = getattr(exc, "status_code", None)
    if isinstance(exc, ResourceModifiedError) or status == 412:
        return InvalidPayload(f"input blob {where!r} changed while the job ran; submit the job "
                              f"again (with a new id)", code="input_changed")
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return InputNotFound(f"input blob {where!r} no longer exists")
    return exc
