"""Per-example predictions on disk (test_predictions.jsonl, weak_labels.jsonl), for any K.

A binary task's row is ``{"id", "p1", "label"}``, exactly as it always was (the probability of class
1, rounded to 6 decimals). A task of K > 2 classes writes ``{"id", "probs", "label"}`` with the K
class probabilities (each rounded to 6 decimals). Readers accept both.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np

DECIMALS = 6


def rows(ids: Sequence[str], probs: np.ndarray, labels: Sequence[int],
         subsets: Optional[Mapping[str, str]] = None) -> Iterator[dict]:
    """One row per example from class probabilities ``probs`` ``[N, K]``; with `subsets` ({id:
    test subset}, w2s_scale/subsets.py), the examples that have one carry it as "subset"."""
    for row in _rows(ids, probs, labels):
        if subsets and row["id"] in subsets:
            row["subset"] = subsets[row["id"]]
        yield row


def _rows(ids: Sequence[str], probs: np.ndarray, labels: Sequence[int]) -> Iterator[dict]:
    if probs.shape[1] == 2:
        for i, p, y in zip(ids, probs[:, 1], labels):
            yield {"id": i, "p1": round(float(p), DECIMALS), "label": int(y)}
    else:
        for i, p, y in zip(ids, probs, labels):
            yield {"id": i, "probs": [round(float(v), DECIMALS) for v in p], "label": int(y)}


def probs_of(row: dict) -> np.ndarray:
    """The row's class probabilities ``[K]`` (``[1 - p1, p1]`` for a binary row)."""
    if "probs" in row:
        return np.asarray(row["probs"], dtype=np.float32)
    p1 = np.float32(row["p1"])
    return np.array([1 - p1, p1], dtype=np.float32)


def soft_labels(rows_: Iterable[dict]) -> dict[str, np.ndarray]:
    """{example id: class probabilities} of a weak model's labels."""
    return {row["id"]: probs_of(row) for row in rows_}


def correct(row: dict) -> bool:
    """Whether the row's prediction is its label: p1 > 0.5 (binary, as always), else the argmax."""
    if "probs" in row:
        return int(np.argmax(row["probs"])) == int(row["label"])
    return (row["p1"] > 0.5) == bool(row["label"])
