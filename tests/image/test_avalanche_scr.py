"""avalanche.scr (clsuite/methods/avalanche/scr.py) against Avalanche 0.6.0's SCR strategy (default,
identity augmentation): same network, data order and seeds give the same weights, class means and
NCM scores; the wrapper's forward modes."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from avalanche.models import SCRModel
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.supervised import SCR as AvalancheSCR

from clsuite.methods.avalanche.scr import SCR, SCRNet
from clsuite.methods.icarl import NO_MEAN_SCORE
from clsuite.models import build_model

from fakes.avalanche_streams import class_mean_stream, seed_all

N_CLASSES, SHAPE = 6, (1, 4, 4)


class _Normalize(torch.nn.Module):
    def forward(self, x):
        return F.normalize(x, p=2, dim=1)


def test_same_weights_means_and_scores_as_avalanche_scr():
    bench = class_mean_stream(SHAPE)[0]
    torch.manual_seed(0)
    ours_model = SCRNet(build_model("mlp", {"hidden_sizes": [16]}, SHAPE, N_CLASSES), N_CLASSES, proj_dim=8)
    start = copy.deepcopy(ours_model)
    ref_model = SCRModel(feature_extractor=start.net.backbone,
                         projection=torch.nn.Sequential(start.projection, _Normalize()))
    x_test = torch.cat([torch.stack([e.dataset[i][0] for i in range(len(e.dataset))]) for e in bench.test_stream])
    kw = dict(train_mb_size=10, train_epochs=2, eval_mb_size=16, evaluator=EvaluationPlugin(loggers=[]))

    seed_all()
    ref = AvalancheSCR(model=ref_model, optimizer=torch.optim.SGD(ref_model.parameters(), lr=0.05), mem_size=30,
                       batch_size_mem=10, temperature=0.1, **kw)
    snaps = []
    for exp in bench.train_stream:
        ref.train(exp, num_workers=0)
        ref_model.eval()
        with torch.no_grad():
            snaps.append((copy.deepcopy(ref_model.feature_extractor.state_dict()),
                          copy.deepcopy(ref_model.eval_classifier.class_means_dict), ref_model(x_test)))

    seed_all()
    params = [p for n, p in ours_model.named_parameters() if not n.startswith("net.head")]  # (SCR's model has no head)
    ours = Naive(ours_model, torch.optim.SGD(params, lr=0.05), torch.nn.CrossEntropyLoss(),
                 plugins=[SCR(mem_size=30, batch_size_mem=10, temperature=0.1)], **kw)
    for k, exp in enumerate(bench.train_stream):
        ours.train(exp, num_workers=0)
        w_ref, means_ref, out_ref = snaps[k]
        for name, w in ours_model.net.backbone.state_dict().items():
            torch.testing.assert_close(w, w_ref[name], rtol=1e-5, atol=1e-6, msg=f"exp {k}: {name}")
        seen = sorted(means_ref)
        assert seen == list(range(2 * k + 2)) and ours_model.has_mean.nonzero().flatten().tolist() == seen
        torch.testing.assert_close(ours_model.class_means[seen], torch.stack([means_ref[c] for c in seen]),
                                   rtol=1e-5, atol=1e-6)
        ours_model.eval()
        with torch.no_grad():
            out = ours_model(x_test)
        torch.testing.assert_close(out[:, seen], out_ref[:, seen], rtol=1e-5, atol=1e-5, msg=f"exp {k}: scores")
        assert (out[:, 2 * k + 2:] == NO_MEAN_SCORE).all()
    assert not torch.equal(ours_model.net.backbone.state_dict()["1.weight"], start.net.backbone.state_dict()["1.weight"])


def test_wrapper_forward_modes():
    net = build_model("mlp", {"hidden_sizes": [5]}, SHAPE, 3)
    model = SCRNet(net, 3, proj_dim=4)
    x = torch.randn(7, *SHAPE)
    model.train()
    assert torch.equal(model(x), net(x)) and model.last_features.shape == (7, 5)
    model.eval()
    assert torch.equal(model(x), net(x))  # no class mean yet: the network's logits
    mu = F.normalize(torch.randn(5), dim=0)
    model.blend_means({1: mu})
    model.blend_means({1: -mu})  # momentum 0.5: (mu + -mu) / 2 = 0, as Avalanche's NCM
    assert torch.equal(model.class_means[1], torch.zeros(5))
    model.blend_means({1: mu})  # an all-zero mean counts as unknown (Avalanche): replaced
    with torch.no_grad():
        out = model(x)
        want = -(F.normalize(net.features(x), dim=1) - mu).norm(dim=1)
    torch.testing.assert_close(out[:, 1], want)
    assert (out[:, [0, 2]] == NO_MEAN_SCORE).all()
