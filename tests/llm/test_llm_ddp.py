"""Data-parallel LLM runs (clsuite/llm/distributed.py) on CPU with gloo, 2 processes, tiny Llama.

One 2-process launch (module fixture) runs the loop with fixed replay, MSSR, CMS and sparse
memory, then a whole ``train_llm_run``. The 2-process runs must follow the 1-process ones:
the same minibatches and replay decisions, the same per-sample losses (gathered back into
full minibatches) and, at the end, the same weights and MSSR memory — identical across
ranks, equal up to float rounding to the single process. Only rank 0 writes into the run folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clsuite.core.runs import read_status
from clsuite.llm.distributed import DistInfo, agree, env_info, init_group, launch, shard_bounds
from clsuite.llm.encode import Encoded
from clsuite.llm.loop import LLMStrategy, TextExperience
from clsuite.llm.methods import FixedConfig, LLMContext, MSSRConfig, build_fixed, build_mssr
from clsuite.config import read_params_raw

BATCH = 3  # + 2 replayed rows = 5: unequal shards; a last minibatch of 1 row leaves rank 1 empty
REPLAY = {"fixed": (build_fixed, FixedConfig(mem_per_task=4, ratio=0.5, interval=1)),
          "mssr": (build_mssr, MSSRConfig(formulation="clsuite_v1", mem_per_task=4, r0=0.5, r_min=0.5, i0=1.0,
                                               growth=1.5))}
METHODS = [*REPLAY, "cms", "sparse_memory"]  # the memory modules reach into strategy.model


def test_shards_cover_rows_in_order():
    for n in range(0, 9):
        for world in (1, 2, 3):
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def _examples(task: int, n: int) -> list[Encoded]:
    rng = np.random.default_rng([5, task])
    out = []
    for i in range(n):
        k = int(rng.integers(6, 12))
        ids = tuple(int(t) for t in rng.integers(2, 258, size=k))
        out.append(Encoded((f"t{task}", str(i)), ids, (-100,) * (k // 2) + ids[k // 2:]))
    return out


class _Recorder:
    """Per iteration: the minibatch keys, the replayed slots and the (B,) losses/accuracies."""

    def __init__(self, replay) -> None:
        self.replay, self.rows = replay, []

    def after_forward(self, strategy) -> None:
        replayed = [] if self.replay is None else self.replay.replay_idx.tolist()
        self.rows.append({"keys": [e.key for e in strategy.mb_examples], "replayed": replayed,
                          "loss": strategy.sample_losses.detach().clone(), "acc": strategy.sample_acc.clone(),
                          "loss_requires_grad": strategy.sample_losses.requires_grad})


def _run_loop(method: str, info: DistInfo) -> dict:
    """Train a tiny Llama (full weights, SGD, grad clip) on 2 tasks of 7 examples with ``method``."""
    from clsuite.llm.model import byte_tokenizer, tiny_llama

    tok = byte_tokenizer()
    model = tiny_llama(tok, 16, 1, seed=0)
    replay = None
    if method in REPLAY:
        build, cfg = REPLAY[method]
        plugin = replay = build(cfg, LLMContext(seed=0, batch_size=BATCH, n_tasks=2))[0]
    elif method == "cms":  # blocks due every 1 and 2 steps: grad = None for the other after DDP's all-reduce
        from clsuite.llm.memory.cms import CMSConfig, CMSPlugin

        plugin = CMSPlugin(CMSConfig(layer=0, chunk_sizes=(1, 2), hidden=16))
    else:  # top_t 5 of the slots the whole minibatch accessed: needs every rank's lookup indices
        from clsuite.llm.memory.sparse import SparseMemoryConfig, SparseMemoryPlugin

        background = [torch.randint(2, 40, (2, 8), generator=torch.Generator().manual_seed(i)) for i in range(3)]
        plugin = SparseMemoryPlugin(SparseMemoryConfig(n_keys=8, k=4, top_t=5, lr=0.5), background_batches=background)
    params = list(model.parameters())
    if replay is None:
        model = plugin.prepare_model(model)
        params = plugin.trainable_parameters(model)
    rec = _Recorder(replay)
    opt = torch.optim.SGD(params, lr=0.5)
    strat = LLMStrategy(model, opt, [plugin, rec], pad_id=tok.pad_token_id, batch_size=BATCH, epochs=1,
                        device=torch.device("cpu"), grad_clip=1.0, seed=0, dist=info)
    for k in range(2):
        strat.train(TextExperience(k, f"t{k}", _examples(k, 7)))
    return {"weights": {n: p.detach().clone() for n, p in model.named_parameters()},
            "plugin": plugin.state_dict(), "rows": rec.rows}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """(llm params, the prepared llm_smoke sequence, a scratch folder)."""

    from clsuite.llm.config import LLMParams
    from clsuite.llm.prepare import prepare_sequence

    raw = read_params_raw(Path(__file__).resolve().parents[2] / "params.yaml")["llm"]
    raw["grid"] = {"sequences": ["llm_smoke"], "methods": ["mssr"], "seeds": [0]}
    llm = LLMParams.model_validate(raw)
    root = tmp_path_factory.mktemp("ddp")
    return llm, prepare_sequence("llm_smoke", llm.sequences["llm_smoke"], root / "raw", root / "prepared"), root


def _with_processes(llm, n: int):
    seq = llm.sequences["llm_smoke"]
    return llm.model_copy(update={"sequences": {"llm_smoke": seq.model_copy(
        update={"protocol": seq.protocol.model_copy(update={"processes": n})})}})


def _worker(out: Path, llm, prepared: Path, runs: Path) -> None:
    """One rank (started by :func:`launch`, torchrun env vars set): the loop with each method,
    then ``train_llm_run``, which joins the group; writes under ``runs`` are audited."""
    from clsuite.llm.train import run_dir_of, train_llm_run

    info = env_info()
    torch.set_num_threads(1)
    init_group(info, torch.device("cpu"))
    cpu = torch.device("cpu")
    results = {m: _run_loop(m, info) for m in METHODS}
    results["agree"] = (agree(5, info, cpu), agree(info.rank, info, cpu))
    torch.save(results, out / f"rank{info.rank}.pt")
    writes: list = []
    _writes_under(runs, writes)
    train_llm_run(llm, "llm_smoke", "mssr", 0, prepared, run_dir_of(runs, "llm_smoke", "mssr", 0), threads=1,
                  progress=False)
    (out / f"writes{info.rank}.txt").write_text("\n".join(f"{e} {p}" for e, p in writes))


@pytest.fixture(scope="module")
def two_ranks(smoke):
    """The 2-process results: out folder (rank<r>.pt, writes<r>.txt) and the runs folder."""
    llm, prepared, root = smoke
    out = root / "out"
    out.mkdir()
    launch(2, _worker, out, _with_processes(llm, 2), prepared, root / "two")
    return out, root / "two"


@pytest.fixture(scope="module")
def loop_runs(two_ranks):
    """({method: result} of one process, [{method: result} of rank 0, rank 1])."""
    out, _ = two_ranks
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = {m: _run_loop(m, DistInfo()) for m in METHODS}
    finally:
        torch.set_num_threads(threads)
    return single, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_end_with_the_single_process_weights(loop_runs, method):
    single, ranks = loop_runs
    w1 = single[method]["weights"]
    w0 = _initial_weights(method)
    assert max(float((w1[n] - p0).abs().max()) for n, p0 in w0.items()) > 1e-3  # the run trained
    for r in ranks:
        assert w1.keys() == r[method]["weights"].keys()
        for n, w in r[method]["weights"].items():
            assert torch.allclose(w, w1[n], atol=1e-5, rtol=0), n
    for n, w in ranks[0][method]["weights"].items():  # ranks agree exactly (DDP: identical updates)
        assert torch.equal(w, ranks[1][method]["weights"][n]), n


def _initial_weights(method: str) -> dict[str, torch.Tensor]:
    from clsuite.llm.model import byte_tokenizer, tiny_llama

    model = tiny_llama(byte_tokenizer(), 16, 1, seed=0)
    if method == "cms":
        from clsuite.llm.memory.cms import CMSConfig, CMSPlugin

        model = CMSPlugin(CMSConfig(layer=0, chunk_sizes=(1, 2), hidden=16)).prepare_model(model)
    elif method == "sparse_memory":
        from clsuite.llm.memory.sparse import SparseMemoryConfig, SparseMemoryPlugin

        model = SparseMemoryPlugin(SparseMemoryConfig(n_keys=8, k=4, top_t=5, lr=0.5)).prepare_model(model)
    return {n: p.detach() for n, p in model.named_parameters()}


@pytest.mark.parametrize("method", METHODS)
def test_gathered_losses_and_replay_match_the_single_process(loop_runs, method):
    single, ranks = loop_runs
    rows1 = single[method]["rows"]
    sizes = [len(r["keys"]) for r in rows1]
    assert len(rows1) == 6 and 1 in sizes  # a minibatch of one row: rank 1's shard is empty
    if method in REPLAY:
        assert 5 in sizes and sum(len(r["replayed"]) for r in rows1) > 0  # 3 + 2 replayed: unequal shards
    for rank in ranks:
        rows = rank[method]["rows"]
        assert [r["keys"] for r in rows] == [r["keys"] for r in rows1]  # same minibatches
        assert [r["replayed"] for r in rows] == [r["replayed"] for r in rows1]  # same replay decisions
        for a, b in zip(rows, rows1):
            assert a["loss"].shape == b["loss"].shape == (len(b["keys"]),)
            assert torch.allclose(a["loss"], b["loss"], atol=1e-5, rtol=0)
            assert torch.allclose(a["acc"], b["acc"], atol=1e-6, rtol=0)
            assert a["loss_requires_grad"]
    for a, b in zip(ranks[0][method]["rows"], ranks[1][method]["rows"]):  # every plugin sees the same values
        assert torch.equal(a["loss"], b["loss"]) and torch.equal(a["acc"], b["acc"])


def test_ranks_check_that_they_agree(loop_runs):
    _, ranks = loop_runs
    assert [r["agree"] for r in ranks] == [(True, False), (True, False)]


def test_mssr_memory_identical_on_both_ranks(loop_runs):
    single, ranks = loop_runs
    m0, m1, ms = (x["mssr"]["plugin"] for x in (*ranks, single))
    assert len(m0["memory"]["loss"]) == 8 and m0["memory"]["reviews"].sum() > 0
    for key in ("last", "stability", "loss", "reviews"):
        np.testing.assert_array_equal(m0["memory"][key], m1["memory"][key])
        np.testing.assert_allclose(m0["memory"][key], ms["memory"][key], rtol=0, atol=1e-5)
    assert m0["schedule"] == m1["schedule"] == ms["schedule"]
    assert m0["rng"] == m1["rng"] == ms["rng"] and m0["replayed"] == ms["replayed"]


# ---------------------------------------------------------------- train_llm_run, 2 processes
def _writes_under(root: Path, log: list) -> None:
    """An audit hook recording file-system writes under ``root`` (open for writing, rename, …)."""
    root_s = str(root)

    def hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path, mode, flags = args[0], args[1], args[2]
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing and os.fsdecode(path).startswith(root_s):
                log.append((event, os.fsdecode(path)))
        elif event in ("os.rename", "os.remove", "os.mkdir", "shutil.rmtree", "os.rmdir") and args:
            if os.fsdecode(args[0]).startswith(root_s):
                log.append((event, os.fsdecode(args[0])))

    sys.addaudithook(hook)


def test_train_run_in_two_processes_writes_the_single_process_records_from_rank_0_only(smoke, two_ranks):
    from clsuite.llm.train import read_llm_records, run_dir_of, train_llm_run

    llm, prepared, root = smoke
    out, runs = two_ranks
    threads = torch.get_num_threads()
    try:
        one = train_llm_run(llm, "llm_smoke", "mssr", 0, prepared, run_dir_of(root / "one", "llm_smoke", "mssr", 0),
                            threads=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    two = run_dir_of(runs, "llm_smoke", "mssr", 0)
    pd.testing.assert_frame_equal(read_llm_records(two), read_llm_records(one))
    tasks1, tasks2 = pd.read_parquet(one / "tasks.parquet"), pd.read_parquet(two / "tasks.parquet")
    assert tasks2[["n_steps", "n_examples", "n_replayed"]].equals(tasks1[["n_steps", "n_examples", "n_replayed"]])
    assert (two / "checkpoint.pt").exists() and "data parallel over 2 processes" in (two / "log.txt").read_text()
    # rank 0 wrote the records, status, log and checkpoint; rank 1 nothing at all
    writes0, writes1 = (out / "writes0.txt").read_text(), (out / "writes1.txt").read_text()
    assert "status.json" in writes0 and "checkpoint.pt" in writes0 and "log.txt" in writes0
    assert "records" in writes0
    assert writes1 == ""


def test_processes_key_dispatches_to_spawned_workers(smoke, monkeypatch, tmp_path):
    import clsuite.llm.train as llm_train

    llm, prepared, _ = smoke
    seq = llm.sequences["llm_smoke"]
    llm2 = _with_processes(llm, 3)
    calls = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(llm_train, "launch", lambda world, fn, *args: calls.append((world, fn, args)))
    assert llm_train.train_llm_run(llm2, "llm_smoke", "mssr", 0, prepared, tmp_path / "r") == tmp_path / "r"
    assert calls and calls[0][0] == 3 and calls[0][1] is llm_train._spawned_run
    assert list((tmp_path / "r").iterdir()) == []  # the launcher writes nothing (it held the run lock, now gone)
    world, fn, args = calls[0]
    monkeypatch.setenv("WORLD_SIZE", "1")  # what a worker receives, run here as a world of one
    threads = torch.get_num_threads()
    try:
        fn(*args)
    finally:
        torch.set_num_threads(threads)
    assert read_status(tmp_path / "r", unit="tasks").state == "finished"
    assert seq.protocol.processes == 1  # the default: today's single-process path


def _fail_on_rank_1() -> None:
    from clsuite.core.errors import TrainingDiverged

    if env_info().rank == 1:
        raise TrainingDiverged("non-finite loss on rank 1", iteration=3)


def test_a_workers_exception_reaches_the_launcher_with_its_type():
    from clsuite.core.errors import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="rank 1") as info:
        launch(2, _fail_on_rank_1)
    assert info.value.status == {"iteration": 3}


def test_a_workers_error_file_is_data_only():
    """The launcher rebuilds only clsuite's own error classes from a worker's JSON error file:
    any other type name (a builtin, a dotted path) is not looked up or constructed."""
    from clsuite.core.errors import ParamsError, TrainingDiverged
    from clsuite.llm.distributed import _exception_fields, _rebuild_exception

    diverged = _rebuild_exception(_exception_fields(TrainingDiverged("nan", iteration=3)))
    assert type(diverged) is TrainingDiverged and diverged.status == {"iteration": 3} and str(diverged) == "nan"
    assert type(_rebuild_exception({"type": "ParamsError", "message": "bad"})) is ParamsError
    for name in ("ValueError", "os.system", "subprocess.Popen", "__import__", None):
        assert _rebuild_exception({"type": name, "message": "rm -rf /"}) is None
