"""Metric metadata in one place (as torchmetrics' ``higher_is_better`` and friends): per metric a
label, a unit, a direction and the paper that defines it. Both reports take their column headers
from here (:func:`header`), and the scale of a cell from the unit (a ``%`` metric is stored as a
fraction and shown ×100)."""

from __future__ import annotations

from dataclasses import dataclass

from clsuite.core.errors import ReportError


@dataclass(frozen=True)
class MetricInfo:
    """How a report shows one metric."""

    label: str  #: column header without unit, e.g. "Last acc."
    unit: str = "%"  #: "%" (stored as a fraction), "s", "ms", "MiB", "ex/s", ... or "" (a count)
    higher_is_better: bool | None = True  #: None where neither direction is better
    citation: str | None = None  #: BibTeX key (clsuite.report.citations) of the defining paper

    @property
    def scale(self) -> float:
        """Factor from the stored value to the shown one (fractions → percent)."""
        return 100.0 if self.unit == "%" else 1.0

    @property
    def header(self) -> str:
        """``label (unit)``, or the label alone for a unitless count."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


_LOWER = False
METRICS: dict[str, MetricInfo] = {
    # image track: accuracy-matrix metrics (clsuite.core.matrix) and class fairness
    "last_acc": MetricInfo("Last acc."),
    "avg_acc": MetricInfo("Avg. acc."),
    "forgetting": MetricInfo("Forgetting", higher_is_better=_LOWER, citation="chaudhry2018riemannian"),
    "forgetting_mammoth": MetricInfo("Forgetting (Mammoth)", higher_is_better=_LOWER),
    "bwt": MetricInfo("BWT"),
    "fwt": MetricInfo("FWT"),
    "avalanche_forgetting": MetricInfo("Avalanche forg.", higher_is_better=_LOWER),
    "worst_class_acc": MetricInfo("Worst class"),
    "class_acc_std": MetricInfo("Class acc. std", higher_is_better=_LOWER),
    "class_acc_range": MetricInfo("Class acc. range", higher_is_better=_LOWER),
    "class_drift": MetricInfo("Class drift", higher_is_better=_LOWER, citation="liu2025braincl"),
    "drifted_pairs": MetricInfo("Drifted pairs", higher_is_better=_LOWER, citation="liu2025braincl"),
    # image track: robustness to corruptions
    "corruption_clean_acc": MetricInfo("Clean"),
    "mean_corruption_acc": MetricInfo("Mean corr.", citation="hendrycks2019imagenetc"),
    "corruption_relative_drop": MetricInfo("Rel. drop", higher_is_better=_LOWER, citation="hendrycks2019imagenetc"),
    "mce": MetricInfo("mCE", higher_is_better=_LOWER, citation="hendrycks2019imagenetc"),
    "relative_mce": MetricInfo("Relative mCE", higher_is_better=_LOWER, citation="hendrycks2019imagenetc"),
    # image track: OOD detection (clsuite.image.metrics.ood), stored per score as ood_<key>_<score>.
    # "(ID+)": in-distribution samples are the positive class (Hendrycks & Gimpel 2017);
    # "(OOD+)": OOD samples are the positive class (OpenOOD v1.5). AUROC is the same under both.
    "auroc": MetricInfo("AUROC (ID+ = OOD+)", citation="hendrycks2017msp"),
    "aupr_in": MetricInfo("AUPR-In (ID+)", citation="hendrycks2017msp"),
    "aupr_out": MetricInfo("AUPR-Out (OOD+)", citation="hendrycks2017msp"),
    "fpr95": MetricInfo("FPR@95TPR (ID+)", higher_is_better=_LOWER, citation="hendrycks2017msp"),
    "fpr95_out": MetricInfo("FPR@95TPR (OOD+)", higher_is_better=_LOWER),
    "effective_rank": MetricInfo("Effective rank", unit="", higher_is_better=None, citation="roy2007erank"),
    # LLM track (clsuite.llm.metrics): scores after the last task, forgetting, held-out task
    "final_score": MetricInfo("Final score"),
    "avg_forgetting": MetricInfo("Avg. forgetting", higher_is_better=_LOWER),
    "avg_learning": MetricInfo("Avg. learning"),
    "avg_normalised_score": MetricInfo("Avg. normalised score"),
    "final_exact_match": MetricInfo("EM"),
    "final_f1": MetricInfo("F1", citation="rajpurkar2016squad"),
    "final_rouge_l": MetricInfo("ROUGE-L"),
    "final_bleu": MetricInfo("BLEU"),
    "final_task_score": MetricInfo("Task scorer", citation="stojanovski2025reasoninggym"),
    "heldout_initial": MetricInfo("Held-out before"),
    "heldout_final": MetricInfo("Held-out after"),
    "heldout_change": MetricInfo("Held-out change"),
    # cost (LLM track; the image track's compute tables name their own columns)
    "train_seconds": MetricInfo("Train time", unit="s", higher_is_better=_LOWER),
    "step_ms_mean": MetricInfo("Step latency", unit="ms", higher_is_better=_LOWER),
    "examples_per_s": MetricInfo("Throughput", unit="ex/s"),
    "peak_rss_mb": MetricInfo("Peak RSS", unit="MiB", higher_is_better=_LOWER),
    "replayed_examples": MetricInfo("Replayed examples", unit="", higher_is_better=None),
}


def metric_info(key: str) -> MetricInfo:
    """The metadata of metric ``key``; a :class:`ReportError` naming the fix for an unknown one."""
    try:
        return METRICS[key]
    except KeyError:
        raise ReportError(f"metric {key!r} has no report metadata: add a MetricInfo for it to "
                          "clsuite.report.metric_info.METRICS (label, unit, direction, citation)") from None


def header(key: str) -> str:
    """Column header of metric ``key``: ``label (unit)``."""
    return metric_info(key).header
