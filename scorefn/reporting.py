"""What the report files (the A/B report, the drift report) share: the page style, plots drawn
with matplotlib as PNG, their colours, and where a Markdown report keeps its plots.

Plots need matplotlib (``pip install -r requirements-report.txt``); without it a report is
written without them and says so (:data:`PLOTS_NEED_MATPLOTLIB`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

PLOTS_NEED_MATPLOTLIB = ("Plots need matplotlib: pip install -r requirements-report.txt "
                         "(the report is otherwise complete).")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:72rem;
color:#1b1f24;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .55rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}.meta{color:#57606a;font-size:.9rem;margin:.1rem 0}
.verdict{padding:.6rem .9rem;border-radius:6px;margin:.4rem 0;border:1px solid}
.better{background:#dafbe1;border-color:#4ac26b}.worse{background:#ffebe9;border-color:#ff8182}
.undecided{background:#fff8c5;border-color:#d4a72c}img{max-width:100%;height:auto}
.note{color:#57606a;font-size:.88rem}
"""

PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#57606a", "#e16f24", "#0a3069"]


def is_markdown(path: Path) -> bool:
    """Whether a report at ``path`` is Markdown (``.md``, ``.markdown``); else it is HTML."""
    return path.suffix.lower() in (".md", ".markdown")


def pyplot() -> Any | None:
    """matplotlib's ``pyplot`` on the Agg backend (no display needed); ``None`` when
    matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def png(plt: Any, fig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def colors(names: list[str]) -> dict[str, str]:
    """A colour per name, in palette order."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def write_plot_files(path: Path, plots: dict[str, bytes]) -> dict[str, Path]:
    """Writes the plots of the Markdown report at ``path`` as ``<stem>-plots/<name>.png``
    beside it; returns each plot's file (none, and no folder, without plots)."""
    if not plots:
        return {}
    folder = path.with_name(path.stem + "-plots")
    folder.mkdir(exist_ok=True)
    files = {}
    for name, data in plots.items():
        files[name] = folder / f"{name}.png"
        files[name].write_bytes(data)
    return files


def relative_link(file: Path) -> str:
    """The link from a report to a plot file in its ``<stem>-plots/`` folder."""
    return f"{file.parent.name}/{file.name}"
