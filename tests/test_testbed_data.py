"""The automated-W2S testbed as data (w2s_scale/data/tasks/testbed.py, preference.py): its folder
layout read as A / B / test with the testbed's semantics (the weak model trains on train_label,
labels train_unlabel, the ceiling trains on train_unlabel's ground truth), test subsets carried to
every metric and PGR, the public hub sources on rows of the hub's own schema, and bad input as
one line naming the file or field and the fix. The rows are written here by hand in the
testbed's and the hubs' formats; no test needs the hub."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_w2s, tiny_config, write_config
from w2s_scale.aggregate import format_paper_pgr, paper_pgr
from w2s_scale.config import DataConfig, ExperimentConfig
from w2s_scale.data.sources import DATASETS, DataError, load_split
from w2s_scale.data.splits import make_splits
from w2s_scale.planning import plan_experiment, plan_gt
from w2s_scale.report import format_subsets, summarize
from w2s_scale.subsets import subset_metrics


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pair_row(tag: str, i: int, subset: str | None = None) -> dict:
    row = {"prompt": f"{tag} question {i}", "first": f"{tag} answer one {i}",
           "second": f"{tag} answer two {i}", "label": "AB"[i % 2]}
    return row if subset is None else {**row, "subset": subset, "difficulty": "hard"}


def binary_row(tag: str, i: int, subset: str | None = None) -> dict:
    row = {"question": f"{tag} what is {i}+{i}?", "choice": f"{2 * i + i % 2}", "label": i % 2 == 0}
    return row if subset is None else {**row, "subset": subset}


def subset_of(i: int) -> str:
    return "id" if i < 6 else "ood"


def write_testbed(root: Path, make=pair_row, n_label: int = 10, n_unlabel: int = 14,
                   n_test: int = 12) -> Path:
    """A folder as the testbed's labeled_data/<dataset>/: test rows carry `subset`."""
    write_jsonl(root / "train_label.jsonl", [make("label", i) for i in range(n_label)])
    write_jsonl(root / "train_unlabel.jsonl", [make("unlabel", i) for i in range(n_unlabel)])
    write_jsonl(root / "test.jsonl", [make("test", i, subset_of(i)) for i in range(n_test)])
    return root


# --- the loader ----------------------------------------------------------------------------------

def test_pairwise_files_are_a_b_and_test_whole_with_the_testbeds_prompt_and_labels(tmp_path):
    cfg = DataConfig(dataset="aar_pairwise", path=str(write_testbed(tmp_path)))
    s = make_splits(cfg, 0)
    # A is train_label, B is train_unlabel, test is test.jsonl: whole, in file order, no re-cut
    assert [e.text.split("\n")[0] for e in s.a] == [f"Question: label question {i}" for i in range(10)]
    assert [e.text.split("\n")[0] for e in s.b] == [f"Question: unlabel question {i}" for i in range(14)]
    assert [e.text.split("\n")[0] for e in s.test] == [f"Question: test question {i}" for i in range(12)]
    assert s.counts == s.requested == {"a": 10, "b": 14, "test": 12} and not s.notes
    assert make_splits(cfg, 5).a == s.a  # the seed does not re-cut the files
    # the testbed's COMPARISON_TEMPLATE is "Question: ...\nAnswer A: ...\nAnswer B: ...\nLabel:"
    e = s.test[3]
    assert "{text}\nLabel:".format(text=e.text) == \
        "Question: test question 3\nAnswer A: test answer one 3\nAnswer B: test answer two 3\nLabel:"
    assert [x.label for x in s.a] == [i % 2 for i in range(10)]  # "A" -> 0, "B" -> 1
    assert DATASETS["aar_pairwise"].label_words == ("A", "B")
    # test rows keep their set; train rows have none written here
    assert [x.subset for x in s.test] == [subset_of(i) for i in range(12)]
    assert all(x.subset is None for x in s.a + s.b)


def test_binary_files_read_true_false_labels_and_the_testbeds_prompt(tmp_path):
    cfg = DataConfig(dataset="aar_binary", path=str(write_testbed(tmp_path, binary_row)))
    s = make_splits(cfg, 0)
    assert s.counts == {"a": 10, "b": 14, "test": 12}
    e = s.test[7]
    assert "{text}\nLabel:".format(text=e.text) == "Question: test what is 7+7?\nAnswer: 15\nLabel:"
    assert e.label == 0 and s.test[6].label == 1  # false -> class 0 ("False"), true -> 1
    assert e.subset == "ood" and s.test[0].subset == "id"
    assert DATASETS["aar_binary"].label_words == ("False", "True")


def test_n_train_and_n_test_cap_the_files_as_the_testbeds_train_and_test_size(tmp_path):
    cfg = DataConfig(dataset="aar_pairwise", path=str(write_testbed(tmp_path)), n_train=4, n_test=5)
    s = make_splits(cfg, 0)
    assert s.counts == {"a": 4, "b": 4, "test": 5}
    assert [e.id for e in s.a] == [f"train-{i}" for i in range(4)]
    assert [e.id for e in s.b] == [f"train-{10 + i}" for i in range(4)]  # B's first rows
    assert len(s.notes) == 3 and "raise data.n_train to 14" in s.notes[1]


@pytest.mark.parametrize("update, match", [
    ({"n_a": 4}, r"^data\.n_a: aar_pairwise's A is its own train_label file"),
    ({"balance": True}, r"^data\.balance: .*set data\.balance: false"),
])
def test_settings_that_would_re_cut_the_files_are_refused(tmp_path, update, match):
    cfg = DataConfig(dataset="aar_pairwise", path=str(write_testbed(tmp_path)), **update)
    with pytest.raises(DataError, match=match):
        make_splits(cfg, 0)


# --- A, B and the ceiling ------------------------------------------------------------------------

def experiment(path: Path, dataset: str = "aar_pairwise") -> ExperimentConfig:
    return ExperimentConfig(name="tb", results_dir=str(path / "results"), seeds=[0],
                            data={"dataset": dataset, "path": str(path)},
                            weak={"name": "gpt2"}, strong={"name": "gpt2-medium"}, losses=["xent"])


def test_weak_trains_on_a_and_the_ceiling_on_b(tmp_path):
    cfg = experiment(write_testbed(tmp_path))
    plans = {p.name: p for p in plan_experiment(cfg)}
    weak, ceiling = plans["gt-gpt2"], plans["gt-gpt2-medium-on-b"]
    assert (weak.trains_on, ceiling.trains_on) == ("a", "b")
    transfer = plans["w2s-gpt2-to-gpt2-medium-xent"]
    assert transfer.weak is weak  # the students learn the weak model's labels of B
    # the ceiling on B is another run than the same model's run on A (a sweep may need both)
    assert plan_gt(cfg, cfg.strong, 0).hash != ceiling.hash
    # what trains on what: A's, B's ground truth
    from w2s_scale.pipeline import gt_examples
    s = make_splits(cfg.data, 0)
    assert gt_examples(s, ceiling.train, ceiling.trains_on) == s.b
    assert gt_examples(s, weak.train, weak.trains_on) == s.a


def test_other_datasets_keep_their_ceiling_on_a_and_their_hashes(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"text": f"t {i}", "label": i % 2} for i in range(40)])
    cfg = ExperimentConfig(name="x", results_dir=str(tmp_path), seeds=[0],
                           data={"dataset": "jsonl", "path": str(tmp_path / "d.jsonl")},
                           weak={"name": "gpt2"}, strong={"name": "gpt2-medium"}, losses=["xent"])
    names = [p.name for p in plan_experiment(cfg)]
    assert names == ["gt-gpt2", "gt-gpt2-medium", "w2s-gpt2-to-gpt2-medium-xent"]
    assert plan_gt(cfg, cfg.strong, 0, ceiling=True) == plan_gt(cfg, cfg.strong, 0)


# --- per-subset metrics --------------------------------------------------------------------------

def test_subset_metrics_score_each_subset_alone():
    ids = ["a", "b", "c", "d", "e", "f"]
    labels = np.array([0, 1, 0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9], [0.8, 0.2]])
    got = subset_metrics(ids, labels, probs, {"a": "id", "b": "id", "c": "id", "d": "ood",
                                              "e": "ood", "f": "ood"})
    assert got["id"]["accuracy"] == pytest.approx(2 / 3) and got["id"]["n_test"] == 3
    assert got["ood"]["accuracy"] == pytest.approx(2 / 3)
    assert subset_metrics(ids, labels, probs, {}) == {}


def test_summaries_without_subsets_have_no_subset_columns():
    rows = [{"seed": s, "weak": "w", "strong": "s", "loss": "xent", "weak_acc": 0.6,
             "ceiling_acc": 0.8, "transfer_acc": 0.7, "weak_auc": 0.6, "ceiling_auc": 0.8,
             "transfer_auc": 0.7, "pgr": 0.5, "pgr_auc": 0.5} for s in (0, 1)]
    out = paper_pgr(rows)
    assert all("subset" not in r for r in out) and len(out) == 2
    assert "test subset" not in format_paper_pgr(out)


def test_experiment_reports_metrics_and_pgr_per_test_subset(tiny_models, tmp_path):
    """The real command on tiny random GPT-2 models: every run's metrics.json and predictions
    carry the subsets, and the summary tables give PGR per subset with intervals."""
    folder = write_testbed(tmp_path / "tb", n_label=40, n_unlabel=40, n_test=24)
    config = tiny_config(tmp_path / "results", tiny_models, folder, losses=["xent"])
    config["data"] = {"dataset": "aar_pairwise", "path": str(folder), "max_length": 48}
    config["train"].update(zero_stage=0)
    proc = run_w2s(["experiment", "-c", str(write_config(tmp_path / "cfg.yaml", config))], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seed = tmp_path / "results/tiny/aar_pairwise/seed0"
    assert sorted(p.name for p in seed.iterdir() if not p.name.startswith(".")) == [
        "gt-gpt2-strong-on-b", "gt-gpt2-weak", "w2s-gpt2-weak-to-gpt2-strong-xent"]
    for run in seed.iterdir():
        if run.name.startswith("."):
            continue
        metrics = json.loads((run / "metrics.json").read_text())
        assert set(metrics["subsets"]) == {"id", "ood"}
        assert metrics["subsets"]["id"]["n_test"] == 6 and metrics["subsets"]["ood"]["n_test"] == 18
        preds = [json.loads(x) for x in (run / "test_predictions.jsonl").read_text().splitlines()]
        assert {p["subset"] for p in preds} == {"id", "ood"}
    # the ceiling trained on B's 40 documents
    assert json.loads((seed / "gt-gpt2-strong-on-b/metrics.json").read_text())["n_train"] == 40
    summary = json.loads((tmp_path / "results/tiny/summary.json").read_text())
    per_seed = summary[0]
    for name in ("id", "ood"):
        for key in ("weak_acc", "ceiling_acc", "transfer_acc", "pgr", "pgr_lo", "pgr_hi", "pgr_auc"):
            assert f"subset.{name}.{key}" in per_seed
        for key in ("pgr", "pgr_lo", "pgr_hi"):  # the row over the seeds, by the one definition
            assert f"subset.{name}.{key}" in summary[-1]
    paper = json.loads((tmp_path / "results/tiny/paper_pgr.json").read_text())
    assert {r.get("subset") for r in paper} == {None, "id", "ood"}
    assert "test subset 'ood'" in proc.stdout and "test subset" in proc.stdout


def test_summarize_uses_the_ceiling_on_b(tmp_path):
    """report.summarize takes the strong model's run on B as the ceiling, not its run on A."""
    cfg = experiment(write_testbed(tmp_path))
    plans = plan_experiment(cfg)
    plans.append(plan_gt(cfg, cfg.strong, 0))  # the same model also on A (a sweep's weak role)
    assert summarize(plans) == []  # nothing finished; and no error choosing between the two
    assert format_subsets([]) == ""


# --- the public hub sources on rows of the hub's own schema --------------------------------------

def hs_text(prompt: str, first: str, second: str) -> str:
    return f"Question: {prompt}\nAnswer A: {first}\nAnswer B: {second}"


def test_helpsteer2_preference_file_splits_by_its_split_column(tmp_path):
    rows = [{"split": "train" if i < 8 else "val", "prompt": f"P{i}", "response_1": f"R1-{i}",
             "response_2": f"R2-{i}", "preference_strength": [-3, -1, 0, 1, 2, 3][i % 6],
             "preference_statement": "", "preference_elaboration": "",
             "three_most_similar_preferences": [], "all_preferences_unprocessed": []}
            for i in range(12)]
    write_jsonl(tmp_path / "preference" / "preference.jsonl", rows)
    cfg = DataConfig(dataset="helpsteer2_pairwise", path=str(tmp_path))
    train, test = load_split(cfg, "train", 0), load_split(cfg, "test", 0)
    # ties (preference 0) are left out; negative: response 1 (A) is better, class 0
    assert [(e.id, e.label) for e in train] == [("train-0", 0), ("train-1", 0), ("train-3", 1),
                                                ("train-4", 1), ("train-5", 1), ("train-6", 0),
                                                ("train-7", 0)]
    assert train[0].text == hs_text("P0", "R1-0", "R2-0")
    assert [e.text for e in test] == [hs_text(f"P{i}", f"R1-{i}", f"R2-{i}") for i in (9, 10, 11)]


def test_helpsteer3_preference_reads_the_conversation(tmp_path):
    def row(i):
        context = [{"role": "user", "content": f"Hi {i}"}]
        if i % 3 == 0:
            context += [{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "More"}]
        return {"domain": "general", "language": "english", "context": context,
                "response1": f"A{i}", "response2": f"B{i}", "overall_preference": [-2, 1, 0][i % 3],
                "individual_preference": []}
    for split, rng in (("train", range(6)), ("validation", range(6, 9))):
        path = tmp_path / "data" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([row(i) for i in rng]).to_parquet(path)
    cfg = DataConfig(dataset="helpsteer3_pairwise", path=str(tmp_path))
    train = load_split(cfg, "train", 0)
    assert [(e.id, e.label) for e in train] == [("train-0", 0), ("train-1", 1), ("train-3", 0),
                                                ("train-4", 1)]
    assert train[0].text == hs_text("User: Hi 0\n\nAssistant: Hello\n\nUser: More", "A0", "B0")
    assert train[1].text == hs_text("Hi 1", "A1", "B1")
    assert len(load_split(cfg, "test", 0)) == 2


def rm_bench_row(i: int) -> dict:
    return {"id": i, "prompt": f"Q{i}", "chosen": [f"good{i}-{s}" for s in "cdm"],
            "rejected": [f"bad{i}-{s}" for s in "cdm"], "domain": ["chat", "code", "math"][i % 3]}


def test_rm_bench_draws_one_pair_per_row_and_its_domain_is_the_subset(tmp_path):
    (tmp_path / "total_dataset.json").write_text(json.dumps([rm_bench_row(i) for i in range(60)]))
    cfg = DataConfig(dataset="rm_bench_pairwise", path=str(tmp_path))
    examples = load_split(cfg, "train", 0)
    assert len(examples) == 60 and load_split(cfg, "test", 0) is None  # one split: the pool
    for e in examples:
        i = int(e.id.split("-")[1])
        _, first, second = e.text.split("\n")
        chosen = second if e.label else first
        rejected = first if e.label else second
        assert chosen.split(": ", 1)[1].startswith(f"good{i}-")
        assert rejected.split(": ", 1)[1].startswith(f"bad{i}-")
        assert e.subset == ["chat", "code", "math"][i % 3]
    assert 0.25 < np.mean([e.label for e in examples]) < 0.75  # the order is a coin
    assert load_split(cfg, "train", 1) != examples and load_split(cfg, "train", 0) == examples
    s = make_splits(cfg.model_copy(update={"n_train": 30, "n_test": 20}), 0)
    assert s.counts == {"a": 15, "b": 15, "test": 20}
    assert {e.subset for e in s.test} == {"chat", "code", "math"}


def test_reward_bench_2_uses_its_test_split_as_the_pool(tmp_path):
    rows = [{"id": str(i), "prompt": f"Q{i}", "chosen": [f"good{i}"],
             "rejected": [f"bad{i}-{k}" for k in range(3)], "num_correct": 1, "num_incorrect": 3,
             "total_completions": 4, "models": ["m"] * 4, "subset": ["Math", "Ties"][i % 2]}
            for i in range(20)]
    path = tmp_path / "data" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(path)
    cfg = DataConfig(dataset="reward_bench_2_pairwise", path=str(tmp_path))
    examples = load_split(cfg, "train", 0)
    assert len(examples) == 20
    e = examples[0]
    assert e.text in (hs_text("Q0", "good0", f"bad0-{k}") for k in range(3)) or \
        e.text in (hs_text("Q0", f"bad0-{k}", "good0") for k in range(3))
    assert e.label == int(e.text.endswith("good0")) and e.subset == "Math"


def test_helpsteer2_from_the_hub_reads_its_preference_folder(monkeypatch):
    import datasets

    calls = []

    def fake_load(path, *args, **kw):
        calls.append((path, args, kw))
        return datasets.Dataset.from_list([
            {"split": s, "prompt": "p", "response_1": "a", "response_2": "b",
             "preference_strength": 2} for s in ("train", "val", "train")])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert len(load_split(DataConfig(dataset="helpsteer2_pairwise"), "train", 0)) == 2
    assert calls[-1] == ("nvidia/HelpSteer2", (None,),
                         {"split": "train", "revision": None, "data_dir": "preference"})


# --- bad input: one line naming the file or field and the fix ------------------------------------

def one_line_error(cfg: DataConfig) -> str:
    with pytest.raises(DataError) as info:
        make_splits(cfg, 0)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_missing_file_names_it_and_the_labeled_folder(tmp_path):
    folder = write_testbed(tmp_path)
    (folder / "train_label.jsonl").unlink()  # as in the testbed's label-stripped data/
    msg = one_line_error(DataConfig(dataset="aar_pairwise", path=str(folder)))
    assert msg.startswith(f"data.path: {folder} has no train_label.jsonl") and "labeled_data/" in msg


def test_no_path_and_not_a_folder(tmp_path):
    assert "set data.path to a folder with train_label.jsonl" in one_line_error(
        DataConfig(dataset="aar_binary"))
    file = write_jsonl(tmp_path / "x.jsonl", [pair_row("x", 0)])
    assert "is not a folder" in one_line_error(DataConfig(dataset="aar_pairwise", path=str(file)))


def test_wrong_format_names_the_field_and_the_other_dataset(tmp_path):
    folder = write_testbed(tmp_path, binary_row)
    msg = one_line_error(DataConfig(dataset="aar_pairwise", path=str(folder)))
    assert "train_label.jsonl has no field 'prompt'" in msg and "data.dataset: aar_binary" in msg
    pairwise = write_testbed(tmp_path / "p")
    msg = one_line_error(DataConfig(dataset="aar_binary", path=str(pairwise)))
    assert "has no field 'question'" in msg and "data.dataset: aar_pairwise" in msg


def test_labels_stripped_as_in_the_testbeds_data_folder(tmp_path):
    folder = write_testbed(tmp_path)
    rows = [{k: v for k, v in pair_row("t", i, "id").items() if k != "label"} for i in range(4)]
    write_jsonl(folder / "test.jsonl", rows)
    msg = one_line_error(DataConfig(dataset="aar_pairwise", path=str(folder)))
    assert "test.jsonl has no field 'label'" in msg


@pytest.mark.parametrize("dataset, make, label, says", [
    ("aar_pairwise", pair_row, "C", "labels are \"A\" (the first answer is better) or \"B\""),
    ("aar_pairwise", pair_row, True, "labels are \"A\""),
    ("aar_binary", binary_row, "maybe", "aar_binary labels are true"),
])
def test_bad_label_names_the_row_and_the_allowed_labels(tmp_path, dataset, make, label, says):
    folder = write_testbed(tmp_path, make)
    rows = [make("unlabel", i) for i in range(5)]
    rows[3]["label"] = label
    write_jsonl(folder / "train_unlabel.jsonl", rows)
    msg = one_line_error(DataConfig(dataset=dataset, path=str(folder)))
    assert msg.startswith(f"data.path: {folder / 'train_unlabel.jsonl'} line 4 has label")
    assert says in msg


def test_subset_that_is_not_text(tmp_path):
    folder = write_testbed(tmp_path)
    write_jsonl(folder / "test.jsonl", [pair_row("t", i, "id") for i in range(3)]
                + [{**pair_row("t", 3), "subset": 7}])
    msg = one_line_error(DataConfig(dataset="aar_pairwise", path=str(folder)))
    assert "test.jsonl line 4 has subset 7" in msg and "remove the field" in msg


def test_hub_schema_errors_name_the_column(tmp_path):
    write_jsonl(tmp_path / "preference.jsonl", [{"split": "train", "prompt": "p", "response_1": "a",
                                                 "response_2": "b", "preference_strength": "much"}])
    with pytest.raises(DataError, match=r"line 1 has 'much' in column 'preference_strength'; "
                                        r"preference_strength must be an integer from -3 to 3"):
        load_split(DataConfig(dataset="helpsteer2_pairwise", path=str(tmp_path)), "train", 0)
    write_jsonl(tmp_path / "rm" / "train.jsonl", [{"prompt": "p", "chosen": ["a"], "rejected": ["b"]}])
    with pytest.raises(DataError, match=r"has no column 'domain' \(rm_bench_pairwise needs"):
        load_split(DataConfig(dataset="rm_bench_pairwise", path=str(tmp_path / "rm")), "train", 0)
