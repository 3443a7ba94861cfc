"""Learning-rate schedules and per-experience epoch counts (``benchmarks.<b>.train``).

:func:`lr_factor` is a pure function of (schedule, epoch, epochs of the experience), checked
against torch's ``MultiStepLR`` / ``CosineAnnealingLR`` in tests/image/test_schedule.py.
:class:`EpochSchedule` applies it: before every training epoch it sets each parameter
group's learning rate to its base value times the factor. Written here rather than with
torch's schedulers because the schedule restarts at every experience (Mammoth and PyCIL
build a new scheduler per task), epochs differ between the first and later experiences, and
a run resumed in the middle of an experience must get the same rate from the epoch number
alone (the plugin keeps no state: the base rates are the optimizer's, saved with it).
"""

from __future__ import annotations

import math

from avalanche.training.plugins import SupervisedPlugin

from clsuite.image.config import ScheduleConfig, TrainConfig


def lr_factor(schedule: ScheduleConfig | None, epoch: int, n_epochs: int, first: bool = False) -> float:
    """The factor of the base learning rate during epoch ``epoch`` (0-based) of an experience
    of ``n_epochs`` epochs; ``first``: the run's first experience (``milestones_first``)."""
    if schedule is None:
        return 1.0
    w = schedule.warmup_epochs
    if epoch < w:
        return schedule.warmup_start + (1.0 - schedule.warmup_start) * epoch / w
    if schedule.kind == "multistep":
        milestones = schedule.milestones_first if first and schedule.milestones_first is not None else schedule.milestones
        return schedule.gamma ** sum(epoch >= m for m in milestones)
    if schedule.kind == "cosine":
        span = n_epochs - w
        if span <= 0:
            return 1.0
        m = schedule.min_factor
        return m + (1.0 - m) * (1.0 + math.cos(math.pi * (epoch - w) / span)) / 2.0
    return 1.0


class EpochSchedule(SupervisedPlugin):
    """Sets every parameter group's ``lr`` to ``initial_lr * lr_factor(...)`` before each
    training epoch. ``initial_lr`` is stored in the group the first time (as torch's
    schedulers do), so it is saved and restored with the optimizer's state dict."""

    stateless = True

    def __init__(self, train: TrainConfig) -> None:
        super().__init__()
        self.train = train

    def before_training_epoch(self, strategy, **kwargs) -> None:
        exp = strategy.clock.train_exp_counter
        factor = lr_factor(self.train.schedule, strategy.clock.train_exp_epochs, self.train.epochs_of(exp), exp == 0)
        for group in strategy.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor
