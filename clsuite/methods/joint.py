"""Joint (upper bound), trained incrementally on the union of all experiences seen so far.

At stage k the model is trained on experiences 0..k together (Avalanche's
``Cumulative``), so the last stage is joint training on the whole stream and every
stage still yields a row of the accuracy matrix.
"""

from __future__ import annotations

from avalanche.benchmarks.utils import concat_datasets
from avalanche.training.plugins import SupervisedPlugin

from clsuite.methods import MethodConfig, MethodContext, register_method


class JointConfig(MethodConfig):
    pass


class CumulativeDataPlugin(SupervisedPlugin):
    """Replaces each experience's training set by the union of all experiences so far."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = None

    def after_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        current = strategy.adapted_dataset
        self.seen = current if self.seen is None else concat_datasets([self.seen, current])
        strategy.adapted_dataset = self.seen


@register_method("joint", JointConfig, "cumulative joint training on all data seen so far (upper bound)")
def build(cfg: JointConfig, ctx: MethodContext) -> list:
    return [CumulativeDataPlugin()]
