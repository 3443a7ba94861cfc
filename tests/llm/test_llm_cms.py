"""Continuum memory system (clsuite/llm/memory/cms.py): update schedule, accumulated step, insertion."""

from __future__ import annotations

from types import SimpleNamespace

import pydantic
import pytest
import torch
from torch import nn

from fakes.llm import tiny_llama

from clsuite.llm.memory.cms import CMSConfig, CMSPlugin, ContinuumMemory, find_cms

torch.set_num_threads(1)


def randomise_down(cms: ContinuumMemory, seed: int = 0) -> None:
    """Non-zero W2 so that every parameter of every block gets a non-zero gradient."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in cms.blocks:
            b.down.weight.copy_(torch.randn(b.down.weight.shape, generator=g) * 0.3)
            b.down.bias.copy_(torch.randn(b.down.bias.shape, generator=g) * 0.1)


def snapshot(cms: ContinuumMemory) -> list[list[torch.Tensor]]:
    return [[p.detach().clone() for p in b.parameters()] for b in cms.blocks]


def test_identity_at_init():
    cms = ContinuumMemory(8, (1, 2, 4), d_hidden=5)
    x = torch.randn(3, 4, 8)
    assert torch.equal(cms(x), x)
    assert torch.equal(cms(x.to(torch.bfloat16)), x.to(torch.bfloat16))


def test_blocks_change_exactly_at_multiples_of_their_chunk_size():
    chunks = (1, 2, 3)
    cms = ContinuumMemory(6, chunks, d_hidden=7, seed=1)
    randomise_down(cms)
    model = nn.Sequential(nn.Linear(6, 6), cms)
    plugin = CMSPlugin(CMSConfig(chunk_sizes=chunks))
    opt = torch.optim.SGD(plugin.trainable_parameters(model), lr=0.05)
    strategy = SimpleNamespace(model=model, optimizer=opt)
    g = torch.Generator().manual_seed(0)
    for step in range(1, 13):
        before = snapshot(cms)
        opt.zero_grad()
        x, y = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
        nn.functional.mse_loss(model(x), y).backward()
        plugin.after_backward(strategy)
        opt.step()
        for l, (c, b_before, block) in enumerate(zip(chunks, before, cms.blocks)):
            for p_before, p in zip(b_before, block.parameters()):
                if step % c == 0:
                    assert not torch.equal(p, p_before), (step, l)
                else:
                    assert torch.equal(p, p_before), (step, l)
        assert plugin.due_blocks() == [l for l, c in enumerate(chunks) if step % c == 0]
    assert plugin.step == 12


@pytest.mark.parametrize("accumulate", ["sum", "mean"])
def test_update_is_one_sgd_step_on_the_accumulated_gradient(accumulate):
    chunks, lr = (1, 4), 0.1
    cms = ContinuumMemory(5, chunks, d_hidden=6, seed=2)
    randomise_down(cms, seed=1)
    plugin = CMSPlugin(CMSConfig(chunk_sizes=chunks, accumulate=accumulate))
    opt = torch.optim.SGD(plugin.trainable_parameters(cms), lr=lr)
    strategy = SimpleNamespace(model=cms, optimizer=opt)
    g = torch.Generator().manual_seed(3)
    slow = cms.blocks[1]
    start = [p.detach().clone() for p in slow.parameters()]
    hand = [torch.zeros_like(p) for p in slow.parameters()]
    for step in range(1, 5):
        opt.zero_grad()
        x, y = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
        nn.functional.mse_loss(cms(x), y).backward()
        for h, p in zip(hand, slow.parameters()):  # the gradient at the (unchanged) slow parameters
            h.add_(p.grad)
        plugin.after_backward(strategy)
        opt.step()  # the fast block (C=1) moves every step, so later gradients of the slow block differ
    scale = 1 / 4 if accumulate == "mean" else 1.0
    assert all(not torch.equal(a, b) for a, b in zip(start, slow.parameters()))
    for p0, h, p in zip(start, hand, slow.parameters()):
        torch.testing.assert_close(p.detach(), p0 - lr * scale * h, rtol=1e-6, atol=1e-7)
    assert all(not b.any() for b in plugin.buffers[1])  # cleared after the update


def test_state_dict_round_trip_resumes_mid_chunk():
    chunks = (3,)
    cms = ContinuumMemory(4, chunks, seed=0)
    randomise_down(cms)
    plugin = CMSPlugin(CMSConfig(chunk_sizes=chunks))
    strategy = SimpleNamespace(model=cms)
    x = torch.randn(2, 4)
    for _ in range(2):
        cms.zero_grad()
        cms(x).sum().backward()
        plugin.after_backward(strategy)
    state = plugin.state_dict()
    resumed = CMSPlugin(CMSConfig(chunk_sizes=chunks))
    resumed.load_state_dict(state)
    assert resumed.step == 2
    for a, b in zip(resumed.buffers[0], plugin.buffers[0]):
        assert torch.equal(a, b) and a.any()
    cms.zero_grad()
    cms(x).sum().backward()
    g3 = [p.grad.clone() for p in cms.blocks[0].parameters()]
    resumed.after_backward(strategy)  # step 3: due, grad = accumulated over steps 1..3
    for p, b, g in zip(cms.blocks[0].parameters(), state["buffers"][0], g3):
        torch.testing.assert_close(p.grad, b + g)


def test_config_is_strict():
    with pytest.raises(pydantic.ValidationError):
        CMSConfig(frequencies=[1, 2])
    with pytest.raises(pydantic.ValidationError):
        CMSConfig(chunk_sizes=(1, 0))


def test_insertion_leaves_logits_unchanged():
    model = tiny_llama()
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    old_keys = set(model.state_dict())
    plugin = CMSPlugin(CMSConfig(layer=0, chunk_sizes=(1, 4, 16), hidden=16))
    model = plugin.prepare_model(model)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)
    assert set(model.state_dict()) > old_keys
    cms = find_cms(model)
    assert [p for p in model.parameters() if p.requires_grad] == list(cms.parameters())
    assert plugin.trainable_parameters(model) == list(cms.parameters())
    randomise_down(cms)  # the chain is wired in
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, before)
    # one training step through the LM: only due blocks move (step 1: the C=1 block)
    opt = torch.optim.AdamW(plugin.trainable_parameters(model), lr=1e-2, weight_decay=0.1)
    before_params = snapshot(cms)
    model(input_ids=ids, labels=ids).loss.backward()
    plugin.after_backward(SimpleNamespace(model=model, optimizer=opt))
    opt.step()
    moved = [any(not torch.equal(a, p) for a, p in zip(bb, b.parameters()))
             for bb, b in zip(before_params, cms.blocks)]
    assert moved == [True, False, False]
