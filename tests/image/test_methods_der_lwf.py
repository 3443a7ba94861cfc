"""DER/DER++ and LwF plugins on tiny tensors: losses by hand, stored logits, state."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from clsuite.methods.der import DERPlugin
from clsuite.methods.lwf import LwFPlugin, distillation_loss


def _strategy(model, x, y):
    out = model(x)
    return SimpleNamespace(model=model, device=torch.device("cpu"), mb_x=x, mb_y=y,
                           mb_task_id=torch.zeros_like(y), mb_output=out, loss=F.cross_entropy(out, y))


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))


def test_der_stores_the_logits_the_model_gave_at_insertion(model):
    plugin = DERPlugin(mem_size=8, batch_size_mem=4, alpha=0.5, beta=0.5, seed=0)
    x, y = torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    s = _strategy(model, x, y)
    plugin.after_training_iteration(s)
    assert torch.equal(plugin.buffer.field("logits"), s.mb_output.detach())
    with torch.no_grad():  # the model changes afterwards; the stored logits do not
        model[1].weight.add_(1.0)
    assert torch.equal(plugin.buffer.field("logits"), s.mb_output.detach())
    assert torch.equal(plugin.buffer.x, x) and torch.equal(plugin.buffer.y, y)


def test_derpp_loss_equals_hand_computation(model):
    plugin = DERPlugin(mem_size=8, batch_size_mem=3, alpha=0.3, beta=0.7, seed=1)
    plugin.after_training_iteration(_strategy(model, torch.randn(8, 1, 2, 2), torch.arange(8) % 3))
    with torch.no_grad():
        model[1].bias.add_(0.5)  # so that current logits differ from the stored ones
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 2, 1])
    s = _strategy(model, x, y)
    base = s.loss.item()
    gen_state = plugin.buffer.generator.get_state()
    plugin.before_backward(s)
    # redo the two draws with the same generator state
    g = torch.Generator()
    g.set_state(gen_state)
    i1 = torch.randperm(8, generator=g)[:3]
    i2 = torch.randperm(8, generator=g)[:3]
    buf = plugin.buffer
    expected = (base + 0.3 * F.mse_loss(model(buf.x[i1]), buf.field("logits")[i1]).item()
                + 0.7 * F.cross_entropy(model(buf.x[i2]), buf.y[i2]).item())
    assert s.loss.item() == pytest.approx(expected, rel=1e-6)
    assert not torch.equal(i1, i2), "DER++ draws two separate buffer batches"


def test_der_without_beta_has_only_the_logit_term(model):
    plugin = DERPlugin(mem_size=4, batch_size_mem=4, alpha=1.0, beta=0.0, seed=0)
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 2, 0])
    plugin.after_training_iteration(_strategy(model, x, y))
    s = _strategy(model, x, y)  # same model: stored logits equal current ones → MSE term 0
    before = s.loss.item()
    plugin.before_backward(s)
    assert s.loss.item() == pytest.approx(before, abs=1e-7)


def test_der_empty_buffer_adds_nothing_and_memory_is_counted(model):
    plugin = DERPlugin(mem_size=5, batch_size_mem=2, alpha=1.0, beta=1.0, seed=0)
    s = _strategy(model, torch.randn(3, 1, 2, 2), torch.tensor([0, 1, 2]))
    loss = s.loss
    plugin.before_backward(s)
    assert s.loss is loss
    plugin.after_training_iteration(s)
    # 3 exemplars × 4 pixels as uint8 + 3 × 3 float32 logits
    assert plugin.extra_memory_bytes(model) == 3 * 4 + 3 * 3 * 4


def test_der_state_round_trip(model):
    a = DERPlugin(mem_size=4, batch_size_mem=2, alpha=1.0, beta=1.0, seed=3)
    a.after_training_iteration(_strategy(model, torch.randn(6, 1, 2, 2), torch.arange(6) % 3))
    b = DERPlugin(mem_size=4, batch_size_mem=2, alpha=1.0, beta=1.0, seed=99)
    b.load_state_dict(a.state_dict())
    for name in ("x", "y", "t", "logits"):
        assert torch.equal(a.buffer.field(name), b.buffer.field(name))
    assert torch.equal(a.buffer.sample_rows(4), b.buffer.sample_rows(4))


def test_distillation_loss_matches_formula():
    new, old, T = torch.randn(5, 3), torch.randn(5, 3), 2.0
    q = torch.softmax(old / T, 1)
    expected = (q * (q.log() - torch.log_softmax(new / T, 1))).sum(1).mean() * T**2
    assert distillation_loss(new, old, T).item() == pytest.approx(expected.item(), rel=1e-6)
    assert distillation_loss(old, old, T).item() == pytest.approx(0.0, abs=1e-6)


def test_lwf_distils_only_old_classes_and_freezes_old_model(model):
    plugin = LwFPlugin(alpha=2.0, temperature=2.0)
    exp = SimpleNamespace(classes_in_this_experience=[0, 1])
    plugin.after_training_exp(SimpleNamespace(model=model, experience=exp))
    assert plugin.old_classes == [0, 1]
    assert all(not p.requires_grad for p in plugin.old_model.parameters())
    with torch.no_grad():
        model[1].weight.mul_(-1.0)
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([2, 2, 2, 2])
    s = _strategy(model, x, y)
    base = s.loss.item()
    plugin.before_backward(s)
    old = plugin.old_model(x)[:, [0, 1]]
    expected = base + 2.0 * distillation_loss(s.mb_output[:, [0, 1]], old, 2.0).item()
    assert s.loss.item() == pytest.approx(expected, rel=1e-6)
    restored = LwFPlugin(alpha=2.0, temperature=2.0)
    restored.load_state_dict(copy.deepcopy(plugin.state_dict()))
    assert restored.old_classes == [0, 1]
    # the state holds the old model's weights (plain tensors); the module is rebuilt from the
    # strategy's model (whose weights changed since) at the next experience
    restored.before_training_exp(SimpleNamespace(model=model))
    assert torch.equal(restored.old_model(x), plugin.old_model(x))
    assert all(not p.requires_grad for p in restored.old_model.parameters()) and not restored.old_model.training


def test_memory_counting_of_ewc_joint_and_lwf(params, data_roots, tmp_path):
    """extra_memory_bytes after the last experience, against hand counts (MEMO style)."""
    import pandas as pd

    from clsuite.image.train import train_run

    _, prepared = data_roots
    n_params = 784 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10  # smoke MLP 784-100-100-10
    expected = {
        "finetune": 0,
        "ewc": 2 * 5 * n_params * 4,   # separate mode: params + Fisher for each of 5 experiences
        "lwf": n_params * 4,           # one frozen copy of the model
        "joint": 450 * 784,            # all 450 training images as uint8 pixels
        "replay": 200 * 784,           # a full buffer of 200 exemplars
    }
    for method, bytes_ in expected.items():
        run_dir = train_run(params, "smnist_smoke", method, 0, prepared, tmp_path)
        exps = pd.read_parquet(run_dir / "experiences.parquet")
        assert exps["extra_memory_bytes"].iloc[-1] == bytes_, method
        assert exps["model_bytes"].iloc[-1] == n_params * 4
