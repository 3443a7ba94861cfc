"""avalanche.mer (clsuite/methods/avalanche/mer.py) against Avalanche 0.6.0's MER strategy: the same
network, data order and seeds give the same weights after each experience, with an optimizer that has
momentum (the template's own step, after MER's update, must change nothing)."""

from __future__ import annotations

import copy

import torch
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.supervised import MER as AvalancheMER

from clsuite.methods.avalanche.mer import MER
from clsuite.models import build_model

from fakes.avalanche_streams import class_mean_stream, seed_all

N_CLASSES, SHAPE = 4, (1, 3, 3)


def test_same_weights_as_avalanche_mer():
    bench = class_mean_stream(SHAPE, n_experiences=2, per_class=6)[0]
    torch.manual_seed(0)
    net = build_model("mlp", {"hidden_sizes": [8]}, SHAPE, N_CLASSES)
    kw = dict(train_mb_size=4, train_epochs=1, evaluator=EvaluationPlugin(loggers=[]))
    mer = dict(mem_size=8, batch_size_mem=3, n_inner_steps=2, beta=0.3, gamma=0.5)

    ref_model = copy.deepcopy(net)
    seed_all()
    ref = AvalancheMER(model=ref_model, optimizer=torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9),
                       **mer, **kw)
    ref_weights = []
    for exp in bench.train_stream:
        ref.train(exp, num_workers=0)
        ref_weights.append(copy.deepcopy(ref_model.state_dict()))

    ours_model = copy.deepcopy(net)
    seed_all()
    ours = Naive(ours_model, torch.optim.SGD(ours_model.parameters(), lr=0.1, momentum=0.9),
                 torch.nn.CrossEntropyLoss(), plugins=[MER(**mer)], **kw)
    for k, exp in enumerate(bench.train_stream):
        ours.train(exp, num_workers=0)
        for name, w in ours_model.state_dict().items():
            torch.testing.assert_close(w, ref_weights[k][name], rtol=0, atol=0, msg=f"exp {k}: {name}")
    assert not torch.equal(ref_weights[1]["head.weight"], net.state_dict()["head.weight"])
