"""BrainCL pieces on tiny tensors: real range coding round trip, bits vs the entropy model,
wake leaves the backbone unchanged, sleep changes it, memory counted in coded bytes."""

from __future__ import annotations

import copy

import pytest
import torch

from clsuite.methods import MethodContext
from clsuite.methods.braincl.entropy import FactorizedEntropyModel
from clsuite.methods.braincl.method import BrainCLConfig, BrainCLPlugin, CodedClass
from clsuite.methods.braincl.networks import CompletionNet, separation_net
from clsuite.models.builtin import MLPConfig, mlp


def _skewed_model(channels: int = 3, r: int = 7, seed: int = 0) -> FactorizedEntropyModel:
    torch.manual_seed(seed)
    em = FactorizedEntropyModel(channels, r)
    with torch.no_grad():
        em.logits.copy_(torch.randn(channels, 2 * r + 1) * 2)
    return em


def _sample(em: FactorizedEntropyModel, n: int, h: int = 2, w: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = em.pmf().detach()
    out = torch.stack([torch.multinomial(p[c], n * h * w, replacement=True, generator=g) for c in range(em.channels)])
    return (out.view(em.channels, n, h, w).permute(1, 0, 2, 3) - em.max_symbol).float()


def test_range_coding_round_trip_gives_identical_quantised_cues():
    em = _skewed_model()
    cues = _sample(em, 50)
    data = em.encode(cues)
    assert isinstance(data, bytes) and len(data) > 0
    assert torch.equal(em.decode(data, tuple(cues.shape)), cues)


def test_coded_size_is_within_a_few_percent_of_the_entropy_model_estimate():
    em = _skewed_model()
    cues = _sample(em, 2000)
    estimated_bits = float(em.bits(cues).detach())
    coded_bits = 8 * len(em.encode(cues))
    assert abs(coded_bits - estimated_bits) / estimated_bits < 0.03


def test_likelihood_at_integers_is_the_pmf_and_noisy_values_interpolate():
    em = _skewed_model(channels=1, r=3)
    p = em.pmf().detach()[0]
    v = torch.arange(-3, 4, dtype=torch.float32).view(1, 1, 1, -1)
    torch.testing.assert_close(em.likelihood(v).detach().view(-1), p)
    # halfway between k and k+1 the interval [v-1/2, v+1/2] covers half of each bin
    mid = torch.tensor([[[[0.5]]]])
    torch.testing.assert_close(em.likelihood(mid).detach().view(()), 0.5 * (p[3] + p[4]))
    v = torch.tensor([[[[0.3]]]], requires_grad=True)
    em.bits(v).backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()


def test_encoder_downsamples_by_16_and_decoder_restores_the_image_size():
    enc = separation_net(1, [4, 4, 4, 3])
    dec = CompletionNet(3, [4, 4, 4], (1, 28, 28)).eval()  # eval: recall clamped to [0, 1]
    x = torch.rand(2, 1, 28, 28)
    cue = enc(x)
    assert cue.shape == (2, 3, 2, 2)
    out = dec(cue)
    assert out.shape == x.shape and (out >= 0).all() and (out <= 1).all()


def _plugin(**over) -> BrainCLPlugin:
    kw = dict(encoder_widths=[4, 4, 4, 3], decoder_widths=[4, 4, 4], memory_epochs=1, wake_epochs=2,
              sleep_epochs=2, sleep_milestones=[1], batch_size=8, ltm_per_class=3)
    cfg = BrainCLConfig(**{**kw, **over})
    return BrainCLPlugin(cfg, MethodContext(0, 4, [[0, 1], [2, 3]], (1, 28, 28)))


def _net():
    torch.manual_seed(0)
    return mlp(MLPConfig(hidden_sizes=[8]), input_shape=(1, 28, 28), n_classes=4)


def test_wake_trains_only_the_head():
    model, plugin = _net(), _plugin()
    before = copy.deepcopy(model.state_dict())
    plugin.wake(model, torch.rand(16, 1, 28, 28), torch.arange(16) % 2)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_a_whole_experience_codes_the_memory_and_sleep_changes_the_backbone():
    model, plugin = _net(), _plugin()
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_tensor_classification_dataset

    x, y = torch.rand(24, 1, 28, 28), torch.arange(24) % 2
    ds = _make_taskaware_tensor_classification_dataset(x, y, task_labels=[0] * 24, targets=y.tolist())
    wake_only = copy.deepcopy(model)
    plugin.wake(wake_only, torch.rand(4, 1, 28, 28), torch.arange(4) % 2)
    before = copy.deepcopy(model.state_dict())
    plugin.learn_experience(model, ds, 0)
    assert not torch.equal(before["backbone.1.weight"], model.state_dict()["backbone.1.weight"])
    assert sorted(plugin.ltm) == [(0, 0), (0, 1)] and all(i.shape[0] == 3 for i in plugin.ltm.values())
    # the memory holds bytes, and decoding them gives integer cues in range
    cues = plugin.entropy_models[0].decode(plugin.ltm[(0, 0)].data, plugin.ltm[(0, 0)].shape)
    assert torch.equal(cues, cues.round()) and cues.abs().max() <= plugin.cfg.max_symbol
    params = sum(p.numel() for m in [*plugin.decoders, *plugin.entropy_models] for p in m.parameters())
    assert plugin.extra_memory_bytes(model) == sum(len(i.data) for i in plugin.ltm.values()) + 4 * params


def test_state_round_trip_restores_decoders_and_memory():
    plugin = _plugin()
    em = _skewed_model(channels=3, r=15)
    plugin.entropy_models.append(em.eval())
    plugin.decoders.append(plugin._new_decoder().eval())
    cues = _sample(em, 5)
    plugin.ltm[(0, 1)] = CodedClass(0, em.encode(cues), tuple(cues.shape))
    other = _plugin()
    other.load_state_dict(copy.deepcopy(plugin.state_dict()))
    x1, y1 = plugin.recall_ltm()
    x2, y2 = other.recall_ltm()
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_a_fixed_budget_keeps_the_nearest_prefix_of_every_group():
    plugin = _plugin(ltm_size=10, ltm_per_class=4)
    assert [plugin.quota(n) for n in (1, 2, 3, 5, 20)] == [4, 4, 3, 2, 1]
    em = _skewed_model(channels=3, r=15)
    plugin.entropy_models.append(em.eval())
    stored = {}
    for c in (0, 1, 2):
        cues = _sample(em, 4, seed=c)
        stored[c] = cues
        plugin.ltm[(0, c)] = CodedClass(0, em.encode(cues), tuple(cues.shape))
    plugin.shrink_ltm(plugin.quota(5))
    for c in (0, 1, 2):
        item = plugin.ltm[(0, c)]
        assert item.shape[0] == 2
        assert torch.equal(em.decode(item.data, item.shape), stored[c][:2])


def test_domain_il_keeps_one_memory_per_task_and_class():
    model, plugin = _net(), _plugin(ltm_size=6)
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_tensor_classification_dataset

    for k in range(2):  # the same two classes in both experiences, as in domain-IL
        x, y = torch.rand(24, 1, 28, 28), torch.arange(24) % 2
        ds = _make_taskaware_tensor_classification_dataset(x, y, task_labels=[0] * 24, targets=y.tolist())
        plugin.learn_experience(model, ds, k)
    assert sorted(plugin.ltm) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(item.shape[0] == 6 // 4 for item in plugin.ltm.values())
    _, labels = plugin.recall_ltm()
    assert labels.tolist() == [0, 1, 0, 1]


def test_a_diverging_sleep_phase_raises_training_diverged_naming_phase_and_key():
    from clsuite.core.errors import TrainingDiverged

    model, plugin = _net(), _plugin(clip_grad_norm=None, sleep_lr=1e30, momentum=0.0, weight_decay=0.0)
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 2
    with pytest.raises(TrainingDiverged, match=r"sleep-phase loss is not finite .*methods\.braincl\.sleep_lr") as info:
        plugin._fit(model, list(model.parameters()), x, y, epochs=3, lr=1e30, phase="sleep")
    assert info.value.status["phase"] == "sleep" and info.value.status["method"] == "braincl"


def test_clip_grad_norm_bounds_every_sgd_step():
    """With plain SGD (no momentum, no decay) one step moves the weights by lr · clipped gradient,
    so ‖Δθ‖ ≤ lr · clip_grad_norm; unclipped, the same huge-loss step is far larger."""
    x, y = torch.rand(8, 1, 28, 28) * 1e3, torch.arange(8) % 2  # large inputs: large gradients

    def step_norm(clip: float | None) -> float:
        model = _net()
        plugin = _plugin(clip_grad_norm=clip, momentum=0.0, weight_decay=0.0, batch_size=8)
        before = [p.detach().clone() for p in model.parameters()]
        plugin._fit(model, list(model.parameters()), x, y, epochs=1, lr=0.1, phase="sleep")
        return float(torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before))))

    assert step_norm(0.5) <= 0.1 * 0.5 * (1 + 1e-5)
    assert step_norm(None) > 10 * 0.1 * 0.5
