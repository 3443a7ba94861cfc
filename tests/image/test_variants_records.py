"""Prediction records of the variant sets: eval_set names, ids, labels, schema, metrics
that stay on the clean rows, and a short training run with variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clsuite.config import BenchmarkConfig, parse_params, read_params_raw
from clsuite.image.prepare import prepare_benchmark
from clsuite.data.sources import SOURCES
from clsuite.image.streams import load_prepared
from clsuite.core.errors import SchemaError
from clsuite.image.evaluate import run_metrics_from_records
from clsuite.core import matrix as acc
from clsuite.image.metrics import per_experience as pe
from clsuite.image.records import RunKey, predict_logits, read_records, records_after_experience, write_records
from clsuite.image.schemas import RECORDS
from clsuite.core.parquet import validate

REPO = Path(__file__).resolve().parents[2]
KEY = RunKey("tiny", "finetune", 0, "class_il")
CPU = torch.device("cpu")
VARIANTS = {"corruptions": {"names": ["gaussian_noise", "fog"], "severities": [2, 5], "max_per_class": 2},
            "ood": {"source": "animal_mnist", "max_samples": 25}}


def bench_raw(**variants) -> dict:
    return {"source": "mnist5k", "n_experiences": 5, "test_fraction": 0.25, "subsample_per_class": 24,
            "model": {"name": "mlp", "hidden_sizes": [32]}, "variants": variants,
            "train": {"epochs": 1, "batch_size": 10, "eval_batch_size": 64, "lr": 0.05}}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    raw, prepared = root / "raw", root / "prepared"
    for name in ("mnist5k", "animal_mnist"):
        SOURCES.get(name).fetch(raw / name)
    prepare_benchmark("tiny", BenchmarkConfig.model_validate(bench_raw(**VARIANTS)), raw, prepared)
    prepare_benchmark("tiny_last", BenchmarkConfig.model_validate(bench_raw(**VARIANTS, eval_stages="last")),
                      raw, prepared)
    return raw, prepared


@pytest.fixture(scope="module")
def bench(roots):
    return load_prepared(roots[1] / "tiny")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))


@pytest.fixture(scope="module")
def records(bench, model) -> pd.DataFrame:
    return records_after_experience(model, bench, KEY, 0, 64, CPU)


def test_records_hold_clean_corrupted_and_ood_sets(bench, records):
    sizes = records.groupby("eval_set").size().to_dict()
    corrupted = {f"c/{n}/{s}": 20 for n in ("gaussian_noise", "fog") for s in (2, 5)}  # 2 per class × 10
    assert sizes == {"clean": 60, "ood": 25, **corrupted}
    validate(records, RECORDS, "records")


def test_corrupted_rows_point_at_their_clean_sample(roots, bench, records):
    exp_of_class = bench.manifest.experience_of_class()
    c_src = np.load(roots[1] / "tiny" / "c_src.npy")
    for name in ("c/gaussian_noise/2", "c/fog/5"):
        r = records[records["eval_set"] == name].sort_values("sample_id")
        assert r["sample_id"].tolist() == sorted(set(c_src.tolist()))  # rows of the clean test split
        assert np.array_equal(r["y_true"].to_numpy(), bench.test.y[r["sample_id"].to_numpy()])
        assert r["eval_exp"].tolist() == [exp_of_class[int(y)] for y in r["y_true"]]


def test_ood_rows(bench, model, records):
    r = records[records["eval_set"] == "ood"].sort_values("sample_id")
    assert r["sample_id"].tolist() == list(range(25))
    assert (r["y_true"] == -1).all() and (r["eval_exp"] == -1).all()
    assert (r["y_pred_task"] == r["y_pred"]).all()  # no task is known for an OOD image
    logits = predict_logits(model, bench.eval_sets["ood"].x, 64, CPU)
    np.testing.assert_array_equal(r.filter(like="logit_").to_numpy(), logits)
    assert r["y_pred"].tolist() == logits.argmax(1).tolist()


def test_variant_logits_are_the_models_outputs_on_the_stored_images(bench, model, records):
    es = bench.eval_sets["c/fog/5"]
    logits = predict_logits(model, es.x, 64, CPU)
    r = records[records["eval_set"] == "c/fog/5"].set_index("sample_id").loc[es.sample_id]
    np.testing.assert_array_equal(r.filter(like="logit_").to_numpy(), logits)


def test_eval_stages_last_evaluates_variants_only_at_the_last_stage(roots, model):
    b = load_prepared(roots[1] / "tiny_last")
    assert set(records_after_experience(model, b, KEY, -1, 64, CPU)["eval_set"]) == {"clean"}
    assert set(records_after_experience(model, b, KEY, 3, 64, CPU)["eval_set"]) == {"clean"}
    last = records_after_experience(model, b, KEY, 4, 64, CPU)
    assert set(last["eval_set"]) == {"clean", "ood", "c/gaussian_noise/2", "c/gaussian_noise/5", "c/fog/2", "c/fog/5"}


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d.assign(y_true=d["y_true"].where(d["eval_set"] != "clean", -1)), "allowed only"),
    (lambda d: d.assign(eval_exp=d["eval_exp"].where(~d["eval_set"].str.startswith("c/"), -1)), "allowed only"),
    (lambda d: d.assign(y_true=d["y_true"].where(d["eval_set"] != "ood", 3)), "allowed only"),
    (lambda d: d.assign(eval_set=d["eval_set"].replace("ood", "noise")), "str_matches"),
    (lambda d: d.assign(eval_set=d["eval_set"].replace("c/fog/5", "c/fog/7")), "str_matches"),
    (lambda d: d.assign(y_true=d["y_true"].where(d.index != 0, -2)), "y_true"),
])
def test_schema_keeps_minus_one_to_ood_rows(records, mutate, fragment):
    with pytest.raises(SchemaError) as info:
        validate(mutate(records), RECORDS, "records")
    assert fragment in str(info.value)


def test_records_with_variants_round_trip(records, tmp_path):
    write_records(records, tmp_path, 0)
    back = read_records(tmp_path)
    assert len(back) == len(records) and set(back["eval_set"]) == set(records["eval_set"])


def _wrong_variant_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Make every non-clean prediction wrong, so any leak into a clean metric shows."""
    out = df.copy()
    variant = out["eval_set"] != "clean"
    n_classes = out.filter(like="logit_").shape[1]
    wrong = (out["y_true"].clip(lower=0) + 1) % n_classes
    out.loc[variant, "y_pred"] = wrong[variant]
    out.loc[variant, "y_pred_task"] = wrong[variant]
    return out


def test_accuracy_family_uses_only_clean_rows(bench, model):
    stages = [records_after_experience(model, bench, KEY, t, 64, CPU) for t in range(-1, 5)]
    full = _wrong_variant_rows(pd.concat(stages, ignore_index=True))
    clean = full[full["eval_set"] == "clean"].reset_index(drop=True)
    assert len(clean) < len(full)
    for protocol in ("class_il", "task_il"):
        pd.testing.assert_frame_equal(acc.accuracy_table(full, protocol), acc.accuracy_table(clean, protocol))
        pd.testing.assert_frame_equal(acc.stage_accuracy(full, protocol), acc.stage_accuracy(clean, protocol))
        pd.testing.assert_series_equal(pe.per_class_accuracy(full, 4, protocol), pe.per_class_accuracy(clean, 4, protocol))
        pd.testing.assert_series_equal(pe.within_task_disparity(full, protocol), pe.within_task_disparity(clean, protocol))
    for name, table in run_metrics_from_records(full).items():
        pd.testing.assert_frame_equal(table, run_metrics_from_records(clean)[name], obj=name)


def test_training_run_records_variant_sets_at_every_stage(roots, tmp_path):
    from clsuite.image.train import train_run

    raw = read_params_raw(REPO / "params.yaml")
    raw["benchmarks"]["tiny"] = bench_raw(**VARIANTS)
    raw["run"].update(benchmarks=["tiny"], methods=["finetune"], seeds=[0])
    params = parse_params(raw)
    run_dir = train_run(params, "tiny", "finetune", 0, roots[1], tmp_path)
    rec = read_records(run_dir)
    per_stage = rec.groupby("train_exp")["eval_set"].nunique()
    assert per_stage.to_dict() == {t: 6 for t in range(-1, 5)}  # clean + 4 corrupted + ood
    assert "accuracy on seen classes" in (run_dir / "log.txt").read_text()
    metrics = run_metrics_from_records(rec)["run_metrics"]
    assert set(metrics["metric"]) >= {"avg_acc", "last_acc", "forgetting"}
