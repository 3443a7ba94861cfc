"""Replay schedulers as plugins: which stored examples join a minibatch, and when.

All share :class:`ReplayPlugin`: after each task, ``mem_per_task`` of its training examples
(a seeded sample) enter the buffer; in ``before_training_iteration`` a plugin may append
replayed examples to ``strategy.mb_examples`` (the loop collates them with the current
ones, so one optimizer step sees both). Subclasses decide *when* (``n_replay``) and
*which* (``select``).

- :class:`FixedReplay`: every ``interval`` iterations, ``round(ratio · B)`` uniform samples;
- :class:`TriggeredReplay`: every ``check_every`` iterations, probe a fixed subset of the
  buffer without a gradient; when its mean loss rose above ``(1 + threshold) ×`` the loss
  measured at the end of the previous task (``metric: loss``), or its answer-token accuracy
  fell more than ``threshold`` below it (``metric: accuracy``), replay ``round(ratio · B)``
  uniform samples at every iteration until the next check;
- :class:`MSSRReplay`: memory-strength-based spaced replay (:mod:`clsuite.llm.mssr`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from clsuite.llm.encode import Encoded
from clsuite.llm.mssr import ExpandingSchedule, MemoryState, replay_ratio


class ReplayPlugin:
    """Buffer + injection; subclasses implement ``n_replay`` and optionally ``select``/``observe``."""

    def __init__(self, mem_per_task: int, seed: int) -> None:
        self.mem_per_task, self.seed = mem_per_task, seed
        self.buffer: list[Encoded] = []
        self.rng = np.random.default_rng([seed, 7])
        self.replay_idx = np.zeros(0, dtype=np.int64)  # buffer slots replayed in the current minibatch
        self.task_start = 0  # clock.train_iterations when the current task started
        self.replayed = 0  # replayed examples so far (all tasks)

    # -- when / which ---------------------------------------------------------------
    def n_replay(self, strategy, tau: int) -> int:
        raise NotImplementedError

    def select(self, strategy, n: int) -> np.ndarray:
        return self.rng.integers(0, len(self.buffer), size=n)

    def observe(self, strategy, losses: np.ndarray, acc: np.ndarray) -> None:
        """Per-sample losses/accuracies of the replayed rows after the forward pass."""

    def on_new_samples(self, strategy, new: list[Encoded]) -> None:
        """Called after ``new`` entered the buffer (end of a task)."""

    # -- Avalanche callbacks ---------------------------------------------------------
    def before_training_exp(self, strategy) -> None:
        self.task_start = strategy.clock.train_iterations

    def before_training_iteration(self, strategy) -> None:
        self.replay_idx = np.zeros(0, dtype=np.int64)
        if not self.buffer:
            return
        n = self.n_replay(strategy, strategy.clock.train_iterations - self.task_start)
        if n <= 0:
            return
        self.replay_idx = np.asarray(self.select(strategy, n), dtype=np.int64)
        strategy.mb_examples = list(strategy.mb_examples) + [self.buffer[i] for i in self.replay_idx]
        self.replayed += len(self.replay_idx)

    def after_forward(self, strategy) -> None:
        k = len(self.replay_idx)
        if k:
            self.observe(strategy, strategy.sample_losses[-k:].detach().double().cpu().numpy(),
                         strategy.sample_acc[-k:].detach().double().cpu().numpy())

    def after_training_exp(self, strategy) -> None:
        examples = strategy.experience.examples
        rng = np.random.default_rng([self.seed, 11, strategy.experience.current_experience])
        keep = sorted(rng.choice(len(examples), size=min(self.mem_per_task, len(examples)), replace=False))
        new = [examples[i] for i in keep]
        self.buffer.extend(new)
        self.on_new_samples(strategy, new)

    # -- checkpointing ---------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain data only (checkpoints load with weights_only=True): examples as tuples."""
        return {"buffer": [(e.key, e.input_ids, e.labels) for e in self.buffer],
                "rng": self.rng.bit_generator.state, "replayed": self.replayed}

    def load_state_dict(self, state: dict) -> None:
        self.buffer = [Encoded(tuple(k), tuple(i), tuple(lab)) for k, i, lab in state["buffer"]]
        self.rng.bit_generator.state = state["rng"]
        self.replayed = int(state["replayed"])


def _count(ratio: float, batch_size: int) -> int:
    return max(1, int(round(ratio * batch_size)))


class FixedReplay(ReplayPlugin):
    def __init__(self, mem_per_task: int, seed: int, ratio: float, interval: int, batch_size: int) -> None:
        super().__init__(mem_per_task, seed)
        self.ratio, self.interval, self.batch_size = ratio, interval, batch_size

    def n_replay(self, strategy, tau: int) -> int:
        return _count(self.ratio, self.batch_size) if tau % self.interval == 0 else 0


class TriggeredReplay(ReplayPlugin):
    def __init__(self, mem_per_task: int, seed: int, ratio: float, batch_size: int, metric: str,
                 threshold: float, check_every: int, probe_size: int) -> None:
        super().__init__(mem_per_task, seed)
        self.ratio, self.batch_size, self.metric = ratio, batch_size, metric
        self.threshold, self.check_every, self.probe_size = threshold, check_every, probe_size
        self.probe_idx = np.zeros(0, dtype=np.int64)
        self.baseline = float("nan")
        self.active = False
        self.triggers = 0

    def _measure(self, strategy) -> float:
        loss, acc = strategy.probe([self.buffer[i] for i in self.probe_idx])
        return float((loss if self.metric == "loss" else acc).mean())

    def on_new_samples(self, strategy, new: list[Encoded]) -> None:
        rng = np.random.default_rng([self.seed, 13, strategy.experience.current_experience])
        self.probe_idx = np.sort(rng.choice(len(self.buffer), size=min(self.probe_size, len(self.buffer)),
                                            replace=False))
        self.baseline = self._measure(strategy)

    def n_replay(self, strategy, tau: int) -> int:
        if tau % self.check_every == 0:
            value = self._measure(strategy)
            if self.metric == "loss":
                self.active = value > (1.0 + self.threshold) * self.baseline
            else:
                self.active = value < self.baseline - self.threshold
            self.triggers += int(self.active)
        return _count(self.ratio, self.batch_size) if self.active else 0

    def state_dict(self) -> dict:
        return {**super().state_dict(), "probe_idx": self.probe_idx.tolist(), "baseline": float(self.baseline),
                "triggers": self.triggers}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.probe_idx, self.baseline = np.asarray(state["probe_idx"], dtype=np.int64), float(state["baseline"])
        self.triggers = int(state["triggers"])


class MSSRReplay(ReplayPlugin):
    """MSSR. ``variant``: ``full`` (spaced schedule + decaying ratio + strength sampling),
    ``sampler`` (every iteration at ratio r0, strength sampling) or ``scheduler`` (spaced
    schedule + decaying ratio, uniform sampling). The memory state is updated in every variant."""

    def __init__(self, mem_per_task: int, seed: int, batch_size: int, variant: str, state: MemoryState,
                 schedule: ExpandingSchedule, r0: float, r_min: float, t_r: float,
                 count: Callable[[float, int], int] | None = None) -> None:
        super().__init__(mem_per_task, seed)
        self.batch_size, self.variant, self.state, self.schedule = batch_size, variant, state, schedule
        self.r0, self.r_min, self.t_r = r0, r_min, t_r
        self.count = _count if count is None else count  # ratio, batch size -> replayed samples

    def before_training_exp(self, strategy) -> None:
        super().before_training_exp(strategy)
        self.schedule.reset()

    def n_replay(self, strategy, tau: int) -> int:
        if self.variant == "sampler":
            return self.count(self.r0, self.batch_size)
        if not self.schedule.due(tau):
            return 0
        return self.count(replay_ratio(tau, self.r0, self.r_min, self.t_r), self.batch_size)

    def select(self, strategy, n: int) -> np.ndarray:
        if self.variant == "scheduler":
            return super().select(strategy, n)
        p = self.state.probabilities(strategy.clock.train_iterations)
        return self.rng.choice(len(self.buffer), size=n, replace=True, p=p)

    def observe(self, strategy, losses: np.ndarray, acc: np.ndarray) -> None:
        self.state.review(self.replay_idx, losses, strategy.clock.train_iterations)

    def on_new_samples(self, strategy, new: list[Encoded]) -> None:
        losses, _ = strategy.probe(new)
        self.state.add(losses, strategy.clock.train_iterations)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "memory": self.state.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.state.load_state_dict(state["memory"])
        self.schedule.load_state_dict(state["schedule"])
