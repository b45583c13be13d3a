"""Where a scoring runs: on the worker's event loop when it is warm and small, else in a thread.

A warm single-row scoring takes ~60 us of CPU and no I/O; handing it to a thread pool and
back costs about as much again, and under load the hop (not the scoring) bounds throughput.
A request that may read storage (first use, a model or router config not loaded yet) or
carries a large body runs in the loop's default executor, so the loop never blocks on I/O.
A model evicted between the check and the scoring is not loaded on the loop either: the
service scores from the cache only (``score_cached``) and, when the model has left it, the
request is scored again in a thread.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.scoring.result import ScoreResult


async def run_scoring(endpoint: str, body: bytes, options: dict[str, Any]) -> ScoreResult:
    """``service.score(endpoint, body, **options)``: inline when the service can score
    ``endpoint`` without storage, else in a worker thread (which also builds the app on
    first use)."""
    from shared.app import built_app, get_app

    app = built_app()
    if app is not None and app.service.can_score_inline(endpoint, len(body)):
        result = app.service.score_cached(endpoint, body, **options)
        if result is not None:
            return result
        # A model left the cache (or a new router config names another) since the check.
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: get_app().service.score(endpoint, body, **options))
