"""The frozen ViT of the prompt methods: built by timm, its weights loaded from a user-given
checkpoint (safetensors, or a weights-only ``torch.load``: nothing in the file can execute code),
and its forward with prompts inserted as tokens (L2P's prompt tuning) or as attention prefixes
(DualPrompt's and CODA-Prompt's prefix tuning).

Shapes: images (N, C, H, W) float in [0, 1] (C = 1 is repeated to 3 channels, H != the ViT's input
size is resized bilinearly, then normalised by ``mean``/``std``); tokens (N, T, D) with D the ViT's
width; a prefix is ``(keys, values)``, each (N, Lp, D), prepended to one block's attention keys and
values (the queries are the block's own tokens, so the token count does not change).
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path


import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, computed_field, model_validator
from torch import nn

from clsuite.core.errors import ParamsError
from clsuite.core.validation import Strict

#: where to get the usual pretrained weights (the papers: ViT-B/16 pretrained on ImageNet-21k)
WEIGHTS_HINT = ("e.g. timm's `vit_base_patch16_224.augreg_in21k` (Hugging Face hub "
                "timm/vit_base_patch16_224.augreg_in21k, file model.safetensors) with arch vit_base_patch16_224")


class BackboneConfig(Strict):
    """``arch``: ``tiny`` (a small randomly initialised ViT: ``img_size`` (default: the stream's
    image size), ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``) or a timm ViT name
    (``vit_base_patch16_224``, ...) whose weights come from ``checkpoint``. ``mean``/``std``
    normalise the [0, 1] images (0.5 for timm's augreg ViTs; 0.485/0.229, ... for ImageNet-1k ones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str = "tiny"
    checkpoint: Path | None = None
    img_size: int | None = Field(None, ge=8)
    patch_size: int = Field(7, ge=1)
    embed_dim: int = Field(32, ge=8)
    depth: int = Field(3, ge=1)
    num_heads: int = Field(2, ge=1)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @model_validator(mode="after")
    def _checkpoint_exists(self) -> "BackboneConfig":
        if self.arch != "tiny" and self.checkpoint is None:
            raise ValueError(f"backbone.checkpoint: arch {self.arch!r} needs the pretrained weights as a file "
                             f"(safetensors or a weights-only torch state dict), {WEIGHTS_HINT}; "
                             "or use arch: tiny (random weights, for tests)")
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise ValueError(f"backbone.checkpoint: {self.checkpoint} is not a file; download it first ({WEIGHTS_HINT})")
        return self

    @computed_field  # in the run's fingerprint: another file under the same path retrains
    @cached_property
    def checkpoint_sha256(self) -> str | None:
        if self.checkpoint is None:
            return None
        h = hashlib.sha256()
        with open(self.checkpoint, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()


def build_vit(cfg: BackboneConfig, input_shape: tuple[int, int, int]) -> nn.Module:
    """The timm VisionTransformer of ``cfg`` (no classifier head; 3 input channels), with the
    checkpoint's weights when one is given; the caller seeds the RNG (tiny's initialisation)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if cfg.arch == "tiny":
        size = cfg.img_size or input_shape[1]
        if size % cfg.patch_size:
            raise ParamsError(f"backbone: img_size {size} is not a multiple of patch_size {cfg.patch_size}")
        if cfg.embed_dim % cfg.num_heads:
            raise ParamsError(f"backbone: embed_dim {cfg.embed_dim} is not a multiple of num_heads {cfg.num_heads}")
        vit = VisionTransformer(img_size=size, patch_size=cfg.patch_size, in_chans=3, num_classes=0,
                                embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=2.0)
        for layer in vit.modules():  # PyTorch's default init: timm's (std 0.02) gives near-constant features
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                layer.reset_parameters()
    else:
        try:
            vit = timm.create_model(cfg.arch, pretrained=False, num_classes=0)
        except RuntimeError as exc:  # unknown model name
            raise ParamsError(f"backbone.arch: {exc}") from exc
        if not isinstance(vit, VisionTransformer):
            raise ParamsError(f"backbone.arch: {cfg.arch!r} is not a timm VisionTransformer")
    if cfg.checkpoint is not None:
        load_weights(vit, Path(cfg.checkpoint))
    return vit


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path``: safetensors (``.safetensors``) or ``torch.load(weights_only=True)``
    (plain tensors only; a pickled object is refused with the reason)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors' own error for a damaged or foreign file
            raise ParamsError(f"backbone.checkpoint: {path} is not a readable safetensors file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); download it again") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler's refusal, or not a torch file at all
        raise ParamsError(f"backbone.checkpoint: {path} cannot be loaded as plain weights ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0]}); clsuite loads only safetensors or weights-only state dicts, "
                          "never pickled objects") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # {"model": state_dict, ...}
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ParamsError(f"backbone.checkpoint: {path} is not a state dict of tensors")
    return state


def load_weights(vit: nn.Module, path: Path) -> None:
    """Load the checkpoint into ``vit`` (a classifier head in the file is ignored); any missing or
    unexpected backbone key, or a shape mismatch, is a ParamsError naming it."""
    state = {k: v for k, v in read_state(path).items() if not k.startswith("head.")}
    own = vit.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or wrong:
        raise ParamsError(f"backbone.checkpoint: {path} does not fit this ViT: missing {missing[:5]}, unexpected "
                          f"{extra[:5]}, shape differs {wrong[:5]}; is backbone.arch the architecture of the file?")
    vit.load_state_dict(state)


def prefix_block(blk: nn.Module, x: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """timm ``Block.forward`` with ``prefix`` = (keys, values) (N, Lp, D) prepended to the
    attention's keys and values (prefix tuning); ``None``: exactly the block's own forward."""
    if prefix is None:
        return blk(x)
    attn = blk.attn
    h = blk.norm1(x)
    n, t, _ = h.shape
    qkv = attn.qkv(h).reshape(n, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)

    def heads(p: torch.Tensor) -> torch.Tensor:
        return p.reshape(n, p.shape[1], attn.num_heads, attn.head_dim).transpose(1, 2)

    k = torch.cat([heads(prefix[0]), k], dim=2)
    v = torch.cat([heads(prefix[1]), v], dim=2)
    out = F.scaled_dot_product_attention(q, k, v)
    out = attn.proj(attn.norm(out.transpose(1, 2).reshape(n, t, attn.attn_dim)))
    x = x + blk.drop_path1(blk.ls1(attn.proj_drop(out)))
    return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))


class PromptedViT(nn.Module):
    """A frozen ViT + a prompt ``pool`` (trainable) + a linear ``head``: ``forward(x)`` (N, K).

    The pool (:mod:`clsuite.methods.prompts.pools`) gets the query (the frozen ViT's [CLS]
    feature of the unprompted image, (N, D)) and returns its prompts: ``tokens`` (N, Lp, D)
    inserted after [CLS] (L2P: the feature is the mean of their outputs) or ``prefixes``
    {block index: (keys, values)} (DualPrompt, CODA-Prompt: the feature is the [CLS] output), and
    its auxiliary loss, kept in ``aux_loss`` for the training plugin. ``task`` (a buffer in the
    state dict, so checkpoints keep it) is the index of the experience being trained."""

    def __init__(self, vit: nn.Module, pool: nn.Module, n_classes: int, mean, std) -> None:
        super().__init__()
        self.vit = vit.requires_grad_(False)
        self.pool = pool
        self.feature_dim = int(vit.embed_dim)
        self.head = nn.Linear(self.feature_dim, n_classes)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("task", torch.zeros((), dtype=torch.long))
        self.aux_loss: torch.Tensor | None = None

    def train(self, mode: bool = True) -> "PromptedViT":
        super().train(mode)
        self.vit.eval()  # frozen: no dropout or drop-path noise in the backbone
        return self

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        size = self.vit.patch_embed.img_size
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, D): the embedded [CLS] + patch tokens with their positions, before ``norm_pre``."""
        v = self.vit
        return v.patch_drop(v._pos_embed(v.patch_embed(x)))

    def _cls_position(self) -> torch.Tensor | float:
        """The position embedding L2P's prompt tokens get: the [CLS] token's (the authors' and
        Avalanche's ``resize_pos_embed`` expand it over the prompts); 0 when [CLS] has none."""
        v = self.vit
        return v.pos_embed[:, :1] if v.cls_token is not None and not v.no_embed_class else 0.0

    def query(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, D): the frozen, unprompted ViT's [CLS] feature from :meth:`_tokens`' output."""
        with torch.no_grad():
            return self.vit.norm(self.vit.blocks(self.vit.norm_pre(tokens)))[:, 0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D): L2P: the mean output of the prompt tokens, inserted after [CLS] with [CLS]'s
        position embedding; prefix methods: the [CLS] output."""
        h = self._tokens(self._image(x))
        prompts = self.pool(self.query(h), int(self.task), self.training)
        self.aux_loss = prompts.get("aux_loss")
        tokens = prompts.get("tokens")
        if tokens is not None:
            h = torch.cat([h[:, :1], tokens + self._cls_position(), h[:, 1:]], dim=1)
        h = self.vit.norm_pre(h)
        prefixes = prompts.get("prefixes", {})
        for i, blk in enumerate(self.vit.blocks):
            h = prefix_block(blk, h, prefixes.get(i))
        h = self.vit.norm(h)
        return h[:, 1:1 + tokens.shape[1]].mean(1) if tokens is not None else h[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


