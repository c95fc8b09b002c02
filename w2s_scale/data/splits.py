"""Seeded A / B / test splits: A trains the weak model (and the strong ceiling), B is what the weak
model labels for the transfer run, test is held out for everything.

Deterministic on every machine and rank: numpy's default_rng (PCG64) permutations of row indices,
seeded only from the experiment seed. The first `n_train` usable documents of the shuffled train pool
are cut into A (first half) and B (second half), rows that share a question or passage on one side
(data/groups.py). The test set is the first `n_test` usable documents
of the shuffled test split, or, for sources without one, of the shuffled pool itself, taken BEFORE the
training documents so the two never overlap (and the test set does not change with n_train).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from w2s_scale.config import DataConfig
from w2s_scale.data.groups import contiguous, cut_at_group
from w2s_scale.data.loading import SplitRows, open_split
from w2s_scale.data.lookup import num_classes
from w2s_scale.data.values import DataError, Example

log = logging.getLogger(__name__)

_MIN_PER_SPLIT = 2
# stream ids mixed into the seed so each random choice has its own stream
_TRAIN_ORDER, _TEST_ORDER = 0, 1


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


def _first_usable(rows: SplitRows, order: np.ndarray, want: int, seed: int,
                  per_label: Optional[int] = None, num_classes: int = 2) -> list[Example]:
    """The first `want` rows in `order` that the source keeps (only the rows needed are formatted);
    with `per_label`, every kept row up to the point where each label has `per_label` of them (or
    the split ends), for `_deal` to balance."""
    out: list[Example] = []
    counts = [0] * num_classes

    def done() -> bool:
        return min(counts) >= per_label if per_label is not None else len(out) >= want

    pos = 0
    while not done() and pos < len(order):
        if per_label is None:
            need = want - len(out)
        else:  # at least what the rarer label still lacks, twice over
            need = 2 * max(per_label - min(counts), 1)
        chunk = order[pos: pos + need + need // 20 + 8]  # a little extra for rows left out
        pos += len(chunk)
        for e in rows.examples(chunk, seed):
            if e is not None:
                out.append(e)
                counts[e.label] += 1
    return out if per_label is not None else out[:want]


def _deal(pool: list[Example], sizes: dict[str, int], where: str,
          notes: list[str], num_classes: int = 2) -> dict[str, list[Example]]:
    """Balanced parts: each takes size // K examples of each of the K labels, in pool order (the
    pool is already shuffled, so this is a seeded draw). A pool short of one label shrinks every
    part in proportion (noted); a pool without one of the labels is an error."""
    by_label = [[e for e in pool if e.label == lab] for lab in range(num_classes)]
    have = min(len(v) for v in by_label)
    if have == 0:
        if num_classes == 2:
            only = 1 if by_label[1] else 0
            raise DataError(f"data.balance: the {where} has only label-{only} examples, nothing to "
                            f"balance against; set data.balance: false or use data with both labels")
        missing = [lab for lab in range(num_classes) if not by_label[lab]]
        raise DataError(f"data.balance: the {where} has no examples of label(s) {missing}; set "
                        f"data.balance: false or use data with every one of the "
                        f"{num_classes} labels")
    per = {name: size // num_classes for name, size in sizes.items()}
    if sum(per.values()) > have:
        scale = have / sum(per.values())
        per = {name: int(p * scale) for name, p in per.items()}
        notes.append(f"data.balance: the {where} has only {have} usable documents of its rarer "
                     f"label; balanced splits shrunk to "
                     f"{', '.join(f'{k} {num_classes * v}' for k, v in per.items())}")
    position = {e.id: i for i, e in enumerate(pool)}
    parts, start = {}, 0
    for name, p in per.items():
        chosen = [e for lab in by_label for e in lab[start: start + p]]
        parts[name] = sorted(chosen, key=lambda e: position[e.id])
        start += p
    return parts


def group_of(example: Example) -> str:
    """The key A and B are cut by: the example's group, or the example alone."""
    return example.group if example.group is not None else example.id


def _cut_a_b(train: list, cfg: DataConfig) -> dict[str, list]:
    """A first, then B: halves, or data.n_a and the rest (A's share of n_train if the pool is short).
    Related rows (data/groups.py) are moved together and A ends at a group boundary, so A may
    hold a few rows more than asked and B as many fewer."""
    n_a, _ = cfg.a_b_sizes(min(len(train), cfg.n_train))
    train = contiguous(train, group_of)
    cut = cut_at_group(train, n_a, group_of)
    return {"a": train[:cut], "b": train[cut:]}


def _deal_groups(pool: list[Example], sizes: dict[str, int], where: str, notes: list[str],
                 num_classes: int = 2) -> dict[str, list[Example]]:
    """`_deal` for related rows: whole groups go to the parts in turn (pool order, each group's rows
    together), a part taking groups until it holds size // K of every label, and each part then
    keeps the first size // K of each label among its groups' rows. A group's rows left over stay
    unused, so no group reaches two parts; a part the pool cannot fill is smaller (noted)."""
    groups: dict[str, list[Example]] = {}
    for e in pool:
        groups.setdefault(group_of(e), []).append(e)
    queue = iter(groups.values())
    position = {e.id: k for k, e in enumerate(pool)}
    parts: dict[str, list[Example]] = {}
    for name, size in sizes.items():
        per = size // num_classes
        by_label: list[list[Example]] = [[] for _ in range(num_classes)]
        while min(len(rows) for rows in by_label) < per:
            group = next(queue, None)
            if group is None:
                break
            for e in group:
                by_label[e.label].append(e)
        have = min(per, *(len(rows) for rows in by_label))
        if have < per:
            notes.append(f"data.balance: the {where} ran out of groups of related documents for "
                         f"{name}: {num_classes * have} balanced documents instead of {size}")
        chosen = [e for rows in by_label for e in rows[:have]]
        parts[name] = sorted(chosen, key=lambda e: position[e.id])
    return parts


def make_splits(cfg: DataConfig, seed: int) -> Splits:
    """A, B (n_train shuffled training documents: A the first data.n_a, half by default) and test (n_test documents), disjoint.

    A pool smaller than asked for is used whole: the shortfall is logged and listed in `notes`, and
    `counts` vs `requested` show it. Without a separate test split a short pool is shared in the
    proportion n_test : n_train. With `data.balance`, each of A, B and test holds as many label-0
    as label-1 documents (size // 2 of each), the first of each label in the seeded shuffled order,
    at the requested sizes where the data have enough of both labels (EleutherAI balances every
    split to 50/50). Raises DataError if any split ends up with fewer than 2 examples.
    """
    if seed < 0:
        raise DataError(f"seeds: seed {seed} is negative; use seeds >= 0")
    n_a, n_b = cfg.a_b_sizes()
    requested = {"a": n_a, "b": n_b, "test": cfg.n_test}
    notes: list[str] = []
    k = num_classes(cfg)
    train_rows = open_split(cfg, "train")
    test_rows = open_split(cfg, "test")
    assert train_rows is not None
    if train_rows.source.fixed_parts:  # the testbed's own A / B / test files
        assert test_rows is not None
        parts = given_parts(cfg, seed, train_rows, test_rows, notes)
        return _checked(cfg, parts, {name: len(part) for name, part in parts.items()}, notes)
    train_order = _rng(seed, _TRAIN_ORDER).permutation(len(train_rows))

    # related rows (data/groups.py) are dealt to A and B by whole groups, which leaves some rows
    # of a group unused: the balanced pool is drawn twice as large for them
    grouped = train_rows.source.group_by is not None
    deal_train = _deal_groups if grouped else _deal

    def per_label(*names: str) -> Optional[int]:
        return sum(requested[n] // k for n in names) * (2 if grouped else 1) if cfg.balance else None

    if test_rows is None:
        need = cfg.n_test + cfg.n_train
        pool = _first_usable(train_rows, train_order, need, seed, per_label("test", "a", "b"), k)
        if cfg.balance:  # test first, so it does not move when n_train changes
            parts = deal_train(pool, {"test": cfg.n_test, "a": requested["a"], "b": requested["b"]},
                               "train split", notes, k)
        else:
            if len(pool) >= need:
                n_test = cfg.n_test
            else:
                n_test = round(len(pool) * cfg.n_test / need)
                n_test = max(min(n_test, len(pool) - 2 * _MIN_PER_SPLIT), _MIN_PER_SPLIT)
                notes.append(f"{cfg.dataset}: only {len(pool)} usable documents for n_test + "
                             f"n_train = {need}; split {n_test} test / {len(pool) - n_test} train")
            # one file holds test and train: related rows on one side of that cut too
            pool = contiguous(pool, group_of)
            n_test = cut_at_group(pool, n_test, group_of)
            test, train = pool[:n_test], pool[n_test:]
            parts = {"test": test, **_cut_a_b(train, cfg)}
    else:
        train = _first_usable(train_rows, train_order, cfg.n_train, seed, per_label("a", "b"), k)
        test_order = _rng(seed, _TEST_ORDER).permutation(len(test_rows))
        test = _first_usable(test_rows, test_order, cfg.n_test, seed,
                             requested["test"] // k if cfg.balance else None, k)
        if cfg.balance:
            parts = {**deal_train(train, {"a": requested["a"], "b": requested["b"]}, "train split",
                                  notes, k),
                     **_deal(test, {"test": cfg.n_test}, "test split", notes, k)}
        else:
            if len(train) < cfg.n_train:
                notes.append(f"{cfg.dataset}: only {len(train)} usable training documents for "
                             f"n_train = {cfg.n_train}; using them all")
            if len(test) < cfg.n_test:
                notes.append(f"{cfg.dataset}: only {len(test)} usable test documents for "
                             f"n_test = {cfg.n_test}; using them all")
            parts = {"test": test, **_cut_a_b(train, cfg)}
    return _checked(cfg, parts, requested, notes)


def given_parts(cfg: DataConfig, seed: int, train_rows: SplitRows, test_rows: SplitRows,
                notes: list[str]) -> dict[str, list[Example]]:
    """A and B are the source's own files (the testbed's train_label and train_unlabel, read as
    one train split: RawRows.parts), each in file order, and the test set its test file: nothing
    is shuffled, re-cut or balanced. data.n_train and data.n_test cap them as the testbed's
    --train-size and --test-size do: the first n_train rows of A and of B, the first n_test of
    test (noted where a file is longer)."""
    name = cfg.dataset
    if cfg.n_a is not None:
        raise DataError(f"data.n_a: {name}'s A is its own train_label file, used whole; remove "
                        f"data.n_a (data.n_train caps A and B alike)")
    if cfg.balance:
        raise DataError(f"data.balance: {name}'s A, B and test are its own files, used as they are; "
                        f"set data.balance: false")
    n_a, n_b = train_rows.raw.parts

    def first(rows: SplitRows, start: int, n: int, cap: int, what: str, fld: str) -> list[Example]:
        keep = min(n, cap)
        if keep < n:
            notes.append(f"{fld}: {name}'s {what} has {n} rows; the first {keep} are used (raise "
                         f"{fld} to {n} to use them all)")
        return [e for e in rows.examples(range(start, start + keep), seed) if e is not None]

    return {"a": first(train_rows, 0, n_a, cfg.n_train, "A (train_label)", "data.n_train"),
            "b": first(train_rows, n_a, n_b, cfg.n_train, "B (train_unlabel)", "data.n_train"),
            "test": first(test_rows, 0, len(test_rows), cfg.n_test, "test file", "data.n_test")}


def _checked(cfg: DataConfig, parts: dict[str, list[Example]], requested: dict[str, int],
             notes: list[str]) -> Splits:
    """The parts as Splits, once each is large enough and no example or group is in two."""
    parts = {name: parts[name] for name in ("a", "b", "test")}

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
    shared = {group_of(e) for e in parts["a"]} & {group_of(e) for e in parts["b"]}
    if shared:  # related rows on both sides: the weak model would train on B's siblings
        raise AssertionError(f"{len(shared)} groups of related rows are in both A and B")

    for note in notes:
        log.warning(note)
    return Splits(parts["a"], parts["b"], parts["test"], requested, notes)
