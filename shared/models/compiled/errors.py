"""The one error of compiled trees: a forest that could not be compiled, loaded or checked."""

from __future__ import annotations


class CompileError(Exception):
    """A forest could not be compiled, loaded or checked; ``reason`` is a short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
