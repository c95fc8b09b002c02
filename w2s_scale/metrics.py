"""Accuracy, ROC AUC (K classes: top-1, macro one-vs-rest), PGR (its one definition,
PGR_DEFINITION), and t-intervals over seeds (PGR's and accuracy's intervals: intervals.py)."""
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

# The one definition of PGR in this package (Burns et al. 2023's plotting notebook), stated on
# every figure and table that shows a PGR. Every PGR below comes from pgr_over_seeds: a point's
# (dataset, weak, strong, loss) over its seeds; a single run is the point of one seed.
PGR_DEFINITION = ("PGR = median over seeds of (transfer - mean weak) / (mean ceiling - mean weak), "
                  "weak and ceiling accuracy averaged over seeds (Burns et al.'s notebook); "
                  "undefined where mean ceiling <= mean weak")


def has_gap(weak, ceiling):
    """Whether PGR is defined: the ceiling beats the weak model by more than a rounding step
    (elementwise on arrays)."""
    return np.asarray(ceiling, dtype=float) - np.asarray(weak, dtype=float) > MIN_GAP


def gap_recovered(weak, ceiling, transfer) -> np.ndarray:
    """(transfer - weak) / (ceiling - weak), elementwise with broadcasting; NaN where there is no
    gap. The formula is written here only."""
    weak, ceiling, transfer = (np.asarray(x, dtype=float) for x in (weak, ceiling, transfer))
    defined = has_gap(weak, ceiling)
    # the gap is replaced by 1 where undefined only so that no division by ~0 is attempted
    return np.where(defined, (transfer - weak) / np.where(defined, ceiling - weak, 1.0), np.nan)


def pgr_over_seeds(weak, ceiling, transfer) -> np.ndarray:
    """PGR_DEFINITION on arrays whose last axis holds the seeds: weak, ceiling (each seed's gt
    accuracy) and transfer (each transfer run's); any leading axes (bootstrap draws) are kept.
    NaN where undefined (the anchors are shared, so a point is undefined as a whole)."""
    weak_mean = np.mean(np.asarray(weak, dtype=float), axis=-1, keepdims=True)
    ceiling_mean = np.mean(np.asarray(ceiling, dtype=float), axis=-1, keepdims=True)
    return np.median(gap_recovered(weak_mean, ceiling_mean, transfer), axis=-1)


def pgr_point(weak, ceiling, transfer) -> Optional[float]:
    """PGR_DEFINITION of one point from per-seed accuracies; None where undefined."""
    value = float(pgr_over_seeds(weak, ceiling, transfer))
    return None if math.isnan(value) else value


def pgr(weak: float, ceiling: float, transfer: float) -> Optional[float]:
    """One run's PGR: the point of one seed, (transfer - weak) / (ceiling - weak); None
    (undefined) when the ceiling does not beat the floor."""
    return pgr_point([weak], [ceiling], [transfer])


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
