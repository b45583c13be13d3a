"""The config-driven router: which model blob (and which shadows) score each request.

- :mod:`.config` - the JSON schema, validated in one place (:func:`parse_config`);
- :mod:`.assignment` - weighted random and sticky (weighted rendezvous) assignment;
- :mod:`.router` - :class:`Router`, :class:`Route`, :func:`sticky_key`;
- :mod:`.source` / :mod:`.holder` - where the config comes from, hot reload by ETag;
- :mod:`.shadow` - :class:`ShadowRunner`, bounded best-effort execution of shadows.

Nothing here imports the storage SDK; the service passes in a blob fetcher.
"""

from __future__ import annotations

from shared.router.config import (
                     MAX_CONFIG_BYTES,
                     EndpointConfig,
                     LogConfig,
                     RouterConfig,
                     Shadow,
                     Sticky,
                     Variant,
                     parse_config,
                     validate_config,
)
from shared.router.holder import HolderStats, RouterHolder, feature_parity, models_loadable
from shared.router.router import OVERRIDE_HEADER, Route, Router, ShadowTarget, header, sticky_key
from shared.router.shadow import ShadowRunner, ShadowStats
from shared.router.source import ConfigVersion, RouterConfigSource

__all__ = ["MAX_CONFIG_BYTES", "EndpointConfig", "LogConfig", "RouterConfig", "Shadow", "Sticky",
           "Variant", "parse_config", "validate_config", "HolderStats", "RouterHolder",
           "feature_parity", "models_loadable", "OVERRIDE_HEADER", "Route", "Router", "ShadowTarget",
           "header", "sticky_key", "ShadowRunner", "ShadowStats", "ConfigVersion", "RouterConfigSource"]
