"""Sparse memory finetuning (Lin et al. 2025) on a product-key memory (Lample et al. 2019).

A product-key memory maps each token's hidden state to the k best of n_keys² value slots;
finetuning updates only the value rows of the ``top_t`` slots whose access in the
current batch is most specific to it, ranked by TF-IDF against a background corpus:

    c_s    = accesses of slot s in the batch (over its non-padding tokens × k),
    tf_s   = c_s / Σ_s' c_s',
    df_s   = number of background batches in which slot s was accessed at least once,
    idf_s  = ln((N_bg + 1) / (df_s + 1)),          N_bg = number of background batches,
    score_s = tf_s · idf_s;  only accessed slots (c_s > 0) are candidates.

This is the TF-IDF of Lin et al. 2025 §3 as restated by the public reimplementation
dtunai/continual_learning_via_sparse_memory_finetuning (``tfidf_ranker.py``: "tf-idf(i)
= [c(i)/sum(c)] * log[(|B|+1)/(df(i)+1)]"); the paper's own text could not be read here.

Adaptation (documented in docs/llm-memory.md): the paper trains memory-layer models from
scratch, where the memory *replaces* an FFN. A pretrained model (SmolLM2) cannot lose an
FFN to an untrained memory without being destroyed, so :meth:`SparseMemoryPlugin.prepare_model`
*adds* the memory in parallel to one FFN, ``ffn(x) + memory(x)``, with zero value rows so
the prepared model computes exactly what the pretrained one did. Query projection and keys
stay at their random initialisation (only values are trained, as in sparse memory
finetuning), so the addressing is a fixed random product-key hash of the FFN input.

The layer is written by hand: no maintained PyTorch package provides a product-key memory
that exposes the selected slot indices needed for the access counts.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from clsuite.llm.memory._hf import (CallbackPlugin, attach_to_ffn, batch_inputs, device_of, ffn_of,
                                    hidden_size)


class ProductKeyMemory(nn.Module):
    """Product-key memory: (..., d_model) -> (..., d_model), single head.

    query: Linear(d_model, d_key); two sub-key tables (n_keys, d_key/2); value table
    ``nn.Embedding(n_keys**2, d_value)`` (zero-initialised); output Linear(d_value, d_model).
    Slot id = i1 * n_keys + i2 for sub-keys i1, i2. Per token: top-k slots by score
    q1·K1[i1] + q2·K2[i2], weights = softmax over those k scores, output = W_out Σ w·V[slot].
    Parameters are float32 whatever the input dtype (the input is cast, the output cast back).
    ``last_indices``: the slots (..., k) selected by the last forward (no grad).
    """

    def __init__(self, d_model: int, n_keys: int = 256, k: int = 32, d_key: int | None = None,
                 d_value: int | None = None, seed: int = 0) -> None:
        super().__init__()
        d_key = d_model if d_key is None else d_key
        d_value = d_model if d_value is None else d_value
        if d_key % 2:
            raise ValueError(f"d_key must be even (two halves), got {d_key}")
        if not 1 <= k <= n_keys ** 2:
            raise ValueError(f"k={k} must lie in [1, n_keys**2={n_keys ** 2}]")
        self.n_keys, self.k, self.d_key, self.d_value = n_keys, k, d_key, d_value
        self.query = nn.Linear(d_model, d_key, bias=False)
        self.keys = nn.Parameter(torch.empty(2, n_keys, d_key // 2))
        self.values = nn.Embedding(n_keys ** 2, d_value)
        self.out = nn.Linear(d_value, d_model, bias=False)
        self.last_indices: torch.Tensor | None = None
        self.reset_parameters(seed)

    @property
    def n_slots(self) -> int:
        return self.n_keys ** 2

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """Seeded init: query/keys/out uniform(±1/√fan_in); values zero (the layer outputs 0)."""
        g = torch.Generator().manual_seed(seed)
        for w, fan_in in ((self.query.weight, self.query.in_features), (self.keys, self.d_key // 2),
                          (self.out.weight, self.d_value)):
            b = 1.0 / math.sqrt(fan_in)
            w.copy_(torch.rand(w.shape, generator=g) * 2 * b - b)
        self.values.weight.zero_()

    def half_scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sub-key scores s1, s2, each (..., n_keys); the slot (i1, i2) scores s1[i1] + s2[i2]."""
        q1, q2 = self.query(x).chunk(2, dim=-1)
        return q1 @ self.keys[0].T, q2 @ self.keys[1].T

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, slot indices), each (..., k), best first.

        Exact: the k best sums s1[i1] + s2[i2] all use an i1 among the k best of s1 and
        an i2 among the k best of s2, so searching those k² pairs suffices (Lample et al.).
        """
        s1, s2 = self.half_scores(x)
        kk = min(self.k, self.n_keys)
        v1, i1 = s1.topk(kk, dim=-1)
        v2, i2 = s2.topk(kk, dim=-1)
        cand = (v1.unsqueeze(-1) + v2.unsqueeze(-2)).flatten(-2)  # (..., kk*kk)
        scores, pos = cand.topk(self.k, dim=-1)
        idx = i1.gather(-1, pos // kk) * self.n_keys + i2.gather(-1, pos % kk)
        return scores, idx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.to(self.values.weight.dtype)
        scores, idx = self.lookup(h)
        self.last_indices = idx.detach()
        w = scores.softmax(dim=-1).to(self.values.weight.dtype)  # bf16 under autocast; a no-op in float32
        # EmbeddingBag-style weighted sum: never materialises the (..., k, d_value) gather
        read = F.embedding_bag(idx.reshape(-1, self.k), self.values.weight,
                               per_sample_weights=w.reshape(-1, self.k), mode="sum")
        return self.out(read.view(*x.shape[:-1], self.d_value)).to(dtype)


def _add_memory(x: torch.Tensor, ffn_out: torch.Tensor, memory: nn.Module) -> torch.Tensor:
    return ffn_out + memory(x)


def find_memory(model: nn.Module) -> ProductKeyMemory:
    """The one :class:`ProductKeyMemory` inside ``model``."""
    found = [m for m in model.modules() if isinstance(m, ProductKeyMemory)]
    if len(found) != 1:
        raise ValueError(f"expected one ProductKeyMemory in the model, found {len(found)}")
    return found[0]


# ----------------------------------------------------------------------- TF-IDF ranking

def slot_counts(indices: torch.Tensor, n_slots: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Accesses per slot, (n_slots,) int64, from selected indices (B, T, k).

    ``mask`` (B, T), nonzero for real tokens: padding tokens are not counted.
    """
    if mask is not None:
        indices = indices[mask.to(indices.device, torch.bool)]
    return torch.bincount(indices.reshape(-1).to(torch.int64), minlength=n_slots)


@dataclass
class BackgroundStats:
    """Background document frequencies: ``df[s]`` = batches that accessed slot s, of ``n_batches``."""

    df: torch.Tensor  # (n_slots,) int64
    n_batches: int


def document_frequency(batch_indices: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
                       n_slots: int) -> BackgroundStats:
    """:class:`BackgroundStats` from (indices (B, T, k), mask (B, T) or None) per background batch."""
    df = torch.zeros(n_slots, dtype=torch.int64)
    n = 0
    for indices, mask in batch_indices:
        df += (slot_counts(indices, n_slots, mask).cpu() > 0).to(torch.int64)
        n += 1
    return BackgroundStats(df, n)


@torch.no_grad()
def background_counts(model: nn.Module, batches: Sequence[Any]) -> BackgroundStats:
    """Run ``model`` on each background batch (token ids (B, T) or a dict with ``input_ids``
    and optional ``attention_mask``) and count which memory slots each batch accessed.

    Since only the memory values are trained and the lookup depends only on the FFN input
    (frozen layers below), these statistics stay valid for the whole of training.
    """
    memory = find_memory(model)
    dev = device_of(model)

    def runs():
        for b in batches:
            kw, mask = batch_inputs(b)
            model(**{k: v.to(dev) for k, v in kw.items()})
            yield memory.last_indices, None if mask is None else mask.to(dev)

    return document_frequency(runs(), memory.n_slots)


def tfidf_scores(counts: torch.Tensor, background: BackgroundStats) -> torch.Tensor:
    """score_s = (c_s / Σc) · ln((N_bg + 1) / (df_s + 1)), float64 (n_slots,)."""
    c = counts.to(torch.float64)
    tf = c / c.sum().clamp_min(1.0)
    idf = torch.log((background.n_batches + 1.0) / (background.df.to(c.device, torch.float64) + 1.0))
    return tf * idf


def select_top_t(counts: torch.Tensor, scores: torch.Tensor, top_t: int) -> torch.Tensor:
    """The ``top_t`` accessed slots (c_s > 0) with the highest scores, best first; ties: lower id."""
    masked = torch.where(counts > 0, scores, torch.full_like(scores, -math.inf))
    order = torch.sort(masked, descending=True, stable=True).indices
    n = min(top_t, int((counts > 0).sum()))
    return order[:n]


# ----------------------------------------------------------------------- plugin

class SparseMemoryConfig(BaseModel):
    """Sparse memory finetuning hyperparameters (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layer: int | None = Field(None, description="decoder layer whose FFN gets the memory; None: the middle one")
    n_keys: int = Field(256, ge=2, description="sub-keys per table; the memory has n_keys**2 slots")
    k: int = Field(32, ge=1, description="slots read per token")
    top_t: int = Field(500, ge=1, description="slots whose values are updated per step")
    d_key: int | None = Field(None, ge=2, description="query/key width (even); None: hidden size")
    d_value: int | None = Field(None, ge=1, description="value width; None: hidden size")
    lr: float = Field(1.0, gt=0, description="plain SGD step size on the selected value rows (untuned)")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> "SparseMemoryConfig":
        if self.k > self.n_keys ** 2:
            raise ValueError(f"k={self.k} exceeds the n_keys**2={self.n_keys ** 2} slots")
        if self.d_key is not None and self.d_key % 2:
            raise ValueError(f"d_key must be even, got {self.d_key}")
        return self


class SparseMemoryPlugin(CallbackPlugin):
    """Sparse memory finetuning as Avalanche-style callbacks.

    Use: ``model = plugin.prepare_model(model)`` once; give ``plugin.trainable_parameters(model)``
    to the loop's optimizer if it wants parameters (it will never step them, see below).
    Callbacks: ``before_training_exp`` computes the background statistics (once, from
    ``background_batches``) unless given; ``after_backward`` ranks the slots of the batch
    in ``strategy.mbatch`` by TF-IDF and zeroes the value gradient of every other row;
    ``before_update`` steps a dedicated plain SGD optimizer (no momentum, no weight decay)
    on the value table and then sets its ``.grad`` to None, so the loop's own optimizer
    (AdamW…) skips it: AdamW's momentum and decoupled weight decay would otherwise move
    rows that were not selected. Hence only the selected rows change, exactly.
    Assumes one backward per optimizer step (no gradient accumulation).
    """

    def __init__(self, cfg: SparseMemoryConfig, background_batches: Sequence[Any] | None = None,
                 background: BackgroundStats | None = None) -> None:
        self.cfg = cfg
        self.background_batches = background_batches
        self.background = background
        self.layer: int | None = None
        self.memory: ProductKeyMemory | None = None
        self.optimizer: torch.optim.SGD | None = None
        self.selected: torch.Tensor | None = None  # slot ids selected at the last step
        self.ever_updated: torch.Tensor | None = None  # (n_slots,) bool
        self.n_updates = 0
        self._pending = False

    # --- model
    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Add a zero-valued memory to one FFN (``ffn(x) + memory(x)``) and freeze all else."""
        cfg = self.cfg
        self.layer, ffn = ffn_of(model, cfg.layer)
        memory = ProductKeyMemory(hidden_size(model), cfg.n_keys, cfg.k, cfg.d_key, cfg.d_value, cfg.seed)
        memory.to(device_of(ffn))
        attach_to_ffn(ffn, "sparse_memory", memory, _add_memory)
        for p in model.parameters():
            p.requires_grad_(False)
        memory.values.weight.requires_grad_(True)
        self._bind(model)
        return model

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [find_memory(model).values.weight]

    def _bind(self, model: nn.Module) -> ProductKeyMemory:
        memory = find_memory(model)
        if memory is not self.memory or self.optimizer is None:
            self.memory = memory
            self.optimizer = torch.optim.SGD([memory.values.weight], lr=self.cfg.lr, momentum=0.0,
                                             weight_decay=0.0)
            if self.ever_updated is None or self.ever_updated.numel() != memory.n_slots:
                self.ever_updated = torch.zeros(memory.n_slots, dtype=torch.bool)
        return memory

    # --- callbacks
    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        self._bind(strategy.model)
        if self.background is None:
            if self.background_batches is None:
                raise RuntimeError("SparseMemoryPlugin needs background statistics: pass background_batches "
                                   "(a pretraining-like corpus) or background")
            autocast = getattr(strategy, "autocast", contextlib.nullcontext)  # the run's forward precision
            with autocast():
                self.background = background_counts(strategy.model, self.background_batches)

    def after_backward(self, strategy: Any, **kwargs: Any) -> None:
        if self._pending:
            raise RuntimeError("SparseMemoryPlugin: before_update was not called after the last after_backward")
        memory = self._bind(strategy.model)
        grad = memory.values.weight.grad
        if grad is None or memory.last_indices is None:
            return
        if self.background is None:
            raise RuntimeError("SparseMemoryPlugin: no background statistics (before_training_exp not called?)")
        try:
            _, mask = batch_inputs(strategy.mbatch)
        except TypeError:
            mask = None
        indices = memory.last_indices
        if getattr(strategy, "ddp", None) is not None:  # data parallel: this rank saw only its rows
            indices = strategy.gather_rows(indices)
        counts = slot_counts(indices, memory.n_slots, mask)
        selected = select_top_t(counts, tfidf_scores(counts, self.background), self.cfg.top_t)
        keep = torch.zeros(memory.n_slots, dtype=torch.bool, device=grad.device)
        keep[selected.to(grad.device)] = True
        grad.masked_fill_(~keep.unsqueeze(1), 0.0)
        self.selected = selected.cpu()
        self._pending = True

    def before_update(self, strategy: Any, **kwargs: Any) -> None:
        memory = self._bind(strategy.model)
        if not self._pending or memory.values.weight.grad is None:
            self._pending = False
            return
        self.optimizer.step()
        memory.values.weight.grad = None  # the loop's optimizer must not touch the values
        self.ever_updated[self.selected] = True
        self.n_updates += 1
        self._pending = False

    # --- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "background_df": None if self.background is None else self.background.df.clone(),
            "background_n": None if self.background is None else self.background.n_batches,
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "selected": self.selected,
            "ever_updated": self.ever_updated,
            "n_updates": self.n_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.background = (None if state["background_df"] is None
                           else BackgroundStats(state["background_df"].clone(), int(state["background_n"])))
        if state["optimizer"] is not None and self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.selected = state["selected"]
        self.ever_updated = state["ever_updated"]
        self.n_updates = int(state["n_updates"])
        self._pending = False
