"""Paired differences of LLM methods on the same test examples (clsuite.llm.metrics): hand-computed
difference and net examples, a paired interval that separates what per-method intervals cannot,
identical methods never separated, the Student-t interval across seeds, and the report's section."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clsuite.llm.metrics import bootstrap_ci, bootstrap_rng, paired_differences, score_cis, separated_neighbours
from clsuite.llm.report import ranking_md
from clsuite.llm.schemas import LLM_PAIRED

from test_llm_ci import _records  # noqa: E402


def _grid(runs: dict[tuple[str, int], dict[str, list[float]]]) -> pd.DataFrame:
    return pd.concat([_records(scores, seed=seed, method=m) for (m, seed), scores in runs.items()], ignore_index=True)


def test_difference_net_examples_and_resolution_by_hand():
    recs = _grid({("a", 0): {"t0": [1, 1, 0, 1], "t1": [0, 1, 1, 1], "held": [0, 0, 0, 0]},
                  ("b", 0): {"t0": [1, 0, 0, 1], "t1": [0, 1, 0, 0], "held": [1, 1, 1, 1]}})
    p = LLM_PAIRED.validate(paired_differences(recs, ["a", "b"]))
    r = p.iloc[0]
    assert (r.method_a, r.method_b, r.n) == ("a", "b", 8)
    assert r["diff"] == pytest.approx((0.25 + 0.5) / 2)  # task means of the per-example differences
    assert r.net_examples == 3.0 and r.one_example == pytest.approx(1 / 8)  # held-out task left out
    # the interval is the stratified bootstrap of the per-example differences
    assert (r.ci_low, r.ci_high) == bootstrap_ci([np.array([0, 1, 0, 0.]), np.array([0, 0, 1, 1.])],
                                                 bootstrap_rng(0, "a - b"))


def test_pairing_separates_what_per_method_intervals_cannot():
    """b answers 10 of 20 examples per task; a answers those and 5 more. Each method's own interval
    spans ±20 points and the two overlap; the paired interval excludes 0."""
    b = [1.0] * 10 + [0.0] * 10
    a = [1.0] * 15 + [0.0] * 5
    recs = _grid({("a", 0): {"t0": a, "t1": a}, ("b", 0): {"t0": b, "t1": b}})
    ci = score_cis(recs).query("task == '(mean)'").set_index("method")
    assert ci.loc["a", "ci_low"] < ci.loc["b", "ci_high"]  # unpaired: overlapping
    step = separated_neighbours(paired_differences(recs, ["b", "a"]), ["a", "b"])[0]
    assert (step["higher"], step["lower"]) == ("a", "b") and step["diff"] == pytest.approx(0.25)
    assert step["separated"] and step["ci_low"] > 0 and step["net_examples"] == 10.0


def test_identical_methods_are_never_separated():
    x = list(np.random.default_rng(0).binomial(1, 0.5, 30).astype(float))
    recs = _grid({("a", 0): {"t0": x}, ("b", 0): {"t0": x}})
    step = separated_neighbours(paired_differences(recs, ["a", "b"]), ["a", "b"])[0]
    assert step["diff"] == step["ci_low"] == step["ci_high"] == 0.0 and not step["separated"]


def test_several_seeds_use_the_student_t_interval_of_the_seed_differences():
    runs, diffs = {}, []
    for seed, extra in ((0, 3), (1, 5), (2, 4)):
        b = [1.0] * 8 + [0.0] * 12
        a = [1.0] * (8 + extra) + [0.0] * (12 - extra)
        runs[("a", seed)], runs[("b", seed)] = {"t0": a}, {"t0": b}
        diffs.append(extra / 20)
    step = separated_neighbours(paired_differences(_grid(runs), ["a", "b"]), ["a", "b"])[0]
    half = stats.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / np.sqrt(3)
    assert step["diff"] == pytest.approx(np.mean(diffs))
    assert (step["ci_low"], step["ci_high"]) == pytest.approx((np.mean(diffs) - half, np.mean(diffs) + half))
    assert step["basis"] == "Student t over 3 seeds" and step["separated"]


def test_report_section_names_the_steps_it_cannot_separate(tmp_path):
    x = [1.0] * 10 + [0.0] * 10
    y = [1.0] * 11 + [0.0] * 9  # one example more
    recs = _grid({("<b>m1</b>", 0): {"t0": y}, ("m2", 0): {"t0": x}})
    ci, paired = score_cis(recs), paired_differences(recs, ["m2", "<b>m1</b>"])
    md = "\n".join(ranking_md(ci, paired, ["m2", "<b>m1</b>"], "s", tmp_path))
    assert "One test example moves the final score by 5.00 points" in md
    assert "**Not separated:**" in md and "1.0 examples net" in md
    # names from params: escaped in the table, literal only inside code spans
    assert "| &lt;b>m1&lt;/b> |" in md and "<b>" not in md.replace("`<b>m1</b>`", "")
    assert (tmp_path / "ranking.csv").is_file() and (tmp_path / "ranking.tex").is_file()
