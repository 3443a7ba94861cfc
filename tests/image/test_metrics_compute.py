"""Compute relative to a reference, accuracy-vs-memory curves, paired comparisons over
seeds (against scipy), and the schemas of the extended tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clsuite.core.errors import SchemaError
from clsuite.image.metrics import compute as cp
from clsuite.core.aggregate import paired_comparisons, paired_test
from clsuite.image.grid_metrics import empty_table
from clsuite.image.schemas import COMPARISONS, COMPUTE, EXPERIENCES, EXTRA_RUN_METRICS, EXTRA_SUMMARY, MEMORY_CURVE
from clsuite.core.parquet import validate


def _exp(method: str, seed: int, secs: list[float], n: int = 100, rss: float = 500.0, gpu: float | None = None,
         extra: int = 0) -> list[dict]:
    return [{"run_id": f"b/{method}/seed{seed}", "benchmark": "b", "method": method, "seed": seed, "train_exp": k,
             "n_train_samples": n, "train_seconds": s, "eval_seconds": 0.1, "samples_per_second": n / s,
             "peak_rss_mb": rss + k, "peak_gpu_mb": np.nan if gpu is None else gpu + k, "model_bytes": 4000,
             "extra_memory_bytes": extra * (k + 1)} for k, s in enumerate(secs)]


def _experiences() -> pd.DataFrame:
    return pd.DataFrame(_exp("finetune", 0, [1.0, 3.0]) + _exp("replay", 0, [2.0, 6.0], rss=1000.0, extra=2**20)
                        + _exp("replay_small", 0, [1.5, 1.5], extra=2**19) + _exp("finetune", 1, [2.0, 2.0])
                        + _exp("replay", 1, [2.0, 2.0]))


def test_run_compute_and_relative_by_hand():
    e = _experiences()
    validate(e, EXPERIENCES, "experiences")
    runs = cp.run_compute(e).set_index("run_id")
    ft = runs.loc["b/finetune/seed0"]
    assert ft["train_seconds_per_exp"] == pytest.approx(2.0)
    assert ft["samples_per_second"] == pytest.approx(200 / 4.0)  # Σ samples / Σ seconds, not the mean of rates
    assert ft["peak_rss_mb"] == 501.0 and np.isnan(ft["peak_gpu_mb"])
    rel = cp.relative_to_reference(cp.run_compute(e), "finetune").set_index("run_id")
    validate(rel.reset_index()[list(COMPUTE.columns)], COMPUTE, "compute")
    r = rel.loc["b/replay/seed0"]
    assert r["rel_train_seconds"] == pytest.approx(4.0 / 2.0)  # same seed's finetune
    assert r["rel_samples_per_second"] == pytest.approx((200 / 8.0) / (200 / 4.0))
    assert r["rel_peak_rss"] == pytest.approx(1001.0 / 501.0)
    assert np.isnan(r["rel_peak_gpu"])  # no GPU numbers
    assert rel.loc["b/replay/seed1", "rel_train_seconds"] == pytest.approx(1.0)
    assert rel.loc["b/finetune/seed1", "rel_train_seconds"] == 1.0
    assert rel.loc["b/replay_small/seed0", "rel_train_seconds"] == pytest.approx(1.5 / 2.0)


def test_relative_is_null_without_the_reference():
    rel = cp.relative_to_reference(cp.run_compute(_experiences()), "joint")
    assert rel["rel_train_seconds"].isna().all() and (rel["reference_method"] == "joint").all()


def test_gpu_column_absent_in_old_tables():
    e = _experiences().drop(columns="peak_gpu_mb")
    validate(e, EXPERIENCES, "experiences")  # optional column
    assert cp.run_compute(e)["peak_gpu_mb"].isna().all()


def _run_metrics() -> pd.DataFrame:
    rows = []
    for method, seed, last, avg in [("finetune", 0, 0.2, 0.5), ("replay", 0, 0.6, 0.7), ("replay_small", 0, 0.4, 0.6)]:
        for protocol in ("class_il", "task_il"):
            for metric, v in (("last_acc", last), ("avg_acc", avg), ("bwt", -0.1)):
                rows.append({"run_id": f"b/{method}/seed{seed}", "benchmark": "b", "method": method, "seed": seed,
                             "protocol": protocol, "metric": metric, "value": v})
    return pd.DataFrame(rows)


def test_memory_curve_by_hand():
    sizes = {"replay": ("replay", 200), "replay_small": ("replay", 50), "der": ("der", 200)}  # der: one size only
    curve = cp.memory_curve(_run_metrics(), _experiences(), sizes)
    validate(curve, MEMORY_CURVE, "memory_curve")
    c = curve[curve["protocol"] == "class_il"]
    assert c["method"].tolist() == ["replay_small", "replay"]  # sorted by buffer size
    assert c["mem_size"].tolist() == [50, 200] and c["last_acc"].tolist() == [0.4, 0.6]
    assert c["extra_memory_mb"].tolist() == [pytest.approx(1.0), pytest.approx(2.0)]  # last experience, MiB
    assert cp.memory_curve(_run_metrics(), _experiences(), {"replay": ("replay", 200)}).empty


def test_paired_comparisons_against_scipy():
    a = np.array([0.61, 0.55, 0.70, 0.58, 0.66])
    b = np.array([0.50, 0.52, 0.61, 0.59, 0.60])
    rows = [{"run_id": f"x/{m}/seed{s}", "benchmark": "x", "method": m, "seed": s, "protocol": "class_il",
             "metric": "last_acc", "value": float(v)} for m, vals in (("finetune", b), ("replay", a))
            for s, v in enumerate(vals)]
    comp = paired_comparisons(pd.DataFrame(rows), ["replay", "finetune"])
    validate(comp, COMPARISONS, "comparisons")
    c = comp.iloc[0]
    assert (c["method_a"], c["method_b"], c["n_pairs"]) == ("replay", "finetune", 5)
    assert c["mean_diff"] == pytest.approx(np.mean(a - b))
    assert c["std_diff"] == pytest.approx(np.std(a - b, ddof=1))
    assert c["p_ttest"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert c["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    # with 5 pairs all positive except one, by hand: ranks of |d| = [.11,.03,.09,.01,.06] → W− = 1
    # exact two-sided p = 2 · P(W ≤ 1) = 2 · 2/32
    assert c["p_wilcoxon"] == pytest.approx(2 * 2 / 32)


def test_paired_test_edge_cases():
    p_t, p_w = paired_test(np.array([0.1]))
    assert np.isnan(p_t) and p_w == pytest.approx(1.0)  # one pair: no t-test; Wilcoxon p = 1
    p_t, p_w = paired_test(np.array([0.0, 0.0, 0.0]))
    assert np.isnan(p_t) and np.isnan(p_w)
    p_t, _ = paired_test(np.array([0.2, 0.2]))  # zero variance
    assert np.isnan(p_t)


def _extra(metric: str, value: float, protocol: str = "any") -> pd.DataFrame:
    return pd.DataFrame([{"run_id": "b/m/seed0", "benchmark": "b", "method": "m", "seed": 0, "protocol": protocol,
                          "metric": metric, "value": value}])


@pytest.mark.parametrize("metric, value", [("ood_auroc_msp", 0.7), ("ood_fpr95_my_score", 1.0), ("mce", 1.7),
                                           ("effective_rank", 12.5), ("corruption_relative_drop", -0.3)])
def test_extra_metrics_schema_accepts(metric, value):
    validate(_extra(metric, value), EXTRA_RUN_METRICS, "extra_run_metrics")


@pytest.mark.parametrize("metric, value, fragment", [
    ("ood_auroc_msp", 1.2, "outside the metric's range"), ("few_acc", -0.1, "outside the metric's range"),
    ("effective_rank", 0.5, "outside the metric's range"), ("accuracy_of_sorts", 0.5, "unknown metric name"),
])
def test_extra_metrics_schema_rejects(metric, value, fragment):
    with pytest.raises(SchemaError) as info:
        validate(_extra(metric, value), EXTRA_RUN_METRICS, "extra_run_metrics")
    assert fragment in str(info.value)


def test_empty_tables_match_their_schemas():
    for schema in (EXTRA_RUN_METRICS, EXTRA_SUMMARY, COMPARISONS, MEMORY_CURVE, COMPUTE):
        validate(empty_table(schema), schema, schema.name)


def test_extra_memory_not_reported_is_null_not_zero():
    """No plugin reports extra memory: null in experiences, NaN on the memory curve (the report
    shows "not reported"); finetune's 0 is its plugin's claim, not a default."""
    import torch

    from clsuite.methods import METHODS, MethodContext, NoExtraMemory
    from clsuite.image.train import ProgressPlugin, extra_memory_bytes

    model = torch.nn.Linear(2, 2)
    assert extra_memory_bytes([ProgressPlugin(1)], model) is None  # nobody reports it
    assert extra_memory_bytes([NoExtraMemory(), ProgressPlugin(1)], model) == 0
    spec = METHODS.get("finetune")
    ctx = MethodContext(0, 10, [[0, 1]], (1, 28, 28))
    assert extra_memory_bytes(list(spec.build(spec.config_cls(), ctx)), model) == 0

    e = _experiences()
    e.loc[e["method"] == "replay_small", "extra_memory_bytes"] = None
    e = validate(e, EXPERIENCES, "experiences")
    assert str(e["extra_memory_bytes"].dtype) == "Int64" and e["extra_memory_bytes"].isna().sum() == 2
    sizes = {"replay": ("replay", 200), "replay_small": ("replay", 50)}
    curve = validate(cp.memory_curve(_run_metrics(), e, sizes), MEMORY_CURVE, "memory_curve")
    c = curve[curve["protocol"] == "class_il"].set_index("method")["extra_memory_mb"]
    assert np.isnan(c["replay_small"]) and c["replay"] == pytest.approx(2.0)
    with pytest.raises(SchemaError, match="extra_memory_bytes"):
        validate(e.assign(extra_memory_bytes=-1), EXPERIENCES, "experiences")
