"""Results tables: mean ± std cells and the 95% CI column against scipy's t-interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from clsuite.metrics.aggregate import summarise
from clsuite.report.tables import results_table, to_latex


def _run_metrics(values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"benchmark": "b", "method": m, "protocol": "class_il", "metric": "last_acc",
                          "seed": s, "value": v} for m, vs in values.items() for s, v in enumerate(vs)])


def test_ci_column_is_scipys_t_interval_of_the_seed_mean():
    values = {"replay": [0.70, 0.75, 0.81], "finetune": [0.19]}
    summary = summarise(_run_metrics(values), ["benchmark", "method", "protocol", "metric"])
    df = results_table(summary, "b", "class_il", ["replay", "finetune"], ["last_acc"])
    assert list(df.columns) == ["Method", "Last acc. (%)", "Last acc. 95% CI"]
    v = np.array(values["replay"])
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert df.loc[0, "Last acc. 95% CI"] == f"[{100 * lo:.1f}, {100 * hi:.1f}]"
    assert df.loc[0, "Last acc. (%)"] == f"{100 * v.mean():.1f} ± {100 * v.std(ddof=1):.1f}"
    # one seed: no spread, no interval
    assert df.loc[1, "Last acc. (%)"] == "19.0" and df.loc[1, "Last acc. 95% CI"] == "–"
    # two far-apart seeds: the t-interval (t_0.975,1 = 12.7) leaves [0, 1] and is cut to it
    wide = summarise(_run_metrics({"er": [0.2, 0.9]}), ["benchmark", "method", "protocol", "metric"])
    assert results_table(wide, "b", "class_il", ["er"], ["last_acc"]).loc[0, "Last acc. 95% CI"] == "[0.0, 100.0]"
    tex = to_latex(df, "caption", "tab:x")
    assert r"\pm" in tex and "95\\% CI" in tex
