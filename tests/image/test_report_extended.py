"""The extended tables and report sections on synthetic run folders (no training): every
table under its schema, sections only when their data exist, and a report rendered twice
from the same tables is byte-identical in every file (PNG, SVG, Markdown, HTML, CSV, LaTeX)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clsuite.config import parse_params, read_params_raw
from clsuite.image.prepare import prepare_benchmark
from clsuite.data.sources import SOURCES
from clsuite.image.streams import load_prepared
from clsuite.image.evaluate import evaluate_grid
from clsuite.image.grid_metrics import RUN_TABLES
from clsuite.core.paths import run_dir_for
from clsuite.image.records import RunKey, records_from_logits, write_features, write_records
from clsuite.image.schemas import EXPERIENCES
from clsuite.core.parquet import write_table

REPO = Path(__file__).resolve().parents[2]
SKILL = {"finetune": 1.0, "replay_small": 2.0, "replay": 3.0}
#: with variants: two buffer sizes of one type, the smaller one the reference (two panels
#: per figure keep the test fast); without: one buffer size, reference finetune
GRIDS = {True: (["replay_small", "replay"], "replay_small"), False: (["finetune", "replay"], "finetune")}
CORRUPTED = ["c/fog/1", "c/fog/3", "c/gaussian_noise/1"]


def _params(variants: bool):
    methods, reference = GRIDS[variants]
    raw = read_params_raw(REPO / "params.yaml")
    raw["benchmarks"]["toy"] = {
        "source": "mnist5k", "n_experiences": 2, "test_fraction": 0.25, "subsample_per_class": 12,
        "model": {"name": "mlp", "hidden_sizes": [8]},
        **({"variants": {"long_tail": {"rho": 0.2, "split": "terciles"}}} if variants else {}),
    }
    raw["methods"]["replay_small"] = {"type": "replay", "mem_size": 20}
    raw["run"].update(benchmarks=["toy"], methods=methods, seeds=[0, 1])
    raw["metrics"].update(reference_method=reference, tsne_max_points=60, tsne_max_iter=250)  # small, fast
    return parse_params(raw, check_components=False)


def _fake_run(prepared, runs: Path, method: str, seed: int, variants: bool) -> None:
    """Records of a 2-experience run with logits that favour the true class (by the method's
    skill on trained experiences), corrupted and OOD rows, experiences and features."""
    rng = np.random.default_rng([seed, int(SKILL[method])])
    key = RunKey("toy", method, seed, "class_il")
    run_dir = run_dir_for(runs, "toy", method, seed)
    exps, y = prepared.manifest.experiences, prepared.test.y
    skill = SKILL[method]
    for stage in (-1, 0, 1):
        parts = []
        sets = [("clean", 0.0)] + ([(c, 0.5 * k + 0.5) for k, c in enumerate(CORRUPTED)] if variants else [])
        for name, noise in sets:
            for e, classes in enumerate(exps):
                rows = np.flatnonzero(np.isin(y, classes))
                if name != "clean":
                    rows = rows[::3]
                logits = rng.normal(0, 1 + noise, (len(rows), 10)).astype(np.float32)
                logits[np.arange(len(rows)), y[rows]] += skill * (stage >= e)
                parts.append(records_from_logits(key, stage, e, rows, y[rows], logits, classes, name))
        if variants and stage >= 0:
            logits = rng.normal(0, 1, (15, 10)).astype(np.float32)
            parts.append(records_from_logits(key, stage, -1, np.arange(15), np.full(15, -1), logits, list(range(10)),
                                             "ood"))
        write_records(pd.concat(parts, ignore_index=True), run_dir, stage)
    write_table(pd.DataFrame([{
        "run_id": key.run_id, "benchmark": "toy", "method": method, "seed": seed, "train_exp": k,
        "n_train_samples": 40, "train_seconds": 0.5 * skill, "eval_seconds": 0.1,
        "samples_per_second": 40 / (0.5 * skill),
        "peak_rss_mb": 300.0 + skill, "peak_gpu_mb": np.nan, "model_bytes": 4000, "extra_memory_bytes": 1000 * k,
    } for k in range(2)]), run_dir / "experiences.parquet", EXPERIENCES)
    feats = rng.normal(size=(len(y), 8)).astype(np.float32) * np.linspace(2, 0.1, 8, dtype=np.float32)
    write_features(run_dir, feats, np.arange(len(y)))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    raw, prepared_root = root / "raw", root / "prepared"
    SOURCES.get("mnist5k").fetch(raw / "mnist5k")
    out = {}
    for variants in (True, False):
        params = _params(variants)
        prepare_benchmark("toy", params.benchmark("toy"), raw, prepared_root / str(variants))
        prepared = load_prepared(prepared_root / str(variants) / "toy")
        runs = root / f"runs_{variants}"
        for method in params.run.methods:
            for seed in (0, 1):
                _fake_run(prepared, runs, method, seed, variants)
        out[variants] = (params, runs, prepared_root / str(variants))
    return root, out


def _evaluate(grid, variants: bool, params=None):
    root, out = grid
    p, runs, prepared_root = out[variants]
    data = root / f"data_{variants}_{id(params)}"
    tables = evaluate_grid(params or p, runs, data, root / f"metrics_{variants}_{id(params)}", prepared_root)
    return params or p, data, tables


def _render(params, data: Path, folder: Path) -> Path:
    from clsuite.image.report import build_report

    folder.mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(folder)  # build_report writes under reports/ of the working directory
    try:
        build_report(data, Path("reports"))  # the tables alone: no params
    finally:
        os.chdir(cwd)
    return folder / "reports"


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tables_and_byte_identical_report(grid, tmp_path):
    params, data, tables = _evaluate(grid, True)
    for name in [*RUN_TABLES, "robustness", "corruption_error", "memory_curve", "compute", "extra_summary"]:
        assert len(tables[name]), f"{name} is empty"
    rob = tables["robustness"]
    assert np.allclose(rob.loc[rob["method"] == "replay_small", "mce"], 1.0)  # the reference against itself
    assert set(tables["memory_curve"]["mem_size"]) == {20, 200}
    extra = set(zip(tables["extra_summary"]["protocol"], tables["extra_summary"]["metric"]))
    assert {("class_il", "mce"), ("class_il", "few_acc"), ("any", "ood_auroc_msp"), ("any", "effective_rank")} <= extra

    first = _render(params, data, tmp_path / "a")
    second = _render(params, data, tmp_path / "b")
    a, b = _digest(first), _digest(second)
    assert a == b, [k for k in a if a[k] != b.get(k)]
    index = (first / "index.md").read_text()
    for heading in ("## Robustness to corruptions", "## Out-of-distribution detection", "## Long-tail",
                    "## Accuracy vs memory", "## Compute relative to the reference method", "## Feature space",
                    "## Paired comparisons with the reference method"):
        assert heading in index
    for stem in ("robustness_severity_toy", "robustness_corruptions_toy", "ood_msp_toy", "long_tail_toy",
                 "memory_curve_toy", "feature_spectrum_toy", "tsne_toy", "confusion_toy"):
        for ext in ("png", "svg"):  # the report kit's formats (clsuite.report.figures.save)
            assert (first / "figures" / f"{stem}.{ext}").stat().st_size > 1000, f"{stem}.{ext}"
        assert not (first / "figures" / f"{stem}.pdf").exists()
        assert b"<dc:date>" not in (first / "figures" / f"{stem}.svg").read_bytes()
    tex = (first / "tables" / "ood_toy.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex
    assert (first / "plots" / "robustness_severity.csv").read_text().startswith("benchmark,method,protocol,severity")
    assert "mCE omitted" not in index
    # the metric papers of the sections present are cited (each BibTeX key once)
    cite = index[index.index("## How to cite"):]
    for key in ("hendrycks2019imagenetc", "hendrycks2017msp", "liu2020energy", "roy2007erank",
                "vandermaaten2008tsne", "zhou2023memo"):
        assert cite.count("{" + key + ",") == 1, key


def test_sections_only_when_data_exist(grid, tmp_path):
    params, data, tables = _evaluate(grid, False)
    for name in ("corruption_accuracy", "robustness", "ood_detection", "long_tail_accuracy", "memory_curve"):
        assert tables[name].empty, name
    assert len(tables["feature_spectrum"]) and len(tables["compute"])
    from clsuite.image.report_sections import Grid, extended_sections, read_extended_tables

    extended = read_extended_tables(data)
    index = "\n".join(extended_sections(Grid.read(data), extended, tmp_path))  # the extended sections only: fast
    for heading in ("## Robustness", "## Out-of-distribution", "## Long-tail", "## Accuracy vs memory"):
        assert heading not in index
    assert "## Feature space" in index and "## Compute relative" in index
    from clsuite.image.report_sections import metric_citations

    keys = metric_citations(extended)  # no -C or OOD data: their papers are not cited
    assert "hendrycks2019imagenetc" not in keys and "hendrycks2017msp" not in keys and "roy2007erank" in keys
    # dvc.yaml declares the plot files: they exist, header only
    assert (tmp_path / "plots" / "memory_curve.csv").read_text().strip() == \
        "benchmark,method_type,protocol,mem_size,last_acc"


def test_reference_method_not_in_grid_omits_mce(grid, tmp_path):
    base = grid[1][True][0]
    params = base.model_copy(update={"metrics": base.metrics.model_copy(update={"reference_method": "joint"})})
    params, data, tables = _evaluate(grid, True, params)
    assert tables["robustness"]["mce"].isna().all() and tables["corruption_error"].empty
    assert tables["compute"]["rel_train_seconds"].isna().all()
    assert "mce" not in set(tables["extra_run_metrics"]["metric"])
    from clsuite.image.report_sections import TABLES, Grid, Section, compute, robustness

    section = Section(Grid.read(data), {n: pd.read_parquet(data / f"{n}.parquet") for n in TABLES}, tmp_path)
    text = "\n".join(robustness(section) + compute(section))  # only these two sections: fast
    assert "mCE omitted: the reference method `joint`" in text and "Ratios omitted" in text
    assert "mCE (%)" not in (tmp_path / "tables" / "robustness_toy_class_il.md").read_text()
    assert "time ×" not in (tmp_path / "tables" / "compute_relative.md").read_text()


def test_grid_tables_hold_what_the_report_says_about_the_grid(grid):
    from clsuite.core.parquet import read_table
    from clsuite.image.schemas import BENCHMARKS, GRID, METHODS

    params, data, _ = _evaluate(grid, True)
    g = read_table(data / "grid.parquet", GRID)
    assert list(g.itertuples(index=False, name=None))[:2] == [
        ("toy", "replay_small", 0, params.run.profile, "replay_small", params.section_hash()),
        ("toy", "replay_small", 1, params.run.profile, "replay_small", params.section_hash())]
    assert g["method"].tolist() == ["replay_small", "replay_small", "replay", "replay"]  # the order of run:
    b = read_table(data / "benchmarks.parquet", BENCHMARKS).iloc[0]
    assert (b.benchmark, b.source, b.n_experiences, b.model, b.citation) == (
        "toy", "mnist5k", 2, "mlp", SOURCES.get("mnist5k").citation)
    m = read_table(data / "methods.parquet", METHODS)
    assert m["type"].tolist() == ["replay", "replay"] and m["citation"].str.len().gt(0).all()
    bad = g.assign(profile=["a", "b", "a", "a"])
    with pytest.raises(Exception, match="same on every row"):
        GRID.validate(bad)


def test_report_reads_only_the_tables_no_params_no_registry(grid, tmp_path):
    """A fresh process builds the report from the tables folder alone: no params file in its
    working directory, no method registry, no Avalanche, no LLM track imported."""
    import subprocess
    import sys

    _, data, _ = _evaluate(grid, False)
    (tmp_path / "w").mkdir()
    probe = ("import sys; from pathlib import Path; from clsuite.image.report import build_report; "
             f"build_report(Path({str(data)!r}), Path('reports')); "
             "print(sorted(m for m in sys.modules if m == 'avalanche' or m.startswith(('clsuite.methods', "
             "'clsuite.llm', 'clsuite.config', 'clsuite.data.sources'))))")
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path / "w", capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
    assert _digest(tmp_path / "w" / "reports")["index.md"] and not (tmp_path / "w" / "params.yaml").exists()
