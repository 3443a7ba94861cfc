"""Report sections of the extended metrics: robustness, OOD detection, long tail, memory,
compute, feature space and paired comparisons.

Each section appears only when its table has rows. Tables are written as Markdown, CSV
and LaTeX (booktabs) under ``reports/tables/``, figures as PNG and SVG under
``reports/figures/`` (the report kit: :mod:`clsuite.report.tables`, :mod:`clsuite.report.figures`),
and the DVC plot data under ``reports/plots/`` (always written, header only when empty, because
dvc.yaml declares them). Nothing here depends on the time or the machine, so an unchanged rerun reproduces every file byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clsuite.core.errors import DataError
from clsuite.core.io import write_text
from clsuite.image import figures as fx
from clsuite.image.metrics import ood
from clsuite.report import tables as tb
from clsuite.report.format import MISSING, NOT_REPORTED, mean_std, number, p_value, seed_cell
from clsuite.report.metric_info import header, metric_info
from clsuite.report.safe import md_code, md_text
from clsuite.image.schemas import (
    COMPARISONS, COMPUTE, CONFUSION, CORRUPTION_ACCURACY, EXTRA_SUMMARY, FEATURE_SPECTRUM, GRID, LONG_TAIL_ACCURACY,
    MEMORY_CURVE, OOD_DETECTION, OOD_HISTOGRAM, ROBUSTNESS, SETTINGS, TSNE,
)
from clsuite.core.parquet import read_table

TABLES = {"corruption_accuracy": CORRUPTION_ACCURACY, "robustness": ROBUSTNESS, "ood_detection": OOD_DETECTION,
          "ood_histogram": OOD_HISTOGRAM, "long_tail_accuracy": LONG_TAIL_ACCURACY, "memory_curve": MEMORY_CURVE,
          "compute": COMPUTE, "feature_spectrum": FEATURE_SPECTRUM, "tsne": TSNE, "confusion": CONFUSION,
          "extra_summary": EXTRA_SUMMARY, "comparisons": COMPARISONS}
PROTOCOL_NAMES = {"class_il": "class-IL", "task_il": "task-IL", "any": "any protocol"}
#: DVC plot files (reports/plots/, dvc.yaml report stage) and their columns
PLOTS = {"robustness_severity.csv": ["benchmark", "method", "protocol", "severity", "accuracy"],
         "memory_curve.csv": ["benchmark", "method_type", "protocol", "mem_size", "last_acc"]}


@dataclass(frozen=True)
class Grid:
    """The evaluated grid as the evaluate stage recorded it (``reports/data/grid``): the report's
    only source for which benchmarks, methods and seeds there are, and in which order."""

    benchmarks: list[str]
    methods: list[str]
    seeds: list[int]
    profile: str
    reference_method: str
    params_sha256: str

    @classmethod
    def read(cls, data_dir: Path) -> "Grid":
        df = read_table(data_dir / "grid.parquet", GRID)
        if df.empty:
            raise DataError(f"{data_dir / 'grid.parquet'}: no run in the grid; set run.benchmarks, run.methods and "
                            "run.seeds in params.yaml and rerun `dvc repro evaluate`")
        first = df.iloc[0]
        return cls(list(dict.fromkeys(df["benchmark"])), list(dict.fromkeys(df["method"])),
                   [int(s) for s in dict.fromkeys(df["seed"])], str(first["profile"]),
                   str(first["reference_method"]), str(first["params_sha256"]))


class Section:
    """Writes one section's tables and figures and collects its Markdown lines."""

    def __init__(self, grid: Grid, data: dict[str, pd.DataFrame], out: Path) -> None:
        self.grid, self.data, self.out = grid, data, out
        self.methods = grid.methods
        self.n_seeds = len(grid.seeds)
        # the reference the evaluate stage used (the report stage does not depend on metrics: in params)
        refs = data["compute"]["reference_method"]
        self.reference = str(refs.iat[0]) if len(refs) else grid.reference_method

    def tsne_points(self) -> int:
        """Largest number of t-SNE points of one run (the evaluate stage's cap)."""
        t = self.data["tsne"]
        return int(t.groupby("run_id").size().max()) if len(t) else 0

    def cell(self, bench: str, method: str, protocol: str, metric: str, scale: float = 100.0, digits: int = 1) -> str:
        s = self.data["extra_summary"]
        hit = s[(s["benchmark"] == bench) & (s["method"] == method) & (s["protocol"] == protocol)
                & (s["metric"] == metric)]
        return mean_std(hit["mean"].iat[0], hit["std"].iat[0], scale, digits) if len(hit) else MISSING

    def table(self, df: pd.DataFrame, stem: str, caption: str) -> list[str]:
        """Write ``tables/<stem>.md|csv|tex``; return the Markdown table and links."""
        md = tb.write_table(df, self.out / "tables" / stem, caption, f"tab:{stem.replace('_', '-')}")
        return [md, "",
                f"LaTeX: [`tables/{stem}.tex`](tables/{stem}.tex) · CSV: [`tables/{stem}.csv`](tables/{stem}.csv)", ""]

    def figure(self, paths: list[Path], alt: str) -> list[str]:
        rel = [p.relative_to(self.out).as_posix() for p in paths]
        png = next(r for r in rel if r.endswith(".png"))
        links = " · ".join(f"[{r.rsplit('.', 1)[1].upper()}]({r})" for r in rel if not r.endswith(".png"))
        return [f"![{md_text(alt)}]({png})", "", f"Vector: {links}", ""]

    def benchmarks_with(self, name: str) -> list[str]:
        have = set(self.data[name]["benchmark"])
        return [b for b in self.grid.benchmarks if b in have]

    def seeds_note(self) -> str:
        return f"mean ± std over {self.n_seeds} seed(s)"


def robustness(s: Section) -> list[str]:
    if s.data["corruption_accuracy"].empty:
        return []
    ref = s.reference
    md = ["## Robustness to corruptions", "",
          "Accuracy on ImageNet-C-style corrupted copies of the test images of the experiences seen so far, after "
          "the last experience (in %, " + s.seeds_note() + "). *Clean* is the accuracy on the same images "
          "uncorrupted; *mean corr.* averages all corruptions and severities; *rel. drop* = 1 − mean corr. / clean; "
          "*mCE* = mean over corruptions of Σ_severities error / Σ_severities error of "
          f"{md_code(ref)} on the same seed "
          "(Hendrycks & Dietterich 2019; 100 = as robust as the reference, lower is better); "
          "*relative mCE* = mean over corruptions of Σ_severities (error − clean error) / Σ_severities "
          f"(error − clean error) of {md_code(ref)}, the degradation under corruption apart from clean accuracy "
          "(Hendrycks & Dietterich 2019; – where the reference does not degrade).", ""]
    if ref not in s.methods:
        md += [f"*mCE and relative mCE omitted: the reference method {md_code(ref)} (`metrics.reference_method` "
               "in params.yaml) is not in this grid.*", ""]
    for b in s.benchmarks_with("corruption_accuracy"):
        for protocol in ("class_il", "task_il"):
            keys = ["corruption_clean_acc", "mean_corruption_acc", "corruption_relative_drop"]
            keys += ["mce", "relative_mce"] if ref in s.methods else []
            df = pd.DataFrame([{"Method": m, **{header(k): s.cell(b, m, protocol, k) for k in keys}}
                               for m in s.methods])
            md += [f"### {md_text(b)}: {PROTOCOL_NAMES[protocol]}", ""]
            named = f", mCE and relative mCE against {ref}" if ref in s.methods else ""
            md += s.table(df, f"robustness_{b}_{protocol}",
                          f"{b}, {PROTOCOL_NAMES[protocol]}: robustness to corruptions{named}, {s.seeds_note()}")
        cells = s.data["corruption_accuracy"]
        md += s.figure(fx.severity_figure(cells, b, s.methods, s.out / "figures" / f"robustness_severity_{b}"),
                       f"accuracy vs corruption severity on {b}")
        md += s.figure(fx.corruption_heatmap(cells, b, s.methods, s.out / "figures" / f"robustness_corruptions_{b}"),
                       f"accuracy per corruption on {b}")
    return md


def ood_detection(s: Section) -> list[str]:
    det = s.data["ood_detection"]
    if det.empty:
        return []
    md = ["## Out-of-distribution detection", "",
          "Known = clean test samples of the classes seen so far, OOD = the benchmark's OOD set, after the last "
          f"experience ({s.seeds_note()}, in %). Scores (higher = in-distribution): `msp` (max softmax "
          "probability), `energy` (logsumexp of the logits), `max_logit`. Two conventions for the positive "
          "class: *ID+* = known samples positive (Hendrycks & Gimpel 2017, ODIN), *OOD+* = OOD samples positive "
          "(OpenOOD v1.5). *AUROC* is the same under both. *AUPR-In (ID+)* and *AUPR-Out (OOD+)*: "
          "scikit-learn's average precision of the positive class. *FPR@95TPR (ID+)*: share of OOD samples "
          "accepted at the threshold that keeps 95% of the known ones; *FPR@95TPR (OOD+)*: share of known "
          "samples rejected at the threshold that catches 95% of the OOD ones (both lower is better).", ""]
    for b in s.benchmarks_with("ood_detection"):
        scores = sorted(set(det.loc[det["benchmark"] == b, "score"]))
        rows = [{"Method": m, "Score": sc, **{metric_info(k).label: s.cell(b, m, "any", f"ood_{k}_{sc}")
                                              for k in ood.DETECTION_METRICS}}
                for m in s.methods for sc in scores]
        md += [f"### {md_text(b)}", ""]
        md += s.table(pd.DataFrame(rows), f"ood_{b}",
                      f"{b}: OOD detection after the last experience, {s.seeds_note()}; AUROC is the same for "
                      "ID+ and OOD+; AUPR-In and FPR@95TPR (ID+): known samples positive; AUPR-Out and "
                      "FPR@95TPR (OOD+): OOD samples positive (OpenOOD)")
        if not s.data["ood_histogram"].empty and b in set(s.data["ood_histogram"]["benchmark"]):
            md += s.figure(fx.ood_histogram_figure(s.data["ood_histogram"], b, s.methods,
                                                   s.out / "figures" / f"ood_msp_{b}"), f"MSP histograms on {b}")
    return md


def long_tail(s: Section) -> list[str]:
    shots = s.data["long_tail_accuracy"]
    if shots.empty:
        return []
    md = ["## Long-tail: many-, medium- and few-shot classes", "",
          "Accuracy on the test samples of the seen classes of each group (grouped by their number of training "
          f"images, manifest `variants.long_tail.partition`), after the last experience ({s.seeds_note()}, in %); "
          "the figure shows every stage. The table `reports/data/long_tail_accuracy` has each stage.", ""]
    for b in s.benchmarks_with("long_tail_accuracy"):
        final = shots[(shots["benchmark"] == b) & (shots["train_exp"] == shots["train_exp"].max())]
        sizes = final.groupby("shot")["n_classes"].max()
        for protocol in ("class_il", "task_il"):
            rows = [{"Method": m, **{f"{sh.capitalize()} ({int(sizes.get(sh, 0))} cl.)": s.cell(b, m, protocol,
                                                                                                  f"{sh}_acc")
                                     for sh in ("many", "medium", "few")}} for m in s.methods]
            md += [f"### {md_text(b)}: {PROTOCOL_NAMES[protocol]}", ""]
            md += s.table(pd.DataFrame(rows), f"long_tail_{b}_{protocol}",
                          f"{b}, {PROTOCOL_NAMES[protocol]}: accuracy per shot group, {s.seeds_note()}")
        md += s.figure(fx.long_tail_figure(shots, b, s.methods, s.out / "figures" / f"long_tail_{b}"),
                       f"many/medium/few-shot accuracy over stages on {b}")
    return md


def memory(s: Section) -> list[str]:
    curve = s.data["memory_curve"]
    if curve.empty:
        return []
    md = ["## Accuracy vs memory", "",
          "Methods of one type run with several buffer sizes (`mem_size`); extra memory after the last experience "
          f"in MiB (2^20 bytes, counted as MEMO does; *{NOT_REPORTED}* when the method does not report it), "
          f"accuracies in % ({s.seeds_note()}).", ""]
    for b in s.benchmarks_with("memory_curve"):
        d = curve[curve["benchmark"] == b]
        rows = []
        for (t, size, method), g in d.groupby(["method_type", "mem_size", "method"], sort=True):
            row = {"Type": t, "Method": method, "mem_size": str(size),
                   "Extra memory (MiB)": _mib(g["extra_memory_mb"])}
            for protocol in ("class_il", "task_il"):
                p = g[g["protocol"] == protocol]
                for col, name in (("last_acc", "Last"), ("avg_acc", "Avg.")):
                    row[f"{name} {PROTOCOL_NAMES[protocol]} (%)"] = seed_cell(p[col])
            rows.append(row)
        md += [f"### {md_text(b)}", ""]
        md += s.table(pd.DataFrame(rows), f"memory_{b}", f"{b}: accuracy vs buffer size, {s.seeds_note()}")
        md += s.figure(fx.memory_figure(curve, b, s.out / "figures" / f"memory_curve_{b}"),
                       f"accuracy vs memory on {b}")
    return md


def _mib(values: pd.Series) -> str:
    """Mean of MiB values with 3 decimals; "not reported" when no run reports it."""
    v = values.dropna()
    return number(v.mean(), 3) if len(v) else NOT_REPORTED


def compute(s: Section) -> list[str]:
    comp = s.data["compute"]
    if comp.empty:
        return []
    ref = s.reference
    md = ["## Compute relative to the reference method", "",
          f"Per run, then {s.seeds_note()}: wall time per training experience, training throughput (samples × "
          "epochs per second), peak resident memory and peak GPU memory (`torch.cuda.max_memory_allocated`; – when "
          f"not trained on CUDA), and each as a ratio to {md_code(ref)} on the same benchmark and seed (×).", ""]
    if ref not in s.methods:
        md += [f"*Ratios omitted: the reference method {md_code(ref)} is not in this grid.*", ""]
    rows = []
    for b in s.grid.benchmarks:
        for m in s.methods:
            row = {"Benchmark": b, "Method": m, "s / exp.": s.cell(b, m, "any", "train_seconds_per_exp", 1, 2),
                   "samples / s": s.cell(b, m, "any", "samples_per_second", 1, 0),
                   "peak RSS (MiB)": s.cell(b, m, "any", "peak_rss_mb", 1, 0),
                   "peak GPU (MiB)": s.cell(b, m, "any", "peak_gpu_mb", 1, 0)}
            if ref in s.methods:
                row.update({"time ×": s.cell(b, m, "any", "rel_train_seconds", 1, 2),
                            "throughput ×": s.cell(b, m, "any", "rel_samples_per_second", 1, 2),
                            "RSS ×": s.cell(b, m, "any", "rel_peak_rss", 1, 2),
                            "GPU ×": s.cell(b, m, "any", "rel_peak_gpu", 1, 2)})
            rows.append(row)
    return md + s.table(pd.DataFrame(rows), "compute_relative", f"compute relative to {ref}, {s.seeds_note()}")


def feature_space(s: Section) -> list[str]:
    spec, tsne, conf = s.data["feature_spectrum"], s.data["tsne"], s.data["confusion"]
    if spec.empty and conf.empty:
        return []
    md = ["## Feature space", ""]
    if spec.empty:
        md += ["No run folder holds final features (`features.npy`, written by the train stage since the "
               "feature-space metrics exist): retrain to get the spectrum, effective rank and t-SNE. Confusion "
               "matrices are class-IL, after the last experience.", ""]
    else:
        md += ["Penultimate features of the final model on the clean test set. *Effective rank* (Roy & Vetterli "
               "2007): exp of the entropy of the normalised singular values of the centered feature matrix (1 = one "
               f"direction, at most the feature dimension), {s.seeds_note()}. The spectrum shows the covariance "
               f"eigenvalues; t-SNE (scikit-learn, random_state 0) uses at most {s.tsne_points()} samples of the "
               "first seed; confusion matrices are class-IL, after the last experience.", ""]
    if not spec.empty:
        dims = spec.groupby("benchmark")["component"].max() + 1
        rows = [{"Benchmark": b, "Feature dim.": str(int(dims[b])),
                 **{m: s.cell(b, m, "any", "effective_rank", 1, 1) for m in s.methods}}
                for b in s.benchmarks_with("feature_spectrum")]
        md += s.table(pd.DataFrame(rows), "effective_rank", f"effective rank of the final features, {s.seeds_note()}")
    for b in s.grid.benchmarks:
        parts: list[str] = []
        if b in set(spec["benchmark"]):
            parts += s.figure(fx.spectrum_figure(spec, b, s.methods, s.out / "figures" / f"feature_spectrum_{b}"),
                              f"feature covariance spectrum on {b}")
        if b in set(tsne["benchmark"]):
            parts += s.figure(fx.tsne_figure(tsne, b, s.methods, s.out / "figures" / f"tsne_{b}"), f"t-SNE on {b}")
        if b in set(conf["benchmark"]):
            parts += s.figure(fx.confusion_figure(conf, b, s.methods, s.out / "figures" / f"confusion_{b}"),
                              f"confusion matrices on {b}")
        if parts:
            md += [f"### {md_text(b)}", "", *parts]
    return md


COMPARED = [("class_il", "last_acc"), ("class_il", "avg_acc"), ("class_il", "forgetting"), ("class_il", "mce"),
            ("class_il", "few_acc"), ("any", "ood_auroc_msp")]


def comparisons(s: Section) -> list[str]:
    comp = s.data["comparisons"]
    ref = s.reference
    if comp.empty or ref not in s.methods:
        return []
    md = ["## Paired comparisons with the reference method", "",
          f"Per benchmark, each method minus {md_code(ref)} on the same seeds (Δ in percentage points, mean ± std "
          "over the n pairs); p-values of the two-sided paired t-test (scipy `ttest_1samp` on the differences) and of the "
          "two-sided exact Wilcoxon signed-rank test (zero differences dropped). With n < 6 pairs the Wilcoxon "
          "test cannot reach p < 0.05 (its smallest p is 2 / 2^n); – = undefined (n < 2, or all differences equal).",
          ""]
    rows = []
    for b in s.grid.benchmarks:
        for protocol, metric in COMPARED:
            for m in s.methods:
                if m == ref:
                    continue
                hit = comp[(comp["benchmark"] == b) & (comp["protocol"] == protocol) & (comp["metric"] == metric)
                           & (((comp["method_a"] == m) & (comp["method_b"] == ref))
                              | ((comp["method_a"] == ref) & (comp["method_b"] == m)))]
                if not len(hit):
                    continue
                h = hit.iloc[0]
                sign = 1.0 if h["method_a"] == m else -1.0
                rows.append({"Benchmark": b, "Metric": f"{metric} ({PROTOCOL_NAMES[protocol]})", "Method": m,
                             "Δ vs ref.": mean_std(sign * h["mean_diff"], h["std_diff"]), "n": str(h["n_pairs"]),
                             "p (t-test)": p_value(h["p_ttest"]), "p (Wilcoxon)": p_value(h["p_wilcoxon"])})
    if not rows:
        return []
    return md + s.table(pd.DataFrame(rows), "comparisons", f"paired differences to {ref} over seeds")


SECTIONS = [robustness, ood_detection, long_tail, memory, compute, feature_space, comparisons]


def plot_data(data: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """DVC plot tables: accuracy vs severity (0 = clean) and last accuracy vs buffer size, means over seeds."""
    cells = data["corruption_accuracy"]
    cells = cells[cells["train_exp"] == cells.groupby("run_id")["train_exp"].transform("max")]
    keys = ["benchmark", "method", "protocol"]
    sev = cells.groupby([*keys, "severity"], sort=True)["accuracy"].mean().reset_index()
    clean = cells.groupby(keys, sort=True)["clean_accuracy"].mean().reset_index().rename(
        columns={"clean_accuracy": "accuracy"}).assign(severity=0)
    sev = pd.concat([clean, sev], ignore_index=True).sort_values([*keys, "severity"], kind="stable")
    curve = data["memory_curve"]
    mem = curve.groupby(["benchmark", "method_type", "protocol", "mem_size"], sort=True)["last_acc"].mean()
    mem = mem.reset_index()
    out = {"robustness_severity.csv": sev, "memory_curve.csv": mem}
    return {name: df.reindex(columns=PLOTS[name]).round(6) for name, df in out.items()}


def read_extended_tables(data_dir: Path) -> dict[str, pd.DataFrame]:
    """Every extended table of ``data_dir`` (evaluate's output), schema-validated: read once per report."""
    return {name: read_table(data_dir / f"{name}.parquet", schema) for name, schema in TABLES.items()}


def metric_citations(data: dict[str, pd.DataFrame]) -> list[str]:
    """BibTeX keys of the metric papers whose tables have rows (robustness → ImageNet-C/mCE,
    OOD → MSP and energy scores, spectrum → effective rank, t-SNE, compute → MEMO counting)."""
    from clsuite.report.citations import METRIC_CITATIONS

    return [key for name, cites in METRIC_CITATIONS.items() if len(data[name]) for key in cites]


def extended_sections(grid: Grid, data: dict[str, pd.DataFrame], out: Path) -> list[str]:
    """Markdown lines of every extended section that has data (``data``: :func:`read_extended_tables`);
    writes their files under ``out``."""
    s = Section(grid, data, out)
    md: list[str] = []
    for section in SECTIONS:
        md += section(s)
    for name, df in plot_data(data).items():
        write_text(out / "plots" / name, tb.to_csv(df))
    return md


#: how the report names where a value is set (``settings.set_at``)
SET_AT_NAMES = {"benchmark": "benchmark", "method": "method", "method_benchmark": "method on this benchmark"}
#: the mark of a flagged value (a value used outside what it was published for, or without a source)
FLAG_MARK = "⚑"


def settings_section(grid: Grid, data_dir: Path, out: Path) -> list[str]:
    """The "Settings and provenance" section from ``settings.parquet`` (evaluate's
    :func:`clsuite.image.settings.settings_table`): per benchmark, the effective training settings
    and method hyperparameters of each method with their source, rows that agree on every column
    shared by the methods they hold; a flagged value is marked :data:`FLAG_MARK` with its reason."""
    path = data_dir / "settings.parquet"
    md = ["## Settings and provenance", ""]
    if not path.exists():
        return md + [f"No settings table in {md_code(data_dir.as_posix())}; rerun {md_code('dvc repro evaluate')}.", ""]
    df = read_table(path, SETTINGS)
    n_flag = int((df["flag"] != "").sum())
    md += ["The effective settings of every run (the benchmark's `train:` with `methods.<m>.train` and "
           "`methods.<m>.train_by_benchmark.<b>` on top; the method's hyperparameters) and where each value "
           "was published (`clsuite/catalogue/settings_provenance.yaml`) or tuned (`clsuite tune`, "
           "`clsuite/catalogue/tuned/`). "
           f"{FLAG_MARK} marks a value used on a dataset or buffer size other than the one it was published for, "
           f"or without a published source ({n_flag} of {len(df)} values); such numbers are not the published "
           "protocol's. Full table: `reports/data/settings.csv`.", ""]
    order = {m: i for i, m in enumerate(grid.methods)}
    cols = ["key", "value", "set_at", "source", "published_for", "published_buffer", "flag", "note"]
    for b in grid.benchmarks:
        part = df[df["benchmark"] == b]
        if part.empty:
            continue
        part = part.assign(published_buffer=part["published_buffer"].map(lambda v: "" if pd.isna(v) else str(int(v))))
        rows = []
        for values, g in part.groupby(cols, sort=False, dropna=False):
            methods = sorted(set(g["method"]), key=order.get)
            rec = dict(zip(cols, values))
            published = ", ".join(x for x in [rec["published_for"], rec["published_buffer"] and
                                              f"buffer {rec['published_buffer']}"] if x)
            rows.append({"Methods": ", ".join(methods), "Setting": rec["key"], "Value": rec["value"],
                         "Set at": SET_AT_NAMES[rec["set_at"]], "Source": rec["source"] or "-",
                         "Published for": published or "-",
                         "Flag": f"{FLAG_MARK} {rec['flag']}" if rec["flag"] else "",
                         "Note": rec["note"], "_first": min(order.get(m, 0) for m in methods)})
        table = pd.DataFrame(rows).sort_values(["_first"], kind="stable").drop(columns="_first")
        stem = f"settings_{b}"
        md += [f"### {md_text(b)}", "",
               tb.write_table(table, out / "tables" / stem, f"Settings and provenance on {b}", f"tab:settings-{b}"),
               "", f"LaTeX: [`tables/{stem}.tex`](tables/{stem}.tex) · CSV: [`tables/{stem}.csv`](tables/{stem}.csv)",
               ""]
    return md
