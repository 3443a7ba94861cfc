"""FOSTER (issue #21, item 2): boosting loss and balanced KD against hand computations on
tiny tensors, the network's boosting/compression cycle, resume after an experience and
inside one with identical records (the uninterrupted run is the smoke run on smnist_smoke)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from clsuite.image.records import read_records
from clsuite.image.train import train_run
from clsuite.methods import METHODS
from clsuite.methods.exemplars import tensor_dataset
from clsuite.methods.foster import FOSTERNet, FOSTERPlugin, bkd_loss, class_balance_weights

from fakes.train import Crash, crash_after

CPU = torch.device("cpu")


def ce(row: list[float], label: int) -> float:
    return math.log(sum(math.exp(v) for v in row)) - row[label]


def softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def rows(t: torch.Tensor) -> list[list[float]]:
    return t.detach().double().tolist()


def _mlp(seed: int = 0):
    from clsuite.models.builtin import MLPConfig, mlp

    torch.manual_seed(seed)
    return mlp(MLPConfig(hidden_sizes=[6, 5]), (1, 2, 2), 4)


def _plugin(**kw) -> FOSTERPlugin:
    args = dict(mem_size=4, beta1=0.96, beta2=0.97, lambda_okd=0.5, temperature=2.0, compression_epochs=0,
                compression_lr=0.1, compression_batch_size=2, seed=0, device=CPU)
    return FOSTERPlugin(**{**args, **kw})


def test_foster_is_registered_with_citation_and_scenarios():
    spec = METHODS.get("foster")
    assert spec.citation.startswith("@") and "2022" in spec.citation and "ECCV" in spec.citation
    assert spec.scenarios == ("class_il", "task_il")


def test_class_balance_weights_and_bkd_by_hand():
    raw = [(1 - 0.96) / (1 - 0.96**n) for n in (2, 5, 40)]
    assert class_balance_weights([2, 5, 40], 0.96).tolist() == pytest.approx([v / sum(raw) * 3 for v in raw], rel=1e-6)
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    t = torch.tensor([[2.0, 1.0, 0.0], [-1.0, 0.0, 3.0]])
    w = torch.tensor([0.5, 1.0, 2.0])
    expected = 0.0
    for sr, tr in zip(rows(s), rows(t)):
        q = [a * b for a, b in zip(softmax([v / 2 for v in tr]), w.tolist())]
        q = [v / sum(q) for v in q]
        logp = [math.log(p) for p in softmax([v / 2 for v in sr])]
        expected -= sum(a * b for a, b in zip(q, logp))
    assert float(bkd_loss(s, t, w, 2.0)) == pytest.approx(expected / 2, rel=1e-6)


def test_boosting_branch_is_set_up_as_pycil_update_fc():
    net = FOSTERNet(_mlp(), n_classes=4)
    net.activate(0)
    assert net.active == 1 and not hasattr(net, "aux_head")
    head0 = net.head.weight[:, :5].detach().clone()
    keys = list(net.state_dict())
    net.activate(1)
    assert net.active == 2 and list(net.state_dict()) == keys
    assert torch.equal(net.extractors[1][1].weight, net.extractors[0][1].weight)  # new branch from the old
    assert torch.equal(net.old_head.weight, head0)  # the previous head, frozen
    assert not any(p.requires_grad for p in net.extractors[0].parameters())
    assert not any(p.requires_grad for p in net.old_head.parameters())
    net.extractors[1][1].weight.data += 1.0
    net.activate(1)  # a resume inside the experience: nothing re-copied
    assert not torch.equal(net.extractors[1][1].weight, net.extractors[0][1].weight)


def test_boosting_loss_against_hand_computation():
    """Classes 0, 1 old (2 exemplars each), 2, 3 new (3 and 1 samples): logit-adjusted CE over the
    seen classes + CE of the fe head + λ·KD(z[:, old], z_old[:, old], T=2)."""
    net = FOSTERNet(_mlp(), n_classes=4)
    net.activate(0)
    net.activate(1)
    net.train()
    p = _plugin()
    p.old_classes, p.new_classes = [0, 1], [2, 3]
    p.counts = {0: 2, 1: 2, 2: 3, 3: 1}
    x, y = torch.rand(3, 1, 2, 2), torch.tensor([2, 0, 3])
    z = net(x)
    loss = float(p.loss(net, z, y).detach())

    f_old, f_new = net.extractors[0](x), net.extractors[1](x)
    fe, old = rows(net.fe_head(f_new)), rows(net.old_head(f_old))
    raw = [(1 - 0.96) / (1 - 0.96**n) for n in (2, 2, 3, 1)]
    w = [v / sum(raw) * 4 for v in raw]
    clf = sum(ce([a / b for a, b in zip(r, w)], int(c)) for r, c in zip(rows(z), y)) / 3
    fe_ce = sum(ce(r, int(c)) for r, c in zip(fe, y)) / 3
    kd = 0.0
    for r, o in zip(rows(z), old):
        q, logp = softmax([v / 2 for v in o[:2]]), [math.log(v) for v in softmax([v / 2 for v in r[:2]])]
        kd -= sum(a * b for a, b in zip(q, logp))
    assert loss == pytest.approx(clf + fe_ce + 0.5 * kd / 3, rel=1e-5)
    # the old logits are the previous model's output: old head on the frozen old extractor
    assert old[0] == pytest.approx(rows(torch.nn.functional.linear(f_old, net.old_head.weight, net.old_head.bias))[0])


def test_first_experience_is_plain_cross_entropy_over_seen_classes():
    net = FOSTERNet(_mlp(), n_classes=4)
    net.activate(0)
    net.train()
    p = _plugin()
    p.new_classes = [0, 1]
    x, y = torch.rand(2, 1, 2, 2), torch.tensor([1, 0])
    z = net(x)
    assert float(p.loss(net, z, y).detach()) == pytest.approx(sum(ce(r[:2], int(c)) for r, c in zip(rows(z), y)) / 2, rel=1e-6)


def test_compression_replaces_the_model_and_counts_memory_by_hand():
    """After boosting: the student (old extractor, old-class rows of the old head) is distilled by
    BKD; it becomes the model (one branch active, same state-dict layout); the memory is herded."""
    net = FOSTERNet(_mlp(), n_classes=4)
    net.activate(0)
    net.activate(1)
    p = _plugin(compression_epochs=0)
    p.old_classes, p.new_classes = [0, 1], [2, 3]
    per, d = 4 * 6 + 6 + 6 * 5 + 5, 5
    single = per + 4 * (d + 1)
    assert net.single_parameter_count() == single
    # boosting: a second extractor, 5 more head inputs per class, the fe and old heads
    assert p.extra_memory_bytes(net) == 4 * (per + 4 * 5 + 2 * 4 * (d + 1))
    x, y = torch.rand(6, 1, 2, 2), torch.tensor([2, 3, 2, 3, 2, 3])
    exp = SimpleNamespace(dataset=SimpleNamespace(train=lambda: tensor_dataset(x, y, torch.ones(6, dtype=torch.long))))
    keys = list(net.state_dict())
    old_ext = [t.clone() for t in net.extractors[0].parameters()]
    old_rows = net.old_head.weight[:2].clone()
    p.after_training_exp(SimpleNamespace(model=net, experience=exp, train_epochs=1, train_mb_size=2))
    assert net.active == 1 and list(net.state_dict()) == keys
    # zero epochs: the student as initialised (PyCIL: snet from convnets[0], copy_fc(oldfc))
    assert all(torch.equal(a, b) for a, b in zip(net.extractors[0].parameters(), old_ext))
    assert torch.equal(net.head.weight[:2, :d], old_rows)
    assert p.old_classes == [0, 1, 2, 3] and len(p.memory) == 4  # 4 exemplars over the 2 classes herded
    assert p.extra_memory_bytes(net) == p.memory.nbytes_as_images  # compressed: exemplars only


def test_compression_distils_the_teacher():
    """The same two-branch teacher compressed for 0 and for 30 epochs: the BKD of the student
    against the teacher drops."""
    gaps = []
    for epochs in (0, 30):
        net = FOSTERNet(_mlp(), n_classes=4)
        net.activate(0)
        net.activate(1)
        p = _plugin(compression_lr=0.05)
        p.old_classes, p.new_classes, p.counts = [0, 1], [2, 3], {0: 1, 1: 1, 2: 4, 3: 4}
        x, y = torch.rand(8, 1, 2, 2, generator=torch.Generator().manual_seed(1)), torch.tensor([2, 3] * 4)
        net.eval()
        teacher = net(x).detach()
        p.compress(net, x, y, epochs, 2)
        assert net.active == 1
        with torch.no_grad():
            gaps.append(float(bkd_loss(net(x), teacher, p.weights(0.97), 2.0)))
    assert gaps[1] < gaps[0]


# -- runs: smoke + resume ------------------------------------------------------------------------

FAST = {"compression_epochs": 1}


def test_foster_resumes_with_identical_records(params, data_roots, tmp_path):
    """The uninterrupted run is the smoke run on smnist_smoke; the interrupted one resumes after
    experience 2 of 5 and writes identical records."""
    _, prepared = data_roots
    p = params.model_copy(update={"methods": {**params.methods, "foster": FAST}})
    ref = read_records(train_run(p, "smnist_smoke", "foster", 0, prepared, tmp_path / "ref"))
    assert sorted(ref["train_exp"].unique()) == [-1, 0, 1, 2, 3, 4]
    with pytest.raises(Crash):
        train_run(p, "smnist_smoke", "foster", 0, prepared, tmp_path / "cut", on_experience=crash_after(1))
    run_dir = train_run(p, "smnist_smoke", "foster", 0, prepared, tmp_path / "cut")
    assert "resuming from checkpoint after experience 2/5" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)


def test_foster_resumes_inside_an_experience_with_identical_records(params, data_roots, tmp_path, monkeypatch):
    """Epoch checkpoints: interrupted in the third epoch of experience 3 (boosting), resumed after
    its second epoch, the records are those of an uninterrupted run."""
    from test_epoch_resume import _crash_in, _long  # tests/image is on sys.path

    from clsuite.core.errors import ComponentError

    _, prepared = data_roots
    p = _long(params.model_copy(update={"methods": {**params.methods, "foster": FAST}}), checkpoint_every_epochs=1)
    ref = read_records(train_run(p, "smnist_smoke", "foster", 0, prepared, tmp_path / "ref"))
    _crash_in(monkeypatch, exp=2, epoch=2, iteration=3)
    with pytest.raises(ComponentError, match="Crash"):
        train_run(p, "smnist_smoke", "foster", 0, prepared, tmp_path / "cut")
    run_dir = train_run(p, "smnist_smoke", "foster", 0, prepared, tmp_path / "cut")
    assert "resuming experience 3 after epoch 2/4" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)
