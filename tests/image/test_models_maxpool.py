"""The convnet's MaxPool2x2 equals nn.MaxPool2d(2) bit for bit (signed zeros, ties, NaN, inf, odd
sizes), in evaluation (its fast way) and in training (the kernel, so gradients of tied windows go
where torch's kernel sends them)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clsuite.models import build_model
from clsuite.models.builtin import MaxPool2x2


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


def _inputs(shape: tuple[int, ...], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ties = torch.randint(-2, 3, shape, generator=g).float()  # many tied windows
    signs = torch.rand(shape, generator=g) < 0.5
    ties[ties == 0] = torch.where(signs[ties == 0], -0.0, 0.0)  # +0.0 and -0.0 tie in value, not in bits
    nan = torch.rand(shape, generator=g).masked_fill(torch.rand(shape, generator=g) < 0.02, float("nan"))
    inf = torch.rand(shape, generator=g).masked_fill(torch.rand(shape, generator=g) < 0.02, float("inf"))
    return [ties, ties.relu(), ties.abs(), torch.rand(shape, generator=g), nan, inf, torch.zeros(shape)]


@pytest.mark.parametrize("shape", [(64, 16, 28, 28), (3, 5, 7, 9), (2, 2, 5, 4), (1, 1, 2, 2)])
def test_evaluation_output_equals_the_kernel_bit_for_bit(shape):
    pool = MaxPool2x2()
    with torch.no_grad():
        for seed in range(3):
            for x in _inputs(shape, seed):
                assert _bits_equal(pool(x), F.max_pool2d(x, 2)), (shape, seed)


def test_what_the_fast_way_cannot_take_goes_to_the_kernel():
    pool = MaxPool2x2()
    with torch.no_grad():
        x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
        assert torch.equal(pool(x), F.max_pool2d(x, 2))  # float64: the kernel
        with pytest.raises(RuntimeError):  # a too-small input fails as nn.MaxPool2d(2) does
            pool(torch.rand(1, 1, 1, 4))


def test_training_gradients_of_tied_windows_equal_the_kernels():
    x = torch.zeros(2, 3, 6, 6)
    x[..., ::2, ::2] = 1.0  # every window: one 1 and three 0s after a shift, and all-zero windows
    x[0, 0] = 0.5  # a window of four equal values: the kernel sends the gradient to the first
    for pool in (MaxPool2x2(), torch.nn.MaxPool2d(2)):
        leaf = x.clone().requires_grad_(True)
        (pool(leaf) * torch.arange(27.0).view(1, 3, 3, 3)).sum().backward()
        if isinstance(pool, MaxPool2x2):
            ours = leaf.grad
    assert torch.equal(ours, leaf.grad)


def test_convnet_records_do_not_depend_on_the_fast_way():
    """The convnet's logits in evaluation mode equal those with torch's kernel for every pool."""
    torch.manual_seed(0)
    net = build_model("convnet", {"channels": [16, 32], "feature_dim": 128}, (1, 28, 28), 10).eval()
    x = torch.rand(64, 1, 28, 28) * (torch.rand(64, 1, 28, 28) < 0.3)  # sparse images: many zero windows
    with torch.no_grad():
        fast = net(x)
        for m in net.modules():
            if isinstance(m, MaxPool2x2):
                m.forward = lambda t, m=m: F.max_pool2d(t, 2)
        assert _bits_equal(fast, net(x))
