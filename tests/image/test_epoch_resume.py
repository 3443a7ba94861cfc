"""Epoch-level checkpoints (``run.checkpoint_every_epochs`` / ``_minutes``): a run interrupted in
the middle of a long experience resumes after its last saved epoch, with the records of an
uninterrupted run."""

from __future__ import annotations

import pandas as pd
import pytest

import clsuite.image.train as T
from clsuite.core.errors import ComponentError
from clsuite.image.config import TrainConfig
from clsuite.image.records import read_records
from clsuite.image.train import EPOCH_CHECKPOINT, train_run

from fakes.train import Crash


def _long(params, **run):
    bench = params.benchmark("smnist_smoke")
    train = TrainConfig.model_validate({**bench.train.model_dump(), "epochs": 4, "epochs_first": 2,
                                        "schedule": {"kind": "cosine"}, "augment": {"hflip": True}})
    return params.model_copy(update={"benchmarks": {**params.benchmarks,
                                                    "smnist_smoke": bench.model_copy(update={"train": train})},
                                     "run": params.run.model_copy(update=run)})


def _crash_in(monkeypatch, exp: int, epoch: int, iteration: int) -> None:
    """Raise Crash once, at that iteration of that epoch of that experience (0-based)."""
    real = T.ProgressPlugin.after_training_iteration
    fired = []

    def step(self, strategy, **kw):
        real(self, strategy, **kw)
        c = strategy.clock
        if not fired and (c.train_exp_counter, c.train_exp_epochs, c.train_epoch_iterations) == (exp, epoch, iteration):
            fired.append(1)
            raise Crash

    monkeypatch.setattr(T.ProgressPlugin, "after_training_iteration", step)


@pytest.mark.parametrize("method", ["replay", "der", "derpp", "ewc", "der_expandable", "lwf", "icarl", "joint", "er_sam",
                                    "mgser_sam", "finetune"])
def test_resume_inside_an_experience_gives_identical_records(params, data_roots, tmp_path, monkeypatch, method):
    _, prepared = data_roots
    p = _long(params, checkpoint_every_epochs=1)
    ref = read_records(train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "ref"))
    _crash_in(monkeypatch, exp=2, epoch=2, iteration=3)  # experience 3, in its third epoch
    with pytest.raises(ComponentError, match="Crash"):
        train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "cut")
    run_dir = tmp_path / "cut" / "smnist_smoke" / method / "seed0"
    assert (run_dir / EPOCH_CHECKPOINT).exists()
    train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "cut")
    log = (run_dir / "log.txt").read_text()
    assert "resuming from checkpoint after experience 2/5" in log
    assert "resuming experience 3 after epoch 2/4" in log
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)
    assert not (run_dir / EPOCH_CHECKPOINT).exists()  # removed once the experience's checkpoint covers it


def test_minutes_trigger_and_first_experience(params, data_roots, tmp_path, monkeypatch):
    """A crash inside the first experience (no experience checkpoint yet) resumes from the
    epoch checkpoint written by the minutes trigger."""
    _, prepared = data_roots
    p = _long(params, checkpoint_every_minutes=1e-6)
    ref = read_records(train_run(p, "smnist_smoke", "replay", 0, prepared, tmp_path / "ref"))
    _crash_in(monkeypatch, exp=0, epoch=1, iteration=2)
    with pytest.raises(ComponentError, match="Crash"):
        train_run(p, "smnist_smoke", "replay", 0, prepared, tmp_path / "cut")
    run_dir = train_run(p, "smnist_smoke", "replay", 0, prepared, tmp_path / "cut")
    assert "resuming experience 1 after epoch 1/2" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)


def test_epoch_checkpoint_of_another_configuration_is_refused(params, data_roots, tmp_path, monkeypatch):
    _, prepared = data_roots
    p = _long(params, checkpoint_every_epochs=1)
    _crash_in(monkeypatch, exp=1, epoch=2, iteration=1)
    with pytest.raises(ComponentError, match="Crash"):
        train_run(p, "smnist_smoke", "replay", 0, prepared, tmp_path)
    other = p.model_copy(update={"methods": {**p.methods, "replay": {"mem_size": 50, "batch_size_mem": 10}}})
    run_dir = train_run(other, "smnist_smoke", "replay", 0, prepared, tmp_path)
    assert "resuming experience" not in (run_dir / "log.txt").read_text()
    assert sorted(read_records(run_dir)["train_exp"].unique()) == [-1, 0, 1, 2, 3, 4]
