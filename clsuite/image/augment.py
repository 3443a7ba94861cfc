"""Training-time augmentation and input normalisation (``benchmarks.<b>.train.augment`` / ``normalize``).

Every random choice of a sample (crop offset or box, flip) comes from :func:`uniforms`, a
counter-based hash of (seed, experience, epoch, sample key): the same sample gets the same
augmentation whatever batch it is in, however many loader workers read it and whatever other
random draws happened, so a seed gives the same records on CPU with or without workers,
resumed or not. torchvision's v2 transforms draw their parameters from the global torch RNG
per call, which would tie them to batch composition and to every other draw in the run; here
the parameters are drawn as torchvision draws them (same distributions and retry rule of
``RandomResizedCrop``) and the pixels are moved by ``torchvision.transforms.v2.functional``.

The sample key is the row of the prepared training split on the trainer's fast path (the
stream's own data) and the position in the epoch (offset by 2**40) on Avalanche's loader,
used when a plugin adapts the training set: both deterministic, but a method on the two
paths sees different draws. Replay buffers store the un-augmented rows
(``strategy.mb_x_plain``, Mammoth's ``not_aug_inputs``) and augment what they replay
(``strategy.augment_replay``, keyed by the replayed sample's position in the epoch), as
Mammoth does; clsuite's replay methods use both through
:func:`clsuite.methods.replay.stored_inputs` / :func:`~clsuite.methods.replay.replayed_inputs`.

Normalisation ``(x - mean) / std`` is a forward pre-hook on the model's backbone
(:func:`attach_normalization`), so training, evaluation, feature metrics and every copy a
method makes of the backbone see normalised inputs, while the state dict (and so checkpoints)
keep their layout.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from clsuite.image.config import AugmentConfig, NormalizeConfig

#: added to in-epoch positions, so that position keys never equal row keys
POSITION_KEY_OFFSET = 1 << 40
#: added to the in-epoch count of replayed samples (:meth:`ClsuiteTemplate.augment_replay`)
REPLAY_KEY_OFFSET = 1 << 41
_DRAWS = 24  # per sample: [0] flip, [1:3] crop offsets (top, left), [3:23] resized-crop tries (area, aspect),
# [23] brightness factor
_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def uniforms(seed: int, experience: int, epoch: int, keys: np.ndarray, n: int = _DRAWS) -> np.ndarray:
    """float64 (len(keys), n) in [0, 1): the draws of each sample key for (seed, experience, epoch)."""
    with np.errstate(over="ignore"):
        h = np.uint64(0)
        for part in (seed, experience, epoch):
            h = _mix(np.asarray(h ^ (np.uint64(part & 0xFFFFFFFFFFFFFFFF) + _GOLDEN)))
        k = _mix(h ^ (np.asarray(keys, dtype=np.uint64) + _GOLDEN))[:, None]
        z = _mix(k ^ (np.arange(n, dtype=np.uint64)[None, :] * _GOLDEN))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _resized_crop_box(u: np.ndarray, h: int, w: int, scale, ratio) -> tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params`` with its draws from ``u`` (one sample's row of
    :func:`uniforms`): 10 tries of (area, log-aspect) from ``u[3:23]``, the box's offsets from ``u[1:3]``."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for t in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * u[3 + 2 * t])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[4 + 2 * t])
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = min(int(u[1] * (h - ch + 1)), h - ch)
            left = min(int(u[2] * (w - cw + 1)), w - cw)
            return top, left, ch, cw
    in_ratio = w / h  # fallback: central crop, as torchvision
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


class BatchAugment:
    """Augments float batches (N, C, H, W) of the stream: ``augment(x, keys, experience, epoch)``."""

    def __init__(self, cfg: AugmentConfig, seed: int) -> None:
        self.cfg, self.seed = cfg, seed

    def __call__(self, x: torch.Tensor, keys: np.ndarray, experience: int, epoch: int) -> torch.Tensor:
        if x.dim() != 4 or not len(keys):
            return x
        u = uniforms(self.seed, experience, epoch, keys)
        n, _, h, w = x.shape
        crop, resized = self.cfg.random_crop, self.cfg.random_resized_crop
        if crop is not None:
            p = crop.padding
            padded = TF.pad(x, [p, p, p, p], fill=0.0)
            offsets = np.minimum((u[:, 1:3] * (2 * p + 1)).astype(np.int64), 2 * p)
            x = torch.stack([padded[i, :, t : t + h, l : l + w] for i, (t, l) in enumerate(offsets.tolist())])
        elif resized is not None:
            boxes = [_resized_crop_box(u[i], h, w, resized.scale, resized.ratio) for i in range(n)]
            x = torch.stack([TF.resized_crop(x[i], *box, size=[h, w], antialias=True) for i, box in enumerate(boxes)])
        if self.cfg.hflip:
            flip = torch.from_numpy(u[:, 0] < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], TF.horizontal_flip(x), x)
        if self.cfg.brightness:  # ColorJitter(brightness=b): x * f, f ~ U[max(0, 1 - b), 1 + b], clamped to [0, 1]
            b = self.cfg.brightness
            lo = max(0.0, 1.0 - b)
            f = torch.from_numpy(lo + (1.0 + b - lo) * u[:, 23]).to(x.device, x.dtype)
            x = (x * f[:, None, None, None]).clamp_(0.0, 1.0)
        return x


class InputNormalization:
    """Forward pre-hook ``x -> (x - mean) / std`` (per channel); mean/std follow the input's
    device and dtype. A plain object, so ``copy.deepcopy`` of the module copies it along."""

    def __init__(self, cfg: NormalizeConfig) -> None:
        self.mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(cfg.std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, module: torch.nn.Module, args: tuple):
        x, *rest = args
        if x.dim() != 4:
            return None
        if x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"train.normalize has {self.mean.shape[1]} channels, the input {x.shape[1]}")
        mean, std = self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)
        return ((x - mean) / std, *rest)


def attach_normalization(model: torch.nn.Module, cfg: NormalizeConfig | None) -> torch.nn.Module:
    """Register :class:`InputNormalization` on ``model.backbone`` (every clsuite model has one;
    else on the model itself). Returns the model."""
    if cfg is not None:
        target = getattr(model, "backbone", None)
        (target if isinstance(target, torch.nn.Module) else model).register_forward_pre_hook(InputNormalization(cfg))
    return model
