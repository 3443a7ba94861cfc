"""The project report: the image track's metric tables → ``reports/index.md``, ``index.html``,
figures and tables, with a link to each LLM report.

Reads only the evaluate stage's schema-validated tables (``reports/data``). Every file
is written deterministically, so an unchanged rerun reproduces them byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from clsuite.core.errors import DataError
from clsuite.core.io import write_text
from clsuite.core.paths import LLM_HEADLINE_DIR, REPORTS, TABLES_DIR
from clsuite.core.parquet import read_table
from clsuite.image import figures
from clsuite.image.ranking import Unseparated, unseparated_neighbours
from clsuite.image.report_sections import (
    Grid, extended_sections, metric_citations, read_extended_tables, settings_section,
)
from clsuite.image.schemas import (
    ACCURACY_MATRIX, BENCHMARKS, COMPARISONS, EXPERIENCES, FAILED_RUNS, METHODS, STAGE_ACCURACY, STAGE_METRICS,
    SUMMARY,
)
from clsuite.report import failed_runs_md, tables, to_html
from clsuite.report.format import NOT_REPORTED, mean_std, number
from clsuite.report.citations import bibtex
from clsuite.report.figures import saving_in_background
from clsuite.report.provenance import provenance
from clsuite.report.safe import local_target, md_code, md_fence, md_text

MAIN_METRICS = ["last_acc", "avg_acc", "forgetting", "bwt", "fwt", "worst_class_acc", "class_acc_std", "class_drift"]

DEFINITIONS = """\
- **Last acc.**: accuracy on the test samples of all experiences after the last one.
- **Avg. acc.**: mean over stages of the accuracy on all classes seen so far.
- **Forgetting**: mean over old experiences of (best accuracy before the last stage − final accuracy) (Chaudhry et al. 2018; a term may be negative). Mammoth's and PyCIL's forgetting takes the best accuracy over all stages including the last, so every term is ≥ 0 (the Chaudhry terms clipped at 0): `forgetting_mammoth` in `reports/data/run_metrics` and `summary`.
- **BWT**: mean over old experiences of (final accuracy − accuracy right after learning it) (Lopez-Paz & Ranzato 2017); Avalanche's forgetting is −BWT.
- **FWT** (task-IL only): mean over j ≥ 2 of (accuracy on experience j before training on it − accuracy of the untrained model on it). In class-IL unseen classes are never predicted, so it is not reported there.
- **Class-IL** predicts among all classes; **task-IL** among the classes of the sample's experience (task label given at test time).
- **Worst class**, **class acc. std**: lowest per-class accuracy and the spread of per-class accuracies after the last experience (class fairness).
- **Class drift**: mean over old experiences of (max − min accuracy among its classes at the end − the same right after learning it); > 0 means classes learned alike drifted apart (BrainCL's class drift). The fraction of within-task class pairs that were within 5 points after their task and are more than 20 points apart at the end is `drifted_pairs` in `reports/data/run_metrics` and `summary`.
- Values are mean ± sample std over seeds, in percent; *95% CI* is the Student-t 95% confidence interval of the mean over seeds (mean ± t₀.₉₇₅,ₙ₋₁ · std / √n, cut to [0, 100]; very wide for 2 seeds, – for one)."""


def _figure_md(paths: list[Path], alt: str, base: Path) -> str:
    png = next(p for p in paths if p.suffix == ".png")
    return f"![{md_text(alt)}]({png.relative_to(base).as_posix()})"


def _compute_table(exps: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    final = exps[exps["train_exp"] == exps.groupby("run_id")["train_exp"].transform("max")]
    fg = final.groupby(["benchmark", "method"])
    g = exps.groupby(["benchmark", "method"])
    extra = fg["extra_memory_bytes"].max().astype("float64") / 2**20  # NaN: no run of the method reports it
    df = pd.DataFrame({
        "train s / experience": g["train_seconds"].mean().round(2),
        "samples / s": g["samples_per_second"].mean().round(0).astype("int64"),
        "peak RSS (MiB)": g["peak_rss_mb"].max().round(0).astype("int64"),
        "model (MiB)": (fg["model_bytes"].max() / 2**20).round(3),
        "extra memory (MiB)": extra.map(lambda v: NOT_REPORTED if pd.isna(v) else number(v, 3)),
    }).reset_index()
    df["method"] = pd.Categorical(df["method"], methods, ordered=True)
    return df.sort_values(["benchmark", "method"]).rename(columns={"benchmark": "Benchmark", "method": "Method"})


#: how each ``buffer_update`` value is named in the report, with who uses it
BUFFER_UPDATE_NAMES = {
    "online": "online, after every training step (Mammoth, the DER paper)",
    "end_of_experience": "at the end of each experience (Avalanche's ReplayPlugin)",
}


def buffer_update_md(methods: pd.DataFrame, order: list[str]) -> list[str]:
    """One line naming when each reservoir-buffer method adds trained samples to its buffer
    (``methods.parquet``'s ``buffer_update``); nothing when no method has such a buffer."""
    if "buffer_update" not in methods.columns:
        return []
    timing = methods["buffer_update"]
    parts = []
    for value, name in BUFFER_UPDATE_NAMES.items():
        names = [md_code(m) for m in order if m in timing.index and timing.loc[m] == value]
        if names:
            parts.append(f"{name}: {', '.join(names)}")
    return [f"Replay buffer updates: {'; '.join(parts)}.", ""] if parts else []


def ranking_md(pairs: list[Unseparated]) -> list[str]:
    """A warning under a results table naming the neighbours in its last-accuracy ranking that
    the seeds do not separate (:mod:`clsuite.image.ranking`); nothing when every step is separated."""
    if not pairs:
        return []
    parts = [f"{md_code(p.higher)} vs {md_code(p.lower)} "
             + (f"(Δ {mean_std(p.mean_diff, p.ci95_diff)} pts, 95% CI half-width, {p.n_pairs} paired seeds)"
                if p.n_pairs >= 2 and p.ci95_diff == p.ci95_diff else f"({p.n_pairs} paired seed(s): no interval)")
             for p in pairs]
    return [f"**Ranking not established** (last accuracy): the paired 95% CI of the difference includes 0 for "
            f"{'; '.join(parts)}. These methods are not separated by these seeds; add seeds (`run.seeds`) "
            "before ranking them.", ""]


def build_report(data_dir: Path = TABLES_DIR, out: Path = REPORTS, llm_sequences: tuple[str, ...] = (),
                 llm_headline_dir: Path = LLM_HEADLINE_DIR) -> Path:
    """Write the project report under ``out`` from the tables in ``data_dir`` (the grid, its
    benchmarks and methods included: no params, no registry); ``llm_sequences`` are the LLM
    sequences whose reports (``out/llm/<sequence>/``) it links, summarised from their headline
    metrics under ``llm_headline_dir``."""
    with saving_in_background():  # figures rendered beside the next one's building; written on leaving
        text = _report_text(data_dir, out, llm_sequences, llm_headline_dir)
    write_text(out / "index.md", text)
    write_text(out / "index.html", to_html(text, out))  # inlines the PNGs: after they are written
    return out / "index.md"


def _report_text(data_dir: Path, out: Path, llm_sequences: tuple[str, ...], llm_headline_dir: Path) -> str:
    """The report's Markdown; writes its figures and tables under ``out``."""
    run = Grid.read(data_dir)
    benchmarks = read_table(data_dir / "benchmarks.parquet", BENCHMARKS).set_index("benchmark")
    methods = read_table(data_dir / "methods.parquet", METHODS).set_index("method")
    summary = read_table(data_dir / "summary.parquet", SUMMARY)
    stage = read_table(data_dir / "stage_accuracy.parquet", STAGE_ACCURACY)
    mat = read_table(data_dir / "accuracy_matrix.parquet", ACCURACY_MATRIX)
    exps = read_table(data_dir / "experiences.parquet", EXPERIENCES)
    stage_metrics = read_table(data_dir / "stage_metrics.parquet", STAGE_METRICS)
    failed = read_table(data_dir / "failed_runs.parquet", FAILED_RUNS)
    comparisons = read_table(data_dir / "comparisons.parquet", COMPARISONS)
    # figures show the methods with at least one finished run on that benchmark
    done = {b: [m for m in run.methods if ((mat["benchmark"] == b) & (mat["method"] == m)).any()]
            for b in run.benchmarks}
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)

    # everything from params or records goes through md_text / md_code / md_fence (clsuite.report.safe)
    md = [f"# clsuite report: profile {md_code(run.profile)}", "",
          f"{len(run.benchmarks)} benchmark(s) × {len(run.methods)} method(s) × {len(run.seeds)} seed(s) "
          f"(seeds {', '.join(map(str, run.seeds))}); every number below is computed from the stored "
          "per-sample prediction records.", "", "## Benchmarks", ""]
    for b in run.benchmarks:
        cfg = benchmarks.loc[b]
        md.append(f"- {md_code(b)}: {md_text(cfg.description or cfg.source)} (scenario {md_text(cfg.scenario)}, "
                  f"{cfg.n_experiences} experiences, model {md_code(cfg.model)}, {cfg.epochs} epoch(s), "
                  f"batch {cfg.batch_size}, {md_text(cfg.optimizer)} lr {float(cfg.lr)})")
    md += ["", "Each method's effective training settings and hyperparameters, with where each value was "
           "published, are in *Settings and provenance* near the end.", ""]
    md += [*llm_reports_md(llm_sequences, out, llm_headline_dir), "## Results", ""]
    for b in run.benchmarks:
        for protocol in ("class_il", "task_il"):
            df = tables.results_table(summary, b, protocol, run.methods, MAIN_METRICS)
            stem = f"results_{b}_{protocol}"
            table_md = tables.write_table(df, out / "tables" / stem, f"{b}, {protocol.replace('_', '-')}: mean ± std "
                                          f"over {len(run.seeds)} seeds", f"tab:{b}-{protocol}")
            same = protocol == "task_il" and benchmarks.loc[b, "scenario"] == "domain_il"
            note = ["Domain-IL: every experience holds all classes, so task-IL predictions equal class-IL "
                    "ones and this table repeats the one above.", ""] if same else []
            note_after = [] if same else ranking_md(
                unseparated_neighbours(summary, comparisons, b, protocol, run.methods))
            md += [f"### {md_text(b)}: {protocol.replace('_', '-')}", "", *note, table_md, "", *note_after,
                   f"LaTeX: [`tables/{stem}.tex`](tables/{stem}.tex) · CSV: [`tables/{stem}.csv`](tables/{stem}.csv)", ""]
    md += failed_runs_md(failed, len(run.benchmarks) * len(run.methods) * len(run.seeds), out)
    md += ["Metric definitions:", "", DEFINITIONS, "", "## Accuracy over stages", ""]
    plot_rows = []
    for b in run.benchmarks:
        if not done[b]:
            md += [f"No run on {md_text(b)} finished (see Failed runs).", ""]
            continue
        paths = figures.stage_accuracy_figure(stage, b, done[b], out / "figures" / f"stage_accuracy_{b}")
        md += [_figure_md(paths, f"accuracy over stages on {b}", out), ""]
    means = stage.groupby(["benchmark", "method", "protocol", "train_exp"], sort=True)["accuracy"].mean().reset_index()
    for row in means.itertuples(index=False):
        plot_rows.append({"benchmark": row.benchmark, "method": row.method, "protocol": row.protocol,
                          "stage": row.train_exp + 1, "accuracy": round(row.accuracy, 6)})
    write_text(out / "plots" / "stage_accuracy.csv", tables.to_csv(pd.DataFrame(plot_rows)))
    md += ["## Stability and plasticity", "", "Accuracy on the experience just learned (plasticity), mean "
           "accuracy on the earlier experiences (stability) and accuracy on the first experience, after each "
           "experience (class-IL).", ""]
    for b in run.benchmarks:
        if not done[b]:
            continue
        paths = figures.stage_metrics_figure(stage_metrics, b, done[b], out / "figures" / f"stability_plasticity_{b}")
        md += [_figure_md(paths, f"stability and plasticity on {b}", out), ""]
    md += ["## Accuracy matrices", "", "Row i, column j: accuracy on experience j after training experience i.", ""]
    for b in run.benchmarks:
        if not done[b]:
            continue
        paths = figures.accuracy_matrix_figure(mat, b, done[b], out / "figures" / f"accuracy_matrix_{b}")
        md += [_figure_md(paths, f"accuracy matrices on {b}", out), ""]
    md += ["## Compute and memory", "", "Wall time per training experience (mean over experiences and seeds), "
           "training throughput, peak resident memory of the training process, model size (parameters × 4 "
           "bytes) and the extra memory the method keeps after the last experience, counted as MEMO does "
           "(stored parameters × 4 bytes, exemplars as uint8 pixels, stored logits × 4 bytes); memory in MiB "
           f"(2^20 bytes), *{NOT_REPORTED}* where the method does not report its extra memory.", "",
           tables.to_markdown(_compute_table(exps, run.methods)), ""]
    extended = read_extended_tables(data_dir)
    md += extended_sections(run, extended, out)  # robustness, OOD, long tail, memory, compute, features
    md += settings_section(run, data_dir, out)
    prov = provenance(run.params_sha256)
    md += ["## Provenance", "", *md_fence("\n".join([
        f"git revision     {prov['git_revision']}",
        f"params sha256    {prov['params_sha256']}",
        f"dvc.lock sha256  {prov['dvc_lock_sha256']}  (stages upstream of report)",
        f"platform         {prov['platform']}",
        *[f"{k:16s} {v}" for k, v in prov["packages"].items()]])), ""]
    cites = [methods.loc[m, "citation"] for m in run.methods]
    cites += [benchmarks.loc[b, "citation"] for b in run.benchmarks]
    cites += metric_citations(extended)
    md += ["## How to cite", "", *buffer_update_md(methods, run.methods), *md_fence(bibtex(cites), "bibtex"), ""]
    return "\n".join(md)


def llm_reports_md(sequences: tuple[str, ...], out: Path, headline_dir: Path = LLM_HEADLINE_DIR) -> list[str]:
    """The "LLM track" section: a relative link to the report of each sequence of ``llm.grid``
    (``llm/<sequence>/index.md``, written by ``llm_report``) with a one-line summary from its
    headline metrics (``<headline_dir>/<sequence>/<method>.json``, written by ``llm_evaluate``:
    methods, seeds, the highest final score with its 95 % CI, failed runs); a sequence whose
    report is not built yet is named with the command that builds it."""
    if not sequences:
        return []
    md = ["## LLM track", "", "One report per sequence of `llm.grid` (docs/llm.md); final score = mean over the "
          "trained tasks of the score after the last task, in percent, ± the half-width of its 95% CI.", ""]
    for seq in sequences:
        url = f"llm/{quote(seq)}/index.md"
        folder = out / "llm" / seq
        if local_target(url, out) is None or not (folder / "index.md").is_file():
            md.append(f"- {md_code(seq)}: no report yet; build it with {md_code(f'dvc repro llm_report@{seq}')}")
            continue
        line = f"- [{md_code(seq)}]({url})"
        cells = read_llm_headline(headline_dir / seq)
        done = {m: c for m, c in cells.items() if c.get("seeds")}
        if done:
            best = max(done, key=lambda m: done[m]["acc"])  # first in name order on a tie
            c = done[best]
            line += (f": {len(done)} method(s) with a finished run, {max(c['seeds'] for c in done.values())} "
                     f"seed(s); highest final score {md_code(best)} "
                     f"{md_text(mean_std(c['acc'], c.get('acc_ci95'), scale=1.0))}; "
                     f"{sum(int(c.get('failed') or 0) for c in cells.values())} failed run(s)")
        md.append(line)
    return md + [""]


def read_llm_headline(folder: Path) -> dict[str, dict]:
    """``{method: headline}`` from the ``<method>.json`` files of one sequence's headline folder
    (empty when it does not exist); a file that is not a JSON object is a DataError."""
    cells = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            cell = json.loads(path.read_text())
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc}); rerun `dvc repro llm_evaluate` to rewrite it") from None
        if not isinstance(cell, dict) or not isinstance(cell.get("acc", None), (int, float, type(None))):
            raise DataError(f"{path}: not an LLM headline (a JSON object with acc, seeds, ...); rerun "
                            "`dvc repro llm_evaluate` to rewrite it")
        cells[path.stem] = cell
    return cells
