"""FOSTER, Feature bOosting and compreSsion (Wang et al., ECCV 2022), as PyCIL's ``models/foster.py``.

Each experience but the first has two stages.

- **Boosting** (the experience's normal training; PyCIL ``_feature_boosting``): the network
  (:class:`FOSTERNet`, PyCIL ``utils/inc_net.py`` ``FOSTERNet``) is the frozen old extractor
  f_old (eval mode) + a new extractor f_new initialised from it; logits z = W·[f_old(x), f_new(x)]
  over the concatenated features (the old head's weights copied into the f_old columns, the
  f_new columns and the fe head freshly initialised, as ``update_fc``); fe logits
  z_fe = W_fe·f_new(x); old logits z_old = W_oldfc·f_old(x), the previous model's output
  (frozen head and extractor). Loss (foster.py ``_feature_boosting``)::

      L = CE(z / w¹, y) + CE(z_fe, y) + λ_okd · KD(z[:, old], z_old[:, old], T)
      KD(p, q, T) = −(1/N) Σ_n Σ_c softmax(q_n/T)_c · log softmax(p_n/T)_c    (foster.py ``_KD_loss``)
      w^β_c = ((1 − β) / (1 − β^{n_c})) / Σ_c' (…) · C                      (foster.py ``_train``)

  with n_c the training samples of class c this experience (exemplars for old classes),
  C the classes seen so far, w¹ = w^{β1}. The logits are over the classes seen so far (PyCIL
  grows its head; here every class is allocated up front and the unseen columns are left out).
- **Compression** (in ``after_training_exp``; foster.py ``_feature_compression``): a student
  (one extractor, initialised from f_old; its head's old-class rows from W_oldfc, the others
  fresh) is distilled from the two-branch teacher (eval mode) for ``compression_epochs`` on the
  experience's data + the herding memory, SGD (momentum 0.9, cosine schedule) on the balanced
  KD (foster.py ``BKD``)::

      BKD(s, t) = −(1/N) Σ_n Σ_c q̃_nc · log softmax(s_n/T)_c,
      q̃_nc = softmax(t_n/T)_c · w²_c / Σ_c' softmax(t_n/T)_c' · w²_c',  w² = w^{β2}

  The student then replaces the model: f_old ← student extractor, the head's f_old columns ←
  student head, one extractor active again. The state-dict layout never changes (two
  extractor slots, a two-branch head, the fe and old heads), so checkpoints load as they are.
- The first experience trains one extractor with plain CE over the classes seen (PyCIL ``_init_train``).
- Rehearsal: class-balanced herding memory (:class:`clsuite.methods.exemplars.HerdingMemory`),
  herded on the compressed model.

Differs from PyCIL: the herding runs on the compressed student (PyCIL herds on the teacher
and evaluates the teacher, logging the student separately; here the student is the model, as
in the paper); the boosting stage uses the run's optimiser and schedule; the compression
stage runs on CPU tensors of the experience without augmentation; ``oofc: az`` and teacher /
student weight aligning (off in ``exps/foster.json``) are not implemented.

Memory (MEMO's accounting): exemplars as uint8 pixels + the parameters beyond one network
(the second extractor, the wider head, the fe and old heads) × 4 bytes, counted on the
network as it is when asked: after an experience it is compressed again, so only exemplars.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from clsuite.methods import MethodConfig, MethodContext, register_method
from clsuite.methods.der_expandable import ExpandableNet, ExpandableState
from clsuite.methods.exemplars import dataset_tensors
from clsuite.methods.rehearsal import HerdingRehearsalPlugin, class_positions
from clsuite.methods.wa import kd_loss

CITATION = """@inproceedings{wang2022foster,
  title     = {FOSTER: Feature Boosting and Compression for Class-Incremental Learning},
  author    = {Wang, Fu-Yun and Zhou, Da-Wei and Ye, Han-Jia and Zhan, De-Chuan},
  booktitle = {European Conference on Computer Vision (ECCV)},
  pages     = {398--414}, year = {2022},
}"""


def class_balance_weights(counts: list[int], beta: float) -> torch.Tensor:
    """PyCIL foster.py ``_train``: (1 − β)/(1 − β^n_c), normalised to sum to the number of classes."""
    w = torch.tensor([(1.0 - beta) / (1.0 - beta**n) for n in counts], dtype=torch.float64)
    return (w / w.sum() * len(counts)).float()


def bkd_loss(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor, temperature: float) -> torch.Tensor:
    """PyCIL foster.py ``BKD``: KD against the teacher's softmax reweighted per class and renormalised."""
    log_p = F.log_softmax(student / temperature, dim=1)
    q = F.softmax(teacher / temperature, dim=1) * weights
    q = q / q.sum(1, keepdim=True)
    return -(q * log_p).sum() / student.shape[0]


class FOSTERNet(ExpandableNet):
    """:class:`ExpandableNet` with two extractor slots (0: old/compressed, 1: the boosting one),
    a head over both, ``fe_head`` on the new extractor and ``old_head`` (the previous model's head)."""

    def __init__(self, net: nn.Module, n_classes: int) -> None:
        super().__init__(net, 2, n_classes)
        d = self.feature_dim_per_extractor
        del self.aux_head  # FOSTER has no new-vs-old auxiliary head
        self.fe_head = nn.Linear(d, n_classes)
        self.old_head = nn.Linear(d, n_classes).requires_grad_(False)
        self.last_features: torch.Tensor | None = None

    def activate(self, k: int) -> None:
        """Experience k: one extractor for k = 0; for k ≥ 1 the boosting branch (slot 1, copied
        from slot 0, PyCIL ``update_fc``) unless already on (a resume inside the experience)."""
        d = self.feature_dim_per_extractor
        if k > 0 and self.active != 2:
            self.extractors[1].load_state_dict(self.extractors[0].state_dict())
            with torch.no_grad():
                self.old_head.weight.copy_(self.head.weight[:, :d])
                self.old_head.bias.copy_(self.head.bias)
                fresh = nn.Linear(d, self.head.out_features).to(self.head.weight.device)
                self.head.weight[:, d:] = fresh.weight
            self.fe_head.reset_parameters()
        self.n_active.fill_(1 if k == 0 else 2)
        for i, ext in enumerate(self.extractors):
            ext.requires_grad_(i == self.active - 1)
        self.fe_head.requires_grad_(k > 0)
        self.train(self.training)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        phi = super().features(x)
        self.last_features = phi if self.training else None
        return phi

    def compress(self, extractor: nn.Module, head: nn.Linear) -> None:
        """The student replaces the model: slot 0 and the head's first columns; one branch active."""
        d = self.feature_dim_per_extractor
        self.extractors[0].load_state_dict(extractor.state_dict())
        with torch.no_grad():
            self.head.weight[:, :d] = head.weight
            self.head.bias.copy_(head.bias)
        self.n_active.fill_(1)
        self.extractors.requires_grad_(False)
        self.extractors[0].requires_grad_(True)
        self.fe_head.requires_grad_(False)
        self.train(self.training)

    def active_parameter_count(self) -> int:
        per = sum(p.numel() for p in self.extractors[0].parameters())
        head = self.head.out_features * (self.feature_dim + 1)
        extra_heads = 2 * self.head.out_features * (self.feature_dim_per_extractor + 1) if self.active > 1 else 0
        return self.active * per + head + extra_heads


class FOSTERPlugin(ExpandableState, HerdingRehearsalPlugin):
    """Boosting loss in ``before_backward``; compression, then herding, after each experience."""

    def __init__(self, mem_size: int, beta1: float, beta2: float, lambda_okd: float, temperature: float,
                 compression_epochs: int | None, compression_lr: float, compression_batch_size: int | None, seed: int,
                 device: torch.device) -> None:
        super().__init__(mem_size, device)
        self.beta1, self.beta2 = beta1, beta2
        self.lambda_okd = lambda_okd
        self.temperature = temperature
        self.compression_epochs = compression_epochs
        self.compression_lr = compression_lr
        self.compression_batch_size = compression_batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.counts: dict[int, int] = {}

    def before_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        strategy.model.activate(strategy.experience.current_experience)

    def after_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        super().after_train_dataset_adaptation(strategy, **kwargs)
        y = torch.as_tensor(list(strategy.experience.dataset.targets))
        self.counts = {c: int((y == c).sum()) for c in self.new_classes}
        for c, xc in self.memory.x.items():
            self.counts[c] = self.counts.get(c, 0) + len(xc)

    def weights(self, beta: float) -> torch.Tensor:
        """w^β over the classes seen so far, in ascending class order."""
        return class_balance_weights([self.counts.get(c, 0) or 1 for c in self.seen_classes], beta)

    def before_backward(self, strategy, **kwargs) -> None:
        model: FOSTERNet = strategy.model
        strategy.loss = self.loss(model, strategy.mb_output, strategy.mb_y)

    def loss(self, model: FOSTERNet, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen = self.seen_classes
        target = class_positions(seen, logits.shape[1], logits.device)[y]
        if model.active < 2 or model.last_features is None:
            return F.cross_entropy(logits[:, seen], target)  # the first experience (PyCIL _init_train)
        d = model.feature_dim_per_extractor
        w1 = self.weights(self.beta1).to(logits.device)
        loss = F.cross_entropy(logits[:, seen] / w1, target)
        loss = loss + F.cross_entropy(model.fe_head(model.last_features[:, d:])[:, seen], target)
        if self.old_classes and self.lambda_okd:
            old_logits = model.old_head(model.last_features[:, :d].detach())[:, self.old_classes].detach()
            loss = loss + self.lambda_okd * kd_loss(logits[:, self.old_classes], old_logits, self.temperature)
        return loss

    def after_training_exp(self, strategy, **kwargs) -> None:
        model: FOSTERNet = strategy.model
        x, y, t = dataset_tensors(strategy.experience.dataset.train())
        if model.active > 1:
            epochs = self.compression_epochs if self.compression_epochs is not None else strategy.train_epochs
            mx, my = (self.memory.tensors()[:2] if len(self.memory) else (x[:0], y[:0]))
            batch = self.compression_batch_size or strategy.train_mb_size
            self.compress(model, torch.cat([x, mx]), torch.cat([y, my]), epochs, batch)
        self.memory.update(model, x, y, t, self.device)
        self.old_classes = self.seen_classes

    def compress(self, model: FOSTERNet, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int) -> None:
        """Distil the two-branch teacher into one extractor + head (PyCIL ``_feature_compression``)."""
        seen = self.seen_classes
        d = model.feature_dim_per_extractor
        was = model.training
        model.eval()
        extractor = copy.deepcopy(model.extractors[0]).requires_grad_(True)
        head = nn.Linear(d, model.head.out_features).to(model.head.weight.device)
        with torch.no_grad():  # fresh rows drawn from the plugin's generator (PyCIL copy_fc keeps the old ones)
            bound = 1.0 / math.sqrt(d)
            head.weight.copy_(torch.empty(head.weight.shape).uniform_(-bound, bound, generator=self.generator))
            head.bias.copy_(torch.empty(head.bias.shape).uniform_(-bound, bound, generator=self.generator))
            if self.old_classes:
                head.weight[self.old_classes] = model.old_head.weight[self.old_classes]
                head.bias[self.old_classes] = model.old_head.bias[self.old_classes]
        student = nn.Sequential(extractor, head).to(self.device)
        student.train()
        params = list(student.parameters())
        opt = torch.optim.SGD(params, lr=self.compression_lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
        w2 = self.weights(self.beta2).to(self.device)
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=self.generator)
            for i in range(0, len(y), batch_size):
                xb = x[order[i : i + batch_size]].to(self.device)
                with torch.no_grad():
                    teacher = model(xb)[:, seen]
                loss = bkd_loss(student(xb)[:, seen], teacher, w2, self.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
        model.compress(extractor, head)
        model.train(was)



class FOSTERConfig(MethodConfig):
    """Defaults from PyCIL's ``exps/foster.json`` (beta1 0.96, beta2 0.97, lambda_okd 1, T 2,
    lr 0.1); memory 200 as iCaRL's here (PyCIL: 2000 on CIFAR-100). PyCIL's
    ``compression_epochs`` is 130 against 170 boosting epochs; the default here is the run's
    epochs of the experience, so that the two stages stay in proportion on short runs; the
    compression batch is the run's (PyCIL uses its ``batch_size`` 128 for both stages)."""

    mem_size: int = Field(200, ge=1, description="total exemplars (split evenly over the classes seen)")
    beta1: float = Field(0.96, gt=0, lt=1, description="class-balance β of the boosting CE (logit adjustment)")
    beta2: float = Field(0.97, gt=0, lt=1, description="class-balance β of the compression BKD")
    lambda_okd: float = Field(1.0, ge=0, description="weight of the KD of old-class logits during boosting")
    temperature: float = Field(2.0, gt=0, description="distillation temperature T (boosting KD and BKD)")
    compression_epochs: int | None = Field(None, ge=0, description="epochs of the compression stage (null: the "
                                                                  "run's epochs of the experience)")
    compression_lr: float = Field(0.1, gt=0, description="SGD learning rate of the compression (cosine schedule)")
    compression_batch_size: int | None = Field(None, ge=1, description="minibatch size of the compression (null: "
                                                                      "the run's training batch size)")


def wrap_foster(model: nn.Module, cfg: FOSTERConfig, ctx: MethodContext) -> nn.Module:
    return FOSTERNet(model, ctx.n_classes)


@register_method("foster", FOSTERConfig, "FOSTER: boost a new extractor on the old one's residual (logit-"
                 "adjusted CE + KD), compress both into one by balanced KD, herding", citation=CITATION,
                 wrap_model=wrap_foster, scenarios=("class_il", "task_il"))
def build(cfg: FOSTERConfig, ctx: MethodContext) -> list:
    return [FOSTERPlugin(cfg.mem_size, cfg.beta1, cfg.beta2, cfg.lambda_okd, cfg.temperature, cfg.compression_epochs,
                         cfg.compression_lr, cfg.compression_batch_size, ctx.seed, ctx.device)]
