"""Accuracy, ROC AUC, PGR, and intervals: bootstrap over test examples, t over seeds."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np


def accuracy(labels: np.ndarray, probs1: np.ndarray) -> float:
    return float(np.mean((probs1 > 0.5).astype(int) == labels))


def roc_auc(labels: np.ndarray, probs1: np.ndarray) -> Optional[float]:
    """None when the labels hold one class only (AUC is undefined then)."""
    from sklearn.metrics import roc_auc_score  # handles ties correctly

    if len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, probs1))


def pgr(weak: float, ceiling: float, transfer: float) -> Optional[float]:
    """Performance gap recovered; None (undefined) when the ceiling does not beat the floor."""
    if ceiling <= weak:
        return None
    return (transfer - weak) / (ceiling - weak)


def bootstrap_pgr(labels: np.ndarray, weak: np.ndarray, ceiling: np.ndarray, transfer: np.ndarray,
                  n_boot: int = 1000, seed: int = 0) -> Optional[tuple[float, float]]:
    """95% percentile interval of PGR, resampling test examples jointly for the three models
    (correct-or-not arrays aligned by example). Resamples with an undefined PGR are left out."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    values = []
    for _ in range(n_boot):
        rows = rng.integers(0, n, n)
        w, c, t = weak[rows].mean(), ceiling[rows].mean(), transfer[rows].mean()
        if c > w:
            values.append((t - w) / (c - w))
    if len(values) < n_boot // 2:
        return None
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def mean_interval(values: list[float]) -> dict:
    """Mean over seeds with a 95% t-interval (half-width), None where it cannot be formed."""
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return {"mean": None, "ci95": None, "n": 0}
    mean = float(np.mean(clean))
    if len(clean) < 2:
        return {"mean": mean, "ci95": None, "n": 1}
    from scipy.stats import t

    sem = float(np.std(clean, ddof=1) / math.sqrt(len(clean)))
    return {"mean": mean, "ci95": float(t.ppf(0.975, len(clean) - 1) * sem), "n": len(clean)}
