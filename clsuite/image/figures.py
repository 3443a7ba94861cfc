"""Figures of the image report: accuracy after each experience, stability/plasticity, accuracy matrices,
and the extended metrics (robustness, OOD, long tail, memory, feature space).

Every figure is drawn under the kit's :data:`clsuite.report.figures.RC` and written by its
:func:`~clsuite.report.figures.save` (PNG + SVG, no date or software fields), so an unchanged
rerun reproduces each file byte for byte. Inputs are the evaluate stage's tables; values are
means over seeds unless stated.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from clsuite.report.figures import RC, method_colors, method_legend, method_lines, save  # noqa: E402

PROTOCOL = {"class_il": "class-IL", "task_il": "task-IL"}


def _present(methods: list[str], df: pd.DataFrame) -> list[str]:
    have = set(df["method"])
    return [m for m in methods if m in have]


def stage_accuracy_figure(stage: pd.DataFrame, benchmark: str, methods: list[str], stem: Path) -> list[Path]:
    """Accuracy on all seen classes after each experience: mean ± std over seeds, per method."""
    with plt.rc_context(RC), sns.axes_style("whitegrid"):
        protocols = [p for p in ("class_il", "task_il") if p in set(stage["protocol"])]
        fig, axes = plt.subplots(1, len(protocols), figsize=(5.2 * len(protocols), 3.8), squeeze=False, sharey=True)
        lines = method_lines(methods)
        for ax, protocol in zip(axes[0], protocols):
            d = stage[(stage["benchmark"] == benchmark) & (stage["protocol"] == protocol)]
            for method in methods:
                g = d[d["method"] == method].groupby("train_exp")["accuracy"]
                mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
                x = mean.index.to_numpy() + 1
                ax.plot(x, 100 * mean.to_numpy(), ms=4, label=method, **lines[method])
                ax.fill_between(x, 100 * (mean - std).to_numpy(), 100 * (mean + std).to_numpy(),
                                color=lines[method]["color"], alpha=0.2, linewidth=0)
            ax.set_title(f"{benchmark}: {protocol.replace('_', '-')}")
            ax.set_xlabel("experiences trained")
            ax.set_xticks(np.arange(1, d["train_exp"].max() + 2) if len(d) else [])
            ax.set_ylim(0, 100)
        axes[0][0].set_ylabel("accuracy on seen classes (%)")
        method_legend(axes[0][-1], len(methods), loc="lower left")
        fig.suptitle("Accuracy over stages (mean ± std over seeds)", fontsize=10)
        return save(fig, stem)


def stage_metrics_figure(stage_metrics: pd.DataFrame, benchmark: str, methods: list[str], stem: Path,
                         protocol: str = "class_il") -> list[Path]:
    """Plasticity, stability and first-task accuracy after each experience (mean over seeds), per method."""
    d = stage_metrics[(stage_metrics["benchmark"] == benchmark) & (stage_metrics["protocol"] == protocol)]
    panels = [("plasticity", "plasticity: accuracy on newest experience"),
              ("stability", "stability: mean accuracy on earlier ones"),
              ("first_task", "accuracy on the first experience")]
    with plt.rc_context(RC), sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), sharey=True)
        lines = method_lines(methods)
        for ax, (col, title) in zip(axes, panels):
            for method in methods:
                m = d[d["method"] == method].groupby("train_exp")[col].mean().dropna()
                ax.plot(m.index.to_numpy() + 1, 100 * m.to_numpy(), ms=4, label=method, **lines[method])
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("experiences trained")
            ax.set_xticks(np.arange(1, d["train_exp"].max() + 2) if len(d) else [])
            ax.set_ylim(0, 100)
        axes[0].set_ylabel("accuracy (%)")
        method_legend(axes[-1], len(methods), loc="center left", bbox_to_anchor=(1.02, 0.5))
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


def severity_figure(cells: pd.DataFrame, benchmark: str, methods: list[str], stem: Path) -> list[Path]:
    """Accuracy vs severity (0 = the same images clean), after the last experience, mean over corruptions and seeds."""
    d = cells[cells["benchmark"] == benchmark]
    d = d[d["train_exp"] == d.groupby("run_id")["train_exp"].transform("max")]
    protocols = [p for p in ("class_il", "task_il") if p in set(d["protocol"])]
    with plt.rc_context(RC), sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, len(protocols), figsize=(5.2 * len(protocols), 3.8), squeeze=False, sharey=True)
        lines = method_lines(methods)
        for ax, protocol in zip(axes[0], protocols):
            p = d[d["protocol"] == protocol]
            for method in _present(methods, p):
                m = p[p["method"] == method]
                clean = m.groupby("run_id")["clean_accuracy"].mean().mean()
                sev = m.groupby("severity")["accuracy"].mean()
                x = np.r_[0, sev.index.to_numpy()]
                ax.plot(x, 100 * np.r_[clean, sev.to_numpy()], ms=4, label=method, **lines[method])
            ax.set_title(f"{benchmark}: {PROTOCOL[protocol]}")
            ax.set_xlabel("corruption severity (0 = clean)")
            ax.set_ylim(0, 100)
        axes[0][0].set_ylabel("accuracy (%)")
        method_legend(axes[0][-1], len(methods))
        fig.suptitle("Accuracy vs corruption severity after the last experience (mean over corruptions and seeds)",
                     fontsize=10, y=1.02)
        return save(fig, stem)


def corruption_heatmap(cells: pd.DataFrame, benchmark: str, methods: list[str], stem: Path,
                       protocol: str = "class_il") -> list[Path]:
    """Accuracy (%) per method × corruption, after the last experience, mean over severities and seeds."""
    d = cells[(cells["benchmark"] == benchmark) & (cells["protocol"] == protocol)]
    d = d[d["train_exp"] == d.groupby("run_id")["train_exp"].transform("max")]
    m = d.groupby(["method", "corruption"])["accuracy"].mean().unstack()
    m = m.reindex(_present(methods, d))
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(0.55 * m.shape[1] + 2.5, 0.45 * m.shape[0] + 1.8))
        sns.heatmap(100 * m, ax=ax, vmin=0, vmax=100, cmap="viridis", annot=True, fmt=".0f",
                    annot_kws={"fontsize": 7}, cbar_kws={"label": "accuracy (%)"})
        ax.set_xlabel("corruption")
        ax.set_ylabel("method")
        ax.set_title(f"{benchmark}: accuracy per corruption, {PROTOCOL[protocol]} "
                     "(last stage, mean over severities and seeds)", fontsize=9, pad=10)
        return save(fig, stem)


def ood_histogram_figure(hist: pd.DataFrame, benchmark: str, methods: list[str], stem: Path) -> list[Path]:
    """MSP histograms (density) of known vs OOD samples after the last experience, seeds pooled."""
    d = hist[hist["benchmark"] == benchmark]
    present = _present(methods, d)
    with plt.rc_context(RC), sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 3.0), squeeze=False, sharey=True)
        for ax, method in zip(axes[0], present):
            m = d[d["method"] == method]
            for name, color in (("known", "#0072B2"), ("ood", "#D55E00")):
                h = m[m["set"] == name].groupby(["bin", "bin_left", "bin_right"])["count"].sum().reset_index()
                width = h["bin_right"] - h["bin_left"]
                density = h["count"] / max(h["count"].sum(), 1) / width
                ax.bar(h["bin_left"], density, width=width, align="edge", alpha=0.55, color=color,
                       label="known (clean test, seen classes)" if name == "known" else "OOD")
            ax.set_title(method, fontsize=10)
            ax.set_xlabel("max softmax probability")
            ax.set_xlim(0, 1)
        axes[0][0].set_ylabel("density")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=8, loc="upper center", ncol=2, bbox_to_anchor=(0.5, -0.04))
        fig.suptitle(f"{benchmark}: MSP of known vs OOD samples after the last experience (seeds pooled)",
                     fontsize=10, y=1.02)
        return save(fig, stem)


def long_tail_figure(shots: pd.DataFrame, benchmark: str, methods: list[str], stem: Path,
                     protocol: str = "class_il") -> list[Path]:
    """Accuracy on many/medium/few-shot seen classes after each experience, one panel per group."""
    d = shots[(shots["benchmark"] == benchmark) & (shots["protocol"] == protocol)]
    ticks = np.arange(1, int(d["train_exp"].max()) + 2) if len(d) else np.arange(1, 2)
    with plt.rc_context(RC), sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
        lines = method_lines(methods)
        for ax, shot in zip(axes, ("many", "medium", "few")):
            s = d[d["shot"] == shot]
            for method in _present(methods, s):
                m = s[s["method"] == method].groupby("train_exp")["accuracy"].mean()
                ax.plot(m.index.to_numpy() + 1, 100 * m.to_numpy(), ms=4, label=method, **lines[method])
            ax.set_title(f"{shot}-shot classes", fontsize=10)
            ax.set_xlabel("experiences trained")
            ax.set_xticks(ticks)
            ax.set_xlim(ticks[0] - 0.3, ticks[-1] + 0.3)
            ax.set_ylim(0, 100)
        axes[0].set_ylabel("accuracy on seen classes of the group (%)")
        method_legend(axes[-1], len(methods), loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.suptitle(f"{benchmark}: long-tail accuracy, {PROTOCOL[protocol]} (mean over seeds)", fontsize=10, y=1.02)
        return save(fig, stem)


def memory_figure(curve: pd.DataFrame, benchmark: str, stem: Path, protocol: str = "class_il") -> list[Path]:
    """Last accuracy vs buffer size (mean ± std over seeds), one line per method type."""
    d = curve[(curve["benchmark"] == benchmark) & (curve["protocol"] == protocol)]
    types = sorted(set(d["method_type"]))
    with plt.rc_context(RC), sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        colors = method_colors(types)
        for t in types:
            g = d[d["method_type"] == t].groupby("mem_size")["last_acc"]
            mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
            ax.errorbar(mean.index.to_numpy(), 100 * mean.to_numpy(), yerr=100 * std.to_numpy(), marker="o", ms=4,
                        capsize=3, color=colors[t], label=t)
        ax.set_xscale("log")
        sizes = sorted(set(d["mem_size"]))
        ax.set_xticks(sizes, [str(v) for v in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("buffer size (mem_size, samples)")
        ax.set_ylabel("last accuracy (%)")
        ax.set_ylim(0, 100)
        ax.legend(title="method type", fontsize=8)
        ax.set_title(f"{benchmark}: accuracy vs memory, {PROTOCOL[protocol]}", fontsize=10, y=1.02)
        return save(fig, stem)


def spectrum_figure(spectrum: pd.DataFrame, benchmark: str, methods: list[str], stem: Path) -> list[Path]:
    """Share of variance per covariance eigenvalue (log scale), mean over seeds, per method."""
    d = spectrum[spectrum["benchmark"] == benchmark]
    with plt.rc_context(RC), sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        colors = method_colors(methods)
        for method in _present(methods, d):
            m = d[d["method"] == method].groupby("component")["explained"].mean()
            m = m[m > 0]
            ax.plot(m.index.to_numpy() + 1, m.to_numpy(), color=colors[method], label=method)
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue rank")
        ax.set_ylabel("share of total variance")
        ax.legend(title="method", fontsize=8)
        ax.set_title(f"{benchmark}: penultimate-feature covariance spectrum (final model)", fontsize=10, y=1.02)
        return save(fig, stem)


def tsne_figure(tsne: pd.DataFrame, benchmark: str, methods: list[str], stem: Path) -> list[Path]:
    """t-SNE of the final features of each method's first seed, coloured by class."""
    d = tsne[tsne["benchmark"] == benchmark]
    present = _present(methods, d)
    classes = sorted(set(d["y_true"]))
    palette = dict(zip(classes, sns.color_palette("tab20" if len(classes) > 10 else "tab10", len(classes))))
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 3.3), squeeze=False)
        for ax, method in zip(axes[0], present):
            m = d[d["method"] == method]
            m = m[m["seed"] == m["seed"].min()]
            ax.scatter(m["x"], m["y"], s=4, c=[palette[c] for c in m["y_true"]], linewidths=0)
            ax.set_title(f"{method} (seed {int(m['seed'].min())})", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        if len(classes) <= 20:
            handles = [plt.Line2D([], [], marker="o", ls="", color=palette[c], ms=4, label=str(c)) for c in classes]
            axes[0][-1].legend(handles=handles, title="class", fontsize=7, loc="center left",
                               bbox_to_anchor=(1.02, 0.5))
        fig.suptitle(f"{benchmark}: t-SNE of the final penultimate features (clean test samples)", fontsize=10, y=1.02)
        return save(fig, stem)


def confusion_figure(confusion: pd.DataFrame, benchmark: str, methods: list[str], stem: Path) -> list[Path]:
    """Row-normalised class-IL confusion matrices after the last experience, seeds summed."""
    d = confusion[confusion["benchmark"] == benchmark]
    present = _present(methods, d)
    classes = sorted(set(d["y_true"]) | set(d["y_pred"]))
    with plt.rc_context(RC):
        n = len(present)
        fig, axes = plt.subplots(1, n + 1, figsize=(3.1 * n + 0.6, 3.4), squeeze=False,
                                 gridspec_kw={"width_ratios": [1] * n + [0.06]})
        for ax, method in zip(axes[0][:n], present):
            m = d[d["method"] == method].groupby(["y_true", "y_pred"])["count"].sum().unstack(fill_value=0)
            m = m.reindex(index=classes, columns=classes, fill_value=0)
            rows = m.sum(axis=1).replace(0, 1)
            sns.heatmap(100 * m.div(rows, axis=0), ax=ax, vmin=0, vmax=100, cmap="magma_r", cbar_ax=axes[0][-1],
                        cbar_kws={"label": "% of the true class"}, square=True)
            ax.set_title(method, fontsize=10)
            ax.set_xlabel("predicted class")
            ax.set_ylabel("true class" if ax is axes[0][0] else "")
        fig.suptitle(f"{benchmark}: class-IL confusion after the last experience (seeds summed)", fontsize=10, y=1.02)
        return save(fig, stem)
