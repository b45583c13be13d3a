"""simdjson documents for the direct readers, parsed by one parser kept per thread.

A new ``simdjson.Parser`` allocates its buffers on its first parse: ~0.7 us of a ~4 us
single-row read. A parser kept per thread reuses them. Rules that keep this safe:

- one parser per thread, never shared (a parser is not thread-safe);
- simdjson refuses to reuse a parser while objects of its last document are alive
  (``RuntimeError``); then this thread gets a fresh parser, so a caller that kept a
  document never makes the next read fail or fall back;
- bodies over :data:`REUSE_MAX_BYTES` get a parser of their own: a kept parser holds
  buffers as large as the largest document it has read, for the thread's lifetime.
"""

from __future__ import annotations

import threading
from typing import Any

import simdjson

REUSE_MAX_BYTES = 64 * 1024
_local = threading.local()


def parse(body: bytes) -> Any:
    """``body`` as a simdjson document (``simdjson.Object``/``Array`` or a scalar).

    Raises ``ValueError`` for invalid JSON and ``RuntimeError`` for a document simdjson
    cannot hold (too deep), as ``simdjson.Parser.parse`` does. The caller must drop the
    document's objects before it returns (what it keeps must be copied out, e.g. with
    ``as_buffer``)."""
    if len(body) > REUSE_MAX_BYTES:
        return simdjson.Parser().parse(body)
    parser = getattr(_local, "parser", None)
    if parser is not None:
        try:
            return parser.parse(body)
        except RuntimeError:
            pass  # its last document is still referenced somewhere (or too deep: see below)
    parser = _local.parser = simdjson.Parser()
    return parser.parse(body)  # a fresh parser: a RuntimeError now is the document's own
