"""Progressive neural networks (Rusu et al. 2016, arXiv:1606.04671) as ``avalanche.pnn``: Avalanche
0.6.0's ``PNN`` model (``avalanche/models/pnn.py``) and ``PNNStrategy`` (a ``SupervisedTemplate``
that requires it) built from clsuite's network.

A column per task (= experience); the column of task ``k`` gets, at every layer, the previous
layer's outputs of columns ``0..k-1`` through a lateral adapter (Avalanche's ``MLPAdapter``,
``U(relu(V(cat(alpha_j h_j))))``, or ``LinearAdapter``); training task ``k`` trains only column
``k`` (its layers, adapters and head), the older columns are frozen. As Avalanche's PNN the
columns are MLPs on the flattened input with a ReLU after every layer, and the output layer
sees only its own column (no lateral connection into it).

What differs from Avalanche's PNN:

- the columns take the widths of the benchmark's ``mlp`` (``hidden_sizes``; Avalanche: one width
  for every layer) and column 0 *is* that network (its initial weights); other models are refused;
- every column is allocated when the model is built (a fixed state-dict layout, so checkpoints
  load) and switched on at its task: the global RNG is drawn at build time, not when a task starts;
- each column's head is a Linear over its task's classes only; the training output is ``(N, K)``
  with the other classes at ``-1000`` (Avalanche's ``MultiHeadClassifier`` masks its head's
  inactive units to ``-1000``): the cross-entropy is the same;
- the forward without task labels (clsuite's records, see :class:`PNNNet`) gives each task's
  classes from its own column; a task not trained yet gets its untrained column (Avalanche has
  no column for it and fails).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.models import MultiTaskModule
from avalanche.models.pnn import PNNColumn
from avalanche.training.plugins import SupervisedPlugin
from torch import nn

from clsuite.core.errors import ComponentError, ParamsError

#: Avalanche's MultiHeadClassifier mask value for the units outside a task's head
MASK_VALUE = -1000.0


def _mlp_layers(net: nn.Module) -> list[nn.Linear]:
    """The Linear layers of clsuite's ``mlp`` (backbone ``Flatten, (Linear, ReLU)*``), or ParamsError."""
    backbone = getattr(net, "backbone", None)
    kinds = [type(m).__name__ for m in backbone] if isinstance(backbone, nn.Sequential) else []
    body = kinds[1:] if kinds[:1] == ["Flatten"] else kinds
    if not body or body != ["Linear", "ReLU"] * (len(body) // 2) or not isinstance(getattr(net, "head", None), nn.Linear):
        raise ParamsError(
            f"avalanche.pnn builds its columns from an MLP (Avalanche's PNN is one): the benchmark's model must be "
            f"clsuite's mlp (Flatten, then Linear + ReLU layers, a Linear head), got a backbone of "
            f"{', '.join(kinds) or type(backbone).__name__}; set the benchmark's model to {{name: mlp}}")
    return [m for m in backbone if isinstance(m, nn.Linear)]


class PNNNet(MultiTaskModule):
    """Columns ``0..T-1`` over the layers of ``net`` (clsuite's mlp), one head per task.

    ``forward(x, task_labels)`` (training; Avalanche passes the batch's task labels): ``(N, K)``
    logits, the task's classes from its column's head, the others ``-1000``. ``forward(x)``
    (evaluation): ``(N, K)``, the classes of each task from that task's column."""

    def __init__(self, net: nn.Module, experiences: list[list[int]], n_classes: int, adapter: str = "mlp") -> None:
        super().__init__()
        linears = _mlp_layers(net)
        self.experiences = [[int(c) for c in classes] for classes in experiences]
        self.n_classes = n_classes
        self.in_features = linears[0].in_features
        n_tasks = len(self.experiences)
        self.layers = nn.ModuleList()  # layer i: ModuleList of T columns (Avalanche's PNNLayer.columns)
        for lin in linears:
            cols = nn.ModuleList(PNNColumn(lin.in_features, lin.out_features, k, adapter=adapter) for k in range(n_tasks))
            cols[0].itoh.load_state_dict(lin.state_dict())  # column 0 is the base network
            self.layers.append(cols)
        width = linears[-1].out_features
        self.heads = nn.ModuleList(nn.Linear(width, len(classes)) for classes in self.experiences)
        with torch.no_grad():
            self.heads[0].weight.copy_(net.head.weight[self.experiences[0]])
            self.heads[0].bias.copy_(net.head.bias[self.experiences[0]])
        self.register_buffer("n_active", torch.tensor(1, dtype=torch.long))
        # the input normalisation (train.normalize) is a pre-hook on the base network's backbone
        for hook in net.backbone._forward_pre_hooks.values():
            self.register_forward_pre_hook(hook)
        self.activate(0)

    @property
    def active(self) -> int:
        return int(self.n_active)

    def activate(self, task: int) -> None:
        """Train column ``task`` (its layers, adapters and head) only; every other column frozen."""
        if not 0 <= task < len(self.heads):
            raise ValueError(f"task {task}: the PNN has columns for tasks 0..{len(self.heads) - 1}")
        self.n_active.fill_(max(self.active, task + 1))
        for k in range(len(self.heads)):
            for cols in self.layers:
                cols[k].requires_grad_(k == task)
            self.heads[k].requires_grad_(k == task)

    def columns(self, x: torch.Tensor, last: int) -> list[torch.Tensor]:
        """The last layer's outputs (after ReLU) of columns ``0..last`` for flat inputs ``x`` (N, D)."""
        hs = [x] * (last + 1)
        for cols in self.layers:  # Avalanche's PNN.forward_single_task, layer by layer
            hs = [F.relu(cols[j](hs[: j + 1])) for j in range(last + 1)]
        return hs

    def forward(self, x: torch.Tensor, task_labels: torch.Tensor | int | None = None) -> torch.Tensor:
        x = x.contiguous().view(x.size(0), self.in_features)
        if task_labels is None:
            hs = self.columns(x, len(self.heads) - 1)
            out = x.new_zeros(len(x), self.n_classes)
            for t, classes in enumerate(self.experiences):
                out[:, classes] = self.heads[t](hs[t])
            return out
        labels = torch.as_tensor(task_labels, device=x.device).reshape(-1).expand(len(x))
        out = x.new_full((len(x), self.n_classes), MASK_VALUE)
        for t in labels.unique().tolist():
            rows = labels == t
            logits = self.heads[t](self.columns(x[rows], t)[t])
            sub = x.new_full((int(rows.sum()), self.n_classes), MASK_VALUE)
            sub[:, self.experiences[t]] = logits
            out[rows] = sub
        return out

    def _column_parameters(self, k: int) -> int:
        return sum(p.numel() for cols in self.layers for p in cols[k].parameters()) + sum(
            p.numel() for p in self.heads[k].parameters())

    def active_parameter_count(self) -> int:
        """Parameters of the columns switched on so far (with their adapters and heads)."""
        return sum(self._column_parameters(k) for k in range(self.active))

    def extra_column_parameters(self) -> int:
        """Parameters of the active columns beyond the first (the base network's)."""
        return sum(self._column_parameters(k) for k in range(1, self.active))


class PNN(SupervisedPlugin):
    """Switches the PNN's column on at each experience (Avalanche adds it in the model's
    ``adaptation``) and reports the extra columns as memory. All its state is the model's."""

    stateless = True

    def before_training_exp(self, strategy, *args, **kwargs):
        model = strategy.model
        if not isinstance(model, PNNNet):
            raise ComponentError(f"avalanche.pnn needs its model PNNNet (got {type(model).__name__}): build the run "
                                 "through clsuite's method registry, which applies wrap_pnn")
        tasks = sorted({int(t) for t in strategy.experience.task_labels})
        if len(tasks) != 1:
            raise ValueError(f"avalanche.pnn needs one task label per experience, got {tasks} (a task_il benchmark)")
        model.activate(tasks[0])

    def extra_memory_bytes(self, model: nn.Module) -> int:
        """The columns beyond the first (layers, lateral adapters, heads), 4 bytes a parameter."""
        return 4 * model.extra_column_parameters() if isinstance(model, PNNNet) else 0


def wrap_pnn(model: nn.Module, cfg, ctx) -> PNNNet:
    """The method's ``wrap_model``: a :class:`PNNNet` whose column 0 is ``model`` (clsuite's mlp)."""
    return PNNNet(model, ctx.experiences, ctx.n_classes, cfg.adapter)
