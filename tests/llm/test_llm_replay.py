"""Replay schedulers as plugins (clsuite/llm/replay.py): when they replay and how many,
with a stand-in strategy whose probe losses are set by the test."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from clsuite.llm.encode import Encoded
from clsuite.llm.mssr import ExpandingSchedule, MemoryState
from clsuite.llm.replay import FixedReplay, MSSRReplay, TriggeredReplay

B = 8


def _examples(task: int, n: int) -> list[Encoded]:
    return [Encoded((f"t{task}", str(i)), (1, 2), (-100, 2)) for i in range(n)]


class FakeStrategy:
    """What the replay plugins read: clock, experience, mb_examples, probe(), sample losses."""

    def __init__(self) -> None:
        self.clock = SimpleNamespace(train_iterations=0)
        self.probe_loss = 1.0
        self.probe_acc = 0.8
        self.mb_examples: list[Encoded] = []

    def probe(self, examples):
        n = len(examples)
        return np.full(n, self.probe_loss), np.full(n, self.probe_acc)

    def finish_task(self, plugin, task: int, n: int = 20) -> None:
        self.experience = SimpleNamespace(current_experience=task, examples=_examples(task, n))
        plugin.after_training_exp(self)

    def step(self, plugin) -> int:
        """One iteration: the number of replayed examples appended to a batch of B."""
        self.mb_examples = _examples(99, B)
        plugin.before_training_iteration(self)
        self.clock.train_iterations += 1
        return len(self.mb_examples) - B


def test_fixed_replay_every_interval_and_buffer_per_task():
    s, p = FakeStrategy(), FixedReplay(mem_per_task=5, seed=0, ratio=0.5, interval=2, batch_size=B)
    s.experience = SimpleNamespace(current_experience=0, examples=_examples(0, 20))
    p.before_training_exp(s)
    assert s.step(p) == 0  # empty buffer: nothing to replay
    s.finish_task(p, 0)
    s.finish_task(p, 1)
    assert len(p.buffer) == 10 and {e.key[0] for e in p.buffer} == {"t0", "t1"}
    p.before_training_exp(s)
    assert [s.step(p) for _ in range(6)] == [4, 0, 4, 0, 4, 0]  # round(0.5 * 8) every 2nd iteration


@pytest.mark.parametrize("metric", ["loss", "accuracy"])
def test_triggered_replay_turns_on_when_the_probe_degrades(metric):
    s = FakeStrategy()
    p = TriggeredReplay(mem_per_task=5, seed=0, ratio=0.25, batch_size=B, metric=metric, threshold=0.1,
                        check_every=2, probe_size=4)
    s.finish_task(p, 0)
    assert len(p.probe_idx) == 4 and p.baseline == (1.0 if metric == "loss" else 0.8)
    p.before_training_exp(s)
    assert [s.step(p) for _ in range(2)] == [0, 0]  # probe unchanged: off
    if metric == "loss":
        s.probe_loss = 1.2  # > (1 + 0.1) * 1.0
    else:
        s.probe_acc = 0.6  # < 0.8 - 0.1
    assert [s.step(p) for _ in range(4)] == [2, 2, 2, 2] and p.triggers == 2
    s.probe_loss, s.probe_acc = 1.05, 0.75  # within the threshold again: off at the next check
    assert [s.step(p) for _ in range(2)] == [0, 0]


def _mssr(variant: str) -> MSSRReplay:
    return MSSRReplay(mem_per_task=6, seed=0, batch_size=B, variant=variant, state=MemoryState(s0=10.0),
                      schedule=ExpandingSchedule(i0=1.0, growth=2.0, i_max=4.0), r0=0.5, r_min=0.125, t_r=4.0)


def test_mssr_full_follows_the_expanding_schedule_and_decaying_ratio():
    s, p = FakeStrategy(), _mssr("full")
    s.finish_task(p, 0)
    assert len(p.state) == 6 and p.state.loss.tolist() == [1.0] * 6  # initial losses from the probe
    p.before_training_exp(s)
    counts = [s.step(p) for _ in range(12)]
    # events at tau = 0, 1, 3, 7, 11 (intervals 1, 2, 4, 4); ratio 0.125 + 0.375 exp(-tau / 4)
    expected = {tau: max(1, round((0.125 + 0.375 * np.exp(-tau / 4)) * B)) for tau in (0, 1, 3, 7, 11)}
    assert counts == [expected.get(t, 0) for t in range(12)]


def test_mssr_sampler_replays_every_step_and_prefers_weak_memories():
    s, p = FakeStrategy(), _mssr("sampler")
    s.finish_task(p, 0)
    p.state.loss[:] = [0.1, 0.1, 0.1, 0.1, 0.1, 5.0]  # slot 5: the hardest sample
    p.before_training_exp(s)
    s.clock.train_iterations = 5
    picks = []
    for _ in range(50):
        assert s.step(p) == 4  # round(r0 * B) at every iteration
        picks += p.replay_idx.tolist()
    assert np.bincount(picks, minlength=6)[5] > np.bincount(picks, minlength=6)[:5].max()


def test_mssr_reviews_update_the_state_after_forward():
    import torch

    s, p = FakeStrategy(), _mssr("scheduler")
    s.finish_task(p, 0)
    p.before_training_exp(s)
    s.clock.train_iterations = 10
    s.mb_examples = _examples(99, B)
    p.before_training_iteration(s)
    k = len(p.replay_idx)
    s.sample_losses = torch.cat([torch.zeros(B), torch.full((k,), 3.0)])
    s.sample_acc = torch.zeros(B + k)
    p.after_forward(s)
    reviewed = np.unique(p.replay_idx)
    assert (p.state.reviews[reviewed] >= 1).all() and (p.state.last[reviewed] == 10).all()
    assert (p.state.loss[reviewed] > 1.0).all() and (p.state.stability[reviewed] > 10.0).all()
