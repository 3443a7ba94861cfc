"""The report kit both reports (image: ``clsuite.image.report``; LLM: ``clsuite.llm.report``) use:

- :mod:`.format`: every number, ``mean ± std``, CI cell, the ``–`` and "not reported" marks;
- :mod:`.tables`: the one table writer (Markdown, formula-escaped CSV, booktabs LaTeX);
- :mod:`.figures`: the one figure saver (PNG + SVG, byte-identical on reruns) and palette;
- :mod:`.metric_info`: per metric a label, unit, direction and citation (column headers);
- :mod:`.safe` (escaping), :mod:`.citations`, :mod:`.provenance`; the failed-runs section and
  self-contained HTML (here).

Imports only ``clsuite.core`` and ``clsuite.report``: no track."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clsuite.core.io import write_text
from clsuite.report import tables
from clsuite.report.safe import render_html


def failed_runs_md(failed: pd.DataFrame, n_runs: int, out: Path, unit: str = "experience") -> list[str]:
    """The "Failed runs" section (of the image report, or an LLM report with ``unit="task"``); also
    writes tables/failed_runs.{md,csv}."""
    df = tables.failed_runs_table(failed, unit)
    write_text(out / "tables" / "failed_runs.md", tables.to_markdown(df) + "\n")
    write_text(out / "tables" / "failed_runs.csv", tables.to_csv(df))
    if failed.empty:
        return ["## Failed runs", "", f"None: all {n_runs} runs finished.", ""]
    return ["## Failed runs", "", f"{len(failed)} of {n_runs} runs did not finish; their metrics are left out "
            "(a method with no finished run shows –). A diverged or failed run stays failed until its "
            "parameters or code change; an interrupted one resumes on the next `dvc repro`.", "",
            tables.to_markdown(df), ""]


def to_html(text: str, base: Path) -> str:
    """Self-contained HTML of the report Markdown ``text`` in folder ``base``: raw HTML shows as
    text, PNG figures under ``base`` are embedded as data URIs, links leaving ``base`` are dropped
    (:func:`clsuite.report.safe.render_html`); a missing figure is a :class:`ReportError`."""
    body = render_html(text, base)
    css = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
           "th:first-child,td:first-child{text-align:left}img{max-width:100%}pre{background:#f6f6f6;padding:1em;"
           "overflow-x:auto}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>clsuite report</title>'
            f"<style>{css}</style></head><body>\n{body}\n</body></html>\n")
