"""Metrics per test subset: a dataset may name each test example's subset (the automated-W2S
testbed's `subset`: its in- and out-of-distribution test sets; data/values.Example.subset), and
every run's accuracy and AUC are then also reported per subset. Datasets without subsets get
nothing here, so their metrics stay exactly as they were."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from w2s_scale.metrics import accuracy, roc_auc


def subset_of(examples: Iterable) -> dict[str, str]:
    """{example id: its subset} of the examples that name one ({} for most datasets)."""
    return {e.id: e.subset for e in examples if getattr(e, "subset", None) is not None}


def groups(ids: Sequence[str], subsets: Mapping[str, str]) -> dict[str, list[int]]:
    """{subset: positions in `ids` of its examples}, subsets in name order."""
    out: dict[str, list[int]] = {}
    for i, ex_id in enumerate(ids):
        if ex_id in subsets:
            out.setdefault(subsets[ex_id], []).append(i)
    return dict(sorted(out.items()))


def subset_metrics(ids: Sequence[str], labels: np.ndarray, probs: np.ndarray,
                   subsets: Mapping[str, str]) -> dict[str, dict]:
    """{subset: {accuracy, auc, n_test}} over the examples of each subset."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    return {name: {"accuracy": accuracy(labels[rows], probs[rows]),
                   "auc": roc_auc(labels[rows], probs[rows]), "n_test": len(rows)}
            for name, rows in groups(ids, subsets).items()}
