"""Splits as Examples: open a dataset's train or test split and format the rows asked for.

Ids are f"{split}-{row}" where `row` is the row's position in the split as stored (shards
concatenated in name order), so they are the same on every machine and every rank. Formatting is
lazy (only the rows the splits module asks for) except for `eager` sources, whose every row is
validated once when opened (a bad label in row 90,000 is reported even if that row is not sampled).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from w2s_scale.config import DataConfig
from w2s_scale.data.readers import RawRows
from w2s_scale.data.lookup import get_source
from w2s_scale.data.registry import DatasetSource
from w2s_scale.data.values import DataError, Example, Split

_SPLIT_CODE = {"train": 0, "test": 1}  # mixed into formatting rngs so train row i and test row i differ


def format_rng(seed: int, split: Split, row: int) -> np.random.Generator:
    """The formatting rng of one row: the same on every rank, whatever else is formatted."""
    return np.random.default_rng([seed, _SPLIT_CODE[split], row])


@dataclass
class SplitRows:
    """A split opened for reading: `examples(indices, seed)` formats those rows, in that order;
    rows a source leaves out (e.g. sentiment 0) come back as None so positions stay meaningful."""
    source: DatasetSource
    split: Split
    raw: RawRows
    _cache: Optional[list[Optional[Example]]] = field(default=None, repr=False)
    _cache_seed: Optional[int] = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.raw.n

    def _format(self, indices: Sequence[int], seed: int) -> list[Optional[Example]]:
        rows = self.raw.take(indices)
        out: list[Optional[Example]] = []
        for i, row in zip(indices, rows):
            i = int(i)
            rng = format_rng(seed, self.split, i) if self.source.random_format else None
            where = self.raw.locate(i)
            got = self.source.format(row, rng, where)
            if got is None:
                out.append(None)
                continue
            group = self.source.group_by(row, i) if self.source.group_by else None
            subset = self.source.subset_by(row, where) if self.source.subset_by else None
            out.append(Example(f"{self.split}-{i}", got[0], got[1], group, subset))
        return out

    def examples(self, indices: Optional[Sequence[int]], seed: int) -> list[Optional[Example]]:
        if indices is None:
            indices = range(self.raw.n)
        if not self.source.eager:
            return self._format(indices, seed)
        if self._cache is None or self._cache_seed != seed:  # validate every row once
            self._cache, self._cache_seed = self._format(range(self.raw.n), seed), seed
        return [self._cache[int(i)] for i in indices]


def open_split(cfg: DataConfig, split: Split) -> Optional[SplitRows]:
    """The named split ready to format, or None when the source has no separate test split."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    source = get_source(cfg.dataset)
    raw = source.open(cfg, split)
    return None if raw is None else SplitRows(source, split, raw)


def load_split(cfg: DataConfig, split: Split, seed: int,
               indices: Optional[Sequence[int]] = None) -> Optional[list[Example]]:
    """The whole named split (or only the rows at `indices`) as Examples, before any subsampling.

    Returns None for split="test" when the source has no separate test split (one local file without
    data.test_path, the offline snippet sets): `make_splits` then cuts the test set from the train pool.
    `seed` only matters where the formatting itself is random (the coin of multiple-choice tasks).
    """
    if seed < 0:
        raise DataError(f"seeds: seed {seed} is negative; use seeds >= 0")
    opened = open_split(cfg, split)
    if opened is None:
        return None
    return [e for e in opened.examples(indices, seed) if e is not None]
