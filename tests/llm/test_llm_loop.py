"""The LLM loop calls plugin callbacks in Avalanche's SupervisedTemplate order, and the
strategy exposes what Avalanche plugins read. The reference order is recorded from a real
Avalanche ``Naive`` strategy on a toy tensor stream with the same number of iterations."""

from __future__ import annotations

import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.supervised import Naive

from clsuite.llm.encode import Encoded
from clsuite.llm.loop import LLMStrategy, TextExperience

HOOKS = sorted(n for n in dir(SupervisedPlugin) if n.startswith(("before_", "after_")))


class Recorder(SupervisedPlugin):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.seen: dict[str, object] = {}


def _make_hook(name):
    def hook(self, strategy, *args, **kwargs):
        self.calls.append(name)
        if name == "before_update":
            self.seen.update(model=strategy.model, optimizer=strategy.optimizer, mb_x=strategy.mb_x,
                             loss=float(strategy.loss.detach()), exp=strategy.experience.current_experience,
                             iters=strategy.clock.train_iterations, device=strategy.device)
    return hook


for _h in HOOKS:
    setattr(Recorder, _h, _make_hook(_h))


def _avalanche_order(n_samples: int, batch: int, epochs: int) -> list[str]:
    x, y = torch.randn(n_samples, 4), torch.zeros(n_samples, dtype=torch.long)
    bm = tensors_benchmark(train_tensors=[(x, y)], test_tensors=[(x, y)], task_labels=[0])
    rec = Recorder()
    model = torch.nn.Linear(4, 2)
    strat = Naive(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(),
                  train_mb_size=batch, train_epochs=epochs, eval_mb_size=n_samples, device="cpu",
                  plugins=[rec], evaluator=EvaluationPlugin(loggers=[]), eval_every=-1)
    strat.train(bm.train_stream[0])
    strat.eval(bm.test_stream)
    return rec.calls


class _TinyLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 10)

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"logits": self.emb(input_ids)})()


def test_callback_order_matches_avalanche():
    n, batch, epochs = 6, 2, 2
    reference = _avalanche_order(n, batch, epochs)
    rec = Recorder()
    model = _TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    strat = LLMStrategy(model, opt, [rec], pad_id=0, batch_size=batch, epochs=epochs, device=torch.device("cpu"))
    examples = [Encoded(("t", str(i)), (1, 2, 3), (-100, 2, 3)) for i in range(n)]
    strat.train(TextExperience(0, "t", examples))
    strat.eval([TextExperience(0, "t", [], list(range(n)))], lambda s, exp, rows: None, batch_size=n)
    assert rec.calls == reference
    assert set(reference) >= {"before_training_iteration", "before_backward", "after_update", "after_eval_exp"}
    # the strategy exposes what Avalanche plugins read
    assert rec.seen["model"] is model and rec.seen["optimizer"] is opt
    assert rec.seen["mb_x"].shape == (batch, 3) and rec.seen["exp"] == 0
    assert rec.seen["iters"] == n // batch * epochs - 1  # counted after the update, like Avalanche's clock
    assert rec.seen["loss"] > 0 and rec.seen["device"] == torch.device("cpu")
    assert strat.clock.train_iterations == n // batch * epochs
