"""Feature-space views of a finished run: covariance spectrum, effective rank, t-SNE,
and the final class-IL confusion matrix.

The features are the model's penultimate-layer outputs ``model.features(x)`` on the clean
test split after the last experience, written once by the train stage
(``features.npy``, float32 (N, D), and ``feature_ids.npy``, int64 (N,) test rows;
:func:`clsuite.image.records.read_features`).

- spectrum: eigenvalues of the feature covariance (centered, ddof = 1), descending, and
  each one's share of the trace;
- effective rank (Roy & Vetterli 2007): exp(H(p)) with p_k = σ_k / Σ σ, σ the singular
  values of the *centered feature matrix* (N, D) and H the Shannon entropy (nats);
  σ_k = sqrt((N − 1) λ_k), so this is computed from the square roots of the covariance
  eigenvalues, not from the eigenvalues themselves. Lies in [1, min(N, D)];
- t-SNE (scikit-learn, fixed ``random_state``, PCA init) of at most ``max_points``
  samples chosen with a seeded generator.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clsuite.core.matrix import CLEAN


def covariance_spectrum(features: np.ndarray) -> np.ndarray:
    """Eigenvalues (D,) float64, descending, of the covariance of ``features`` (N, D), N ≥ 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {x.shape}")
    eig = np.linalg.eigvalsh(np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]))
    return np.clip(eig[::-1], 0.0, None)  # tiny negative round-off → 0


def effective_rank(features: np.ndarray) -> float | None:
    """exp(entropy of σ / Σσ), σ = singular values of the centered features; None if all σ = 0."""
    x = np.asarray(features, dtype=np.float64)
    sigma = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    total = sigma.sum()
    if total <= 0:
        return None
    p = sigma[sigma > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def spectrum_table(features: np.ndarray) -> pd.DataFrame:
    """Columns component (0 = largest), eigenvalue, explained (eigenvalue / trace; 0 if trace 0)."""
    eig = covariance_spectrum(features)
    trace = eig.sum()
    return pd.DataFrame({"component": np.arange(len(eig), dtype=np.int64), "eigenvalue": eig,
                         "explained": eig / trace if trace > 0 else np.zeros_like(eig)})


def tsne_embedding(features: np.ndarray, ids: np.ndarray, max_points: int = 1000, seed: int = 0,
                   max_iter: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """2-d t-SNE of a seeded subset of at most ``max_points`` rows.

    Returns (sample ids int64 (M,), ascending; coordinates float64 (M, 2)). Perplexity is
    min(30, (M − 1) / 3) so that tiny sets work. Runs on one thread, so the result does not
    depend on the machine's core count.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(features, dtype=np.float64)
    ids = np.asarray(ids, dtype=np.int64)
    keep = np.arange(len(ids))
    if len(keep) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(ids), size=max_points, replace=False))
    order = keep[np.argsort(ids[keep], kind="stable")]
    if len(order) < 4:
        raise ValueError(f"t-SNE needs at least 4 samples, got {len(order)}")
    perplexity = min(30.0, (len(order) - 1) / 3.0)
    with threadpool_limits(1):
        emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                   max_iter=max_iter).fit_transform(x[order])
    return ids[order], emb.astype(np.float64)


def confusion_table(records: pd.DataFrame, train_exp: int | None = None) -> pd.DataFrame:
    """Class-IL confusion counts on the clean test set at stage ``train_exp`` (default: last).

    Columns y_true, y_pred, count (non-zero cells only). In domain-IL every sample is
    counted once per experience (domain) it was shown through.
    """
    r = records[records["eval_set"] == CLEAN] if "eval_set" in records.columns else records
    stage = int(r["train_exp"].max()) if train_exp is None else train_exp
    r = r[r["train_exp"] == stage]
    out = r.groupby(["y_true", "y_pred"], sort=True).size().rename("count").reset_index()
    return out.astype({"y_true": "int64", "y_pred": "int64", "count": "int64"})
