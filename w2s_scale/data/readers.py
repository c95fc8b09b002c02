"""Where rows come from: local files (jsonl / csv / parquet, one file or a folder of split files) and
the Hugging Face hub. A split is returned as `RawRows`, addressable by row index, so only the rows an
experiment samples are ever formatted (amazon_polarity has 3.6M training rows; a run uses 20,000)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from w2s_scale import hub
from w2s_scale.config import DataConfig
from w2s_scale.data.values import DataError, one_line
from w2s_scale.data.sniff import check_content

PARQUET_BRANCH = "refs/convert/parquet"  # the hub's script-free parquet copy of every dataset


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
    # rows of several files read as one split, the length of each in order (concat); a source
    # with fixed parts reads A's and B's files so (registry.DatasetSource.fixed_parts)
    parts: tuple[int, ...] = ()

    def __len__(self) -> int:
        return self.n


def rows_from_list(rows: list[dict], where: str, fld: str, locate: Callable[[int], str]) -> RawRows:
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
            return rows_from_list(data, str(path), fld, lambda i: f"{fld}: {path} item {i}")
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
    return rows_from_list(rows, str(path), fld, lambda i: f"{fld}: {path} line {lines[i]}")


def _read_csv(path: Path, fld: str) -> RawRows:
    import pandas as pd

    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        # everything as strings: "NA" stays text, labels "0"/"1" are accepted by as_label
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{fld}: {path} is empty; give a file with a header and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{fld}: {path} is not a readable CSV ({one_line(err, 120)}); "
                        f"fix the file (quote fields that contain the separator)") from None
    rows = df.to_dict("records")
    raw = rows_from_list(rows, str(path), fld, lambda i: f"{fld}: {path} line {i + 2}")
    raw.columns = [str(c) for c in df.columns]
    return raw


def _read_parquet(path: Path, fld: str) -> RawRows:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a bad file
        raise DataError(f"{fld}: {path} is not a readable parquet file ({one_line(err, 120)}); "
                        f"rewrite it, e.g. with pandas.DataFrame.to_parquet") from None

    def take(idx: Sequence[int]) -> list[dict]:
        return table.take(np.asarray(idx, dtype=np.int64)).to_pylist()

    return RawRows(str(path), fld, list(table.column_names), table.num_rows, take,
                   lambda i: f"{fld}: {path} row {i}")


_READERS = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}
_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv",
               ".parquet": "parquet", ".pq": "parquet"}


def read_file(path: Path, fld: str, fmt: Optional[str] = None) -> RawRows:
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
    check_content(path, fld, fmt)  # a .jsonl that is gzip, a latin-1 .csv: named, not a traceback
    raw = _READERS[fmt](path, fld)
    if raw.n == 0:
        raise DataError(f"{fld}: {path} has no rows; give a file with rows")
    return raw


def concat(parts: list[RawRows], where: str, fld: str) -> RawRows:
    """Several files' rows as one split, in order; `parts` records each file's length."""
    joined = _concat(parts, where, fld)
    joined.parts = tuple(p.n for p in parts)
    return joined


def where_column(raw: RawRows, column: str, values: Sequence[str]) -> RawRows:
    """The rows whose `column` holds one of `values`, in order (a hub file that marks each
    row's split in a column, as HelpSteer2's preference file does)."""
    keep = [i for i, row in enumerate(raw.take(range(raw.n))) if row.get(column) in values]
    return RawRows(raw.where, raw.field, raw.columns, len(keep),
                   lambda idx: raw.take([keep[int(i)] for i in idx]),
                   lambda i: raw.locate(keep[i]))


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


_LOCAL_KINDS = "jsonl/csv/parquet"


def _split_pattern(split: str) -> re.Pattern:
    # `train.jsonl`, `train-00000-of-00002.parquet`, `anli-train_r2.parquet`, `ethics-test.parquet`;
    # not `test_hard.csv` for "test", nor `train_r2...` for "train"
    return re.compile(rf"(?:^|[-_]){re.escape(split)}(?:[-.]|$)")


def _data_files(folder: Path, exts: set[str]) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in exts]


def _subfolders(folder: Path, depth: int = 2) -> list[Path]:
    """folder, then its subfolders breadth-first (hidden ones skipped), `depth` levels down."""
    out, level = [folder], [folder]
    for _ in range(depth):
        level = [d for f in level for d in sorted(f.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        out += level
    return out


def find_split_files(folder: Path, split: str, fmt: Optional[str] = None) -> list[Path]:
    """The files of one split in a local folder, in the layouts the hub uses: `train.jsonl` or
    `train-00000-of-00002.parquet` (also under data/ or a config folder), or the parquet
    conversion's `<config>/train/0000.parquet`. The first folder (shallowest) with any wins."""
    exts = {e for e, f in _EXTENSIONS.items() if fmt is None or f == fmt}
    pattern = _split_pattern(split)
    for d in _subfolders(folder):
        files = _data_files(d, exts)
        if d != folder and d.name in (split, f"partial-{split}"):
            if files:
                return files
            continue
        chosen = [p for p in files if pattern.search(p.name)]
        if chosen:
            return chosen
    return []


def folder_split(folder: Path, names: Sequence[str], fld: str,
                 fmt: Optional[str] = None) -> Optional[RawRows]:
    """The first of `names` with files in `folder`; shards are concatenated in name order."""
    for name in names:
        files = find_split_files(folder, name, fmt)
        if files:
            return _concat([read_file(p, fld, fmt) for p in files], str(folder), fld)
    return None


def local_split(cfg: DataConfig, split: str, train_name: str, test_names: Sequence[str],
                fmt: Optional[str] = None) -> Optional[RawRows]:
    """Rows of `split` ("train"/"test") from data.path (a file or a folder) or data.test_path.
    In a folder the train split is the files named `train_name`, the test split the first of
    `test_names` found. None: no separate test split (a single file and no data.test_path)."""
    if split == "test" and cfg.test_path:
        path = Path(cfg.test_path).expanduser()
        if path.is_dir():
            raw = folder_split(path, test_names, "data.test_path", fmt)
            if raw is None:
                raise DataError(f"data.test_path: folder {path} has no {'/'.join(test_names)} file; "
                                f"point data.test_path at a file")
            return raw
        return read_file(path, "data.test_path", fmt)
    path = Path(cfg.path).expanduser()  # type: ignore[arg-type]
    if not path.is_dir():
        return read_file(path, "data.path", fmt) if split == "train" else None
    if split == "train":
        raw = folder_split(path, [train_name], "data.path", fmt)
        if raw is None:
            kinds = fmt or _LOCAL_KINDS
            raise DataError(f"data.path: folder {path} has no {train_name} file ({train_name}.{kinds} "
                            f"or {train_name}-*.{kinds}, also under data/); add one or point at a file")
        return raw
    return folder_split(path, test_names, "data.path", fmt)


def layout_hint(train_name: str, test_name: str, columns: Sequence[str]) -> str:
    """How to lay out local files of a hub dataset, for error messages."""
    return (f"set data.path to a folder with {train_name}.{{jsonl,csv,parquet}} (the train split) and "
            f"{test_name}.{{jsonl,csv,parquet}} (the test split), or the hub's parquet files, with "
            f"columns {list(columns)}")


def hub_split(hub_id: str, config: Optional[str], split_name: str, revision: Optional[str],
              hint: str, data_dir: Optional[str] = None) -> RawRows:
    """One split from the hub. `revision=PARQUET_BRANCH` reads the hub's parquet conversion (for
    datasets whose main branch is a loading script, which datasets >= 4 no longer runs);
    `data_dir`: a folder of the hub repository holding the files (HelpSteer2's `preference`)."""
    where = f"{hub_id}{'/' + config if config else ''}[{split_name}]"
    hub.ensure_reachable(hub_id)  # a hub that drops packets: seconds, not an endless wait
    try:
        import datasets

        if revision == PARQUET_BRANCH:
            url = (f"hf://datasets/{hub_id}@{PARQUET_BRANCH.replace('/', '%2F')}/"
                   f"{config or 'default'}/{split_name}/*.parquet")
            ds = datasets.load_dataset("parquet", data_files={split_name: url}, split=split_name)
        else:
            extra = {"data_dir": data_dir} if data_dir else {}  # only where asked: calls stay as they were
            ds = datasets.load_dataset(hub_id, config, split=split_name, revision=revision, **extra)
    except Exception as err:
        raise DataError(f"data.dataset: could not load {where} from the Hugging Face hub "
                        f"({type(err).__name__}: {one_line(err, 120)}); {hint}") from None

    def take(idx: Sequence[int]) -> list[dict]:
        return ds.select([int(i) for i in idx]).to_list()

    return RawRows(where, "data.dataset", list(ds.column_names), len(ds), take,
                   lambda i: f"data.dataset: {where} row {i}")
