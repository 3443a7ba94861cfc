"""avalanche.bic (clsuite/methods/avalanche/bic.py) against Avalanche 0.6.0's own BiCPlugin: the
same network, data order and seeds give the same weights and the same bias-corrected evaluation
outputs; the distillation loss against a hand computation; the wrapper's forward modes."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from avalanche.benchmarks import tensors_benchmark
from avalanche.training import Naive
from avalanche.training.plugins import BiCPlugin, EvaluationPlugin

from clsuite.core.errors import ComponentError
from clsuite.methods.avalanche.bic import BiC, BiCNet
from clsuite.models import build_model

N_CLASSES, SHAPE = 6, (1, 4, 4)
KW = dict(mem_size=30, val_percentage=0.2, T=2, stage_2_epochs=6, lr=0.1)


def _stream():
    g = torch.Generator().manual_seed(0)
    exps = []
    for k in range(3):  # 3 experiences of 2 classes, 20 + 5 samples per class, class-dependent means
        ys = torch.tensor([2 * k, 2 * k + 1]).repeat_interleave(25)
        xs = torch.randn(len(ys), *SHAPE, generator=g) + ys.view(-1, 1, 1, 1).float() / 3
        exps.append((xs, ys))
    return tensors_benchmark(train_tensors=exps, test_tensors=exps, task_labels=[0, 0, 0])


def _fixed_distillation(self, new, old):
    """Avalanche's distillation with its softmax over classes at T (clsuite's fix, see BiC's docstring)."""
    return F.cross_entropy(new / self.T, F.softmax(old / self.T, dim=1))


def _train(model, plugin, bench, check):
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    strategy = Naive(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), torch.nn.CrossEntropyLoss(),
                     train_mb_size=10, train_epochs=2, plugins=[plugin], evaluator=EvaluationPlugin(loggers=[]))
    out = []
    for exp in bench.train_stream:
        strategy.train(exp, num_workers=0)
        out.append(check(strategy))
    return out


def test_same_weights_and_corrected_outputs_as_avalanche(monkeypatch):
    import avalanche.training.plugins.bic as avalanche_bic

    monkeypatch.setattr(BiCPlugin, "cross_entropy", _fixed_distillation)
    # Avalanche 0.6.0 passes verbose= to MultiStepLR, which this torch no longer accepts (docs/avalanche.md)
    monkeypatch.setattr(avalanche_bic, "MultiStepLR",
                        lambda opt, verbose=None, **kw: torch.optim.lr_scheduler.MultiStepLR(opt, **kw))
    bench = _stream()
    torch.manual_seed(0)
    net = build_model("mlp", {"hidden_sizes": [16]}, SHAPE, N_CLASSES)
    x_test = torch.cat([e.dataset.tensors[0] if hasattr(e.dataset, "tensors") else
                        torch.stack([e.dataset[i][0] for i in range(len(e.dataset))]) for e in bench.test_stream])

    ref_plugin = BiCPlugin(**KW, num_workers=0)

    def ref_check(strategy):
        strategy.model.eval()
        with torch.no_grad():
            return (copy.deepcopy(strategy.model.state_dict()), ref_plugin.bias_forward(strategy.model(x_test)))

    ours_plugin = BiC(**KW, num_workers=0)

    def ours_check(strategy):
        strategy.model.eval()
        with torch.no_grad():
            return copy.deepcopy(strategy.model.net.state_dict()), strategy.model(x_test)

    ref = _train(copy.deepcopy(net), ref_plugin, bench, ref_check)
    ours = _train(BiCNet(copy.deepcopy(net), N_CLASSES), ours_plugin, bench, ours_check)
    for k, ((w_ref, out_ref), (w, out)) in enumerate(zip(ref, ours)):
        for name in w_ref:  # the bias layer's gradient sums in another order: float rounding only
            torch.testing.assert_close(w[name], w_ref[name], rtol=1e-5, atol=1e-6, msg=f"exp {k}: {name}")
        torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5, msg=f"exp {k}: outputs")
    # not vacuous: a trained correction on the newest classes only, and it changes the outputs
    bias = ours_plugin.bias_layer
    assert bias.clss.tolist() == [4, 5] == ref_plugin.bias_layer.clss.tolist()
    assert abs(float(bias.alpha) - 1) > 1e-3 or abs(float(bias.beta)) > 1e-3
    torch.testing.assert_close(bias.alpha, ref_plugin.bias_layer.alpha, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bias.beta, ref_plugin.bias_layer.beta, rtol=1e-5, atol=1e-6)


def test_distillation_loss_by_hand():
    """softmax over classes at T: -sum_c p_c log q_c averaged over the batch, p = softmax(old/T), q = softmax(new/T)."""
    plugin = BiC(mem_size=10, T=2)
    new = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    old = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    # row 1: p = softmax([0, 1]) = (1/(1+e), e/(1+e)); q = softmax([0.5, 0]); row 2 mirrored with new=[0, 1]
    e = math.e
    p1 = (1 / (1 + e), e / (1 + e))
    lq1 = (0.5 - math.log(math.exp(0.5) + 1), 0 - math.log(math.exp(0.5) + 1))
    p2 = (e / (1 + e), 1 / (1 + e))
    lq2 = (0 - math.log(1 + e), 1 - math.log(1 + e))
    want = -(p1[0] * lq1[0] + p1[1] * lq1[1] + p2[0] * lq2[0] + p2[1] * lq2[1]) / 2
    assert float(plugin.cross_entropy(new, old)) == pytest.approx(want, rel=1e-6)


def test_wrapper_corrects_only_in_eval_mode_and_only_its_classes():
    net = torch.nn.Linear(3, 4)
    model = BiCNet(net, 4)
    x = torch.randn(5, 3)
    model.eval()
    assert torch.equal(model(x), net(x))  # no correction trained yet: identity
    with torch.no_grad():
        model.bias.reset([1, 3])
        model.bias.alpha.fill_(0.5)
        model.bias.beta.fill_(-1.0)
    raw = net(x)
    want = raw.clone()
    want[:, [1, 3]] = 0.5 * raw[:, [1, 3]] - 1.0
    assert torch.equal(model(x), want)
    model.train()
    assert torch.equal(model(x), raw)
    assert model.bias.clss.tolist() == [1, 3]


def test_plugin_refuses_an_unwrapped_model():
    bench = _stream()
    strategy = Naive(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, N_CLASSES)),
                     torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), torch.nn.CrossEntropyLoss(),
                     train_mb_size=10, train_epochs=1, plugins=[BiC(mem_size=20)], evaluator=EvaluationPlugin(loggers=[]))
    with pytest.raises(ComponentError, match="BiCNet"):
        strategy.train(bench.train_stream[0], num_workers=0)
