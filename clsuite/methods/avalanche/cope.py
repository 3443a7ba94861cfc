"""CoPE (continual prototype evolution, De Lange & Tuytelaars 2021) as ``avalanche.cope``: Avalanche
0.6.0's ``CoPEPlugin`` (``avalanche/training/plugins/cope.py``) as a model wrapper and a plugin.

Avalanche's plugin: the model's last linear layer is followed by an L2 normalisation, so the
model outputs an embedding; the loss is the PPP loss (pseudo-prototypical proxy) of the batch's
embeddings against one prototype per class (all ``n_classes`` drawn at the start, uniform in
[-1, 1] and normalised); the training batch is the new data plus as many rows of a class-balanced
replay buffer; after each experience every class's prototype moves towards the normalised mean
embedding of its rows in that experience's batches (momentum ``alpha``, then renormalised) and
the buffer is updated by class-wise reservoir sampling; at evaluation ``after_eval_iteration``
replaces the embedding by the one-hot nearest prototype (dot product).

Avalanche's plugin is written for its online data-incremental stream, where an experience is one
batch (``data_incremental_benchmark(..., experience_size=batch)``: its example, and the paper's
setting); ``max_it_cnt`` stops training after that many iterations of the experience. In clsuite
an experience is a whole task, so each training iteration here is what one experience is for
Avalanche: its batch is the new rows plus ``train_mb_size`` buffer rows (Avalanche's replay loader
uses ``batch_size_mem = train_mb_size``), and after it the prototypes are updated and the new rows
offered to the buffer. With one epoch (smnist: batch 10, 1 epoch) this is Avalanche's run on the
stream split into batches (tested). Changes:

- :class:`CoPENet` wraps the network: ``embedding`` (a linear layer from the network's features
  to ``p_size``, the layer Avalanche normalises) and the prototypes as buffers (K, p_size), with
  the classes seen so far; its forward gives class scores ``cos(z, p_c) / T`` of the normalised
  embedding ``z`` (the softmax of these is the prototype posterior the PPP loss is built on),
  training mode included (the guard wants (N, K)); in eval mode classes never seen score
  ``-1/T - 1``, below every seen class (Avalanche's random prototypes of unseen classes can win
  its nearest-prototype vote). The network's own head is unused;
- ``max_it_cnt`` (repeat a batch with new buffer rows) is not ported: one iteration per batch
  (Avalanche's default, 1); ``train.epochs`` > 1 passes over the experience again (the
  prototypes keep moving) but the buffer is offered each row once, in the first epoch;
- the buffer is Avalanche's ``ClassBalancedBuffer(adaptive_size=True)`` algorithm on tensors
  (same reservoir weights and kept rows, tested); the remainder of ``mem_size / classes`` goes to
  the lowest class ids (Avalanche: the first in its Python set's order, the same for small ids,
  but for large ids it depends on the set's history, which a checkpoint does not keep); its draws (reservoir weights, replayed rows,
  initial prototypes) come from the plugin's own generator seeded by the run seed, so a run
  resumes exactly inside an experience too;
- the PPP loss is Avalanche's ``PPPloss`` as is (including its repellor term for a batch of one
  class, an empty sum).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.plugins.cope import PPPloss
from torch import nn

from clsuite.core.errors import ComponentError
from clsuite.methods.avalanche.state import ZooState
from clsuite.methods.replay import replayed_inputs, stored_inputs


def unseen_score(T: float) -> float:
    """The eval score of a class without a trained prototype: below ``-1/T``, the lowest
    ``cos / T`` a seen class can get."""
    return -1.0 / T - 1.0


class CoPENet(nn.Module):
    """Network -> L2-normalised embedding (N, P) -> prototype scores (N, K). Buffers: ``prototypes``
    (K, P; zero until the plugin draws them), ``seen`` (K,) and ``initialized`` ()."""

    def __init__(self, net: nn.Module, n_classes: int, p_size: int = 100, T: float = 0.1) -> None:
        super().__init__()
        self.net = net
        self.feature_dim = net.feature_dim
        self.embedding = nn.Linear(net.feature_dim, p_size)
        self.T = T
        self.register_buffer("prototypes", torch.zeros(n_classes, p_size))
        self.register_buffer("seen", torch.zeros(n_classes, dtype=torch.bool))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.last_embedding: torch.Tensor | None = None

    @property
    def head(self) -> nn.Module:
        return self.net.head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, P) L2-normalised embeddings (Avalanche's last layer + ``L2Normalization``)."""
        return F.normalize(self.embedding(self.net.features(x)), p=2, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)
        self.last_embedding = z if self.training else None
        scores = z @ self.prototypes.to(z.dtype).t() / self.T
        if self.training or not bool(self.seen.any()):
            return scores  # (before any prototype is drawn: zeros, Avalanche's uniform output)
        return scores.masked_fill(~self.seen, unseen_score(self.T))

    @torch.no_grad()
    def init_prototypes(self, generator: torch.Generator) -> None:
        """Avalanche's static init: per class in order, ``normalize(uniform(-1, 1) of (1, P))``."""
        for c in range(self.prototypes.shape[0]):
            p = torch.empty((1, self.prototypes.shape[1])).uniform_(-1, 1, generator=generator)
            self.prototypes[c] = F.normalize(p, p=2, dim=1)[0].to(self.prototypes)
        self.initialized.fill_(True)

    @torch.no_grad()
    def update_prototypes(self, sums: dict[int, tuple[torch.Tensor, int]], alpha: float) -> None:
        """Avalanche's ``_update_prototypes``: ``p_c <- normalize(alpha p_c + (1 - alpha) normalize(mean_c))``
        for each class in ``sums`` (class -> (sum of its embeddings (P,), count))."""
        for c, (total, n) in sums.items():
            incr = F.normalize((total / n).unsqueeze(0), p=2, dim=1)
            new = alpha * self.prototypes[c:c + 1] + (1 - alpha) * incr.to(self.prototypes)
            self.prototypes[c] = F.normalize(new, p=2, dim=1)[0]
            self.seen[c] = True


class CoPE(ZooState, SupervisedPlugin):
    """CoPE's training step (module docstring). Memory: the class-balanced buffer (uint8 pixels)
    and the prototypes (K x P float32, drawn at the start)."""

    zoo_state = {"mem_x": "images", "mem_t": "meta", "mem_w": "meta", "mem_cap": "meta", "seen_classes": "meta",
                 "generator": "meta"}

    def __init__(self, mem_size: int = 200, alpha: float = 0.99, T: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        self.mem_size, self.alpha, self.T = mem_size, alpha, T
        # the class-balanced buffer: per class (in order of first arrival) its rows sorted by reservoir weight
        self.mem_x: dict[int, torch.Tensor] = {}
        self.mem_t: dict[int, torch.Tensor] = {}
        self.mem_w: dict[int, torch.Tensor] = {}
        self.mem_cap: dict[int, int] = {}
        self.seen_classes: set[int] = set()
        self.generator = torch.Generator().manual_seed(seed)
        self._incoming: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._sums: dict[int, tuple[torch.Tensor, int]] = {}

    # -- Avalanche's hooks, per batch ----------------------------------------------------------
    def before_training(self, strategy, *args, **kwargs):
        super().before_training(strategy, *args, **kwargs)
        model = _copenet(strategy.model)
        if not bool(model.initialized):
            model.init_prototypes(self.generator)
        strategy._criterion = PPPCriterion(model, self.T)

    def before_forward(self, strategy, **kwargs):
        x, y, t = strategy.mbatch[0], strategy.mbatch[1], strategy.mbatch[-1]
        first_epoch = strategy.clock.train_exp_epochs == 0
        self._incoming = (stored_inputs(strategy, x).detach(), y.detach(), t.detach()) if first_epoch else None
        n = sum(len(v) for v in self.mem_x.values())
        if n == 0:
            return
        idx = torch.randperm(n, generator=self.generator)[: strategy.train_mb_size]
        rows = torch.cat(list(self.mem_x.values()))  # (on the data's device; a restored buffer may be on the CPU)
        bx = rows[idx.to(rows.device)]
        by = torch.cat([torch.full((len(v),), c, dtype=y.dtype) for c, v in self.mem_x.items()])[idx].to(y.device)
        bt = torch.cat(list(self.mem_t.values()))[idx].to(t.device)
        strategy.mbatch = [torch.cat([x, replayed_inputs(strategy, bx.to(x.device))]), torch.cat([y, by]),
                           torch.cat([t, bt])]

    def after_forward(self, strategy, **kwargs):
        """Avalanche's ``_update_running_prototypes``: per class of the batch, the sum and count of
        its embeddings."""
        z = _copenet(strategy.model).last_embedding.detach().float()
        y = strategy.mb_y
        for c in torch.unique(y).tolist():
            rows = z[y == c]
            total, n = self._sums.get(c, (0, 0))
            self._sums[c] = (total + rows.sum(0), n + len(rows))

    def after_training_iteration(self, strategy, **kwargs):
        """Avalanche's ``after_training_exp`` for the batch: prototypes, then the buffer."""
        _copenet(strategy.model).update_prototypes(self._sums, self.alpha)
        self._sums = {}
        if self._incoming is not None:
            self.store(*self._incoming)
            self._incoming = None

    def after_training_exp(self, strategy, **kwargs):
        _copenet(strategy.model).last_embedding = None

    # -- the buffer: Avalanche's ClassBalancedBuffer(adaptive_size=True) on tensors -------------
    def group_lengths(self, n_groups: int) -> list[int]:
        """``BalancedExemplarsBuffer.get_group_lengths`` (adaptive): ``mem_size // n``, the rest to the first."""
        lengths = [self.mem_size // n_groups] * n_groups
        for i in range(self.mem_size - sum(lengths)):
            lengths[i] += 1
        return lengths

    @torch.no_grad()
    def store(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> None:
        """Offer rows (N, ...) with labels (N,) and task labels (N,): per class, in order of first
        appearance, ``ReservoirSamplingBuffer.update_from_dataset`` (a uniform weight per new row,
        the ``cap`` highest of new + kept rows stay, sorted), then every class resized to its share."""
        by_class: dict[int, list[int]] = {}
        for i, c in enumerate(y.tolist()):
            by_class.setdefault(int(c), []).append(i)
        self.seen_classes.update(by_class)
        # (Avalanche zips its set of classes: the same ascending order for ids below the set's table size)
        share = dict(zip(sorted(self.seen_classes), self.group_lengths(len(self.seen_classes))))
        for c, rows in by_class.items():
            idx = torch.as_tensor(rows, device=x.device)
            weights = torch.rand(len(rows), generator=self.generator)
            cap = self.mem_cap.get(c, share[c])
            xs, ts = x[idx], t[idx].cpu()
            if c in self.mem_x:
                xs = torch.cat([xs, self.mem_x[c].to(xs.device)])
                ts, weights = torch.cat([ts, self.mem_t[c]]), torch.cat([weights, self.mem_w[c]])
            weights, order = weights.sort(descending=True)
            keep = order[:cap]
            self.mem_x[c], self.mem_t[c], self.mem_w[c] = xs[keep.to(xs.device)], ts[keep], weights[:cap]
            self.mem_cap[c] = cap
        for c in self.mem_x:  # resize: the first (highest-weight) rows stay
            cap = self.mem_cap[c] = share[c]
            self.mem_x[c], self.mem_t[c], self.mem_w[c] = self.mem_x[c][:cap], self.mem_t[c][:cap], self.mem_w[c][:cap]

    def extra_memory_bytes(self, model: torch.nn.Module) -> int:
        protos = 4 * model.prototypes.numel() if isinstance(model, CoPENet) and bool(model.initialized) else 0
        return super().extra_memory_bytes(model) + protos


class PPPCriterion:
    """The template's criterion: Avalanche's ``PPPloss`` of the model's last training embeddings
    (N, P) and labels (N,) against all K prototypes (the template's output argument is unused)."""

    def __init__(self, model: CoPENet, T: float) -> None:
        self.model, self.T = model, T

    def __call__(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = self.model.last_embedding
        protos = self.model.prototypes
        return PPPloss({c: protos[c:c + 1] for c in range(protos.shape[0])}, T=self.T)(z.float(), y)


def _copenet(model: nn.Module) -> CoPENet:
    if not isinstance(model, CoPENet):
        raise ComponentError(f"avalanche.cope needs its model wrapper CoPENet (got {type(model).__name__}): build "
                             "the run through clsuite's method registry, which applies wrap_cope")
    return model


def wrap_cope(model: nn.Module, cfg, ctx) -> CoPENet:
    """The method's ``wrap_model``: ``model`` with a ``cfg.p_size``-wide embedding layer and K prototypes."""
    return CoPENet(model, ctx.n_classes, cfg.p_size, cfg.T)
