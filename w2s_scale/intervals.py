"""Intervals that respect their metric, for scaling curves over a few seeds.

Accuracy lies in [0, 1] and PGR is a ratio of accuracy gaps, so neither gets a t-interval here
(with 2-3 seeds a t-interval of accuracy runs past 1.0). Both come from a two-level bootstrap:
resample the seeds, then the test examples within each drawn seed, and recompute the statistic.
The interval thus covers both seed-to-seed variation (training randomness) and the finite test
set. With one seed it reduces to the bootstrap over test examples. PGR is recomputed per draw by its
one definition (metrics.PGR_DEFINITION), on the drawn seeds.

Inputs are per-seed arrays of 0/1 "was this test example classified correctly", aligned by
example between the models being compared (weak, ceiling and transfer of the same seed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from w2s_scale.metrics import pgr_over_seeds, pgr_point

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
    Returns (n_boot, seeds drawn, models): each drawn seed's accuracy per model, so that a
    statistic over seeds (a mean, PGR's median over runs) is computed per draw as on the data."""
    n_seeds, n_models = len(per_seed), len(per_seed[0])
    pick = rng.integers(0, n_seeds, (n_boot, n_seeds))
    out = np.zeros((n_boot, n_seeds, n_models))
    for s, arrays in enumerate(per_seed):
        draw, slot = np.nonzero(pick == s)  # one entry per time seed s is drawn
        stacked, n = np.stack(arrays), len(arrays[0])
        # in chunks of about 4M gathered values, so a large test set does not need GBs at once
        chunk = max(1, 4_000_000 // (n * n_models))
        for start in range(0, len(draw), chunk):
            part = slice(start, start + chunk)
            rows = rng.integers(0, n, (len(draw[part]), n))
            out[draw[part], slot[part]] = stacked[:, rows].mean(-1).T  # (times drawn, models)
    return out


def accuracy_with_draws(correct_by_seed: Sequence[np.ndarray], n_boot: int = N_BOOT,
                        seed: int = 0) -> tuple[Estimate, np.ndarray]:
    """`accuracy` and the bootstrap draws behind it (each the mean over the drawn seeds), for
    summaries over datasets."""
    arrays = [np.asarray(c, dtype=float) for c in correct_by_seed]
    if not arrays or any(len(a) == 0 for a in arrays):
        raise ValueError("accuracy: every seed needs at least one test example")
    draws = _resample(np.random.default_rng(seed), [[a] for a in arrays], n_boot)[:, :, 0].mean(1)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    value = float(np.mean([a.mean() for a in arrays]))
    return Estimate(value, float(lo), float(hi), len(arrays), min(len(a) for a in arrays)), draws


def accuracy(correct_by_seed: Sequence[np.ndarray], n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Mean test accuracy over seeds with a 95% two-level bootstrap interval (within [0, 1])."""
    return accuracy_with_draws(correct_by_seed, n_boot, seed)[0]


def pgr_with_draws(triples_by_seed: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                   n_boot: int = N_BOOT, seed: int = 0) -> tuple[Estimate, list[float]]:
    """`pgr` and its bootstrap draws (undefined draws left out), for summaries over tasks."""
    triples = _triples(triples_by_seed)
    value = pgr_point(*np.array([[a.mean() for a in t] for t in triples]).T)
    draws = _resample(np.random.default_rng(seed), triples, n_boot)  # (n_boot, seeds, 3)
    values = pgr_over_seeds(draws[..., 0], draws[..., 1], draws[..., 2])
    defined = list(values[~np.isnan(values)])
    n_ex = min(len(t[0]) for t in triples)
    if value is None or len(defined) < n_boot // 2:
        return Estimate(value, None, None, len(triples), n_ex), defined
    lo, hi = np.percentile(defined, [2.5, 97.5])
    return Estimate(value, float(lo), float(hi), len(triples), n_ex), defined


def pgr(triples_by_seed: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
        n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """PGR of one point by its one definition (metrics.PGR_DEFINITION: the median over seeds of
    each transfer run against the seed-mean weak and ceiling accuracies), with a 95% two-level
    bootstrap interval: each draw recomputes the same statistic on the drawn seeds.
    `triples_by_seed`: per seed, the (weak, ceiling, transfer) correct arrays aligned by
    example. Draws where the mean ceiling <= the mean weak (PGR undefined) are left out; if more
    than half are, no interval is given."""
    return pgr_with_draws(triples_by_seed, n_boot, seed)[0]


def _triples(triples_by_seed) -> list[tuple[np.ndarray, ...]]:
    triples = [tuple(np.asarray(a, dtype=float) for a in t) for t in triples_by_seed]
    if not triples or any(len(t[0]) == 0 or not len(t[0]) == len(t[1]) == len(t[2]) for t in triples):
        raise ValueError("pgr: every seed needs weak, ceiling and transfer arrays of one length > 0")
    return triples


def median_interval(draws_per_task: Sequence[Sequence[float]], values: Sequence[float],
                    ) -> tuple[float, Optional[float], Optional[float]]:
    """Median over tasks of a per-task value, with a percentile interval from per-task bootstrap
    draws (draw i of every task forms one median). Used by the cross-dataset summaries."""
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
    return pgr_with_draws(triples_by_seed, n_boot, seed)[1]
