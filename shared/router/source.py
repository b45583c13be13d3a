"""Where the router configuration comes from: an app setting, a blob, or nowhere.

- ``ROUTER_CONFIG`` (inline JSON): parsed when the source is built; an invalid document
  is an error at startup. It never changes while the process runs.
- ``ROUTER_CONFIG_BLOB`` (a blob path such as ``config/router.json``): fetched with
  conditional requests (ETag), so an unchanged blob costs a 304. A blob that does not
  exist reads as *no config* (single-model mode).
- neither: no config, single-model mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared.errors import InvalidModel, InvalidName, InvalidRouterConfig, ModelNotFound, SettingsError
from shared.models.store import blob_candidates
from shared.router.config import RouterConfig, parse_config


class BlobFetcher(Protocol):
    """What :class:`shared.models.blob_source.BlobSource` offers: ``fetch(path, etag)`` returning
    ``BlobContent(data, etag, last_modified)`` or ``None`` when unchanged, raising
    :class:`ModelNotFound` / :class:`ModelUnavailable`."""

    def fetch(self, path: str, etag: str | None = None): ...


@dataclass(frozen=True)
class ConfigVersion:
    """One read of the config: ``config`` is ``None`` when there is none (single-model mode)."""

    config: RouterConfig | None
    etag: str | None


class RouterConfigSource:
    """Reads the router config from inline JSON, from a blob, or from neither (not both).

    Build the blob fetcher with a size bound of :data:`MAX_CONFIG_BYTES` (for example
    ``BlobSource(container, MAX_CONFIG_BYTES)``) so an oversized blob is refused before
    it is downloaded.
    """

    def __init__(self, *, inline: str | None = None, blob_path: str | None = None,
                 blobs: BlobFetcher | None = None) -> None:
        inline = inline if inline and inline.strip() else None
        blob_path = blob_path.strip() if blob_path and blob_path.strip() else None
        if inline and blob_path:
            raise SettingsError("set app setting ROUTER_CONFIG or ROUTER_CONFIG_BLOB, not both")
        if blob_path:
            try:
                blob_candidates(blob_path)
            except InvalidName:
                raise SettingsError("app setting ROUTER_CONFIG_BLOB is not a valid blob path") from None
            if blobs is None:
                raise ValueError("a blob config needs a blob fetcher")
        self.blob_path = blob_path
        self._blobs = blobs
        self._has_inline = inline is not None
        self._inline: RouterConfig | None = None
        if inline:
            try:
                self._inline = parse_config(inline)
            except InvalidRouterConfig as exc:
                raise InvalidRouterConfig(f"{self.origin}: {exc.message}") from None

    @property
    def origin(self) -> str:
        """Where the config comes from, for log lines and ``describe()``."""
        if self.blob_path:
            return f"blob {self.blob_path!r}"
        return "app setting ROUTER_CONFIG" if self._has_inline else "none"

    @property
    def watched(self) -> bool:
        """Whether the config may change while the process runs (a blob)."""
        return self.blob_path is not None

    def fetch(self, etag: str | None = None) -> ConfigVersion | None:
        """The config, or ``None`` when ``etag`` is given and the blob is unchanged.

        Raises :class:`InvalidRouterConfig` for a blob that is not a valid config, and
        :class:`~shared.errors.ModelUnavailable` when storage cannot be read.
        """
        if self.blob_path is None:
            return ConfigVersion(self._inline, "inline" if self._inline is not None else None)
        assert self._blobs is not None
        try:
            content = self._blobs.fetch(self.blob_path, etag)
        except ModelNotFound:
            return ConfigVersion(None, None)
        except InvalidModel as exc:  # over the size bound, or a broken .gz
            raise InvalidRouterConfig(exc.message) from None
        if content is None:
            return None
        try:
            config = parse_config(content.data)
        except InvalidRouterConfig as exc:
            raise InvalidRouterConfig(f"{self.origin}: {exc.message}") from None
        return ConfigVersion(config, content.etag)
