"""The drift report's plots, drawn with matplotlib's ``pyplot`` (passed in as ``plt``): bin
shares side by side (a feature's or the predictions', baseline and served) and the
predictions' distribution per hour. Each returns a figure, or ``None`` when there is nothing
to draw."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scorefn.reporting import colors
from shared.monitoring.records import WindowPoint

MAX_BARS = 30  # bins drawn per plot: of more, those with the largest shares


def plain(text: str, limit: int = 60) -> str:
    """``text`` as matplotlib draws it literally (``$`` would start math), cut at ``limit``."""
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("$", r"\$")


def shares(counts: Sequence[int]) -> np.ndarray:
    """Each bin's share of the counts (all zero when there are none)."""
    values = np.asarray(counts, dtype=float)
    total = values.sum()
    return values / total if total > 0 else np.zeros_like(values)


def fewer_bins(labels: list[str], series: list[np.ndarray], limit: int = MAX_BARS
               ) -> tuple[list[str], list[np.ndarray]]:
    """At most ``limit`` bins: those with the largest share on any side, in their order."""
    if len(labels) <= limit:
        return labels, series
    keep = np.sort(np.argsort(-np.max(np.vstack(series), axis=0), kind="stable")[:limit])
    return [labels[k] for k in keep], [s[keep] for s in series]


def bin_bars(plt: Any, labels: list[str], counts: Mapping[str, Sequence[int]], xlabel: str) -> Any:
    """Side-by-side bars of each series' bin shares (series without counts are left out)."""
    drawn = {name: c for name, c in counts.items() if sum(c) > 0}
    size = max((len(c) for c in drawn.values()), default=0)
    if size == 0:
        return None
    names = list(drawn)
    labels = labels if len(labels) == size else [f"bin {k}" for k in range(size)]
    padded = [np.pad(shares(drawn[n]), (0, size - len(drawn[n]))) for n in names]
    shown, padded = fewer_bins(labels, padded)
    if len(shown) < len(labels):
        xlabel += f", the {len(shown)} of {len(labels)} bins with the largest shares"
    x = np.arange(len(shown))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(min(11.0, max(6.0, 0.22 * len(shown) * len(names) + 2)), 3.4))
    color_of = colors(names)
    for k, name in enumerate(names):
        ax.bar(x + (k - (len(names) - 1) / 2) * width, padded[k], width,
               label=f"{plain(name)} (n={sum(drawn[name]):,})", color=color_of[name])
    long = len(shown) > 6 or max(len(s) for s in shown) > 8
    ax.set_xticks(x, [plain(s, 24) for s in shown], rotation=45 if long else 0,
                  ha="right" if long else "center", fontsize=8)
    ax.set_xlabel(plain(xlabel, 120))
    ax.set_ylabel("share of rows")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def hourly_grid(points: list[WindowPoint], variant: str, hours: list[str], size: int
                ) -> np.ndarray:
    """A (bin, hour) grid of the variant's prediction shares per hour (NaN: no rows)."""
    counts = np.zeros((size, len(hours)))
    column = {h: i for i, h in enumerate(hours)}
    for p in points:
        if p.variant == variant and p.hour in column:
            counts[:len(p.prediction_bins), column[p.hour]] += p.prediction_bins
    totals = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)


def timeline(plt: Any, points: list[WindowPoint], labels: list[str]) -> Any:
    """Per variant, a heat map of its predictions' distribution over the bins, hour by
    hour (brighter: a larger share of that hour's predictions)."""
    variants = list(dict.fromkeys(p.variant for p in points if sum(p.prediction_bins) > 0))
    size = max((len(p.prediction_bins) for p in points), default=0)
    if not variants or size == 0:
        return None
    hours = sorted({p.hour for p in points})
    labels = labels if len(labels) == size else [f"bin {k}" for k in range(size)]
    grids = [hourly_grid(points, v, hours, size) for v in variants]
    top = max(float(np.nanmax(g)) for g in grids)
    fig, axes = plt.subplots(len(variants), 1, figsize=(8, 0.8 + 2.6 * len(variants)),
                             sharex=True, squeeze=False)
    image = None
    for ax, variant, grid in zip(axes[:, 0], variants, grids):
        image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=top,
                          interpolation="nearest")
        rows = sum(sum(p.prediction_bins) for p in points if p.variant == variant)
        ax.set_title(f"{plain(variant)} ({rows:,} predictions)", fontsize=9)
        step = max(1, size // 6)
        ax.set_yticks(range(0, size, step), [plain(s, 24) for s in labels[::step]], fontsize=7)
    step = max(1, len(hours) // 12)
    axes[-1, 0].set_xticks(range(0, len(hours), step), hours[::step], rotation=30, ha="right",
                           fontsize=8)
    axes[-1, 0].set_xlabel("hour (UTC)")
    fig.colorbar(image, ax=list(axes[:, 0]), label="share of the hour's predictions")
    return fig
