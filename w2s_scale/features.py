"""Frozen features cached on disk: what a linear probe trains on, extracted once (images and text).

A linear probe trains a head on a backbone that never changes, so each example's features are
computed once, by all ranks together (under ZeRO-3 every forward is a collective), and kept in one
file per (model, data) key: <results_dir>/<experiment>/features/<model>-<key>.npz, holding `ids`
(the entry keys) and `features` [N, D]. Later runs of the same model, any loss or label source,
read it and extract only what is missing. Image runs key entries by example id
(w2s_scale/vision.py); text runs by example id and a digest of the tokens
(w2s_scale/text_features.py), so an entry is never reused for a different input.

Writes: rank 0 only, under a file lock (parallel runs of one student add to the same file), as a
whole new file renamed into place: a reader sees the old file or the new one, never a part.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from w2s_scale import distributed as dist
from w2s_scale.config import ExperimentConfig, ModelConfig
from w2s_scale.files import atomic_write, file_lock


@dataclass
class FeatureSet:
    """Frozen features as the engine reads them (engine._forward calls `model_inputs`)."""
    ids: list[str]
    labels: np.ndarray
    n_classes: int
    features: np.ndarray  # float32 [N, D]
    n_dropped: int = 0
    # text: each document's tokens, so that length-grouped batches are those of the token path
    # (the same global batches as fine-tuning or the per-step frozen path); None: all alike
    token_lengths: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        if self.token_lengths is not None:
            return self.token_lengths
        return np.ones(len(self), dtype=np.int64)

    def subset(self, keep: np.ndarray) -> "FeatureSet":
        keep = np.asarray(keep, dtype=int)
        lengths = None if self.token_lengths is None else self.token_lengths[keep]
        # n_dropped is kept, as TokenizedSet.subset keeps it: it counts the split's documents
        return FeatureSet([self.ids[i] for i in keep], self.labels[keep], self.n_classes,
                          self.features[keep], self.n_dropped, lengths)

    def model_inputs(self, rows: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(self.features[np.asarray(rows, dtype=int)])


def cache_path(cfg: ExperimentConfig, model: ModelConfig, key: str) -> Path:
    """The cache file of one (model, data) key, beside the experiment's runs."""
    return Path(cfg.results_dir) / cfg.name / "features" / f"{model.short_name}-{key}.npz"


def _read(path: Path) -> tuple[list[str], np.ndarray]:
    if not path.exists():
        return [], np.zeros((0, 0), dtype=np.float32)
    with np.load(path) as cache:
        return [str(i) for i in cache["ids"]], cache["features"]


def _add(path: Path, keys: list[str], new: np.ndarray) -> None:
    """Rank 0: the file as it is now plus `keys`' rows (a parallel run may have added others
    since this one read it: re-read under the lock, so neither run's rows are lost)."""
    with file_lock(path.with_name(f".{path.name}.lock")):
        ids, feats = _read(path)
        have = set(ids)
        fresh = [i for i, key in enumerate(keys) if key not in have]
        if not fresh:
            return
        ids = ids + [keys[i] for i in fresh]
        feats = new[fresh] if feats.size == 0 else np.concatenate([feats, new[fresh]])
        buffer = io.BytesIO()
        np.savez(buffer, ids=np.array(ids), features=feats)
        atomic_write(path, buffer.getvalue())


def cached_features(path: Path, data, extract: Callable, keys: Optional[Sequence[str]] = None) -> np.ndarray:
    """Features [N, D] of `data`'s rows, in order: read from `path`, the missing ones computed by
    `extract(data.subset(rows)) -> [n, D]` (a collective: every rank calls it with the same rows)
    and added to the file by rank 0. `keys`: what identifies each row's input in the cache
    (default: `data.ids`). A row is missing when any rank misses it (a parallel run may have
    replaced the file between the ranks' reads), so all ranks extract the same rows."""
    keys = list(data.ids) if keys is None else list(keys)
    ids, feats = _read(path)
    index = {key: i for i, key in enumerate(ids)}
    row_of: dict[str, int] = {}  # each distinct key's first row: a repeated document once
    for row, key in enumerate(keys):
        row_of.setdefault(key, row)
    mine = {key for key in row_of if key not in index}
    missing = sorted(set().union(*dist.all_gather_objects(mine)))
    if missing:
        rows = np.array([row_of[key] for key in missing], dtype=int)
        new = np.asarray(extract(data.subset(rows)), dtype=np.float32)
        if dist.is_main():
            path.parent.mkdir(parents=True, exist_ok=True)
            _add(path, missing, new)
        dist.barrier()
        offset = len(ids)
        for i, key in enumerate(missing):
            index[key] = offset + i
        feats = new if feats.size == 0 else np.concatenate([feats, new])
    return feats[[index[key] for key in keys]]
