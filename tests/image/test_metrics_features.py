"""Feature-space metrics: covariance spectrum and effective rank against constructions
with known singular values (numpy), t-SNE subset and determinism, confusion counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clsuite.image.metrics import features as ft


def _features_with_singular_values(s: list[float], n: int = 50, seed: int = 0) -> np.ndarray:
    """(n, len(s)) features whose centered matrix has exactly the singular values ``s``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(s)))
    q, _ = np.linalg.qr(z - z.mean(axis=0))  # orthonormal, centered columns
    rot, _ = np.linalg.qr(rng.normal(size=(len(s), len(s))))
    return (q * np.asarray(s)) @ rot.T + 5.0  # an offset: the metrics must center


def test_spectrum_from_known_singular_values():
    s = [4.0, 2.0, 1.0, 0.0]
    x = _features_with_singular_values(s)
    expected = np.square(s) / (len(x) - 1)  # covariance eigenvalues σ² / (N − 1)
    np.testing.assert_allclose(ft.covariance_spectrum(x), expected, atol=1e-10)
    table = ft.spectrum_table(x)
    assert table["component"].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(table["explained"], expected / expected.sum(), atol=1e-12)


def test_spectrum_against_numpy_eig():
    x = np.random.default_rng(1).normal(size=(40, 6)) @ np.diag([3, 2, 1, 1, 0.5, 0.1])
    eig = np.sort(np.linalg.eig(np.cov(x.T))[0].real)[::-1]
    np.testing.assert_allclose(ft.covariance_spectrum(x), eig, rtol=1e-10)


def test_effective_rank_by_hand():
    # p = σ / Σσ = (3/4, 1/4): erank = exp(−(¾ ln ¾ + ¼ ln ¼))
    x = _features_with_singular_values([3.0, 1.0, 0.0])
    assert ft.effective_rank(x) == pytest.approx(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))
    assert ft.effective_rank(_features_with_singular_values([2.0, 2.0, 2.0, 2.0])) == pytest.approx(4.0)
    assert ft.effective_rank(_features_with_singular_values([5.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert ft.effective_rank(np.ones((10, 3))) is None  # no variance at all


def test_spectrum_needs_two_samples():
    with pytest.raises(ValueError, match="N >= 2"):
        ft.covariance_spectrum(np.zeros((1, 3)))


def test_tsne_caps_points_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (40, 8)), rng.normal(6, 1, (40, 8))]
    ids = np.arange(100, 180)[::-1].copy()
    a_ids, a = ft.tsne_embedding(x, ids, max_points=30, seed=3, max_iter=250)
    b_ids, b = ft.tsne_embedding(x, ids, max_points=30, seed=3, max_iter=250)
    assert len(a_ids) == 30 and np.all(np.diff(a_ids) > 0) and set(a_ids) <= set(ids)
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_array_equal(a, b)
    all_ids, emb = ft.tsne_embedding(x, ids, max_points=1000, seed=0, max_iter=500)
    assert len(all_ids) == 80 and emb.shape == (80, 2)
    # the two well-separated clusters stay apart: nearest neighbour of each point is in its cluster
    cluster = np.isin(all_ids, ids[:40])
    d = np.linalg.norm(emb[:, None] - emb[None], axis=2) + np.eye(80) * 1e9
    assert (cluster[d.argmin(1)] == cluster).all()


def test_confusion_table_by_hand():
    rec = pd.DataFrame({
        "train_exp": [0, 0, 1, 1, 1, 1, 1], "eval_set": ["clean"] * 6 + ["ood"],
        "y_true": [0, 1, 0, 0, 1, 1, -1], "y_pred": [0, 0, 0, 1, 1, 1, 0],
    })
    t = ft.confusion_table(rec)
    assert {(r.y_true, r.y_pred): r.count for r in t.itertuples()} == {(0, 0): 1, (0, 1): 1, (1, 1): 2}
    t0 = ft.confusion_table(rec, train_exp=0)
    assert {(r.y_true, r.y_pred): r.count for r in t0.itertuples()} == {(0, 0): 1, (1, 0): 1}
