"""ResNet-18 backbones: shapes, parameter counts and outputs against torchvision, and a tiny
training run with the methods that rebuild the network (iCaRL, DER of Yan et al.)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from clsuite.image.config import BenchmarkConfig
from clsuite.image import prepare as prepare_module
from clsuite.image.prepare import prepare_benchmark
from clsuite.data.sources import LabeledImages, Source
from clsuite.core.errors import ParamsError
from clsuite.methods.der_expandable import ExpandableNet
from clsuite.methods.icarl import NMEClassifier
from clsuite.models import MODELS, build_model, count_parameters
from clsuite.image.records import read_records


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name, shape", [("resnet18_cifar", (3, 32, 32)), ("resnet18_cifar", (1, 28, 28)),
                                         ("resnet18_cifar", (3, 64, 64)), ("resnet18", (3, 64, 64)),
                                         ("resnet18", (1, 96, 96))])
def test_output_and_feature_shapes(name, shape):
    torch.manual_seed(0)
    net = build_model(name, {}, shape, 7)
    x = torch.rand(3, *shape)
    assert net.feature_dim == 512 and isinstance(net.head, nn.Linear)
    assert (net.head.in_features, net.head.out_features) == (512, 7)
    assert net.features(x).shape == (3, 512)
    out = net(x)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    assert torch.allclose(out, net.head(net.features(x)), atol=1e-6)


def test_reduced_resnet18_is_torchvision_with_a_3x3_stem_and_no_maxpool():
    net = build_model("resnet18_cifar", {}, (3, 32, 32), 10)
    bb = net.backbone
    assert (bb.conv1.kernel_size, bb.conv1.stride, bb.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert isinstance(bb.maxpool, nn.Identity) and isinstance(bb.fc, nn.Identity)
    # independent count: torchvision's ResNet-18 for 10 classes with its 7x7x3x64 stem swapped for 3x3x3x64
    tv = torchvision.models.resnet18(weights=None, num_classes=10)
    assert count_parameters(net) == _n_params(tv) - 64 * 3 * 7 * 7 + 64 * 3 * 3 * 3 == 11_173_962
    # a 32 px image reaches the last stage at 4x4 (the Mammoth/DER reduced ResNet)
    seen = {}

    def hook(module, inputs, output) -> None:
        seen["shape"] = tuple(output.shape)

    bb.layer4.register_forward_hook(hook)
    net.eval()(torch.rand(1, 3, 32, 32))
    assert seen["shape"] == (1, 512, 4, 4)


def test_standard_resnet18_computes_what_torchvision_computes():
    torch.manual_seed(1)
    net = build_model("resnet18", {}, (3, 224, 224), 100).eval()
    tv = torchvision.models.resnet18(weights=None, num_classes=100).eval()
    assert count_parameters(net) == _n_params(tv) == 11_227_812
    state = {k: v for k, v in net.backbone.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = net.head.weight.detach(), net.head.bias.detach()
    tv.load_state_dict(state)  # same module names: only fc moved to the head
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.allclose(net(x), tv(x), atol=1e-5)


def test_grey_input_gets_a_one_channel_stem():
    assert build_model("resnet18", {}, (1, 64, 64), 3).backbone.conv1.in_channels == 1
    assert build_model("resnet18_cifar", {}, (1, 28, 28), 3).backbone.conv1.in_channels == 1


def test_too_small_input_names_the_model_and_the_fix():
    with pytest.raises(ParamsError, match="resnet18: input 3x28x28 .* use resnet18_cifar"):
        build_model("resnet18", {}, (3, 28, 28), 10)
    with pytest.raises(ParamsError, match="resnet18_cifar"):
        build_model("resnet18_cifar", {}, (3, 4, 4), 10)


def test_registered_without_hyperparameters():
    assert {"resnet18", "resnet18_cifar"} <= set(MODELS.names())
    with pytest.raises(Exception, match="width"):
        MODELS.get("resnet18").config_cls.model_validate({"width": 32})


@pytest.mark.parametrize("name, shape", [("resnet18_cifar", (3, 32, 32)), ("resnet18", (3, 64, 64))])
def test_wraps_of_icarl_and_der_keep_features_and_head(name, shape):
    torch.manual_seed(0)
    x = torch.rand(4, *shape)
    der = ExpandableNet(build_model(name, {}, shape, 6), n_experiences=3, n_classes=6)
    der.activate(0)
    der.activate(1)
    assert der.features(x).shape == (4, 1024) and der(x).shape == (4, 6)
    assert count_parameters(der) == 2 * _n_params(der.extractors[0]) + 6 * 1025 + der.aux_head.weight.numel() + 7
    nme = NMEClassifier(build_model(name, {}, shape, 6), 6)
    assert nme.features(x).shape == (4, 512) and nme.head.out_features == 6


class _TinyColours(Source):
    """4 classes of noisy colour patches, 10 per class (official split 8 train / 2 test)."""

    name = "tiny_colours"

    def __init__(self, side: int) -> None:
        self.side = side

    def fetch(self, raw_dir):
        return []

    def load(self, raw_dir) -> LabeledImages:
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(4), 10)
        base = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220], [200, 200, 30]])[labels]
        x = base[:, :, None, None] + rng.integers(-25, 26, size=(40, 3, self.side, self.side))
        split = np.tile(np.array(["train"] * 8 + ["test"] * 2), 4)
        return LabeledImages(np.clip(x, 0, 255).astype(np.uint8), labels, ["r", "g", "b", "y"], split=split)


@pytest.fixture(scope="module")
def tiny_benches(params, tmp_path_factory):
    """Params with benchmarks tiny_resnet18_cifar (3x8x8) and tiny_resnet18 (3x32x32), 2 x 2
    classes of colour patches, prepared in a temp folder (the images cost little on a CPU)."""
    prepared = tmp_path_factory.mktemp("prepared")
    base = params.benchmark("smnist_smoke").model_dump()
    benches = {}
    for model, side in (("resnet18_cifar", 8), ("resnet18", 32)):
        # 15 epochs of 2 batches: BatchNorm's running statistics settle (frozen DER extractors
        # and evaluation use them; after 2 steps they are still near their initial 0 / 1)
        cfg = BenchmarkConfig.model_validate({**base, "subsample_per_class": None, "n_experiences": 2,
                                              "model": {"name": model},
                                              "train": {**base["train"], "epochs": 15, "batch_size": 8, "lr": 0.01}})
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(prepare_module, "benchmark_source", lambda name, cfg, side=side: _TinyColours(side))
            prepare_benchmark(f"tiny_{model}", cfg, tmp_path_factory.mktemp("raw"), prepared)
        benches[f"tiny_{model}"] = cfg
    return params.model_copy(update={"benchmarks": {**params.benchmarks, **benches}}), prepared


@pytest.mark.parametrize("model, method", [("resnet18_cifar", "icarl"), ("resnet18_cifar", "der_expandable"),
                                           ("resnet18", "der_expandable"), ("resnet18", "derpp")])
def test_tiny_training_run_with_resnet18(tiny_benches, tmp_path, method, model):
    from clsuite.image.train import train_run

    params, prepared = tiny_benches
    run_dir = train_run(params, f"tiny_{model}", method, 0, prepared, tmp_path)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["finished_experiences"] == 2, status
    recs = read_records(run_dir)
    assert sorted(recs["train_exp"].unique().tolist()) == [-1, 0, 1]
    last = recs[(recs["train_exp"] == 1) & (recs["eval_set"] == "clean")]
    logits = last[[f"logit_{k}" for k in range(4)]].to_numpy()
    assert len(last) == 8 and np.isfinite(logits).all() and last["y_pred"].between(0, 3).all()
    assert (last["y_pred"] == last["y_true"]).mean() >= 0.5  # colour patches: chance is 0.25
