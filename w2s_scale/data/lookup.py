"""Looking datasets up in the registry, every entry registered: the tasks package registers its
entries when imported, and this module imports it first, so a lookup never meets a registry that
is only partly filled (registry.py holds the entry type and `register`, which the tasks import).
"""
from __future__ import annotations

from typing import Optional

from w2s_scale.config import DataConfig
from w2s_scale.data import tasks  # noqa: F401  (registers every entry)
from w2s_scale.data.readers import PARQUET_BRANCH
from w2s_scale.data.registry import DATASETS, LOCAL_FORMATS, DatasetSource
from w2s_scale.data.values import DataError


def num_classes(cfg: DataConfig) -> int:
    """The task's number of classes K: what its dataset declares (2 for the binary tasks), or
    `data.num_classes` for the local-file sources, which take any K."""
    declared = get_source(cfg.dataset).num_classes
    if cfg.num_classes is None:
        return declared
    if cfg.dataset not in LOCAL_FORMATS and cfg.num_classes != declared:
        raise DataError(f"data.num_classes: dataset {cfg.dataset!r} has {declared} classes, not "
                        f"{cfg.num_classes}; remove data.num_classes (only local jsonl/csv/parquet "
                        f"files take it)")
    return cfg.num_classes


def get_source(name: str) -> DatasetSource:
    if name not in DATASETS:
        raise DataError(f"data.dataset: unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def registry_table() -> str:
    """What `w2s datasets` prints: one line per dataset."""
    def size(n: Optional[int]) -> str:
        return f"{n:,}" if n is not None else "-"

    rows = [("name", "family", "source (train/test split)", "train", "test", "formulation")]
    for s in DATASETS.values():
        rows.append((s.name, s.family, s.source_text, size(s.sizes[0]), size(s.sizes[1]),
                     s.formulation))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join([*(r[i].ljust(widths[i]) if i not in (3, 4) else r[i].rjust(widths[i])
                          for i in range(5)), r[5]]) for r in rows]
    return "\n".join(lines) + (f"\n{len(DATASETS)} datasets; sizes are the hub's rows of the "
                               f"splits serving as train / test ('-': not recorded). @parquet: "
                               f"read from the hub's parquet conversion ({PARQUET_BRANCH}).")
