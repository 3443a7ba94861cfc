"""The one figure saver and palette of both reports (matplotlib/seaborn), written
byte-identically on reruns. Track-specific figures live with their track
(``clsuite.image.figures``, ``clsuite.llm.report``).

Every figure is saved as PNG (150 dpi, for Markdown and HTML) and SVG (vector, for papers).
PNG metadata carries no software/date fields and SVG ids use a fixed hash salt
(:data:`RC`), so an unchanged pipeline rerun reproduces every figure file exactly.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from clsuite.core.io import atomic_path  # noqa: E402

PALETTE = "colorblind"  # Okabe-Ito-like, safe for the common colour-vision deficiencies
#: rc settings every figure is drawn under: fixed SVG ids and fonts
RC = {"svg.hashsalt": "clsuite", "svg.fonttype": "path", "font.family": "DejaVu Sans", "figure.dpi": 100}
#: the formats :func:`save` writes, with savefig metadata that does not change between runs
FORMATS = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """Write ``stem``.png (150 dpi) and ``stem``.svg atomically, close ``fig``; return the paths
    (PNG first)."""
    paths = []
    for ext, meta in FORMATS.items():
        dest = stem.parent / f"{stem.name}.{ext}"
        with atomic_path(dest, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight", metadata=meta)
        paths.append(dest)
    plt.close(fig)
    return paths


def method_colors(methods: list[str]) -> dict[str, tuple]:
    """The palette: one colour per method (or method type), by position in ``methods`` (grid order)."""
    return dict(zip(methods, sns.color_palette(PALETTE, n_colors=max(len(methods), 3))))


#: colours in the palette; past them the palette repeats, so :func:`method_lines` varies the line too
PALETTE_SIZE = len(sns.color_palette(PALETTE))
_LINES = (("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", (0, (5, 1))))


def method_lines(methods: list[str]) -> dict[str, dict]:
    """``ax.plot`` keywords per method: its colour, and a marker and line style that change with
    every round of the palette (a grid of 35 methods would otherwise repeat each look 3-4 times);
    the first ``PALETTE_SIZE`` methods keep circles on solid lines."""
    colors = method_colors(methods)
    return {m: {"color": colors[m], "marker": _LINES[(i // PALETTE_SIZE) % len(_LINES)][0],
                "linestyle": _LINES[(i // PALETTE_SIZE) % len(_LINES)][1]} for i, m in enumerate(methods)}


def method_legend(ax: plt.Axes, n_methods: int, **inside) -> None:
    """The method legend: where ``inside`` puts it while the methods fit the palette, else outside
    the axes on the right, in columns of at most 18 (it would cover the curves)."""
    if n_methods <= PALETTE_SIZE:
        ax.legend(title="method", fontsize=8, **inside)
    else:
        ax.legend(title="method", fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  ncol=-(-n_methods // 18))
