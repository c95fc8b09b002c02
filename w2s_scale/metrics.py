"""Accuracy, ROC AUC (K classes: top-1, macro one-vs-rest), PGR, and intervals: bootstrap over test
examples, t over seeds."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Top-1 accuracy. ``probs``: class probabilities ``[N, K]``, or p(class 1) ``[N]`` of a binary
    task. Binary (``[N]`` or ``[N, 2]``): p1 > 0.5, as always (an exact tie counts as class 0);
    K > 2: the argmax (ties to the lower class)."""
    probs = np.asarray(probs)
    if probs.ndim == 2 and probs.shape[1] > 2:
        return float(np.mean(probs.argmax(axis=1) == np.asarray(labels)))
    probs1 = probs[:, 1] if probs.ndim == 2 else probs
    return float(np.mean((probs1 > 0.5).astype(int) == labels))


def roc_auc(labels: np.ndarray, probs: np.ndarray) -> Optional[float]:
    """ROC AUC; None where it is undefined. Binary (p1 ``[N]`` or ``[N, 2]``): the AUC of p1,
    None when the labels hold one class only. K > 2: the macro average over the K classes of the
    one-vs-rest AUC of p_c (what scikit-learn's ``multi_class="ovr", average="macro"`` computes),
    None unless every class has both positive and negative test examples."""
    from sklearn.metrics import roc_auc_score  # handles ties correctly

    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim == 2 and probs.shape[1] > 2:
        present = np.unique(labels)
        if len(present) != probs.shape[1] or not np.all(present == np.arange(probs.shape[1])):
            return None
        return float(np.mean([roc_auc_score(labels == c, probs[:, c])
                              for c in range(probs.shape[1])]))
    probs1 = probs[:, 1] if probs.ndim == 2 else probs
    if len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, probs1))


# a ceiling that beats the weak model by less than this is a rounding step, not a gap: PGR would
# be (transfer - weak) / 1e-16, some 1e14, rather than undefined
MIN_GAP = 1e-9


def has_gap(weak: float, ceiling: float) -> bool:
    """Whether PGR is defined: the ceiling beats the weak model by more than a rounding step."""
    return ceiling - weak > MIN_GAP


def pgr(weak: float, ceiling: float, transfer: float) -> Optional[float]:
    """Performance gap recovered; None (undefined) when the ceiling does not beat the floor."""
    if not has_gap(weak, ceiling):
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
        value = pgr(weak[rows].mean(), ceiling[rows].mean(), transfer[rows].mean())
        if value is not None:
            values.append(value)
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
