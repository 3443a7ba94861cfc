"""A checkpointable ``cycle(DataLoader(data, batch_size, shuffle=True, drop_last=True))``.

Avalanche's strategies replay their buffers through ``avalanche.training.utils.cycle`` over a
shuffling ``DataLoader``: an iterator, whose position cannot be saved. :class:`ShuffledCycle`
draws the same batches from the same random numbers (each pass: the loader iterator's base seed,
then the sampler's seed, both from the global torch RNG, then ``randperm`` from a generator seeded
with the latter; torch 2.x's ``_BaseDataLoaderIter`` and ``RandomSampler``) and keeps its
position as plain data (:meth:`state`), so a plugin that uses it resumes inside an experience.
``tests/image/test_avalanche_aml.py`` checks it batch for batch against the real thing.
"""

from __future__ import annotations

import torch


class ShuffledCycle:
    """Endless shuffled batches of ``tensors`` (each (N, ...), same N), ``batch_size`` rows each,
    an incomplete last batch of a pass dropped. Needs N >= batch_size."""

    def __init__(self, tensors: list[torch.Tensor], batch_size: int) -> None:
        n = len(tensors[0])
        if n < batch_size:
            raise ValueError(f"{n} rows cannot fill a batch of {batch_size} (drop_last)")
        self.tensors, self.batch_size = tensors, batch_size
        self.perm: torch.Tensor | None = None  # this pass's order
        self.pos = 0  # batches of this pass already given

    def _new_pass(self) -> None:
        torch.empty((), dtype=torch.int64).random_()  # the loader iterator's base seed (unused: no workers)
        seed = int(torch.empty((), dtype=torch.int64).random_().item())  # RandomSampler's
        self.perm = torch.randperm(len(self.tensors[0]), generator=torch.Generator().manual_seed(seed))
        self.pos = 0

    def __next__(self) -> list[torch.Tensor]:
        if self.perm is None or (self.pos + 1) * self.batch_size > len(self.perm):
            self._new_pass()
        idx = self.perm[self.pos * self.batch_size:(self.pos + 1) * self.batch_size]
        self.pos += 1
        return [t[idx] for t in self.tensors]

    def __iter__(self) -> "ShuffledCycle":
        return self

    def state(self) -> dict:
        """The position (plain data); the rows themselves are the plugin's buffer."""
        return {"perm": None if self.perm is None else self.perm.clone(), "pos": self.pos}

    def load_state(self, state: dict) -> None:
        self.perm = None if state["perm"] is None else state["perm"].clone()
        self.pos = int(state["pos"])
