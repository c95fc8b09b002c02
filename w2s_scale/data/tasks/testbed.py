"""The automated-W2S testbed's data (Anthropic's sandbox for automated weak-to-strong research,
safety-research/automated-w2s-research) as two datasets, read from one of its dataset folders.

The folder holds three JSON-lines files: `train_label.jsonl` (the weak model's ground truth: our
A), `train_unlabel.jsonl` (what the weak model labels and the students learn from: our B) and
`test.jsonl`. Rows are either pairwise (`prompt`, `first`, `second`, `label` "A" or "B": the
chat set) or binary (`question`, `choice`, `label` true or false: the math and code sets). Test
rows carry `subset`, which the testbed's scripts/prepare_data.py strips with the labels and
`difficulty` and its evaluation (core/eval.py) reports accuracy per value of: in- and
out-of-distribution test sets. Its values are kept as they are written.

What is the testbed's: the files, the fields, the label meaning (`A` = class 0 = the first
answer is the better one; `false` = class 0), and the prompts, which "{text}\\nLabel:" (the
label-token head's default template) rebuilds from our texts exactly. What is ours: A and B are
used whole in file order (data/splits.py, `fixed_parts`), the strong ceiling trains on B's
ground truth as the testbed's does (`ceiling_on="b"`), and data.n_train / data.n_test cap the
files as the testbed's --train-size / --test-size do (the first rows of each). The testbed's code
is not used or copied.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from w2s_scale.config import DataConfig
from w2s_scale.data.readers import RawRows, concat, read_file
from w2s_scale.data.registry import DatasetSource, register
from w2s_scale.data.values import (DataError, Formatted, Split, as_label, as_text, get,
                                   one_line)

FILES = ("train_label", "train_unlabel", "test")  # A, B, test
SUBSET = "subset"  # the testbed's field naming a test row's set (prepare_data.py's STRIP_FIELDS)
PAIRWISE_FIELDS = ("prompt", "first", "second", "label")
BINARY_FIELDS = ("question", "choice", "label")


def pair_text(prompt: str, first: str, second: str) -> str:
    """The testbed's comparison prompt without its "\\nLabel:" cue (the prompt template adds it)."""
    return f"Question: {prompt}\nAnswer A: {first}\nAnswer B: {second}"


def choice_text(question: str, choice: str) -> str:
    """The testbed's binary prompt without its "\\nLabel:" cue."""
    return f"Question: {question}\nAnswer: {choice}"


def subset_of(row: dict, where: str) -> Optional[str]:
    value = row.get(SUBSET)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where} has {SUBSET} {one_line(repr(value), 60)}; the test set's "
                        f"'{SUBSET}' must name it as text (e.g. the in- or out-of-distribution set)"
                        f": fix that row or remove the field")
    return value.strip()


def ab_label(value, where: str) -> int:
    """The testbed's A/B label: "A" (the first answer is the better one) is class 0, "B" class 1;
    0 / 1 pass through, as the testbed's loader lets them."""
    if isinstance(value, str) and value.strip() in ("A", "B"):
        return int(value.strip() == "B")
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return value
    raise DataError(f"{where} has label {one_line(repr(value), 60)} in field 'label'; aar_pairwise "
                    f"labels are \"A\" (the first answer is better) or \"B\": fix that row")


def format_pairwise(row: dict, rng, where: str) -> Formatted:
    prompt, first, second = (as_text(get(row, k, where), where, k) for k in PAIRWISE_FIELDS[:3])
    return pair_text(prompt, first, second), ab_label(get(row, "label", where), where)


def format_binary(row: dict, rng, where: str) -> Formatted:
    question, choice = (as_text(get(row, k, where), where, k) for k in BINARY_FIELDS[:2])
    label = as_label(get(row, "label", where), where, "label",
                     "aar_binary labels are true (the answer is correct) or false")
    return choice_text(question, choice), label


def _read(cfg: DataConfig, name: str, dataset: str, needed: tuple[str, ...], other: str) -> RawRows:
    if not cfg.path:
        raise DataError(f"data.path: dataset '{dataset}' reads one of the testbed's dataset folders; "
                        f"set data.path to a folder with {', '.join(f + '.jsonl' for f in FILES)}")
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.path: {folder} is not a folder; set data.path to the testbed's "
                        f"dataset folder (train_label.jsonl, train_unlabel.jsonl, test.jsonl)")
    path = folder / f"{name}.jsonl"
    if not path.is_file():
        raise DataError(f"data.path: {folder} has no {name}.jsonl; point data.path at a folder of "
                        f"the testbed's labeled_data/ (its data/ has no train_label.jsonl and no "
                        f"labels)")
    raw = read_file(path, "data.path", "jsonl")
    for col in needed:
        if col not in raw.columns:
            raise DataError(f"data.path: {path} has no field '{col}' ({dataset} reads "
                            f"{list(needed)}, found {raw.columns}); {other}")
    return raw


def _open(dataset: str, needed: tuple[str, ...], other: str):
    def open_(cfg: DataConfig, split: Split) -> Optional[RawRows]:
        if split == "test":
            if cfg.test_path:  # another test file of the same rows
                return read_file(Path(cfg.test_path).expanduser(), "data.test_path", "jsonl")
            return _read(cfg, "test", dataset, needed, other)
        a, b = (_read(cfg, name, dataset, needed, other) for name in FILES[:2])
        return concat([a, b], str(Path(cfg.path).expanduser()), "data.path")  # type: ignore[arg-type]

    return open_


register(DatasetSource(
    name="aar_pairwise", family="local", label_words=("A", "B"),
    formulation="the testbed's chat pairs 'Question: {prompt}\\nAnswer A: {first}\\nAnswer B: "
                "{second}'; label: 1 if B is the better answer (\"B\"); A/B/test are its files",
    source_text="local: the automated-W2S testbed's folder (train_label/train_unlabel/test.jsonl)",
    open=_open("aar_pairwise", PAIRWISE_FIELDS,
               "rows with question/choice are aar_binary's: set data.dataset: aar_binary"),
    format=format_pairwise, columns=PAIRWISE_FIELDS, eager=True, subset_by=subset_of,
    fixed_parts=True, ceiling_on="b"))

register(DatasetSource(
    name="aar_binary", family="local", label_words=("False", "True"),
    formulation="the testbed's math/code answers 'Question: {question}\\nAnswer: {choice}'; label: "
                "the answer is correct (true); A/B/test are its files",
    source_text="local: the automated-W2S testbed's folder (train_label/train_unlabel/test.jsonl)",
    open=_open("aar_binary", BINARY_FIELDS,
               "rows with prompt/first/second are aar_pairwise's: set data.dataset: aar_pairwise"),
    format=format_binary, columns=BINARY_FIELDS, eager=True, subset_by=subset_of,
    fixed_parts=True, ceiling_on="b"))
