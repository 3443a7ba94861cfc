"""ReservoirBuffer (Vitter's algorithm R) and the ER plugin built on it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from clsuite.methods.replay import ReservoirBuffer, ReservoirReplayPlugin


def stream(start: int, n: int, task: int = 0):
    """``n`` distinguishable rows: x[i] is a (1, 2, 2) image filled with the id ``start + i``."""
    ids = torch.arange(start, start + n)
    x = ids.float().view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    return x, ids.clone(), torch.full((n,), task, dtype=torch.long)


def ids_of(x: torch.Tensor) -> list[int]:
    """Recover the row ids from images built by :func:`stream`."""
    flat = x.reshape(len(x), -1)
    assert torch.all(flat == flat[:, :1]), "rows were mixed up"
    return [int(v) for v in flat[:, 0]]


def assert_same_buffer(a: ReservoirBuffer, b: ReservoirBuffer) -> None:
    assert a.n_seen == b.n_seen and len(a) == len(b)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.t, b.t)


# -- capacity, counting, fill order -----------------------------------------------------


def test_size_never_exceeds_capacity_and_n_seen_counts_every_sample():
    buf = ReservoirBuffer(capacity=7, seed=0)
    assert len(buf) == 0 and buf.n_seen == 0
    total = 0
    for batch in (1, 3, 2, 5, 4, 10):
        buf.add(*stream(total, batch))
        total += batch
        assert buf.n_seen == total
        assert len(buf) == min(total, 7) <= buf.capacity
        assert buf.x.shape == (len(buf), 1, 2, 2)
        assert buf.y.shape == buf.t.shape == (len(buf),)
        # every stored row is one of the offered rows, stored intact (x, y and t agree)
        assert ids_of(buf.x) == buf.y.tolist()
        assert set(buf.y.tolist()) <= set(range(total))
        assert len(set(buf.y.tolist())) == len(buf)  # no row stored twice


def test_first_capacity_samples_fill_the_buffer_in_order():
    buf = ReservoirBuffer(capacity=6, seed=3)
    buf.add(*stream(0, 2, task=1))
    buf.add(*stream(2, 4, task=2))
    assert len(buf) == 6 and buf.n_seen == 6
    assert buf.y.tolist() == [0, 1, 2, 3, 4, 5]
    assert ids_of(buf.x) == [0, 1, 2, 3, 4, 5]
    assert buf.t.tolist() == [1, 1, 2, 2, 2, 2]


def test_empty_buffer_has_no_images():
    buf = ReservoirBuffer(capacity=4, seed=0)
    with pytest.raises(ValueError, match="empty"):
        buf.x  # noqa: B018
    assert len(buf.y) == 0 and len(buf.t) == 0


def test_labels_and_tasks_are_stored_as_long_on_cpu():
    buf = ReservoirBuffer(capacity=4, seed=0)
    x, y, t = stream(0, 3)
    buf.add(x.requires_grad_(), y.int(), t.int())
    assert buf.y.dtype == torch.long and buf.t.dtype == torch.long
    assert not buf.x.requires_grad and buf.x.device.type == "cpu"


# -- uniformity ----------------------------------------------------------------------------


def test_reservoir_inclusion_is_uniform_over_the_stream():
    """Each of 50 items ends up in a 10-slot buffer with probability 10/50.

    Over R independent buffers (seeds 0..R-1) the inclusion count of one item is
    Binomial(R, p); its frequency has sd sqrt(p(1-p)/R) (~0.0103 for R=1500), and we
    allow 5 sd. That catches gross biases (e.g. "never replace" keeps the first 10
    items, restarting the count per batch favours late items); the subtler off-by-one
    in the replacement draw is the job of the next test.
    """
    n_items, capacity, reps = 50, 10, 1500
    p = capacity / n_items
    tol = 5 * math.sqrt(p * (1 - p) / reps)
    x, y, t = stream(0, n_items)
    counts = np.zeros(n_items)
    for seed in range(reps):
        buf = ReservoirBuffer(capacity, seed=seed)
        # offer in uneven batches: the result must not depend on how the stream is chunked
        for lo, hi in ((0, 1), (1, 13), (13, 14), (14, 50)):
            buf.add(x[lo:hi], y[lo:hi], t[lo:hi])
        stored = buf.y.numpy()
        assert len(stored) == capacity and len(np.unique(stored)) == capacity
        counts[stored] += 1
    freq = counts / reps
    worst = int(np.argmax(np.abs(freq - p)))
    assert np.all(np.abs(freq - p) <= tol), (
        f"item {worst} kept with frequency {freq[worst]:.3f}, expected {p} ± {tol:.3f}"
    )
    # first and second halves of the stream are equally represented overall
    assert abs(freq[:25].mean() - freq[25:].mean()) <= 5 * math.sqrt(p * (1 - p) / (reps * 25)) * math.sqrt(2)


def test_reservoir_keeps_the_item_just_past_capacity_with_probability_capacity_over_n():
    """Capacity 3, stream of 4: every item is kept with probability 3/4.

    A draw with an exclusive upper bound of ``n_seen`` instead of ``n_seen + 1`` (the
    classic off-by-one of algorithm R) would always store the 4th item and keep each of
    the first three with probability 2/3; 5 sd of the frequency is ~0.04 for R=3000.
    """
    capacity, n_items, reps = 3, 4, 3000
    p = capacity / n_items
    tol = 5 * math.sqrt(p * (1 - p) / reps)
    x, y, t = stream(0, n_items)
    counts = np.zeros(n_items)
    for seed in range(reps):
        buf = ReservoirBuffer(capacity, seed=seed)
        buf.add(x, y, t)
        counts[buf.y.numpy()] += 1
    freq = counts / reps
    assert np.all(np.abs(freq - p) <= tol), f"inclusion frequencies {freq}, expected {p} ± {tol:.3f}"


# -- determinism and checkpointing -----------------------------------------------------


def _fed(seed: int, n: int = 40, capacity: int = 8) -> ReservoirBuffer:
    buf = ReservoirBuffer(capacity, seed=seed)
    for start in range(0, n, 5):
        buf.add(*stream(start, 5, task=start // 10))
    return buf


def test_same_seed_gives_identical_buffer():
    a, b = _fed(seed=11), _fed(seed=11)
    assert_same_buffer(a, b)
    sa, sb = a.sample(5), b.sample(5)
    for u, v in zip(sa, sb):
        assert torch.equal(u, v)


def test_different_seeds_give_different_buffers():
    contents = {tuple(_fed(seed=s).y.tolist()) for s in range(5)}
    assert len(contents) > 1


def test_state_dict_round_trip_then_evolves_identically():
    original = _fed(seed=5, n=30)
    state = original.state_dict()
    restored = ReservoirBuffer(capacity=1, seed=999)  # deliberately different capacity and seed
    restored.load_state_dict(state)
    assert restored.capacity == original.capacity
    assert_same_buffer(original, restored)

    # both now see the same further data: replacement decisions and samples must agree
    for start in range(30, 90, 6):
        batch = stream(start, 6, task=7)
        original.add(*batch)
        restored.add(*batch)
        assert_same_buffer(original, restored)
        for u, v in zip(original.sample(4), restored.sample(4)):
            assert torch.equal(u, v)
    assert original.n_seen == restored.n_seen == 90


def test_state_dict_is_a_snapshot_not_a_view():
    buf = _fed(seed=2, n=20)
    state = buf.state_dict()
    saved_y = state["fields"]["y"].clone()
    buf.add(*stream(100, 50))
    assert torch.equal(state["fields"]["y"], saved_y)
    assert state["n_seen"] == 20


def test_state_dict_round_trip_of_partly_filled_and_empty_buffers():
    partly = ReservoirBuffer(capacity=10, seed=4)
    partly.add(*stream(0, 3))
    restored = ReservoirBuffer(capacity=10, seed=0)
    restored.load_state_dict(partly.state_dict())
    assert_same_buffer(partly, restored)
    more = stream(3, 20)
    partly.add(*more)
    restored.add(*more)
    assert_same_buffer(partly, restored)

    empty = ReservoirBuffer(capacity=3, seed=4)
    restored_empty = ReservoirBuffer(capacity=3, seed=0)
    restored_empty.load_state_dict(empty.state_dict())
    assert len(restored_empty) == 0 and restored_empty.n_seen == 0
    for b in (empty, restored_empty):
        b.add(*stream(0, 9))
    assert_same_buffer(empty, restored_empty)


# -- sampling -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 4, 8])
def test_sample_returns_n_distinct_stored_rows(n):
    buf = _fed(seed=1, n=40, capacity=8)
    stored = dict(zip(buf.y.tolist(), buf.t.tolist()))
    for _ in range(20):
        x, y, t = buf.sample(n)
        assert x.shape == (n, 1, 2, 2) and y.shape == t.shape == (n,)
        ids = ids_of(x)
        assert ids == y.tolist()  # rows kept together
        assert len(set(ids)) == n  # without replacement
        assert set(ids) <= set(stored)  # drawn from the stored rows
        assert [stored[i] for i in ids] == t.tolist()


def test_sample_returns_all_rows_when_fewer_are_stored():
    buf = ReservoirBuffer(capacity=10, seed=0)
    buf.add(*stream(0, 3))
    x, y, _ = buf.sample(8)
    assert len(x) == 3
    assert sorted(y.tolist()) == [0, 1, 2]


def test_sample_eventually_draws_every_stored_row():
    buf = _fed(seed=8, n=40, capacity=8)
    seen: set[int] = set()
    for _ in range(50):
        seen.update(buf.sample(2)[1].tolist())
    assert seen == set(buf.y.tolist())


# -- the ER plugin -------------------------------------------------------------------------


def _step(plugin: ReservoirReplayPlugin, batch):
    """One training iteration as the Avalanche template drives it; returns the minibatch seen by forward."""
    strategy = SimpleNamespace(mbatch=list(batch))
    plugin.before_forward(strategy)
    seen = [m.clone() for m in strategy.mbatch]
    plugin.after_training_iteration(strategy)
    return seen


def test_plugin_with_empty_buffer_leaves_minibatch_unchanged():
    plugin = ReservoirReplayPlugin(mem_size=20, batch_size_mem=4, seed=0)
    batch = stream(0, 5, task=0)
    strategy = SimpleNamespace(mbatch=list(batch))
    plugin.before_forward(strategy)
    assert len(strategy.mbatch) == 3
    for got, want in zip(strategy.mbatch, batch):
        assert torch.equal(got, want)
    plugin.after_training_iteration(strategy)
    # the incoming rows went into the buffer
    assert plugin.buffer.n_seen == 5 and plugin.buffer.y.tolist() == [0, 1, 2, 3, 4]


def test_plugin_appends_buffer_rows_and_stores_only_incoming_rows():
    plugin = ReservoirReplayPlugin(mem_size=12, batch_size_mem=4, seed=0)
    _step(plugin, stream(0, 6, task=0))
    _step(plugin, stream(6, 6, task=0))
    assert plugin.buffer.n_seen == 12 and len(plugin.buffer) == 12

    next_id = 12
    for it in range(8):
        before = dict(zip(plugin.buffer.y.tolist(), plugin.buffer.t.tolist()))
        n_seen_before = plugin.buffer.n_seen
        batch = stream(next_id, 5, task=1)
        x, y, t = _step(plugin, batch)

        # incoming rows first, unchanged; then batch_size_mem rows from the buffer
        assert x.shape[0] == y.shape[0] == t.shape[0] == 5 + 4
        assert torch.equal(x[:5], batch[0]) and torch.equal(y[:5], batch[1]) and torch.equal(t[:5], batch[2])
        replay_ids = ids_of(x[5:])
        assert replay_ids == y[5:].tolist()
        assert len(set(replay_ids)) == 4
        assert set(replay_ids) <= set(before)
        assert t[5:].tolist() == [before[i] for i in replay_ids]

        # the buffer was offered the 5 incoming rows only (not the replayed ones)
        assert plugin.buffer.n_seen == n_seen_before + 5
        new_ids = set(plugin.buffer.y.tolist()) - set(before)
        assert new_ids <= set(range(next_id, next_id + 5))
        assert len(plugin.buffer.y.unique()) == len(plugin.buffer)  # replayed rows not duplicated
        next_id += 5


def test_plugin_replays_all_stored_rows_when_fewer_than_batch_size_mem():
    plugin = ReservoirReplayPlugin(mem_size=50, batch_size_mem=10, seed=0)
    _step(plugin, stream(0, 3))
    x, y, _ = _step(plugin, stream(3, 4))
    assert len(x) == 4 + 3
    assert sorted(y[4:].tolist()) == [0, 1, 2]
    assert plugin.buffer.n_seen == 7


def test_plugin_state_dict_round_trip():
    a = ReservoirReplayPlugin(mem_size=6, batch_size_mem=3, seed=4)
    for start in range(0, 30, 5):
        _step(a, stream(start, 5))
    b = ReservoirReplayPlugin(mem_size=6, batch_size_mem=3, seed=123)
    b.load_state_dict(a.state_dict())
    for start in range(30, 60, 5):
        batch = stream(start, 5)
        for u, v in zip(_step(a, batch), _step(b, batch)):
            assert torch.equal(u, v)
    assert_same_buffer(a.buffer, b.buffer)


# -- the batched add() keeps algorithm R's draws ----------------------------------------------


class OneByOneReservoir:
    """Reference: algorithm R one sample at a time with torch.randint, as clsuite did before
    add() was batched; the batched add() must store the same rows and draw the same numbers."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity, self.n_seen, self.rows = capacity, 0, {}
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, x, y, t, **extras):
        for i in range(len(x)):
            if self.n_seen < self.capacity:
                slot = self.n_seen
            else:
                slot = int(torch.randint(0, self.n_seen + 1, (1,), generator=self.generator))
            self.n_seen += 1
            if slot < self.capacity:
                self.rows[slot] = (x[i].clone(), int(y[i]), int(t[i]), {k: v[i].clone() for k, v in extras.items()})


@pytest.mark.parametrize("capacity, seed", [(7, 0), (50, 3), (200, 11)])
def test_batched_add_matches_one_by_one_algorithm_r(capacity, seed):
    rng = np.random.default_rng(seed)
    buf, ref = ReservoirBuffer(capacity, seed), OneByOneReservoir(capacity, seed)
    start = 0
    for _ in range(60):
        b = int(rng.integers(1, 25))
        x, y, t = stream(start, b, task=start % 3)
        logits = torch.randn(b, 4)
        buf.add(x, y, t, logits=logits)
        ref.add(x, y, t, logits=logits)
        start += b
        assert buf.n_seen == ref.n_seen and len(buf) == len(ref.rows)
        for slot, (rx, ry, rt, extra) in ref.rows.items():
            assert torch.equal(buf.x[slot], rx) and int(buf.y[slot]) == ry and int(buf.t[slot]) == rt
            assert torch.equal(buf.field("logits")[slot], extra["logits"])
        # same generator state: the next draws (replay sampling) agree as well
        assert torch.equal(buf.generator.get_state(), ref.generator.get_state())
