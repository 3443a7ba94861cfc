"""Shared plumbing: find a causal LM's decoder layers, hook a module onto one FFN, callbacks.

Written by hand because the insertion must keep the pretrained ``state_dict`` keys
unchanged (so a Hugging Face checkpoint still loads into the prepared model): the added
module is registered as a child of the FFN (``...layers.{i}.mlp.<name>.*``, new keys
only) and applied by a forward hook on the FFN, instead of replacing the FFN by a wrapper
(which would rename every ``mlp.*`` key).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

# Avalanche 0.6.0's SupervisedPlugin callback names. The plugins here duck-type them
# instead of subclassing ``avalanche.core.SupervisedPlugin``: importing avalanche costs
# about 6 s on this project's 2-core CPU, and both Avalanche's template and clsuite's LLM
# loop call plugin callbacks by name.
CALLBACKS = (
    "before_training", "before_train_dataset_adaptation", "after_train_dataset_adaptation",
    "before_training_exp", "before_training_epoch", "before_training_iteration",
    "before_forward", "after_forward", "before_backward", "after_backward",
    "before_update", "after_update", "after_training_iteration", "after_training_epoch",
    "after_training_exp", "after_training",
    "before_eval", "before_eval_dataset_adaptation", "after_eval_dataset_adaptation",
    "before_eval_exp", "before_eval_iteration", "before_eval_forward", "after_eval_forward",
    "after_eval_iteration", "after_eval_exp", "after_eval",
)


class CallbackPlugin:
    """Every Avalanche training/eval callback as a no-op ``(strategy, **kwargs) -> None``."""

    supports_distributed = False


def _noop(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
    return None


for _name in CALLBACKS:
    setattr(CallbackPlugin, _name, _noop)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Hugging Face causal LM.

    Llama/SmolLM2/Qwen2/Mistral: ``model.model.layers``; GPT-2 style: ``model.transformer.h``;
    a bare ``LlamaModel``: ``model.layers``.
    """
    for path in ("model.layers", "transformer.h", "layers", "gpt_neox.layers"):
        obj: Any = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")


def ffn_of(model: nn.Module, layer: int | None) -> tuple[int, nn.Module]:
    """(resolved layer index, that layer's FFN); ``layer=None`` picks the middle layer."""
    layers = decoder_layers(model)
    idx = len(layers) // 2 if layer is None else layer
    if not -len(layers) <= idx < len(layers):
        raise ValueError(f"layer {layer} out of range for a model with {len(layers)} layers")
    idx %= len(layers)
    block = layers[idx]
    for attr in ("mlp", "feed_forward", "ffn"):
        ffn = getattr(block, attr, None)
        if isinstance(ffn, nn.Module):
            return idx, ffn
    raise ValueError(f"decoder layer {idx} ({type(block).__name__}) has no mlp/feed_forward/ffn")


def hidden_size(model: nn.Module) -> int:
    cfg = getattr(model, "config", None)
    for attr in ("hidden_size", "n_embd", "d_model"):
        if cfg is not None and hasattr(cfg, attr):
            return int(getattr(cfg, attr))
    raise ValueError(f"cannot read the hidden size of {type(model).__name__}")


def attach_to_ffn(ffn: nn.Module, name: str, module: nn.Module,
                  combine: Callable[[torch.Tensor, torch.Tensor, nn.Module], torch.Tensor]) -> None:
    """Register ``module`` as ``ffn.<name>`` and make ``ffn``'s output ``combine(x, out, module)``.

    ``combine`` must be a picklable top-level function (the hook is saved with the model).
    """
    if hasattr(ffn, name):
        raise ValueError(f"{type(ffn).__name__} already has a {name!r}: prepare_model was called twice")
    ffn.add_module(name, module)
    ffn.register_forward_hook(_FFNHook(name, combine))


class _FFNHook:
    """Forward hook ``out -> combine(x, out, ffn.<name>)``; a class so that it pickles/deep-copies."""

    def __init__(self, name: str, combine: Callable[[torch.Tensor, torch.Tensor, nn.Module], torch.Tensor]):
        self.name = name
        self.combine = combine

    def __call__(self, ffn: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return self.combine(args[0], out, getattr(ffn, self.name))


def device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def batch_inputs(mbatch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """(model keyword inputs, attention mask or None) from a minibatch.

    Accepts a dict/``BatchEncoding`` (``input_ids``, optional ``attention_mask``…), a
    LongTensor of token ids (B, T), or a tuple/list whose first item is one of those.
    """
    if isinstance(mbatch, (tuple, list)):
        mbatch = mbatch[0]
    if isinstance(mbatch, torch.Tensor):
        return {"input_ids": mbatch}, None
    if hasattr(mbatch, "keys"):
        kw = {k: mbatch[k] for k in ("input_ids", "attention_mask") if k in mbatch}
        return kw, mbatch.get("attention_mask")
    raise TypeError(f"cannot read token ids from a minibatch of type {type(mbatch).__name__}")
