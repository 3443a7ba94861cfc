"""The Mammoth/PyCIL staples built in (issue #21): ER-ACE, X-DER, GDumb, WA, LUCIR,
PODNet, MEMO.

Each loss/update is checked against a value written out by hand (plain Python/numpy on
tiny tensors, not the code under test); each method resumes after an interruption with
records identical to an uninterrupted run (which is also its smoke run on smnist_smoke).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

from clsuite.image.records import read_records
from clsuite.image.train import train_run
from clsuite.methods import METHODS
from clsuite.methods.er_ace import ERACEPlugin, ace_mask
from clsuite.methods.gdumb import GDumbPlugin, GreedyClassBalancedMemory
from clsuite.methods.memo import MEMONet, MEMOPlugin, split_backbone
from clsuite.methods.lucir import CosineLinear, LUCIRPlugin, margin_ranking
from clsuite.methods.podnet import PODNetConfig, PODNetPlugin, pod_spatial, block_outputs, wrap_podnet
from clsuite.methods.wa import WAPlugin, kd_loss, weight_align
from clsuite.methods.x_der import XDERPlugin, update_logits

from fakes.train import Crash, crash_after

CPU = torch.device("cpu")
STAPLES = ["er_ace", "x_der", "gdumb", "wa", "lucir", "podnet", "memo"]


def ce(row: list[float], label: int) -> float:
    """Cross-entropy of one row of logits, written out: log Σ exp − z_label."""
    return math.log(sum(math.exp(v) for v in row)) - row[label]


def softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def linear(seed: int, d_in: int, k: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d_in, k)


def rows(t: torch.Tensor) -> list[list[float]]:
    return t.detach().double().tolist()


# -- registry ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", STAPLES)
def test_staples_are_registered_with_citation_and_scenarios(name):
    spec = METHODS.get(name)
    assert spec.citation.startswith("@") and "year" in spec.citation
    assert METHODS.origin(name).startswith("clsuite.methods.")
    assert "class_il" in spec.scenarios


# -- ER-ACE -------------------------------------------------------------------------------------

def test_ace_mask_by_hand():
    logits = torch.arange(12.0).view(2, 6)
    masked = ace_mask(logits, present=torch.tensor([2, 3]), seen=torch.tensor([0, 1, 2, 3]))
    lo = torch.finfo(torch.float32).min
    assert masked[0].tolist() == [lo, lo, 2.0, 3.0, 4.0, 5.0]


def test_er_ace_loss_against_hand_computation():
    """3 samples, 4 classes; classes 0, 1 seen before, the minibatch holds only class 2:
    loss = mean CE over the logits of classes {2, 3} (0, 1 masked) + CE of the 2 buffer rows."""
    model = linear(0, 2, 4)
    plugin = ERACEPlugin(mem_size=2, batch_size_mem=2, seed=0)
    bx, by = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    plugin.buffer.add(bx, by, torch.zeros(2, dtype=torch.long))
    plugin.seen = torch.tensor([0, 1])
    x = torch.tensor([[0.5, -1.0], [2.0, 0.3], [-0.7, 0.1]])
    y = torch.tensor([2, 2, 2])
    out = model(x)
    s = SimpleNamespace(mb_x=x, mb_y=y, mb_output=out, model=model, device=CPU, loss=torch.zeros(()),
                        clock=SimpleNamespace(train_exp_counter=1))
    plugin.before_backward(s)
    stream = sum(ce(r[2:], 0) for r in rows(out)) / 3  # only classes 2, 3 unmasked; 2 is position 0
    buffer = sum(ce(r, int(c)) for r, c in zip(rows(model(bx)), by)) / 2
    assert float(s.loss.detach()) == pytest.approx(stream + buffer, rel=1e-6)
    assert plugin.seen.tolist() == [0, 1, 2]


def test_er_ace_first_experience_keeps_plain_cross_entropy():
    plugin = ERACEPlugin(mem_size=4, batch_size_mem=2, seed=0)
    s = SimpleNamespace(mb_y=torch.tensor([0, 1]), mb_output=torch.zeros(2, 3), loss=torch.tensor(7.0),
                        clock=SimpleNamespace(train_exp_counter=0))
    plugin.before_backward(s)
    assert float(s.loss) == 7.0


def test_example_package_mirrors_the_built_in_er_ace():
    """The demo package (examples/clsuite-er-ace) keeps the same logic as the built-in."""
    example = pytest.importorskip("clsuite_er_ace")
    model = linear(1, 2, 4)
    x, y = torch.randn(5, 2, generator=torch.Generator().manual_seed(0)), torch.tensor([2, 3, 2, 3, 2])
    losses = []
    for plugin in (ERACEPlugin(8, 3, seed=4), example.ERACEPlugin(8, 3, seed=4)):
        plugin.buffer.add(torch.randn(6, 2, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1] * 3),
                          torch.zeros(6, dtype=torch.long))
        plugin.seen = torch.tensor([0, 1])
        s = SimpleNamespace(mb_x=x, mb_y=y, mb_output=model(x), model=model, device=CPU, loss=torch.zeros(()),
                            clock=SimpleNamespace(train_exp_counter=1))
        plugin.before_backward(s)
        losses.append(float(s.loss))
    assert losses[0] == losses[1]


# -- X-DER --------------------------------------------------------------------------------------

def test_x_der_update_logits_by_hand():
    old = torch.tensor([[2.0, 1.0, 0.0, 0.0], [0.5, 3.0, 9.0, 9.0]])
    new = torch.tensor([[0.0, 0.0, 3.0, 1.0], [7.0, 7.0, 1.0, 2.0]])
    out = update_logits(old, new, torch.tensor([0, 1]), torch.tensor([2, 3]), gamma=0.85)
    # row 0: max(3, 1) = 3 > old[y] = 2: scaled by 0.85·2/3; row 1: 2 < 3: copied as is
    assert out[0].tolist() == pytest.approx([2.0, 1.0, 3 * 0.85 * 2 / 3, 1 * 0.85 * 2 / 3])
    assert out[1].tolist() == pytest.approx([0.5, 3.0, 1.0, 2.0])
    assert old[1, 2] == 9.0  # inputs untouched


def _x_der(mem: int = 2, bs: int = 2) -> XDERPlugin:
    return XDERPlugin(mem_size=mem, batch_size_mem=bs, alpha=0.3, beta=0.8, gamma=0.85, eta=0.1, m=0.3,
                      experiences=[[0, 1], [2, 3], [4, 5]], n_classes=6, seed=0)


def test_x_der_loss_and_future_past_update_against_hand_computation():
    """Experience 1 of 3 (heads {0,1}, {2,3}, {4,5}); 3 stream samples of classes 2, 3; a
    buffer of 2 rows (classes 0, 1), both drawn in each buffer batch (so deduplicated to 2)."""
    model = linear(0, 2, 6)
    p = _x_der()
    p.task = 1
    p.x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p.y = torch.tensor([0, 1])
    p.logits = torch.tensor([[2.0, 0.5, 0.1, 0.2, 0.3, 0.4], [0.1, 1.5, 0.0, 0.0, 0.0, 0.0]])
    stored = rows(p.logits)
    x = torch.tensor([[0.5, -1.0], [2.0, 0.3], [-0.7, 0.1]])
    y = torch.tensor([2, 3, 2])
    out = model(x)
    loss = float(p.loss(model, out, y).detach())

    z, b = rows(out), rows(model(p.x))
    stream = sum(ce(r[2:4], int(c) - 2) for r, c in zip(z, y)) / 3
    mse = sum((b[i][j] - stored[i][j]) ** 2 for i in range(2) for j in range(6)) / 12
    past_ce = sum(ce(b[i][0:2], i) for i in range(2)) / 2

    def pos_mean(v):
        v = [a for a in v if a > 0]
        return sum(v) / len(v) if v else 0.0

    past = []
    for r in z:  # softmax over heads 0..1 (classes 0..3): max old-head prob + m − max current-head prob
        q = softmax(r[0:4])
        past.append(max(q[0:2]) + 0.3 - max(q[2:4]))
    futu = [max(r[4:6]) + 0.3 - max(r[2:4]) for r in z]
    futu += [max(b[i][4:6]) + 0.3 - max(b[i][0:2]) for i in range(2)]  # buffer rows against their own head 0
    expected = stream + 0.3 * mse + 0.8 * past_ce + 0.1 * pos_mean(past) + 0.1 * pos_mean(futu)
    assert loss == pytest.approx(expected, rel=1e-5)

    # first draw of each row this experience: chosen with probability 1/1, heads >= 1 (classes 2..5)
    # transplanted from the current output, scaled by 0.85·stored[y]/max where max > stored[y]
    assert p.counter[:2].tolist() == [1.0, 1.0]
    for i in range(2):
        gt, top = stored[i][i], max(b[i][2:6])
        scale = 0.85 * gt / top if top > gt else 1.0
        assert p.logits[i].tolist() == pytest.approx(stored[i][0:2] + [v * scale for v in b[i][2:6]], rel=1e-5)


def test_x_der_end_of_experience_fills_cuts_and_updates_by_hand():
    p = _x_der(mem=6)
    forward = lambda xb: torch.stack([xb[:, 0] * k for k in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)], dim=1)  # noqa: E731
    x0 = torch.arange(10.0).view(10, 1).repeat(1, 1) + 1  # values 1..10
    y0 = torch.tensor([0, 1] * 5)
    p.task = 0
    p.end_of_experience(forward, x0, y0)
    # 6 free slots, 2 classes: 3 each, first in stream order
    assert p.y.tolist() == [0, 1, 0, 1, 0, 1] and p.x[:, 0].tolist() == [1, 2, 3, 4, 5, 6]
    assert p.logits[0].tolist() == [1, 2, 3, 4, 5, 6]  # task 0: stored as output, no past heads
    p.task = 1
    x1, y1 = torch.tensor([[20.0], [30.0], [40.0], [50.0], [60.0]]), torch.tensor([2, 3, 2, 3, 3])
    p.end_of_experience(forward, x1, y1)
    # 6 // 4 seen classes = 1 kept per old class; 4 free slots: 2 per new class, stream order
    assert p.y.tolist() == [0, 1, 2, 3, 2, 3] and p.x[:, 0].tolist() == [1, 2, 20, 30, 40, 50]
    # new row (x=20, y=2): past heads (classes 0, 1) = 20, 40; max 40 > 20·3 = 60? no: kept as is
    assert p.logits[2].tolist() == pytest.approx([20, 40, 60, 80, 100, 120])
    # old row (x=1, y=0): heads >= 1 from the final model (3..6 · 1), max 6 > stored 1: scaled 0.85·1/6
    assert p.logits[0].tolist() == pytest.approx([1, 2] + [v * 0.85 / 6 for v in (3, 4, 5, 6)])
    # old row (x=2, y=1): stored [2, 4, ...], gt 4; transplant 6, 8, 10, 12: max 12 > 4: scale 0.85·4/12
    assert p.logits[1].tolist() == pytest.approx([2, 4] + [v * 0.85 * 4 / 12 for v in (6, 8, 10, 12)])
    assert p.extra_memory_bytes(None) == 6 * 1 + 4 * 6 * 6


def test_x_der_state_round_trip():
    p = _x_der(mem=6)
    p.task = 0
    p.end_of_experience(lambda xb: xb.repeat(1, 6), torch.rand(8, 1), torch.tensor([0, 1] * 4))
    q = _x_der(mem=6)
    q.load_state_dict(p.state_dict())
    assert torch.equal(q.x, p.x) and torch.equal(q.logits, p.logits) and q.task == p.task
    assert torch.equal(torch.rand(3, generator=q.generator), torch.rand(3, generator=p.generator))


# -- GDumb --------------------------------------------------------------------------------------

def test_gdumb_greedy_class_balanced_sampler_by_hand():
    """Capacity 4, stream 0 0 0 0 1 1 2: the 1s each replace a 0 (count 0, then 1 < 4/2);
    the 2 (count 0 < 4/3) replaces a sample of the largest class, 0 and 1 tie at 2: class 0."""
    mem = GreedyClassBalancedMemory(4, seed=0)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    x = torch.arange(7.0).view(7, 1)
    mem.add(x, y, torch.zeros(7, dtype=torch.long))
    assert sorted(mem.y.tolist()) == [0, 1, 1, 2]
    assert all(int(x[int(v)].item()) == int(v) and y[int(v)] == c for v, c in zip(mem.x[:, 0], mem.y))
    mem.add(torch.tensor([[7.0]]), torch.tensor([1]), torch.zeros(1, dtype=torch.long))  # 2 >= 4/3: refused
    assert sorted(mem.y.tolist()) == [0, 1, 1, 2]
    assert mem.nbytes_as_images == 4


def test_gdumb_resets_the_model_before_each_experience_and_trains_on_memory():
    model = linear(0, 2, 3)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    plugin = GDumbPlugin(mem_size=4, seed=0)
    s = SimpleNamespace(model=model)
    plugin.before_train_dataset_adaptation(s)
    with torch.no_grad():
        model.weight.add_(1.0)  # "training"
    plugin.before_train_dataset_adaptation(s)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in init.items())
    q = GDumbPlugin(mem_size=4, seed=1)
    q.load_state_dict(plugin.state_dict())
    assert all(torch.equal(q.init_state[k], v) for k, v in init.items())


# -- WA -----------------------------------------------------------------------------------------

def test_wa_kd_loss_and_weight_align_by_hand():
    new, old = torch.tensor([[1.0, 2.0], [0.0, -1.0]]), torch.tensor([[0.5, 0.5], [2.0, 0.0]])
    expected = 0.0
    for zn, zo in zip(rows(new), rows(old)):
        q, p = softmax([v / 2 for v in zo]), softmax([v / 2 for v in zn])
        expected -= sum(qi * math.log(pi) for qi, pi in zip(q, p))
    assert float(kd_loss(new, old, 2.0)) == pytest.approx(expected / 2, rel=1e-6)

    w = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0], [0.0, 2.0]])  # norms 5, 1 | 10, 2
    gamma = weight_align(w, old_classes=[0, 1], new_classes=[2, 3])
    assert gamma == pytest.approx(3.0 / 6.0)
    assert w.tolist() == [[3, 4], [0, 1], [3, 4], [0, 1]]


def test_wa_loss_against_hand_computation():
    """Classes 0, 1 old, 2 new (3 of 4 seen): CE over the 3 seen logits + 2·KD on the old ones."""
    model, old_net = linear(0, 2, 4), linear(1, 2, 4)
    plugin = WAPlugin(mem_size=4, kd_weight=2.0, temperature=2.0, device=CPU)
    plugin.old_net, plugin.old_classes, plugin.new_classes = old_net, [0, 1], [2]
    x, y = torch.tensor([[0.5, -1.0], [2.0, 0.3], [-0.7, 0.1]]), torch.tensor([2, 0, 1])
    loss = float(plugin.loss(model(x), y, x).detach())
    z, zo = rows(model(x)), rows(old_net(x))
    ce_part = sum(ce(r[:3], int(c)) for r, c in zip(z, y)) / 3
    kd = 0.0
    for zn, zold in zip(z, zo):
        q, p = softmax([v / 2 for v in zold[:2]]), softmax([v / 2 for v in zn[:2]])
        kd -= sum(qi * math.log(pi) for qi, pi in zip(q, p))
    assert loss == pytest.approx(ce_part + 2.0 * kd / 3, rel=1e-6)


def test_wa_aligns_only_after_the_first_experience():
    model = linear(0, 2, 4)
    plugin = WAPlugin(mem_size=4, kd_weight=2.0, temperature=2.0, device=CPU)
    plugin.new_classes = [0, 1]
    before = model.weight.detach().clone()
    plugin.end_of_experience(SimpleNamespace(head=model))
    assert torch.equal(model.weight, before)
    plugin.old_classes, plugin.new_classes = [0, 1], [2, 3]
    plugin.end_of_experience(SimpleNamespace(head=model))
    norms = model.weight.detach().norm(dim=1)
    assert float(norms[2:].mean()) == pytest.approx(float(norms[:2].mean()), rel=1e-6)
    assert torch.equal(model.weight[:2], before[:2])


def test_wa_weight_clipping_by_hand_and_only_when_asked():
    """The paper's clipping W <- max(W, 0) after each step, written out elementwise; the trainer
    sees the hook only with ``clip_weights`` (the default's hot loop and records are unchanged)."""
    from clsuite.image.trainer import _active_hook

    head = linear(0, 3, 4)
    before, bias = rows(head.weight), head.bias.detach().clone()
    plugin = WAPlugin(mem_size=4, kd_weight=2.0, temperature=2.0, device=CPU, clip_weights=True)
    plugin.after_update(SimpleNamespace(model=SimpleNamespace(head=head)))
    assert rows(head.weight) == [[v if v > 0 else 0.0 for v in r] for r in before]
    assert any(v < 0 for r in before for v in r) and torch.equal(head.bias, bias)
    assert _active_hook(plugin, "after_update") is not None
    assert _active_hook(WAPlugin(mem_size=4, kd_weight=2.0, temperature=2.0, device=CPU), "after_update") is None


# -- LUCIR --------------------------------------------------------------------------------------

def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_lucir_cosine_classifier_by_hand():
    head = CosineLinear(2, 3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
        head.sigma.fill_(4.0)
    out = head(nn.Linear(2, 2)(torch.tensor([[3.0, 4.0]])) * 0 + torch.tensor([[3.0, 4.0]]))  # a non-leaf input
    assert out[0].tolist() == pytest.approx([4 * 0.6, 4 * 0.8, 4 * 7 / (5 * math.sqrt(2))])
    assert head.last_input is not None
    from clsuite.models import frozen_copy

    assert frozen_copy(head).last_input is None  # a copy taken mid-step (epoch resume) drops the cache
    assert head.last_input is not None
    head.eval()
    head(torch.tensor([[3.0, 4.0]]))
    assert head.last_input is None


def test_lucir_margin_ranking_by_hand():
    c = torch.tensor([[0.9, 0.1, 0.5, 0.7], [0.2, 0.3, 0.1, 0.0], [0.1, 0.2, 0.9, 0.3]])
    y = torch.tensor([0, 1, 2])  # rows 0, 1 are of old classes {0, 1}; new classes {2, 3}; K = 2
    got = float(margin_ranking(c, y, [0, 1], [2, 3], k=2, margin=0.5))
    pairs = [(0.9, 0.7), (0.9, 0.5), (0.3, 0.1), (0.3, 0.0)]
    assert got == pytest.approx(sum(max(0.0, 0.5 - g + n) for g, n in pairs) / 4)
    assert float(margin_ranking(c[2:], y[2:], [0, 1], [2, 3], k=2, margin=0.5)) == 0.0


def test_lucir_loss_against_hand_computation():
    """Old classes {0, 1}, new {2}; λ = 5·sqrt(2/1); CE on σ·cos over the 3 seen classes."""
    torch.manual_seed(0)
    feat, old_feat = nn.Linear(2, 3), nn.Linear(2, 3)
    model = SimpleNamespace(head=CosineLinear(3, 4))
    old_net = SimpleNamespace(features=old_feat)
    plugin = LUCIRPlugin(mem_size=4, lambda_base=5.0, lambda_mr=1.0, k_mr=2, mr_margin=0.5, imprint_weights=True,
                         device=CPU)
    plugin.old_net, plugin.old_classes, plugin.new_classes = old_net, [0, 1], [2]
    x, y = torch.tensor([[0.5, -1.0], [2.0, 0.3], [-0.7, 0.1]]), torch.tensor([2, 0, 1])
    f = feat(x)
    logits = model.head(f)
    loss = float(plugin.loss(logits, model.head.cosine(f), f, y, x).detach())
    z, w, sigma = rows(logits), rows(model.head.weight), float(model.head.sigma)
    fs, fo = rows(f), rows(old_feat(x))
    ce_part = sum(ce(r[:3], int(c)) for r, c in zip(z, y)) / 3
    less_forget = 5 * math.sqrt(2) * sum(1 - cos(a, b) for a, b in zip(fs, fo)) / 3
    cs = [[cos(fr, wc) for wc in w] for fr in fs]
    assert z[0][1] == pytest.approx(sigma * cs[0][1], rel=1e-5)
    mr = sum(max(0.0, 0.5 - cs[i][int(y[i])] + cs[i][2]) for i in (1, 2)) / 2  # K = min(2, 1 new class)
    assert loss == pytest.approx(ce_part + less_forget + mr, rel=1e-5)


def test_lucir_imprints_new_class_weights_by_hand():
    plugin = LUCIRPlugin(mem_size=4, lambda_base=5.0, lambda_mr=1.0, k_mr=2, mr_margin=0.5, imprint_weights=True,
                         device=CPU)
    plugin.old_classes = [0]
    model = SimpleNamespace(head=CosineLinear(2, 2))
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[0.0, 3.0], [9.0, 9.0]]))
    feats, y = torch.tensor([[2.0, 0.0], [0.0, 5.0], [7.0, 7.0]]), torch.tensor([1, 1, 0])
    plugin.imprint(model, feats, y, [1])
    # class 1: normalised features (1, 0), (0, 1): mean (.5, .5), normalised (1/√2, 1/√2), × old norm 3
    assert model.head.weight[1].tolist() == pytest.approx([3 / math.sqrt(2), 3 / math.sqrt(2)])
    assert model.head.weight[0].tolist() == [0.0, 3.0]


# -- PODNet -------------------------------------------------------------------------------------

def test_podnet_lsc_reduces_proxies_by_hand():
    head = CosineLinear(2, 2, n_proxies=2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]]))
    c = head.cosine(torch.tensor([[3.0, 4.0]]))[0].tolist()
    cos_rows = [0.6, 0.8, -0.6, 7 / (5 * math.sqrt(2))]
    expected = []
    for a, b in (cos_rows[0:2], cos_rows[2:4]):
        w = softmax([a, b])
        expected.append(w[0] * a + w[1] * b)
    assert c == pytest.approx(expected, rel=1e-6)


def test_pod_spatial_by_hand():
    """One block, 1 sample, 1 channel, 2x2 maps: P(a) = normalise(row sums of a², column sums of a²)."""
    a = torch.tensor([[[[1.0, 2.0], [3.0, 0.0]]]])
    b = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])

    def pooled(m):
        sq = [[v * v for v in r] for r in m]
        v = [sum(sq[0]), sum(sq[1]), sq[0][0] + sq[1][0], sq[0][1] + sq[1][1]]  # sum over w (per h), then over h
        n = math.sqrt(sum(t * t for t in v))
        return [t / n for t in v]

    pa, pb = pooled(a[0, 0].tolist()), pooled(b[0, 0].tolist())
    expected = math.sqrt(sum((x - y) ** 2 for x, y in zip(pa, pb)))
    assert float(pod_spatial([a], [b])) == pytest.approx(expected, rel=1e-6)
    # a 2-d activation (N, D) is read as (N, D, 1, 1): normalised squares
    u, v = torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 1.0]])
    nu = [1 / math.sqrt(34) * t for t in (1, 4, 1, 4)]  # norm of (1, 4, 1, 4): sqrt(34)
    nv = [1 / math.sqrt(34) * t for t in (4, 1, 4, 1)]
    assert float(pod_spatial([u], [v])) == pytest.approx(math.sqrt(sum((x - y) ** 2 for x, y in zip(nu, nv))))


def test_podnet_blocks_of_the_builtin_backbones():
    from clsuite.models.builtin import ConvNetConfig, MLPConfig, convnet, mlp

    x = torch.rand(2, 1, 8, 8)
    for net, n_maps in ((mlp(MLPConfig(hidden_sizes=[6, 5]), (1, 8, 8), 3), 1),
                        (convnet(ConvNetConfig(channels=[2, 3], feature_dim=4), (1, 8, 8), 3), 2)):
        features, maps = block_outputs(net.backbone, x)
        assert torch.equal(features, net.features(x)) and len(maps) == n_maps


def test_podnet_refuses_a_backbone_without_readable_blocks():
    from clsuite.core.errors import ParamsError

    net = SimpleNamespace(backbone=nn.Linear(4, 4), feature_dim=4)
    ctx = SimpleNamespace(input_shape=(1, 2, 2), n_classes=3)
    with pytest.raises(ParamsError, match="podnet: cannot read the blocks"):
        wrap_podnet(net, PODNetConfig(), ctx)


def test_podnet_loss_against_hand_computation():
    """Old {0, 1}, new {2} (φ = sqrt(3/1)); an mlp backbone: one block map (the first ReLU)."""
    from clsuite.models.builtin import MLPConfig, mlp

    ctx = SimpleNamespace(input_shape=(1, 1, 2), n_classes=4)
    torch.manual_seed(0)
    model = wrap_podnet(mlp(MLPConfig(hidden_sizes=[3, 3]), (1, 1, 2), 4), PODNetConfig(n_proxies=2), ctx)
    torch.manual_seed(1)
    old = wrap_podnet(mlp(MLPConfig(hidden_sizes=[3, 3]), (1, 1, 2), 4), PODNetConfig(n_proxies=2), ctx)
    plugin = PODNetPlugin(mem_size=4, lambda_c=5.0, lambda_f=1.0, device=CPU)
    plugin.old_net, plugin.old_classes, plugin.new_classes = old.eval(), [0, 1], [2]
    x, y = torch.tensor([[[[0.5, -1.0]]], [[[2.0, 0.3]]], [[[-0.7, 0.1]]]]), torch.tensor([2, 0, 1])
    logits, features, maps = model.forward_all(x)
    loss = float(plugin.loss(logits, features, maps, y, x).detach())
    _, old_features, old_maps = old.forward_all(x)
    z = rows(logits)
    ce_part = sum(ce(r[:3], int(c)) for r, c in zip(z, y)) / 3
    flat = sum(1 - cos(a, b) for a, b in zip(rows(features), rows(old_features))) / 3
    spatial = 0.0
    for a, b in zip(rows(maps[0]), rows(old_maps[0])):
        na, nb = math.sqrt(sum(t ** 4 for t in a)), math.sqrt(sum(t ** 4 for t in b))
        pa = [t * t / na for t in a] * 2  # (D, 1, 1): both poolings give the squares
        pb = [t * t / nb for t in b] * 2
        pa, pb = [t / math.sqrt(2) for t in pa], [t / math.sqrt(2) for t in pb]
        spatial += math.sqrt(sum((u - v) ** 2 for u, v in zip(pa, pb)))
    phi = math.sqrt(3)
    assert loss == pytest.approx(ce_part + phi * 1.0 * flat + phi * 5.0 * spatial / 3, rel=1e-5)


def test_podnet_nca_loss_by_hand():
    """The paper's Eq. 8 written out per sample: [log Σ_{c≠y} exp(z_c) − (z_y − ηδ)]_+, mean; the
    positive's own column is not in the denominator, and a sample past the margin contributes 0."""
    from clsuite.methods.podnet import nca_loss

    z = [[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [9.0, 0.0, 0.0]]  # row 2: far past the margin
    y, eta, delta = [0, 2, 0], 1.5, 0.6
    expected = 0.0
    for r, c in zip(z, y):
        neg = math.log(sum(math.exp(v) for i, v in enumerate(r) if i != c))
        expected += max(0.0, neg - (r[c] - eta * delta))
    got = nca_loss(torch.tensor(z), torch.tensor(y), torch.tensor([eta]), delta)
    assert float(got) == pytest.approx(expected / 3, rel=1e-6)
    assert max(0.0, math.log(2) - (9.0 - eta * delta)) == 0.0  # the hinge is what zeroes row 2


def test_podnet_plugin_uses_nca_over_the_seen_classes():
    """classification_loss nca: the NCA term over the seen columns (unseen ones left out, as for CE)."""
    from clsuite.methods.podnet import nca_loss

    plugin = PODNetPlugin(mem_size=4, lambda_c=5.0, lambda_f=1.0, device=CPU, classification_loss="nca",
                          nca_margin=0.6)
    plugin.old_classes, plugin.new_classes = [], [0, 1, 2]  # first experience: no distillation
    logits, y, eta = torch.tensor([[1.0, -0.5, 0.2, 7.0], [0.3, 0.9, -0.1, 7.0]]), torch.tensor([0, 2]), torch.tensor([2.0])
    got = plugin.loss(logits, torch.zeros(2, 3), [], y, torch.zeros(2, 1, 1, 2), eta)
    assert float(got) == pytest.approx(float(nca_loss(logits[:, :3], y, eta, 0.6)), rel=1e-7)
    assert float(got) != pytest.approx(float(nca_loss(logits, y, eta, 0.6)), rel=1e-3)  # column 3 unseen


# -- MEMO ---------------------------------------------------------------------------------------

def _mlp(hidden=(6, 5), k=4, seed=0):
    from clsuite.models.builtin import MLPConfig, mlp

    torch.manual_seed(seed)
    return mlp(MLPConfig(hidden_sizes=list(hidden)), (1, 2, 2), k)


def test_memo_split_composes_to_the_backbone():
    from clsuite.core.errors import ParamsError
    from clsuite.models.builtin import ConvNetConfig, convnet

    x = torch.rand(3, 1, 8, 8)
    conv = convnet(ConvNetConfig(channels=[2, 3], feature_dim=4), (1, 8, 8), 3)
    for net in (_mlp(), conv):
        base, spec = split_backbone(net.backbone, 1)
        assert torch.equal(spec(base(x if net is conv else x[:, :, :2, :2])),
                           net.backbone(x if net is conv else x[:, :, :2, :2]))
    base, spec = split_backbone(_mlp().backbone, 1)
    assert [type(m).__name__ for m in spec] == ["Linear", "ReLU"]  # the last block is specialized
    with pytest.raises(ParamsError, match="specialized_blocks must be fewer"):
        split_backbone(_mlp().backbone, 2)
    with pytest.raises(ParamsError, match="cannot split"):
        split_backbone(nn.Linear(2, 2), 1)


def test_memo_expands_only_the_specialized_block_and_counts_its_memory_by_hand():
    net = MEMONet(_mlp(hidden=(6, 5)), n_experiences=3, n_classes=4, specialized_blocks=1, train_base=False)
    base = 4 * 6 + 6  # Linear(4, 6)
    per = 6 * 5 + 5  # Linear(6, 5): one specialized block
    assert net.single_parameter_count() == base + per + 4 * (5 + 1)
    net.activate(0)
    assert net.active_parameter_count() == net.single_parameter_count()
    net.activate(1)
    assert torch.equal(net.extractors[1][0].weight, net.extractors[0][0].weight)  # initialised from the previous
    assert not any(p.requires_grad for p in net.base.parameters())  # train_base false: frozen after the first
    assert not any(p.requires_grad for p in net.extractors[0].parameters())
    assert net.features(torch.rand(2, 1, 2, 2)).shape == (2, 10)
    aux = 5 * 5 + 5  # aux head Linear(5, 4 + 1)
    assert net.active_parameter_count() == base + 2 * per + 4 * (10 + 1) + aux
    plugin = MEMOPlugin(8, 1.0, 0, 0.05, 1.0, 32, seed=0, device=CPU)
    extra = per + 4 * 5 + aux  # one more block, 5 more head inputs per class, the aux head
    assert plugin.extra_memory_bytes(net) == 4 * extra
    trained = MEMONet(_mlp(), 3, 4, 1, train_base=True)
    trained.activate(1)
    assert all(p.requires_grad for p in trained.base.parameters())


def test_memo_aux_loss_and_weight_aligning_by_hand():
    """Experience 1: classes 0, 1 old, 2, 3 new; aux CE over [new 2, new 3, old] on the new
    block's features; after training, the new rows of the active head columns are aligned."""
    from clsuite.methods.exemplars import tensor_dataset

    net = MEMONet(_mlp(), 2, 4, 1)
    net.activate(1)
    plugin = MEMOPlugin(4, 0.5, 0, 0.05, 1.0, 32, seed=0, device=CPU)
    plugin.old_classes, plugin.new_classes = [0, 1], [2, 3]
    x, y = torch.rand(3, 1, 2, 2), torch.tensor([2, 0, 3])
    out = net(x)
    s = SimpleNamespace(model=net, mb_y=y, loss=torch.zeros(()))
    plugin.before_backward(s)
    aux = rows(net.aux_head(net.last_new_features))
    expected = 0.5 * (ce([aux[0][2], aux[0][3], aux[0][4]], 0) + ce([aux[1][2], aux[1][3], aux[1][4]], 2)
                      + ce([aux[2][2], aux[2][3], aux[2][4]], 1)) / 3
    assert float(s.loss.detach()) == pytest.approx(expected, rel=1e-6)
    assert out.shape == (3, 4)

    before = net.head.weight.detach().clone()
    exp = SimpleNamespace(dataset=SimpleNamespace(train=lambda: tensor_dataset(x, y, torch.ones(3, dtype=torch.long))))
    plugin.after_training_exp(SimpleNamespace(model=net, experience=exp))
    active = net.feature_dim
    w = rows(before[:, :active])
    norm = [math.sqrt(sum(v * v for v in r)) for r in w]
    gamma = ((norm[0] + norm[1]) / 2) / ((norm[2] + norm[3]) / 2)
    got = rows(net.head.weight[:, :active])
    assert got[0] == pytest.approx(w[0]) and got[2] == pytest.approx([v * gamma for v in w[2]], rel=1e-6)
    assert torch.equal(net.head.weight[:, active:], before[:, active:])  # inactive columns untouched
    assert plugin.old_classes == [0, 1, 2, 3] and len(plugin.memory) == 3


# -- runs: smoke + resume ------------------------------------------------------------------------

@pytest.mark.parametrize("method, cfg", [(m, {}) for m in STAPLES]
                         + [("podnet_nme", {"type": "podnet", "classifier": "nme", "n_proxies": 1}),
                            ("podnet_nca", {"type": "podnet", "classification_loss": "nca"}),
                            ("wa_clip", {"type": "wa", "clip_weights": True})])
def test_staple_resumes_with_identical_records(params, data_roots, tmp_path, method, cfg):
    """The uninterrupted run is the method's smoke run on smnist_smoke; the interrupted one
    resumes after experience 2 of 5 and writes identical records."""
    _, prepared = data_roots
    p = params.model_copy(update={"methods": {**params.methods, method: cfg}})
    ref_dir = train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "ref")
    ref = read_records(ref_dir)
    assert sorted(ref["train_exp"].unique()) == [-1, 0, 1, 2, 3, 4]
    with pytest.raises(Crash):
        train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "cut", on_experience=crash_after(1))
    run_dir = train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "cut")
    assert "resuming from checkpoint after experience 2/5" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)


@pytest.mark.parametrize("method", STAPLES)
def test_staple_resumes_inside_an_experience_with_identical_records(params, data_roots, tmp_path, monkeypatch,
                                                                    method):
    """Epoch-level checkpoints (tests/image/test_epoch_resume.py): interrupted in the third epoch of
    experience 3, resumed after its second epoch, the records are those of an uninterrupted run."""
    from test_epoch_resume import _crash_in, _long  # tests/image is on sys.path (rootdir-relative test module)

    from clsuite.core.errors import ComponentError

    _, prepared = data_roots
    p = _long(params.model_copy(update={"methods": {**params.methods, method: {}}}), checkpoint_every_epochs=1)
    ref = read_records(train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "ref"))
    _crash_in(monkeypatch, exp=2, epoch=2, iteration=3)
    with pytest.raises(ComponentError, match="Crash"):
        train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "cut")
    run_dir = train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "cut")
    assert "resuming experience 3 after epoch 2/4" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)
