"""avalanche.generative_replay (clsuite/methods/avalanche/generative_replay.py): the VAE loss against
a hand computation, and the whole method against Avalanche 0.6.0's ``GenerativeReplay`` strategy with
its ``VAETraining`` generator strategy (``MlpVAE`` with the two documented changes applied to it:
the reparameterisation's standard deviation and no MNIST output normalisation): same replayed
inputs and labels, same solver and generator weights after each experience."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.models.generator import VAE_loss
from avalanche.models.generator import MlpVAE as AvalancheVAE
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin, GenerativeReplayPlugin, SupervisedPlugin
from avalanche.training.supervised import GenerativeReplay as AvalancheGR
from avalanche.training.supervised import VAETraining

from clsuite.core.errors import ComponentError
from clsuite.image.config import TrainConfig
from clsuite.image.records import read_records
from clsuite.image.train import EPOCH_CHECKPOINT, train_run
from clsuite.methods.avalanche.generative_replay import GenerativeReplay, MlpVAE, shuffled_batches, vae_loss
from clsuite.methods.avalanche.zoo import GenerativeReplayConfig
from clsuite.models import build_model, count_parameters

from fakes.avalanche_streams import seed_all

from test_epoch_resume import _crash_in  # tests/image is on sys.path (rootdir-relative test module)

N_CLASSES, SHAPE = 6, (1, 4, 4)


def test_vae_loss_by_hand():
    """Two rows: squared error 0.25 + 0.25 + 0 + 1 = 1.5; KL terms 0.5 * (-1 - lv + e^lv + m^2):
    (0, 0) -> 0; (1, 0) -> 0.5; (0, ln 2) -> 0.5 * (1 - ln 2); (-2, 0) -> 2."""
    x = torch.tensor([[1.0, 0.0], [0.5, 1.0]])
    x_hat = torch.tensor([[0.5, 0.5], [0.5, 0.0]])
    mean = torch.tensor([[0.0, 1.0], [0.0, -2.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(2.0), 0.0]])
    want = 1.5 + 0.5 + 0.5 * (1 - math.log(2.0)) + 2.0
    got = vae_loss(x, x_hat, mean, logvar)
    assert got.shape == () and got.item() == pytest.approx(want, rel=1e-6)
    assert got.item() == pytest.approx(VAE_loss(x, (x_hat, mean, logvar)).item(), rel=1e-7)  # Avalanche's


def test_shuffled_batches_draw_as_a_shuffling_dataloader():
    """Same batches and same global-RNG state afterwards as iterating ``DataLoader(shuffle=True)``."""
    torch.manual_seed(3)
    ours = shuffled_batches(10, 4)
    after = torch.rand(3)
    torch.manual_seed(3)
    ref = [b for (b,) in torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(10)), batch_size=4,
                                                   shuffle=True)]
    assert [b.tolist() for b in ours] == [b.tolist() for b in ref] and [len(b) for b in ours] == [4, 4, 2]
    assert torch.equal(torch.rand(3), after)


def test_vae_shape_and_avalanche_layout():
    vae = MlpVAE(SHAPE, latent_dim=3)
    out, mean, logvar = vae(torch.rand(5, *SHAPE))
    assert out.shape == (5, *SHAPE) and mean.shape == logvar.shape == (5, 3) and 0 <= out.min() and out.max() <= 1
    ref = {k for k in AvalancheVAE(SHAPE, nhid=3).state_dict() if not k.startswith("classification")}
    assert set(vae.state_dict()) == ref
    with pytest.raises(Exception, match="encoder_units"):
        GenerativeReplayConfig.model_validate({"encoder_units": []}, strict=True)
    with pytest.raises(Exception, match="vae_lr"):
        GenerativeReplayConfig.model_validate({"vae_lr": "0.1"}, strict=True)


def _stream():
    g = torch.Generator().manual_seed(0)
    exps = []
    for k in range(3):
        ys = torch.tensor([2 * k, 2 * k + 1]).repeat_interleave(5)
        x = (torch.rand(len(ys), *SHAPE, generator=g) + ys.view(-1, 1, 1, 1).float() / N_CLASSES) / 2
        exps.append((x, ys))
    return tensors_benchmark(train_tensors=exps, test_tensors=exps, task_labels=[0, 0, 0])


class Spy(SupervisedPlugin):
    """The minibatch each solver step trains on (after every plugin's before_training_iteration)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def before_forward(self, strategy, **kwargs):
        self.batches.append((strategy.mb_x.detach().clone(), strategy.mb_y.detach().clone().long()))


def _avalanche_sampling(self, mean, logvar):
    """MlpVAE.sampling with the standard deviation exp(logvar / 2) (clsuite's change), same draw."""
    eps = torch.randn(mean.shape).to(self.device)
    return mean + eps * torch.exp(0.5 * logvar)


@pytest.mark.parametrize("increasing", [False, True])
def test_same_replay_and_weights_as_avalanche(monkeypatch, increasing):
    bench = _stream()
    torch.manual_seed(0)
    net = build_model("mlp", {"hidden_sizes": [8]}, SHAPE, N_CLASSES)
    gen = AvalancheVAE(SHAPE, nhid=2)
    gen.decoder.invTrans = lambda x: x  # clsuite's inputs are [0, 1] pixels
    monkeypatch.setattr(AvalancheVAE, "sampling", _avalanche_sampling)
    kw = dict(train_mb_size=4, train_epochs=2, evaluator=EvaluationPlugin(loggers=[]))

    ref_model = copy.deepcopy(net)
    ref_gen = copy.deepcopy(gen)
    ref_spy = Spy()
    gen_strategy = VAETraining(model=ref_gen, optimizer=torch.optim.Adam(ref_gen.parameters(), lr=0.01, weight_decay=1e-4),
                               plugins=[GenerativeReplayPlugin(increasing_replay_size=increasing)], **kw)
    ref = AvalancheGR(model=ref_model, optimizer=torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9),
                      generator_strategy=gen_strategy, increasing_replay_size=increasing, plugins=[ref_spy], **kw)
    seed_all()
    ref_after = []
    for exp in bench.train_stream:
        ref.train(exp, num_workers=0)
        ref_after.append((copy.deepcopy(ref_model.state_dict()), copy.deepcopy(ref_gen.state_dict())))

    ours_model = copy.deepcopy(net)
    plugin = GenerativeReplay(SHAPE, latent_dim=2, increasing_replay_size=increasing)
    plugin.vae.load_state_dict({k: v for k, v in gen.state_dict().items() if not k.startswith("classification")})
    spy = Spy()
    ours = Naive(ours_model, torch.optim.SGD(ours_model.parameters(), lr=0.1, momentum=0.9),
                 torch.nn.CrossEntropyLoss(), plugins=[plugin, spy], **kw)
    seed_all()
    for k, exp in enumerate(bench.train_stream):
        ours.train(exp, num_workers=0)
        solver_ref, gen_ref = ref_after[k]
        for name, w in ours_model.state_dict().items():
            torch.testing.assert_close(w, solver_ref[name], rtol=0, atol=0, msg=f"exp {k}: solver {name}")
        for name, w in plugin.vae.state_dict().items():
            torch.testing.assert_close(w, gen_ref[name], rtol=0, atol=0, msg=f"exp {k}: generator {name}")

    assert len(spy.batches) == len(ref_spy.batches) == 3 * 2 * 3  # experiences x epochs x batches (4, 4, 2)
    sizes = []
    for (x, y), (x_ref, y_ref) in zip(spy.batches, ref_spy.batches):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
        sizes.append(len(y))
    first = [4, 4, 2] * 2
    assert sizes == first + [8, 8, 4] * 2 + ([12, 12, 6] if increasing else [8, 8, 4]) * 2
    # each experience's replayed rows carry the argmax labels of the solver after the previous experience
    for i, (x, y) in enumerate(spy.batches[6:]):
        k = 1 + i // 6
        n_new = sizes[6 + i] // (3 if increasing and k == 2 else 2)
        old = copy.deepcopy(net)
        old.load_state_dict(ref_after[k - 1][0])
        with torch.no_grad():
            assert torch.equal(old.eval()(x[n_new:]).argmax(-1), y[n_new:]), (k, i)


def test_single_row_vae_batch_is_skipped_not_raised():
    """9 rows in VAE batches of 4: the last batch (1 row, no replay in the first experience) would
    make batch norm raise; it is skipped and the VAE trains on the other two."""
    x = torch.rand(9, *SHAPE)
    bench = tensors_benchmark(train_tensors=[(x, torch.arange(9) % 2)], test_tensors=[(x, torch.arange(9) % 2)],
                              task_labels=[0])
    torch.manual_seed(0)
    model = build_model("mlp", {"hidden_sizes": [8]}, SHAPE, N_CLASSES)
    plugin = GenerativeReplay(SHAPE, vae_batch_size=4)
    before = copy.deepcopy(plugin.vae.state_dict())
    Naive(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(), plugins=[plugin],
          train_mb_size=4, evaluator=EvaluationPlugin(loggers=[])).train(bench.train_stream[0], num_workers=0)
    assert plugin.trained and plugin.vae_optimizer.state[next(iter(plugin.vae.parameters()))]["step"].item() == 2
    assert not torch.equal(plugin.vae.state_dict()["calc_mean.mlp.Linear_0.weight"], before["calc_mean.mlp.Linear_0.weight"])


# -- in clsuite's pipeline ----------------------------------------------------------------------

GR = {"type": "avalanche.generative_replay", "encoder_units": [64, 32], "decoder_units": [32, 64], "vae_epochs": 2,
      "vae_batch_size": 16}


def _params(params, **run):
    """smnist_smoke with 2 epochs per experience (3 in the first) and the generative replay ``gr``."""
    bench = params.benchmark("smnist_smoke")
    train = TrainConfig.model_validate({**bench.train.model_dump(), "epochs": 2, "epochs_first": 3})
    return params.model_copy(update={"benchmarks": {**params.benchmarks,
                                                    "smnist_smoke": bench.model_copy(update={"train": train})},
                                     "methods": {**params.methods, "gr": GR},
                                     "run": params.run.model_copy(update=run)})


def test_memory_and_resume_inside_an_experience(params, data_roots, tmp_path, monkeypatch):
    """Memory: the generator's parameters + the solver's copy, 4 bytes a value, from the first
    experience on. A run killed in the second epoch of experience 3 resumes (experience checkpoint:
    generator, its Adam state, the old solver; then the epoch checkpoint) with the records of an
    uninterrupted run."""
    _, prepared = data_roots
    p = _params(params, checkpoint_every_epochs=1)
    ref_dir = train_run(p, "smnist_smoke", "gr", 0, prepared, tmp_path / "ref")
    vae = MlpVAE((1, 28, 28), 2, [64, 32], [32, 64])
    model = build_model("mlp", {"hidden_sizes": [100, 100]}, (1, 28, 28), 10)
    memory = pd.read_parquet(ref_dir / "experiences.parquet")["extra_memory_bytes"].tolist()
    assert memory == [4 * (count_parameters(vae) + count_parameters(model))] * 5
    ref = read_records(ref_dir)

    _crash_in(monkeypatch, exp=2, epoch=1, iteration=3)
    with pytest.raises(ComponentError, match="Crash"):
        train_run(p, "smnist_smoke", "gr", 0, prepared, tmp_path / "cut")
    run_dir = tmp_path / "cut" / "smnist_smoke" / "gr" / "seed0"
    assert (run_dir / EPOCH_CHECKPOINT).exists()
    train_run(p, "smnist_smoke", "gr", 0, prepared, tmp_path / "cut")
    log = (run_dir / "log.txt").read_text()
    assert "resuming from checkpoint after experience 2/5" in log and "resuming experience 3 after epoch 1/2" in log
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)
