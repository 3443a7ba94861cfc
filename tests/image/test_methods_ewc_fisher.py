"""EWC's two Fisher estimates against a hand-computed Fisher of a 2-parameter model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from clsuite.methods.ewc import CheckpointableEWCPlugin, EWCConfig


class TwoParams(torch.nn.Module):
    """Logits (w·x, b) of a 2-class model with exactly two parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))
        self.b = torch.nn.Parameter(torch.tensor(-0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.w * x[:, 0], self.b.expand(len(x))], dim=1)


X = np.array([1.0, -2.0, 3.0])
Y = np.array([0, 1, 1])


def _hand_gradients() -> np.ndarray:
    """Per-sample (dL/dw, dL/db) of the cross-entropy: dL/dz = softmax(z) − onehot(y)."""
    z = np.stack([0.5 * X, np.full(3, -0.2)], axis=1)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    d = p - np.eye(2)[Y]
    return np.stack([d[:, 0] * X, d[:, 1]], axis=1)


def _fisher(mode: str, batch_size: int) -> np.ndarray:
    model = TwoParams()
    plugin = CheckpointableEWCPlugin(ewc_lambda=1.0, fisher=mode)
    data = TensorDataset(torch.tensor(X, dtype=torch.float32)[:, None], torch.tensor(Y), torch.zeros(3, dtype=torch.long))
    imp = plugin.compute_importances(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                                     data, "cpu", batch_size)
    return np.array([imp["w"].data.item(), imp["b"].data.item()])


def test_per_sample_fisher_by_hand():
    g = _hand_gradients()
    expected = (g ** 2).mean(axis=0)  # mean over samples of the squared per-sample gradient
    for b in (1, 2, 3):  # independent of the batch size
        np.testing.assert_allclose(_fisher("per_sample", b), expected, rtol=1e-5)


def test_batch_mean_fisher_by_hand_is_the_default():
    g = _hand_gradients()
    np.testing.assert_allclose(_fisher("batch_mean", 3), g.mean(axis=0) ** 2, rtol=1e-5)  # one batch of 3
    np.testing.assert_allclose(_fisher("batch_mean", 1), (g ** 2).mean(axis=0), rtol=1e-5)  # B = 1: the same
    assert EWCConfig().fisher == "batch_mean"
    with pytest.raises(ValueError):
        EWCConfig(fisher="true")
