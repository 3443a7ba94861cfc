"""Same params + seed → identical prediction records on CPU; different seeds differ."""

from __future__ import annotations

import pandas as pd
import pytest

from clsuite.image.records import read_records
from clsuite.image.train import train_run


@pytest.mark.parametrize("method", ["replay", "ewc", "joint"])
def test_same_seed_identical_records(params, data_roots, tmp_path, method):
    _, prepared = data_roots
    a = read_records(train_run(params, "smnist_smoke", method, 3, prepared, tmp_path / "a"))
    b = read_records(train_run(params, "smnist_smoke", method, 3, prepared, tmp_path / "b"))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert set(a["train_exp"]) == {-1, 0, 1, 2, 3, 4}
    assert len(a) == 6 * 150  # every test sample at every stage (incl. the untrained model)


def test_different_seed_different_records(params, data_roots, tmp_path):
    _, prepared = data_roots
    a = read_records(train_run(params, "smnist_smoke", "finetune", 0, prepared, tmp_path / "a"))
    b = read_records(train_run(params, "smnist_smoke", "finetune", 1, prepared, tmp_path / "b"))
    assert not a.filter(like="logit_").equals(b.filter(like="logit_"))


def test_run_folder_contents(params, data_roots, tmp_path):
    import json

    _, prepared = data_roots
    run_dir = train_run(params, "smnist_smoke", "finetune", 0, prepared, tmp_path)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["finished_experiences"] == 5
    log = (run_dir / "log.txt").read_text()
    assert "experience 5/5" in log and "finished smnist_smoke/finetune/seed0" in log
    assert sorted(p.name for p in (run_dir / "records").iterdir()) == [f"train_exp_{k}.parquet" for k in range(-1, 5)]


def test_run_threads_pins_torch_threads_and_is_part_of_the_checkpoint_fingerprint(params, data_roots, tmp_path):
    """run.threads sets torch's intra-op threads for the run (logged); a checkpoint written
    with another thread count is not resumed (its records could differ in the last bits)."""
    import torch

    _, prepared = data_roots
    before = torch.get_num_threads()
    with_threads = lambda k: params.model_copy(update={"run": params.run.model_copy(update={"threads": k})})  # noqa: E731
    try:
        run_dir = train_run(with_threads(1), "smnist_smoke", "finetune", 0, prepared, tmp_path)
        assert torch.get_num_threads() == 1
        assert "torch intra-op threads: 1" in (run_dir / "log.txt").read_text()
        train_run(with_threads(1), "smnist_smoke", "finetune", 0, prepared, tmp_path)  # same: resumes
        assert (run_dir / "log.txt").read_text().count("resuming from checkpoint") == 1
        train_run(with_threads(2), "smnist_smoke", "finetune", 0, prepared, tmp_path)  # other count: starts over
        log = (run_dir / "log.txt").read_text()
        assert "torch intra-op threads: 2" in log and log.count("resuming from checkpoint") == 1
    finally:
        torch.set_num_threads(before)
