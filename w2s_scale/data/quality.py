"""What the rows of a dataset's splits say about the data, checked before training: test rows
that repeat training rows, training rows that repeat each other, and classes that never occur.

Rows are compared by content: Unicode-normalised (NFKC), case-folded, punctuation and runs of
white space made one space, so a copy re-encoded, re-cased or re-punctuated is still a copy.

Warn or refuse (measured on the shipped offline datasets, docs/running-experiments.md): real
datasets hold a few repeats (the demos' Rotten Tomatoes and Amazon snippets: up to 3 of 200 test
rows found in training, 5 of 1,300 training rows repeated, seeds 0-2), so a few are a warning
with the count; above REFUSE_FRACTION it is a leak or a file listed twice, and refused. A class
of 0..num_classes-1 that no row of any split has is refused: the head would have an output that
is never trained nor tested (num_classes is probably wrong). Labels outside 0..K-1 are refused
by the readers as the rows are read (data/values.py).
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Callable, Iterable

from w2s_scale.data.values import DataError, Example

REFUSE_FRACTION = 0.10  # of the test rows (found in training) or the training rows (repeats)
_NOT_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    return " ".join(_NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


def overlap(train: Iterable[Example], test: Iterable[Example]) -> tuple[int, int]:
    """(test rows whose content is a training row's, test rows)."""
    seen = {normalise(e.text) for e in train}
    test = list(test)
    return sum(normalise(e.text) in seen for e in test), len(test)


def repeats(rows: Iterable[Example]) -> tuple[int, int, int]:
    """(rows repeating an earlier row's content, of them with another label, rows)."""
    rows = list(rows)
    first: dict[str, int] = {}
    n_repeat = n_conflict = 0
    for e in rows:
        key = normalise(e.text)
        if key in first:
            n_repeat += 1
            n_conflict += first[key] != e.label
        else:
            first[key] = e.label
    return n_repeat, n_conflict, len(rows)


def check_content(where: str, text_field: str, num_classes: int, splits_by_seed: dict,
                  warn: Callable[[str], None]) -> None:
    """Every seed's splits (data/splits.Splits with a, b, test); the worst seed is named."""
    worst_leak, worst_repeat = (0, 1, None), (0, 0, 1, None)
    for seed, splits in splits_by_seed.items():
        train = [*splits.a, *splits.b]
        present = {e.label for e in (*train, *splits.test)}
        missing = sorted(set(range(num_classes)) - present)
        if missing:
            raise DataError(f"{where}.num_classes: {num_classes} classes, but no row (seed {seed}) "
                            f"has label {missing[0]} ({len(missing)} of {num_classes} missing), so "
                            f"the head would have an output never trained nor tested; set "
                            f"num_classes to the classes the data has, or fix the label column")
        found, n_test = overlap(train, splits.test)
        if found / max(n_test, 1) > worst_leak[0] / max(worst_leak[1], 1):
            worst_leak = (found, n_test, seed)
        n_repeat, n_conflict, n_train = repeats(train)
        if n_repeat / max(n_train, 1) > worst_repeat[0] / max(worst_repeat[2], 1):
            worst_repeat = (n_repeat, n_conflict, n_train, seed)
    n_repeat, n_conflict, n_train, seed = worst_repeat
    if n_repeat:
        text = (f"{where}.{text_field}: {n_repeat} of {n_train} training rows (seed {seed}, A and B) "
                f"repeat another row's text"
                + (f", {n_conflict} of them with another label" if n_conflict else ""))
        if n_repeat > REFUSE_FRACTION * n_train:
            raise DataError(f"{text}; the file may be listed twice or the weak model would label "
                            f"rows it trained on; deduplicate the data")
        warn(f"{text}; kept (below {REFUSE_FRACTION:.0%})")
    found, n_test, seed = worst_leak
    if found:
        text = (f"{where}.{text_field}: {found} of {n_test} test rows (seed {seed}) repeat a "
                f"training row's text (compared case- and punctuation-blind)")
        if found > REFUSE_FRACTION * n_test:
            raise DataError(f"{text}, so test scores would be partly on training data; give a test "
                            f"set without them (deduplicate against the training file)")
        warn(f"{text}; kept (below {REFUSE_FRACTION:.0%})")
