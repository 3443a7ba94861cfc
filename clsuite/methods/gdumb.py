"""GDumb (Prabhu et al., ECCV 2020): a greedy class-balanced sampler and a dumb learner.

- Sampler (paper Alg. 1; the official ``GreedySampler``): each incoming sample (x, y) is
  stored while the memory has room; once it is full, it is stored only if its class holds
  fewer than ``mem_size / n_seen`` samples (n_seen: classes seen so far, y included), by
  replacing a uniformly drawn sample of the currently largest class (ties: lowest label).
  Samples are offered in stream order at the start of each experience.
- Learner: at every experience the model is reset to its initial weights and trained on
  the memory alone, with the run's training settings (as Avalanche's ``GDumbPlugin``, so that
  every experience yields a row of the accuracy matrix; Mammoth's ``models/gdumb.py`` trains
  once, after the last task).

Not implemented: the paper's CutMix and SGDR learning-rate schedule of the retraining
(Mammoth's ``fit_buffer``); ``methods.gdumb.train`` sets epochs and learning rate instead.
The initial weights the model is reset to are kept (a checkpoint holds them) but not
counted as extra memory: they are reproducible from the run's seed.
"""

from __future__ import annotations

import torch
from avalanche.training.plugins import SupervisedPlugin
from pydantic import Field

from clsuite.methods import MethodConfig, MethodContext, register_method
from clsuite.methods.exemplars import dataset_tensors, tensor_dataset

CITATION = """@inproceedings{prabhu2020gdumb,
  title     = {GDumb: A Simple Approach that Questions Our Progress in Continual Learning},
  author    = {Prabhu, Ameya and Torr, Philip H. S. and Dokania, Puneet K.},
  booktitle = {European Conference on Computer Vision (ECCV)}, pages = {524--540}, year = {2020},
}"""


class GreedyClassBalancedMemory:
    """The GDumb sampler over rows (x, y, t); randomness from its own generator."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.generator = torch.Generator().manual_seed(seed)
        self.x = torch.empty(0)
        self.y = torch.empty(0, dtype=torch.long)
        self.t = torch.empty(0, dtype=torch.long)
        self.seen: set[int] = set()

    def __len__(self) -> int:
        return len(self.y)

    def add(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> None:
        """Offer rows in order (x: (B, ...), y, t: (B,))."""
        if len(self) == 0:
            self.x = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype)
            self.y = torch.empty(0, dtype=torch.long)
            self.t = torch.empty(0, dtype=torch.long)
        ys, ts = self.y.tolist(), self.t.tolist()
        counts: dict[int, int] = {}
        for c in ys:
            counts[c] = counts.get(c, 0) + 1
        for i, c in enumerate(y.tolist()):
            self.seen.add(c)
            if len(ys) < self.capacity:
                slot = len(ys)
                ys.append(c)
                ts.append(int(t[i]))
            elif counts.get(c, 0) < self.capacity / len(self.seen):
                largest = max(sorted(counts), key=lambda k: counts[k])
                rows = [j for j, v in enumerate(ys) if v == largest]
                slot = rows[int(torch.randint(len(rows), (), generator=self.generator))]
                counts[largest] -= 1
                ys[slot], ts[slot] = c, int(t[i])
            else:
                continue
            counts[c] = counts.get(c, 0) + 1
            self.x[slot] = x[i]
        self.y, self.t = torch.tensor(ys, dtype=torch.long), torch.tensor(ts, dtype=torch.long)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.x[: len(self)], self.y, self.t

    @property
    def nbytes_as_images(self) -> int:
        return self.x[: len(self)].numel()

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "x": self.x[: len(self)].clone(), "y": self.y.clone(),
                "t": self.t.clone(), "seen": sorted(self.seen), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.capacity = int(state["capacity"])
        x = state["x"]
        self.x = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype)
        self.x[: len(x)] = x
        self.y, self.t = state["y"].clone(), state["t"].clone()
        self.seen = set(int(c) for c in state["seen"])
        self.generator.set_state(state["generator"])


class GDumbPlugin(SupervisedPlugin):
    """Memory update and model reset before each experience; the memory is the training set."""

    def __init__(self, mem_size: int, seed: int) -> None:
        super().__init__()
        self.memory = GreedyClassBalancedMemory(mem_size, seed)
        self.init_state: dict | None = None

    def before_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        model = strategy.model
        if self.init_state is None:
            self.init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            model.load_state_dict(self.init_state)  # in place: the optimizer keeps its parameters

    def after_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        self.memory.add(*dataset_tensors(strategy.experience.dataset.train()))
        strategy.adapted_dataset = tensor_dataset(*self.memory.tensors())

    def extra_memory_bytes(self, model: torch.nn.Module) -> int:
        return self.memory.nbytes_as_images

    def state_dict(self) -> dict:
        return {"memory": self.memory.state_dict(), "init_state": self.init_state}

    def load_state_dict(self, state: dict) -> None:
        self.memory.load_state_dict(state["memory"])
        self.init_state = state["init_state"]


class GDumbConfig(MethodConfig):
    """Memory size as ER's buffer here (the paper and Mammoth's ``gdumb.yaml`` use 200/500/5120)."""

    mem_size: int = Field(200, ge=1, description="memory size in samples (greedy class-balanced)")


@register_method("gdumb", GDumbConfig, "GDumb: greedy class-balanced memory, model retrained from scratch on it",
                 citation=CITATION)
def build(cfg: GDumbConfig, ctx: MethodContext) -> list:
    return [GDumbPlugin(cfg.mem_size, ctx.seed)]
