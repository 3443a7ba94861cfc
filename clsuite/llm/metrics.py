"""LLM-track metrics, pure functions of the generation records (and the per-task cost table).

For one run with T trained tasks, ``A[s, j]`` is the mean primary score of task j's test
examples after task s (s = -1 … T-1; -1 = before training; the records' column ``stage``):

- ``final_score`` = mean_j A[T-1, j];
- ``avg_forgetting`` = mean_{j < T-1} ( max_{j ≤ s ≤ T-2} A[s, j] − A[T-1, j] ) (Chaudhry et al. 2018;
  :func:`clsuite.core.matrix.forgetting`, the image track's ``forgetting``);
- ``avg_learning`` = mean_j ( A[j, j] − A[j-1, j] ): what training on task j gained on it (the
  x axis of the learning-vs-forgetting frontier; A[-1, ·] is the untrained model;
  :func:`clsuite.core.matrix.learning`);
- ``avg_normalised_score`` = mean_j A[T-1, j] / max_{-1 ≤ s ≤ T-1} A[s, j] (final over best score of
  the run per task; tasks never scored above 0 are left out);
- ``heldout_initial`` / ``heldout_final`` / ``heldout_change``: the held-out task's score before
  training, after the last task, and their difference (general-knowledge retention);
- ``final_<m>`` for m in exact_match, f1, rouge_l, bleu, task_score: mean over the trained-task
  examples after the last task;
- cost (from ``tasks.parquet``): ``train_seconds`` (sum), ``peak_rss_mb`` (max),
  ``examples_per_s`` (examples processed incl. replay / train seconds), ``step_ms_mean``; and
  each divided by the same seed's run of the reference method (``<cost>_vs_<reference>``).

Confidence intervals (:func:`score_cis`): per run, a percentile bootstrap 95 % CI over the test
examples of each task's final score (after the last task; the held-out task too) and of
``final_score`` (each trained task's examples resampled on their own, the statistic the mean of
the task means), :data:`N_RESAMPLES` resamples from a generator seeded by the run seed and the
task (:func:`bootstrap_rng`): the same records give the same interval. Across seeds,
:func:`summary` adds the Student-t 95 % CI of :func:`clsuite.core.aggregate.summarise`.

Paired differences (:func:`paired_differences`): every method is scored on the same test examples,
so two methods of one seed are compared example by example: the difference of their
``final_score`` with a *paired* percentile bootstrap CI (the same resampled examples for both; each
task on its own), the net number of test examples the first answers better, and how many
examples one example is worth (the resolution of the test set, in score points).
:func:`separated_neighbours` reads them to say which steps of the ranking the data establish.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from scipy import stats

from clsuite.core import matrix as acc
from clsuite.core.aggregate import summarise

SCORES = ("score", "exact_match", "f1", "rouge_l", "bleu", "task_score")
COSTS = ("train_seconds", "peak_rss_mb", "examples_per_s", "step_ms_mean")
IDENT = ["run_id", "sequence", "method", "seed"]
N_RESAMPLES = 2000
CONFIDENCE = 0.95
MEAN_TASK = "(mean)"  # score_cis' row of final_score: the mean over the trained tasks


def score_matrix(records: pd.DataFrame) -> pd.DataFrame:
    """Mean of every score per (run, after task ``stage``, task): columns IDENT + stage, task, task_index, metric, value, n."""
    long = records.melt(id_vars=IDENT + ["stage", "task", "task_index"], value_vars=list(SCORES), var_name="metric")
    long = long.dropna(subset=["value"])
    out = (long.groupby(IDENT + ["stage", "task", "task_index", "metric"], sort=True)["value"]
           .agg(["mean", "size"]).reset_index().rename(columns={"mean": "value", "size": "n"}))
    out = out[IDENT + ["stage", "task", "task_index", "metric", "value", "n"]]
    return out.astype({"seed": "int64", "stage": "int64", "task_index": "int64", "n": "int64"})


def matrix(sm: pd.DataFrame, run_id: str, metric: str = "score") -> pd.DataFrame:
    """A[s, j] of one run as a (after task ``stage`` × task_index) frame (held-out task excluded)."""
    sub = sm[(sm.run_id == run_id) & (sm.metric == metric) & (sm.task_index >= 0)]
    return sub.pivot(index="stage", columns="task_index", values="value").sort_index().sort_index(axis=1)


def _trained(a: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """(A after tasks 0…T-1 as a T×T array, the untrained row A[-1, ·] or None) of :func:`matrix`."""
    return a.loc[a.index >= 0].to_numpy(), (a.loc[-1].to_numpy() if -1 in a.index else None)


def forgetting(a: pd.DataFrame) -> float:
    """:func:`clsuite.core.matrix.forgetting` of the score matrix (Chaudhry et al. 2018); NaN for one task."""
    value = acc.forgetting(_trained(a)[0])
    return float("nan") if value is None else value


def learning(a: pd.DataFrame) -> float:
    """:func:`clsuite.core.matrix.learning`: mean_j (A[j, j] − A[j-1, j]) over the trained tasks j
    (rows: after tasks -1…T-1; A[-1, ·] is the untrained model)."""
    value = acc.learning(*_trained(a))
    return float("nan") if value is None else value


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
    """Mean, std and Student-t 95 % CI half-width (``ci95``) over seeds per (sequence, method, metric)
    (:func:`clsuite.core.aggregate.summarise`, as the image track); undefined values left out."""
    return summarise(rm.dropna(subset=["value"]), ["sequence", "method", "metric"])


def bootstrap_rng(seed: int, task: str) -> np.random.Generator:
    """The bootstrap's generator of one run's task: seeded by the run seed and the task name."""
    return np.random.default_rng([seed, zlib.crc32(task.encode())])


def bootstrap_ci(samples: list[np.ndarray], rng: np.random.Generator,
                 n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap ``CONFIDENCE`` interval of the mean of the sample means of ``samples``
    (each resampled on its own: a stratified bootstrap; one sample = its mean). NaN when a sample
    has fewer than 2 values."""
    if any(len(x) < 2 for x in samples):
        return float("nan"), float("nan")

    def mean_of_means(*xs: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean([x.mean(axis=axis) for x in xs], axis=0)

    res = stats.bootstrap([np.asarray(x, dtype=float) for x in samples], mean_of_means, n_resamples=n_resamples,
                          confidence_level=CONFIDENCE, method="percentile", vectorized=True, random_state=rng)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def score_cis(records: pd.DataFrame, n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """Per run: the final primary score of each task (held-out included) and ``final_score``
    (task :data:`MEAN_TASK`) with their bootstrap CIs over test examples (module docstring).
    Columns IDENT + task, task_index (NA for the mean), n (test examples), value, ci_low, ci_high."""
    rows = []
    for run_id, g in records.groupby("run_id", sort=True):
        ident = g.iloc[0][IDENT].to_dict()
        last = g[g.stage == g.stage.max()]
        trained = []
        for (k, task), t in last.groupby(["task_index", "task"], sort=True):
            x = t.sort_values("example_id")["score"].to_numpy(dtype=float)
            lo, hi = bootstrap_ci([x], bootstrap_rng(int(ident["seed"]), task), n_resamples)
            rows.append({**ident, "task": task, "task_index": int(k), "n": len(x), "value": float(x.mean()),
                         "ci_low": lo, "ci_high": hi})
            if k >= 0:
                trained.append(x)
        lo, hi = bootstrap_ci(trained, bootstrap_rng(int(ident["seed"]), MEAN_TASK), n_resamples)
        rows.append({**ident, "task": MEAN_TASK, "task_index": None, "n": int(sum(map(len, trained))),
                     "value": float(np.mean([x.mean() for x in trained])), "ci_low": lo, "ci_high": hi})
    cols = IDENT + ["task", "task_index", "n", "value", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols).astype({"seed": "int64", "task_index": "Int64", "n": "int64"})


def paired_differences(records: pd.DataFrame, methods: list[str],
                       n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """For each seed and each pair of ``methods`` (grid order, ``method_a`` first) with a finished
    run: ``diff`` = final_score(a) − final_score(b) after the last task (fraction), its paired
    percentile bootstrap 95 % CI (``ci_low``/``ci_high``: the trained tasks' common test examples
    resampled per task, the same draw for both methods; generator :func:`bootstrap_rng` of the seed
    and the pair), ``net_examples`` = Σ over those examples of (score_a − score_b) (how many more
    examples a answers, partial credit summed), ``n`` common examples and ``one_example`` = the
    largest change of final_score one example can make (1 / (tasks × the smallest task's n))."""
    rows = []
    last = records[(records.stage == records.groupby("run_id").stage.transform("max")) & (records.task_index >= 0)]
    for seed, g in last.groupby("seed", sort=True):
        present = [m for m in methods if m in set(g.method)]
        for i, a in enumerate(present):
            for b in present[i + 1:]:
                rows.append(_paired(g, a, b, int(seed), n_resamples))
    cols = ["sequence", "seed", "method_a", "method_b", "n", "diff", "ci_low", "ci_high", "net_examples",
            "one_example"]
    types = {"sequence": "str", "seed": "int64", "method_a": "str", "method_b": "str", "n": "int64"}
    return pd.DataFrame(rows, columns=cols).astype({c: types.get(c, "float64") for c in cols})


def _paired(g: pd.DataFrame, a: str, b: str, seed: int, n_resamples: int) -> dict:
    diffs = []
    for _, t in g.groupby("task_index", sort=True):
        x = t[t.method == a].set_index("example_id")["score"]
        y = t[t.method == b].set_index("example_id")["score"]
        common = x.index.intersection(y.index).sort_values()
        diffs.append((x[common] - y[common]).to_numpy(dtype=float))
    lo, hi = bootstrap_ci(diffs, bootstrap_rng(seed, f"{a} - {b}"), n_resamples)
    return {"sequence": str(g.sequence.iat[0]), "seed": seed, "method_a": a, "method_b": b,
            "n": int(sum(map(len, diffs))), "diff": float(np.mean([d.mean() for d in diffs])), "ci_low": lo,
            "ci_high": hi, "net_examples": float(sum(d.sum() for d in diffs)),
            "one_example": 1.0 / (len(diffs) * min(map(len, diffs)))}


def separated_neighbours(paired: pd.DataFrame, ranked: list[str]) -> list[dict]:
    """For each pair of neighbours of ``ranked`` (best first): the mean difference over seeds
    (higher − lower, fraction), its 95 % interval and whether it excludes 0 (``separated``). One
    seed: the paired bootstrap over test examples; several: the Student-t interval over the seeds'
    paired differences (as the image track's ranking, :mod:`clsuite.image.ranking`)."""
    out = []
    for hi, lo in zip(ranked, ranked[1:]):
        fwd = paired[(paired.method_a == hi) & (paired.method_b == lo)]
        rev = paired[(paired.method_a == lo) & (paired.method_b == hi)]
        d = pd.concat([fwd.assign(sign=1.0), rev.assign(sign=-1.0)])
        if not len(d):
            continue
        diffs = (d["diff"] * d["sign"]).to_numpy(dtype=float)
        if len(d) == 1:
            r = d.iloc[0]
            low, high = sorted((r.ci_low * r.sign, r.ci_high * r.sign))
            basis = f"paired bootstrap over {int(r.n)} test examples"
        else:
            half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs))
            low, high = diffs.mean() - half, diffs.mean() + half
            basis = f"Student t over {len(diffs)} seeds"
        out.append({"higher": hi, "lower": lo, "diff": float(diffs.mean()), "ci_low": float(low),
                    "ci_high": float(high), "separated": bool(low > 0 or high < 0), "basis": basis,
                    "net_examples": float((d["net_examples"] * d["sign"]).mean()),
                    "one_example": float(d["one_example"].max())})
    return out
