"""The one table writer of both reports: Markdown, CSV (formula-escaped) and booktabs LaTeX
(:func:`write_table`), and the image track's results table from ``summary``. Cells are
formatted by :mod:`clsuite.report.format`, headers come from :mod:`clsuite.report.metric_info`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clsuite.core.io import write_text
from clsuite.report.format import MISSING, fmt_ci, mean_std
from clsuite.report.metric_info import metric_info
from clsuite.report.safe import latex_escape, latex_label, md_table_frame
from clsuite.report.safe import to_csv as to_csv  # re-exported: every report CSV goes through it


def results_table(summary: pd.DataFrame, benchmark: str, protocol: str, methods: list[str],
                  metrics: list[str], ci_metric: str | None = "last_acc") -> pd.DataFrame:
    """Rows: methods (grid order); columns: metric headers; cells: ``mean ± std``. ``ci_metric``
    also gets a column with its 95% confidence interval over seeds (``summary.ci95``)."""
    d = summary[(summary["benchmark"] == benchmark) & (summary["protocol"] == protocol)]
    rows = []
    for method in methods:
        row = {"Method": method}
        for metric in metrics:
            info = metric_info(metric)
            hit = d[(d["method"] == method) & (d["metric"] == metric)]
            row[info.header] = (mean_std(hit["mean"].iat[0], hit["std"].iat[0], info.scale) if len(hit)
                                else MISSING)
            if metric == ci_metric:
                row[f"{info.label} 95% CI"] = fmt_ci(hit["mean"].iat[0], hit["ci95"].iat[0]) if len(hit) else MISSING
        rows.append(row)
    return pd.DataFrame(rows)


def failed_runs_table(failed: pd.DataFrame, unit: str = "experience") -> pd.DataFrame:
    """Rows: runs that did not finish (a ``failed_runs`` table of either track,
    :func:`clsuite.core.runs.failed_runs_schema`; ``unit``: experience or task, for the header);
    where they stopped (1-based, with the unit's name where it has one) and why."""
    def where(row: dict) -> str:
        if pd.isna(row["stopped_at"]):
            return MISSING
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


def write_table(df: pd.DataFrame, stem: Path, caption: str | None = None, label: str | None = None) -> str:
    """Write ``stem``.md and .csv, and with a ``caption`` the booktabs ``stem``.tex (``\\label``
    ``label``, default ``tab:<stem name>``); return the Markdown table."""
    md = to_markdown(df)
    write_text(stem.parent / f"{stem.name}.md", md + "\n")
    write_text(stem.parent / f"{stem.name}.csv", to_csv(df))
    if caption is not None:
        write_text(stem.parent / f"{stem.name}.tex", to_latex(df, caption, label or f"tab:{stem.name}"))
    return md
