"""BrainCL ("Semi-parametric Memory Consolidation: Towards Brain-like Deep Continual
Learning"): coded cues + per-task completion nets as memory, wake–sleep training.

Per experience k, at the start of training (the plugin owns the training loop of the
experience: its three phases have their own optimisers, as the method specifies, so the
template's default epoch loop is stopped):

1. **Memory training**: a fresh separation net (encoder), a completion net (decoder) for
   task k and a factorised entropy model are trained on the experience's images with
   loss = λ · MSE(recall, x) + bits per pixel of the noisy cue (Adam; nets and entropy
   model with their own learning rates).
2. **Encoding**: every image's cue is quantised (rounded); these integer cues are the
   working memory. The separation net is then discarded.
3. **Wake**: the classifier head alone is trained on the recalled images of the new task
   (backbone frozen; SGD with momentum and weight decay).
4. **Sleep**: per class, the working-memory samples whose (recalled) features are closest
   to their class mean move to long-term memory, range-coded into one byte string per
   (task, class) with the task's entropy model (keyed by task too, so that domain-IL,
   where every task has the same classes, keeps each domain's memory); working memory is
   cleared; the whole model is fine-tuned on samples recalled (decoded + completed) from
   the long-term memory of all tasks (SGD, multi-step learning-rate schedule).

Memory cost = coded cue bytes + completion-net and entropy-model parameters (float32),
the same unit (bytes) as replay buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from avalanche.training.plugins import SupervisedPlugin
from pydantic import Field
from torch import nn

from clsuite.core.errors import TrainingDiverged
from clsuite.methods import MethodConfig, MethodContext, register_method
from clsuite.methods.braincl.entropy import FactorizedEntropyModel
from clsuite.methods.braincl.networks import CompletionNet, separation_net
from clsuite.methods.exemplars import dataset_tensors


class BrainCLConfig(MethodConfig):
    encoder_widths: list[int] = Field([128, 128, 128, 192], min_length=4, max_length=4,
                                            description="separation-net channels; the last is the cue depth")
    decoder_widths: list[int] = Field([128, 128, 128], min_length=3, max_length=3,
                                            description="completion-net channels (the 4th is the image's)")
    max_symbol: int = Field(15, ge=1, description="cues are clamped to integers in [-R, R]")
    rd_lambda: float = Field(100.0, gt=0, description="λ: weight of the recall MSE against bits per pixel")
    memory_epochs: int = Field(100, ge=1)
    memory_lr: float = Field(1e-4, gt=0, description="Adam learning rate of the nets")
    entropy_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the entropy model")
    memory_batch_size: int = Field(64, ge=1)
    wake_epochs: int = Field(10, ge=0)
    wake_lr: float = Field(0.1, gt=0)
    sleep_epochs: int = Field(60, ge=0)
    sleep_milestones: list[int] = [20, 40]
    sleep_lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(2e-4, ge=0)
    batch_size: int = Field(64, ge=1, description="minibatch of the wake and sleep phases")
    clip_grad_norm: float | None = Field(5.0, gt=0, description=(
        "max global gradient norm of the wake and sleep phases (null: no clipping); a safeguard "
        "that the paper does not use, against the sleep-phase collapse of docs/braincl.md"))
    ltm_per_class: int = Field(100, ge=1, description="samples per class moved to long-term memory")
    ltm_size: int | None = Field(None, ge=1, description=(
        "optional total number of cues in long-term memory (a fixed budget, as a replay buffer): "
        "each (task, class) keeps min(ltm_per_class, ltm_size // groups seen) of its nearest cues"))


@dataclass
class CodedClass:
    """Long-term memory of one class: its cues as one range-coded byte string."""

    task: int
    data: bytes
    shape: tuple[int, int, int, int]


class BrainCLPlugin(SupervisedPlugin):
    def __init__(self, cfg: BrainCLConfig, ctx: MethodContext) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_shape = ctx.input_shape
        self.device = ctx.device
        self.generator = torch.Generator().manual_seed(ctx.seed)
        self.decoders: list[CompletionNet] = []
        self.entropy_models: list[FactorizedEntropyModel] = []
        self.ltm: dict[tuple[int, int], CodedClass] = {}  # (task, class) -> coded cues
        self._ran_for: int | None = None
        self._current = 0  # the experience being learned (for error messages)
        self.last_bits: dict[str, float] = {}

    # -- nets ------------------------------------------------------------------------
    def _new_decoder(self) -> CompletionNet:
        return CompletionNet(self.cfg.encoder_widths[-1], self.cfg.decoder_widths, self.input_shape).to(self.device)

    def _new_entropy_model(self) -> FactorizedEntropyModel:
        return FactorizedEntropyModel(self.cfg.encoder_widths[-1], self.cfg.max_symbol).to(self.device)

    def _batches(self, n: int, size: int):
        order = torch.randperm(n, generator=self.generator)
        return [order[i : i + size] for i in range(0, n, size)]

    # -- phases ----------------------------------------------------------------------
    def train_memory(self, x: torch.Tensor) -> tuple[nn.Module, CompletionNet, FactorizedEntropyModel]:
        """Phase 1: encoder, decoder and entropy model on images ``x`` (N, C, H, W) in [0, 1]."""
        cfg = self.cfg
        enc = separation_net(self.input_shape[0], cfg.encoder_widths).to(self.device)
        dec, em = self._new_decoder(), self._new_entropy_model()
        opt = torch.optim.Adam([{"params": [*enc.parameters(), *dec.parameters()], "lr": cfg.memory_lr},
                                {"params": em.parameters(), "lr": cfg.entropy_lr}])
        pixels = self.input_shape[1] * self.input_shape[2]
        for epoch in range(cfg.memory_epochs):
            finite = torch.ones((), dtype=torch.bool, device=self.device)
            for idx in self._batches(len(x), cfg.memory_batch_size):
                xb = x[idx].to(self.device)
                y = enc(xb)
                noise = (torch.rand(y.shape, generator=self.generator) - 0.5).to(self.device)
                v = em.quantize(y, noise)
                loss = cfg.rd_lambda * F.mse_loss(dec(v), xb) + em.bits(v) / (len(xb) * pixels)
                finite &= torch.isfinite(loss.detach())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            self._check_finite(finite, "memory", epoch, ("memory_lr", "entropy_lr", "rd_lambda"))
        return enc.eval(), dec.eval(), em.eval()

    def _check_finite(self, finite: torch.Tensor, phase: str, epoch: int, keys: tuple[str, ...]) -> None:
        """Raise :class:`TrainingDiverged` if a loss of this epoch was not finite (one host
        read per epoch, none per step)."""
        if not bool(finite):
            k = self._current
            raise TrainingDiverged(
                f"braincl: the {phase}-phase loss is not finite in experience {k + 1}, epoch {epoch + 1}; lower "
                f"methods.braincl.{keys[0]}" + (f" (or {', '.join(keys[1:])})" if keys[1:] else "")
                + ("" if phase == "memory" else "; methods.braincl.clip_grad_norm bounds the gradient norm"),
                method="braincl", experience=k, iteration=None, phase=phase, epoch=epoch)

    @torch.no_grad()
    def recall(self, cues: torch.Tensor, dec: CompletionNet) -> torch.Tensor:
        return torch.cat([dec(cues[i : i + 500].to(self.device)).cpu() for i in range(0, len(cues), 500)])

    def _fit(self, model: nn.Module, params: list, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float,
             milestones: list[int] | tuple[int, ...] = (), phase: str = "sleep") -> None:
        """SGD (momentum, weight decay, ×0.1 at ``milestones``) on cross-entropy; gradients
        clipped to ``clip_grad_norm``; a non-finite loss raises :class:`TrainingDiverged`."""
        opt = torch.optim.SGD(params, lr=lr, momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(milestones), gamma=0.1)
        for epoch in range(epochs):
            finite = torch.ones((), dtype=torch.bool, device=self.device)
            for idx in self._batches(len(x), self.cfg.batch_size):
                loss = F.cross_entropy(model(x[idx].to(self.device)), y[idx].to(self.device))
                finite &= torch.isfinite(loss.detach())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if self.cfg.clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad_norm)
                opt.step()
            sched.step()
            self._check_finite(finite, phase, epoch, (f"{phase}_lr",))

    def wake(self, model: nn.Module, x_recalled: torch.Tensor, y: torch.Tensor) -> None:
        """Phase 3: head only (backbone frozen)."""
        backbone = [p for n, p in model.named_parameters() if not n.startswith("head.")]
        flags = [p.requires_grad for p in backbone]
        for p in backbone:
            p.requires_grad_(False)
        model.train()
        self._fit(model, list(model.head.parameters()), x_recalled, y, self.cfg.wake_epochs, self.cfg.wake_lr,
                  phase="wake")
        for p, f in zip(backbone, flags):
            p.requires_grad_(f)

    def quota(self, n_groups: int) -> int:
        """Cues kept per (task, class) when ``n_groups`` are in long-term memory."""
        if self.cfg.ltm_size is None:
            return self.cfg.ltm_per_class
        return max(1, min(self.cfg.ltm_per_class, self.cfg.ltm_size // n_groups))

    def shrink_ltm(self, per_group: int) -> None:
        """Cut every stored (task, class) to its ``per_group`` nearest cues (stored nearest
        first, so a prefix), decoding and re-coding with that task's entropy model."""
        for key, item in self.ltm.items():
            if item.shape[0] > per_group:
                em = self.entropy_models[item.task]
                cues = em.decode(item.data, item.shape)[:per_group]
                self.ltm[key] = CodedClass(item.task, em.encode(cues), tuple(cues.shape))

    @torch.no_grad()
    def select_for_ltm(self, model: nn.Module, x_recalled: torch.Tensor, y: torch.Tensor,
                       per_class: int | None = None) -> dict[int, torch.Tensor]:
        """Per class: rows of the ``per_class`` (default ``ltm_per_class``) samples nearest
        their class-mean feature, nearest first."""
        model.eval()
        feats = torch.cat([model.features(x_recalled[i : i + 500].to(self.device)).cpu()
                           for i in range(0, len(x_recalled), 500)])
        chosen = {}
        for c in sorted(int(v) for v in torch.unique(y)):
            rows = torch.nonzero(y == c).flatten()
            f = feats[rows]
            dist = ((f - f.mean(0)) ** 2).sum(1)
            chosen[c] = rows[torch.argsort(dist, stable=True)[: per_class or self.cfg.ltm_per_class]]
        return chosen

    def recall_ltm(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode + complete every long-term memory: images (N, C, H, W) and labels (N,)."""
        xs, ys = [], []
        for (_, c), item in sorted(self.ltm.items()):
            cues = self.entropy_models[item.task].decode(item.data, item.shape)
            xs.append(self.recall(cues, self.decoders[item.task]))
            ys.append(torch.full((item.shape[0],), c, dtype=torch.long))
        return torch.cat(xs), torch.cat(ys)

    # -- Avalanche callbacks --------------------------------------------------------
    def before_training_epoch(self, strategy, **kwargs) -> None:
        k = strategy.experience.current_experience
        if self._ran_for != k:
            self.learn_experience(strategy.model, strategy.experience.dataset.train(), k)
            self._ran_for = k
        strategy.stop_training()  # the phases above replace the template's epoch loop

    def learn_experience(self, model: nn.Module, dataset, k: int) -> None:
        self._current = k
        x, y, _ = dataset_tensors(dataset)
        enc, dec, em = self.train_memory(x)
        with torch.no_grad():
            cues = torch.cat([em.quantize(enc(x[i : i + 500].to(self.device))).cpu() for i in range(0, len(x), 500)])
            self.last_bits = {"estimated": float(em.bits(cues.to(self.device))), "n_cues": len(cues)}
        del enc  # the separation net is discarded after encoding
        self.decoders.append(dec)
        self.entropy_models.append(em)
        working = self.recall(cues, dec)
        self.wake(model, working, y)
        n_classes = int(torch.unique(y).numel())
        per_group = self.quota(len(self.ltm) + n_classes)
        self.shrink_ltm(per_group)
        for c, rows in self.select_for_ltm(model, working, y, per_group).items():
            sel = cues[rows]
            self.ltm[(k, c)] = CodedClass(k, em.encode(sel), tuple(sel.shape))
        del working, cues  # working memory cleared
        x_ltm, y_ltm = self.recall_ltm()
        model.train()
        self._fit(model, list(model.parameters()), x_ltm, y_ltm, self.cfg.sleep_epochs, self.cfg.sleep_lr,
                  self.cfg.sleep_milestones)

    # -- memory and checkpoints -----------------------------------------------------
    def coded_bytes(self) -> int:
        return sum(len(item.data) for item in self.ltm.values())

    def extra_memory_bytes(self, model: nn.Module) -> int:
        params = sum(p.numel() for m in [*self.decoders, *self.entropy_models] for p in m.parameters())
        return self.coded_bytes() + 4 * params

    def state_dict(self) -> dict:
        return {
            "decoders": [d.state_dict() for d in self.decoders],
            "entropy_models": [e.state_dict() for e in self.entropy_models],
            "ltm": [(c, i.task, i.data, i.shape) for (_, c), i in sorted(self.ltm.items())],
            "generator": self.generator.get_state(),
            "ran_for": self._ran_for,
        }

    def load_state_dict(self, state: dict) -> None:
        self.decoders, self.entropy_models = [], []
        for d_state, e_state in zip(state["decoders"], state["entropy_models"]):
            dec, em = self._new_decoder(), self._new_entropy_model()
            dec.load_state_dict(d_state)
            em.load_state_dict(e_state)
            self.decoders.append(dec.eval())
            self.entropy_models.append(em.eval())
        self.ltm = {(t, c): CodedClass(t, d, tuple(s)) for c, t, d, s in state["ltm"]}
        self.generator.set_state(state["generator"])
        self._ran_for = state["ran_for"]


@register_method("braincl", BrainCLConfig,
                 "BrainCL: entropy-coded cues + per-task completion nets, wake-sleep consolidation",
                 citation="braincl", scenarios=("class_il", "task_il", "domain_il"))
def build(cfg: BrainCLConfig, ctx: MethodContext) -> list:
    return [BrainCLPlugin(cfg, ctx)]
