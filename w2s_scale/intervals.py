"""Intervals that respect their metric, for scaling curves over a few seeds.

Accuracy lies in [0, 1] and PGR is a ratio of accuracy gaps, so neither gets a t-interval here
(with 2-3 seeds a t-interval of accuracy runs past 1.0). Both come from a two-level bootstrap:
resample the seeds, then the test examples within each drawn seed, and recompute the statistic.
The interval thus covers both seed-to-seed variation (training randomness) and the finite test
set. With one seed it reduces to the bootstrap over test examples.

Inputs are per-seed arrays of 0/1 "was this test example classified correctly", aligned by
example between the models being compared (weak, ceiling and transfer of the same seed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from w2s_scale.metrics import MIN_GAP
from w2s_scale.metrics import pgr as pgr_or_none

N_BOOT = 1000


@dataclass(frozen=True)
class Estimate:
    value: Optional[float]  # the point estimate (None: undefined, e.g. PGR without a gap)
    lo: Optional[float]     # 95% interval; None where it cannot be formed
    hi: Optional[float]
    n_seeds: int
    n_examples: int         # test examples per seed (the smallest, if they differ)

    def as_dict(self, prefix: str) -> dict:
        return {prefix: self.value, f"{prefix}_lo": self.lo, f"{prefix}_hi": self.hi}


def wilson(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (one seed, n test examples): stays in [0, 1]."""
    if n <= 0:
        raise ValueError("wilson: n must be positive")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _resample(rng: np.random.Generator, per_seed: Sequence[Sequence[np.ndarray]], n_boot: int) -> np.ndarray:
    """n_boot bootstrap draws: seeds with replacement, then examples within each drawn seed (the
    same example rows for every model of that seed, so paired differences stay paired).
    Returns (n_boot, models): each model's accuracy averaged over the drawn seeds."""
    n_seeds, n_models = len(per_seed), len(per_seed[0])
    pick = rng.integers(0, n_seeds, (n_boot, n_seeds))
    sums = np.zeros((n_boot, n_models))
    for s, arrays in enumerate(per_seed):
        draws_of_s = np.nonzero(pick == s)[0]  # one entry per time seed s is drawn
        if len(draws_of_s):
            n = len(arrays[0])
            rows = rng.integers(0, n, (len(draws_of_s), n))
            means = np.stack(arrays)[:, rows].mean(-1)  # (models, times drawn)
            np.add.at(sums, draws_of_s, means.T)
    return sums / n_seeds


def accuracy(correct_by_seed: Sequence[np.ndarray], n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Mean test accuracy over seeds with a 95% two-level bootstrap interval (within [0, 1])."""
    arrays = [np.asarray(c, dtype=float) for c in correct_by_seed]
    if not arrays or any(len(a) == 0 for a in arrays):
        raise ValueError("accuracy: every seed needs at least one test example")
    value = float(np.mean([a.mean() for a in arrays]))
    rng = np.random.default_rng(seed)
    draws = _resample(rng, [[a] for a in arrays], n_boot)[:, 0]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return Estimate(value, float(lo), float(hi), len(arrays), min(len(a) for a in arrays))



def pgr(triples_by_seed: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
        n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """PGR of the seed-averaged accuracies, (T - W) / (C - W), with a 95% two-level bootstrap
    interval. `triples_by_seed`: per seed, the (weak, ceiling, transfer) correct arrays aligned by
    example. The ratio of averages, not the average of per-seed ratios: a seed whose gap C - W is
    nearly zero would otherwise dominate. Draws where C <= W (PGR undefined) are left out; if
    more than half are, no interval is given."""
    triples = _triples(triples_by_seed)
    value = pgr_or_none(*(float(m) for m in np.mean([[a.mean() for a in t] for t in triples], axis=0)))
    defined = pgr_draws(triples, n_boot, seed)
    n_ex = min(len(t[0]) for t in triples)
    if value is None or len(defined) < n_boot // 2:
        return Estimate(value, None, None, len(triples), n_ex)
    lo, hi = np.percentile(defined, [2.5, 97.5])
    return Estimate(value, float(lo), float(hi), len(triples), n_ex)


def _triples(triples_by_seed) -> list[tuple[np.ndarray, ...]]:
    triples = [tuple(np.asarray(a, dtype=float) for a in t) for t in triples_by_seed]
    if not triples or any(len(t[0]) == 0 or not len(t[0]) == len(t[1]) == len(t[2]) for t in triples):
        raise ValueError("pgr: every seed needs weak, ceiling and transfer arrays of one length > 0")
    return triples


def median_interval(draws_per_task: Sequence[Sequence[float]], values: Sequence[float],
                    ) -> tuple[float, Optional[float], Optional[float]]:
    """Median over tasks of a per-task value, with a percentile interval from per-task bootstrap
    draws (draw i of every task forms one median). Used by the cross-dataset summary."""
    value = float(np.median(values))
    if not draws_per_task or any(len(d) == 0 for d in draws_per_task):
        return value, None, None
    n = min(len(d) for d in draws_per_task)
    medians = np.median(np.array([list(d)[:n] for d in draws_per_task]), axis=0)
    lo, hi = np.percentile(medians, [2.5, 97.5])
    return value, float(lo), float(hi)


def pgr_draws(triples_by_seed: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
              n_boot: int = N_BOOT, seed: int = 0) -> list[float]:
    """The bootstrap draws behind `pgr` (undefined draws left out), for summaries over tasks."""
    triples = _triples(triples_by_seed)
    rng = np.random.default_rng(seed)
    weak, ceiling, transfer = _resample(rng, triples, n_boot).T
    defined = ceiling - weak > MIN_GAP
    return list((transfer[defined] - weak[defined]) / (ceiling[defined] - weak[defined]))
