"""Our record-based metrics agree with Avalanche's own metrics on the same run."""

from __future__ import annotations

import numpy as np
import pytest
from avalanche.evaluation.metrics import accuracy_metrics, bwt_metrics, forgetting_metrics
from avalanche.training.plugins import EvaluationPlugin

from clsuite.core import matrix as acc
from clsuite.image.records import read_records
from clsuite.image.train import train_run


@pytest.mark.parametrize("method", ["finetune", "replay"])
def test_accuracy_and_forgetting_match_avalanche(params, data_roots, tmp_path, method):
    _, prepared = data_roots
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True),
        forgetting_metrics(experience=True, stream=True),
        bwt_metrics(experience=True, stream=True),
        loggers=[],
    )
    run_dir = train_run(
        params, "smnist_smoke", method, 0, prepared, tmp_path,
        evaluator=evaluator, on_experience=lambda strategy, stream, k: strategy.eval(stream.test_stream),
    )
    A = acc.to_matrix(acc.accuracy_table(read_records(run_dir), "class_il"))
    T = A.shape[0]
    metrics = evaluator.get_all_metrics()

    # Avalanche's per-experience accuracy after each training experience = our A[i, j].
    for j in range(T):
        _, values = metrics[f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"]
        np.testing.assert_allclose(values, A[:, j], atol=1e-6, err_msg=f"accuracy on experience {j}")

    # Avalanche's forgetting (accuracy right after learning − now), per experience and stream.
    for j in range(T - 1):
        _, values = metrics[f"ExperienceForgetting/eval_phase/test_stream/Task000/Exp{j:03d}"]
        assert values[-1] == pytest.approx(A[j, j] - A[T - 1, j], abs=1e-6)
    _, stream_forgetting = metrics["StreamForgetting/eval_phase/test_stream"]
    assert stream_forgetting[-1] == pytest.approx(acc.avalanche_forgetting(A), abs=1e-6)
    _, stream_bwt = metrics["StreamBWT/eval_phase/test_stream"]
    assert stream_bwt[-1] == pytest.approx(acc.bwt(A), abs=1e-6)
