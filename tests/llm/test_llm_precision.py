"""``protocol.precision: bf16``: the forward passes run under bf16 autocast (weights, gradients
and the loss in float32), the runs of every method finish with valid records, bf16 enters the
fingerprint, and the default fp32 leaves the fingerprint's inputs and the forward as they were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clsuite.llm.config import LLMParams
from clsuite.llm.encode import Encoded, collate
from clsuite.llm.loop import LLMStrategy
from clsuite.llm.prepare import prepare_sequence
from clsuite.llm.train import read_llm_records, run_dir_of, train_llm_run

from fakes.llm import repo_params, smoke_llm, tiny_llama  # noqa: E402

pytest.importorskip("transformers")


def _with_precision(llm: LLMParams, precision: str) -> LLMParams:
    raw = llm.model_dump()
    raw["sequences"]["llm_smoke"]["protocol"]["precision"] = precision
    return LLMParams.model_validate(raw)


@pytest.fixture(scope="module")
def llm():
    return smoke_llm(repo_params(), ["none", "fixed", "mssr", "sparse_memory", "cms"],
                     sparse_memory={"n_keys": 8, "k": 4, "top_t": 16}, cms={"chunk_sizes": [1, 2]})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, llm) -> Path:
    root = tmp_path_factory.mktemp("llm")
    return prepare_sequence("llm_smoke", llm.sequences["llm_smoke"], root / "raw", root / "prepared")


def _batch() -> dict[str, torch.Tensor]:
    """Three right-padded examples of 10-12 tokens (ids < 64), the last 4-6 of each labelled."""
    ids = [tuple(range(3 + i, 13 + 2 * i)) for i in range(3)]
    examples = [Encoded(("t", str(i)), x, (-100,) * 6 + x[6:]) for i, x in enumerate(ids)]
    return collate(examples, pad_id=0)


def test_bf16_forward_autocasts_and_keeps_the_loss_in_float32():
    """Against the float32 forward of the same model: the bf16 loss is close (bf16 has 8 bits of
    mantissa) but not equal, its logits and loss are float32 and the weights' gradients too."""
    model = tiny_llama(seed=1).train()
    batch = _batch()
    strat = {p: LLMStrategy(model, torch.optim.SGD(model.parameters(), lr=0.1), [], pad_id=0, batch_size=3, epochs=1,
                            device=torch.device("cpu"), autocast_dtype=dt)
             for p, dt in (("fp32", None), ("bf16", torch.bfloat16))}
    logits32, loss32, _ = strat["fp32"].forward_losses(batch)
    logits16, loss16, _ = strat["bf16"].forward_losses(batch)
    assert logits16.dtype == loss16.dtype == torch.float32
    assert not torch.equal(loss16, loss32), "the bf16 forward must differ from the float32 one"
    torch.testing.assert_close(loss16, loss32, rtol=0.05, atol=0.05)
    loss16.mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)
    # the default is the plain float32 forward: the logits of the kept positions equal the model's own
    keep = (batch["labels"][:, 1:] != -100).any(0).nonzero().flatten()
    with torch.no_grad():
        direct = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(logits32.detach(), direct[:, keep], rtol=0, atol=0)


def test_precision_is_validated_with_fp32_the_default(llm):
    raw = llm.model_dump()
    raw["sequences"]["llm_smoke"]["protocol"]["precision"] = "fp16"
    with pytest.raises(ValueError, match="precision"):
        LLMParams.model_validate(raw)
    assert llm.sequences["llm_smoke"].protocol.precision == "fp32"


@pytest.mark.parametrize("method", ["none", "fixed", "mssr", "sparse_memory", "cms"])
def test_bf16_runs_finish_with_their_own_fingerprint(llm, prepared, tmp_path, method):
    """A bf16 run of each kind (LoRA, LoRA + replay, MSSR's probes, the memory modules) finishes with a
    record for every stage, says so in its log, and its fingerprint differs from the fp32 run's, so
    switching the precision retrains instead of resuming the other precision's checkpoint."""
    runs = {}
    for precision in ("fp32", "bf16"):
        rd = train_llm_run(_with_precision(llm, precision), "llm_smoke", method, 0, prepared,
                           run_dir_of(tmp_path / precision, "llm_smoke", method, 0), threads=1, progress=False)
        recs = read_llm_records(rd)
        assert sorted(recs.stage.unique()) == [-1, 0, 1]
        assert json.loads((rd / "status.json").read_text())["state"] == "finished"
        runs[precision] = rd
    assert "forward passes in bf16" in (runs["bf16"] / "log.txt").read_text()
    assert "bf16" not in (runs["fp32"] / "log.txt").read_text()
    fps = {p: json.loads((rd / "checkpoint.json").read_text())["fingerprint"] for p, rd in runs.items()}
    assert fps["fp32"] != fps["bf16"]
