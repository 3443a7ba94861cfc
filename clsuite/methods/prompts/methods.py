"""The registered prompt methods ``l2p``, ``dualprompt`` and ``coda_prompt``: their configs, the
model they replace the benchmark's model with (:class:`~clsuite.methods.prompts.vit.PromptedViT`,
``wrap_model``) and their training plugin.

The plugin masks the logits of the classes outside the current experience while training (the
authors' ``train_mask``: the head learns each task's classes against each other), adds the pool's
auxiliary loss, and tells the model which task trains. Everything that changes lives in the model
(prompts, keys, head, the task index, CODA's initialised components), so the model's checkpoint is
the whole state: the plugin is stateless and a run resumes after an experience or an epoch.
"""

from __future__ import annotations

import torch
from avalanche.training.plugins import SupervisedPlugin
from pydantic import Field, model_validator

from clsuite.methods import MethodConfig, MethodContext, register_method
from clsuite.methods.prompts.pools import CODAPool, DualPromptPool, L2PPool
from clsuite.methods.prompts.vit import BackboneConfig, PromptedViT, build_vit

SCENARIOS = ("class_il", "task_il")


class PromptConfig(MethodConfig):
    backbone: BackboneConfig = Field(default_factory=BackboneConfig,
                                     description="the frozen ViT: arch tiny (random) or a timm ViT + checkpoint file")


class L2PConfig(PromptConfig):
    pool_size: int = Field(10, ge=1)
    length: int = Field(5, ge=1, description="tokens per prompt")
    top_k: int = Field(5, ge=1, description="prompts selected per image")
    pull: float = Field(0.1, ge=0, description="weight of the key-query surrogate loss")

    @model_validator(mode="after")
    def _top_k_fits(self) -> "L2PConfig":
        if self.top_k > self.pool_size:
            raise ValueError(f"l2p top_k: {self.top_k} prompts cannot be selected from a pool of {self.pool_size}; "
                             "set top_k <= pool_size")
        return self


class DualPromptConfig(PromptConfig):
    g_layers: list[int] = Field(default_factory=lambda: [0, 1])
    e_layers: list[int] = Field(default_factory=lambda: [2, 3, 4])
    g_length: int = Field(5, ge=1)
    e_length: int = Field(5, ge=1)
    pull: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _layers_apart(self) -> "DualPromptConfig":
        both = sorted(set(self.g_layers) & set(self.e_layers))
        if both:
            raise ValueError(f"dualprompt g_layers/e_layers: blocks {both} are in both; a block takes the G-prompt or "
                             "an E-prompt (the paper: G in 0-1, E in 2-4)")
        return self


class CODAConfig(PromptConfig):
    layers: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    pool_size: int = Field(100, ge=1, description="prompt components, split evenly over the experiences; "
                           "at most the ViT width")
    length: int = Field(8, ge=2, description="tokens per prompt (even: half keys, half values)")
    ortho: float = Field(0.0, ge=0, description="orthogonality penalty weight (ortho_mu)")


def _vit(cfg: PromptConfig, ctx: MethodContext):
    return build_vit(cfg.backbone, ctx.input_shape)


def _check_layers(layers: list[int], depth: int, key: str) -> None:
    from clsuite.core.errors import ParamsError

    bad = [i for i in layers if not 0 <= i < depth]
    if bad:
        raise ParamsError(f"{key}: blocks {bad} do not exist in a ViT of depth {depth} (0 .. {depth - 1})")


def wrap_l2p(model, cfg: L2PConfig, ctx: MethodContext) -> PromptedViT:
    vit = _vit(cfg, ctx)
    pool = L2PPool(vit.embed_dim, cfg.pool_size, cfg.length, cfg.top_k, cfg.pull)
    return PromptedViT(vit, pool, ctx.n_classes, cfg.backbone.mean, cfg.backbone.std)


def wrap_dualprompt(model, cfg: DualPromptConfig, ctx: MethodContext) -> PromptedViT:
    vit = _vit(cfg, ctx)
    _check_layers(cfg.g_layers + cfg.e_layers, len(vit.blocks), "dualprompt g_layers/e_layers")
    pool = DualPromptPool(vit.embed_dim, len(ctx.experiences), cfg.g_layers, cfg.e_layers, cfg.g_length,
                          cfg.e_length, cfg.pull)
    return PromptedViT(vit, pool, ctx.n_classes, cfg.backbone.mean, cfg.backbone.std)


def wrap_coda(model, cfg: CODAConfig, ctx: MethodContext) -> PromptedViT:
    from clsuite.core.errors import ParamsError

    vit = _vit(cfg, ctx)
    _check_layers(cfg.layers, len(vit.blocks), "coda_prompt layers")
    try:
        pool = CODAPool(vit.embed_dim, len(ctx.experiences), cfg.layers, cfg.pool_size, cfg.length, cfg.ortho)
    except ValueError as exc:
        raise ParamsError(str(exc)) from exc
    return PromptedViT(vit, pool, ctx.n_classes, cfg.backbone.mean, cfg.backbone.std)


class PromptPlugin(SupervisedPlugin):
    """Trains a :class:`PromptedViT`: sets its task, masks other experiences' classes, adds the
    pool's auxiliary loss (module docstring). Stateless: its state is the model's."""

    stateless = True

    def before_training_exp(self, strategy, **kwargs) -> None:
        model: PromptedViT = strategy.model
        task = int(strategy.clock.train_exp_counter)
        model.task.fill_(task)
        if hasattr(model.pool, "begin_task"):
            model.pool.begin_task(task)

    def after_forward(self, strategy, **kwargs) -> None:
        classes = torch.as_tensor(list(strategy.experience.classes_in_this_experience), device=strategy.mb_output.device)
        keep = torch.zeros(strategy.mb_output.shape[1], dtype=torch.bool, device=classes.device)
        keep[classes] = True
        strategy.mb_output = strategy.mb_output.masked_fill(~keep, float("-inf"))

    def before_backward(self, strategy, **kwargs) -> None:
        aux = strategy.model.aux_loss
        if aux is not None:
            strategy.loss = strategy.loss + aux

    def extra_memory_bytes(self, model: PromptedViT) -> int:
        """The prompts and keys (float32): what the method keeps beyond the backbone and head."""
        return 4 * sum(p.numel() for p in model.pool.parameters())


def _build(cfg: PromptConfig, ctx: MethodContext) -> list:
    return [PromptPlugin()]


register_method("l2p", L2PConfig, "L2P: a pool of prompts selected by key-query matching on a frozen ViT",
                citation="wang2022l2p", wrap_model=wrap_l2p, scenarios=SCENARIOS)(_build)
register_method("dualprompt", DualPromptConfig, "DualPrompt: shared G-prompt + task E-prompts (prefix tuning) on a "
                "frozen ViT", citation="wang2022dualprompt", wrap_model=wrap_dualprompt, scenarios=SCENARIOS)(_build)
register_method("coda_prompt", CODAConfig, "CODA-Prompt: attention-weighted prompt components on a frozen ViT",
                citation="smith2023coda", wrap_model=wrap_coda, scenarios=SCENARIOS)(_build)
