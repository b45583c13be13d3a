"""Category values a model was not trained on: counted by feature index while a job parses
(they are read as missing), summed over a fanned-out job's chunks, kept in blob metadata as
``j:count,...`` and reported in the job's result by feature name (``unseen_categories``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

# Counts kept in blob metadata (8 KiB in all): longer ones go in a chunk marker's body; an
# output's metadata leaves them out (then only a result rebuilt after a crash between commit
# and record lacks them).
MAX_UNSEEN_METADATA = 2048


def encode_unseen(unseen: dict[int, int]) -> str:
    """Counts by feature index as ``j:count,...`` (ASCII: blob metadata)."""
    return ",".join(f"{j}:{count}" for j, count in sorted(unseen.items()) if count)


def decode_unseen(text: str | None) -> dict[int, int]:
    found: dict[int, int] = {}
    for part in (text or "").split(","):
        j, _, count = part.partition(":")
        if j.isdigit() and count.isdigit():
            found[int(j)] = found.get(int(j), 0) + int(count)
    return found


def fits_metadata(text: str) -> bool:
    """Whether encoded counts are short enough for blob metadata."""
    return len(text) <= MAX_UNSEEN_METADATA


def total_unseen(counts: Iterable[dict[int, int]]) -> dict[int, int]:
    """Counts summed by feature index."""
    total: dict[int, int] = {}
    for unseen in counts:
        for j, count in unseen.items():
            total[j] = total.get(j, 0) + count
    return total


def unseen_summary(unseen: dict[int, int], name_of: Callable[[int], str]) -> dict[str, int]:
    """Unseen category values by feature name (only features that had some), in feature
    order: what a job's result reports as ``unseen_categories``."""
    return {name_of(j): count for j, count in sorted(unseen.items()) if count}
