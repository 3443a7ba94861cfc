"""The trainer's fast path (clsuite/image/trainer.py) changes how iterations are driven, never
what they compute: on CPU a fixed seed gives bit-for-bit the records of Avalanche's
stock loop; the GPU-only settings (run.amp, run.channels_last) do nothing on CPU."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

import clsuite.image.trainer as fp
from clsuite.config import parse_params
from clsuite.image.streams import to_float
from clsuite.core.errors import ParamsError
from clsuite.image.records import read_records
from clsuite.image.train import train_run


def _run(params, prepared, root, method, seed=0, benchmark="smnist_smoke", **kw):
    return read_records(train_run(params, benchmark, method, seed, prepared, root, **kw))


@pytest.fixture()
def epochs_on_tensors(monkeypatch):
    """Records, for every training epoch, whether its batches came from ExperienceTensors."""
    seen: list[bool] = []
    original = fp.ClsuiteTemplate._before_training_epoch

    def spy(self, **kwargs):
        original(self, **kwargs)
        seen.append(self.fast_batches)

    monkeypatch.setattr(fp.ClsuiteTemplate, "_before_training_epoch", spy)
    return seen


# -- records: fast path == Avalanche's stock loop ---------------------------------------------


@pytest.mark.parametrize("method, on_tensors", [("replay", True), ("der", True), ("ewc", True), ("joint", False)])
def test_fast_path_gives_the_records_of_the_stock_loop(params, data_roots, tmp_path, monkeypatch,
                                                        epochs_on_tensors, method, on_tensors):
    _, prepared = data_roots
    monkeypatch.setenv("CLSUITE_FAST_PATH", "0")
    stock = _run(params, prepared, tmp_path / "stock", method)
    assert not any(epochs_on_tensors)
    epochs_on_tensors.clear()
    monkeypatch.setenv("CLSUITE_FAST_PATH", "1")
    fast = _run(params, prepared, tmp_path / "fast", method)
    # joint adapts the training set (union of experiences): it keeps Avalanche's loader
    assert epochs_on_tensors == [on_tensors] * 5
    pd.testing.assert_frame_equal(fast, stock, check_exact=True)


def test_fast_path_in_task_il_feeds_task_labels(params, data_roots, tmp_path, monkeypatch, epochs_on_tensors):
    """Task-IL: mb_task_id is the experience index; same records as the stock loop."""
    _, prepared = data_roots
    bench = params.benchmark("smnist_smoke").model_copy(update={"scenario": "task_il"})
    til = params.model_copy(update={"benchmarks": {**params.benchmarks, "smnist_smoke": bench}})
    from clsuite.methods.replay import ReservoirReplayPlugin

    labels: list[set] = []
    original = ReservoirReplayPlugin.before_forward

    def before_forward(self, strategy, **kwargs):
        original(self, strategy, **kwargs)
        labels.append(set(strategy.mbatch[-1].tolist()))  # the task labels the model is fed

    monkeypatch.setattr(ReservoirReplayPlugin, "before_forward", before_forward)
    monkeypatch.setenv("CLSUITE_FAST_PATH", "0")
    stock = _run(til, prepared, tmp_path / "stock", "replay")
    monkeypatch.setenv("CLSUITE_FAST_PATH", "1")
    n = len(labels)
    fast = _run(til, prepared, tmp_path / "fast", "replay")
    assert epochs_on_tensors[-5:] == [True] * 5
    assert labels[n:] == labels[:n] and {0} in labels and any(len(s) > 1 for s in labels)  # replayed old tasks
    pd.testing.assert_frame_equal(fast, stock, check_exact=True)


def test_gpu_settings_do_nothing_on_cpu(params, data_roots, tmp_path):
    _, prepared = data_roots
    ref = _run(params, prepared, tmp_path / "ref", "replay")
    off = params.model_copy(update={"run": params.run.model_copy(update={"amp": "off", "channels_last": False})})
    on = params.model_copy(update={"run": params.run.model_copy(update={"amp": "fp16", "channels_last": True})})
    assert params.run.amp == "auto"
    pd.testing.assert_frame_equal(_run(off, prepared, tmp_path / "off", "replay"), ref, check_exact=True)
    pd.testing.assert_frame_equal(_run(on, prepared, tmp_path / "on", "replay"), ref, check_exact=True)


# -- batches ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, batch, drop_last", [(23, 5, False), (23, 5, True), (20, 5, False), (3, 10, False)])
def test_index_batches_are_the_samplers_batches_with_the_same_rng_draws(n, batch, drop_last):
    def run(fn):
        torch.manual_seed(7)
        batches = [list(map(int, b)) for b in fn(BatchSampler(RandomSampler(range(n)), batch, drop_last))]
        return batches, torch.get_rng_state()

    (expected, rng_a), (got, rng_b) = run(list), run(lambda s: list(fp.index_batches(s)))
    assert got == expected and torch.equal(rng_a, rng_b)
    sequential = BatchSampler(SequentialSampler(range(n)), batch, drop_last)  # any other sampler: iterated
    assert [b.tolist() for b in fp.index_batches(sequential)] == list(sequential)


def test_experience_tensors_on_cpu_hold_the_float_values_and_a_constant_task():
    x = np.arange(4 * 1 * 2 * 2, dtype=np.uint8).reshape(4, 1, 2, 2) * 7
    data = fp.ExperienceTensors(x, np.array([3, 1, 4, 1]), 2, torch.device("cpu"))
    xb, yb, tb = data.batch(torch.tensor([2, 0]))
    assert torch.equal(xb, to_float(x[[2, 0]])) and yb.tolist() == [4, 3] and tb.tolist() == [2, 2]
    assert yb.dtype == tb.dtype == torch.long
    # a whole epoch gathered at once gives the same batches, each in its own memory
    batches = [torch.tensor([3, 1]), torch.tensor([0]), torch.tensor([2])]
    epoch = list(data.epoch(batches))
    for got, idx in zip(epoch, batches):
        for a, b in zip(got, data.batch(idx)):
            assert torch.equal(a, b)
    epoch[0][2].fill_(9)  # a plugin writing into one batch leaves the others alone
    assert epoch[1][2].tolist() == [2] and data.batch(torch.tensor([0]))[2].tolist() == [2]


# -- GPU-only settings: the logic, with the CUDA parts forced or mocked ---------------------------


def test_resolve_amp(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for setting in ("auto", "bf16", "fp16", "off"):
        assert fp.resolve_amp(setting, cpu) == (None, False)
    assert fp.resolve_amp("off", cuda) == (None, False)
    assert fp.resolve_amp("bf16", cuda) == (torch.bfloat16, False)
    assert fp.resolve_amp("fp16", cuda) == (torch.float16, True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert fp.resolve_amp("auto", cuda) == (torch.bfloat16, False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert fp.resolve_amp("auto", cuda) == (torch.float16, True)


def test_channels_last_only_for_convnets_on_cuda():
    from clsuite.models import build_model

    mlp = build_model("mlp", {}, (1, 28, 28), 10)
    conv = build_model("convnet", {"channels": [4], "feature_dim": 8}, (1, 28, 28), 10)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert fp.use_channels_last(True, cuda, conv) and not fp.use_channels_last(False, cuda, conv)
    assert not fp.use_channels_last(True, cuda, mlp) and not fp.use_channels_last(True, cpu, conv)


@pytest.mark.parametrize("dtype, scaler", [(torch.bfloat16, False), (torch.float16, True)])
def test_amp_mechanism_forced_on_cpu(params, data_roots, tmp_path, monkeypatch, dtype, scaler):
    """resolve_amp never enables AMP on CPU; forcing it exercises the CUDA code path's logic
    (autocast forward with fp32 logits for plugins and loss, GradScaler with gradients
    unscaled before the plugins' after_backward/before_update hooks)."""
    _, prepared = data_roots
    monkeypatch.setattr(fp, "resolve_amp", lambda setting, device: (dtype, scaler))
    seen = {"out": set(), "grad_finite": []}
    forward = fp.ClsuiteTemplate.forward

    def spy_forward(self):
        out = forward(self)
        seen["out"].add(out.dtype)
        return out

    step = fp.ClsuiteTemplate.optimizer_step

    def spy_step(self):
        if self.scaler is not None:  # unscaled already: finite grads are true gradients (< the scale)
            g = torch.cat([p.grad.flatten() for p in self.model.parameters() if p.grad is not None])
            seen["grad_finite"].append(bool(torch.isfinite(g).all()) and float(g.abs().max()) < 1e3)
        return step(self)

    monkeypatch.setattr(fp.ClsuiteTemplate, "forward", spy_forward)
    monkeypatch.setattr(fp.ClsuiteTemplate, "optimizer_step", spy_step)
    recs = _run(params, prepared, tmp_path, "replay")
    assert seen["out"] == {torch.float32}
    assert np.isfinite(recs.filter(like="logit_").to_numpy()).all()
    if scaler:
        assert seen["grad_finite"] and sum(seen["grad_finite"]) > len(seen["grad_finite"]) // 2


def test_run_amp_is_validated(params):
    raw = params.model_dump(mode="json")
    raw["run"]["amp"] = "fp8"
    with pytest.raises(ParamsError, match=r"run\.amp"):
        parse_params(raw, check_components=False)
