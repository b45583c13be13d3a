"""Where a scoring runs: on the worker's event loop when it is warm and small, else in a thread.

A warm single-row scoring takes ~60 us of CPU and no I/O; handing it to a thread pool and
back costs about as much again, and under load the hop (not the scoring) bounds throughput.
A request that may read storage (first use, a model or router config not loaded yet) or
carries a large body runs in the loop's default executor, so the loop never blocks on I/O.
A model evicted between the check and the scoring is not loaded on the loop either: the
store refuses (``cache_only``) and the request is scored again in a thread.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable, TypeVar

if TYPE_CHECKING:
    from shared.scoring.service import ScoringService

T = TypeVar("T")


async def run_scoring(endpoint: str, body: bytes, score: Callable[["ScoringService"], T]) -> T:
    """``score(service)`` inline when the service can score ``endpoint`` without storage,
    else in a worker thread (which also builds the service on first use)."""
    from shared.scoring.service import built_service, get_service

    service = built_service()
    if service is not None and service.can_score_inline(endpoint, len(body)):
        from shared.models.store import _CACHE_ONLY, NotCached  # imported once: sys.modules

        token = _CACHE_ONLY.set(True)  # as cache_only(), without a generator per request
        try:
            return score(service)
        except NotCached:
            pass  # a model left the cache (or a new router config names another) since the check
        finally:
            _CACHE_ONLY.reset(token)
    return await asyncio.get_running_loop().run_in_executor(None, lambda: score(get_service()))
