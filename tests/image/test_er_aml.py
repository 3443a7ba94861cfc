"""ER-AML (clsuite/methods/er_aml.py): the metric term equals Avalanche's own ``AMLCriterion`` on the
same inputs and random draws; rows without a positive in memory are left out (by hand); a run on
smnist_smoke resumes with identical records."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clsuite.image.records import read_records
from clsuite.image.train import train_run
from clsuite.methods.er_aml import aml_loss, sup_con, unit

from fakes.train import Crash, crash_after


def _transposed_sup_con(anchor, feats, anchor_y, y, temp, base_temp):
    """Avalanche 0.6.0's ``AMLCriterion.__sup_con_loss`` as written: ``sim.max(dim=1)[0]`` and
    ``log(exp(sim).sum(1))`` without keepdim broadcast over the *columns* of the square (2B, 2B)
    similarity matrix, so each column is normalised by another row's max and log-sum-exp."""
    pos = (anchor_y.reshape(-1, 1) == y.reshape(1, -1)).float()
    sim = anchor @ feats.T / temp
    sim = sim - sim.max(dim=1)[0].detach()
    log_prob = sim - torch.log(torch.exp(sim).sum(1))
    return -(temp / base_temp) * ((pos * log_prob).sum(1) / pos.sum(1)).mean()


def test_metric_term_is_supcon_and_avalanche_differs_only_by_its_broadcast(monkeypatch):
    """Same inputs and draws as Avalanche's ``AMLCriterion``: with Avalanche's column-wise
    normalisation (a missing keepdim) the loss is Avalanche's to the bit; clsuite's row-wise one is
    the supervised contrastive loss of Khosla et al. (SupConLoss: max and log-sum-exp per anchor)."""
    import clsuite.methods.er_aml as E
    from avalanche.training.regularization import AMLCriterion

    torch.manual_seed(0)
    f = nn.Linear(5, 4)
    x_in, y_in, t_in = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2]), torch.zeros(6, dtype=torch.long)
    x_mem, y_mem, t_mem = torch.randn(12, 5), torch.tensor([0, 1, 2] * 4), torch.zeros(12, dtype=torch.long)
    out_buf, y_buf = torch.randn(3, 3), torch.tensor([0, 2, 1])
    torch.manual_seed(7)
    ref = AMLCriterion(f, temp=0.1, base_temp=0.07)(x_in, y_in, t_in, out_buf, y_buf, (x_mem, y_mem, t_mem))
    with monkeypatch.context() as m:
        m.setattr(E, "sup_con", _transposed_sup_con)
        torch.manual_seed(7)
        as_avalanche = aml_loss(f, x_in, y_in, t_in, x_mem, y_mem, t_mem, 0.1, 0.07, True)
    torch.testing.assert_close(as_avalanche + F.cross_entropy(out_buf, y_buf), ref)
    # clsuite's term by hand: per anchor i, -(T/T0) * mean over positives j of log softmax_j(s_i / T)
    torch.manual_seed(7)
    ours = aml_loss(f, x_in, y_in, t_in, x_mem, y_mem, t_mem, 0.1, 0.07, True)
    torch.manual_seed(7)
    vp = y_in[None, :] == y_mem[:, None]
    pos, neg = torch.multinomial(vp.float().T, 1).squeeze(1), torch.multinomial((~vp).float().T, 1).squeeze(1)
    a, c = unit(f(x_in)).repeat(2, 1), unit(f(torch.cat([x_mem[pos], x_mem[neg]])))
    ya, yc = y_in.repeat(2), torch.cat([y_mem[pos], y_mem[neg]])
    terms = []
    for i in range(len(a)):
        logp = torch.log_softmax(a[i] @ c.T / 0.1, dim=0)
        terms.append(logp[yc == ya[i]].mean())
    torch.testing.assert_close(ours, -(0.1 / 0.07) * torch.stack(terms).mean())
    assert abs(float(ours.detach()) - float(as_avalanche.detach())) > 1e-3  # the broadcast matters


def test_rows_without_a_positive_are_left_out():
    torch.manual_seed(0)
    f = nn.Identity()
    x_in, y_in = torch.randn(3, 4), torch.tensor([0, 5, 1])  # class 5 has no positive in memory
    x_mem, y_mem = torch.randn(4, 4), torch.tensor([0, 1, 0, 1])
    t = torch.zeros(3, dtype=torch.long)
    torch.manual_seed(3)
    got = aml_loss(f, x_in, y_in, t, x_mem, y_mem, torch.zeros(4, dtype=torch.long), 0.1, 0.07, True)
    torch.manual_seed(3)
    keep = torch.tensor([True, False, True])
    vp = (y_in[keep][None, :] == y_mem[:, None])
    pos, neg = torch.multinomial(vp.float().T, 1).squeeze(1), torch.multinomial((~vp).float().T, 1).squeeze(1)
    h, hp = unit(x_in[keep]), unit(torch.cat([x_mem[pos], x_mem[neg]]))
    expected = sup_con(h.repeat(2, 1), hp, y_in[keep].repeat(2), torch.cat([y_mem[pos], y_mem[neg]]), 0.1, 0.07)
    torch.testing.assert_close(got, expected)
    none = aml_loss(f, x_in[1:2], y_in[1:2], t[:1], x_mem, y_mem, torch.zeros(4, dtype=torch.long), 0.1, 0.07, True)
    assert float(none) == 0.0


def test_er_aml_resumes_with_identical_records(params, data_roots, tmp_path):
    _, prepared = data_roots
    params = params.model_copy(update={"methods": {**params.methods, "er_aml": {"type": "er_aml"}}})
    ref = read_records(train_run(params, "smnist_smoke", "er_aml", 0, prepared, tmp_path / "ref"))
    assert sorted(ref["train_exp"].unique()) == [-1, 0, 1, 2, 3, 4]
    with pytest.raises(Crash):
        train_run(params, "smnist_smoke", "er_aml", 0, prepared, tmp_path / "cut", on_experience=crash_after(1))
    run_dir = train_run(params, "smnist_smoke", "er_aml", 0, prepared, tmp_path / "cut")
    assert "resuming from checkpoint after experience 2/5" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)
