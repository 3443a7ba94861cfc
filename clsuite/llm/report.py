"""``llm_report``: ``reports/llm/<sequence>/`` — index.md, figures/ (PNG + SVG), tables/ (md, csv,
booktabs tex).

Everything is read from ``reports/llm/<sequence>/data`` (llm_evaluate's tables). Cells are
means over seeds (± std with several seeds); scores in percent. Final scores carry a 95 % CI
(:func:`clsuite.report.format.score_ci_cell`): with one seed the run's bootstrap over test examples,
with several the Student-t interval over seeds (as the image report). Numbers, tables, LaTeX,
figures, palette and column headers come from the report kit (:mod:`clsuite.report`), as in the
image report.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from clsuite.core.io import write_text  # noqa: E402
from clsuite.llm.config import LLMParams  # noqa: E402
from clsuite.llm.metrics import CONFIDENCE, MEAN_TASK, N_RESAMPLES, separated_neighbours  # noqa: E402
from clsuite.llm.schemas import LLM_FAILED_RUNS, LLM_PAIRED, LLM_RUN_METRICS, LLM_SCORE_CI, LLM_SCORE_MATRIX  # noqa: E402
from clsuite.report import failed_runs_md  # noqa: E402
from clsuite.report.figures import RC, method_colors, save  # noqa: E402
from clsuite.report.format import MISSING, number, score_ci_cell as ci_cell, seed_cell  # noqa: E402
from clsuite.report.metric_info import metric_info  # noqa: E402
from clsuite.report.safe import md_code, md_text  # noqa: E402
from clsuite.report.tables import write_table  # noqa: E402
from clsuite.core.parquet import read_table  # noqa: E402

#: the metrics of each table (headers, units and scales: :mod:`clsuite.report.metric_info`)
MAIN = ["final_score", "avg_forgetting", "avg_normalised_score", "final_exact_match", "final_f1", "final_rouge_l",
        "final_bleu", "final_task_score", "heldout_initial", "heldout_final"]
COST = ["train_seconds", "step_ms_mean", "examples_per_s", "peak_rss_mb", "replayed_examples"]
FRONTIER = ["avg_learning", "avg_forgetting", "heldout_change"]


def _trains(llm: LLMParams, sequence: str, method: str) -> str:
    """What a method trains, in words: its memory module, or LoRA / full fine-tuning (and lr override)."""
    from clsuite.llm.methods import resolve

    spec, cfg = resolve(method, llm.methods.get(method))
    cfg = cfg.model_copy(update={"adapter": cfg.adapter or llm.sequences[sequence].model.adapter})
    if not spec.uses_adapter:
        return f"its {spec.name} module"
    lr = f", lr {cfg.lr:g}" if cfg.lr is not None else ""
    return ("full fine-tuning" if cfg.adapter == "full" else "LoRA") + lr


def _cell(values: pd.Series, scale: float) -> str:
    """Mean ± std over seeds: percent cells with one decimal (as the image report), others with
    decimals by magnitude."""
    return seed_cell(values, scale, 1 if scale == 100 else "auto")


FINAL_CI = f"{metric_info('final_score').header} [95% CI]"


def final_score_table(ci: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Rows: methods; columns: each task's final score [95 % CI] (trained tasks in order, then the
    held-out one) and their mean (``final_score``)."""
    order = ci[ci.task != MEAN_TASK].drop_duplicates("task")
    order = order.assign(k=order.task_index.astype("float").where(order.task_index >= 0, 10.0**6)).sort_values("k")
    cols = [(t, t + (" (held-out)" if k == -1 else "")) for t, k in zip(order.task, order.task_index)]
    rows = []
    for m in methods:
        mine = ci[ci.method == m]
        row = {"Method": m}
        for task, label in cols + [(MEAN_TASK, "Mean of trained tasks")]:
            row[label] = ci_cell(mine[mine.task == task])
        rows.append(row)
    return pd.DataFrame(rows)


def ci_caption(ci: pd.DataFrame) -> str:
    """Which CI the cells show, with the numbers of test examples and seeds."""
    per_task = ci[ci.task != MEAN_TASK].groupby("task")["n"].max()
    n = (f"n = {per_task.iloc[0]} test examples per task" if per_task.nunique() == 1
         else "n = " + ", ".join(f"{v} ({md_text(t)})" for t, v in per_task.items()) + " test examples")
    seeds = ci.groupby("method")["seed"].nunique()
    return (f"Final scores [{CONFIDENCE:.0%} CI]: with one seed, a percentile bootstrap over the run's test "
            f"examples ({n}; for the mean each task resampled on its own; {N_RESAMPLES} resamples, seeded "
            "by the run seed and the task); with ≥ 2 seeds, the mean over seeds with the Student-t interval "
            f"over seeds (cut to [0, 100]). Finished seeds per method here: {seeds.min()}"
            + (f"–{seeds.max()}" if seeds.max() != seeds.min() else "")
            + ". Other cells: mean ± std over seeds.")


def ranking_md(ci: pd.DataFrame, paired: pd.DataFrame, methods: list[str], sequence: str, tabs: Path) -> list[str]:
    """"Is the ranking established?": the methods by final score (mean over seeds), and for each
    step between neighbours the paired difference on the same test examples with its 95 % interval
    (:func:`clsuite.llm.metrics.separated_neighbours`), the net number of examples behind it and
    what one example is worth; a step whose interval includes 0 is named as not separated, with
    what would separate it."""
    final = ci[ci.task == MEAN_TASK].groupby("method")["value"].mean()
    ranked = sorted([m for m in methods if m in final.index], key=lambda m: -final[m])
    steps = separated_neighbours(paired, ranked)
    if not steps:
        return []
    one = max(s["one_example"] for s in steps)
    lines = ["### Is the ranking established?", "",
             f"Methods by final score: {' > '.join(md_code(m) for m in ranked)}. Every method answers the same "
             f"test examples, so neighbours are compared example by example (paired; {CONFIDENCE:.0%} interval). "
             f"One test example moves the final score by {100 * one:.2f} points here.", ""]
    rows = [{"Higher": s["higher"], "Lower": s["lower"], "Difference (points)": number(100 * s["diff"], 2),
             f"{CONFIDENCE:.0%} interval": f"[{number(100 * s['ci_low'], 2)}, {number(100 * s['ci_high'], 2)}]",
             "Net examples": number(s["net_examples"], 1), "Separated": "yes" if s["separated"] else "no",
             "Basis": s["basis"]} for s in steps]
    lines += [write_table(pd.DataFrame(rows), tabs / "ranking", f"{sequence}: paired differences of neighbours in the "
                          "ranking by final score", f"tab:{sequence}-ranking"), ""]
    loose = [s for s in steps if not s["separated"]]
    if loose:
        lines += ["**Not separated:** " + "; ".join(
            f"{md_code(s['higher'])} vs {md_code(s['lower'])} ({number(100 * s['diff'], 2)} points, "
            f"{number(s['net_examples'], 1)} examples net)" for s in loose)
            + ". Their order here may be chance: more test examples (the sequence's `test:`) or more seeds "
            "(`llm.grid.seeds`) would be needed to tell them apart.", ""]
    return lines


def metric_table(rm: pd.DataFrame, methods: list[str], keys: list[str]) -> pd.DataFrame:
    """Rows: methods; columns: the metrics ``keys`` (kit headers); cells: mean ± std over seeds."""
    rows = []
    for m in methods:
        row = {"Method": m}
        for key in keys:
            info = metric_info(key)
            row[info.header] = _cell(rm[(rm.method == m) & (rm.metric == key)]["value"], info.scale)
        rows.append(row)
    return pd.DataFrame(rows)


def mean_matrices(sm: pd.DataFrame, methods: list[str]) -> dict[str, pd.DataFrame]:
    """Per method: mean primary score (seeds) as (after task ``stage``) × task (held-out task last)."""
    out = {}
    s = sm[sm.metric == "score"]
    for m in methods:
        g = s[s.method == m]
        if not len(g):
            continue
        piv = g.groupby(["stage", "task_index", "task"])["value"].mean().reset_index()
        piv["col"] = [f"{t}" + (" (held-out)" if i == -1 else "") for t, i in zip(piv.task, piv.task_index)]
        order = piv.drop_duplicates("col").assign(k=lambda d: d.task_index.where(d.task_index >= 0, 10**6))
        cols = order.sort_values("k")["col"].tolist()
        out[m] = piv.pivot(index="stage", columns="col", values="value")[cols]
    return out


def heatmap_figure(mats: dict[str, pd.DataFrame], sequence: str, stem: Path) -> list[Path]:
    with plt.rc_context(RC):
        n = len(mats)
        fig, axes = plt.subplots(1, n, figsize=(4.1 * n + 0.8, 3.4), squeeze=False,
                                 gridspec_kw={"wspace": 0.45})
        for ax, (m, mat) in zip(axes[0], mats.items()):
            im = ax.imshow(100 * mat.to_numpy(dtype=float), vmin=0, vmax=100, cmap="viridis", aspect="auto")
            ax.set_xticks(range(mat.shape[1]), [c.replace("rg_", "") for c in mat.columns], rotation=35, ha="right",
                          fontsize=7)
            ax.set_yticks(range(mat.shape[0]), [("before" if s == -1 else f"after {s + 1}") for s in mat.index],
                          fontsize=7)
            for (i, j), v in np.ndenumerate(100 * mat.to_numpy(dtype=float)):
                if not math.isnan(v):
                    ax.text(j, i, number(v, 0), ha="center", va="center", fontsize=7,
                            color="white" if v < 60 else "black")
            ax.set_title(m, fontsize=9)
        fig.colorbar(im, ax=axes[0].tolist(), label="score (%)", shrink=0.8)
        fig.suptitle(f"{sequence}: score after each stage (rows) on each task (columns)", fontsize=9)
        return save(fig, stem)


def forgetting_figure(mats: dict[str, pd.DataFrame], rm: pd.DataFrame, sequence: str, stem: Path) -> list[Path]:
    methods = list(mats)
    colors = method_colors(methods)
    with plt.rc_context(RC):
        tasks = [c for c in next(iter(mats.values())).columns]
        fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(2.6 * (len(tasks) + 1), 2.8), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for m, mat in mats.items():
                ax.plot(mat.index + 1, 100 * mat[task], marker="o", ms=3, color=colors[m], label=m)
            ax.set_title(task.replace("rg_", ""), fontsize=8)
            ax.set_xlabel("tasks trained", fontsize=7)
            ax.set_ylim(-2, 102)
        axes[0][0].set_ylabel("score (%)", fontsize=7)
        ax = axes[0][-1]
        vals = [100 * rm[(rm.method == m) & (rm.metric == "avg_forgetting")]["value"].mean() for m in methods]
        ax.bar(range(len(methods)), vals, color=[colors[m] for m in methods])
        ax.set_xticks(range(len(methods)), methods, rotation=30, fontsize=7)
        ax.set_title("average forgetting (%)", fontsize=8)
        axes[0][0].legend(fontsize=6)
        fig.tight_layout()
        return save(fig, stem)


def frontier_figure(rm: pd.DataFrame, methods: list[str], sequence: str, stem: Path) -> list[Path]:
    """Learning vs forgetting, one point per method (mean over seeds, bars = std): x = average
    learning (gain on each task from training on it), y = average forgetting of the trained
    tasks (left) and the held-out task's drop, before − after (right); lower right is better."""
    colors = method_colors(methods)

    def stat(m: str, key: str, sign: float = 1.0) -> tuple[float, float]:
        v = sign * 100 * rm[(rm.method == m) & (rm.metric == key)]["value"].dropna()
        return (float(v.mean()), float(v.std()) if len(v) > 1 else 0.0) if len(v) else (math.nan, 0.0)

    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
        for ax, (key, sign, label) in zip(axes, [("avg_forgetting", 1.0, "average forgetting of trained tasks (%)"),
                                                 ("heldout_change", -1.0, "held-out drop, before − after (%)")]):
            for m in methods:
                (x, dx), (y, dy) = stat(m, "avg_learning"), stat(m, key, sign)
                if math.isnan(x) or math.isnan(y):
                    continue
                ax.errorbar(x, y, xerr=dx, yerr=dy, fmt="o", ms=6, color=colors[m], label=m, capsize=2)
                ax.annotate(m, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
            ax.axhline(0, color="0.6", lw=0.8)
            ax.margins(0.15)  # room for the method labels
            ax.set_xlabel("average learning: gain on each task from training on it (%)", fontsize=8)
            ax.set_ylabel(label, fontsize=8)
        axes[0].legend(fontsize=7, loc="best")
        fig.suptitle(f"{sequence}: learning vs forgetting (better: right and low)", fontsize=9)
        fig.tight_layout()
        return save(fig, stem)


def build_llm_report(llm: LLMParams, sequence: str, out_dir: Path) -> Path:
    data = out_dir / "data"
    sm = read_table(data / "score_matrix.parquet", LLM_SCORE_MATRIX)
    rm = read_table(data / "run_metrics.parquet", LLM_RUN_METRICS)
    ci = read_table(data / "score_ci.parquet", LLM_SCORE_CI)
    failed = read_table(data / "failed_runs.parquet", LLM_FAILED_RUNS)
    paired = read_table(data / "paired.parquet", LLM_PAIRED)
    grid = list(llm.grid.methods)  # tables: every method of the grid (– without a finished run)
    methods = [m for m in grid if m in set(sm.method)]  # figures: methods with a finished run
    ref = llm.reference_method
    figs, tabs = out_dir / "figures", out_dir / "tables"
    mats = mean_matrices(sm, methods)
    heatmap_figure(mats, sequence, figs / "score_matrix")
    forgetting_figure(mats, rm, sequence, figs / "forgetting")
    frontier_figure(rm, methods, sequence, figs / "frontier")
    cfg = llm.sequences[sequence]
    results = metric_table(rm, grid, [k for k in MAIN if k != "final_score"])
    results.insert(1, FINAL_CI, [ci_cell(ci[(ci.method == m) & (ci.task == MEAN_TASK)]) for m in grid])
    # everything from params or records goes through md_text / md_code (clsuite.report.safe)
    lines = [f"# LLM track: {md_text(sequence)}", "", md_text(cfg.description or ""), "",
             f"Model: {md_code(cfg.model.source)}{' ' + md_text(cfg.model.name) if cfg.model.name else ''}, adapter "
             f"{md_code(cfg.model.adapter)}" + (f" (r={cfg.model.lora_r}, α={cfg.model.lora_alpha:g}, "
                                               f"{md_text('/'.join(cfg.model.lora_targets))})"
                                               if cfg.model.adapter == "lora" else "")
             + f"; seeds {', '.join(map(str, llm.grid.seeds))}. Scores: each task's primary score "
             "(reasoning-gym's scorer, else exact match), in percent; definitions in docs/llm.md.", "",
             "## Results", "",
             write_table(results, tabs / "results", f"{sequence}: results, mean ± std over seeds; final score with "
                         "its 95% CI", f"tab:{sequence}-results"), "", ci_caption(ci), "",
             "### Final score per task", "",
             write_table(final_score_table(ci, grid), tabs / "final_scores",
                         f"{sequence}: final score per task [95% CI]", f"tab:{sequence}-final-scores"), "",
             "Each task's score after the last task, and their mean (the Final score above); CIs as above.", ""]
    lines += ranking_md(ci, paired, methods, sequence, tabs)
    lines += failed_runs_md(failed, len(grid) * len(llm.grid.seeds), out_dir, unit="task")
    lines += ["## Score matrices", "", "![score matrices](figures/score_matrix.png)", ""]
    for m, mat in mats.items():
        t = (100 * mat).map(lambda v: MISSING if math.isnan(v) else number(v, 1))
        t.index = [("before" if s == -1 else f"after task {s + 1}") for s in t.index]
        lines += [f"**{md_text(m)}**", "",
                  write_table(t.reset_index(names="stage"), tabs / f"score_matrix_{m}",
                              f"{sequence}, {m}: score (%) after each stage on each task, mean over seeds",
                              f"tab:{sequence}-score-matrix-{m}"), ""]
    lines += ["## Forgetting", "", "![forgetting](figures/forgetting.png)", ""]
    trains = {m: _trains(llm, sequence, m) for m in methods}
    lines += ["## Learning vs forgetting", "",
              "Average learning = mean over tasks of (score right after training on the task − score just "
              "before); forgetting as above; the held-out drop is the general-knowledge loss. What each "
              "method trains: " + ", ".join(f"{md_code(m)} {md_text(t)}" for m, t in trains.items()) + ".", "",
              "![learning vs forgetting](figures/frontier.png)", "",
              write_table(metric_table(rm, methods, FRONTIER).assign(Trains=[trains[m] for m in methods]),
                          tabs / "frontier", f"{sequence}: learning vs forgetting, mean ± std over seeds",
                          f"tab:{sequence}-frontier"), ""]
    cost = metric_table(rm, methods, COST)
    for key in COST[:4]:
        cost[f"{metric_info(key).header} / {ref}"] = [
            _cell(rm[(rm.method == m) & (rm.metric == f"{key}_vs_{ref}")]["value"], 1) for m in methods]
    lines += [f"## Overhead (relative to {md_code(ref)})", "",
              "Training only (replay, probes and memory-state updates included; evaluation excluded); "
              "peak RSS is the process' maximum so far.", "",
              write_table(cost, tabs / "overhead", f"{sequence}: training cost relative to {ref}, mean ± std over "
                          "seeds", f"tab:{sequence}-overhead"), ""]
    write_text(out_dir / "index.md", "\n".join(lines))
    return out_dir / "index.md"
