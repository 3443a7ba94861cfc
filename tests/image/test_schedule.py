"""Learning-rate schedules and first/later epoch counts (clsuite/image/schedule.py), checked
against torch's own schedulers and hand-computed values."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from clsuite.image.config import ScheduleConfig, TrainConfig
from clsuite.image.records import read_records
from clsuite.image.schedule import lr_factor
import clsuite.image.train as T
from clsuite.image.train import train_run


def _torch_factors(make_scheduler, n_epochs: int) -> list[float]:
    """The lr factor of each epoch under a torch scheduler stepped once per epoch."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make_scheduler(opt)
    out = []
    for _ in range(n_epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_multistep_equals_torch_multisteplr():
    cfg = ScheduleConfig(kind="multistep", milestones=[35, 45], gamma=0.1)
    ref = _torch_factors(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [35, 45], 0.1), 50)
    assert [lr_factor(cfg, e, 50) for e in range(50)] == pytest.approx(ref, rel=1e-12)
    assert lr_factor(cfg, 34, 50) == 1.0 and lr_factor(cfg, 35, 50) == pytest.approx(0.1)


def test_cosine_equals_torch_cosineannealinglr():
    cfg = ScheduleConfig(kind="cosine", min_factor=0.01)
    ref = _torch_factors(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=0.01), 20)
    assert [lr_factor(cfg, e, 20) for e in range(20)] == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_warmup_then_cosine_by_hand():
    cfg = ScheduleConfig(kind="cosine", warmup_epochs=4, warmup_start=0.2)
    assert [lr_factor(cfg, e, 10) for e in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    # after warm-up: cosine over the 6 remaining epochs, from 1
    assert lr_factor(cfg, 4, 10) == 1.0
    assert lr_factor(cfg, 7, 10) == pytest.approx((1 + math.cos(math.pi * 3 / 6)) / 2)


def test_first_experience_milestones_and_epochs():
    cfg = ScheduleConfig(kind="multistep", milestones=[80, 120], milestones_first=[60, 120, 170])
    assert lr_factor(cfg, 100, 200, first=True) == pytest.approx(0.1)
    assert lr_factor(cfg, 130, 200, first=True) == pytest.approx(0.01)
    assert lr_factor(cfg, 100, 170, first=False) == pytest.approx(0.1)
    train = TrainConfig(epochs=70, epochs_first=200)
    assert [train.epochs_of(k) for k in range(3)] == [200, 70, 70]
    assert TrainConfig(epochs=3).epochs_of(0) == 3


@pytest.mark.parametrize("bad", [
    {"kind": "multistep"},                                # no milestones
    {"kind": "multistep", "milestones": [45, 35]},        # not increasing
    {"kind": "cosine", "milestones": [3]},                # milestones on another kind
    {"kind": "step"},                                     # unknown kind
])
def test_bad_schedules_fail(bad):
    with pytest.raises(ValidationError):
        ScheduleConfig.model_validate(bad)


def test_a_run_follows_the_schedule_and_epoch_counts(params, data_roots, tmp_path, monkeypatch):
    """A real run: 3 epochs in the first experience, 2 later, lr halved after one epoch."""
    _, prepared = data_roots
    bench = params.benchmark("smnist_smoke")
    train = TrainConfig.model_validate({**bench.train.model_dump(), "epochs": 2, "epochs_first": 3,
                                        "schedule": {"kind": "multistep", "milestones": [1], "gamma": 0.5}})
    p = params.model_copy(update={"benchmarks": {**params.benchmarks,
                                                 "smnist_smoke": bench.model_copy(update={"train": train})}})
    seen: list = []

    def probe(self, strategy, **kw):  # (experience, epoch, lr) at the first iteration of every epoch
        c = strategy.clock
        if c.train_epoch_iterations == 0:
            seen.append((c.train_exp_counter, c.train_exp_epochs, strategy.optimizer.param_groups[0]["lr"]))

    monkeypatch.setattr(T.ProgressPlugin, "before_training_iteration", probe, raising=False)
    run_dir = train_run(p, "smnist_smoke", "finetune", 0, prepared, tmp_path)
    lr = bench.train.lr
    expected = [(0, 0, lr), (0, 1, lr / 2), (0, 2, lr / 2)] + [x for k in range(1, 5) for x in ((k, 0, lr), (k, 1, lr / 2))]
    assert seen == expected
    assert sorted(read_records(run_dir)["train_exp"].unique()) == [-1, 0, 1, 2, 3, 4]
    table = pd.read_parquet(run_dir / "experiences.parquet")  # samples seen = rows x that experience's epochs
    assert table["n_train_samples"].iloc[0] % 3 == 0 and (table["n_train_samples"].iloc[1:] % 2 == 0).all()
