"""ER-ACE (Caccia et al., ICLR 2022): experience replay with asymmetric cross-entropy.

Promoted from the worked example package ``examples/clsuite-er-ace`` (which stays as the
third-party demo, registered there as ``er_ace_example``); the logic is the same.

Loss per step (Mammoth ``models/er_ace.py``, ``observe``), after the first experience:

    L = CE(mask(f(x)), y) + CE(f(x_b), y_b)

where ``mask`` sets to the dtype's minimum the logits of classes *seen before but absent
from the minibatch*, so new classes do not push old ones down (the main source of
class-IL bias), and (x_b, y_b) is a minibatch of ``batch_size_mem`` rows of a reservoir
buffer (as ER). In the first experience the loss is plain cross-entropy. Classes never
seen (above the largest seen label) stay unmasked. One difference from Mammoth: Mammoth
unmasks from the largest seen label on (``mask[:, seen.max():] = 1``), so that class stays
unmasked even when absent from the minibatch; here (as in the example package) it is
masked like every other seen-but-absent class.

The buffer is ER's (:class:`clsuite.methods.replay.BufferStateMixin`): ``buffer_update:
online`` (default) offers each trained minibatch after its step, as Mammoth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.training.plugins import SupervisedPlugin

from clsuite.methods import MethodContext, register_method
from clsuite.methods.replay import BufferConfig, BufferStateMixin, BufferUpdate

CITATION = """@inproceedings{caccia2022erace,
  title     = {New Insights on Reducing Abrupt Representation Change in Online Continual Learning},
  author    = {Caccia, Lucas and Aljundi, Rahaf and Asadi, Nader and Tuytelaars, Tinne and Pineau, Joelle
               and Belilovsky, Eugene},
  booktitle = {International Conference on Learning Representations}, year = {2022},
}"""


def ace_mask(logits: torch.Tensor, present: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Logits with the seen-but-absent classes set to the dtype's minimum.

    Kept: classes ``present`` in the minibatch and classes never seen so far (above the
    largest label in ``seen``).
    """
    keep = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    keep[present] = True
    keep[int(seen.max()) + 1 :] = True
    return logits.masked_fill(~keep, torch.finfo(logits.dtype).min)


class ERACEPlugin(BufferStateMixin, SupervisedPlugin):
    """Replaces the loss by the asymmetric CE on the stream plus CE on a buffer minibatch."""

    def __init__(self, mem_size: int, batch_size_mem: int, seed: int, buffer_update: BufferUpdate = "online") -> None:
        super().__init__()
        self.init_buffer(mem_size, seed, buffer_update)
        self.batch_size_mem = batch_size_mem
        self.seen = torch.empty(0, dtype=torch.long)  # every label trained on so far

    def before_backward(self, strategy, **kwargs) -> None:
        y = strategy.mb_y
        present = y.unique()
        self.seen = torch.cat([self.seen, present.cpu()]).unique()
        if strategy.clock.train_exp_counter == 0:
            return  # first experience: plain cross-entropy
        loss = F.cross_entropy(ace_mask(strategy.mb_output, present, self.seen), y)
        if len(self.buffer):
            bx, by, _ = self.buffer.sample(self.batch_size_mem)
            loss = loss + F.cross_entropy(strategy.model(bx.to(strategy.device)), by.to(strategy.device))
        strategy.loss = loss

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self.offer(strategy, strategy.mb_x, strategy.mb_y, strategy.mb_task_id)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.seen = state["seen"].clone()


class ERACEConfig(BufferConfig):
    """Mammoth's ER-ACE arguments: buffer size and replay minibatch size (``minibatch_size``);
    10 as ER's ``batch_size_mem`` here (the stream minibatch of the smoke/embedded streams)."""


@register_method("er_ace", ERACEConfig, "ER with asymmetric cross-entropy (masks absent seen classes)",
                 citation=CITATION)
def build(cfg: ERACEConfig, ctx: MethodContext) -> list:
    return [ERACEPlugin(cfg.mem_size, cfg.batch_size_mem, seed=ctx.seed, buffer_update=cfg.buffer_update)]
