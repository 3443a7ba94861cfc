"""The prompt pools of L2P, DualPrompt and CODA-Prompt: ``pool(query, task, training) -> dict``
with ``tokens`` (N, Lp, D) or ``prefixes`` {block: (keys, values), each (N, Lp, D)}, and
``aux_loss`` (a scalar, added to the training loss). ``query``: (N, D), the frozen ViT's [CLS]
feature; ``task``: the experience being trained (0-based), or the last one trained at evaluation.

Each follows its paper and the authors' code (JH-LEE-KR/l2p-pytorch, JH-LEE-KR/dualprompt-pytorch,
GT-RIPL/CODA-Prompt); the simplifications are named in each class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) cosine similarity of rows of ``a`` (N, D) and ``b`` (M, D)."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


class L2PPool(nn.Module):
    """L2P: ``size`` prompts of ``length`` tokens, each with a key; the ``top_k`` keys nearest the
    query (cosine) select the prompts, prepended to the tokens (prompt tuning), and the surrogate
    loss ``-pull * mean_n Σ_selected cos(q_n, k)`` pulls the selected keys to their queries (the
    authors' ``pull_constraint_coeff``, 0.1). Keys and prompts start uniform in [-1, 1] (the code's
    ``prompt_key_init``/``prompt_init: uniform``). Simplified: the selection is per sample (the
    code's batch-wise majority vote at evaluation is not used)."""

    def __init__(self, dim: int, size: int = 10, length: int = 5, top_k: int = 5, pull: float = 0.1) -> None:
        super().__init__()
        self.top_k, self.pull = top_k, pull
        self.keys = nn.Parameter(torch.empty(size, dim).uniform_(-1, 1))
        self.prompts = nn.Parameter(torch.empty(size, length, dim).uniform_(-1, 1))

    def select(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices (N, top_k), their cosine similarities (N, top_k)), best first."""
        sim = cosine(query, self.keys)
        top = sim.topk(self.top_k, dim=1)
        return top.indices, top.values

    def forward(self, query: torch.Tensor, task: int, training: bool) -> dict:
        idx, sim = self.select(query)
        tokens = self.prompts[idx].flatten(1, 2)  # (N, top_k * length, D)
        return {"tokens": tokens, "aux_loss": -self.pull * sim.sum(1).mean()}


class DualPromptPool(nn.Module):
    """DualPrompt: a task-shared G-prompt (``g_length`` tokens) in blocks ``g_layers`` and one
    E-prompt per task (``e_length`` tokens) with a key, in blocks ``e_layers``, both as attention
    prefixes (separate key and value prompts: the code's ``use_prefix_tune_for_e_prompt``). While
    training task t its own E-prompt is used and ``pull * mean_n (1 - cos(q_n, k_t))`` pulls its key
    to the queries (the code's ``pull_constraint_coeff`` 1.0); at evaluation the E-prompt of the
    nearest key among the tasks trained so far. Prompts and keys start uniform in [-1, 1]."""

    def __init__(self, dim: int, n_tasks: int, g_layers=(0, 1), e_layers=(2, 3, 4), g_length: int = 5,
                 e_length: int = 5, pull: float = 1.0) -> None:
        super().__init__()
        self.g_layers, self.e_layers, self.pull = tuple(g_layers), tuple(e_layers), pull
        self.g = nn.Parameter(torch.empty(len(g_layers), 2, g_length, dim).uniform_(-1, 1))
        self.e = nn.Parameter(torch.empty(n_tasks, len(e_layers), 2, e_length, dim).uniform_(-1, 1))
        self.keys = nn.Parameter(torch.empty(n_tasks, dim).uniform_(-1, 1))

    def task_of(self, query: torch.Tensor, seen: int) -> torch.Tensor:
        """(N,): the task whose key is nearest each query, among tasks 0 .. seen-1."""
        return cosine(query, self.keys[:seen]).argmax(1)

    def forward(self, query: torch.Tensor, task: int, training: bool) -> dict:
        n = query.shape[0]
        if training:
            t = torch.full((n,), task, dtype=torch.long, device=query.device)
            aux = self.pull * (1 - cosine(query, self.keys[task:task + 1])[:, 0]).mean()
        else:
            t, aux = self.task_of(query, task + 1), None
        prefixes = {layer: (self.g[i, 0].expand(n, -1, -1), self.g[i, 1].expand(n, -1, -1))
                    for i, layer in enumerate(self.g_layers)}
        e = self.e[t]  # (N, layers, 2, length, D)
        prefixes.update({layer: (e[:, i, 0], e[:, i, 1]) for i, layer in enumerate(self.e_layers)})
        return {"prefixes": prefixes, "aux_loss": aux}


def gram_schmidt_rows(x: torch.Tensor, start: int, stop: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A copy of ``x`` (M, F) whose rows start..stop-1 are drawn anew (standard normal) and made
    orthonormal to every row before them and to each other (Gram-Schmidt); other rows unchanged."""
    out = x.detach().clone()
    for r in range(start, stop):
        u = torch.randn(out.shape[1], generator=generator, dtype=out.dtype).to(out.device)
        for j in range(r):
            w = out[j]
            u = u - (u @ w) / (w @ w) * w
        out[r] = u / u.norm()
    return out


class CODAPool(nn.Module):
    """CODA-Prompt: per prefix block (``layers``), ``size`` prompt components P_m (``length`` x D)
    with keys K_m and attention vectors A_m (D), split evenly over the tasks. The prompt is
    Σ_m α_m P_m with α_m = cos(q ⊙ A_m, K_m) over the components of the tasks trained so far; the
    components of earlier tasks take no gradient. Its first length/2 tokens are the attention
    prefix's keys, the rest its values. At the start of each task its components are initialised
    orthonormal to all earlier ones (Gram-Schmidt, as the code's ``process_task_count``); the
    orthogonality penalty ``ortho * Σ mean((X Xᵀ - I)²)`` over P, K, A is the code's ``ortho_mu``
    (0 in the paper's runs, where Gram-Schmidt alone keeps them apart)."""

    def __init__(self, dim: int, n_tasks: int, layers=(0, 1, 2, 3, 4), size: int = 100, length: int = 8,
                 ortho: float = 0.0) -> None:
        super().__init__()
        if size % n_tasks or length % 2:
            raise ValueError(f"coda_prompt: pool size {size} must split evenly over {n_tasks} tasks and the length "
                             f"{length} must be even")
        if size > dim:
            raise ValueError(f"coda_prompt: {size} prompt components cannot be orthonormal in a ViT of width {dim} "
                             f"(Gram-Schmidt runs out of directions); set pool_size <= {dim} (the paper: 100 on "
                             "ViT-B/16's 768)")
        self.layers, self.per_task, self.ortho = tuple(layers), size // n_tasks, ortho
        self.p = nn.Parameter(torch.zeros(len(layers), size, length, dim))
        self.k = nn.Parameter(torch.zeros(len(layers), size, dim))
        self.a = nn.Parameter(torch.zeros(len(layers), size, dim))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.long))  # tasks whose components are drawn

    def begin_task(self, task: int) -> None:
        """Draw task ``task``'s components (once: a resumed task keeps its trained ones)."""
        if int(self.initialised) > task:
            return
        start, stop = task * self.per_task, (task + 1) * self.per_task
        with torch.no_grad():
            for i in range(len(self.layers)):
                self.p[i] = gram_schmidt_rows(self.p[i].flatten(1), start, stop).view_as(self.p[i])
                self.k[i] = gram_schmidt_rows(self.k[i], start, stop)
                self.a[i] = gram_schmidt_rows(self.a[i], start, stop)
        self.initialised.fill_(task + 1)

    def forward(self, query: torch.Tensor, task: int, training: bool) -> dict:
        stop = (task + 1) * self.per_task
        old = task * self.per_task if training else stop  # earlier tasks' components: no gradient
        prefixes, aux = {}, query.new_zeros(())
        half = self.p.shape[2] // 2
        for i, layer in enumerate(self.layers):
            p = torch.cat([self.p[i, :old].detach(), self.p[i, old:stop]])
            k = torch.cat([self.k[i, :old].detach(), self.k[i, old:stop]])
            a = torch.cat([self.a[i, :old].detach(), self.a[i, old:stop]])
            alpha = coda_weights(query, a, k)
            prompt = torch.einsum("nm,mld->nld", alpha, p)
            prefixes[layer] = (prompt[:, :half], prompt[:, half:])
            if training and self.ortho > 0:
                aux = aux + self.ortho * sum(_ortho_penalty(x) for x in (p.flatten(1), k, a))
        return {"prefixes": prefixes, "aux_loss": aux if training else None}


def coda_weights(query: torch.Tensor, a: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """α (N, M) = cos(q_n ⊙ A_m, K_m) of queries (N, D), attention vectors and keys (M, D)."""
    return (F.normalize(query[:, None, :] * a[None], dim=-1) * F.normalize(k, dim=-1)[None]).sum(-1)


def _ortho_penalty(x: torch.Tensor) -> torch.Tensor:
    return ((x @ x.T - torch.eye(x.shape[0], device=x.device, dtype=x.dtype)) ** 2).mean()
