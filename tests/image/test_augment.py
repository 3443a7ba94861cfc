"""Augmentation and normalisation (clsuite/image/augment.py): per-sample determinism, the
pixels moved as torchvision's functional ops / numpy slicing move them, and the records of a
seed reproducible."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from clsuite.image.augment import BatchAugment, attach_normalization, uniforms
from clsuite.image.config import AugmentConfig, NormalizeConfig, TrainConfig
from clsuite.image.records import read_records
from clsuite.image.train import train_run
from clsuite.models import build_model


def test_draws_depend_on_the_key_not_on_the_batch():
    keys = np.array([5, 17, 3, 1 << 40])
    a = uniforms(0, 1, 2, keys)
    assert a.shape == (4, 24) and ((a >= 0) & (a < 1)).all()
    assert np.array_equal(uniforms(0, 1, 2, keys[[2, 0]]), a[[2, 0]])  # same key, same draws, any batch
    for other in (uniforms(1, 1, 2, keys), uniforms(0, 2, 2, keys), uniforms(0, 1, 3, keys)):
        assert not np.allclose(other, a)  # seed, experience and epoch all change them
    big = uniforms(0, 0, 0, np.arange(20000))
    assert abs(big.mean() - 0.5) < 0.01 and abs(big.var() - 1 / 12) < 0.005  # uniform on [0, 1)


def test_random_crop_and_flip_equal_numpy_padding_slicing_and_flipping():
    cfg = AugmentConfig(random_crop={"padding": 2}, hflip=True)
    x = torch.rand(6, 3, 5, 7)
    keys = np.arange(6) * 11
    out = BatchAugment(cfg, seed=3)(x, keys, 1, 4)
    u = uniforms(3, 1, 4, keys)
    for i in range(6):
        top, left = min(int(u[i, 1] * 5), 4), min(int(u[i, 2] * 5), 4)
        padded = np.pad(x[i].numpy(), ((0, 0), (2, 2), (2, 2)))
        expected = padded[:, top : top + 5, left : left + 7]
        if u[i, 0] < 0.5:
            expected = expected[:, :, ::-1]
        assert np.array_equal(out[i].numpy(), expected)
    # a sample is augmented alike alone or in a batch
    assert torch.equal(BatchAugment(cfg, seed=3)(x[4:5], keys[4:5], 1, 4), out[4:5])


def test_random_resized_crop_boxes_follow_torchvision_bounds():
    cfg = AugmentConfig(random_resized_crop={"scale": [0.25, 1.0], "ratio": [0.75, 1.3333]})
    x = torch.rand(64, 3, 32, 32)
    out = BatchAugment(cfg, seed=0)(x, np.arange(64), 0, 0)
    assert out.shape == x.shape and not torch.equal(out, x)
    from clsuite.image.augment import _resized_crop_box

    u = uniforms(0, 0, 0, np.arange(2000))
    boxes = np.array([_resized_crop_box(u[i], 32, 32, (0.25, 1.0), (0.75, 4 / 3)) for i in range(2000)])
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = h * w / 1024
    assert area.min() >= 0.2 and 0.5 < area.mean() < 0.75  # uniform area in [0.25, 1] (mean ~0.625), after rejection


def test_augment_config_allows_one_crop_only():
    with pytest.raises(ValidationError, match="one of random_crop"):
        AugmentConfig.model_validate({"random_crop": {}, "random_resized_crop": {}})
    with pytest.raises(ValidationError):
        NormalizeConfig.model_validate({"mean": [0.5, 0.5], "std": [0.2]})


def test_normalization_is_a_hook_on_the_backbone_that_copies_travel_with():
    torch.manual_seed(0)
    model = build_model("convnet", {"channels": [4, 8], "feature_dim": 16}, (3, 8, 8), 5)
    plain = copy.deepcopy(model)
    keys = list(model.state_dict())
    cfg = NormalizeConfig(mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
    attach_normalization(model, cfg)
    assert list(model.state_dict()) == keys  # checkpoints keep their layout
    x = torch.rand(4, 3, 8, 8)
    xn = (x - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    assert torch.allclose(model(x), plain(xn)) and torch.allclose(model.features(x), plain.features(xn))
    twin = copy.deepcopy(model.backbone)  # e.g. DER's extra extractors
    assert torch.allclose(twin(x), plain.backbone(xn))


def test_augmented_runs_are_reproducible_and_differ_from_plain(params, data_roots, tmp_path):
    _, prepared = data_roots
    bench = params.benchmark("smnist_smoke")
    train = TrainConfig.model_validate({**bench.train.model_dump(), "augment": {"random_crop": {"padding": 2}},
                                        "normalize": {"mean": [0.1], "std": [0.3]}})
    p = params.model_copy(update={"benchmarks": {**params.benchmarks,
                                                 "smnist_smoke": bench.model_copy(update={"train": train})}})
    a = read_records(train_run(p, "smnist_smoke", "replay", 0, prepared, tmp_path / "a"))
    b = read_records(train_run(p, "smnist_smoke", "replay", 0, prepared, tmp_path / "b"))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    plain = read_records(train_run(params, "smnist_smoke", "replay", 0, prepared, tmp_path / "plain"))
    assert not np.array_equal(a.filter(like="logit_").to_numpy(), plain.filter(like="logit_").to_numpy())


def test_brightness_is_colorjitter_brightness_by_hand():
    b = 63 / 255
    x = torch.rand(5, 3, 4, 4)
    keys = np.arange(5)
    out = BatchAugment(AugmentConfig(brightness=b), seed=1)(x, keys, 0, 2)
    f = (1 - b) + 2 * b * uniforms(1, 0, 2, keys)[:, 23]  # U[1 - b, 1 + b]
    expected = np.clip(x.numpy() * f[:, None, None, None].astype(np.float32), 0, 1)
    assert np.allclose(out.numpy(), expected, atol=1e-7)
    assert (out <= 1).all() and (out >= 0).all()


@pytest.mark.parametrize("method", ["replay", "der"])
def test_buffers_keep_the_unaugmented_rows_and_replay_them_augmented(params, data_roots, tmp_path, method, monkeypatch):
    """As Mammoth: a buffer stores the stream's inputs before augmentation (not_aug_inputs) and
    what it replays goes through the augmentation."""
    from clsuite.image.streams import load_prepared, to_float
    from clsuite.image.trainer import ClsuiteTemplate

    _, prepared_root = data_roots
    bench = params.benchmark("smnist_smoke")
    train = TrainConfig.model_validate({**bench.train.model_dump(), "augment": {"random_crop": {"padding": 3}}})
    p = params.model_copy(update={"benchmarks": {**params.benchmarks,
                                                 "smnist_smoke": bench.model_copy(update={"train": train})}})
    replayed = []
    real = ClsuiteTemplate.augment_replay
    monkeypatch.setattr(ClsuiteTemplate, "augment_replay",
                        lambda self, x: replayed.append((x, out := real(self, x))) or out)
    buffers = []
    train_run(p, "smnist_smoke", method, 0, prepared_root, tmp_path,
              on_experience=lambda s, stream, k: buffers.append([pl.buffer for pl in s.plugins if hasattr(pl, "buffer")][0]))
    rows = {tuple(r.flatten().tolist()) for r in to_float(load_prepared(prepared_root / "smnist_smoke").train.x)}
    stored = buffers[-1].x[: len(buffers[-1])]
    assert len(stored) and all(tuple(r.flatten().tolist()) in rows for r in stored)  # plain training rows
    assert replayed and any(not torch.equal(a, b) for a, b in replayed)  # replayed rows were augmented
