"""Where artifacts are kept: a private local directory, and blobs under ``.compiled/`` in the
models container with a lock blob per key (one instance compiles, the others wait)."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from shared.models.compiled.artifact import ARTIFACT_SUFFIX, BLOB_PREFIX

log = logging.getLogger("scorefn.compiled")

MAX_ARTIFACT_BYTES = 512 * 1024 * 1024  # a larger blob is not read
LOCAL_CACHE_MAX_BYTES = 2 * 1024 * 1024 * 1024


class LocalCache:
    """Artifacts in a directory only this user can write (else it is not used)."""

    def __init__(self, directory: str | os.PathLike | None) -> None:
        self.directory: Path | None = Path(directory or Path(tempfile.gettempdir()) / "scorefn-compiled")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = self.directory.stat()
            if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
                log.warning("compiled trees: local cache directory %s is not private to this user "
                            "(owner or group/other write access); not used", self.directory)
                self.directory = None
        except OSError as exc:
            log.warning("compiled trees: local cache directory %s is not usable (%s); not used",
                        self.directory, type(exc).__name__)
            self.directory = None

    def read(self, key: str) -> bytes | None:
        if self.directory is None:
            return None
        try:
            return (self.directory / f"{key}{ARTIFACT_SUFFIX}").read_bytes()
        except OSError:
            return None

    def write(self, key: str, data: bytes) -> None:
        if self.directory is None:
            return
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.directory / f"{key}{ARTIFACT_SUFFIX}")
            self._trim(self.directory)
        except OSError as exc:
            log.warning("compiled trees: could not write the local cache (%s)", type(exc).__name__)

    def remove(self, key: str) -> None:
        if self.directory is not None:
            try:
                (self.directory / f"{key}{ARTIFACT_SUFFIX}").unlink()
            except OSError:
                pass

    def _trim(self, directory: Path) -> None:
        files = sorted((p.stat().st_mtime, p.stat().st_size, p)
                       for p in directory.glob(f"*{ARTIFACT_SUFFIX}"))
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= LOCAL_CACHE_MAX_BYTES:
                break
            path.unlink(missing_ok=True)
            total -= size


class BlobCache:
    """Artifacts as blobs under ``.compiled/`` in the models container, and a lock blob per
    key so that one instance compiles while the others wait for its artifact."""

    def __init__(self, container: Any) -> None:
        from shared.models.blob_source import BlobSource

        self.container = container
        self.reader = BlobSource(container, MAX_ARTIFACT_BYTES)

    def read(self, path: str) -> bytes | None:
        from shared.errors import ModelNotFound, ScoreError

        try:
            content = self.reader.fetch(path)
        except ModelNotFound:
            return None
        except ScoreError as exc:
            log.warning("compiled trees: could not read %s: %s", path, exc.message)
            return None
        return content.data if content is not None else None

    def write(self, path: str, data: bytes, metadata: dict[str, str]) -> bool:
        from azure.core.exceptions import AzureError

        try:
            self.container.upload_blob(path, data, overwrite=True, metadata=metadata)
            return True
        except AzureError as exc:
            log.warning("compiled trees: could not write %s (%s): other instances will compile "
                        "for themselves; the app's identity needs write access to %s in the "
                        "models container", path, _status(exc), BLOB_PREFIX)
            return False

    def try_lock(self, path: str, stale_after: float) -> bool:
        """True when this instance may compile: it created the lock, or the lock is stale."""
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

        lock = path + ".lock"
        for _ in range(2):
            try:
                self.container.upload_blob(lock, b"", overwrite=False)
                return True
            except ResourceExistsError:
                pass
            except AzureError:
                return True  # cannot coordinate (read-only identity, storage down): compile anyway
            try:
                props = self.container.get_blob_client(lock).get_blob_properties()
            except ResourceNotFoundError:
                continue  # released meanwhile: try to take it
            except AzureError:
                return True
            if time.time() - props.last_modified.timestamp() <= stale_after:
                return False
            self.unlock(path)  # left by an instance that died while compiling
        return True

    def unlock(self, path: str) -> None:
        from azure.core.exceptions import AzureError

        try:
            self.container.delete_blob(path + ".lock")
        except AzureError:
            pass


def _status(exc: Exception) -> str:
    """An Azure error in a few words, for the log."""
    code = getattr(exc, "status_code", None)
    return f"status {code}" if code else type(exc).__name__
