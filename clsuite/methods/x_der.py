"""X-DER (Boschini et al., TPAMI 2022): eXtended Dark Experience Replay, rehearsal part.

Follows Mammoth ``models/xder.py`` (commit 0d727a7). Experience t's classes form "head" t
(the columns ``ctx.experiences[t]``; Mammoth's ``[t·cpt, (t+1)·cpt)``). The buffer is
class-balanced and filled at the end of each experience (not by reservoir), with each
sample's logits. Loss of a step at experience t (``observe``):

    L = CE(f(x)[:, head t], y)                                   present head only
      + α · MSE(f(x'), z')                                        buffer batch 1, all heads
      + β · CE(f(x'')[:, heads < t], y'')                         buffer batch 2, past heads
      + η · mean⁺(max f(x)[:, heads > t] + m − max f(x)[:, head t])          future constraint
      + η · mean⁺(max p[:, heads < t].detach() + m − max p[:, head t])       past constraint

with p = softmax over heads ≤ t, mean⁺ the mean of the positive terms only, and the future
constraint also applied to the (deduplicated) buffer rows against their own head.

Logit updates, ``update_logits(old, new, y, heads)``: the columns ``heads`` of ``old`` are
replaced by those of ``new``, scaled by γ·old[y]/max(new[heads]) where that max exceeds
old[y] (so the true class stays the highest):

- *future past* (during training): each buffer row drawn at experience t is chosen with
  probability 1/(times drawn this experience) and gets heads ≥ t from the current output;
- *at the end of experience t*: the buffer is cut to ``mem_size // seen classes`` rows per
  class (the first ones), the free slots are split evenly over t's classes (the remainder
  to randomly chosen classes) and filled in stream order with t's samples, whose stored
  logits get heads < t rescaled from themselves; then every older row gets heads ≥ t from
  the final model of t.

Not implemented (documented differences): the SimCLR consistency loss on future heads
(Mammoth's ``lambd`` term; the paper's X-DER without it is the "RPC"-free rehearsal
variant), data augmentation, and Mammoth's training-mode forward without BatchNorm
tracking at the end of an experience (here: eval mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.training.plugins import SupervisedPlugin
from pydantic import Field

from clsuite.methods import MethodConfig, MethodContext, register_method
from clsuite.methods.exemplars import dataset_tensors

CITATION = """@article{boschini2022xder,
  title     = {Class-Incremental Continual Learning into the eXtended DER-verse},
  author    = {Boschini, Matteo and Bonicelli, Lorenzo and Buzzega, Pietro and Porrello, Angelo
               and Calderara, Simone},
  journal   = {IEEE Transactions on Pattern Analysis and Machine Intelligence},
  volume    = {45}, number = {5}, pages = {5497--5512}, year = {2023},
}"""


def update_logits(old: torch.Tensor, new: torch.Tensor, y: torch.Tensor, cols: torch.Tensor,
                  gamma: float) -> torch.Tensor:
    """``old`` (N, K) with columns ``cols`` taken from ``new``, each row scaled by
    γ·old[y]/max(new[cols]) where that max exceeds old[y] (Mammoth ``XDer.update_logits``)."""
    out = old.clone()
    transplant = new[:, cols].clone()
    gt = old[torch.arange(len(y)), y]
    top = transplant.max(1).values
    scale = torch.where(top > gt, gamma * gt / top, torch.ones_like(top))
    out[:, cols] = transplant * scale.unsqueeze(1)
    return out


def positive_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of the positive entries of ``values`` (0 if none), as Mammoth's ``loss[mask].mean()``."""
    pos = values > 0
    return values[pos].mean() if bool(pos.any()) else values.new_zeros(())


class XDERPlugin(SupervisedPlugin):
    """The X-DER loss terms and logit updates; the class-balanced buffer and its state."""

    def __init__(self, mem_size: int, batch_size_mem: int, alpha: float, beta: float, gamma: float, eta: float,
                 m: float, experiences: list[list[int]], n_classes: int, seed: int) -> None:
        super().__init__()
        self.mem_size, self.batch_size_mem = mem_size, batch_size_mem
        self.alpha, self.beta, self.gamma, self.eta, self.m = alpha, beta, gamma, eta, m
        self.heads = [sorted(int(c) for c in e) for e in experiences]
        self.n_classes = n_classes
        self.head_of = torch.full((n_classes,), -1, dtype=torch.long)
        for h, classes in enumerate(self.heads):
            self.head_of[classes] = h
        self.generator = torch.Generator().manual_seed(seed)
        self.task = 0
        self.x = torch.empty(0)
        self.y = torch.empty(0, dtype=torch.long)
        self.logits = torch.empty(0, n_classes)
        self.counter = torch.zeros(mem_size)

    # -- heads ------------------------------------------------------------------------------
    def cols(self, first: int, last: int) -> torch.Tensor:
        """Columns of heads first..last−1 (sorted)."""
        return torch.tensor(sorted(c for h in self.heads[first:last] for c in h), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.y)

    # -- training step ----------------------------------------------------------------------
    def before_training_exp(self, strategy, **kwargs) -> None:
        self.task = int(strategy.experience.current_experience)

    def before_backward(self, strategy, **kwargs) -> None:
        strategy.loss = self.loss(strategy.model, strategy.mb_output.float(), strategy.mb_y)

    def loss(self, model: torch.nn.Module, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The X-DER loss of a step on (outputs = f(x), y); updates the drawn rows' logits."""
        t, dev = self.task, outputs.device
        cur = self.cols(t, t + 1).to(dev)
        pos = torch.full((self.n_classes,), -1, dtype=torch.long, device=dev)
        pos[cur] = torch.arange(len(cur), device=dev)
        loss = F.cross_entropy(outputs[:, cur], pos[y])
        buf = None
        if len(self):
            i1 = torch.randperm(len(self), generator=self.generator)[: self.batch_size_mem]
            out1 = model(self.x[i1].to(dev)).float()
            loss = loss + self.alpha * F.mse_loss(out1, self.logits[i1].to(dev))
            i2 = torch.randperm(len(self), generator=self.generator)[: self.batch_size_mem]
            out2 = model(self.x[i2].to(dev)).float()
            past = self.cols(0, t).to(dev)
            ppos = torch.full((self.n_classes,), -1, dtype=torch.long, device=dev)
            ppos[past] = torch.arange(len(past), device=dev)
            loss = loss + self.beta * F.cross_entropy(out2[:, past], ppos[self.y[i2].to(dev)])
            idx, out = torch.cat([i1, i2]), torch.cat([out1, out2])
            first = torch.tensor([int(i) not in idx[:j].tolist() for j, i in enumerate(idx)], dtype=torch.bool)
            idx, out = idx[first], out[first.to(dev)]
            buf = (idx, out)
            self._update_future_past(idx, out.detach())
        if t > 0:  # past-logits constraint
            seen = self.cols(0, t + 1).to(dev)
            p = F.softmax(outputs[:, seen], dim=1)
            in_cur = torch.isin(seen, cur)
            constr = p[:, ~in_cur].max(1).values.detach() + self.m - p[:, in_cur].max(1).values
            loss = loss + self.eta * positive_mean(constr)
        if t < len(self.heads) - 1:  # future-logits constraint
            fut = self.cols(t + 1, len(self.heads)).to(dev)
            bad, good = outputs[:, fut].max(1).values, outputs[:, cur].max(1).values
            if buf is not None:
                idx, out = buf
                own = self.head_of.to(dev)[:, None] == self.head_of.to(dev)[None, :]  # (K, K): same head
                own_cols = own[self.y[idx].to(dev)]  # (n, K): the columns of each row's head
                bad = torch.cat([bad, out[:, fut].max(1).values])
                good = torch.cat([good, out.masked_fill(~own_cols, float("-inf")).max(1).values])
            loss = loss + self.eta * positive_mean(bad + self.m - good)
        return loss

    @torch.no_grad()
    def _update_future_past(self, idx: torch.Tensor, out: torch.Tensor) -> None:
        """Rows of past heads, each with probability 1/(draws this experience): heads ≥ t from ``out``."""
        t = self.task
        chosen = self.head_of[self.y[idx]] < t
        self.counter[idx[chosen]] += 1
        draw = torch.rand(int(chosen.sum()), generator=self.generator)
        chosen[chosen.clone()] = draw * self.counter[idx[chosen]] < 1
        if not bool(chosen.any()):
            return
        rows = idx[chosen]
        self.logits[rows] = update_logits(self.logits[rows], out[chosen.to(out.device)].cpu(), self.y[rows],
                                          self.cols(t, len(self.heads)), self.gamma)

    # -- end of experience ------------------------------------------------------------------
    @torch.no_grad()
    def after_training_exp(self, strategy, **kwargs) -> None:
        x, y, _ = dataset_tensors(strategy.experience.dataset.train())
        model = strategy.model
        was = model.training
        model.eval()
        try:
            self.end_of_experience(lambda b: model(b.to(strategy.device)).float().cpu(), x, y)
        finally:
            model.train(was)

    def end_of_experience(self, forward, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> None:
        """Cut the buffer per class, add experience ``task``'s samples, update older rows' logits."""
        t = self.task
        cur = self.heads[t]
        n_seen = len(self.cols(0, t + 1))
        if t > 0 and len(self):
            per_class = self.mem_size // n_seen
            keep = torch.zeros(len(self), dtype=torch.bool)
            for c in self.y.unique():
                keep[torch.nonzero(self.y == c).flatten()[:per_class]] = True
            self.x, self.y, self.logits = self.x[keep], self.y[keep], self.logits[keep]
        free = self.mem_size - len(self)
        quota = torch.full((len(cur),), free // len(cur), dtype=torch.long)
        quota[torch.randperm(len(cur), generator=self.generator)[: free - quota.sum()]] += 1
        left = dict(zip(cur, quota.tolist()))
        past = self.cols(0, t)
        xs, ys, zs = [self.x], [self.y], [self.logits]
        for i in range(0, len(y), batch_size):
            if not any(left.values()):
                break
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            out = forward(xb)
            if t > 0:
                out = update_logits(out, out, yb, past, self.gamma)
            take = torch.zeros(len(yb), dtype=torch.bool)
            for j, c in enumerate(yb.tolist()):
                if left.get(c, 0) > 0:
                    take[j], left[c] = True, left[c] - 1
            xs.append(xb[take])
            ys.append(yb[take])
            zs.append(out[take])
        self.x = torch.cat([v for v in xs if v.numel()]) if any(v.numel() for v in xs) else self.x
        self.y, self.logits = torch.cat(ys), torch.cat(zs)
        older = self.head_of[self.y] < t
        if bool(older.any()):
            rows = torch.nonzero(older).flatten()
            out = torch.cat([forward(self.x[rows[i : i + batch_size]]) for i in range(0, len(rows), batch_size)])
            self.logits[rows] = update_logits(self.logits[rows], out, self.y[rows],
                                              self.cols(t, len(self.heads)), self.gamma)
        self.counter.zero_()

    # -- memory and state ---------------------------------------------------------------------
    def extra_memory_bytes(self, model: torch.nn.Module) -> int:
        """Exemplars as uint8 pixels + stored logits as float32 (MEMO)."""
        return self.x.numel() + 4 * self.logits.numel()

    def state_dict(self) -> dict:
        return {"x": self.x.clone(), "y": self.y.clone(), "logits": self.logits.clone(),
                "counter": self.counter.clone(), "generator": self.generator.get_state(), "task": self.task}

    def load_state_dict(self, state: dict) -> None:
        self.x, self.y, self.logits = state["x"].clone(), state["y"].clone(), state["logits"].clone()
        self.counter = state["counter"].clone()
        self.generator.set_state(state["generator"])
        self.task = int(state["task"])


class XDERConfig(MethodConfig):
    """Defaults: α 0.3, β 0.8 from Mammoth's ``models/config/xder.yaml`` (seq-cifar100, buffer 500);
    γ 0.85, η 0.1, m 0.3 from the argument defaults of Mammoth's ``models/xder.py``."""

    mem_size: int = Field(200, ge=1, description="buffer capacity in samples (class-balanced)")
    batch_size_mem: int = Field(10, ge=1, description="size of each buffer minibatch")
    alpha: float = Field(0.3, ge=0, description="weight of the logit-matching (MSE) term")
    beta: float = Field(0.8, ge=0, description="weight of the buffer cross-entropy on past heads")
    gamma: float = Field(0.85, gt=0, le=1, description="logit update: scale of the transplanted heads' max")
    eta: float = Field(0.1, ge=0, description="weight of the past and future logit constraints")
    m: float = Field(0.3, ge=0, description="margin of the logit constraints")


@register_method("x_der", XDERConfig, "X-DER: DER with future/past logit updates and logit constraints "
                 "(rehearsal part, no SimCLR term)", citation=CITATION, scenarios=("class_il", "task_il"))
def build(cfg: XDERConfig, ctx: MethodContext) -> list:
    return [XDERPlugin(cfg.mem_size, cfg.batch_size_mem, cfg.alpha, cfg.beta, cfg.gamma, cfg.eta, cfg.m,
                       ctx.experiences, ctx.n_classes, ctx.seed)]
