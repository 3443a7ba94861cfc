"""SAM step, ER-SAM, DER++-SAM and MGSER-SAM gradients against hand computations."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from clsuite.methods.der import DERSAMPlugin
from clsuite.methods.mgser import MGSERSAMPlugin
from clsuite.methods.replay import ReservoirReplaySAMPlugin
from clsuite.methods.sam import sam_gradients

RHO = 0.5


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _grad(model, loss_fn):
    """∇ loss_fn(model) as a list of tensors, without touching ``.grad``."""
    params = list(model.parameters())
    return [g.detach() for g in torch.autograd.grad(loss_fn(model), params)]


def _at(model, grads, rho):
    """A copy of ``model`` moved to θ + ρ g/‖g‖."""
    moved = copy.deepcopy(model)
    norm = torch.norm(torch.stack([g.norm() for g in grads]))
    with torch.no_grad():
        for p, g in zip(moved.parameters(), grads):
            p.add_(rho * g / norm)
    return moved


def _state(model, x, y):
    out = model(x)
    return SimpleNamespace(model=model, device=torch.device("cpu"), mb_x=x, mb_y=y, mb_task_id=torch.zeros_like(y),
                           mb_output=out, loss=F.cross_entropy(out, y), _criterion=F.cross_entropy)


def _backward(s):
    for p in s.model.parameters():
        p.grad = None
    s.loss.backward()


def test_sam_step_restores_theta_and_gives_the_gradient_at_the_perturbed_point(model):
    x, y = torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    loss_fn = lambda m: F.cross_entropy(m(x), y)  # noqa: E731
    theta = [p.detach().clone() for p in model.parameters()]
    g0 = _grad(model, loss_fn)
    expected = _grad(_at(model, g0, RHO), loss_fn)
    loss_fn(model).backward()
    got = sam_gradients(model, lambda: loss_fn(model), RHO)
    for p, t in zip(model.parameters(), theta):
        assert torch.equal(p, t), "θ must be restored exactly before the optimizer step"
    for a, b, g in zip(got, expected, g0):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, g) for a, g in zip(got, g0)), "SAM gradient equals the plain one"


def test_er_sam_step_differs_from_a_plain_step(model):
    x, y = torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    plain = copy.deepcopy(model)
    s = _state(model, x, y)
    _backward(s)
    ReservoirReplaySAMPlugin(10, 5, seed=0, rho=RHO).before_update(s)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    sp = _state(plain, x, y)
    _backward(sp)
    torch.optim.SGD(plain.parameters(), lr=0.1).step()
    assert any(not torch.allclose(a, b) for a, b in zip(model.parameters(), plain.parameters()))


def test_derpp_sam_reuses_the_same_buffer_batches(model):
    plugin = DERSAMPlugin(mem_size=8, batch_size_mem=3, alpha=0.3, beta=0.7, seed=0, rho=RHO)
    plugin.after_training_iteration(_state(model, torch.randn(8, 1, 2, 2), torch.arange(8) % 3))
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 2, 1])
    s = _state(model, x, y)
    plugin.before_backward(s)
    x1, z1, x2, y2 = plugin._memory

    def full(m):
        return F.cross_entropy(m(x), y) + 0.3 * F.mse_loss(m(x1), z1) + 0.7 * F.cross_entropy(m(x2), y2)

    expected = _grad(_at(model, _grad(model, full), RHO), full)
    _backward(s)
    plugin.before_update(s)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e)


@pytest.mark.parametrize("memory_loss", ["soft", "plain"])
@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_mgser_sam_gradient_equals_the_two_gradients_computed_by_hand(model, memory_loss, gamma):
    alpha = 0.2
    plugin = MGSERSAMPlugin(mem_size=8, batch_size_mem=4, alpha=alpha, gamma=gamma, rho=RHO,
                            memory_loss=memory_loss, seed=0)
    plugin.after_training_iteration(_state(model, torch.randn(8, 1, 2, 2), torch.arange(8) % 3))
    with torch.no_grad():
        model[3].bias.add_(0.3)  # stored logits now differ from the current ones
    x, y = torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 2, 1, 0])
    s = _state(model, x, y)
    plugin.before_backward(s)
    xm, ym, zm = plugin._memory

    def soft(m):
        out = m(xm)
        return F.cross_entropy(out, ym) + alpha * torch.linalg.vector_norm(out - zm, dim=1).mean()

    def plain(m):
        return F.cross_entropy(m(xm), ym)

    def total(m):
        return F.cross_entropy(m(x), y) + soft(m)

    g_sam = _grad(_at(model, _grad(model, total), RHO), total)
    g_mem = _grad(model, soft if memory_loss == "soft" else plain)
    theta = [p.detach().clone() for p in model.parameters()]
    _backward(s)
    plugin.before_update(s)
    for p, t, a, b in zip(model.parameters(), theta, g_sam, g_mem):
        assert torch.equal(p, t)
        torch.testing.assert_close(p.grad, a + gamma * b)


def test_mgser_sam_without_memory_is_plain_sam(model):
    plugin = MGSERSAMPlugin(mem_size=8, batch_size_mem=4, alpha=0.2, gamma=1.0, rho=RHO, memory_loss="soft", seed=0)
    x, y = torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 2, 1, 0])
    loss_fn = lambda m: F.cross_entropy(m(x), y)  # noqa: E731
    expected = _grad(_at(model, _grad(model, loss_fn), RHO), loss_fn)
    s = _state(model, x, y)
    plugin.before_backward(s)
    assert plugin._memory is None
    _backward(s)
    plugin.before_update(s)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e)
