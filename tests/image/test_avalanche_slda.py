"""avalanche.streaming_lda (clsuite/methods/avalanche/slda.py) against Avalanche 0.6.0's StreamingLDA
strategy: the same feature extractor and data order give the same class means, counts, covariance and
scores; the network is never updated."""

from __future__ import annotations

import copy

import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.supervised import StreamingLDA as AvalancheSLDA

from clsuite.methods.avalanche.slda import SLDANet, StreamingLDA
from clsuite.models import build_model

N_CLASSES, SHAPE = 6, (1, 4, 4)


def _stream():
    g = torch.Generator().manual_seed(0)
    exps = []
    for k in range(3):
        ys = torch.tensor([2 * k, 2 * k + 1]).repeat_interleave(15)
        exps.append((torch.randn(len(ys), *SHAPE, generator=g) + ys.view(-1, 1, 1, 1).float() / 3, ys))
    return tensors_benchmark(train_tensors=exps, test_tensors=exps, task_labels=[0, 0, 0])


def test_same_tables_and_scores_as_avalanche_streaming_lda():
    bench = _stream()
    torch.manual_seed(0)
    net = build_model("mlp", {"hidden_sizes": [8]}, SHAPE, N_CLASSES)
    x_test = torch.cat([torch.stack([e.dataset[i][0] for i in range(len(e.dataset))]) for e in bench.test_stream])
    kw = dict(train_mb_size=7, train_epochs=1, eval_mb_size=16, evaluator=EvaluationPlugin(loggers=[]))

    torch.manual_seed(1)
    ref = AvalancheSLDA(slda_model=copy.deepcopy(net.backbone), criterion=torch.nn.CrossEntropyLoss(), input_size=8,
                        num_classes=N_CLASSES, shrinkage_param=1e-3, **kw)
    snaps = []
    for exp in bench.train_stream:
        ref.train(exp, num_workers=0)
        with torch.no_grad():
            snaps.append((ref.muK.clone(), ref.cK.clone(), ref.Sigma.clone(), ref.predict(ref.model(x_test))))

    model = SLDANet(copy.deepcopy(net), N_CLASSES, shrinkage=1e-3)
    start = copy.deepcopy(model.net.state_dict())
    torch.manual_seed(1)
    ours = Naive(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2),
                 torch.nn.CrossEntropyLoss(), plugins=[StreamingLDA()], **kw)
    for k, exp in enumerate(bench.train_stream):
        ours.train(exp, num_workers=0)
        muK, cK, Sigma, scores = snaps[k]
        torch.testing.assert_close(model.muK, muK, rtol=0, atol=0)
        torch.testing.assert_close(model.cK, cK, rtol=0, atol=0)
        torch.testing.assert_close(model.Sigma, Sigma, rtol=1e-6, atol=1e-7)
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x_test), scores, rtol=1e-5, atol=1e-5)
        assert cK.sum() == 30 * (k + 1)
    for name, w in model.net.state_dict().items():  # no SGD: the network is as it started
        assert torch.equal(w, start[name]), name
