"""Related rows stay on one side of a cut (Burns et al. 2023: datapoints that share a question or
a context go to the same half).

A dataset entry may say how rows are related (`group_by` in data/registry.py: the passage, the
question, the scenario); its Examples then carry a `group` key. Every cut of the training data
(A from B, the early-stopping and ground-truth-curve slices of B) orders the rows as before and
then moves each group's members up to its first member, so a group is contiguous, and cuts at a
group boundary. Rows without a group are groups of one: where every group is a single row, the
order and the cut are exactly the ungrouped ones (so unaffected datasets keep their results).
"""
from __future__ import annotations

import hashlib
from typing import Callable, Hashable, Optional, Sequence, TypeVar

T = TypeVar("T")


GroupKey = Callable[[dict, int], Optional[str]]  # (the stored row, its position) -> its group


def by_columns(*columns: str, before: Optional[str] = None) -> GroupKey:
    """A group key from the row's text in `columns` (a short hash of it); with `before`, only the
    part of the first column before that separator. Rows whose text there is empty (sciq
    without its support passage) share nothing: None."""
    def key(row: dict, _position: int) -> Optional[str]:
        parts = [" ".join(str(row.get(c) or "").split()) for c in columns]  # whitespace-insensitive
        if before is not None:
            parts[0] = parts[0].split(before.strip())[0].strip()
        if not any(parts):
            return None
        return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]

    return key


def by_position(size: int) -> GroupKey:
    """Groups of `size` consecutive rows in the split as stored: the ETHICS files (hendrycks)
    keep the variants of one scenario together, 4 per scenario (justice, deontology) or 5 (virtue),
    and their texts need not repeat, so only the position says which rows belong together."""
    def key(_row: dict, position: int) -> str:
        return f"rows{position // size}"

    return key


def contiguous(items: Sequence[T], key: Callable[[T], Hashable]) -> list[T]:
    """`items` in their order, each group's members moved up behind its first member."""
    members: dict[Hashable, list[T]] = {}
    for item in items:
        members.setdefault(key(item), []).append(item)
    return [item for group in members.values() for item in group]


def cut_at_group(items: Sequence[T], n: int, key: Callable[[T], Hashable]) -> int:
    """The first position >= n that is a group boundary of contiguous `items` (len(items) at
    most): the head keeps the group that position n falls in whole."""
    if n <= 0:
        return 0
    i = min(n, len(items))
    while 0 < i < len(items) and key(items[i]) == key(items[i - 1]):
        i += 1
    return i
