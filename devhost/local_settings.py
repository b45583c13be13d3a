"""App settings and host configuration, read the way the Functions host and Core Tools do.

``local.settings.json`` holds ``{"IsEncrypted": false, "Values": {...}}``; its ``Values``
become environment variables unless the environment already sets them. ``host.json`` sits
next to ``function_app.py``; its keys are matched case-insensitively, as .NET config does.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d+):(\d+)(?::(\d+(?:\.\d{1,7})?))?$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ConfigError(ValueError):
    """A settings file, host.json or an app setting cannot be used."""


def load_local_settings(path: Path, environ: MutableMapping[str, str] | None = None,
                        *, required: bool = False) -> dict[str, str]:
    """Apply the file's ``Values`` to ``environ`` (default ``os.environ``) without overriding
    variables already set, and return the values read. A missing file is an error only when
    ``required``."""
    environ = os.environ if environ is None else environ
    if not path.exists():
        if required:
            raise ConfigError(f"settings file {path} does not exist")
        return {}
    doc = _read_json(path)
    if doc.get("IsEncrypted"):
        raise ConfigError(f"{path} is encrypted; devhost reads plain settings only "
                                "(run `func settings decrypt` elsewhere or set IsEncrypted false)")
    values = doc.get("Values") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: Values must be an object")
    settings = {str(k): _setting_text(v) for k, v in values.items()}
    for key, value in settings.items():
        environ.setdefault(key, value)
    return settings


def load_host_json(app_dir: Path) -> dict[str, Any]:
    """The app's ``host.json`` (an empty config when the file is absent)."""
    path = app_dir / "host.json"
    return _read_json(path) if path.exists() else {}


def config_get(config: Any, *keys: str, default: Any = None) -> Any:
    """``config[k1][k2]...`` with case-insensitive keys; ``default`` when any is missing."""
    node = config
    for key in keys:
        if not isinstance(node, dict):
            return default
        match = next((k for k in node if k.lower() == key.lower()), None)
        if match is None:
            return default
        node = node[match]
    return node


def parse_duration(value: Any) -> float:
    """Seconds in a host.json duration, a .NET TimeSpan string: ``"hh:mm[:ss[.fffffff]]"``,
    optionally ``"d."``-prefixed. A bare number is refused: .NET reads ``"2"`` as 2 days, which
    is rarely what was meant."""
    if _is_bare_number(value):
        raise ConfigError(f"{value!r} is not a duration: the Functions host reads a bare number as "
                          "days (.NET TimeSpan), not seconds; write hh:mm:ss, e.g. \"00:00:02\" "
                          "for 2 seconds")
    if not isinstance(value, str):
        raise ConfigError(f"{value!r} is not a duration (expected hh:mm:ss)")
    text = value.strip()
    match = _TIMESPAN.match(text)
    if not match:
        raise ConfigError(f"{value!r} is not a duration (expected hh:mm:ss or d.hh:mm:ss)")
    days, hours, minutes, seconds = match.groups()
    if int(hours) > 23 or int(minutes) > 59 or float(seconds or 0) >= 60:
        raise ConfigError(f"{value!r} is not a duration: hours must be 0-23, minutes and "
                          "seconds 0-59")
    return (int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60
            + float(seconds or 0))


def _is_bare_number(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_NUMBER.match(value.strip()))
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        # utf-8-sig: files saved by Windows tools often start with a BOM.
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return doc


def _setting_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)
