"""The task suite, offline: every hub entry is loaded through the real path (data.path pointing at
parquet files of the hub's own schema, laid out as the hub lays them out), and each example is
checked against a golden text, its label and the class balance. The golden texts are written here
by hand, independently of the formatters. No test needs the hub: where the hub call itself is
checked, `datasets.load_dataset` is replaced (the hub cannot be reached from CI)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import pytest

from w2s_scale import cli
from w2s_scale.config import DataConfig
from w2s_scale.data.sources import DATASETS, DataError, load_split
from w2s_scale.data.splits import make_splits

# the names EleutherAI/w2s gives its 25 datasets (the paper's 22, sciq_with_support, anthropic_hh,
# amazon_polarity), plus our pairwise reformulation of anthropic_hh
NAMED = ["anli-r2", "boolq", "cola", "cosmos_qa", "dream", "ethics-deontology", "ethics-justice",
         "ethics-virtue", "ethics-utilitarianism", "hellaswag", "mc_taco", "multirc", "openbookqa",
         "paws", "piqa", "quail", "quartz", "sciq", "social_i_qa", "sst2", "twitter-sentiment", "wic",
         "amazon_polarity", "sciq_with_support", "anthropic_hh"]

N_TRAIN, N_TEST = 60, 24  # rows written per split
# the automated-W2S testbed's hub sources: laid out unlike the others (a split column, one-split
# benchmarks), each tested on rows of its hub's schema in tests/test_testbed_data.py
TESTED_ELSEWHERE = {"helpsteer2_pairwise", "helpsteer3_pairwise", "rm_bench_pairwise",
                    "reward_bench_2_pairwise"}


@dataclass
class Spec:
    row: Callable[[int], dict]  # row i in the hub's schema
    texts: Callable[[int], dict[int, set[str]]]  # the acceptable texts of row i, per label
    answers: Optional[Callable[[int], tuple[str, list[str]]]] = None  # multiple choice: true, wrong
    coin: bool = False  # the label is a seeded coin, not the dataset's


def labelled(row: Callable[[int], dict], text: Callable[[int], str],
             label: Callable[[int], int]) -> Spec:
    return Spec(row, lambda i: {label(i): {text(i)}})


def choice(row: Callable[[int], dict], template: Callable[[int, str], str],
           answers: Callable[[int], tuple[str, list[str]]]) -> Spec:
    def texts(i: int) -> dict[int, set[str]]:
        true, wrong = answers(i)
        return {1: {template(i, true)}, 0: {template(i, w) for w in wrong}}

    return Spec(row, texts, answers, coin=True)


def four(i: int) -> list[str]:
    return [f"opt{k}-{i}" for k in range(4)]


def nota(i: int) -> bool:  # cosmos_qa rows whose true answer is "None of the above"
    return i % 10 == 0


def cosmos_row(i: int) -> dict:
    opts = four(i)
    if nota(i):
        opts[3] = "None of the above choices ."
    return {"id": f"c{i}", "context": f"Story {i}.", "question": "Why?",
            **{f"answer{k}": o for k, o in enumerate(opts)}, "label": 3 if nota(i) else i % 3}


def cosmos_texts(i: int) -> dict[int, set[str]]:
    row = cosmos_row(i)
    shown = {f"Context: Story {i}.\nQuestion: Why?\nAnswer: {row[f'answer{k}']}" for k in range(4)}
    true_answer = row[f"answer{row['label']}"]
    true = f"Context: Story {i}.\nQuestion: Why?\nAnswer: {true_answer}"
    return {0: shown - {true}} if nota(i) else {1: {true}, 0: shown - {true}}


def sciq_row(i: int) -> dict:
    return {"question": f"What is {i}?", "distractor3": f"d3-{i}", "distractor1": f"d1-{i}",
            "distractor2": f"d2-{i}", "correct_answer": f"right-{i}",
            "support": "" if i % 5 == 0 else f"Fact {i}."}


def sciq_answers(i: int) -> tuple[str, list[str]]:
    return f"right-{i}", [f"d1-{i}", f"d2-{i}", f"d3-{i}"]


def hh_row(i: int) -> dict:
    dialogue = f"\n\nHuman: question {i}?\n\nAssistant: sure\n\nHuman: more {i}?\n\nAssistant:"
    return {"chosen": dialogue + f" good answer {i}", "rejected": dialogue + f" bad answer {i}"}


def hh_pair(i: int, first: str, second: str) -> str:
    return (f"Human: question {i}?\n\nAssistant: sure\n\nHuman: more {i}?\n\nAssistant:\n\n"
            f"Response A: {first} answer {i}\n\nResponse B: {second} answer {i}\n\n"
            f"Is response A the better one?")


def lettered(i: int, n: int) -> dict:
    letters = "ABCD"[:n]
    return {"text": four(i)[:n], "label": list(letters)}


SPECS: dict[str, Spec] = {
    # --- binary, the dataset's label
    "amazon_polarity": labelled(
        lambda i: {"label": i % 2, "title": "" if i % 7 == 0 else f"Title {i}", "content": f"Body {i}."},
        lambda i: f"{'' if i % 7 == 0 else f'Title {i}'} Body {i}.", lambda i: i % 2),
    "cola": labelled(lambda i: {"sentence": f"The cat sat {i}.", "label": i % 2, "idx": i},
                     lambda i: f"The cat sat {i}.", lambda i: i % 2),
    "sst2": labelled(lambda i: {"idx": i, "sentence": f"a fine film {i}", "label": i % 2},
                     lambda i: f"a fine film {i}", lambda i: i % 2),
    "twitter-sentiment": labelled(lambda i: {"text": f"so happy {i}", "label": i % 2},
                                  lambda i: f"so happy {i}", lambda i: i % 2),
    "ethics-deontology": labelled(
        lambda i: {"group_id": i, "label": i % 2, "scenario": f"I must feed the cat {i}.",
                   "excuse": f"But it ate {i}."},
        lambda i: f"Scenario: I must feed the cat {i}.\nExcuse: But it ate {i}.\nIs the excuse reasonable?",
        lambda i: i % 2),
    "ethics-justice": labelled(
        lambda i: {"group_id": i, "label": i % 2, "scenario": f"I deserve pay {i}."},
        lambda i: f"Statement: I deserve pay {i}.\nIs this reasonable and just?", lambda i: i % 2),
    "ethics-virtue": labelled(
        lambda i: {"group_id": i, "label": i % 2, "scenario": f"He gave away {i} coats. [SEP] generous"},
        lambda i: f"Behaviour: He gave away {i} coats.\nTrait: generous\nDoes the behaviour show the trait?",
        lambda i: i % 2),
    "anli-r2": labelled(
        lambda i: {"uid": f"u{i}", "premise": f"P {i}.", "hypothesis": f"H {i}.", "label": i % 3,
                   "reason": ""},
        lambda i: f"Premise: P {i}.\nHypothesis: H {i}.\nDoes the premise entail the hypothesis?",
        lambda i: int(i % 3 == 0)),  # anli: 0 = entailment
    "paws": labelled(
        lambda i: {"id": i, "sentence1": f"A {i}.", "sentence2": f"B {i}.", "label": i % 2},
        lambda i: f"Sentence 1: A {i}.\nSentence 2: B {i}.\nDo the two sentences mean the same?",
        lambda i: i % 2),
    "wic": labelled(
        lambda i: {"word": "bank", "sentence1": f"river bank {i}", "sentence2": f"bank loan {i}",
                   "start1": 6, "start2": 0, "end1": 10, "end2": 4, "idx": i, "label": i % 2},
        lambda i: (f"Sentence 1: river bank {i}\nSentence 2: bank loan {i}\n"
                   f"Does the word \"bank\" have the same meaning in both sentences?"), lambda i: i % 2),
    "boolq": labelled(
        lambda i: {"question": f"is it {i}", "answer": bool(i % 2), "passage": f"It is {i}."},
        lambda i: f"Passage: It is {i}.\nQuestion: is it {i}", lambda i: i % 2),
    "multirc": labelled(
        lambda i: {"paragraph": f"Para {i}.", "question": f"Q{i}?", "answer": f"ans {i}",
                   "idx": {"paragraph": 0, "question": i, "answer": 0}, "label": i % 2},
        lambda i: f"Passage: Para {i}.\nQuestion: Q{i}?\nCandidate answer: ans {i}\nIs the candidate answer correct?",
        lambda i: i % 2),
    "mc_taco": labelled(
        lambda i: {"sentence": f"He slept {i}.", "question": "How long?", "answer": f"{i} hours",
                   "label": i % 2, "category": "Event Duration"},
        lambda i: (f"He slept {i}.\nQuestion: How long?\nCandidate answer: {i} hours\n"
                   f"Is the candidate answer plausible?"), lambda i: i % 2),
    # --- multiple choice: a seeded coin shows the true answer or one wrong option
    "sciq": choice(sciq_row, lambda i, a: f"Q: What is {i}? A: {a}", sciq_answers),
    "sciq_with_support": choice(
        sciq_row, lambda i, a: ("" if i % 5 == 0 else f"Passage: Fact {i}.\n") + f"Q: What is {i}? A: {a}",
        sciq_answers),
    "cosmos_qa": Spec(cosmos_row, cosmos_texts,
                      lambda i: (four(i)[i % 3], [o for o in four(i) if o != four(i)[i % 3]]), coin=True),
    "dream": choice(
        lambda i: {"id": i, "dialogue_id": f"d{i}", "dialogue": ["M: Hi.", f"W: Bye {i}."],
                   "question": f"Who left {i}?", "choice": four(i)[:3], "answer": four(i)[i % 3]},
        lambda i, a: f"M: Hi.\nW: Bye {i}.\nQuestion: Who left {i}?\nAnswer: {a}",
        lambda i: (four(i)[i % 3], [o for o in four(i)[:3] if o != four(i)[i % 3]])),
    "hellaswag": choice(
        lambda i: {"ind": i, "activity_label": "Cooking", "ctx_a": "A man", "ctx_b": "cooks",
                   "ctx": f"A man cooks {i}", "endings": four(i), "source_id": "s", "split": "train",
                   "split_type": "indomain", "label": str(i % 4)},
        lambda i, a: f"Context: A man cooks {i}\nContinuation: {a}",
        lambda i: (four(i)[i % 4], [o for k, o in enumerate(four(i)) if k != i % 4])),
    "openbookqa": choice(
        lambda i: {"id": f"o{i}", "question_stem": f"Stem {i}", "choices": lettered(i, 4),
                   "answerKey": "ABCD"[i % 4]},
        lambda i, a: f"Question: Stem {i}\nAnswer: {a}",
        lambda i: (four(i)[i % 4], [o for k, o in enumerate(four(i)) if k != i % 4])),
    "piqa": choice(
        lambda i: {"goal": f"Open jar {i}", "sol1": f"twist {i}", "sol2": f"smash {i}", "label": i % 2},
        lambda i, a: f"Goal: Open jar {i}\nSolution: {a}",
        lambda i: ((f"twist {i}", [f"smash {i}"]) if i % 2 == 0 else (f"smash {i}", [f"twist {i}"]))),
    "quail": choice(
        lambda i: {"id": f"q{i}", "context_id": "c", "question_id": "q", "domain": "fiction",
                   "context": f"Text {i}.", "question": f"What {i}?", "question_type": "Causality",
                   "answers": four(i), "correct_answer_id": i % 4},
        lambda i, a: f"Passage: Text {i}.\nQuestion: What {i}?\nAnswer: {a}",
        lambda i: (four(i)[i % 4], [o for k, o in enumerate(four(i)) if k != i % 4])),
    "quartz": choice(
        lambda i: {"id": f"z{i}", "question": f"Faster {i}?", "choices": lettered(i, 2),
                   "answerKey": "AB"[i % 2], "para": f"Speed {i}.", "para_id": "p"},
        lambda i, a: f"Passage: Speed {i}.\nQuestion: Faster {i}?\nAnswer: {a}",
        lambda i: (four(i)[i % 2], [four(i)[1 - i % 2]])),
    "social_i_qa": choice(
        lambda i: {"context": f"Ann helped {i}.", "question": "Why?", "answerA": four(i)[0],
                   "answerB": four(i)[1], "answerC": four(i)[2], "label": f"{1 + i % 3}\n"},
        lambda i, a: f"Context: Ann helped {i}.\nQuestion: Why?\nAnswer: {a}",
        lambda i: (four(i)[i % 3], [o for k, o in enumerate(four(i)[:3]) if k != i % 3])),
    # --- pairs
    "anthropic_hh": choice(hh_row, lambda i, a: a,
                           lambda i: (hh_row(i)["chosen"], [hh_row(i)["rejected"]])),
    "anthropic_hh_pairwise": Spec(
        hh_row, lambda i: {1: {hh_pair(i, "good", "bad")}, 0: {hh_pair(i, "bad", "good")}}, coin=True),
    "ethics-utilitarianism": Spec(
        lambda i: {"baseline": f"I won {i}.", "less_pleasant": f"I lost {i}."},
        lambda i: {1: {f"Scenario 1: I won {i}.\nScenario 2: I lost {i}.\nIs scenario 1 more pleasant than scenario 2?"},
                   0: {f"Scenario 1: I lost {i}.\nScenario 2: I won {i}.\nIs scenario 1 more pleasant than scenario 2?"}},
        coin=True),
}

# EleutherAI's formulation of three of them: every option listed, then one asked about (same rows)
SPECS["hellaswag_choices"] = choice(
    SPECS["hellaswag"].row,
    lambda i, a: "Context: A man cooks {}\nEndings:\n{}\nIs the best ending \"{}\"?".format(
        i, "\n".join(four(i)), a),
    SPECS["hellaswag"].answers)
SPECS["openbookqa_choices"] = choice(
    SPECS["openbookqa"].row,
    lambda i, a: "Question: Stem {}\nChoices:\n{}\nIs the answer \"{}\"?".format(
        i, "\n".join(f"{letter}) {o}" for letter, o in zip("ABCD", four(i))), a),
    SPECS["openbookqa"].answers)
SPECS["social_i_qa_choices"] = choice(
    SPECS["social_i_qa"].row,
    lambda i, a: "Context: Ann helped {}.\nQuestion: Why?\nChoices:\n{}\nIs the answer \"{}\"?".format(
        i, "\n".join(four(i)[:3]), a),
    SPECS["social_i_qa"].answers)


def write_hub_layout(folder: Path, name: str) -> Path:
    """Rows 0..N_TRAIN-1 as the train split and N_TRAIN.. as the test split, named by the hub's
    split names, in the hub's layout: `data/<split>-00000-of-00001.parquet`, or for datasets read
    from the parquet conversion, its `<config>/<split>/0000.parquet`."""
    source, spec = DATASETS[name], SPECS[name]
    for hub_split, rows in zip(source.hub_splits, (range(N_TRAIN), range(N_TRAIN, N_TRAIN + N_TEST))):
        if source.revision:
            path = folder / (source.hub_config or "default") / hub_split / "0000.parquet"
        else:
            path = folder / "data" / f"{hub_split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([spec.row(i) for i in rows]).to_parquet(path)
    return folder


def row_of(example, split: str) -> int:
    return int(example.id.split("-")[1]) + (N_TRAIN if split == "test" else 0)


def test_every_named_dataset_is_registered_and_every_hub_entry_has_a_spec():
    assert set(NAMED) | {"anthropic_hh_pairwise"} <= set(DATASETS)
    assert {n for n, s in DATASETS.items() if s.hub_id} - TESTED_ELSEWHERE == set(SPECS)
    for name, source in DATASETS.items():
        assert source.family in ("binary", "multiple-choice", "pairwise", "local"), name
        assert source.formulation and "\n" not in source.formulation, name
        if source.question is not None:  # multiple choice is formatted by the coin rule
            assert source.random_format, name


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hub_schema_rows_give_the_golden_texts_labels_and_balance(name, tmp_path):
    spec = SPECS[name]
    c = DataConfig(dataset=name, path=str(write_hub_layout(tmp_path, name)), n_train=24, n_test=8)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        examples = load_split(c, split, 3)
        assert len(examples) == n  # no row is left out
        for e in examples:
            i = row_of(e, split)
            allowed = spec.texts(i)
            assert e.label in allowed, (name, i, e)
            assert e.text in allowed[e.label], (name, i, e.text, allowed[e.label])
        assert load_split(c, split, 3) == examples  # deterministic under a seed
    train = load_split(c, "train", 3)
    if spec.coin:
        fair = [e for e in train if len(spec.texts(row_of(e, "train"))) == 2]
        assert 0.25 < sum(e.label for e in fair) / len(fair) < 0.75, name
        assert load_split(c, "train", 4) != train  # the coin follows the seed
    # balanced splits: exactly half of each of A, B and test are label 1
    s = make_splits(c.model_copy(update={"balance": True}), 0)
    assert s.counts == s.requested == {"a": 12, "b": 12, "test": 8}, (name, s.notes)
    for part in (s.a, s.b, s.test):
        assert 2 * sum(e.label for e in part) == len(part)


class ForcedCoin:
    """Stands in for the formatting rng: the coin says `true`, the wrong option drawn is `pick`."""

    def __init__(self, true: bool, pick: int = 0):
        self.true, self.pick = true, pick

    def random(self) -> float:
        return 0.0 if self.true else 0.99

    def integers(self, n: int) -> int:
        return self.pick % n


def split_around(text: str, answer: str) -> set[tuple[str, str]]:
    """Every (before, after) with text == before + answer + after."""
    return {(text[:k], text[k + len(answer):]) for k in range(len(text) - len(answer) + 1)
            if text[k:k + len(answer)] == answer}


MULTIPLE_CHOICE = sorted(n for n, s in DATASETS.items() if s.question is not None)


def test_multiple_choice_entries_are_the_ones_expected():
    assert set(MULTIPLE_CHOICE) == {"sciq", "sciq_with_support", "cosmos_qa", "dream", "hellaswag",
                                    "openbookqa", "piqa", "quail", "quartz", "social_i_qa",
                                    "anthropic_hh", "hellaswag_choices", "openbookqa_choices",
                                    "social_i_qa_choices"}
    assert all(SPECS[n].answers for n in MULTIPLE_CHOICE)


@pytest.mark.parametrize("name", MULTIPLE_CHOICE)
def test_multiple_choice_positive_and_negative_differ_only_in_the_answer(name):
    """The label must not be readable from the format: with the coin forced each way, the true and
    every wrong version of one question are the same text around a different answer."""
    source, spec = DATASETS[name], SPECS[name]
    checked = 0
    for i in range(40):
        row = spec.row(i)
        if name == "cosmos_qa" and nota(i):
            continue  # no true version to compare (checked below)
        true, wrong = spec.answers(i)
        pos_text, pos_label = source.format(row, ForcedCoin(True), f"row {i}")
        assert pos_label == 1
        for k in range(len(wrong)):
            neg_text, neg_label = source.format(row, ForcedCoin(False, k), f"row {i}")
            assert neg_label == 0
            shown = [w for w in wrong if split_around(neg_text, w)]
            assert shown, (name, neg_text)
            assert any(split_around(pos_text, true) & split_around(neg_text, w) for w in shown), \
                (name, pos_text, neg_text)
            checked += 1
    assert checked >= 40


def test_cosmos_qa_none_of_the_above_is_always_label_0():
    source = DATASETS["cosmos_qa"]
    row = cosmos_row(10)
    for coin in (True, False):
        text, label = source.format(row, ForcedCoin(coin), "row 10")
        assert label == 0 and "None of the above" not in text


def test_hub_loading_reads_script_datasets_from_the_parquet_conversion(monkeypatch):
    """The call made to the hub (replaced here: CI has no hub): a loading-script dataset is read
    from its refs/convert/parquet copy, a plain one with its config and split names."""
    import datasets

    calls = []

    def fake_load(path, *args, **kw):
        calls.append((path, args, kw))
        name = "cosmos_qa" if path == "parquet" else "anli-r2"
        return datasets.Dataset.from_list([SPECS[name].row(i) for i in range(20)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert len(load_split(DataConfig(dataset="cosmos_qa"), "test", 0)) == 20
    assert calls[-1] == ("parquet", (), {
        "data_files": {"validation": "hf://datasets/allenai/cosmos_qa@refs%2Fconvert%2Fparquet/"
                                     "default/validation/*.parquet"}, "split": "validation"})
    assert len(load_split(DataConfig(dataset="anli-r2"), "train", 0)) == 20
    assert calls[-1] == ("facebook/anli", (None,), {"split": "train_r2", "revision": None})


@pytest.mark.parametrize("name, layout", [
    ("mc_taco", "test.{jsonl,csv,parquet} (the train split) and validation.{jsonl,csv,parquet}"),
    ("anli-r2", "train_r2.{jsonl,csv,parquet} (the train split) and test_r2.{jsonl,csv,parquet}"),
])
def test_hub_unreachable_says_which_local_layout_works(name, layout, monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach the hub\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        load_split(DataConfig(dataset=name), "train", 0)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("data.dataset: could not load")
    assert f"set data.path to a folder with {layout}" in msg
    assert str(list(DATASETS[name].columns)) in msg


def test_local_file_of_the_wrong_schema_names_the_columns(tmp_path):
    pd.DataFrame([{"question": "q", "answers": ["a", "b"]}]).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(DataError, match=r"data\.path: .*x\.parquet has no column 'context' \(quail "
                                        r"needs \['context', 'question', 'answers', "
                                        r"'correct_answer_id'\]"):
        load_split(DataConfig(dataset="quail", path=str(tmp_path / "x.parquet")), "train", 0)


def test_w2s_datasets_prints_the_registry(capsys):
    assert cli.main(["datasets"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for name in NAMED + ["anthropic_hh_pairwise", "jsonl", "movie_snippets"]:
        assert name in lines, name
    assert "multiple-choice" in lines["sciq"] and "11,679" in lines["sciq"]
    assert "pairwise" in lines["anthropic_hh_pairwise"]
    assert "@parquet" in lines["cosmos_qa"] and "train/validation" in lines["cosmos_qa"]
    assert "test/validation" in lines["mc_taco"]
