"""Joint (upper bound), trained incrementally on the union of all experiences seen so far.

After experience k the model has been trained on experiences 0..k together (Avalanche's
``Cumulative``), so the last experience is joint training on the whole stream and every
experience still yields a row of the accuracy matrix.
"""

from __future__ import annotations

from avalanche.benchmarks.utils import concat_datasets
from avalanche.training.plugins import SupervisedPlugin

from clsuite.methods import MethodConfig, MethodContext, register_method


class JointConfig(MethodConfig):
    pass


class CumulativeDataPlugin(SupervisedPlugin):
    """Replaces each experience's training set by the union of all experiences so far.

    Only the ids of past experiences are kept (their data is taken from the stream), so
    the state is tiny and checkpointable.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen_ids: list[int] = []
        self.stored_bytes = 0  # derived from seen_ids at each dataset adaptation

    def after_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        stream = strategy.experience.origin_stream
        past = [stream[i].dataset.train() for i in self.seen_ids]
        self.seen_ids.append(strategy.experience.current_experience)
        strategy.adapted_dataset = concat_datasets([*past, strategy.adapted_dataset])
        data = strategy.adapted_dataset
        self.stored_bytes = len(data) * data[0][0].numel()

    def extra_memory_bytes(self, model) -> int:
        """Joint keeps every sample trained on so far, counted as uint8 pixels."""
        return self.stored_bytes

    def state_dict(self) -> dict:
        return {"seen_ids": list(self.seen_ids)}

    def load_state_dict(self, state: dict) -> None:
        self.seen_ids = list(state["seen_ids"])


@register_method("joint", JointConfig, "cumulative joint training on all data seen so far (upper bound)")
def build(cfg: JointConfig, ctx: MethodContext) -> list:
    return [CumulativeDataPlugin()]
