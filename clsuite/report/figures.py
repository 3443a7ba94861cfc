"""The one figure saver and palette of both reports (matplotlib/seaborn), written
byte-identically on reruns. Track-specific figures live with their track
(``clsuite.image.figures``, ``clsuite.llm.report``).

Every figure is saved as PNG (150 dpi, for Markdown and HTML) and SVG (vector, for papers).
PNG metadata carries no software/date fields and SVG ids use a fixed hash salt
(:data:`RC`), so an unchanged pipeline rerun reproduces every figure file exactly.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
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
    (PNG first). Inside :func:`saving_in_background` the files are written by a forked child and
    exist once that block has ended."""
    paths = [stem.parent / f"{stem.name}.{ext}" for ext in FORMATS]
    if _background:
        _background[-1].submit(fig, paths)
    else:
        _write(fig, paths)
    plt.close(fig)
    return paths


def _write(fig: plt.Figure, paths: list[Path]) -> None:
    for dest, (ext, meta) in zip(paths, FORMATS.items()):
        with atomic_path(dest, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight", metadata=meta)


class _ForkedSaves:
    """Figures rendered by forked children, at most ``jobs`` at once.

    Why fork and not a process pool: rendering (``savefig``: layout, Agg rasterising, SVG paths)
    is most of a report's time and needs the figure itself; a forked child has it in memory as it
    is, so it writes the same bytes as this process would, while this process builds the next
    figure. A matplotlib figure does not pickle reliably (closures, callbacks), and pickling would
    not be cheaper than rendering."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.running: dict[int, Path] = {}  # pid -> the PNG it writes
        self.failed: list[Path] = []

    def submit(self, fig: plt.Figure, paths: list[Path]) -> None:
        while len(self.running) >= self.jobs:
            self._reap_one()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child: write the files, never return
            rc = 1
            try:
                _write(fig, paths)
                rc = 0
            except BaseException:  # noqa: BLE001 - reported to the parent through the exit status
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(rc)
        self.running[pid] = paths[0]

    def _reap_one(self) -> None:
        """Wait for the oldest child (by pid: never another child of this process)."""
        from clsuite.core.parallel import exit_status

        pid = next(iter(self.running))
        _, status = os.waitpid(pid, 0)
        if exit_status(status) != 0:
            self.failed.append(self.running[pid])
        del self.running[pid]

    def wait(self) -> None:
        while self.running:
            self._reap_one()


_background: list[_ForkedSaves] = []


@contextmanager
def saving_in_background(jobs: int | None = None) -> Iterator[None]:
    """Within this block :func:`save` renders each figure in a forked child, ``jobs`` at once
    (default: the usable CPUs less the one that builds the figures, at least 1), and returns at
    once; leaving the block waits for them, and a figure that could not be written is a
    :class:`~clsuite.core.errors.ReportError` naming it (its traceback above, on stderr). Files
    are written atomically, so a failed child leaves none half written. Off Linux, or with
    ``CLSUITE_FIGURE_JOBS=0``, figures are written in this process as before."""
    if jobs is None:
        from clsuite.core.parallel import usable_cpus

        env = os.environ.get("CLSUITE_FIGURE_JOBS", "").strip()
        if env and not env.isdigit():
            from clsuite.core.errors import ReportError

            raise ReportError(f"CLSUITE_FIGURE_JOBS={env!r}: give a number of processes (0: write figures in this one)")
        jobs = int(env) if env else max(1, usable_cpus() - 1)
    if jobs < 1 or sys.platform != "linux":
        yield
        return
    saves = _ForkedSaves(jobs)
    _background.append(saves)
    try:
        yield
    finally:
        _background.pop()
        saves.wait()
    if saves.failed:
        from clsuite.core.errors import ReportError

        raise ReportError(f"{len(saves.failed)} figure(s) could not be written: "
                          f"{', '.join(p.with_suffix('').as_posix() for p in saves.failed)} (the error is above); fix "
                          "it and rerun `dvc repro report`, or set CLSUITE_FIGURE_JOBS=0 to write them in one process")


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
