"""The report kit (clsuite.report) against hand-computed values: the formatter, metric metadata,
the table writer (Markdown / CSV / booktabs LaTeX) and the figure saver (PNG + SVG, byte-identical)."""

from __future__ import annotations

import math
import os
import sys

import pandas as pd
import pytest

from clsuite.core.errors import ReportError
from clsuite.report.format import (
    MISSING, NOT_REPORTED, fmt_interval, mean_std, number, p_value, score_ci_cell, seed_cell,
)
from clsuite.report.metric_info import METRICS, header, metric_info
from clsuite.report.tables import write_table

NAN = math.nan


def test_number_fixed_and_auto_digits():
    assert number(12.345) == "12.3" and number(12.345, 2) == "12.35" and number(2.5, 0) == "2"
    # auto: whole numbers and >= 100 without decimals, < 10 with 2, else 1
    assert [number(x, "auto") for x in (250.4, 3.0, 3.14159, 12.345, -0.001)] == ["250", "3", "3.14", "12.3", "0.00"]


def test_mean_std_scales_and_marks():
    assert mean_std(0.7533, 0.0551) == "75.3 ± 5.5"  # fractions → percent, one decimal
    assert mean_std(0.7533, NAN) == "75.3"  # one seed: no std
    assert mean_std(NAN, 0.1) == MISSING == "–" and mean_std(None, None) == "–"
    assert mean_std(1.23456, 0.5, scale=1, digits=2) == "1.23 ± 0.50"
    assert NOT_REPORTED == "not reported"


def test_seed_cell_is_mean_and_sample_std_over_seeds():
    # mean 0.5, sample std sqrt(((0.4-0.5)^2 + (0.6-0.5)^2) / 1) = 0.141421
    assert seed_cell(pd.Series([0.4, 0.6, NAN])) == "50.0 ± 14.1"
    assert seed_cell(pd.Series([0.4])) == "40.0"
    assert seed_cell(pd.Series([NAN])) == "–" and seed_cell(pd.Series([], dtype=float)) == "–"
    # cost cells: decimals by magnitude; values 300 and 301 → mean 300.5, std 0.707
    assert seed_cell(pd.Series([300.0, 301.0]), scale=1, digits="auto") == "300 ± 0.71"


def test_interval_cells_and_p_values():
    assert fmt_interval(0.5, 0.25, 0.75) == "50.0 [25.0, 75.0]"
    assert fmt_interval(0.5, NAN, NAN) == "50.0" and fmt_interval(NAN, 0.1, 0.2) == "–"
    one = pd.DataFrame({"value": [0.5], "ci_low": [0.3], "ci_high": [0.7]})
    assert score_ci_cell(one) == "50.0 [30.0, 70.0]" and score_ci_cell(one.iloc[:0]) == "–"
    # two seeds 0.4, 0.6: mean 0.5, half width t_0.975,1 · 0.141421 / sqrt(2) = 12.7062 · 0.1 = 1.27 → cut to [0, 1]
    two = pd.DataFrame({"value": [0.4, 0.6], "ci_low": [NAN, NAN], "ci_high": [NAN, NAN]})
    assert score_ci_cell(two) == "50.0 [0.0, 100.0]"
    assert p_value(0.012345) == "0.0123" and p_value(NAN) == "–" and p_value(None) == "–"


def test_metric_metadata_labels_units_directions():
    assert header("last_acc") == "Last acc. (%)" and metric_info("last_acc").scale == 100
    assert metric_info("forgetting").higher_is_better is False and metric_info("bwt").higher_is_better is True
    assert header("train_seconds") == "Train time (s)" and metric_info("train_seconds").scale == 1
    assert header("peak_rss_mb") == "Peak RSS (MiB)" and header("replayed_examples") == "Replayed examples"
    assert metric_info("mce").citation == "hendrycks2019imagenetc"
    from clsuite.report.citations import ENTRIES

    assert {m.citation for m in METRICS.values()} - {None} <= set(ENTRIES)  # every key has a BibTeX entry
    with pytest.raises(ReportError, match="metric_info.METRICS"):
        metric_info("no_such_metric")


def test_write_table_markdown_csv_booktabs(tmp_path):
    df = pd.DataFrame({"Method": ["replay_50", "=cmd"], "Last acc. (%)": ["75.3 ± 5.5", "–"]})
    md = write_table(df, tmp_path / "t" / "results_x", "x: mean ± std", "tab:x")
    assert md == (tmp_path / "t" / "results_x.md").read_text().rstrip("\n")
    assert md.splitlines()[0] == "| Method    | Last acc. (%)   |"
    assert (tmp_path / "t" / "results_x.csv").read_text() == "Method,Last acc. (%)\nreplay_50,75.3 ± 5.5\n'=cmd,–\n"
    assert (tmp_path / "t" / "results_x.tex").read_text() == "\n".join([
        r"\begin{table}[t]", r"\centering", r"\caption{x: mean $\pm$ std}", r"\label{tab:x}",
        r"\begin{tabular}{lr}", r"\toprule", r"Method & Last acc. (\%) \\", r"\midrule",
        r"replay\_50 & 75.3 $\pm$ 5.5 \\", r"=cmd & – \\", r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])
    # without a caption: no LaTeX file; a dot in the stem is kept
    write_table(df, tmp_path / "u" / "score_matrix_replay_0.5")
    assert sorted(p.name for p in (tmp_path / "u").iterdir()) == ["score_matrix_replay_0.5.csv",
                                                                  "score_matrix_replay_0.5.md"]


def test_save_writes_png_and_svg_byte_identically(tmp_path):
    import matplotlib.pyplot as plt

    from clsuite.report.figures import RC, method_colors, save

    def draw(stem):
        with plt.rc_context(RC):
            fig, ax = plt.subplots(figsize=(2, 2))
            colors = method_colors(["a", "b"])
            ax.plot([0, 1], [0, 1], color=colors["a"], label="a")
            ax.legend()
            return save(fig, stem)

    first, second = draw(tmp_path / "a" / "f"), draw(tmp_path / "b" / "f")
    assert [p.name for p in first] == ["f.png", "f.svg"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert b"Software" not in first[0].read_bytes() and b"<dc:date>" not in first[1].read_bytes()
    assert method_colors(["a", "b"])["a"] != method_colors(["a", "b"])["b"]


def _line_figure(stem):
    """A figure saved as the report's figure functions save theirs (inside the RC context)."""
    import matplotlib.pyplot as plt

    from clsuite.report.figures import RC, save

    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1, 2], [0, 1, 0.5], label="a")
        ax.legend()
        return save(fig, stem)


@pytest.mark.skipif(sys.platform != "linux", reason="figures are forked only on Linux")
def test_figures_saved_in_background_equal_those_saved_in_process(tmp_path):
    """Inside saving_in_background, forked children write the figures (2 at a time here); after
    the block they are there, byte-identical to the files written in this process."""
    from clsuite.report.figures import saving_in_background

    reference = _line_figure(tmp_path / "ref" / "f")
    (tmp_path / "bg").mkdir()
    pid = os.getpid()
    with saving_in_background(jobs=2):
        paths = [_line_figure(tmp_path / "bg" / f"f{k}") for k in range(4)]
    assert os.getpid() == pid  # the children left through os._exit
    assert [p.name for p in paths[0]] == ["f0.png", "f0.svg"]
    for ps in paths:
        assert [p.read_bytes() for p in ps] == [p.read_bytes() for p in reference]
    assert not [p for p in (tmp_path / "bg").iterdir() if p.suffix not in (".png", ".svg")], "temp files left"


@pytest.mark.skipif(sys.platform != "linux", reason="figures are forked only on Linux")
def test_a_figure_that_cannot_be_written_in_the_background_is_a_report_error(tmp_path, capfd):
    """A child that fails (its folder is a file) exits non-zero; leaving the block raises a
    ReportError naming the figure, after the other figures were written."""
    from clsuite.report.figures import saving_in_background

    (tmp_path / "ok").mkdir()
    (tmp_path / "blocked").write_text("a file where the figure folder should be")
    with pytest.raises(ReportError, match=r"1 figure\(s\) could not be written: .*blocked/f \("):
        with saving_in_background(jobs=1):
            _line_figure(tmp_path / "blocked" / "f")
            _line_figure(tmp_path / "ok" / "f")
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["f.png", "f.svg"]
    assert "Traceback" in capfd.readouterr().err


def test_no_background_figures_with_zero_jobs(tmp_path, monkeypatch):
    """CLSUITE_FIGURE_JOBS=0: save() writes in this process, so the files exist when it returns."""
    from clsuite.report.figures import saving_in_background

    monkeypatch.setenv("CLSUITE_FIGURE_JOBS", "0")
    with saving_in_background():
        paths = _line_figure(tmp_path / "z" / "f")
        assert all(p.is_file() for p in paths)
