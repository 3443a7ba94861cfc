"""OOD detection metrics against scikit-learn (AUROC, AUPR-In/Out, FPR@95 via roc_curve)
and hand-computed examples, including tied scores; the score registry; the record rows used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from clsuite.core.errors import RegistryError
from clsuite.image.metrics import ood
from clsuite.core.registry import Registry

# small integer-valued scores, so that ties within and across the two sets are common
scores = hs.lists(hs.integers(-4, 4).map(float), min_size=1, max_size=40)


def _sk(known, out):
    y = np.r_[np.ones(len(known)), np.zeros(len(out))]
    return y, np.r_[known, out]


def _sk_fpr95(known, out) -> float:
    y, s = _sk(known, out)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return float(fpr[tpr >= 0.95].min())


@settings(max_examples=150, deadline=None)
@given(known=scores, out=scores)
def test_against_sklearn_with_ties(known, out):
    y, s = _sk(known, out)
    assert ood.auroc(known, out) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert ood.aupr_in(known, out) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert ood.aupr_out(known, out) == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
    assert ood.fpr_at_tpr(known, out) == pytest.approx(_sk_fpr95(known, out), abs=1e-12)


def test_continuous_scores_against_sklearn():
    rng = np.random.default_rng(0)
    known, out = rng.normal(1.0, 1.0, 500), rng.normal(0.0, 1.0, 300)
    y, s = _sk(known, out)
    assert ood.auroc(known, out) == pytest.approx(roc_auc_score(y, s))
    assert ood.aupr_in(known, out) == pytest.approx(average_precision_score(y, s))
    assert ood.aupr_out(known, out) == pytest.approx(average_precision_score(1 - y, -s))
    assert ood.fpr_at_tpr(known, out) == pytest.approx(_sk_fpr95(known, out))


def test_hand_computed_example_with_ties():
    known = np.array([0.1, 0.2, 0.2, 0.9])
    out = np.array([0.05, 0.1, 0.5])
    # AUROC: pairs (known > ood) + ½ ties over 12 pairs:
    # 0.1: > 0.05, = 0.1 → 1.5; 0.2 (×2): > 0.05, 0.1 → 2 each; 0.9: > all three → 3  ⇒ 8.5 / 12
    assert ood.auroc(known, out) == pytest.approx(8.5 / 12)
    # 95% of 4 known samples needs all 4: threshold 0.1, OOD scores ≥ 0.1 are 0.1 and 0.5 ⇒ 2/3
    assert ood.fpr_at_tpr(known, out) == pytest.approx(2 / 3)
    # AUPR-In: thresholds 0.9 (P=1, R=1/4), 0.5 (P=1/2, R=1/4), 0.2 (P=3/4, R=3/4), 0.1 (P=4/6, R=1), 0.05
    assert ood.aupr_in(known, out) == pytest.approx(0.25 * 1 + 0.5 * 0.75 + 0.25 * (4 / 6))


def test_perfect_and_reversed_detectors():
    known, out = np.array([2.0, 3.0]), np.array([0.0, 1.0])
    assert ood.detection_metrics(known, out) == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0,
                                                 "fpr95_out": 0.0}
    rev = ood.detection_metrics(out, known)
    assert rev["auroc"] == 0.0 and rev["fpr95"] == 1.0 and rev["fpr95_out"] == 1.0


def _sk_fpr95_ood_positive(known, out) -> float:
    """OpenOOD's FPR@95: OOD positive, score −s, first roc_curve point with TPR ≥ 0.95."""
    y_ood = np.r_[np.zeros(len(known)), np.ones(len(out))]
    fpr, tpr, _ = roc_curve(y_ood, -np.r_[known, out], drop_intermediate=False)
    return float(fpr[np.argmax(tpr >= 0.95)])


@pytest.mark.parametrize("seed", range(5))
def test_both_conventions_against_sklearn_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    known, out = rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.5, 150)
    y_id = np.r_[np.ones(len(known)), np.zeros(len(out))]
    s = np.r_[known, out]
    m = ood.detection_metrics(known, out)
    # ID+ (Hendrycks & Gimpel): known positive, ranked by s
    assert m["aupr_in"] == pytest.approx(average_precision_score(y_id, s), abs=1e-12)
    assert m["fpr95"] == pytest.approx(_sk_fpr95(known, out), abs=1e-12)
    # OOD+ (OpenOOD): OOD positive, ranked by −s
    assert m["aupr_out"] == pytest.approx(average_precision_score(1 - y_id, -s), abs=1e-12)
    assert m["fpr95_out"] == pytest.approx(_sk_fpr95_ood_positive(known, out), abs=1e-12)
    # AUROC does not depend on the convention
    assert m["auroc"] == pytest.approx(roc_auc_score(y_id, s)) == pytest.approx(roc_auc_score(1 - y_id, -s))
    assert set(m) == set(ood.CONVENTIONS)


@settings(max_examples=100, deadline=None)
@given(known=scores, out=scores)
def test_ood_positive_fpr95_against_sklearn_with_ties(known, out):
    assert ood.fpr_at_tpr_ood_positive(known, out) == pytest.approx(_sk_fpr95_ood_positive(known, out), abs=1e-12)


def test_the_two_fpr95_conventions_differ_by_hand():
    known = np.array([0.1, 0.2, 0.2, 0.9])
    out = np.array([0.05, 0.1, 0.5])
    # ID+: keep all 4 known (t = 0.1) ⇒ OOD accepted: 0.1, 0.5 ⇒ 2/3 (test_hand_computed_example_with_ties)
    assert ood.fpr_at_tpr(known, out) == pytest.approx(2 / 3)
    # OOD+: flag ≥ 95% of 3 OOD = all 3 (s ≤ 0.5) ⇒ known flagged: 0.1, 0.2, 0.2 ⇒ 3/4
    assert ood.fpr_at_tpr_ood_positive(known, out) == pytest.approx(3 / 4)


def test_score_names_whose_metric_names_clash_are_rejected():
    with pytest.raises(ValueError, match="ood_fpr95_out_msp"):
        ood.check_metric_names(["msp", "out_msp"])
    ood.check_metric_names(["msp", "energy", "max_logit"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="non-empty"):
        ood.auroc(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError, match="finite"):
        ood.fpr_at_tpr(np.array([np.nan]), np.array([1.0]))


def _records() -> pd.DataFrame:
    """Stage 0 and 1 of a 2-experience run with 2 classes each; 3 OOD samples per stage."""
    rows = []
    logits = {  # (stage, eval_set, eval_exp, sample) -> logits over 4 classes
        (0, "clean", 0, 0): [3, 0, 0, 0], (0, "clean", 0, 1): [0, 1, 0, 0],
        (0, "clean", 1, 2): [9, 0, 0, 0],  # unseen experience at stage 0: not a known sample
        (0, "ood", -1, 0): [0.5, 0, 0, 0], (0, "ood", -1, 1): [2, 0, 0, 0], (0, "ood", -1, 2): [0, 0, 0, 0],
        (1, "clean", 0, 0): [1, 0, 0, 0], (1, "clean", 1, 2): [0, 0, 4, 0],
        (1, "ood", -1, 0): [0, 0, 1, 0], (1, "ood", -1, 1): [0, 0, 0, 0], (1, "ood", -1, 2): [5, 0, 0, 0],
    }
    for (stage, es, exp, sid), lg in logits.items():
        lg = np.array(lg, dtype=np.float32)
        p = np.exp(lg - lg.max()) / np.exp(lg - lg.max()).sum()
        rows.append({"train_exp": stage, "eval_set": es, "eval_exp": exp, "sample_id": sid,
                     "y_true": -1 if es == "ood" else 0, "confidence": np.float32(p.max()),
                     "energy": np.float32(np.log(np.exp(lg).sum())),
                     **{f"logit_{k}": lg[k] for k in range(4)}})
    return pd.DataFrame(rows)


def test_ood_table_uses_seen_clean_rows_and_the_ood_rows_of_each_stage():
    rec = _records()
    table = ood.ood_table(rec, ["msp", "max_logit"]).set_index(["train_exp", "score"])
    assert table.loc[(0, "msp"), "n_known"] == 2 and table.loc[(0, "msp"), "n_ood"] == 3
    assert table.loc[(1, "msp"), "n_known"] == 2
    # max logit at stage 0: known [3, 1], ood [0.5, 2, 0] → pairs won: 3 beats all 3; 1 beats 0.5 and 0 ⇒ 5/6
    assert table.loc[(0, "max_logit"), "auroc"] == pytest.approx(5 / 6)
    known, out = ood.known_and_ood(rec, 0)
    assert table.loc[(0, "msp"), "auroc"] == pytest.approx(
        roc_auc_score(np.r_[np.ones(2), np.zeros(3)], np.r_[known["confidence"], out["confidence"]]))


def test_score_registry_has_the_builtins_and_takes_new_scores(monkeypatch):
    assert {"msp", "energy", "max_logit"} <= set(ood.OOD_SCORES.names())
    rec = _records()
    np.testing.assert_allclose(ood.OOD_SCORES.get("max_logit")(rec), rec.filter(like="logit_").max(axis=1))
    scratch = Registry("OOD score", "clsuite.ood_scores")  # keep the global registry unchanged
    for n in ood.OOD_SCORES.names():
        scratch.register(n, ood.OOD_SCORES.get(n))
    monkeypatch.setattr(ood, "OOD_SCORES", scratch)
    name = "neg_logit_0"
    ood.register_ood_score(name)(lambda r: -r["logit_0"].to_numpy(dtype=float))
    t = ood.ood_table(rec, [name])
    assert set(t["score"]) == {name} and len(t) == 2
    with pytest.raises(RegistryError, match="unknown OOD score"):
        ood.ood_table(rec, ["nope"])


def test_msp_histogram_counts():
    rec = _records()
    h = ood.msp_histogram(rec, 0, bins=4)
    known, out = ood.known_and_ood(rec, 0)
    for name, rows in (("known", known), ("ood", out)):
        counts, _ = np.histogram(rows["confidence"], bins=np.linspace(0, 1, 5))
        assert h[h["set"] == name]["count"].tolist() == counts.tolist()
    assert h["count"].sum() == 5


def test_no_ood_rows_gives_an_empty_table():
    rec = _records()
    assert ood.ood_table(rec[rec["eval_set"] != "ood"]).empty
