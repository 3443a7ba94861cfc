"""Report figures (matplotlib/seaborn), written byte-identically on reruns.

PNG metadata carries no software/date fields and SVG ids use a fixed hash salt, so an
unchanged pipeline rerun reproduces every figure file exactly.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from clsuite.core.io import atomic_path  # noqa: E402

PALETTE = "colorblind"  # Okabe-Ito-like, safe for the common colour-vision deficiencies
RC = {"svg.hashsalt": "clsuite", "svg.fonttype": "path", "font.family": "DejaVu Sans", "figure.dpi": 100}


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """Write ``stem``.png (150 dpi) and ``stem``.svg atomically; return both paths."""
    paths = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        dest = stem.with_suffix(f".{ext}")
        with atomic_path(dest, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight", metadata=meta)
        paths.append(dest)
    plt.close(fig)
    return paths


def method_colors(methods: list[str]) -> dict[str, tuple]:
    return dict(zip(methods, sns.color_palette(PALETTE, n_colors=max(len(methods), 3))))


def stage_accuracy_figure(stage: pd.DataFrame, benchmark: str, methods: list[str], stem: Path) -> list[Path]:
    """Accuracy on all seen classes after each experience: mean ± std over seeds, per method."""
    with plt.rc_context(RC), sns.axes_style("whitegrid"):
        protocols = [p for p in ("class_il", "task_il") if p in set(stage["protocol"])]
        fig, axes = plt.subplots(1, len(protocols), figsize=(5.2 * len(protocols), 3.8), squeeze=False, sharey=True)
        colors = method_colors(methods)
        for ax, protocol in zip(axes[0], protocols):
            d = stage[(stage["benchmark"] == benchmark) & (stage["protocol"] == protocol)]
            for method in methods:
                g = d[d["method"] == method].groupby("train_exp")["accuracy"]
                mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
                x = mean.index.to_numpy() + 1
                ax.plot(x, 100 * mean.to_numpy(), marker="o", ms=4, color=colors[method], label=method)
                ax.fill_between(x, 100 * (mean - std).to_numpy(), 100 * (mean + std).to_numpy(),
                                color=colors[method], alpha=0.2, linewidth=0)
            ax.set_title(f"{benchmark}: {protocol.replace('_', '-')}")
            ax.set_xlabel("experiences trained")
            ax.set_xticks(np.arange(1, d["train_exp"].max() + 2) if len(d) else [])
            ax.set_ylim(0, 100)
        axes[0][0].set_ylabel("accuracy on seen classes (%)")
        axes[0][-1].legend(title="method", loc="lower left", fontsize=8)
        fig.suptitle("Accuracy over stages (mean ± std over seeds)", fontsize=10)
        return save(fig, stem)


def stage_metrics_figure(stage_metrics: pd.DataFrame, benchmark: str, methods: list[str], stem: Path,
                         protocol: str = "class_il") -> list[Path]:
    """Plasticity, stability and first-task accuracy over stages (mean over seeds), per method."""
    d = stage_metrics[(stage_metrics["benchmark"] == benchmark) & (stage_metrics["protocol"] == protocol)]
    panels = [("plasticity", "plasticity: accuracy on newest experience"),
              ("stability", "stability: mean accuracy on earlier ones"),
              ("first_task", "accuracy on the first experience")]
    with plt.rc_context(RC), sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), sharey=True)
        colors = method_colors(methods)
        for ax, (col, title) in zip(axes, panels):
            for method in methods:
                m = d[d["method"] == method].groupby("train_exp")[col].mean().dropna()
                ax.plot(m.index.to_numpy() + 1, 100 * m.to_numpy(), marker="o", ms=4, color=colors[method],
                        label=method)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("experiences trained")
            ax.set_xticks(np.arange(1, d["train_exp"].max() + 2) if len(d) else [])
            ax.set_ylim(0, 100)
        axes[0].set_ylabel("accuracy (%)")
        axes[-1].legend(title="method", fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.suptitle(f"{benchmark}: stability vs plasticity, {protocol.replace('_', '-')} (mean over seeds)",
                     fontsize=10)
        return save(fig, stem)


def accuracy_matrix_figure(mat: pd.DataFrame, benchmark: str, methods: list[str], stem: Path,
                           protocol: str = "class_il") -> list[Path]:
    """Heatmaps of A[i, j] (%), mean over seeds, one panel per method."""
    d = mat[(mat["benchmark"] == benchmark) & (mat["protocol"] == protocol) & (mat["train_exp"] >= 0)]
    with plt.rc_context(RC):
        n = len(methods)
        fig, axes = plt.subplots(1, n + 1, figsize=(3.1 * n + 0.6, 3.4), squeeze=False,
                                 gridspec_kw={"width_ratios": [1] * n + [0.06]})
        cbar_ax = axes[0][-1]
        for ax, method in zip(axes[0][:n], methods):
            m = d[d["method"] == method].groupby(["train_exp", "eval_exp"])["accuracy"].mean().unstack()
            sns.heatmap(100 * m, ax=ax, vmin=0, vmax=100, cmap="viridis", annot=True, fmt=".0f",
                        annot_kws={"fontsize": 7}, cbar_ax=cbar_ax, cbar_kws={"label": "accuracy (%)"})
            ax.set_aspect("equal")
            ax.set_title(method, fontsize=10)
            ax.set_xlabel("evaluated on experience")
            ax.set_ylabel("after training experience" if ax is axes[0][0] else "")
            ax.set_xticklabels([str(int(t.get_text()) + 1) for t in ax.get_xticklabels()])
            ax.set_yticklabels([str(int(t.get_text()) + 1) for t in ax.get_yticklabels()], rotation=0)
        fig.suptitle(f"{benchmark}: accuracy matrix, {protocol.replace('_', '-')} (mean over seeds)", fontsize=10)
        return save(fig, stem)
