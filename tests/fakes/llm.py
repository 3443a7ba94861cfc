"""A tiny randomly initialised Llama for the LLM memory-module tests (no download, milliseconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from clsuite.config import read_params_raw

REPO = Path(__file__).resolve().parents[2]


def repo_params() -> dict:
    """The repository's params.yaml, parsed (a fresh copy on every call)."""
    return read_params_raw(REPO / "params.yaml")


def smoke_llm(raw_params: dict, methods: list[str], **method_overrides: dict):
    """``LLMParams`` of ``raw_params`` with the grid llm_smoke × ``methods`` × seed 0 (and
    ``methods.<name>`` replaced by ``method_overrides``)."""
    from clsuite.llm.config import LLMParams

    raw = json.loads(json.dumps(raw_params["llm"]))
    raw["grid"] = {"sequences": ["llm_smoke"], "methods": list(methods), "seeds": [0]}
    raw["methods"].update(method_overrides)
    return LLMParams.model_validate(raw)


def tiny_llama(seed: int = 0):
    """LlamaForCausalLM with hidden 32, 2 layers, vocab 64, in eval mode (skips without transformers)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


class NanLossAt:
    """LLM plugin: multiplies the loss by NaN at one (task, iteration) (0-based): a deterministic divergence."""

    def __init__(self, task: int, iteration: int) -> None:
        self.at = (task, iteration)

    def before_backward(self, strategy) -> None:
        if (strategy.experience.current_experience, strategy.clock.train_exp_iterations) == self.at:
            strategy.loss = strategy.loss * float("nan")


def nan_loss_method(monkeypatch, task: int = 1, iteration: int = 0) -> str:
    """Register LLM method ``nan_loss`` (LoRA, diverges at ``task``/``iteration``) for one test."""
    from clsuite.llm.methods import LLM_METHODS, LLMMethodConfig, register_llm_method

    LLM_METHODS.names()  # built-ins and entry points loaded before the copy
    monkeypatch.setattr(LLM_METHODS, "_entries", dict(LLM_METHODS._entries))
    monkeypatch.setattr(LLM_METHODS, "_origin", dict(LLM_METHODS._origin))
    register_llm_method("nan_loss", LLMMethodConfig, "test: NaN loss at one iteration")(
        lambda cfg, ctx: [NanLossAt(task, iteration)])
    return "nan_loss"
