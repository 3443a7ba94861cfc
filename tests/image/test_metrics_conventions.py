"""Metric conventions end to end on synthetic run folders (the fixture of test_report_extended):
both forgetting conventions in run_metrics, relative mCE beside mCE, OOD metrics under ID+ and
OOD+ in the tables, and the report's robustness and OOD sections naming both conventions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clsuite.core import matrix as acc
from test_report_extended import _evaluate, grid  # noqa: F401 (the module-scoped fixture)


def test_tables_hold_both_conventions(grid, tmp_path):  # noqa: F811
    params, data, tables = _evaluate(grid, True)
    rm = tables["run_metrics"].set_index(["run_id", "protocol", "metric"])["value"]
    mats = tables["accuracy_matrix"]
    for (run_id, protocol), m in mats.groupby(["run_id", "protocol"]):
        A = acc.to_matrix(m)
        assert rm[(run_id, protocol, "forgetting")] == pytest.approx(acc.forgetting(A))
        assert rm[(run_id, protocol, "forgetting_mammoth")] == pytest.approx(acc.forgetting_mammoth(A))
        assert rm[(run_id, protocol, "forgetting_mammoth")] >= max(rm[(run_id, protocol, "forgetting")], 0) - 1e-12
    rob = tables["robustness"]
    ref = rob[rob["method"] == params.metrics.reference_method]
    # the reference against itself: 1 wherever its degradation is > 0 (null otherwise, as documented)
    defined = ref["relative_mce"].dropna()
    assert len(defined) and np.allclose(defined, 1.0)
    ce = tables["corruption_error"]
    assert (ce["relative_ce"].isna() == (ce["reference_degradation_sum"] <= 0)).all()
    det = tables["ood_detection"]
    assert {"fpr95", "fpr95_out"} <= set(det.columns) and det["fpr95_out"].between(0, 1).all()
    extra = set(tables["extra_summary"]["metric"])
    assert {"relative_mce", "mce", "ood_fpr95_msp", "ood_fpr95_out_msp", "ood_aupr_out_energy"} <= extra
    assert "forgetting_mammoth" in set(tables["summary"]["metric"])

    from clsuite.image.report_sections import TABLES, Grid, Section, ood_detection, robustness

    section = Section(Grid.read(data), {n: pd.read_parquet(data / f"{n}.parquet") for n in TABLES}, tmp_path)
    text = "\n".join(robustness(section) + ood_detection(section))
    assert "*relative mCE*" in text and "*ID+*" in text and "*OOD+*" in text and "OpenOOD" in text
    rob_md = (tmp_path / "tables" / "robustness_toy_class_il.md").read_text()
    assert "mCE (%)" in rob_md and "Relative mCE (%)" in rob_md
    assert "relative mCE against replay\\_small" in (tmp_path / "tables" / "robustness_toy_class_il.tex").read_text()
    ood_md = (tmp_path / "tables" / "ood_toy.md").read_text()
    for head in ("AUROC (ID+ = OOD+)", "AUPR-In (ID+)", "AUPR-Out (OOD+)", "FPR@95TPR (ID+)", "FPR@95TPR (OOD+)"):
        assert head in ood_md, head
    assert "AUROC is the same for ID+ and OOD+" in (tmp_path / "tables" / "ood_toy.tex").read_text()
