"""Where A/B log lines land: this instance's hourly append blob of an endpoint, written
in blocks of whole lines::

    {container}/{endpoint}/{yyyy}/{mm}/{dd}/{hh}/{instance}.jsonl

``instance`` is ``WEBSITE_INSTANCE_ID`` (Azure) or ``hostname-pid``, so instances never
write the same blob (several worker processes on one instance may: each append is atomic,
lines never interleave). Used by the prediction log's writer and by the outcome log.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

MAX_BLOCK_BYTES = 4 * 1024 * 1024  # the append-block size every service version accepts
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def instance_name(env: Mapping[str, str] | None = None) -> str:
    """This process's part of the blob names: ``WEBSITE_INSTANCE_ID`` or ``hostname-pid``,
    reduced to letters, digits, ``.``, ``_`` and ``-`` (at most 64 characters)."""
    env = os.environ if env is None else env
    raw = (env.get("WEBSITE_INSTANCE_ID") or "").strip() or f"{socket.gethostname()}-{os.getpid()}"
    return _UNSAFE.sub("-", raw).strip("-.")[:64] or f"instance-{os.getpid()}"


def hour_prefix(endpoint: str, t: float) -> str:
    """``{endpoint}/{yyyy}/{mm}/{dd}/{hh}`` of the UTC hour holding epoch time ``t``."""
    return f"{endpoint}/{time.strftime('%Y/%m/%d/%H', time.gmtime(t))}"


class AppendTarget:
    """Appends bytes (whole JSON lines) to this instance's hourly append blob of a prefix,
    creating the container and the blob when missing and moving on to a new blob
    (``{instance}.1.jsonl``, ...) when one reaches the 50,000-block limit.

    ``container`` is an ``azure.storage.blob.ContainerClient``; storage errors are raised
    (``AzureError``) for the caller to handle.
    """

    def __init__(self, container: Any, instance: str | None = None) -> None:
        self.container = container
        self.instance = instance or instance_name()
        self._rollover: dict[str, int] = {}
        self._lock = threading.Lock()

    def blob_name(self, prefix: str) -> str:
        n = self._rollover.get(prefix, 0)
        return f"{prefix}/{self.instance}{f'.{n}' if n else ''}.jsonl"

    def append(self, prefix: str, block: bytes) -> None:
        """Append one block (at most :data:`MAX_BLOCK_BYTES`) to the blob of ``prefix``."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

        if len(block) > MAX_BLOCK_BYTES:
            raise ValueError("a block is larger than the append-block limit")
        for _ in range(4):
            blob = self.container.get_blob_client(self.blob_name(prefix))
            try:
                blob.append_block(block, length=len(block))
                return
            except ResourceNotFoundError as exc:
                # error_code is set by the storage SDK (process_storage_error), not by azure-core.
                if getattr(exc, "error_code", None) == "ContainerNotFound":
                    try:
                        self.container.create_container()
                    except ResourceExistsError:
                        pass
                try:
                    blob.create_append_blob(match_condition=MatchConditions.IfMissing)
                except ResourceExistsError:
                    pass  # another process created it meanwhile
            except HttpResponseError as exc:
                if getattr(exc, "error_code", None) != "BlockCountExceedsLimit":
                    raise
                with self._lock:
                    self._rollover[prefix] = self._rollover.get(prefix, 0) + 1
        raise RuntimeError(f"could not append to a blob under {prefix!r}")


def pack_lines(lines: Iterable[bytes], limit: int = MAX_BLOCK_BYTES) -> list[tuple[bytes, int]]:
    """Whole lines packed into blocks of at most ``limit`` bytes: ``(block, lines in it)``.
    A single line longer than ``limit`` must be left out by the caller."""
    blocks: list[tuple[bytes, int]] = []
    parts: list[bytes] = []
    size = 0
    for line in lines:
        if parts and size + len(line) > limit:
            blocks.append((b"".join(parts), len(parts)))
            parts, size = [], 0
        parts.append(line)
        size += len(line)
    if parts:
        blocks.append((b"".join(parts), len(parts)))
    return blocks
