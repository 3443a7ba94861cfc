"""`clsuite llm-train --sequence S` (the llm_train stage: one per sequence) trains every method x
seed of llm.grid, several at once in forked processes: each run's records are byte-identical to
that run trained alone; a finished, unchanged run returns without loading the model, and a run
whose method params changed trains again. The loss computed on the answer positions only
(``logits_to_keep``) equals the loss of every position's logits, gradients included."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

from clsuite.cli import main
from clsuite.llm.prepare import prepare_sequence

from fakes.llm import repo_params, smoke_llm  # noqa: E402

pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parents[2]
linux = pytest.mark.skipif(sys.platform != "linux", reason="parallel runs fork (Linux only)")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working folder with params for llm_smoke x {none, fixed} x seed 0 and its prepared data."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["llm"]["grid"] = {"sequences": ["llm_smoke"], "methods": ["none", "fixed"], "seeds": [0]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    llm = smoke_llm(repo_params(), ["none", "fixed"])
    prepare_sequence("llm_smoke", llm.sequences["llm_smoke"], tmp_path / "raw",
                     tmp_path / "data" / "prepared_text" / "llm_smoke")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLSUITE_WARM", "0")
    return tmp_path


def _digest(run_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((run_dir / "records").iterdir())}


@linux
def test_grid_runs_in_parallel_equal_runs_alone(project, capfd):
    runs = project / "data" / "llm_runs" / "llm_smoke"
    assert main(["llm-train", "--sequence", "llm_smoke", "--jobs", "2"]) == 0
    out = capfd.readouterr()
    assert "2 runs, 2 at a time" in out.out and "[llm_smoke/fixed/seed0] " in out.out
    together = {m: _digest(runs / m / "seed0") for m in ("none", "fixed")}
    os.rename(runs, runs.with_name("together"))
    for m in ("none", "fixed"):
        assert main(["llm-train", "--sequence", "llm_smoke", "--method", m, "--seed", "0"]) == 0
    assert {m: _digest(runs / m / "seed0") for m in ("none", "fixed")} == together
    assert len(together["none"]) == 3 and together["none"] != together["fixed"]


def test_finished_run_returns_without_loading_the_model_and_a_changed_one_retrains(project, monkeypatch):
    import clsuite.llm.train as llm_train

    assert main(["llm-train", "--sequence", "llm_smoke", "--jobs", "1"]) == 0
    runs = project / "data" / "llm_runs" / "llm_smoke"
    before = {m: _digest(runs / m / "seed0") for m in ("none", "fixed")}
    stamps = {m: (runs / m / "seed0" / "status.json").stat().st_mtime_ns for m in ("none", "fixed")}
    real = llm_train.load_base
    loaded = []
    monkeypatch.setattr(llm_train, "load_base", lambda *a, **k: loaded.append(1) or real(*a, **k))
    assert main(["llm-train", "--sequence", "llm_smoke", "--jobs", "1"]) == 0
    assert loaded == [] and {m: _digest(runs / m / "seed0") for m in before} == before
    assert {m: (runs / m / "seed0" / "status.json").stat().st_mtime_ns for m in stamps} == stamps
    assert "up to date" in (runs / "none" / "seed0" / "log.txt").read_text()
    # one method's params change: only its run trains (from scratch: its checkpoint is foreign)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["llm"]["methods"]["fixed"]["ratio"] = 0.25
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["llm-train", "--sequence", "llm_smoke", "--jobs", "1"]) == 0
    assert len(loaded) == 1
    assert (runs / "none" / "seed0" / "status.json").stat().st_mtime_ns == stamps["none"]
    assert (runs / "fixed" / "seed0" / "status.json").stat().st_mtime_ns != stamps["fixed"]


def test_one_run_needs_method_and_seed(project, capfd):
    assert main(["llm-train", "--sequence", "llm_smoke", "--method", "none"]) == 2
    assert "give both --method and --seed" in capfd.readouterr().err


def test_answer_positions_by_hand():
    from clsuite.llm.encode import answer_positions

    labels = torch.tensor([[-100, -100, 5, 6, -100],    # tokens 2, 3 labelled: predicted at 1, 2
                           [-100, -100, -100, -100, 7]])  # token 4: predicted at 3
    assert answer_positions(labels).tolist() == [1, 2, 3]
    assert answer_positions(torch.full((2, 4), -100)).tolist() == []


def test_loss_on_answer_positions_equals_loss_on_every_position():
    """The strategy's loss (logits only where the next token is labelled) and its gradient equal
    those of the full (B, L, V) logits through :func:`per_sample_loss` (the reference)."""
    from clsuite.llm.encode import Encoded, collate, per_sample_loss
    from clsuite.llm.loop import LLMStrategy, accepts_logits_to_keep
    from clsuite.llm.model import byte_tokenizer, tiny_llama

    tok = byte_tokenizer()
    model = tiny_llama(tok, 32, 2, seed=5).train()
    assert accepts_logits_to_keep(model)
    rows = [Encoded(("t", str(i)), tuple(range(3, 3 + n)) + (40, 41), (-100,) * n + (40, 41)) for i, n in
            enumerate((4, 9, 6))]
    batch = collate(rows, tok.pad_token_id)
    strategy = LLMStrategy(model, torch.optim.SGD(model.parameters(), lr=0.1), [], pad_id=tok.pad_token_id,
                           batch_size=3, epochs=1, device=torch.device("cpu"))
    logits, loss, acc = strategy.forward_losses(batch)
    assert logits.shape[1] == 6 < batch["input_ids"].shape[1]  # positions 3..4, 8..9, 5..6 -> {3,4,5,6,8,9}
    loss.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ref_loss, ref_acc = per_sample_loss(full, batch["labels"])
    ref_loss.sum().backward()
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(acc, ref_acc)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, msg=n)
