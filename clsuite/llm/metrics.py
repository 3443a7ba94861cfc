"""LLM-track metrics, pure functions of the generation records (and the per-task cost table).

For one run with T trained tasks, ``A[s, j]`` is the mean primary score of task j's test
examples after stage s (s = -1 … T-1; -1 = before training):

- ``final_score`` = mean_j A[T-1, j];
- ``avg_forgetting`` = mean_{j < T-1} ( max_{j ≤ s ≤ T-2} A[s, j] − A[T-1, j] ) (Chaudhry et al. 2018);
- ``avg_learning`` = mean_j ( A[j, j] − A[j-1, j] ): what training on task j gained on it (the
  x axis of the learning-vs-forgetting frontier; A[-1, ·] is the untrained model);
- ``avg_normalised_score`` = mean_j A[T-1, j] / max_{-1 ≤ s ≤ T-1} A[s, j] (final over best score of
  the run per task; tasks never scored above 0 are left out);
- ``heldout_initial`` / ``heldout_final`` / ``heldout_change``: the held-out task's score before
  training, after the last task, and their difference (general-knowledge retention);
- ``final_<m>`` for m in exact_match, f1, rouge_l, bleu, task_score: mean over the last stage's
  trained-task examples;
- cost (from ``tasks.parquet``): ``train_seconds`` (sum), ``peak_rss_mb`` (max),
  ``examples_per_s`` (examples processed incl. replay / train seconds), ``step_ms_mean``; and
  each divided by the same seed's run of the reference method (``<cost>_vs_<reference>``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCORES = ("score", "exact_match", "f1", "rouge_l", "bleu", "task_score")
COSTS = ("train_seconds", "peak_rss_mb", "examples_per_s", "step_ms_mean")
IDENT = ["run_id", "sequence", "method", "seed"]


def score_matrix(records: pd.DataFrame) -> pd.DataFrame:
    """Mean of every score per (run, stage, task): columns IDENT + stage, task, task_index, metric, value, n."""
    long = records.melt(id_vars=IDENT + ["stage", "task", "task_index"], value_vars=list(SCORES), var_name="metric")
    long = long.dropna(subset=["value"])
    out = (long.groupby(IDENT + ["stage", "task", "task_index", "metric"], sort=True)["value"]
           .agg(["mean", "size"]).reset_index().rename(columns={"mean": "value", "size": "n"}))
    out = out[IDENT + ["stage", "task", "task_index", "metric", "value", "n"]]
    return out.astype({"seed": "int64", "stage": "int64", "task_index": "int64", "n": "int64"})


def matrix(sm: pd.DataFrame, run_id: str, metric: str = "score") -> pd.DataFrame:
    """A[s, j] of one run as a (stage × task_index) frame (held-out task excluded)."""
    sub = sm[(sm.run_id == run_id) & (sm.metric == metric) & (sm.task_index >= 0)]
    return sub.pivot(index="stage", columns="task_index", values="value").sort_index().sort_index(axis=1)


def forgetting(a: pd.DataFrame) -> float:
    t = a.columns.max() + 1
    last = t - 1
    vals = [a.loc[j:last - 1, j].max() - a.loc[last, j] for j in range(t - 1)]
    return float(np.mean(vals)) if vals else float("nan")


def learning(a: pd.DataFrame) -> float:
    """mean_j (A[j, j] − A[j-1, j]) over the trained tasks j (rows: stages -1…T-1)."""
    vals = [a.loc[j, j] - a.loc[j - 1, j] for j in a.columns if j in a.index and j - 1 in a.index]
    return float(np.mean(vals)) if vals else float("nan")


def normalised_score(a: pd.DataFrame) -> float:
    last = a.index.max()
    best = a.max(axis=0)
    ok = best > 0
    return float((a.loc[last][ok] / best[ok]).mean()) if ok.any() else float("nan")


def run_metrics(sm: pd.DataFrame, tasks: pd.DataFrame, reference: str) -> pd.DataFrame:
    """One row per (run, metric); see the module docstring."""
    rows = []
    for run_id, g in sm.groupby("run_id", sort=True):
        ident = g.iloc[0][IDENT].to_dict()
        a = matrix(sm, run_id)
        last = int(a.index.max())
        vals = {"final_score": float(a.loc[last].mean()), "avg_forgetting": forgetting(a), "avg_learning": learning(a),
                "avg_normalised_score": normalised_score(a)}
        held = g[(g.task_index == -1) & (g.metric == "score")].set_index("stage")["value"]
        if len(held):
            vals.update(heldout_initial=float(held.get(-1, np.nan)), heldout_final=float(held.get(last, np.nan)))
            vals["heldout_change"] = vals["heldout_final"] - vals["heldout_initial"]
        for m in SCORES[1:]:
            sub = g[(g.metric == m) & (g.stage == last) & (g.task_index >= 0)]
            if len(sub):
                vals[f"final_{m}"] = float((sub.value * sub.n).sum() / sub.n.sum())
        t = tasks[tasks.run_id == run_id]
        if len(t):
            vals.update(train_seconds=float(t.train_seconds.sum()), peak_rss_mb=float(t.peak_rss_mb.max()),
                        examples_per_s=float(t.n_examples.sum() / t.train_seconds.sum()),
                        step_ms_mean=float((t.step_ms_mean * t.n_steps).sum() / t.n_steps.sum()),
                        replayed_examples=float(t.n_replayed.sum()))
        rows += [{**ident, "metric": k, "value": v} for k, v in vals.items()]
    out = pd.DataFrame(rows, columns=IDENT + ["metric", "value"])
    # cost relative to the same seed's reference-method run
    ref = out[(out.method == reference) & out.metric.isin(COSTS)].set_index(["sequence", "seed", "metric"])["value"]
    extra = []
    for r in out[out.metric.isin(COSTS)].itertuples(index=False):
        key = (r.sequence, r.seed, r.metric)
        if key in ref.index and ref[key] > 0:
            extra.append({"run_id": r.run_id, "sequence": r.sequence, "method": r.method, "seed": r.seed,
                          "metric": f"{r.metric}_vs_{reference}", "value": r.value / ref[key]})
    out = pd.concat([out, pd.DataFrame(extra, columns=out.columns)], ignore_index=True)
    return out.astype({"seed": "int64", "value": "float64"})


def summary(rm: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (sequence, method, metric)."""
    g = rm.groupby(["sequence", "method", "metric"], sort=True)["value"]
    out = g.agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"count": "n_seeds"})
