"""avalanche.cope (clsuite/methods/avalanche/cope.py) against Avalanche 0.6.0's CoPEPlugin: the same
buffer rows as its ClassBalancedBuffer; on a tiny class-IL stream, the same losses, prototypes,
weights and nearest-prototype predictions as Avalanche's plugin on that stream split into one-batch
experiences (its online data-incremental setting); the wrapper's scores; the memory it reports."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from avalanche.benchmarks import tensors_benchmark
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.training import Naive
from avalanche.training.plugins import CoPEPlugin, EvaluationPlugin, SupervisedPlugin
from avalanche.training.storage_policy import ClassBalancedBuffer

from clsuite.core.errors import ComponentError
from clsuite.image.config import TrainConfig
from clsuite.image.records import read_records
from clsuite.image.train import train_run
from clsuite.methods.avalanche.cope import CoPE, CoPENet, unseen_score
from clsuite.methods.avalanche.state import dataset_tensors
from clsuite.models import build_model

from test_epoch_resume import _crash_in  # tests/image is on sys.path (rootdir-relative test module)

N_CLASSES, SHAPE, P, T, B = 6, (1, 4, 4), 8, 0.1, 8


def test_buffer_keeps_the_rows_and_weights_of_avalanches_class_balanced_buffer():
    """Batches of 5 rows, classes arriving over time, capacity 7 (uneven shares): after each update
    the same classes in the same order, the same rows in the same order, the same reservoir weights,
    when both draw their weights from the same seed."""
    ref = ClassBalancedBuffer(max_size=7, adaptive_size=True)
    ours = CoPE(mem_size=7, seed=0)
    g = torch.Generator().manual_seed(3)
    for step in range(15):
        y = torch.randint(0, 2 + step // 3, (5,), generator=g)
        x = torch.arange(5 * step, 5 * step + 5, dtype=torch.float32).view(5, 1, 1, 1)  # row ids as pixels
        t = torch.zeros(5, dtype=torch.long)
        torch.manual_seed(100 + step)
        ref.update_from_dataset(_make_taskaware_tensor_classification_dataset(x, y, task_labels=t.tolist(),
                                                                              targets=y.tolist()))
        ours.generator.manual_seed(100 + step)
        ours.store(x, y, t)
        want = [(c, dataset_tensors(b.buffer)["x"].flatten().tolist()) for c, b in ref.buffer_groups.items()]
        got = [(c, v.flatten().tolist()) for c, v in ours.mem_x.items()]
        assert got == want, step
        for c, b in ref.buffer_groups.items():
            assert torch.equal(ours.mem_w[c], b._buffer_weights)
    assert sum(len(v) for v in ours.mem_x.values()) == 7 and len(ours.mem_x) == 6


def _tasks():
    """3 experiences x 2 classes, 16 rows each, the two classes alternating (so each batch of 8 has both)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for k in range(3):
        ys = torch.tensor([2 * k, 2 * k + 1]).repeat(8)
        out.append((torch.randn(len(ys), *SHAPE, generator=g) + ys.view(-1, 1, 1, 1).float() / 2, ys))
    return out


class _Hooks(SupervisedPlugin):
    """Calls ``fn(strategy)`` at one event."""

    def __init__(self, event: str, fn) -> None:
        super().__init__()
        setattr(self, event, lambda strategy, **kw: fn(strategy))


def test_same_losses_prototypes_weights_and_predictions_as_avalanche_cope():
    """Ours on 3 task experiences (batches of 8 in order) equals Avalanche's CoPEPlugin on the same rows
    split into one-batch experiences. The buffer (mem_size 8 = the batch size) is replayed whole at
    every step in both (Avalanche replays batch_size rows), so which rows are replayed does not depend on
    the RNG; the reservoir weights are drawn from a seed reset before each buffer update in both."""
    tasks = _tasks()
    x_test = torch.cat([x for x, _ in tasks])
    torch.manual_seed(0)
    ours_model = CoPENet(build_model("mlp", {"hidden_sizes": [16]}, SHAPE, N_CLASSES), N_CLASSES, p_size=P, T=T)
    ref_model = torch.nn.Sequential(copy.deepcopy(ours_model.net.backbone), copy.deepcopy(ours_model.embedding))
    kw = dict(train_mb_size=B, train_epochs=1, eval_mb_size=16, evaluator=EvaluationPlugin(loggers=[]))

    # Avalanche: one experience per batch of 8 rows, in order
    chunks = [(x[i:i + B], y[i:i + B]) for x, y in tasks for i in range(0, len(y), B)]
    ref_stream = tensors_benchmark(train_tensors=chunks, test_tensors=chunks, task_labels=[0] * len(chunks))
    cope_ref = CoPEPlugin(mem_size=B, n_classes=N_CLASSES, p_size=P, alpha=0.5, T=T)
    ref_log = {"loss": [], "protos": []}
    step = {"i": 0}

    def reseed_ref(strategy):
        torch.manual_seed(1000 + step["i"])
        step["i"] += 1

    plugins = [_Hooks("after_training_exp", reseed_ref), cope_ref,
               _Hooks("after_training_iteration", lambda s: ref_log["loss"].append(float(s.loss.detach()))),
               _Hooks("after_training_exp", lambda s: ref_log["protos"].append(
                   torch.cat([cope_ref.p_mem[c] for c in range(N_CLASSES)]).clone()))]
    ref = Naive(ref_model, torch.optim.SGD(ref_model.parameters(), lr=0.1), cope_ref.ppp_loss, plugins=plugins, **kw)
    torch.manual_seed(1)  # the initial prototypes
    ref_after_task = []
    for k, exp in enumerate(ref_stream.train_stream):
        ref.train(exp, num_workers=0, shuffle=False)
        if k % 2 == 1:  # the end of a task
            ref_model.eval()
            with torch.no_grad():
                emb = ref_model(x_test)
                pred = cope_ref._get_nearest_neigbor_distr(emb).argmax(1)
            ref_after_task.append((copy.deepcopy(ref_model.state_dict()), emb, pred, ref_log["protos"][-1]))
            ref_model.train()

    # ours: the task experiences, batches in order
    ours_stream = tensors_benchmark(train_tensors=tasks, test_tensors=tasks, task_labels=[0, 0, 0])
    cope = CoPE(mem_size=B, alpha=0.5, T=T, seed=1)  # seed 1: the initial prototypes as above
    log: dict[str, list] = {"loss": [], "protos": []}
    step["i"] = 0

    def reseed_ours(strategy):
        cope.generator.manual_seed(1000 + step["i"])
        step["i"] += 1

    plugins = [_Hooks("after_training_iteration", reseed_ours), cope,
               _Hooks("after_training_iteration", lambda s: (log["loss"].append(float(s.loss.detach())),
                                                             log["protos"].append(ours_model.prototypes.clone())))]
    ours = Naive(ours_model, torch.optim.SGD(ours_model.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(),
                 plugins=plugins, **kw)
    for k, exp in enumerate(ours_stream.train_stream):
        ours.train(exp, num_workers=0, shuffle=False)
        state, emb_ref, pred_ref, protos_ref = ref_after_task[k]
        for name, w in ours_model.net.backbone.state_dict().items():
            torch.testing.assert_close(w, state[f"0.{name}"], rtol=1e-5, atol=1e-6, msg=f"task {k}: {name}")
        torch.testing.assert_close(ours_model.embedding.weight, state["1.0.weight"], rtol=1e-5, atol=1e-6)
        seen = list(range(2 * k + 2))
        assert ours_model.seen.nonzero().flatten().tolist() == seen
        ours_model.eval()
        with torch.no_grad():
            out = ours_model(x_test)
        ours_model.train()
        want = emb_ref @ protos_ref[seen].t() / T
        torch.testing.assert_close(out[:, seen], want, rtol=1e-5, atol=1e-5, msg=f"task {k}: scores")
        assert (out[:, 2 * k + 2:] == unseen_score(T)).all()
        pred = out.argmax(1)
        # Avalanche's vote may go to an unseen class's random prototype (here, after the first task, every
        # row's does: a broken prediction that ours masks); where it goes to a seen class, the same class
        on_seen = pred_ref < 2 * k + 2
        assert torch.equal(pred[on_seen], pred_ref[on_seen]), k
    assert torch.equal(pred, pred_ref)  # all classes seen: the same predictions for every test row
    assert len(log["loss"]) == len(ref_log["loss"]) == 6
    torch.testing.assert_close(torch.tensor(log["loss"]), torch.tensor(ref_log["loss"]), rtol=1e-5, atol=1e-6)
    for k, (p, q) in enumerate(zip(log["protos"], ref_log["protos"])):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"step {k}: prototypes")
    assert not torch.allclose(log["protos"][0], log["protos"][-1])  # they moved


def test_wrapper_scores():
    net = build_model("mlp", {"hidden_sizes": [5]}, SHAPE, 3)
    model = CoPENet(net, 3, p_size=4, T=0.5)
    x = torch.randn(7, *SHAPE)
    model.eval()
    assert torch.equal(model(x), torch.zeros(7, 3))  # no prototype yet: uniform, as Avalanche
    model.init_prototypes(torch.Generator().manual_seed(0))
    assert torch.allclose(model.prototypes.norm(dim=1), torch.ones(3))
    z = F.normalize(model.embedding(net.features(x)), dim=1)
    model.train()
    torch.testing.assert_close(model(x), z @ model.prototypes.t() / 0.5)  # training: every class, unmasked
    torch.testing.assert_close(model.last_embedding, z)
    old = model.prototypes[1].clone()
    mean = torch.tensor([1.0, 0.0, 0.0, 0.0])
    model.update_prototypes({1: (3 * mean, 3)}, alpha=0.75)  # normalize(0.75 old + 0.25 e1)
    torch.testing.assert_close(model.prototypes[1], F.normalize(0.75 * old + 0.25 * mean, dim=0))
    model.eval()
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out[:, 1], z @ model.prototypes[1] / 0.5)
    assert (out[:, [0, 2]] == unseen_score(0.5)).all() and unseen_score(0.5) < -1 / 0.5


def test_memory_is_buffer_pixels_plus_prototypes(params, data_roots, tmp_path):
    """smnist_smoke: 45 training rows per class, mem_size 200 shared by the classes seen (200 // n, the
    remainder to the lowest ids): 2 x 45, 4 x 45, then full; + 10 prototypes x 100 float32."""
    _, prepared = data_roots
    p = params.model_copy(update={"methods": {**params.methods, "avalanche.cope": {}}})
    run_dir = train_run(p, "smnist_smoke", "avalanche.cope", 0, prepared, tmp_path)
    memory = pd.read_parquet(run_dir / "experiences.parquet")["extra_memory_bytes"].tolist()
    rows = [90, 180, 200, 200, 200]
    assert memory == [n * 28 * 28 + 4 * 10 * 100 for n in rows]




@pytest.mark.slow
def test_resume_inside_an_experience_gives_identical_records(params, data_roots, tmp_path, monkeypatch):
    """3 epochs per experience with augmentation (the buffer takes each row in the first epoch only, the
    prototypes move at every step): a run cut in the second epoch of experience 3 resumes from its epoch
    checkpoint with the records of an uninterrupted run (the after-an-experience resume is
    tests/image/test_avalanche_zoo.py's)."""
    _, prepared = data_roots
    bench = params.benchmark("smnist_smoke")
    train = TrainConfig.model_validate({**bench.train.model_dump(), "epochs": 3, "augment": {"hflip": True}})
    p = params.model_copy(update={
        "benchmarks": {**params.benchmarks, "smnist_smoke": bench.model_copy(update={"train": train})},
        "methods": {**params.methods, "avalanche.cope": {"mem_size": 50}},
        "run": params.run.model_copy(update={"checkpoint_every_epochs": 1})})
    ref = read_records(train_run(p, "smnist_smoke", "avalanche.cope", 0, prepared, tmp_path / "ref"))
    _crash_in(monkeypatch, exp=2, epoch=1, iteration=3)
    with pytest.raises(ComponentError, match="Crash"):
        train_run(p, "smnist_smoke", "avalanche.cope", 0, prepared, tmp_path / "cut")
    run_dir = train_run(p, "smnist_smoke", "avalanche.cope", 0, prepared, tmp_path / "cut")
    log = (run_dir / "log.txt").read_text()
    assert "resuming experience 3 after epoch 1/3" in log
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)
