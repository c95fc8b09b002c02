"""What every dataset shares: the Example type, the one user-facing DataError, and the checks that
turn one stored value into a label or a text (with a one-line message naming the row when it cannot)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence

import numpy as np

from w2s_scale.errors import UserError


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    label: int
    # rows sharing a question, passage or scenario share this key (data/groups.py); None: the
    # row is related to no other
    group: Optional[str] = None
    # the test subset the row belongs to (the automated-W2S testbed's `subset`: in- or
    # out-of-distribution); None: the dataset has no subsets, and its metrics are as always
    subset: Optional[str] = None


class DataError(UserError):
    """A user-facing data problem; the message is one line naming the config field/file and the fix."""


Split = Literal["train", "test"]
# (text, label), or None to leave the row out (e.g. a sentiment of exactly 0)
Formatted = Optional[tuple[str, int]]


def one_line(text: Any, limit: int = 200) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def as_label(value: Any, where: str, column: str, fix: str = "fix that row",
             num_classes: int = 2) -> int:
    """0/1 from ints, bools, 0.0/1.0 and the strings "0", "1", "true", "false"; else a DataError.
    With ``num_classes`` K > 2: an integer class 0..K-1 (int, integral float, or numeric string)."""
    if num_classes > 2:
        return as_index(value, num_classes, where, column,
                        f"labels must be integers 0..{num_classes - 1} (this task has "
                        f"{num_classes} classes): {fix}")
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return int(value)
    if isinstance(value, (float, np.floating)) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, str):
        s = value.strip().lower()
        if s in ("0", "1"):
            return int(s)
        if s in ("true", "false"):
            return int(s == "true")
    raise DataError(f"{where} has label {one_line(repr(value), 60)} in column '{column}'; labels "
                    f"must be 0 or 1 (true/false also accepted): {fix}")


def as_index(value: Any, n: int, where: str, column: str, what: str) -> int:
    """An integer in range(n) from an int or a numeric string ("2", "2\\n"); else a DataError."""
    try:
        k = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        k = -1
    if isinstance(value, float) and not float(value).is_integer():
        k = -1
    if k not in range(n):
        raise DataError(f"{where} has {one_line(repr(value), 60)} in column '{column}'; {what}")
    return k


def as_text(value: Any, where: str, column: str, fix: str = "fix that row") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        value = ""
    if not isinstance(value, str):
        raise DataError(f"{where} has a non-text value {one_line(repr(value), 60)} in column "
                        f"'{column}': {fix}")
    if not value.strip():
        raise DataError(f"{where} has empty text in column '{column}': {fix}")
    return value


def as_text_or_empty(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def as_texts(value: Any, where: str, column: str) -> list[str]:
    """A list of strings (hub `Sequence(string)` columns; parquet gives numpy arrays)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where} has {one_line(repr(value), 60)} in column '{column}', not a list "
                        f"of texts; give files of the hub's schema")
    return list(value)


def get(row: dict, key: str, where: str) -> Any:
    if key not in row:
        raise DataError(f"{where} has no field '{key}'; every row needs {key!r}")
    return row[key]


def fields(row: dict, keys: Sequence[str], where: str) -> list[str]:
    """Required text fields of a row, each non-empty."""
    return [as_text(get(row, k, where), where, k) for k in keys]
