"""Seeded A / B / test splits: A trains the weak model (and the strong ceiling), B is what the weak
model labels for the transfer run, test is held out for everything.

Deterministic on every machine and rank: numpy's default_rng (PCG64) permutations of row indices,
seeded only from the experiment seed. The first `n_train` usable documents of the shuffled train pool
are cut into A (first half) and B (second half). The test set is the first `n_test` usable documents
of the shuffled test split, or, for sources without one, of the shuffled pool itself, taken BEFORE the
training documents so the two never overlap (and the test set does not change with n_train).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from w2s_scale.config import DataConfig
from w2s_scale.data.sources import DataError, Example, SplitRows, open_split

log = logging.getLogger(__name__)

_MIN_PER_SPLIT = 2
# stream ids mixed into the seed so each random choice has its own stream
_TRAIN_ORDER, _TEST_ORDER, _BALANCE = 0, 1, 2


@dataclass
class Splits:
    a: list[Example]
    b: list[Example]
    test: list[Example]
    requested: dict[str, int] = field(default_factory=dict)  # what the config asked for
    notes: list[str] = field(default_factory=list)  # why counts differ from `requested`, if they do

    @property
    def counts(self) -> dict[str, int]:
        return {"a": len(self.a), "b": len(self.b), "test": len(self.test)}


def _rng(seed: int, stream: int, sub: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, sub])


def _first_usable(rows: SplitRows, order: np.ndarray, want: int, seed: int) -> list[Example]:
    """The first `want` rows in `order` that the source keeps; only the rows needed are formatted."""
    out: list[Example] = []
    pos = 0
    while len(out) < want and pos < len(order):
        need = want - len(out)
        chunk = order[pos: pos + need + need // 20 + 8]  # a little extra for rows left out
        pos += len(chunk)
        out.extend(e for e in rows.examples(chunk, seed) if e is not None)
    return out[:want]


def _balance(examples: list[Example], rng: np.random.Generator, name: str) -> list[Example]:
    """Downsample the majority class to the minority's size (seeded), keeping the order."""
    by_label = {lab: [i for i, e in enumerate(examples) if e.label == lab] for lab in (0, 1)}
    small = min(len(v) for v in by_label.values())
    if small == 0:
        only = 1 if by_label[1] else 0
        raise DataError(f"data.balance: split {name} has only label-{only} examples, nothing to "
                        f"balance against; set data.balance: false or use data with both labels")
    keep: list[int] = []
    for idx in by_label.values():
        keep.extend(idx if len(idx) == small else rng.choice(idx, size=small, replace=False).tolist())
    return [examples[i] for i in sorted(keep)]


def make_splits(cfg: DataConfig, seed: int) -> Splits:
    """A, B (halves of n_train shuffled training documents) and test (n_test documents), disjoint.

    A pool smaller than asked for is used whole: the shortfall is logged and listed in `notes`, and
    `counts` vs `requested` show it. Without a separate test split a short pool is shared in the
    proportion n_test : n_train. Raises DataError if any split ends up with fewer than 2 examples.
    """
    if seed < 0:
        raise DataError(f"seeds: seed {seed} is negative; use seeds >= 0")
    requested = {"a": cfg.n_train // 2, "b": cfg.n_train - cfg.n_train // 2, "test": cfg.n_test}
    notes: list[str] = []
    train_rows = open_split(cfg, "train")
    test_rows = open_split(cfg, "test")
    assert train_rows is not None
    train_order = _rng(seed, _TRAIN_ORDER).permutation(len(train_rows))

    if test_rows is None:
        need = cfg.n_test + cfg.n_train
        pool = _first_usable(train_rows, train_order, need, seed)
        if len(pool) >= need:
            n_test = cfg.n_test
        else:
            n_test = round(len(pool) * cfg.n_test / need)
            n_test = max(min(n_test, len(pool) - 2 * _MIN_PER_SPLIT), _MIN_PER_SPLIT)
            notes.append(f"{cfg.dataset}: only {len(pool)} usable documents for n_test + n_train = "
                         f"{need}; split {n_test} test / {len(pool) - n_test} train")
        test, train = pool[:n_test], pool[n_test:]
    else:
        train = _first_usable(train_rows, train_order, cfg.n_train, seed)
        test_order = _rng(seed, _TEST_ORDER).permutation(len(test_rows))
        test = _first_usable(test_rows, test_order, cfg.n_test, seed)
        if len(train) < cfg.n_train:
            notes.append(f"{cfg.dataset}: only {len(train)} usable training documents for "
                         f"n_train = {cfg.n_train}; using them all")
        if len(test) < cfg.n_test:
            notes.append(f"{cfg.dataset}: only {len(test)} usable test documents for "
                         f"n_test = {cfg.n_test}; using them all")

    half = len(train) // 2
    parts = {"a": train[:half], "b": train[half:], "test": test}
    if cfg.balance:
        for k, name in enumerate(parts):
            before = len(parts[name])
            parts[name] = _balance(parts[name], _rng(seed, _BALANCE, k), name)
            if len(parts[name]) < before:
                notes.append(f"data.balance: split {name} downsampled from {before} to "
                             f"{len(parts[name])} documents")

    for name, examples in parts.items():
        if len(examples) < _MIN_PER_SPLIT:
            fld = "data.n_test" if name == "test" else "data.n_train"
            raise DataError(f"{fld}: split {name} of {cfg.dataset} has {len(examples)} examples (need "
                            f">= {_MIN_PER_SPLIT}); give more data or raise {fld}")

    # disjoint by construction; checked anyway because a leak would silently inflate every result
    seen: dict[str, str] = {}
    for name, examples in parts.items():
        for e in examples:
            if e.id in seen:
                raise AssertionError(f"example {e.id} is in split {seen[e.id]} and in split {name}")
            seen[e.id] = name

    for note in notes:
        log.warning(note)
    return Splits(parts["a"], parts["b"], parts["test"], requested, notes)
