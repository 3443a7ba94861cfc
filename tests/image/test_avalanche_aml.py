"""avalanche.er_aml (clsuite/methods/avalanche/er_aml.py) against Avalanche 0.6.0's ER_AML strategy,
and the checkpointable replay stream (loaders.ShuffledCycle) against cycle(DataLoader(...))."""

from __future__ import annotations

import copy

import torch
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.supervised import ER_AML
from avalanche.training.utils import cycle

from clsuite.methods.avalanche.er_aml import ERAML
from clsuite.methods.avalanche.loaders import ShuffledCycle
from clsuite.models import build_model

from fakes.avalanche_streams import class_mean_stream, seed_all

N_CLASSES, SHAPE = 6, (1, 4, 4)


def test_shuffled_cycle_gives_the_dataloader_batches_and_rng_use():
    x, y = torch.randn(23, 3), torch.arange(23)
    torch.manual_seed(5)
    real = cycle(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4, shuffle=True,
                                             drop_last=True))
    want = [next(real) for _ in range(13)]  # 5 batches a pass: crosses two pass boundaries
    after = torch.get_rng_state()
    torch.manual_seed(5)
    ours = ShuffledCycle([x, y], 4)
    got = [next(ours) for _ in range(13)]
    assert torch.equal(torch.get_rng_state(), after)
    for (wx, wy), (gx, gy) in zip(want, got):
        assert torch.equal(wx, gx) and torch.equal(wy, gy)
    # the position survives a state round trip (with the global RNG, which a checkpoint restores)
    torch.manual_seed(5)
    a = ShuffledCycle([x, y], 4)
    for _ in range(7):
        next(a)
    state, rng = a.state(), torch.get_rng_state()
    rest = [next(a)[1] for _ in range(6)]
    b = ShuffledCycle([x, y], 4)
    b.load_state(state)
    torch.set_rng_state(rng)
    assert all(torch.equal(next(b)[1], r) for r in rest) and torch.equal(rest[0], want[7][1])


def test_same_weights_as_avalanche_er_aml():
    """Same network, data order and seeds: Avalanche's strategy and clsuite's plugin on the stock
    template end each experience with the same weights (the buffer is updated before training,
    the replay and positive/negative batches and the multinomial draws come in the same order)."""
    bench = class_mean_stream(SHAPE)[0]
    torch.manual_seed(0)
    net = build_model("mlp", {"hidden_sizes": [16]}, SHAPE, N_CLASSES)
    kw = dict(train_mb_size=8, train_epochs=2, evaluator=EvaluationPlugin(loggers=[]))

    ref_model = copy.deepcopy(net)
    seed_all()
    ref = ER_AML(model=ref_model, feature_extractor=ref_model.features,
                 optimizer=torch.optim.SGD(ref_model.parameters(), lr=0.05), mem_size=48, batch_size_mem=6, **kw)
    ours_model = copy.deepcopy(net)
    ref_weights = []
    for exp in bench.train_stream:
        ref.train(exp, num_workers=0)
        ref_weights.append(copy.deepcopy(ref_model.state_dict()))

    seed_all()
    ours = Naive(ours_model, torch.optim.SGD(ours_model.parameters(), lr=0.05), torch.nn.CrossEntropyLoss(),
                 plugins=[ERAML(mem_size=48, batch_size_mem=6)], **kw)
    for k, exp in enumerate(bench.train_stream):
        ours.train(exp, num_workers=0)
        for name, w in ours_model.state_dict().items():
            torch.testing.assert_close(w, ref_weights[k][name], rtol=0, atol=0, msg=f"exp {k}: {name}")
    assert not torch.equal(ref_weights[2]["head.weight"], net.state_dict()["head.weight"])
