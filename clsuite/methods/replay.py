"""Experience Replay with a reservoir buffer (Chaudhry et al. 2019; Mammoth's ``er``).

Every training minibatch is concatenated with ``batch_size_mem`` samples drawn
uniformly from the buffer; the *incoming* samples are offered to the buffer by
reservoir sampling, so the buffer is a uniform sample of the stream.

When they are offered is the ``buffer_update`` option of every reservoir-buffer method
(ER, ER-SAM, DER, DER++, DER++-SAM, MGSER-SAM; :class:`BufferConfig`), implemented once in
:class:`BufferStateMixin`:

- ``online`` (default): after every training step, as Mammoth and the DER paper; the
  buffer also holds samples of the experience being learned.
- ``end_of_experience``: every minibatch seen during the experience is kept (as trained
  on: augmented, in order) and offered to the reservoir in that order at the end of the
  experience, as Avalanche's ``ReplayPlugin`` updates its storage; during an experience the
  buffer holds only earlier experiences' samples. Stored logits (DER, MGSER-SAM) are then
  those of the final model of the experience in eval mode, as Avalanche's DER computes them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from avalanche.training.plugins import SupervisedPlugin
from pydantic import Field

from clsuite.methods import MethodConfig, MethodContext, register_method
from clsuite.methods.sam import sam_gradients


class ReservoirBuffer:
    """Fixed-capacity uniform sample of a stream of rows.

    A row is (x, y, t) plus optional named extras (e.g. DER's ``logits``), each stored
    in a (capacity, ...) tensor allocated at the first insertion on the device of the
    rows offered (so that on a GPU adding and sampling never copy to the host).
    Reservoir sampling (Vitter's algorithm R): the n-th sample seen is stored with
    probability capacity / n, replacing a uniformly chosen slot. All randomness comes
    from the buffer's own CPU ``torch.Generator``, so it is reproducible and
    checkpointable.
    """

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.n_seen = 0
        self._fields: dict[str, torch.Tensor] = {
            "y": torch.empty(capacity, dtype=torch.long),
            "t": torch.empty(capacity, dtype=torch.long),
        }
        self.generator = torch.Generator().manual_seed(seed)
        self._draw = torch.empty((), dtype=torch.long)  # reused by the per-sample draws in add()

    def __len__(self) -> int:
        return min(self.n_seen, self.capacity)

    def field(self, name: str) -> torch.Tensor:
        """The stored rows of field ``name`` (x, y, t or an extra), shape (len, ...)."""
        if name not in self._fields:
            raise ValueError("the buffer is empty" if name == "x" else f"the buffer stores no field {name!r}")
        return self._fields[name][: len(self)]

    @property
    def x(self) -> torch.Tensor:
        return self.field("x")

    @property
    def y(self) -> torch.Tensor:
        return self.field("y")

    @property
    def t(self) -> torch.Tensor:
        return self.field("t")

    @property
    def nbytes_as_images(self) -> int:
        """Memory as MEMO counts it: exemplars as uint8 pixels, extras (logits) as float32."""
        n = len(self)
        if n == 0:
            return 0
        total = n * self._fields["x"][0].numel()  # 1 byte per pixel value
        total += sum(n * v[0].numel() * 4 for k, v in self._fields.items() if k not in ("x", "y", "t"))
        return total

    def _slots(self, b: int) -> list[int]:
        """The slot of each of ``b`` incoming samples (>= capacity: not stored); counts them.

        One draw per sample once the buffer is full, ``randint(0, n_seen + 1)`` from the
        buffer's generator, in stream order. (torch reduces a 32-bit draw modulo the range
        inside the kernel and no public op returns the unreduced draw, so these draws
        cannot be batched without changing the random stream; a reused 0-d tensor halves
        the cost of each call compared with ``torch.randint``, with identical values.)
        """
        n0, cap = self.n_seen, self.capacity
        self.n_seen = n0 + b
        if n0 + b <= cap:
            return list(range(n0, n0 + b))
        draw, gen = self._draw, self.generator
        return [n if n < cap else draw.random_(0, n + 1, generator=gen).item() for n in range(n0, n0 + b)]

    def _allocate(self, rows: dict[str, torch.Tensor]) -> None:
        """(capacity, ...) storage for every field, on the device of the rows."""
        dev = rows["x"].device
        for name, value in rows.items():
            if name not in self._fields:
                self._fields[name] = torch.empty((self.capacity, *value.shape[1:]), dtype=value.dtype, device=dev)
        for name, field in self._fields.items():
            if field.device != dev:  # e.g. restored from a CPU checkpoint, training on a GPU
                self._fields[name] = field.to(dev)

    def add(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, **extras: torch.Tensor) -> None:
        """Offer a batch (x: (B, ...), y: (B,), t: (B,), extras: (B, ...)) to the reservoir."""
        rows = {"x": x, "y": y if y.dtype == torch.long else y.long(), "t": t if t.dtype == torch.long else t.long()}
        rows.update(extras)
        for name, value in rows.items():
            if value.requires_grad:
                rows[name] = value.detach()
        fields = self._fields
        if fields.keys() != rows.keys() or fields["x"].device != x.device:
            self._allocate(rows)
            fields = self._fields
        # Sequential semantics in one copy per field: a slot drawn twice keeps the later row.
        keep = {slot: i for i, slot in enumerate(self._slots(x.shape[0])) if slot < self.capacity}
        if not keep:
            return
        dst = torch.from_numpy(np.fromiter(keep, np.int64, len(keep)))
        src = torch.from_numpy(np.fromiter(keep.values(), np.int64, len(keep)))
        if x.device.type != "cpu":
            dst, src = dst.to(x.device, non_blocking=True), src.to(x.device, non_blocking=True)
        for name, value in rows.items():
            fields[name].index_copy_(0, dst, value.index_select(0, src))

    def sample_rows(self, n: int) -> torch.Tensor:
        """Indices of ``n`` rows drawn uniformly without replacement (all if fewer are stored)."""
        return torch.randperm(len(self), generator=self.generator)[:n]

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` rows (x, y, t) drawn uniformly without replacement (all rows if fewer are stored)."""
        idx = self.sample_rows(n)
        if len(self) == 0:
            raise ValueError("the buffer is empty")
        f = self._fields
        if f["x"].device.type != "cpu":
            idx = idx.to(f["x"].device, non_blocking=True)
        return f["x"].index_select(0, idx), f["y"].index_select(0, idx), f["t"].index_select(0, idx)

    def state_dict(self) -> dict:
        return {
            "capacity": self.capacity,
            "n_seen": self.n_seen,
            "fields": {k: v[: len(self)].clone() for k, v in self._fields.items()},
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.__init__(state["capacity"], seed=0)
        for name, value in state["fields"].items():
            self._fields[name] = torch.empty((self.capacity, *value.shape[1:]), dtype=value.dtype)
            self._fields[name][: len(value)] = value
        self.n_seen = state["n_seen"]
        self.generator.set_state(state["generator"])


def stored_inputs(strategy, x: torch.Tensor) -> torch.Tensor:
    """The rows a buffer keeps for the stream batch ``x``: its inputs before the trainer's
    augmentation when there is one (``strategy.mb_x_plain``, Mammoth's ``not_aug_inputs``), else ``x``."""
    plain = getattr(strategy, "mb_x_plain", None)
    return plain if plain is not None and plain.shape == x.shape else x


def replayed_inputs(strategy, x: torch.Tensor) -> torch.Tensor:
    """Buffer rows ``x`` as they are replayed: through the trainer's augmentation when it has one
    (``strategy.augment_replay``), as Mammoth augments the buffer samples it replays."""
    augment = getattr(strategy, "augment_replay", None)
    return augment(x) if augment is not None else x


BufferUpdate = Literal["online", "end_of_experience"]


class BufferStateMixin:
    """The reservoir ``self.buffer`` of a plugin: when samples enter it (``buffer_update``),
    checkpointing and MEMO-style memory.

    A plugin calls :meth:`init_buffer` in its constructor and :meth:`offer` with the rows it
    trained on from ``after_training_iteration``; this mixin's ``after_training_exp`` adds
    the rows held back under ``end_of_experience``. With ``stores_logits`` the buffer also
    stores each row's logits: the step's ``mb_output`` when online, the final model's
    (eval mode) at the end of the experience.
    """

    buffer: ReservoirBuffer
    buffer_update: BufferUpdate = "online"
    stores_logits: bool = False

    def init_buffer(self, mem_size: int, seed: int, buffer_update: BufferUpdate = "online") -> None:
        if buffer_update not in ("online", "end_of_experience"):
            raise ValueError(f"buffer_update must be 'online' or 'end_of_experience', not {buffer_update!r}")
        self.buffer = ReservoirBuffer(mem_size, seed)
        self.buffer_update = buffer_update
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def offer(self, strategy, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> None:
        """The rows of this training step: added now (online) or at the end of the experience."""
        if self.buffer_update == "online":
            extras = {"logits": strategy.mb_output.detach().float()} if self.stores_logits else {}
            self.buffer.add(x, y, t, **extras)
        else:
            self._pending.append((x.detach(), y.detach(), t.detach()))

    def after_training_exp(self, strategy, **kwargs) -> None:
        """``end_of_experience``: offer the experience's rows in the order they were trained on."""
        pending, self._pending = getattr(self, "_pending", []), []
        if not pending:
            return
        if not self.stores_logits:
            for x, y, t in pending:
                self.buffer.add(x, y, t)
            return
        model = strategy.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for x, y, t in pending:
                    self.buffer.add(x, y, t, logits=model(x).float())
        finally:
            model.train(was_training)

    def extra_memory_bytes(self, model: torch.nn.Module) -> int:
        return self.buffer.nbytes_as_images

    def state_dict(self) -> dict:
        # checkpoints are taken between experiences (clsuite.image.train), after
        # after_training_exp has emptied the held-back rows: they are never state
        if getattr(self, "_pending", None):
            raise RuntimeError("a buffer checkpoint was requested in the middle of an experience "
                               "(buffer_update: end_of_experience holds rows not yet offered)")
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self._pending = []


class ReservoirReplayPlugin(BufferStateMixin, SupervisedPlugin):
    """ER: concatenate a buffer batch to each training minibatch; reservoir-update after."""

    loss_untouched_in = ("before_forward",)  # it replaces mbatch only (ClsuiteTemplate's direct loss)

    def __init__(self, mem_size: int, batch_size_mem: int, seed: int, buffer_update: BufferUpdate = "online") -> None:
        super().__init__()
        self.init_buffer(mem_size, seed, buffer_update)
        self.batch_size_mem = batch_size_mem
        self._incoming: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def before_forward(self, strategy, **kwargs) -> None:
        x, y, t = strategy.mbatch[0], strategy.mbatch[1], strategy.mbatch[-1]
        self._incoming = (stored_inputs(strategy, x), y, t)
        if len(self.buffer) == 0:
            return
        bx, by, bt = self.buffer.sample(self.batch_size_mem)
        if bx.device != x.device:  # the buffer follows the data's device at its next add()
            bx, by, bt = (b.to(x.device, non_blocking=True) for b in (bx, by, bt))
        bx = replayed_inputs(strategy, bx)
        strategy.mbatch = [torch.cat([x, bx]), torch.cat([y, by]), torch.cat([t, bt])]

    def after_training_iteration(self, strategy, **kwargs) -> None:
        if self._incoming is not None:
            self.offer(strategy, *self._incoming)
            self._incoming = None



class ReservoirReplaySAMPlugin(ReservoirReplayPlugin):
    """ER-SAM: the ER objective (CE on the current + buffer minibatch) minimised with SAM."""

    def __init__(self, mem_size: int, batch_size_mem: int, seed: int, rho: float,
                 buffer_update: BufferUpdate = "online") -> None:
        super().__init__(mem_size, batch_size_mem, seed, buffer_update)
        self.rho = rho

    def before_update(self, strategy, **kwargs) -> None:
        sam_gradients(strategy.model, lambda: strategy._criterion(strategy.model(strategy.mb_x), strategy.mb_y),
                      self.rho)


class BufferConfig(MethodConfig):
    """The settings every reservoir-buffer method shares (ER, DER, MGSER-SAM and their variants)."""

    mem_size: int = Field(200, ge=1, description="buffer capacity in samples")
    batch_size_mem: int = Field(10, ge=1, description="buffer samples per step")
    buffer_update: BufferUpdate = Field(
        "online", description="when trained samples enter the buffer: online (after every step, Mammoth and the "
                              "DER paper) or end_of_experience (Avalanche's ReplayPlugin)")


class ReplayConfig(BufferConfig):
    batch_size_mem: int = Field(10, ge=1, description="buffer samples added to each minibatch")


@register_method("replay", ReplayConfig, "experience replay with a reservoir buffer", citation="chaudhry2019er")
def build(cfg: ReplayConfig, ctx: MethodContext) -> list:
    return [ReservoirReplayPlugin(cfg.mem_size, cfg.batch_size_mem, seed=ctx.seed, buffer_update=cfg.buffer_update)]


class ReplaySAMConfig(ReplayConfig):
    rho: float = Field(0.05, gt=0, description="SAM neighbourhood radius")


@register_method("er_sam", ReplaySAMConfig, "experience replay minimised with sharpness-aware minimisation",
                 citation="foret2021sam")
def build_sam(cfg: ReplaySAMConfig, ctx: MethodContext) -> list:
    return [ReservoirReplaySAMPlugin(cfg.mem_size, cfg.batch_size_mem, seed=ctx.seed, rho=cfg.rho,
                                     buffer_update=cfg.buffer_update)]
