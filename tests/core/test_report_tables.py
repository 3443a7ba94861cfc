"""Results tables: mean ± std cells and the 95% CI column against scipy's t-interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from clsuite.core.aggregate import summarise
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


def test_no_negative_zero_cells():
    """The one number format turns a value that rounds to zero into an unsigned 0."""
    from clsuite.report.format import fmt_ci, mean_std, number

    def fmt(mean: float, std: float) -> str:
        return mean_std(mean, std)

    def fmt_value(mean: float, std: float, scale: float = 100.0, digits: int = 1) -> str:
        return mean_std(mean, std, scale, digits)

    def _num(x: float) -> str:
        return number(x, "auto")

    assert number(-0.04) == "0.0" and number(-0.06) == "-0.1" and number(-0.0) == "0.0"
    assert number(-0.0004, 3) == "0.000" and number(-0.4, 0) == "0" and number(0.04) == "0.0"
    assert number(float("-inf")) == "-inf" and number(float("nan")) == "nan"
    assert fmt(-0.0004, float("nan")) == "0.0" and fmt(-0.0004, 0.0) == "0.0 ± 0.0"
    assert fmt(-0.0006, 0.0) == "-0.1 ± 0.0"
    assert fmt_ci(-0.0, 0.0004, (-1.0, 1.0)) == "[0.0, 0.0]"
    assert fmt_value(-0.0004, float("nan")) == "0.0" and fmt_value(-0.0001, 0.0, 1, 2) == "0.00 ± 0.00"
    assert _num(-0.0) == "0" and _num(-0.001) == "0.00" and _num(-0.5) == "-0.50"


def test_compute_table_memory_in_mib_and_not_reported():
    """Extra memory of a method that reports none is "not reported", never 0.0; labels say MiB."""
    from clsuite.image.report import _compute_table

    rows = [{"run_id": f"b/{m}/seed0", "benchmark": "b", "method": m, "seed": 0, "train_exp": k,
             "n_train_samples": 10, "train_seconds": 1.0, "eval_seconds": 0.1, "samples_per_second": 10.0,
             "peak_rss_mb": 100.0, "peak_gpu_mb": np.nan, "model_bytes": 2**20, "extra_memory_bytes": x}
            for m, x in (("finetune", 0), ("mystery", None), ("replay", 3 * 2**19)) for k in range(2)]
    df = _compute_table(pd.DataFrame(rows).astype({"extra_memory_bytes": "Int64"}), ["finetune", "mystery", "replay"])
    assert {"peak RSS (MiB)", "model (MiB)", "extra memory (MiB)"} <= set(df.columns)
    assert not any("(MB)" in c for c in df.columns)
    assert df.set_index("Method")["extra memory (MiB)"].to_dict() == {
        "finetune": "0.000", "mystery": "not reported", "replay": "1.500"}


def test_memory_curve_cell_not_reported():
    from clsuite.image.report_sections import _mib

    assert _mib(pd.Series([np.nan, np.nan])) == "not reported"
    assert _mib(pd.Series([1.0, 2.0])) == "1.500"
