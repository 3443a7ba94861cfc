"""Confidence intervals of LLM scores: bootstrap over test examples per run (clsuite.llm.metrics),
Student-t over seeds (clsuite.core.aggregate, shared with the image track), and the report cells."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clsuite.llm.metrics import (
    MEAN_TASK, N_RESAMPLES, bootstrap_ci, bootstrap_rng, score_cis, score_matrix, summary,
)
from clsuite.llm.report import final_score_table
from clsuite.report.format import score_ci_cell as ci_cell
from clsuite.llm.schemas import LLM_SCORE_CI
from clsuite.core.aggregate import mean_std_ci
from clsuite.config import read_params_raw


def _records(scores: dict[str, list[float]], seed: int = 0, method: str = "m", stages=(-1, 0, 1)) -> pd.DataFrame:
    """Records of one run: every (stage, task) with the given per-example scores (held-out: index -1)."""
    rows = []
    for stage in stages:
        for k, (task, xs) in enumerate(scores.items()):
            idx = -1 if task.startswith("held") else k
            for i, x in enumerate(xs):
                rows.append({"run_id": f"s/{method}/seed{seed}", "sequence": "s", "method": method, "seed": seed,
                             "stage": stage, "task": task, "task_index": idx, "example_id": f"{i:03d}",
                             "score": x, "exact_match": x, "f1": x, "rouge_l": x, "bleu": x, "task_score": x})
    return pd.DataFrame(rows)


def test_all_equal_scores_give_a_zero_width_interval():
    lo, hi = bootstrap_ci([np.full(20, 0.75)], bootstrap_rng(0, "t"))
    assert lo == hi == 0.75


def test_bernoulli_sample_matches_scipy_and_contains_the_mean():
    x = np.random.default_rng(1).binomial(1, 0.3, size=200).astype(float)
    lo, hi = bootstrap_ci([x], bootstrap_rng(7, "rg_x"))
    ref = stats.bootstrap((x,), np.mean, n_resamples=N_RESAMPLES, confidence_level=0.95, method="percentile",
                          random_state=np.random.default_rng([7, __import__("zlib").crc32(b"rg_x")]))
    assert (lo, hi) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=1e-12)
    assert lo < x.mean() < hi
    # the normal approximation's half-width sqrt(p(1-p)/n) * 1.96 ≈ 0.064: the percentile CI is close
    assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(x.mean() * (1 - x.mean()) / len(x)), rel=0.15)


def test_same_seed_same_interval_and_the_seed_matters():
    x = np.random.default_rng(2).uniform(size=50)  # continuous scores (F1-like): no ties between intervals
    a = bootstrap_ci([x], bootstrap_rng(3, "t"))
    assert a == bootstrap_ci([x], bootstrap_rng(3, "t"))
    assert a != bootstrap_ci([x], bootstrap_rng(4, "t")) and a != bootstrap_ci([x], bootstrap_rng(3, "u"))


def test_fewer_than_two_examples_have_no_interval():
    assert all(np.isnan(bootstrap_ci([np.array([1.0])], bootstrap_rng(0, "t"))))


def test_score_cis_per_task_and_mean_match_the_run_metrics():
    rng = np.random.default_rng(0)
    recs = _records({"a": rng.binomial(1, 0.4, 30).tolist(), "b": rng.binomial(1, 0.8, 30).tolist(),
                     "heldout": rng.binomial(1, 0.5, 10).tolist()}, seed=5)
    ci = score_cis(recs)
    LLM_SCORE_CI.validate(ci)
    assert ci.task.tolist() == ["heldout", "a", "b", MEAN_TASK]
    sm = score_matrix(recs)
    final = float(sm[(sm.metric == "score") & (sm.stage == 1) & (sm.task_index >= 0)].value.mean())
    mean = ci[ci.task == MEAN_TASK].iloc[0]
    assert mean.value == pytest.approx(final) and mean.n == 60 and pd.isna(mean.task_index)
    assert mean.ci_low < mean.value < mean.ci_high
    # the mean's interval is narrower than each task's (60 examples vs 30)
    width = ci.set_index("task").eval("ci_high - ci_low")
    assert width[MEAN_TASK] < min(width["a"], width["b"])
    # deterministic, and independent of the records' row order
    pd.testing.assert_frame_equal(ci, score_cis(recs.sample(frac=1.0, random_state=3)))


def test_seed_summary_has_the_image_tracks_student_t_ci():
    rm = pd.DataFrame({"run_id": ["a", "b", "c"], "sequence": "s", "method": "m", "seed": [0, 1, 2],
                       "metric": "final_score", "value": [0.2, 0.4, 0.45]})
    row = summary(rm).iloc[0]
    mean, std, half = mean_std_ci(np.array([0.2, 0.4, 0.45]))
    assert (row["mean"], row["std"], row["ci95"], row["n_seeds"]) == pytest.approx((mean, std, half, 3))
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * std / np.sqrt(3))


def test_report_cells_bootstrap_for_one_seed_t_for_several():
    one = pd.DataFrame({"seed": [0], "value": [0.5], "ci_low": [0.4], "ci_high": [0.61]})
    assert ci_cell(one) == "50.0 [40.0, 61.0]"
    several = pd.DataFrame({"seed": [0, 1], "value": [0.5, 0.7], "ci_low": [0.4, 0.6], "ci_high": [0.6, 0.8]})
    mean, _, half = mean_std_ci(np.array([0.5, 0.7]))
    assert ci_cell(several) == f"{100 * mean:.1f} [{100 * max(0, mean - half):.1f}, {100 * min(1, mean + half):.1f}]"
    assert ci_cell(several).endswith("[0.0, 100.0]")  # 2 seeds: t with 1 d.o.f. spans the whole range
    assert ci_cell(one.iloc[:0]) == "–"


def test_final_score_table_has_every_task_heldout_last_and_the_mean():
    recs = pd.concat([_records({"a": [1, 0, 1, 1], "b": [0, 0, 1, 0], "heldout": [1, 1, 0, 0]}, method=m)
                      for m in ("x", "y")])
    table = final_score_table(score_cis(recs), ["x", "y", "z"])
    assert list(table.columns) == ["Method", "a", "b", "heldout (held-out)", "Mean of trained tasks"]
    assert table.iloc[0]["a"] == "75.0 [" + table.iloc[0]["a"].split("[")[1]
    assert (table.iloc[2, 1:] == "–").all()  # a grid method without a finished run


def test_top_report_links_each_llm_report_with_a_summary(tmp_path):
    """The top report's LLM section: relative links inside reports/ (kept by the HTML renderer),
    each with a summary read from the sequence's headline files (plain JSON, no LLM import)."""
    import subprocess
    import sys

    from clsuite.config import parse_params
    from clsuite.core.headline import write_headline
    from clsuite.llm.evaluate import headline
    from clsuite.core.runs import failed_runs_table
    from clsuite.llm.schemas import LLM_FAILED_RUNS
    from clsuite.image.report import llm_reports_md
    from clsuite.report.safe import render_html

    raw = read_params_raw(__import__("pathlib").Path(__file__).parents[2] / "params.yaml")
    raw["llm"]["grid"]["sequences"] = ["llm_smoke", "reasoning3"]
    params = parse_params(raw, check_components=False)
    out = tmp_path / "reports"
    recs = pd.concat([_records({"a": [1, 1, 0, 1], "b": [1, 0, 1, 1]}, method="x"),
                      _records({"a": [0, 0, 0, 1], "b": [0, 0, 1, 0]}, method="y")])
    failed = failed_runs_table([{"run_id": "s/z/seed0", "sequence": "s", "method": "z", "seed": 0,
                                 "state": "diverged", "unit": "task", "finished": 1, "stopped_at": 1,
                                 "stopped_in": "b", "iteration": 0, "reason": "non-finite loss"}], LLM_FAILED_RUNS)
    ci = score_cis(recs)
    cells = headline(["x", "y", "z"], ci, pd.DataFrame(), failed)  # what llm_evaluate writes
    assert cells["z"] == {"acc": None, "acc_ci95": None, "forget": None, "forget_ci95": None, "seeds": 0, "failed": 1}
    # acc = the LLM report's final score of x; acc_ci95 = the larger side of its 95 % CI (both in percent)
    row = ci[(ci.task == MEAN_TASK) & (ci.method == "x")].iloc[0]
    assert cells["x"]["acc"] == round(100 * row["value"], 2)
    assert cells["x"]["acc_ci95"] == round(100 * max(row["value"] - row["ci_low"], row["ci_high"] - row["value"]), 2)
    write_headline(cells, tmp_path / "metrics" / "llm_smoke")
    (out / "llm" / "llm_smoke").mkdir(parents=True)
    (out / "llm" / "llm_smoke" / "index.md").write_text("# LLM track: llm_smoke\n")
    md = "\n".join(llm_reports_md(tuple(params.llm.grid.sequences), out, tmp_path / "metrics"))
    line = next(x for x in md.splitlines() if "llm_smoke" in x)
    assert line.startswith("- [`llm_smoke`](llm/llm_smoke/index.md): 2 method(s)")
    assert f"highest final score `x` 75.0 ± {cells['x']['acc_ci95']:.1f};" in line and "1 failed run(s)" in line
    assert "`reasoning3`: no report yet; build it with `dvc repro llm_report@reasoning3`" in md
    assert '<a href="llm/llm_smoke/index.md">' in render_html(md, out)  # inside reports/: kept
    probe = "import clsuite.image.report, sys; print(sorted(m for m in sys.modules if m.startswith('clsuite.llm')))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "[]\n"
