"""The report says when its seeds do not separate two neighbours of a ranking: checked on
hand-built tables and against scipy's paired t-test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from clsuite.core.aggregate import paired_comparisons
from clsuite.image.ranking import Unseparated, ranking, unseparated_neighbours
from clsuite.image.report import ranking_md


def _summary(means: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"benchmark": "b", "method": m, "protocol": "class_il", "metric": "last_acc", "mean": v,
                          "std": 0.01, "ci95": 0.1, "n_seeds": 3} for m, v in means.items()])


def _comp(a: str, b: str, mean: float, ci: float, n: int = 3) -> dict:
    return {"benchmark": "b", "protocol": "class_il", "metric": "last_acc", "method_a": a, "method_b": b,
            "n_pairs": n, "mean_diff": mean, "std_diff": 0.01, "ci95_diff": ci, "p_ttest": 0.5, "p_wilcoxon": 0.5}


def test_neighbours_whose_paired_ci_includes_zero():
    summary = _summary({"er": 0.75, "der": 0.80, "finetune": 0.20, "ewc": 0.21})
    # stored in grid order (a before b); the sign flips where the better method is method_b
    comp = pd.DataFrame([_comp("er", "der", -0.05, 0.10),      # der − er = 0.05 ± 0.10: not separated
                         _comp("er", "ewc", 0.54, 0.05),       # separated
                         _comp("finetune", "ewc", -0.01, 0.0)])  # |0.01| > 0: separated (zero-width CI)
    methods = ["finetune", "er", "der", "ewc"]
    assert ranking(summary, "b", "class_il", methods) == ["der", "er", "ewc", "finetune"]
    pairs = unseparated_neighbours(summary, comp, "b", "class_il", methods)
    assert pairs == [Unseparated("der", "er", 3, 0.05, 0.10)]
    md = "\n".join(ranking_md(pairs))
    assert "**Ranking not established**" in md and "`der` vs `er` (Δ 5.0 ± 10.0 pts" in md
    assert ranking_md(unseparated_neighbours(summary, comp.assign(ci95_diff=0.005), "b", "class_il", methods)) == []


def test_a_pair_without_an_interval_is_not_separated():
    summary = _summary({"a": 0.9, "b": 0.5})
    one_seed = pd.DataFrame([_comp("a", "b", 0.4, math.nan, n=1)])
    assert [(p.higher, p.lower, p.n_pairs) for p in unseparated_neighbours(summary, one_seed, "b", "class_il",
                                                                           ["a", "b"])] == [("a", "b", 1)]
    no_row = unseparated_neighbours(summary, one_seed.iloc[:0], "b", "class_il", ["a", "b"])
    assert [(p.higher, p.lower, p.n_pairs) for p in no_row] == [("a", "b", 0)]
    assert "no interval" in ranking_md(no_row)[0]


def test_separated_exactly_when_scipy_paired_t_test_rejects():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(2, 8))
        a = rng.uniform(0.3, 0.9, n)
        b = a - rng.normal(rng.uniform(-0.05, 0.05), 0.03, n)
        rm = pd.DataFrame([{"benchmark": "b", "protocol": "class_il", "metric": "last_acc", "method": m,
                            "seed": s, "value": float(v)} for m, vals in (("a", a), ("b", b))
                           for s, v in enumerate(vals)])
        comp = paired_comparisons(rm, ["a", "b"])
        summary = _summary({"a": float(a.mean()), "b": float(b.mean())})
        unseparated = bool(unseparated_neighbours(summary, comp, "b", "class_il", ["a", "b"]))
        p = stats.ttest_rel(a, b).pvalue
        assert unseparated == (p >= 0.05), (trial, p)
