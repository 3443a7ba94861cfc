"""iCaRL and DER (Yan et al.) on tiny tensors: herding, NME scores, losses, freezing, memory."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clsuite.methods.der_expandable import DERExpandablePlugin, ExpandableNet
from clsuite.methods.exemplars import HerdingMemory, herding_order
from clsuite.methods.icarl import NO_MEAN_SCORE, ICaRLPlugin, NMEClassifier
from clsuite.models import count_parameters
from clsuite.models.builtin import MLPConfig, mlp

CPU = torch.device("cpu")


def _net(n_classes: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    return mlp(MLPConfig(hidden_sizes=[5]), input_shape=(1, 2, 2), n_classes=n_classes)


def _herding_reference(phi: np.ndarray, m: int) -> list[int]:
    """iCaRL Alg. 4 written independently in numpy: at step k pick the unused row p
    minimising ‖μ − (Σ_chosen + φ_p)/k‖."""
    phi = phi / np.linalg.norm(phi, axis=1, keepdims=True)
    mu = phi.mean(0)
    chosen: list[int] = []
    for k in range(1, m + 1):
        best, best_d = -1, np.inf
        for p in range(len(phi)):
            if p in chosen:
                continue
            d = np.linalg.norm(mu - (phi[chosen].sum(0) + phi[p]) / k)
            if d < best_d:
                best, best_d = p, d
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_herding_matches_the_reference_algorithm(seed):
    phi = np.random.default_rng(seed).normal(size=(30, 6))
    assert herding_order(torch.from_numpy(phi), 12).tolist() == _herding_reference(phi, 12)


def test_herding_first_exemplar_is_the_one_nearest_the_mean_and_never_repeats():
    phi = torch.randn(20, 3, generator=torch.Generator().manual_seed(3))
    order = herding_order(phi, 20)
    unit = F.normalize(phi.double(), dim=1)
    assert int(order[0]) == int(((unit - unit.mean(0)) ** 2).sum(1).argmin())
    assert sorted(order.tolist()) == list(range(20))


def test_herding_memory_is_class_balanced_and_cuts_old_sets_to_prefixes():
    net = _net(6)
    mem = HerdingMemory(capacity=12)
    g = torch.Generator().manual_seed(0)
    x1, y1 = torch.rand(40, 1, 2, 2, generator=g), torch.arange(40) % 2
    mem.update(net, x1, y1, torch.zeros(40, dtype=torch.long), CPU)
    assert {c: len(v) for c, v in mem.x.items()} == {0: 6, 1: 6}
    before = {c: v.clone() for c, v in mem.x.items()}
    x2, y2 = torch.rand(40, 1, 2, 2, generator=g), 2 + torch.arange(40) % 4
    mem.update(net, x2, y2, torch.ones(40, dtype=torch.long), CPU)
    assert {c: len(v) for c, v in mem.x.items()} == {c: 2 for c in range(6)}  # 12 // 6
    for c in (0, 1):
        assert torch.equal(mem.x[c], before[c][:2])
    for c in range(2, 6):  # every stored exemplar is a real sample of its class
        rows = [i for i in range(40) if int(y2[i]) == c]
        assert all(any(torch.equal(e, x2[i]) for i in rows) for e in mem.x[c])
    assert mem.nbytes_as_images == 12 * 4  # 12 exemplars of 1x2x2 uint8 pixels


def test_herding_memory_round_trips_through_its_state_dict():
    mem = HerdingMemory(8)
    mem.update(_net(), torch.rand(16, 1, 2, 2), torch.arange(16) % 4, torch.zeros(16, dtype=torch.long), CPU)
    other = HerdingMemory(1)
    other.load_state_dict(copy.deepcopy(mem.state_dict()))
    for a, b in zip(mem.tensors(), other.tensors()):
        assert torch.equal(a, b)


def test_nme_scores_are_minus_squared_distances_to_the_class_means():
    net = _net(4)
    model = NMEClassifier(net, 4)
    x = torch.rand(7, 1, 2, 2)
    model.eval()
    assert torch.equal(model(x), net(x))  # no means yet: the network's own logits
    means = {0: F.normalize(torch.randn(5), dim=0), 2: F.normalize(torch.randn(5), dim=0)}
    model.set_means(means)
    scores = model(x)
    phi = F.normalize(net.features(x), dim=1)
    for c in (0, 2):
        torch.testing.assert_close(scores[:, c], -((phi - means[c]) ** 2).sum(1))
    assert (scores[:, [1, 3]] == NO_MEAN_SCORE).all()
    assert (scores[:, [0, 2]] > NO_MEAN_SCORE).all()
    model.train()
    assert torch.equal(model(x), net(x))  # training uses the network's logits


def test_icarl_loss_is_bce_with_old_model_targets_on_old_classes():
    net = _net(4)
    model = NMEClassifier(net, 4)
    plugin = ICaRLPlugin(mem_size=8, device=CPU)
    old = _net(4, seed=1)
    plugin.old_net, plugin.old_classes, plugin.new_classes = old, [0, 1], [2, 3]  # seen: [0, 1, 2, 3]
    x, y = torch.rand(5, 1, 2, 2), torch.tensor([2, 3, 2, 0, 1])
    out = model(x)
    s = SimpleNamespace(mb_output=out, mb_y=y, mb_x=x, loss=torch.tensor(0.0))
    plugin.before_backward(s)
    target = F.one_hot(y, 4).float()
    target[:, :2] = torch.sigmoid(old(x)[:, :2]).detach()
    expected = -(target * F.logsigmoid(out) + (1 - target) * F.logsigmoid(-out)).mean()
    torch.testing.assert_close(s.loss, expected)


def test_icarl_loss_over_all_units_gives_unseen_classes_target_0():
    """``bce_over: all`` (Avalanche's ICaRLLossPlugin, the original iCaRL): the mean over N x K
    outputs, unseen classes (here 4, 5) with target 0; the default averages over the seen ones."""
    net = _net(6)
    model = NMEClassifier(net, 6)
    old = _net(6, seed=1)
    x, y = torch.rand(5, 1, 2, 2), torch.tensor([2, 3, 2, 0, 1])
    out = model(x)
    losses = {}
    for over in ("seen", "all"):
        plugin = ICaRLPlugin(mem_size=8, device=CPU, bce_over=over)
        plugin.old_net, plugin.old_classes, plugin.new_classes = old, [0, 1], [2, 3]  # seen [0..3] of 6
        s = SimpleNamespace(mb_output=out, mb_y=y, mb_x=x, loss=torch.tensor(0.0))
        plugin.before_backward(s)
        losses[over] = s.loss
    target = F.one_hot(y, 6).float()
    target[:, :2] = torch.sigmoid(old(x)[:, :2]).detach()
    per_output = -(target * F.logsigmoid(out) + (1 - target) * F.logsigmoid(-out))
    torch.testing.assert_close(losses["all"], per_output.mean())
    torch.testing.assert_close(losses["seen"], per_output[:, :4].mean())


def test_expandable_net_freezes_old_extractors_and_copies_the_new_one():
    model = ExpandableNet(_net(4), n_experiences=3, n_classes=4)
    layout = {k: v.shape for k, v in model.state_dict().items()}
    model.activate(0)
    assert model.feature_dim == 5
    with torch.no_grad():
        model.extractors[0][1].weight.add_(0.5)  # make extractor 0 differ from the initial copies
    model.activate(1)
    assert torch.equal(model.extractors[1][1].weight, model.extractors[0][1].weight)
    assert {k: v.shape for k, v in model.state_dict().items()} == layout
    model.train()
    frozen = copy.deepcopy(model.extractors[0].state_dict())
    new_before = copy.deepcopy(model.extractors[1].state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.rand(8, 1, 2, 2), torch.arange(8) % 4
    F.cross_entropy(model(x), y).backward()
    opt.step()
    assert all(torch.equal(v, model.extractors[0].state_dict()[k]) for k, v in frozen.items())
    assert any(not torch.equal(v, model.extractors[1].state_dict()[k]) for k, v in new_before.items())
    phi = torch.cat([model.extractors[0](x), model.extractors[1](x)], 1)
    torch.testing.assert_close(model(x), phi @ model.head.weight[:, :10].T + model.head.bias)


def test_expandable_net_counts_only_active_parameters():
    base = _net(4)
    per = sum(p.numel() for p in base.backbone.parameters())
    model = ExpandableNet(base, n_experiences=3, n_classes=4)
    model.activate(0)
    assert count_parameters(model) == per + 4 * (5 + 1)
    model.activate(1)
    assert count_parameters(model) == 2 * per + 4 * (10 + 1) + (4 + 1) * (5 + 1)  # + aux head (K+1 outputs)


def test_der_aux_loss_maps_old_classes_to_one_extra_output():
    model = ExpandableNet(_net(4), n_experiences=2, n_classes=4)
    model.activate(0)
    model.activate(1)
    model.train()
    plugin = DERExpandablePlugin(8, aux_weight=0.7, balance_epochs=0, balance_lr=0.1, balance_temperature=1.0,
                                 balance_batch_size=4, seed=0, device=CPU)
    plugin.new_classes = [2, 3]
    x, y = torch.rand(6, 1, 2, 2), torch.tensor([0, 1, 2, 3, 2, 0])
    out = model(x)
    base = F.cross_entropy(out, y)
    s = SimpleNamespace(model=model, mb_y=y, loss=base)
    plugin.before_backward(s)
    aux = model.aux_head(model.extractors[1](x))[:, [2, 3, 4]]
    expected = base + 0.7 * F.cross_entropy(aux, torch.tensor([2, 2, 0, 1, 0, 2]))
    torch.testing.assert_close(s.loss, expected)


def test_der_rebalancing_changes_only_the_head():
    model = ExpandableNet(_net(4), n_experiences=2, n_classes=4)
    model.activate(0)
    plugin = DERExpandablePlugin(8, aux_weight=1.0, balance_epochs=3, balance_lr=0.5, balance_temperature=2.0,
                                 balance_batch_size=4, seed=0, device=CPU)
    plugin.memory.update(model, torch.rand(16, 1, 2, 2), torch.arange(16) % 2, torch.zeros(16, dtype=torch.long), CPU)
    plugin.old_classes = [0, 1]
    before = copy.deepcopy(model.state_dict())
    plugin.rebalance_head(model)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= {"head.weight", "head.bias"}
    assert torch.equal(before["head.weight"][:, 5:], after["head.weight"][:, 5:])  # inactive columns untouched


def test_icarl_and_der_memory_counts_exemplars_as_uint8(params, data_roots, tmp_path):
    import pandas as pd

    from clsuite.image.train import train_run

    _, prepared = data_roots
    for method in ("icarl", "der_expandable"):
        run = train_run(params, "smnist_smoke", method, 0, prepared, tmp_path)
        exp = pd.read_parquet(run / "experiences.parquet")
        mem = params.method(method).config.mem_size
        pixels = 28 * 28
        first = exp.iloc[0]
        # after experience 1: min(mem, its 90 samples... ) exemplars of 2 classes, m = mem // 2 each
        n_first = 2 * min(mem // 2, 45)
        if method == "icarl":  # + the frozen old network + 2 class means
            assert first.extra_memory_bytes == n_first * pixels + first.model_bytes + 4 * 2 * 100
        else:  # DER's first experience has one extractor: extra memory is the exemplars only
            assert first.extra_memory_bytes == n_first * pixels
            assert exp.model_bytes.is_monotonic_increasing and exp.model_bytes.iloc[-1] > first.model_bytes
