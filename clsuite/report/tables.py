"""Results tables as Markdown, CSV and LaTeX (booktabs), from the ``summary`` table."""

from __future__ import annotations

import math

import pandas as pd

from clsuite.core.aggregate import mean_std_ci
from clsuite.report.safe import latex_escape, latex_label, md_table_frame
from clsuite.report.safe import to_csv as to_csv  # re-exported: every report CSV goes through it

METRIC_LABELS = {
    "last_acc": "Last acc. (%)",
    "avg_acc": "Avg. acc. (%)",
    "forgetting": "Forgetting (%)",
    "bwt": "BWT (%)",
    "fwt": "FWT (%)",
    "avalanche_forgetting": "Avalanche forg. (%)",
    "worst_class_acc": "Worst class (%)",
    "class_acc_std": "Class acc. std (%)",
    "class_acc_range": "Class acc. range (%)",
    "class_drift": "Class drift (%)",
    "drifted_pairs": "Drifted pairs (%)",
}
HIGHER_IS_BETTER = {"last_acc": True, "avg_acc": True, "forgetting": False, "bwt": True, "fwt": True,
                    "avalanche_forgetting": False, "worst_class_acc": True, "class_acc_std": False,
                    "class_acc_range": False, "class_drift": False, "drifted_pairs": False}


#: the cell of a quantity a method does not report (never shown as 0)
NOT_REPORTED = "not reported"


def number(x: float, digits: int = 1) -> str:
    """``x`` with ``digits`` decimals, the one number format of every report cell: a value that
    rounds to zero prints without a sign ("0.0", never "-0.0")."""
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text


def fmt(mean: float, std: float) -> str:
    """``mean ± std`` in percent with one decimal; std omitted for a single seed."""
    if math.isnan(std):
        return number(100 * mean)
    return f"{number(100 * mean)} ± {number(100 * std)}"


def fmt_ci(mean: float, half_width: float, bounds: tuple[float, float] = (0.0, 1.0)) -> str:
    """``[lo, hi]`` in percent: the Student-t 95% interval of the mean over seeds intersected
    with the metric's range ``bounds`` (the true mean lies there, so the coverage is kept);
    ``–`` for one seed."""
    if math.isnan(half_width):
        return "–"
    lo, hi = max(bounds[0], mean - half_width), min(bounds[1], mean + half_width)
    return f"[{number(100 * lo)}, {number(100 * hi)}]"


def results_table(summary: pd.DataFrame, benchmark: str, protocol: str, methods: list[str],
                  metrics: list[str], ci_metric: str | None = "last_acc") -> pd.DataFrame:
    """Rows: methods (grid order); columns: metric labels; cells: ``mean ± std``. ``ci_metric``
    also gets a column with its 95% confidence interval over seeds (``summary.ci95``)."""
    d = summary[(summary["benchmark"] == benchmark) & (summary["protocol"] == protocol)]
    rows = []
    for method in methods:
        row = {"Method": method}
        for metric in metrics:
            hit = d[(d["method"] == method) & (d["metric"] == metric)]
            row[METRIC_LABELS[metric]] = fmt(hit["mean"].iat[0], hit["std"].iat[0]) if len(hit) else "–"
            if metric == ci_metric:
                row[f"{METRIC_LABELS[metric].removesuffix(' (%)')} 95% CI"] = (
                    fmt_ci(hit["mean"].iat[0], hit["ci95"].iat[0]) if len(hit) else "–")
        rows.append(row)
    return pd.DataFrame(rows)


def failed_runs_table(failed: pd.DataFrame, unit: str = "experience") -> pd.DataFrame:
    """Rows: runs that did not finish (a ``failed_runs`` table of either track,
    :func:`clsuite.core.runs.failed_runs_schema`; ``unit``: experience or task, for the header);
    where they stopped (1-based, with the unit's name where it has one) and why."""
    def where(row: dict) -> str:
        if pd.isna(row["stopped_at"]):
            return "–"
        at = f"{unit} {int(row['stopped_at']) + 1}"  # 1-based, like the figures (status.json is 0-based)
        if isinstance(row["stopped_in"], str):
            at += f" ({row['stopped_in']})"
        return at + (f", iteration {int(row['iteration']) + 1}" if not pd.isna(row["iteration"]) else "")

    return pd.DataFrame({
        "Run": failed["run_id"].tolist(),
        "State": failed["state"].tolist(),
        f"Finished {unit}s": [str(n) for n in failed["finished"]],
        "Stopped at": [where(r) for r in failed.to_dict("records")],
        "Reason": [r.replace("\n", " ") for r in failed["reason"]],
    })


def to_markdown(df: pd.DataFrame, numparse: bool = False) -> str:
    """A pipe table; every header and string cell is escaped (:func:`clsuite.report.safe.md_text`),
    so a name or reason holding ``|``, HTML or a link shows as itself."""
    return md_table_frame(df).to_markdown(index=False, disable_numparse=not numparse)


def to_latex(df: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table ready to paste (needs ``\\usepackage{booktabs}``); caption, headers and
    cells escaped (:func:`clsuite.report.safe.latex_escape`)."""
    cols = "l" + "r" * (len(df.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
             rf"\label{{{latex_label(label)}}}", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in df.columns) + r" \\", r"\midrule"]
    for row in df.itertuples(index=False):
        lines.append(" & ".join(latex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def fmt_interval(value: float, low: float, high: float) -> str:
    """``value [low, high]`` in percent with one decimal (a score and its 95 % CI); ``value`` alone
    when the interval is undefined, ``–`` when the value is."""
    if math.isnan(value):
        return "–"
    if math.isnan(low) or math.isnan(high):
        return f"{100 * value:.1f}"
    return f"{100 * value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def score_ci_cell(runs: pd.DataFrame) -> str:
    """A score with its 95 % CI from one row per seed (``value``, ``ci_low``, ``ci_high``: the LLM
    track's ``score_ci``): one seed, that run's bootstrap CI over test examples; ≥ 2 seeds, the
    mean over seeds with the Student-t CI over seeds cut to [0, 100] (as :func:`fmt_ci`)."""
    if not len(runs):
        return "–"
    if len(runs) == 1:
        r = runs.iloc[0]
        return fmt_interval(float(r["value"]), float(r["ci_low"]), float(r["ci_high"]))
    mean, _, half = mean_std_ci(runs["value"].to_numpy(dtype=float))
    return fmt_interval(mean, max(0.0, mean - half), min(1.0, mean + half))
