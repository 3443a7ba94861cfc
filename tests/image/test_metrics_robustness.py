"""Robustness metrics (accuracy per corruption and severity, relative drop, mCE) against
hand-computed record tables, and the robustness tables built for a grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clsuite.image.metrics import robustness as rb

REPO = Path(__file__).resolve().parents[2]

COLS = ["train_exp", "eval_exp", "eval_set", "sample_id", "y_true", "y_pred", "y_pred_task"]


def _records(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLS)


def _method_records() -> pd.DataFrame:
    """Stage 0 of a 2-experience stream. Experience 0: samples 0-3 (classes 0/1); only 0 and 1
    have corrupted copies. Sample 4 (class 2) belongs to the unseen experience 1."""
    return _records([
        (-1, 0, "clean", 0, 0, 1, 1), (-1, 0, "c/fog/1", 0, 0, 0, 0),  # untrained stage: ignored
        (0, 0, "clean", 0, 0, 0, 0), (0, 0, "clean", 1, 1, 1, 1),
        (0, 0, "clean", 2, 0, 1, 0), (0, 0, "clean", 3, 1, 1, 1),
        (0, 1, "clean", 4, 2, 0, 3),
        (0, 0, "c/fog/1", 0, 0, 0, 0), (0, 0, "c/fog/1", 1, 1, 0, 1),     # 1 of 2 right (class-IL)
        (0, 0, "c/fog/3", 0, 0, 1, 0), (0, 0, "c/fog/3", 1, 1, 0, 1),     # 0 of 2 (task-IL: 2 of 2)
        (0, 0, "c/gaussian_noise/1", 0, 0, 0, 0), (0, 0, "c/gaussian_noise/1", 1, 1, 1, 1),  # 2 of 2
        (0, 1, "c/fog/1", 4, 2, 2, 2),  # unseen experience at stage 0: ignored
        (0, -1, "ood", 0, -1, 0, 0),
    ])


def test_corruption_accuracy_by_hand():
    cells = rb.corruption_accuracy(_method_records(), "class_il")
    got = {(r.corruption, r.severity): (r.accuracy, r.clean_accuracy, r.n_samples) for r in cells.itertuples()}
    # the clean rows of samples 0 and 1 are both right, although the clean accuracy of
    # experience 0 as a whole is 3/4: the clean reference uses the same images only
    assert got == {("fog", 1): (0.5, 1.0, 2), ("fog", 3): (0.0, 1.0, 2), ("gaussian_noise", 1): (1.0, 1.0, 2)}
    assert set(cells["train_exp"]) == {0}


def test_task_il_uses_the_task_prediction():
    cells = rb.corruption_accuracy(_method_records(), "task_il").set_index(["corruption", "severity"])
    assert cells.loc[("fog", 3), "accuracy"] == 1.0 and cells.loc[("fog", 1), "accuracy"] == 1.0


def test_robustness_per_experience_by_hand():
    rec = _method_records()
    cells = rb.corruption_accuracy(rec, "class_il")
    clean = rb.clean_accuracy_on_corrupted_images(rec, "class_il")
    assert clean.to_dict() == {0: 1.0}
    st = rb.robustness_per_experience(cells, clean).iloc[0]
    assert st["mean_corruption_accuracy"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert st["relative_drop"] == pytest.approx(1 - 0.5 / 1.0)


def test_relative_drop_is_undefined_when_clean_accuracy_is_zero():
    cells = pd.DataFrame({"train_exp": [0], "corruption": ["fog"], "severity": [1], "accuracy": [0.5],
                          "clean_accuracy": [0.0], "n_samples": [2]})
    assert np.isnan(rb.robustness_per_experience(cells, pd.Series({0: 0.0}))["relative_drop"].iat[0])


def test_corrupted_row_without_its_clean_row_is_an_error():
    rec = _method_records()
    rec = rec[~((rec["eval_set"] == "clean") & (rec["sample_id"] == 1))]
    with pytest.raises(ValueError, match="without their clean image"):
        rb.corruption_accuracy(rec, "class_il")


def test_no_corrupted_rows_gives_an_empty_table():
    rec = _method_records()
    cells = rb.corruption_accuracy(rec[~rec["eval_set"].str.startswith("c/")], "class_il")
    assert cells.empty and list(cells.columns) == list(rb.CELL_DTYPES)


def _cells(acc: dict[tuple[str, int], float], stage: int = 0) -> pd.DataFrame:
    return pd.DataFrame([{"train_exp": stage, "corruption": c, "severity": s, "accuracy": a, "clean_accuracy": 1.0,
                          "n_samples": 10} for (c, s), a in acc.items()])


def test_mce_hand_worked_example():
    # method errors  fog: 1−0.5 + 1−0.0 = 1.5   noise: 0 + 1−0.8 = 0.2
    # reference      fog: 1−0.5 + 1−0.5 = 1.0   noise: 1−0.5 + 1−0.5 = 1.0
    # CE_fog = 1.5, CE_noise = 0.2, mCE = 0.85
    method = _cells({("fog", 1): 0.5, ("fog", 3): 0.0, ("noise", 1): 1.0, ("noise", 3): 0.8})
    ref = _cells({("fog", 1): 0.5, ("fog", 3): 0.5, ("noise", 1): 0.5, ("noise", 3): 0.5})
    ce = rb.corruption_errors(method, ref).set_index("corruption")
    assert ce.loc["fog", "error_sum"] == pytest.approx(1.5)
    assert ce.loc["fog", "reference_error_sum"] == pytest.approx(1.0)
    assert ce["ce"].to_dict() == {"fog": pytest.approx(1.5), "noise": pytest.approx(0.2)}
    assert rb.mean_corruption_error(ce.reset_index()).to_dict() == {0: pytest.approx(0.85)}
    # the reference against itself scores 1 on every corruption
    assert rb.mean_corruption_error(rb.corruption_errors(ref, ref)).to_dict() == {0: pytest.approx(1.0)}


def test_mce_is_undefined_when_the_reference_makes_no_error():
    method = _cells({("fog", 1): 0.5, ("noise", 1): 0.5})
    ref = _cells({("fog", 1): 1.0, ("noise", 1): 0.5})
    ce = rb.corruption_errors(method, ref)
    assert np.isnan(ce.set_index("corruption").loc["fog", "ce"])
    assert np.isnan(rb.mean_corruption_error(ce).iat[0])


def test_mce_counts_only_cells_both_runs_have():
    method = _cells({("fog", 1): 0.5, ("fog", 5): 0.0})
    ref = _cells({("fog", 1): 0.0})
    ce = rb.corruption_errors(method, ref)
    assert ce["ce"].tolist() == [pytest.approx(0.5 / 1.0)]


def _cells_with_clean(acc: dict[tuple[str, int], tuple[float, float]], stage: int = 0) -> pd.DataFrame:
    """(corruption, severity) → (corrupted accuracy, clean accuracy on the same images)."""
    return pd.DataFrame([{"train_exp": stage, "corruption": c, "severity": s, "accuracy": a, "clean_accuracy": ca,
                          "n_samples": 10} for (c, s), (a, ca) in acc.items()])


def test_relative_mce_hand_worked_example():
    # Hendrycks & Dietterich 2019: relative CE_c = Σ_s (E_{s,c} − E_clean) / Σ_s (E^ref_{s,c} − E^ref_clean)
    # method: clean acc 0.9 (E_clean 0.1); fog acc 0.7, 0.5 (E 0.3, 0.5); noise acc 0.9, 0.8 (E 0.1, 0.2)
    # reference: clean acc 0.6 (E_clean 0.4); fog acc 0.4, 0.2 (E 0.6, 0.8); noise acc 0.5, 0.5 (E 0.5, 0.5)
    # fog:   (0.2 + 0.4) / (0.2 + 0.4) = 1.0      noise: (0.0 + 0.1) / (0.1 + 0.1) = 0.5
    # relative mCE = 0.75; plain CE: fog 0.8 / 1.4, noise 0.3 / 1.0 ⇒ mCE = (4/7 + 0.3) / 2
    method = _cells_with_clean({("fog", 1): (0.7, 0.9), ("fog", 3): (0.5, 0.9),
                                ("noise", 1): (0.9, 0.9), ("noise", 3): (0.8, 0.9)})
    ref = _cells_with_clean({("fog", 1): (0.4, 0.6), ("fog", 3): (0.2, 0.6),
                             ("noise", 1): (0.5, 0.6), ("noise", 3): (0.5, 0.6)})
    ce = rb.corruption_errors(method, ref)
    by_c = ce.set_index("corruption")
    assert by_c.loc["fog", "degradation_sum"] == pytest.approx(0.6)
    assert by_c.loc["noise", "reference_degradation_sum"] == pytest.approx(0.2)
    assert by_c["relative_ce"].to_dict() == {"fog": pytest.approx(1.0), "noise": pytest.approx(0.5)}
    assert rb.mean_corruption_error(ce, "relative_ce").to_dict() == {0: pytest.approx(0.75)}
    assert rb.mean_corruption_error(ce).to_dict() == {0: pytest.approx((0.8 / 1.4 + 0.3) / 2)}
    # the reference against itself: relative mCE 1
    assert rb.mean_corruption_error(rb.corruption_errors(ref, ref), "relative_ce").to_dict() == {
        0: pytest.approx(1.0)}


def test_relative_mce_is_undefined_when_the_reference_does_not_degrade():
    # the reference is as accurate corrupted as clean on fog: no degradation to compare with
    method = _cells_with_clean({("fog", 1): (0.5, 0.9), ("noise", 1): (0.95, 0.9)})
    ref = _cells_with_clean({("fog", 1): (0.6, 0.6), ("noise", 1): (0.4, 0.6)})
    ce = rb.corruption_errors(method, ref).set_index("corruption")
    assert np.isnan(ce.loc["fog", "relative_ce"])
    assert ce.loc["noise", "relative_ce"] == pytest.approx(-0.05 / 0.2)  # corruption helped: negative
    assert np.isnan(rb.mean_corruption_error(ce.reset_index(), "relative_ce").iat[0])


def test_evaluate_names_the_run_folder_of_inconsistent_records(tmp_path):
    from clsuite.config import load_params
    from clsuite.core.errors import DataError
    from clsuite.image.grid_metrics import GridMetrics

    rec = _method_records()
    rec = rec[~((rec["eval_set"] == "clean") & (rec["sample_id"] == 1))]
    ext = GridMetrics(load_params(REPO / "params.yaml", check_components=False))
    keys = {"run_id": "smnist/finetune/seed0", "benchmark": "smnist", "method": "finetune", "seed": 0}
    with pytest.raises(DataError, match=f"{tmp_path}: corrupted rows without their clean image"):
        ext.add_run(rec, tmp_path, keys)
