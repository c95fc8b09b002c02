"""Diagnostics of a transfer run: how far the student departs from its supervisor, and how well
calibrated both are. Pure functions of predicted class probabilities ([N, K], rows sum to 1).

* agreement: the fraction of examples where the student's and the supervisor's argmax agree.
* misfit: the student's disagreement with its supervisor on test, 1 - agreement; shown beside the
  gain over the supervisor (student accuracy - supervisor accuracy on the same test examples).
  With 0-1 disagreement and accuracy the gain can never exceed the misfit (an upper bound: the
  student can only be right where the supervisor is wrong by disagreeing with it). Charikar et al.
  2024's result, that the gain is at least the misfit, is about squared distance for a student
  class that is a convex set, not about accuracy.
* ECE (expected calibration error, Guo et al. 2017's standard form): confidence = the max class
  probability, 10 equal-width bins over [0, 1] (bin b holds confidences in (b/10, (b+1)/10], the
  first bin also 0), ECE = sum_b (n_b / N) |accuracy_b - mean confidence_b|.
"""
from __future__ import annotations

from typing import Any

import numpy as np

ECE_BINS = 10


def agreement(probs_a: np.ndarray, probs_b: np.ndarray) -> float:
    """Fraction of rows where the two distributions' argmax classes are the same."""
    a, b = np.asarray(probs_a), np.asarray(probs_b)
    if a.shape != b.shape or len(a) == 0:
        raise ValueError(f"agreement needs two non-empty [N, K] arrays of one shape; got {a.shape}, {b.shape}")
    return float(np.mean(a.argmax(1) == b.argmax(1)))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Standard ECE over `n_bins` equal-width bins of max-probability confidence."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if len(probs) == 0 or len(probs) != len(labels):
        raise ValueError(f"ECE needs as many labels as predictions (> 0); got {len(probs)}, {len(labels)}")
    confidence = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    # bin b = ceil(conf * n_bins) - 1, so bin b holds (b/n, (b+1)/n]; confidence 0 goes to bin 0
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def two_class(p1: np.ndarray) -> np.ndarray:
    """[N] probabilities of class 1 as [N, 2]."""
    p1 = np.asarray(p1, dtype=np.float64)
    return np.stack([1.0 - p1, p1], axis=1)


def transfer_diagnostics(labels: np.ndarray, student_test: np.ndarray, weak_test: np.ndarray,
                         student_b: np.ndarray, weak_b: np.ndarray) -> dict[str, Any]:
    """metrics.json fields of a transfer run. `labels`, `student_test`, `weak_test`: the test
    examples both models scored, aligned; `student_b`, `weak_b`: B's training examples (the
    student's predictions and the soft labels it trained on)."""
    student_acc = float(np.mean(student_test.argmax(1) == labels))
    weak_acc = float(np.mean(weak_test.argmax(1) == labels))
    test_agreement = agreement(student_test, weak_test)
    return {
        "agreement_with_weak_test": test_agreement,
        "train_agreement_with_weak": agreement(student_b, weak_b),
        "misfit": 1.0 - test_agreement,
        "gain_over_weak": student_acc - weak_acc,
        "ece": expected_calibration_error(student_test, labels),
        "weak_ece": expected_calibration_error(weak_test, labels),
        "n_test_diagnostics": int(len(labels)),
    }
