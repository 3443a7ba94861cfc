"""avalanche.pnn (clsuite/methods/avalanche/pnn.py) against Avalanche 0.6.0's own PNN model and PNNStrategy:
with each column starting from Avalanche's weights and the same data order, the same weights after each
task and, for each trained task, the output of Avalanche's model called with that task label. Column 0 is
the base network; old columns are frozen; refusals; a run through clsuite resumes with identical records."""

from __future__ import annotations

import copy
import random

import numpy as np
import pandas as pd
import pytest
import torch
from avalanche.training.plugins import SupervisedPlugin
from avalanche.models.pnn import PNN as AvalanchePNN, PNNLayer
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.supervised.strategy_wrappers import PNNStrategy

from clsuite.core.errors import ParamsError
from clsuite.image.augment import attach_normalization
from clsuite.image.config import NormalizeConfig
from clsuite.image.records import read_records
from clsuite.image.train import train_run
from clsuite.methods import MethodContext
from clsuite.methods.avalanche.pnn import PNN, PNNNet, wrap_pnn
from clsuite.methods.avalanche.zoo import PNNConfig
from clsuite.models import build_model

from fakes.avalanche_streams import class_mean_stream

from fakes.train import Crash, crash_after

N_CLASSES, SHAPE, HIDDEN = 6, (1, 4, 4), 12
EXPERIENCES = [[0, 1], [2, 3], [4, 5]]


class Capture(SupervisedPlugin):
    """On Avalanche's PNN: keeps the new column's and head's initial weights (after the model's adaptation
    added them), then reseeds the global RNG, so that both runs draw the same data order."""

    def __init__(self):
        super().__init__()
        self.columns, self.heads = [], []

    def before_training_exp(self, strategy, **kwargs):
        k = strategy.experience.current_experience
        self.columns.append([copy.deepcopy(layer.columns[k].state_dict()) for layer in strategy.model.layers])
        head = strategy.model.classifier.classifiers[str(k)].classifier
        self.heads.append({n: v.detach()[EXPERIENCES[k]].clone() for n, v in head.state_dict().items()})
        torch.manual_seed(100 + k)


class Load(SupervisedPlugin):
    """On clsuite's PNNNet: starts column k from the weights Capture kept, then reseeds as Capture."""

    def __init__(self, captured: Capture):
        super().__init__()
        self.captured = captured

    def before_training_exp(self, strategy, **kwargs):
        k = strategy.experience.current_experience
        for cols, state in zip(strategy.model.layers, self.captured.columns[k]):
            cols[k].load_state_dict(state)
        strategy.model.heads[k].load_state_dict(self.captured.heads[k])
        torch.manual_seed(100 + k)


def _run(strategy, bench, check):
    random.seed(1)
    np.random.seed(1)
    out = []
    for exp in bench.train_stream:
        strategy.train(exp, num_workers=0)
        out.append(check(strategy))
    return out


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


@pytest.mark.parametrize("adapter", ["mlp", "linear"])
def test_same_weights_and_task_outputs_as_avalanche(adapter):
    bench, exps = class_mean_stream(SHAPE, task_labels=[0, 1, 2])
    x_all = torch.cat([x for x, _ in exps])
    torch.manual_seed(0)
    ref_model = AvalanchePNN(num_layers=2, in_features=16, hidden_features_per_column=HIDDEN, adapter=adapter)
    # Avalanche 0.6.0 builds the first layer without its `adapter` argument (always "mlp", docs/avalanche.md):
    # the reference gets the adapter asked for on every layer, as clsuite's
    ref_model.layers[0] = PNNLayer(16, HIDDEN, adapter=adapter)
    capture = Capture()

    def ref_check(strategy):
        m = strategy.model
        k = len(capture.columns) - 1
        weights = [[{n: v.clone() for n, v in layer.columns[j].state_dict().items()} for layer in m.layers]
                   for j in range(k + 1)]
        heads = [{n: v.detach()[EXPERIENCES[j]].clone() for n, v in m.classifier.classifiers[str(j)].classifier.state_dict().items()}
                 for j in range(k + 1)]
        m.eval()
        with torch.no_grad():  # Avalanche's task-IL evaluation: each trained task's inputs with its label
            outs = [m(exps[t][0], torch.full((40,), t))[:, EXPERIENCES[t]] for t in range(k + 1)]
        return weights, heads, outs

    ref = _run(PNNStrategy(model=ref_model, optimizer=_sgd(ref_model), train_mb_size=10, train_epochs=2,
                           plugins=[capture], evaluator=EvaluationPlugin(loggers=[])), bench, ref_check)

    torch.manual_seed(0)
    model = PNNNet(build_model("mlp", {"hidden_sizes": [HIDDEN, HIDDEN]}, SHAPE, N_CLASSES), EXPERIENCES, N_CLASSES,
                   adapter)

    def ours_check(strategy):
        m = strategy.model
        k = m.active - 1
        weights = [[{n: v.clone() for n, v in cols[j].state_dict().items()} for cols in m.layers] for j in range(k + 1)]
        heads = [{n: v.clone() for n, v in m.heads[j].state_dict().items()} for j in range(k + 1)]
        m.eval()
        with torch.no_grad():  # clsuite's records: one forward without task labels
            out = m(x_all)
        return weights, heads, [out[40 * t : 40 * (t + 1), EXPERIENCES[t]] for t in range(k + 1)]

    ours = _run(Naive(model, _sgd(model), torch.nn.CrossEntropyLoss(), train_mb_size=10, train_epochs=2,
                      plugins=[PNN(), Load(capture)], evaluator=EvaluationPlugin(loggers=[])), bench, ours_check)
    for k, (r, o) in enumerate(zip(ref, ours)):
        for j in range(k + 1):
            for i, (w_ref, w) in enumerate(zip(r[0][j], o[0][j])):
                for name in w_ref:
                    torch.testing.assert_close(w[name], w_ref[name], rtol=1e-5, atol=1e-6,
                                               msg=f"exp {k}: layer {i} column {j} {name}")
            for name in r[1][j]:
                torch.testing.assert_close(o[1][j][name], r[1][j][name], rtol=1e-5, atol=1e-6, msg=f"exp {k}: head {j}")
            torch.testing.assert_close(o[2][j], r[2][j], rtol=1e-5, atol=1e-5, msg=f"exp {k}: task {j} outputs")
    # not vacuous: later columns trained (moved from their initial weights), old ones frozen from then on
    assert not torch.equal(ours[2][0][2][0]["itoh.weight"], capture.columns[2][0]["itoh.weight"])
    for j in range(2):
        for i in range(2):
            for name, v in ours[j][0][j][i].items():
                assert torch.equal(ours[2][0][j][i][name], v), (j, i, name)
        assert torch.equal(ours[2][2][j], ours[j][2][j])  # task j's outputs unchanged by later tasks


def test_column_zero_is_the_base_network_with_its_normalisation():
    torch.manual_seed(0)
    net = attach_normalization(build_model("mlp", {"hidden_sizes": [8, 8]}, SHAPE, N_CLASSES),
                               NormalizeConfig(mean=[0.5], std=[0.25]))
    x = torch.rand(7, *SHAPE)
    want = net(x)
    model = PNNNet(net, EXPERIENCES, N_CLASSES)
    model.eval()
    torch.testing.assert_close(model(x)[:, EXPERIENCES[0]], want[:, EXPERIENCES[0]], rtol=1e-6, atol=1e-6)
    train_out = model.train()(x, torch.zeros(7, dtype=torch.long))
    assert torch.equal(train_out[:, 2:], torch.full((7, 4), -1000.0))  # other tasks' classes masked as Avalanche
    torch.testing.assert_close(train_out[:, :2], want[:, :2], rtol=1e-6, atol=1e-6)
    # only the active column trains
    assert all(p.requires_grad for cols in model.layers for p in cols[0].parameters())
    assert not any(p.requires_grad for cols in model.layers for c in cols[1:] for p in c.parameters())
    model.activate(2)
    assert [[any(p.requires_grad for p in c.parameters()) for c in cols] for cols in model.layers] == [[False, False, True]] * 2
    assert model.active == 3


def test_refuses_models_that_are_not_an_mlp():
    ctx = MethodContext(seed=0, n_classes=N_CLASSES, experiences=EXPERIENCES, input_shape=(1, 8, 8))
    with pytest.raises(ParamsError, match="clsuite's mlp.*Conv2d.*name: mlp"):
        wrap_pnn(build_model("convnet", {"channels": [4]}, (1, 8, 8), N_CLASSES), PNNConfig(), ctx)


def test_memory_counts_the_extra_columns_by_hand(params, data_roots, tmp_path):
    """smnist_smoke as task-IL, mlp 784-100-100, 5 tasks of 2 classes, MLP adapters. Column k > 0: per
    layer itoh (in*out + out) + adapter V (k*in*out + out), alphas (k), U (out*out + out); head (100*2 + 2)."""
    _, prepared = data_roots
    p = _task_il(params)
    run_dir = train_run(p, "smnist_smoke", "avalanche.pnn", 0, prepared, tmp_path)

    def column(k):
        n = 0
        for d_in, d_out in ((784, 100), (100, 100)):
            n += d_in * d_out + d_out + k * d_in * d_out + d_out + k + d_out * d_out + d_out
        return n + 100 * 2 + 2

    want = [4 * sum(column(j) for j in range(1, k + 1)) for k in range(5)]
    assert pd.read_parquet(run_dir / "experiences.parquet")["extra_memory_bytes"].tolist() == want
    recs = read_records(run_dir)
    last = recs[(recs.train_exp == 4) & (recs.eval_set == "clean")]
    assert (last.y_pred_task == last.y_true).mean() > 0.8  # each task's column answers its classes


def _task_il(params, scenario="task_il"):
    bench = params.benchmark("smnist_smoke").model_copy(update={"scenario": scenario})
    return params.model_copy(update={"benchmarks": {**params.benchmarks, "smnist_smoke": bench},
                                     "methods": {**params.methods, "avalanche.pnn": {}}})


def test_class_il_fails_at_once_and_a_run_resumes(params, data_roots, tmp_path):
    _, prepared = data_roots
    with pytest.raises(ParamsError, match=r"avalanche\.pnn.*class_il.*smnist_smoke.*supports task_il"):
        train_run(_task_il(params, "class_il"), "smnist_smoke", "avalanche.pnn", 0, prepared, tmp_path / "cil")
    p = _task_il(params)
    ref = read_records(train_run(p, "smnist_smoke", "avalanche.pnn", 0, prepared, tmp_path / "ref"))
    with pytest.raises(Crash):
        train_run(p, "smnist_smoke", "avalanche.pnn", 0, prepared, tmp_path / "cut", on_experience=crash_after(1))
    run_dir = train_run(p, "smnist_smoke", "avalanche.pnn", 0, prepared, tmp_path / "cut")
    assert "resuming from checkpoint after experience 2/5" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)
