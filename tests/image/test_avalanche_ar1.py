"""avalanche.ar1 (clsuite/methods/avalanche/ar1.py) against Avalanche 0.6.0's AR1 strategy: with its
MobileNet replaced by the same small network split at the same layer (AR1 builds a pretrained
MobileNet, which cannot be downloaded here), the same weights, latent memory and outputs after each
experience, with and without SI; the wrapper's split and forward modes; the memory it reports."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.models import MobilenetV1
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
import avalanche.training.supervised.ar1 as avalanche_ar1

import clsuite.image.train as train_module
from clsuite.core.errors import ComponentError
from clsuite.image.config import TrainConfig
from clsuite.image.records import read_records
from clsuite.image.train import train_run
from clsuite.methods.avalanche.ar1 import AR1, AR1Net
import clsuite.methods.avalanche.plugins as P
from clsuite.models import build_model

from fakes.train import Crash

N_CLASSES, SHAPE, B, RM = 6, (1, 4, 4), 8, 12


class _SmallMobileNet(torch.nn.Module):
    """MobilenetV1's interface (``lat_features``, ``end_features``, a bias-free ``output``, its forward)."""

    forward = MobilenetV1.forward

    def __init__(self, lower, upper, head_weight) -> None:
        super().__init__()
        self.lat_features, self.end_features = lower, upper
        self.output = torch.nn.Linear(head_weight.shape[1], head_weight.shape[0], bias=False)
        with torch.no_grad():
            self.output.weight.copy_(head_weight)


def _tasks():
    g = torch.Generator().manual_seed(0)
    out = []
    for k in range(3):
        ys = torch.tensor([2 * k, 2 * k + 1]).repeat(8)
        out.append((torch.randn(len(ys), *SHAPE, generator=g) + ys.view(-1, 1, 1, 1).float() / 2, ys))
    return out


class _Reseed(SupervisedPlugin):
    """Calls ``seed(i)`` after the i-th training epoch: just before AR1's memory draws, in both runs."""

    def __init__(self, seed) -> None:
        super().__init__()
        self.seed, self.i = seed, 0

    def after_training_epoch(self, strategy, **kwargs):
        self.seed(500 + self.i)
        self.i += 1


@pytest.mark.parametrize("si_lambda", [0.0, 0.5])
def test_same_weights_memory_and_outputs_as_avalanche_ar1(monkeypatch, si_lambda):
    tasks = _tasks()
    bench = tensors_benchmark(train_tensors=tasks, test_tensors=tasks, task_labels=[0, 0, 0])
    x_test = torch.cat([x for x, _ in tasks])
    torch.manual_seed(0)
    ours_model = AR1Net(build_model("mlp", {"hidden_sizes": [16, 16]}, SHAPE, N_CLASSES), latent_layer=3)
    backbone = ours_model.net.backbone
    ref_net = _SmallMobileNet(copy.deepcopy(backbone[:3]), copy.deepcopy(backbone[3:]),
                              ours_model.net.head.weight.detach().clone())
    monkeypatch.setattr(avalanche_ar1, "MobilenetV1", lambda pretrained, latent_layer_num: ref_net)
    kw = dict(train_mb_size=B, train_epochs=2, eval_mb_size=16, evaluator=EvaluationPlugin(loggers=[]))
    opt = dict(lr=0.05, momentum=0.9)

    ref = avalanche_ar1.AR1(inc_lr=0.01, l2=0.0005, rm_sz=RM, freeze_below_layer="end_features.3",
                            ewc_lambda=si_lambda, plugins=[_Reseed(torch.manual_seed)], **opt, **kw)
    snaps = []
    for exp in bench.train_stream:
        ref.train(exp, num_workers=0, shuffle=False)
        ref_net.eval()
        with torch.no_grad():
            snaps.append((copy.deepcopy(ref_net.state_dict()), ref.rm[0].clone(), ref.rm[1].clone(), ref_net(x_test)))

    ar1 = AR1(rm_sz=RM, inc_lr=0.01, seed=0)
    plugins = [_Reseed(ar1.generator.manual_seed), ar1]
    if si_lambda:
        plugins.append(P.SI(si_lambda, excluded_parameters=["net.head"]))
    ours = Naive(ours_model, torch.optim.SGD(ours_model.parameters(), weight_decay=0.0005, **opt),
                 torch.nn.CrossEntropyLoss(), plugins=plugins, **kw)
    for k, exp in enumerate(bench.train_stream):
        ours.train(exp, num_workers=0, shuffle=False)
        state, rm_x, rm_y, out_ref = snaps[k]
        pairs = {"net.backbone.1.weight": "lat_features.1.weight", "net.backbone.1.bias": "lat_features.1.bias",
                 "net.backbone.3.weight": "end_features.3.weight", "net.backbone.3.bias": "end_features.3.bias",
                 "net.head.weight": "output.weight"}
        ours_state = ours_model.state_dict()
        for a, b in pairs.items():
            torch.testing.assert_close(ours_state[a], state[b], rtol=1e-5, atol=1e-6, msg=f"exp {k}: {a}")
        assert torch.equal(ours_state["net.head.bias"], torch.zeros(N_CLASSES))
        assert torch.equal(ar1.rm_y, rm_y.long()) and len(rm_y) == RM
        torch.testing.assert_close(ar1.rm_x, rm_x, rtol=1e-5, atol=1e-6)
        ours_model.eval()
        with torch.no_grad():
            out = ours_model(x_test)
        ours_model.train()
        torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5, msg=f"exp {k}: outputs")
    # the lower layer stopped after the first experience; the upper one kept learning
    assert not ours_model.net.backbone[1].weight.requires_grad and ours_model.net.backbone[3].weight.requires_grad


def test_wrapper_split_and_latent_injection():
    net = build_model("mlp", {"hidden_sizes": [5, 4]}, SHAPE, 3)
    with pytest.raises(ComponentError, match="latent_layer 5 must split"):
        AR1Net(net, 5)
    model = AR1Net(net, 3)
    assert torch.equal(net.head.bias, torch.zeros(3)) and not net.head.bias.requires_grad
    x = torch.randn(6, *SHAPE)
    model.eval()
    torch.testing.assert_close(model(x), net(x))
    model.train()
    assert not any(m.training for m in model.lower) and all(m.training for m in model.upper)
    latent = torch.randn(2, 5)
    model.latent_input = latent
    out = model(x)
    assert out.shape == (8, 3) and torch.equal(model.last_latent, net.backbone[:3](x))
    torch.testing.assert_close(out[6:], net.head(net.backbone[3:](latent)))
    out.sum().backward()
    assert net.backbone[1].weight.grad is None and net.backbone[3].weight.grad is not None


def test_memory_is_latent_activations_plus_head_rows(params, data_roots, tmp_path):
    """smnist_smoke (90 training rows per experience, mlp 100-100, latent_layer 3: activations of 100
    floats): rm_sz 50 is full after the first experience; + one 100-float head row per seen class."""
    _, prepared = data_roots
    p = params.model_copy(update={"methods": {**params.methods, "avalanche.ar1": {"rm_sz": 50}}})
    run_dir = train_run(p, "smnist_smoke", "avalanche.ar1", 0, prepared, tmp_path)
    memory = pd.read_parquet(run_dir / "experiences.parquet")["extra_memory_bytes"].tolist()
    assert memory == [4 * 50 * 100 + 4 * 100 * 2 * (k + 1) for k in range(5)]


@pytest.mark.slow
def test_resume_inside_an_experience_gives_identical_records(params, data_roots, tmp_path, monkeypatch):
    """3 epochs per experience (latent activations kept in the first epoch, memory drawn after the last):
    a run cut in the second epoch of experience 3 resumes from its epoch checkpoint with the records of an
    uninterrupted run (the after-an-experience resume is tests/image/test_avalanche_zoo.py's)."""
    _, prepared = data_roots
    bench = params.benchmark("smnist_smoke")
    train = TrainConfig.model_validate({**bench.train.model_dump(), "epochs": 3})
    p = params.model_copy(update={
        "benchmarks": {**params.benchmarks, "smnist_smoke": bench.model_copy(update={"train": train})},
        "methods": {**params.methods, "avalanche.ar1": {"rm_sz": 60, "inc_lr": 0.02, "ewc_lambda": 0.1}},
        "run": params.run.model_copy(update={"checkpoint_every_epochs": 1})})
    ref = read_records(train_run(p, "smnist_smoke", "avalanche.ar1", 0, prepared, tmp_path / "ref"))
    real = train_module.ProgressPlugin.after_training_iteration
    fired = []

    def step(self, strategy, **kw):
        real(self, strategy, **kw)
        c = strategy.clock
        if not fired and (c.train_exp_counter, c.train_exp_epochs, c.train_epoch_iterations) == (2, 1, 3):
            fired.append(1)
            raise Crash

    monkeypatch.setattr(train_module.ProgressPlugin, "after_training_iteration", step)
    with pytest.raises(ComponentError, match="Crash"):
        train_run(p, "smnist_smoke", "avalanche.ar1", 0, prepared, tmp_path / "cut")
    run_dir = train_run(p, "smnist_smoke", "avalanche.ar1", 0, prepared, tmp_path / "cut")
    assert "resuming experience 3 after epoch 1/3" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)
