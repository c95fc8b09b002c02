"""Public preference data of the kind the automated-W2S testbed's chat set is built from, each as
the testbed poses a pair: "Question: {prompt}\\nAnswer A: {first}\\nAnswer B: {second}", class 0
("A") when the first answer is the better one (data/tasks/testbed.py).

- helpsteer2_pairwise (nvidia/HelpSteer2, its `preference` folder) and helpsteer3_pairwise
  (nvidia/HelpSteer3, config `preference`): human preference between two responses, shown in the
  hub's order (response 1 as A); pairs rated equal are left out. Training data.
- rm_bench_pairwise (THU-KEG/RM-Bench) and reward_bench_2_pairwise (allenai/reward-bench-2): reward
  model benchmarks (the testbed's out-of-distribution tests). Each row holds several chosen and
  rejected responses: one of each is drawn, and their order, by a coin seeded per row; the row's
  domain (RM-Bench) or subset (RewardBench 2) is its test subset, so metrics come per domain.
  Neither has a train split: the hub's one split is the pool, its test set cut from it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from w2s_scale.config import DataConfig
from w2s_scale.data.readers import (RawRows, folder_split, hub_split, layout_hint, local_split,
                                    read_file, where_column)
from w2s_scale.data.registry import DatasetSource, register
from w2s_scale.data.tasks.testbed import pair_text
from w2s_scale.data.values import DataError, Formatted, Split, as_text, as_texts, get, one_line

OpenFn = Callable[[DataConfig, Split], Optional[RawRows]]


def _check(raw: Optional[RawRows], columns: Sequence[str], name: str) -> Optional[RawRows]:
    if raw is not None:
        for col in columns:
            if col not in raw.columns:
                raise DataError(f"{raw.field}: {raw.where} has no column '{col}' ({name} needs "
                                f"{list(columns)}, found {raw.columns}); give files of the hub's "
                                f"schema")
    return raw


def _preference(row: dict, column: str, where: str) -> Optional[int]:
    """A signed preference (-3..3: negative, the first response is better) as the class of its
    A/B pair; None for a tie."""
    value = get(row, column, where)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number.is_integer() or not -3 <= number <= 3:
        raise DataError(f"{where} has {one_line(repr(value), 60)} in column '{column}'; {column} "
                        f"must be an integer from -3 to 3 (negative: the first response is better)")
    return None if number == 0 else int(number > 0)


def conversation(value, where: str, column: str) -> str:
    """HelpSteer3's context, a list of {role, content} turns: one user turn as its text, a longer
    dialogue as "User: ...", "Assistant: ..." paragraphs."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, str):
        return as_text(value, where, column)
    if not isinstance(value, list) or not value or not all(
            isinstance(t, dict) and isinstance(t.get("content"), str) for t in value):
        raise DataError(f"{where} has {one_line(repr(value), 60)} in column '{column}', not a list "
                        f"of {{role, content}} turns; give files of the hub's schema")
    if len(value) == 1:
        return as_text(value[0]["content"], where, column)
    return "\n\n".join(f"{str(t.get('role', 'user')).capitalize()}: {t['content']}" for t in value)


# --- HelpSteer2 and HelpSteer3: the hub's order, the human preference as the label


def format_helpsteer2(row: dict, rng, where: str) -> Formatted:
    prompt, first, second = (as_text(get(row, k, where), where, k)
                             for k in ("prompt", "response_1", "response_2"))
    label = _preference(row, "preference_strength", where)
    return None if label is None else (pair_text(prompt, first, second), label)


def format_helpsteer3(row: dict, rng, where: str) -> Formatted:
    prompt = conversation(get(row, "context", where), where, "context")
    first, second = (as_text(get(row, k, where), where, k) for k in ("response1", "response2"))
    label = _preference(row, "overall_preference", where)
    return None if label is None else (pair_text(prompt, first, second), label)


HELPSTEER2_COLUMNS = ("split", "prompt", "response_1", "response_2", "preference_strength")
HELPSTEER2_SPLITS = {"train": ("train",), "test": ("val", "validation")}  # its `split` column


def _helpsteer2_open(cfg: DataConfig, split: Split) -> Optional[RawRows]:
    """One file holds both splits, each row naming its own in the column `split`."""
    name = "helpsteer2_pairwise"
    if cfg.path:
        path = Path(cfg.path).expanduser()
        raw = folder_split(path, ["preference"], "data.path") if path.is_dir() else read_file(path, "data.path")
        if raw is None:
            raise DataError(f"data.path: folder {path} has no preference.{{jsonl,csv,parquet}} file "
                            f"(the hub's preference/preference.jsonl.gz, unzipped); add it or point "
                            f"at the file")
    else:
        raw = hub_split("nvidia/HelpSteer2", None, "train", None,
                        f"set data.path to the hub's preference/preference.jsonl.gz unzipped, with "
                        f"columns {list(HELPSTEER2_COLUMNS)}", data_dir="preference")
    _check(raw, HELPSTEER2_COLUMNS, name)
    return where_column(raw, "split", HELPSTEER2_SPLITS[split])


HELPSTEER3_COLUMNS = ("context", "response1", "response2", "overall_preference")


def _helpsteer3_open(cfg: DataConfig, split: Split) -> Optional[RawRows]:
    if cfg.path:
        raw = local_split(cfg, split, "train", ["validation", "test"])
    else:
        raw = hub_split("nvidia/HelpSteer3", "preference", "train" if split == "train" else "validation",
                        None, layout_hint("train", "validation", HELPSTEER3_COLUMNS))
    return _check(raw, HELPSTEER3_COLUMNS, "helpsteer3_pairwise")


# --- RM-Bench and RewardBench 2: one chosen and one rejected drawn, their order by a coin


def drawn_pair(prompt: str, chosen: list[str], rejected: list[str],
               rng: np.random.Generator) -> tuple[str, int]:
    """One chosen and one rejected response drawn (seeded per row), shown in a seeded order;
    label 1 when the chosen one is B."""
    better = chosen[int(rng.integers(len(chosen)))]
    worse = rejected[int(rng.integers(len(rejected)))]
    label = int(rng.random() < 0.5)
    first, second = (worse, better) if label else (better, worse)
    return pair_text(prompt, first, second), label


def _responses(row: dict, column: str, where: str) -> list[str]:
    texts = [t for t in as_texts(get(row, column, where), where, column) if t.strip()]
    if not texts:
        raise DataError(f"{where} has no response in column '{column}'; give files of the hub's "
                        f"schema")
    return texts


def format_reward_benchmark(row: dict, rng: Optional[np.random.Generator], where: str) -> Formatted:
    assert rng is not None
    prompt = as_text(get(row, "prompt", where), where, "prompt")
    return drawn_pair(prompt, _responses(row, "chosen", where), _responses(row, "rejected", where), rng)


def _subset_in(column: str) -> Callable[[dict, str], Optional[str]]:
    def subset(row: dict, where: str) -> Optional[str]:
        value = row.get(column)
        return str(value).strip() if value is not None and str(value).strip() else None

    return subset


def _pool_open(name: str, hub_id: str, hub_split_name: str, local_names: Sequence[str],
               columns: Sequence[str]) -> OpenFn:
    """A benchmark with one split: it is the pool (A, B and the test set cut from it), unless
    data.test_path gives a test file."""
    def open_(cfg: DataConfig, split: Split) -> Optional[RawRows]:
        if split == "test":
            if not cfg.test_path:
                return None
            return _check(local_split(cfg, split, hub_split_name, ["test"]), columns, name)
        if cfg.path:
            path = Path(cfg.path).expanduser()
            raw = folder_split(path, local_names, "data.path") if path.is_dir() else read_file(path, "data.path")
            if raw is None:
                raise DataError(f"data.path: folder {path} has no {' or '.join(local_names)} file "
                                f"(jsonl/json/csv/parquet, also under data/); add the hub's file or "
                                f"point at it")
        else:
            raw = hub_split(hub_id, None, hub_split_name, None,
                            f"set data.path to the hub's {hub_split_name} file (one split: the "
                            f"pool), with columns {list(columns)}")
        return _check(raw, columns, name)

    return open_


def _register(name: str, hub_id: str, open_: OpenFn, format_, columns: Sequence[str],
              formulation: str, splits: tuple[str, str], source_text: str, random_format: bool = False,
              subset_by=None) -> None:
    register(DatasetSource(
        name=name, family="pairwise", formulation=formulation, open=open_, format=format_,
        columns=tuple(columns), random_format=random_format, hub_id=hub_id, hub_splits=splits,
        source_text=source_text, label_words=("A", "B"), subset_by=subset_by))


_register("helpsteer2_pairwise", "nvidia/HelpSteer2", _helpsteer2_open, format_helpsteer2,
          HELPSTEER2_COLUMNS, splits=("train", "val"),
          formulation="'Question: {prompt}\\nAnswer A: {response_1}\\nAnswer B: {response_2}' (the "
          "testbed's pair); label: B preferred (preference_strength > 0; ties left out)",
          source_text="nvidia/HelpSteer2 (preference/) split column train/val")
_register("helpsteer3_pairwise", "nvidia/HelpSteer3", _helpsteer3_open, format_helpsteer3,
          HELPSTEER3_COLUMNS, splits=("train", "validation"),
          formulation="'Question: {context}\\nAnswer A: {response1}\\nAnswer B: {response2}' (the "
          "testbed's pair); label: B preferred (overall_preference > 0; ties left out)",
          source_text="nvidia/HelpSteer3 (preference) train/validation")

RM_BENCH_COLUMNS = ("prompt", "chosen", "rejected", "domain")
REWARD_BENCH_2_COLUMNS = ("prompt", "chosen", "rejected", "subset")

_register("rm_bench_pairwise", "THU-KEG/RM-Bench",
          _pool_open("rm_bench_pairwise", "THU-KEG/RM-Bench", "train", ["train", "total_dataset"],
                     RM_BENCH_COLUMNS),
          format_reward_benchmark, RM_BENCH_COLUMNS, splits=("train", "train"),
          formulation="the testbed's pair: one chosen and one rejected response of the 3 styles "
          "each, drawn and ordered by a seeded coin; label: B is the chosen; subset: domain",
          source_text="THU-KEG/RM-Bench train (pool; test cut from it)", random_format=True,
          subset_by=_subset_in("domain"))
_register("reward_bench_2_pairwise", "allenai/reward-bench-2",
          _pool_open("reward_bench_2_pairwise", "allenai/reward-bench-2", "test", ["test"],
                     REWARD_BENCH_2_COLUMNS),
          format_reward_benchmark, REWARD_BENCH_2_COLUMNS, splits=("test", "test"),
          formulation="the testbed's pair: one chosen and one rejected completion, drawn and "
          "ordered by a seeded coin; label: B is the chosen; subset: the hub's subset",
          source_text="allenai/reward-bench-2 test (pool; test cut from it)", random_format=True,
          subset_by=_subset_in("subset"))
