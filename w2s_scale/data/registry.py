"""The dataset registry: one declarative entry per dataset.

An entry says where the rows come from (a hub id, its config, which hub split serves as train and
which as test, or local files) and how one row becomes (text, label). Hub entries are built with
`hub_task(...)`: the formatter is either a plain `format(row, rng, where)` or, for multiple-choice
tasks, a `question(row, where) -> Choice`, which `choice_format` turns into the reference's binary
task (a seeded coin shows the true answer, label 1, or one random wrong option, label 0, in the same
template, so the format never tells the label). The entries live in w2s_scale/data/tasks/<family>.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence

import numpy as np

from w2s_scale.config import DataConfig
from w2s_scale.data.groups import GroupKey
from w2s_scale.data.readers import PARQUET_BRANCH, RawRows, hub_split, layout_hint, local_split
from w2s_scale.data.values import DataError, Formatted, Split

Family = Literal["binary", "multiple-choice", "pairwise", "local"]
FormatFn = Callable[[dict, Optional[np.random.Generator], str], Formatted]


@dataclass(frozen=True)
class Choice:
    """One multiple-choice question, ready to show one answer: text = before + answer + after."""
    before: str
    after: str
    true: str
    wrong: Sequence[str]  # the wrong options; one is drawn when the coin says "wrong"
    never_true: bool = False  # e.g. cosmos_qa's "None of the above": whatever is shown is wrong


def render(choice: Choice, show_true: bool, wrong_pick: int) -> tuple[str, int]:
    answer = choice.true if show_true else choice.wrong[wrong_pick]
    return choice.before + answer + choice.after, int(show_true)


def choice_format(question: Callable[[dict, str], Optional[Choice]]) -> FormatFn:
    """The reference's multiple-choice -> binary rule, one example per question."""
    def format_(row: dict, rng: Optional[np.random.Generator], where: str) -> Formatted:
        choice = question(row, where)
        if choice is None:
            return None
        assert rng is not None
        coin = rng.random() < 0.5  # drawn first, as the reference does
        show_true = coin and not choice.never_true
        if not show_true and not choice.wrong:
            return None  # nothing wrong to show
        pick = 0 if show_true else int(rng.integers(len(choice.wrong)))
        return render(choice, show_true, pick)

    return format_


@dataclass(frozen=True)
class DatasetSource:
    """name -> rows -> (text, label).

    `format(row, rng, where)` turns one stored row into (text, label), or None to leave it out; `rng`
    is a numpy Generator seeded from (seed, split, row index) when `random_format`, else None.
    `open(cfg, split)` returns the split's stored rows, or None when there is no separate test split.
    `eager`: format and validate every row when the split is opened (local files of our own schema).
    `question` (multiple-choice entries): the row as a `Choice`, what `format` shows one answer of.
    """
    name: str
    family: Family
    formulation: str  # one line: what is shown and what the label means
    open: Callable[[DataConfig, Split], Optional[RawRows]]
    format: FormatFn
    columns: tuple[str, ...] = ()  # columns `format` reads; () for the configurable local sources
    random_format: bool = False
    eager: bool = False
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    hub_splits: tuple[str, str] = ("train", "test")  # the hub splits serving as train and as test
    revision: Optional[str] = None
    sizes: tuple[Optional[int], Optional[int]] = (None, None)  # rows of those splits, from the hub
    question: Optional[Callable[[dict, str], Optional[Choice]]] = None
    source_text: str = ""  # where the rows come from, for `w2s datasets`
    num_classes: int = 2  # K: labels are 0..K-1 (the model's head has K outputs)
    # rows that share a question, passage or scenario: the key of a row's group (data/groups.py),
    # so A and B never split a group; None: every row stands alone
    group_by: Optional[GroupKey] = None
    # head: label_tokens: the dataset's own label word per class (class 0 first), as its prompt
    # asks for them (the testbed's "A"/"B"); None: False/True for two classes (prompts.py)
    label_words: Optional[tuple[str, ...]] = None
    # the row's test subset (Example.subset): metrics and PGR are also reported per subset;
    # None: no subsets
    subset_by: Optional[Callable[[dict, str], Optional[str]]] = None
    # A and B are given, not cut: the train split is A's file followed by B's (RawRows.parts holds
    # their lengths), each used whole in file order, and the test split whole (data/splits.py)
    fixed_parts: bool = False
    # the part the strong ceiling trains on: "a" (the reference's: the weak model's ground truth)
    # or "b" (the testbed's: the ground truth of the documents the students learn from)
    ceiling_on: Literal["a", "b"] = "a"


DATASETS: dict[str, DatasetSource] = {}
LOCAL_FORMATS = ("jsonl", "csv", "parquet")  # the configurable local-file sources (any K)


def register(source: DatasetSource) -> DatasetSource:
    if source.name in DATASETS:
        raise ValueError(f"dataset {source.name!r} is registered twice")
    DATASETS[source.name] = source
    return source


def _check_columns(raw: RawRows, needed: Sequence[str], name: str) -> None:
    for col in needed:
        if col not in raw.columns:
            raise DataError(f"{raw.field}: {raw.where} has no column '{col}' ({name} needs "
                            f"{list(needed)}, found {raw.columns}); give files of the hub's schema")


def _hub_open(name: str, hub_id: str, config: Optional[str], splits: tuple[str, str], revision: Optional[str],
              columns: Sequence[str]) -> Callable[[DataConfig, Split], Optional[RawRows]]:
    hint = layout_hint(splits[0], splits[1], columns)

    # a local folder's test split: the hub's name for it, else test / validation files (never the
    # split that serves as train: mc_taco trains on the hub's "test")
    test_names = [splits[1], *(n for n in ("test", "validation") if n not in splits)]

    def open_(cfg: DataConfig, split: Split) -> Optional[RawRows]:
        if cfg.path:
            raw = local_split(cfg, split, splits[0], test_names)
        else:
            raw = hub_split(hub_id, config, splits[0] if split == "train" else splits[1],
                            revision, hint)
        if raw is not None:
            _check_columns(raw, columns, name)
        return raw

    return open_


def hub_task(name: str, hub_id: str, *, family: Family, formulation: str, columns: Sequence[str],
             format: Optional[FormatFn] = None,
             question: Optional[Callable[[dict, str], Optional[Choice]]] = None,
             config: Optional[str] = None, splits: tuple[str, str] = ("train", "test"),
             random_format: bool = False, script: bool = False,
             sizes: tuple[Optional[int], Optional[int]] = (None, None),
             group_by: Optional[GroupKey] = None) -> DatasetSource:
    """Register one hub dataset. `script`: the hub repo is a loading script, so read the hub's
    parquet conversion instead (`config` is then the conversion's folder, e.g. "plain_text")."""
    if (format is None) == (question is None):
        raise ValueError(f"{name}: give exactly one of format= or question=")
    revision = PARQUET_BRANCH if script else None
    source = f"{hub_id}" + (f" ({config})" if config else "") + (" @parquet" if script else "")
    return register(DatasetSource(
        name=name, family=family, formulation=formulation,
        open=_hub_open(name, hub_id, config, splits, revision, columns),
        format=format or choice_format(question),  # type: ignore[arg-type]
        columns=tuple(columns), random_format=random_format or question is not None,
        hub_id=hub_id, hub_config=config, hub_splits=splits, revision=revision, sizes=sizes,
        question=question, source_text=f"{source} {splits[0]}/{splits[1]}", group_by=group_by))
