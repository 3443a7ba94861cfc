"""LUCIR (Hou et al., CVPR 2019): cosine-normalised classifier, less-forget constraint,
inter-class separation; herding rehearsal.

Follows the paper and Mammoth ``models/lucir.py`` (commit 0d727a7):

- Classifier: the model's head is replaced by :class:`CosineLinear`, logits
  σ·cos(f(x), w_c) with a learnable scale σ (initialised to 1).
- Loss at an experience with old classes (only CE in the first experience):

      L = CE(σ·cos[:, seen], y)
        + λ · (1 − cos(f(x), f_old(x)))                          less-forget (``cosine_embedding_loss``)
        + λ_mr · mean_{old-class rows, top-K new classes k} max(0, m − cos_y + cos_k)
                                                                   margin ranking (``lucir_batch_hard_triplet_loss``)

  with the adaptive weight λ = λ_base · sqrt(|old classes| / |new classes|) (the paper's
  Eq. 7; Mammoth's sqrt(task)·λ_base for equal-sized tasks), f the L2-normalised features,
  f_old those of the frozen model of the previous experience, and the margin ranking
  loss taken on the cosine scores (before σ).
- Weight imprinting (Mammoth ``imprint_weights``, on by default): before training an
  experience with old classes, each new class's weight is the normalised mean of its
  normalised features, scaled to the mean norm of the old classes' weights.
- Rehearsal: class-balanced herding memory (:class:`clsuite.methods.rehearsal.HerdingRehearsalPlugin`);
  prediction by the cosine classifier (CNN), as the paper's main results.

Differences: the cross-entropy and the "new classes" of the margin ranking loss cover the
classes seen so far / of this experience (the original code grows its classifier; Mammoth
keeps future heads, frozen, in both); the class-balanced finetuning stage (LUCIR-CBF,
Mammoth's ``fit_buffer``) and the removal of the last ReLU are not implemented.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from clsuite.methods import MethodConfig, MethodContext, register_method
from clsuite.methods.exemplars import dataset_tensors, embed
from clsuite.methods.rehearsal import HerdingRehearsalPlugin

CITATION = """@inproceedings{hou2019lucir,
  title     = {Learning a Unified Classifier Incrementally via Rebalancing},
  author    = {Hou, Saihui and Pan, Xinyu and Loy, Chen Change and Wang, Zilei and Lin, Dahua},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  pages     = {831--839}, year = {2019},
}"""


class CosineLinear(nn.Module):
    """σ · cos(x, w_c) for every class c; ``weight`` (K·P, D), ``sigma`` (1,).

    With P = ``n_proxies`` > 1 it is PODNet's local similarity classifier (LSC, PyCIL
    ``CosineLinear`` + ``reduce_proxies``): class c has P proxies (rows c·P … c·P+P−1) and its
    score is Σ_p softmax_p(cos_p)·cos_p. With ``keep_input``, in training mode the last input
    is kept in ``last_input`` (the features of the step, with their graph) for LUCIR's feature
    losses; the plugin clears it after each step.
    """

    def __init__(self, in_features: int, out_features: int, n_proxies: int = 1, keep_input: bool = True) -> None:
        super().__init__()
        self.keep_input = keep_input
        self.in_features, self.out_features, self.n_proxies = in_features, out_features, n_proxies
        self.weight = nn.Parameter(torch.empty(out_features * n_proxies, in_features))
        self.sigma = nn.Parameter(torch.ones(1))
        nn.init.uniform_(self.weight, -1 / math.sqrt(in_features), 1 / math.sqrt(in_features))
        self.last_input: torch.Tensor | None = None

    def __getstate__(self) -> dict:
        """Copies (``frozen_copy``'s deepcopy, pickling) never carry the step's cached features."""
        return {**super().__getstate__(), "last_input": None}

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) cosine scores (proxy-reduced for P > 1)."""
        out = F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))
        if self.n_proxies == 1:
            return out
        per_class = out.view(len(out), self.out_features, self.n_proxies)
        return (F.softmax(per_class, dim=-1) * per_class).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last_input = x if self.training and self.keep_input else None
        return self.sigma * self.cosine(x)


def margin_ranking(cos: torch.Tensor, y: torch.Tensor, old_classes: list[int], new_classes: list[int],
                   k: int, margin: float) -> torch.Tensor:
    """mean over old-class rows and their top-k new-class scores of max(0, margin − cos_y + cos_new)."""
    hard = torch.isin(y, torch.tensor(old_classes, device=y.device))
    if not bool(hard.any()):
        return cos.new_zeros(())
    gt = cos[hard].gather(1, y[hard, None])  # (h, 1)
    top = cos[hard][:, new_classes].topk(min(k, len(new_classes)), dim=1).values  # (h, k)
    return F.relu(margin - gt + top).mean()


class LUCIRPlugin(HerdingRehearsalPlugin):
    def __init__(self, mem_size: int, lambda_base: float, lambda_mr: float, k_mr: int, mr_margin: float,
                 imprint_weights: bool, device: torch.device) -> None:
        super().__init__(mem_size, device)
        self.lambda_base, self.lambda_mr, self.k_mr, self.mr_margin = lambda_base, lambda_mr, k_mr, mr_margin
        self.imprint_weights = imprint_weights

    def before_training_exp(self, strategy, **kwargs) -> None:
        super().before_training_exp(strategy, **kwargs)
        new = self.added_classes
        if self.imprint_weights and self.old_classes and new:
            x, y, _ = dataset_tensors(strategy.experience.dataset.train())
            self.imprint(strategy.model, embed(strategy.model, x, self.device), y, new)

    @torch.no_grad()
    def imprint(self, model: nn.Module, features: torch.Tensor, y: torch.Tensor, new: list[int]) -> None:
        """New classes' weights: normalised mean of their normalised features × mean old-weight norm."""
        head: CosineLinear = model.head
        scale = head.weight[self.old_classes].norm(dim=1).mean()
        for c in new:
            mean = F.normalize(features[y == c], dim=1).mean(0)
            head.weight[c] = F.normalize(mean, dim=0).to(head.weight) * scale

    def before_backward(self, strategy, **kwargs) -> None:
        head: CosineLinear = strategy.model.head
        strategy.loss = self.loss(strategy.mb_output, head.cosine(head.last_input), head.last_input,
                                  strategy.mb_y, strategy.mb_x)

    def after_training_iteration(self, strategy, **kwargs) -> None:
        strategy.model.head.last_input = None

    def loss(self, logits: torch.Tensor, cos: torch.Tensor, features: torch.Tensor, y: torch.Tensor,
             x: torch.Tensor) -> torch.Tensor:
        loss = self.seen_cross_entropy(logits, y)
        new = self.added_classes
        if self.old_net is None or not self.old_classes or not new:
            return loss
        with torch.no_grad():
            old_features = self.old_net.features(x)
        lam = self.lambda_base * math.sqrt(len(self.old_classes) / len(new))
        loss = loss + lam * (1 - F.cosine_similarity(features, old_features, dim=1)).mean()
        return loss + self.lambda_mr * margin_ranking(cos, y, self.old_classes, new, self.k_mr, self.mr_margin)

    def after_training_exp(self, strategy, **kwargs) -> None:
        strategy.model.head.last_input = None  # never copied into the old network
        super().after_training_exp(strategy, **kwargs)


class LUCIRConfig(MethodConfig):
    """Defaults from the argument defaults of Mammoth's ``models/lucir.py`` (λ_base 5, λ_mr 1,
    K 2, margin 0.5, imprinting on), which are the paper's; memory 200 as iCaRL's here."""

    mem_size: int = Field(200, ge=1, description="total exemplars (split evenly over the classes seen)")
    lambda_base: float = Field(5.0, ge=0, description="base weight of the less-forget constraint")
    lambda_mr: float = Field(1.0, ge=0, description="weight of the margin ranking loss")
    k_mr: int = Field(2, ge=1, description="hard new classes per old-class sample in the margin ranking loss")
    mr_margin: float = Field(0.5, ge=0, description="margin of the margin ranking loss")
    imprint_weights: bool = Field(True, description="initialise new classes' weights by imprinting")


def wrap_cosine(model: nn.Module, cfg: LUCIRConfig, ctx: MethodContext) -> nn.Module:
    """The model with its head replaced by a cosine classifier (same features, same K)."""
    model.head = CosineLinear(model.head.in_features, model.head.out_features)
    return model


@register_method("lucir", LUCIRConfig, "LUCIR: cosine classifier, less-forget constraint, margin ranking, herding",
                 citation=CITATION, wrap_model=wrap_cosine, scenarios=("class_il", "task_il"))
def build(cfg: LUCIRConfig, ctx: MethodContext) -> list:
    return [LUCIRPlugin(cfg.mem_size, cfg.lambda_base, cfg.lambda_mr, cfg.k_mr, cfg.mr_margin, cfg.imprint_weights,
                        ctx.device)]
