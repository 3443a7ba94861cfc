"""DivergenceGuard on a stand-in strategy: exact first non-finite iteration, host reads only
every ``every`` iterations and at epoch ends (deferred, as on an accelerator) or each loss at
once (the CPU default); failure_status names the plugin and hook."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from clsuite.core.errors import ComponentError, TrainingDiverged
from clsuite.image.guard import DivergenceGuard, failure_status


def fake_strategy(exp: int = 0):
    clock = SimpleNamespace(train_exp_counter=exp, train_iterations=0, train_exp_iterations=0)
    return SimpleNamespace(clock=clock, loss=torch.tensor(0.0), mb_output=torch.zeros(4, 10), plugins=[])


def run_epoch(guard: DivergenceGuard, strategy, losses: list[float]) -> None:
    guard.before_training_exp(strategy)
    for value in losses:
        strategy.loss = torch.tensor(value)
        guard.after_training_iteration(strategy)
        strategy.clock.train_iterations += 1
    guard.after_training_epoch(strategy)


@pytest.mark.parametrize("deferred", [True, None])  # None: the default, immediate for CPU losses
@pytest.mark.parametrize("bad_at, n_iter", [(0, 10), (75, 120), (49, 50), (50, 51), (119, 120)])
def test_reports_the_first_non_finite_iteration(bad_at, n_iter, deferred):
    guard = DivergenceGuard("b/m/seed0", "b", "m", n_classes=10, every=50, deferred=deferred)
    losses = [1.0] * n_iter
    losses[bad_at] = float("nan")
    losses[bad_at + 1:] = [float("inf")] * (n_iter - bad_at - 1)  # a diverged loss stays non-finite
    with pytest.raises(TrainingDiverged) as info:
        run_epoch(guard, fake_strategy(exp=2), losses)
    assert info.value.status == {"method": "m", "experience": 2, "iteration": bad_at}
    assert f"experience 3, iteration {bad_at + 1}" in str(info.value)
    assert "lower benchmarks.b.train.lr" in str(info.value)


def test_reads_the_flags_only_every_n_iterations_and_at_epoch_end(monkeypatch):
    guard = DivergenceGuard("b/m/seed0", "b", "m", n_classes=10, every=50, deferred=True)
    reads = []
    real = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: reads.append(len(self)) or real(self, *a, **k))
    run_epoch(guard, fake_strategy(), [0.5] * 120)  # finite: no error
    assert reads == [50, 50, 20]  # iterations 1-50, 51-100, then 101-120 at the epoch end


@pytest.mark.parametrize("deferred", [True, None])
def test_a_transient_non_finite_loss_is_still_caught(deferred):
    guard = DivergenceGuard("b/m/seed0", "b", "m", n_classes=10, every=50, deferred=deferred)
    losses = [1.0] * 60
    losses[7] = float("inf")  # finite again afterwards: only the stored flag remembers it
    with pytest.raises(TrainingDiverged) as info:
        run_epoch(guard, fake_strategy(), losses)
    assert info.value.status["iteration"] == 7


def test_a_cpu_loss_is_read_at_once_and_stops_the_run_at_its_iteration(monkeypatch):
    guard = DivergenceGuard("b/m/seed0", "b", "m", n_classes=10, every=50)
    reads = []
    real = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: reads.append(len(self)) or real(self, *a, **k))
    strategy = fake_strategy()
    guard.before_training_exp(strategy)
    for step, value in enumerate([0.5, 0.25, float("nan")]):
        strategy.loss = torch.tensor([value], requires_grad=True) * 1.0  # a graph's output, as in training
        if step < 2:
            guard.after_training_iteration(strategy)
    with pytest.raises(TrainingDiverged) as info:  # in the bad iteration itself, not at a later read
        guard.after_training_iteration(strategy)
    assert info.value.status["iteration"] == 2 and reads == [] and guard._flags is None


def test_output_of_the_wrong_width_is_a_component_error():
    guard = DivergenceGuard("b/m/seed0", "b", "m", n_classes=10)
    strategy = fake_strategy(exp=1)
    guard.after_forward(strategy)  # (4, 10): fine
    strategy.mb_output = torch.zeros(4, 7)
    with pytest.raises(ComponentError) as info:
        guard.after_forward(strategy)
    assert "shape (4, 7)" in str(info.value) and "10 classes" in str(info.value)
    assert info.value.status["hook"] == "after_forward" and info.value.status["experience"] == 1


class Exploding:
    def before_update(self, strategy, **kwargs):
        raise KeyError("momentum_buffer")


def test_failure_status_names_plugin_hook_and_iteration(tmp_path):
    strategy = fake_strategy(exp=3)
    plugin = Exploding()
    strategy.plugins = [plugin]
    with pytest.raises(ComponentError) as info:
        with failure_status(tmp_path, "b/m/seed0", "m", 3, strategy):
            strategy.clock.train_iterations += 4  # four iterations done, the fifth fails
            plugin.before_update(strategy)
    msg = str(info.value)
    assert "method 'm' failed in plugin Exploding.before_update" in msg
    assert "experience 4, iteration 5" in msg and "KeyError" in msg and "methods.m" in msg
    assert isinstance(info.value.__cause__, KeyError)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status == {"run_id": "b/m/seed0", "state": "failed", "finished_experiences": 3, "method": "m",
                      "experience": 3, "iteration": 4, "plugin": "Exploding", "hook": "before_update",
                      "reason": msg}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_failure_outside_any_plugin_says_so(tmp_path):
    strategy = fake_strategy()
    with pytest.raises(ComponentError, match=r"outside its plugins \(model, criterion or data\)"):
        with failure_status(tmp_path, "b/m/seed0", "m", 0, strategy):
            raise IndexError("Target 12 is out of bounds.")
    assert json.loads((tmp_path / "status.json").read_text())["plugin"] is None
