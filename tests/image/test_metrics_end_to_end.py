"""End to end on tiny real runs (corrupted, OOD and long-tailed variants of a 2-experience
digits stream): train writes the final features and GPU column, evaluate writes every
extended table, and their numbers agree with independent computations on the records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from clsuite.config import parse_params, read_params_raw
from clsuite.image.prepare import prepare_benchmark
from clsuite.data.sources import SOURCES
from clsuite.image.evaluate import evaluate_grid
from clsuite.core.paths import run_dir_for
from clsuite.image.records import read_features, read_records
from clsuite.image.schemas import EXPERIENCES
from clsuite.core.parquet import read_table

REPO = Path(__file__).resolve().parents[2]
METHODS = ["finetune", "replay_small", "replay"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    from clsuite.image.train import train_run

    root = tmp_path_factory.mktemp("e2e")
    raw_root, prepared, runs = root / "raw", root / "prepared", root / "runs"
    for name in ("mnist5k", "animal_mnist"):
        SOURCES.get(name).fetch(raw_root / name)
    raw = read_params_raw(REPO / "params.yaml")
    raw["benchmarks"]["tiny"] = {
        "source": "mnist5k", "n_experiences": 2, "test_fraction": 0.25, "subsample_per_class": 16,
        "model": {"name": "mlp", "hidden_sizes": [16]},
        "train": {"epochs": 1, "batch_size": 10, "eval_batch_size": 256, "lr": 0.05},
        "variants": {"corruptions": {"names": ["gaussian_noise", "contrast"], "severities": [1, 5], "max_per_class": 2},
                     "ood": {"source": "animal_mnist", "max_samples": 20},
                     "long_tail": {"rho": 0.25, "split": "terciles"}},
    }
    raw["methods"]["replay_small"] = {"type": "replay", "mem_size": 10, "batch_size_mem": 10}
    raw["run"].update(benchmarks=["tiny"], methods=METHODS, seeds=[0])
    raw["metrics"].update(tsne_max_points=40, tsne_max_iter=250)
    params = parse_params(raw)
    prepare_benchmark("tiny", params.benchmark("tiny"), raw_root, prepared)
    for method in METHODS:
        train_run(params, "tiny", method, 0, prepared, runs)
    tables = evaluate_grid(params, runs, root / "data", root / "metrics", prepared)
    return params, runs, prepared, root, tables


def test_train_writes_final_features_and_gpu_column(grid):
    params, runs, prepared, _, _ = grid
    run_dir = run_dir_for(runs, "tiny", "replay", 0)
    feats, ids = read_features(run_dir)
    n_test = len(np.load(prepared / "tiny" / "test_y.npy"))
    assert feats.shape == (n_test, 16) and feats.dtype == np.float32
    np.testing.assert_array_equal(ids, np.arange(n_test))
    # the features are the penultimate layer: the final head maps them to the stored logits
    head = {k: v for k, v in torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"].items()
            if k.startswith("head.")}
    rec = read_records(run_dir)
    final = rec[(rec["eval_set"] == "clean") & (rec["train_exp"] == 1)].sort_values("sample_id")
    logits = feats[final["sample_id"].to_numpy()] @ head["head.weight"].numpy().T + head["head.bias"].numpy()
    np.testing.assert_allclose(logits, final.filter(like="logit_").to_numpy(), rtol=1e-4, atol=1e-4)
    exps = read_table(run_dir / "experiences.parquet", EXPERIENCES)
    assert exps["peak_gpu_mb"].isna().all()  # trained on the CPU


def test_extended_tables_agree_with_the_records(grid):
    params, runs, _, root, tables = grid
    rec = read_records(run_dir_for(runs, "tiny", "finetune", 0))
    last = rec[rec["train_exp"] == 1]
    extra = tables["extra_run_metrics"].set_index(["method", "protocol", "metric"])["value"]

    # OOD: MSP AUROC of the final stage against scikit-learn on the raw rows
    known = last[(last["eval_set"] == "clean")]["confidence"]
    ood = last[last["eval_set"] == "ood"]["confidence"]
    y = np.r_[np.ones(len(known)), np.zeros(len(ood))]
    assert extra[("finetune", "any", "ood_auroc_msp")] == pytest.approx(roc_auc_score(y, np.r_[known, ood]))

    # robustness: mean corruption accuracy by pandas on the corrupted rows (all 4 sets, same sizes)
    c = last[last["eval_set"].str.startswith("c/")]
    by_set = (c["y_pred"] == c["y_true"]).groupby(c["eval_set"]).mean()
    assert extra[("finetune", "class_il", "mean_corruption_acc")] == pytest.approx(by_set.mean())
    assert extra[("finetune", "class_il", "mce")] == pytest.approx(1.0)
    assert ("replay", "class_il", "mce") in extra.index

    # long tail: few-shot accuracy from the manifest's partition
    manifest = json.loads((grid[2] / "tiny" / "manifest.json").read_text())
    few = manifest["variants"]["long_tail"]["partition"]["few"]
    clean = last[(last["eval_set"] == "clean") & last["y_true"].isin(few)]
    assert extra[("finetune", "class_il", "few_acc")] == pytest.approx((clean["y_pred"] == clean["y_true"]).mean())

    # memory curve: the two replay buffer sizes
    curve = tables["memory_curve"]
    assert sorted(set(zip(curve["method"], curve["mem_size"]))) == [("replay", 200), ("replay_small", 10)]
    assert len(tables["tsne"]) == 3 * 40  # one run per method (first seed), capped at 40 points
    assert set(tables["confusion"].groupby("run_id")["count"].sum()) == {len(rec[(rec["eval_set"] == "clean")
                                                                               & (rec["train_exp"] == 1)])}
    extra = tables["extra_summary"].set_index(["benchmark", "method", "protocol", "metric"])["mean"]
    assert extra["tiny", "finetune", "class_il", "mce"] == 1.0


def test_every_extended_table_is_written_with_a_csv_copy(grid):
    root = grid[3]
    for name in ("corruption_accuracy", "robustness", "corruption_error", "long_tail_accuracy", "ood_detection",
                 "ood_histogram", "compute", "memory_curve", "feature_spectrum", "tsne", "confusion",
                 "extra_run_metrics", "extra_summary", "comparisons"):
        assert (root / "data" / f"{name}.parquet").exists() and (root / "data" / f"{name}.csv").exists(), name
        assert len(pd.read_parquet(root / "data" / f"{name}.parquet")), name


def test_tables_are_byte_identical_with_one_or_several_workers(grid, tmp_path, monkeypatch):
    """evaluate_runs in worker processes joins the rows in grid order: the same bytes as in-process."""
    params, runs, prepared, root, _ = grid
    digests = {}
    for workers in ("1", "3"):
        monkeypatch.setenv("CLSUITE_EVAL_WORKERS", workers)
        out = tmp_path / f"w{workers}"
        evaluate_grid(params, runs, out / "data", out / "metrics", prepared)
        digests[workers] = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert digests["1"].keys() == digests["3"].keys() and len(digests["1"]) > 20
    assert [k for k in digests["1"] if digests["1"][k] != digests["3"][k]] == []
