"""ER-ACE (Caccia et al., ICLR 2022): experience replay with asymmetric cross-entropy.

A worked example of a third-party clsuite method: a pydantic config, an Avalanche
plugin and a builder registered with ``@register_method``; ``pyproject.toml`` exposes
the module in the ``clsuite.methods`` entry-point group, so clsuite finds it without
any change to clsuite itself. ER-ACE is also built into clsuite (``er_ace``,
``clsuite/methods/er_ace.py``, promoted from this package); this demo registers the same
logic as ``er_ace_example`` (a plugin cannot take a built-in's name), and clsuite's tests
check that both give the same loss.

Loss per step (after the first experience): cross-entropy on the incoming minibatch with
the logits of *previously seen classes absent from the minibatch* masked out, plus
plain cross-entropy on a minibatch drawn from a reservoir buffer. The mask keeps new
classes from pushing old ones down, the main source of class-IL bias (as in Mammoth's
``er_ace``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.training.plugins import SupervisedPlugin
from pydantic import Field

from clsuite.methods import MethodConfig, MethodContext, register_method
from clsuite.methods.replay import ReservoirBuffer


def ace_mask(logits: torch.Tensor, present: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Logits with the seen-but-absent classes set to the dtype's minimum.

    Kept: classes present in the minibatch and classes never seen so far (above the
    largest seen label, as in the reference implementation).
    """
    keep = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    keep[present] = True
    keep[int(seen.max()) + 1 :] = True
    return logits.masked_fill(~keep, torch.finfo(logits.dtype).min)


class ERACEPlugin(SupervisedPlugin):
    def __init__(self, mem_size: int, batch_size_mem: int, seed: int) -> None:
        super().__init__()
        self.buffer = ReservoirBuffer(mem_size, seed)
        self.batch_size_mem = batch_size_mem
        self.seen = torch.empty(0, dtype=torch.long)

    def before_backward(self, strategy, **kwargs) -> None:
        y = strategy.mb_y
        present = y.unique()
        self.seen = torch.cat([self.seen, present.cpu()]).unique()
        if strategy.clock.train_exp_counter == 0:
            return  # first experience: plain cross-entropy
        logits = ace_mask(strategy.mb_output, present, self.seen)
        loss = F.cross_entropy(logits, y)
        if len(self.buffer):
            bx, by, _ = self.buffer.sample(self.batch_size_mem)
            loss = loss + F.cross_entropy(strategy.model(bx.to(strategy.device)), by.to(strategy.device))
        strategy.loss = loss

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self.buffer.add(strategy.mb_x, strategy.mb_y, strategy.mb_task_id)

    def extra_memory_bytes(self, model: torch.nn.Module) -> int:
        return self.buffer.nbytes_as_images

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.seen = state["seen"].clone()


class ERACEConfig(MethodConfig):
    mem_size: int = Field(200, ge=1, description="buffer capacity in samples")
    batch_size_mem: int = Field(10, ge=1, description="buffer minibatch size")


CITATION = """@inproceedings{caccia2022erace,
  title     = {New Insights on Reducing Abrupt Representation Change in Online Continual Learning},
  author    = {Caccia, Lucas and Aljundi, Rahaf and Asadi, Nader and Tuytelaars, Tinne and Pineau, Joelle
               and Belilovsky, Eugene},
  booktitle = {International Conference on Learning Representations}, year = {2022},
}"""


@register_method("er_ace_example", ERACEConfig, "ER with asymmetric cross-entropy (example plugin package)",
                 citation=CITATION)
def build(cfg: ERACEConfig, ctx: MethodContext) -> list:
    return [ERACEPlugin(cfg.mem_size, cfg.batch_size_mem, seed=ctx.seed)]
