"""``avalanche.streaming_lda``: the streaming means, covariance and LDA scores equal Avalanche's own
``StreamingLDA.fit``/``predict`` on the same samples in the same order; a run on smnist_smoke
never takes a gradient step, forgets nothing it fitted and resumes with identical records."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from clsuite.image.records import read_records
from clsuite.image.train import train_run
from clsuite.methods.avalanche.slda import SLDAModel

from fakes.train import Crash, crash_after


def test_fit_and_scores_equal_avalanche_streaming_lda():
    from avalanche.training.supervised import StreamingLDA

    torch.manual_seed(0)
    d, k = 6, 3
    x, y = torch.randn(40, d), torch.randint(0, k, (40,))
    ref = StreamingLDA(slda_model=nn.Identity(), criterion=nn.CrossEntropyLoss(), input_size=d, num_classes=k,
                       shrinkage_param=1e-2, device="cpu", evaluator=None)
    for i in range(len(x)):
        ref.fit(x[i:i + 1], y[i:i + 1])
    ours = SLDAModel(nn.Identity(), k, d, "pixels", 1e-2, True).eval()
    ours.fit(x[:25], y[:25])
    ours.fit(x[25:], y[25:])  # batches do not matter: one sample at a time, in order
    torch.testing.assert_close(ours.mu, ref.muK)
    torch.testing.assert_close(ours.count, ref.cK)
    torch.testing.assert_close(ours.sigma, ref.Sigma)
    probe = torch.randn(10, d)
    torch.testing.assert_close(ours(probe), ref.predict(probe), rtol=1e-4, atol=1e-4)


def test_run_takes_no_gradient_step_and_resumes_with_identical_records(params, data_roots, tmp_path):
    _, prepared = data_roots
    method = "avalanche.streaming_lda"
    p = params.model_copy(update={"methods": {**params.methods, "slda": {"type": method}}})
    ref_dir = train_run(p, "smnist_smoke", "slda", 0, prepared, tmp_path / "ref")
    ref = read_records(ref_dir)
    state = torch.load(ref_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    assert int(state["updates"]) == int(state["count"].sum()) > 0
    last = ref[(ref["train_exp"] == 4) & (ref["eval_set"] == "clean")]
    assert (last["y_pred"] == last["y_true"]).mean() > 0.5  # LDA on pixels: the fitted means are not forgotten
    with pytest.raises(Crash):
        train_run(p, "smnist_smoke", "slda", 0, prepared, tmp_path / "cut", on_experience=crash_after(1))
    run_dir = train_run(p, "smnist_smoke", "slda", 0, prepared, tmp_path / "cut")
    assert "resuming from checkpoint after experience 2/5" in (run_dir / "log.txt").read_text()
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)
