"""avalanche.packnet (clsuite/methods/avalanche/packnet.py) against Avalanche 0.6.0's own PackNetModel +
PackNetPlugin: the same network, data order and seeds give the same weights and masks and, for each
task, the output of Avalanche's model called with that task label; a task's outputs do not change
after later tasks; refusals; a run through clsuite resumes inside an experience with identical records."""

from __future__ import annotations

import copy
import random

import numpy as np
import pandas as pd
import pytest
import torch
from avalanche.models.packnet import PackNetModel, PackNetPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin

from clsuite.core.errors import ComponentError, ParamsError
from clsuite.image.config import TrainConfig
from clsuite.image.records import read_records
from clsuite.image.train import EPOCH_CHECKPOINT, train_run
from clsuite.methods import MethodContext
from clsuite.methods.avalanche.packnet import PackNet, PackNetNet, packnet_plugin, wrap_packnet
from clsuite.models import ClassifierNet, build_model

from fakes.avalanche_streams import class_mean_stream

from fakes.train import Crash, crash_after

N_CLASSES, SHAPE = 6, (1, 4, 4)
EXPERIENCES = [[0, 1], [2, 3], [4, 5]]


def _train(model, plugin, bench, check, epochs=3):
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    strategy = Naive(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), torch.nn.CrossEntropyLoss(),
                     train_mb_size=10, train_epochs=epochs, plugins=[plugin], evaluator=EvaluationPlugin(loggers=[]))
    out = []
    for exp in bench.train_stream:
        strategy.train(exp, num_workers=0)
        out.append(check(strategy))
    return out


def test_same_weights_masks_and_task_outputs_as_avalanche():
    bench, exps = class_mean_stream(SHAPE, task_labels=[0, 1, 2])
    x_all = torch.cat([x for x, _ in exps])
    torch.manual_seed(0)
    net = build_model("mlp", {"hidden_sizes": [16, 16]}, SHAPE, N_CLASSES)

    def ref_check(strategy):
        model = strategy.model
        state = copy.deepcopy(model.state_dict())
        model.eval()
        with torch.no_grad():  # Avalanche's task-IL evaluation: each task's inputs with its task label
            outs = [model(x, torch.full((len(x),), t))[:, EXPERIENCES[t]] for t, (x, _) in enumerate(exps)]
        return state, outs

    def ours_check(strategy):
        model = strategy.model
        state = copy.deepcopy(model.state_dict())
        model.eval()
        with torch.no_grad():  # clsuite's records: one forward without task labels
            out = model(x_all)
        return state, [out[40 * t : 40 * (t + 1), EXPERIENCES[t]] for t in range(3)]

    ref = _train(PackNetModel(copy.deepcopy(net)), PackNetPlugin(post_prune_epochs=1, prune_proportion=0.5), bench,
                 ref_check)
    ours = _train(PackNetNet(copy.deepcopy(net), EXPERIENCES), PackNet(1, 0.5), bench, ours_check)
    skip = {"_state", "_active_task", "visible_mask", "unfrozen_mask"}  # which task the evaluation left active
    for k, ((w_ref, out_ref), (w, out)) in enumerate(zip(ref, ours)):
        assert w.keys() == w_ref.keys()
        for name in w_ref:
            if name.rsplit(".", 1)[-1] not in skip:
                assert torch.equal(w[name], w_ref[name]), f"exp {k}: {name}"
        for t in range(3):  # trained tasks, and the untrained ones (the network training would start from)
            torch.testing.assert_close(out[t], out_ref[t], rtol=0, atol=0, msg=f"exp {k}: task {t}")
    # not vacuous: after experience 0, half of each layer's weights (to rounding) is task 0's, the rest free
    index = ours[0][0]["wrappee.backbone.1.task_index"]
    assert {int(v) for v in index.unique()} == {0, 1}
    assert int((index == 0).sum()) == index.numel() // 2 + index.numel() % 2
    # and the masks matter: task 0's outputs differ from task 2's network on the same inputs
    assert not torch.allclose(ours[2][1][0], _outputs_of(ours[2][0], net, 2, exps[0][0]))


def _outputs_of(state, net, task, x):
    model = PackNetNet(copy.deepcopy(net), EXPERIENCES)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        return model(x, task)[:, EXPERIENCES[0]]


def test_a_task_outputs_do_not_change_after_later_tasks():
    """PackNet's promise: task 0's weights and biases are frozen once it is trained (SGD with momentum)."""
    bench, exps = class_mean_stream(SHAPE, task_labels=[0, 1, 2])
    torch.manual_seed(0)
    model = PackNetNet(build_model("mlp", {"hidden_sizes": [16]}, SHAPE, N_CLASSES), EXPERIENCES)

    def check(strategy):
        strategy.model.eval()
        with torch.no_grad():
            return strategy.model(exps[0][0])[:, EXPERIENCES[0]]

    after = _train(model, PackNet(1, 0.5), bench, check)
    assert torch.equal(after[0], after[1]) and torch.equal(after[0], after[2])


def test_refusals():
    bench, _ = class_mean_stream(SHAPE, task_labels=[0, 1, 2])
    torch.manual_seed(0)
    net = build_model("mlp", {"hidden_sizes": [8]}, SHAPE, N_CLASSES)
    with pytest.raises(ValueError, match="post_prune_epochs 2 must be below the experience's 2 training"):
        _train(PackNetNet(copy.deepcopy(net), EXPERIENCES), PackNet(2, 0.5), bench, lambda s: None, epochs=2)
    model = PackNetNet(copy.deepcopy(net), EXPERIENCES)
    strategy = Naive(model, torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4), torch.nn.CrossEntropyLoss(),
                     train_epochs=2, plugins=[PackNet(1, 0.5)], evaluator=EvaluationPlugin(loggers=[]))
    with pytest.raises(ValueError, match="weight_decay to 0"):
        strategy.train(bench.train_stream[0], num_workers=0)
    bn = ClassifierNet(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8)), 8, 6)
    ctx = MethodContext(seed=0, n_classes=6, experiences=EXPERIENCES, input_shape=SHAPE)
    with pytest.raises(ParamsError, match="BatchNorm1d.*mlp or convnet"):
        wrap_packnet(bn, None, ctx)
    with pytest.raises(ParamsError, match="lists 2 values, the benchmark has 3 experiences"):
        packnet_plugin(1, [0.5, 0.5], EXPERIENCES)


def _task_il(params, scenario="task_il", **run):
    bench = params.benchmark("smnist_smoke")
    train = TrainConfig.model_validate({**bench.train.model_dump(), "epochs": 5, "epochs_first": 3})
    return params.model_copy(update={
        "benchmarks": {**params.benchmarks, "smnist_smoke": bench.model_copy(update={"scenario": scenario, "train": train})},
        "methods": {**params.methods, "avalanche.packnet": {"post_prune_epochs": 2}},
        "run": params.run.model_copy(update=run)})


def test_class_il_benchmark_fails_at_once(params, data_roots, tmp_path):
    _, prepared = data_roots
    with pytest.raises(ParamsError, match=r"avalanche\.packnet.*class_il.*smnist_smoke.*supports task_il"):
        train_run(_task_il(params, "class_il"), "smnist_smoke", "avalanche.packnet", 0, prepared, tmp_path)
    assert not list(tmp_path.glob("smnist_smoke/avalanche.packnet/seed0/records/*"))


def test_run_resumes_after_and_inside_an_experience(params, data_roots, tmp_path, monkeypatch):
    """Experiences of 3 then 5 epochs (pruned before the last two); a crash after experience 2, then one in
    experience 4's last epoch (restored from a checkpoint taken after pruning): identical records. The memory
    reported is the task index."""
    import clsuite.image.train as T

    _, prepared = data_roots
    p = _task_il(params, checkpoint_every_epochs=1)
    ref_dir = train_run(p, "smnist_smoke", "avalanche.packnet", 0, prepared, tmp_path / "ref")
    ref = read_records(ref_dir)
    weights = 784 * 100 + 100 * 100 + 100 * 10  # the mlp's prunable weights (biases are not masked)
    assert pd.read_parquet(ref_dir / "experiences.parquet")["extra_memory_bytes"].tolist() == [weights] * 5
    # task-IL accuracy well above chance (0.5) on the tasks trained: the masked networks are used
    last = ref[(ref.train_exp == 4) & (ref.eval_set == "clean")]
    assert (last.y_pred_task == last.y_true).mean() > 0.8

    real = T.ProgressPlugin.after_training_iteration
    fired = []

    def step(self, strategy, **kw):
        real(self, strategy, **kw)
        c = strategy.clock
        if not fired and (c.train_exp_counter, c.train_exp_epochs, c.train_epoch_iterations) == (3, 4, 2):
            fired.append(1)
            raise Crash

    with pytest.raises(Crash):
        train_run(p, "smnist_smoke", "avalanche.packnet", 0, prepared, tmp_path / "cut", on_experience=crash_after(1))
    monkeypatch.setattr(T.ProgressPlugin, "after_training_iteration", step)
    with pytest.raises(ComponentError, match="Crash"):
        train_run(p, "smnist_smoke", "avalanche.packnet", 0, prepared, tmp_path / "cut")
    run_dir = tmp_path / "cut" / "smnist_smoke" / "avalanche.packnet" / "seed0"
    assert (run_dir / EPOCH_CHECKPOINT).exists()
    train_run(p, "smnist_smoke", "avalanche.packnet", 0, prepared, tmp_path / "cut")
    log = (run_dir / "log.txt").read_text()
    assert "resuming from checkpoint after experience 2/5" in log
    assert "resuming experience 4 after epoch 4/5" in log
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)


def test_convnet_is_wrapped_and_untrained_tasks_share_the_full_network():
    """Before any task is frozen every task gets the whole network: the label-free output is the net's own."""
    torch.manual_seed(0)
    net = build_model("convnet", {"channels": [4], "feature_dim": 8}, (1, 8, 8), N_CLASSES)
    x = torch.rand(5, 1, 8, 8)
    want = net(x)
    model = wrap_packnet(net, None, MethodContext(seed=0, n_classes=N_CLASSES, experiences=EXPERIENCES,
                                                  input_shape=(1, 8, 8)))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), want) and torch.equal(model(x, 1), want)
