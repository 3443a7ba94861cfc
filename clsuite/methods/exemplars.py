"""Class-balanced exemplar memory chosen by herding (Rebuffi et al. 2017, iCaRL Alg. 4).

Used by iCaRL and DER (Yan et al. 2021): a fixed total budget of ``capacity`` samples
is split evenly over the classes seen so far (m = capacity // n_classes per class);
when new classes arrive the old sets are cut to their first m exemplars, which is
valid because herding orders exemplars by priority.

Written here rather than taken from Avalanche (``HerdingSelectionStrategy``) because
the memory must be checkpointable (plain tensors in a state dict) and must also serve
the nearest-mean classifier and DER's class-balanced head retraining.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


def herding_order(features: torch.Tensor, m: int) -> torch.Tensor:
    """Indices of ``m`` rows of ``features`` (N, D), chosen greedily so that the running
    mean of the chosen rows stays closest to the mean of all rows (no repeats).

    Features are L2-normalised first, as in iCaRL. Ties go to the lowest index.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got {tuple(features.shape)}")
    phi = F.normalize(features.double(), dim=1)
    mu = phi.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(len(phi), dtype=torch.bool)
    for k in range(1, min(m, len(phi)) + 1):
        dist = ((mu - (running + phi) / k) ** 2).sum(1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        running += phi[i]
    return torch.tensor(chosen, dtype=torch.long)


@torch.no_grad()
def dataset_tensors(dataset, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All (x, y, t) of an Avalanche dataset, in order, as CPU tensors."""
    xs, ys, ts = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        xs.append(batch[0])
        ys.append(batch[1])
        ts.append(batch[-1])
    return torch.cat(xs), torch.cat(ys).long(), torch.cat(ts).long()


@torch.no_grad()
def embed(model: torch.nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 500) -> torch.Tensor:
    """``model.features`` of ``x`` (N, C, H, W) in eval mode, (N, D) float32 on the CPU."""
    was_training = model.training
    model.eval()
    out = [model.features(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


class HerdingMemory:
    """Exemplars per class: ``x`` (m_c, C, H, W) float in [0, 1] and task label, in herding order."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.x: dict[int, torch.Tensor] = {}
        self.t: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self.x.values())

    @property
    def classes(self) -> list[int]:
        return sorted(self.x)

    def per_class(self, n_classes: int) -> int:
        return self.capacity // max(n_classes, 1)

    def update(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
               device: torch.device) -> None:
        """Add the classes in ``y`` (herding on ``model.features``), then cut every class to m.

        Classes already in memory (domain-IL: a class seen again) are re-selected from the
        union of their old exemplars and the new samples.
        """
        new_classes = sorted(int(c) for c in torch.unique(y))
        m = self.per_class(len(set(self.classes) | set(new_classes)))
        for c in self.classes:
            self.x[c], self.t[c] = self.x[c][:m], self.t[c][:m]
        for c in new_classes:
            rows = torch.nonzero(y == c).flatten()
            xc, tc = x[rows], t[rows]
            if c in self.x:
                xc, tc = torch.cat([self.x[c], xc]), torch.cat([self.t[c], tc])
            order = herding_order(embed(model, xc, device), m)
            self.x[c], self.t[c] = xc[order].clone(), tc[order].clone()

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All exemplars (x, y, t), classes in ascending order."""
        if not self.x:
            raise ValueError("the exemplar memory is empty")
        cs = self.classes
        ys = [torch.full((len(self.x[c]),), c, dtype=torch.long) for c in cs]
        return torch.cat([self.x[c] for c in cs]), torch.cat(ys), torch.cat([self.t[c] for c in cs])

    @torch.no_grad()
    def class_means(self, model: torch.nn.Module, device: torch.device) -> dict[int, torch.Tensor]:
        """Mean of the L2-normalised exemplar features per class, re-normalised (iCaRL), (D,) each."""
        return {c: F.normalize(F.normalize(embed(model, self.x[c], device), dim=1).mean(0), dim=0)
                for c in self.classes}

    @property
    def nbytes_as_images(self) -> int:
        """Exemplars counted as uint8 pixels (MEMO)."""
        return sum(v.numel() for v in self.x.values())

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "x": dict(self.x), "t": dict(self.t)}

    def load_state_dict(self, state: dict) -> None:
        self.capacity = state["capacity"]
        self.x, self.t = dict(state["x"]), dict(state["t"])


def exemplar_dataset(memory: HerdingMemory):
    """The memory as an Avalanche classification dataset (to concatenate with an experience)."""
    return tensor_dataset(*memory.tensors())


def tensor_dataset(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor):
    """Rows (x, y, t) as an Avalanche classification dataset (task-aware, targets ``y``)."""
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_tensor_classification_dataset

    return _make_taskaware_tensor_classification_dataset(x, y, task_labels=t.tolist(), targets=y.tolist())
