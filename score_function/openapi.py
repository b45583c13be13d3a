"""The OpenAPI 3.1 document of the HTTP API (``openapi.json`` next to this module), served
at ``GET /api/openapi.json``. ``tests/hardening/test_openapi.py`` checks it against the
functions ``function_app.app`` registers and validates real responses against it."""

from __future__ import annotations

import functools
from pathlib import Path

PATH = Path(__file__).resolve().parent / "openapi.json"
API_VERSION = "1.0.0"  # the document's info.version (a test keeps them equal)


@functools.lru_cache(maxsize=1)
def document() -> bytes:
    """The document's bytes, read once per process."""
    return PATH.read_bytes()
