"""K classes through data, metrics and prediction files; the binary forms unchanged."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from w2s_scale import predictions
from w2s_scale.config import DataConfig, stable_hash
from w2s_scale.data.sources import num_classes
from w2s_scale.data.sources import DataError, load_split
from w2s_scale.data.splits import make_splits
from w2s_scale.metrics import accuracy, roc_auc


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- metrics

def test_binary_metrics_unchanged_for_p1_and_two_columns():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    p1 = rng.random(200).astype(np.float32)
    p1[:5] = 0.5  # ties count as class 0, as before
    two = np.stack([1 - p1, p1], 1)
    expect = float(np.mean((p1 > 0.5).astype(int) == labels))
    assert accuracy(labels, p1) == accuracy(labels, two) == expect
    assert roc_auc(labels, two) == roc_auc(labels, p1) == float(roc_auc_score(labels, p1))
    assert roc_auc(np.ones(5, dtype=int), two[:5]) is None


@pytest.mark.parametrize("k", [3, 10])
def test_k_class_top1_and_macro_auc(k):
    rng = np.random.default_rng(k)
    labels = np.arange(300) % k
    logits = rng.normal(size=(300, k)) + 1.5 * np.eye(k)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert accuracy(labels, probs) == float(np.mean(probs.argmax(1) == labels))
    assert roc_auc(labels, probs) == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    # a class with no test example: its one-vs-rest AUC, and so the macro AUC, is undefined
    keep = labels != 1
    assert roc_auc(labels[keep], probs[keep]) is None


def test_prediction_rows_binary_as_before_and_k_class():
    probs = np.array([[0.25, 0.75], [0.6, 0.4]], dtype=np.float32)
    assert list(predictions.rows(["a", "b"], probs, [1, 1])) == [
        {"id": "a", "p1": 0.75, "label": 1}, {"id": "b", "p1": 0.4, "label": 1}]
    k3 = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]], dtype=np.float32)
    rows = list(predictions.rows(["a", "b"], k3, [2, 1]))
    assert rows[0] == {"id": "a", "probs": [0.1, 0.2, 0.7], "label": 2}
    assert [predictions.correct(r) for r in rows] == [True, False]
    assert predictions.correct({"id": "x", "p1": 0.5, "label": 0})  # tie: class 0, as before
    soft = predictions.soft_labels(rows + [{"id": "c", "p1": 0.25, "label": 0}])
    np.testing.assert_array_equal(soft["a"], k3[0])
    np.testing.assert_array_equal(soft["c"], np.array([0.75, 0.25], dtype=np.float32))


# --------------------------------------------------------------------------- data

def test_unset_num_classes_keeps_binary_run_hashes():
    # the hashes main's code gives these configs: finished binary runs stay reusable
    assert stable_hash(DataConfig(dataset="jsonl", path="x.jsonl", n_train=100, n_test=20)) == "20035f56be09"
    assert stable_hash(DataConfig(dataset="movie_snippets")) == "a3ba732acee1"
    assert "num_classes" not in DataConfig(dataset="jsonl").model_dump(mode="json")
    assert DataConfig(dataset="jsonl", num_classes=3).model_dump(mode="json")["num_classes"] == 3
    assert stable_hash(DataConfig(dataset="jsonl", num_classes=3)) != stable_hash(DataConfig(dataset="jsonl"))


def test_local_file_with_k_classes(tmp_path):
    rows = [{"text": f"doc {i}", "label": i % 3} for i in range(60)]
    path = _jsonl(tmp_path / "k3.jsonl", rows)
    cfg = DataConfig(dataset="jsonl", path=str(path), num_classes=3, n_train=30, n_test=30,
                     balance=True)
    assert num_classes(cfg) == 3
    assert Counter(e.label for e in load_split(cfg, "train", 0)) == {0: 20, 1: 20, 2: 20}
    s = make_splits(cfg, 0)
    # balanced: size // K of each class in every split
    assert [Counter(e.label for e in part) for part in (s.a, s.b, s.test)] == [
        {0: 5, 1: 5, 2: 5}, {0: 5, 1: 5, 2: 5}, {0: 10, 1: 10, 2: 10}]
    # the same file read as binary: label 2 is refused, naming the field to set
    with pytest.raises(DataError, match=r"label 2 in column 'label'; labels must be 0 or 1.*"
                                         r"data\.num_classes: K"):
        load_split(DataConfig(dataset="jsonl", path=str(path)), "train", 0)
    # K = 3 refuses a label 3
    _jsonl(path, rows + [{"text": "x", "label": 3}])
    with pytest.raises(DataError, match=r"line 61 has 3 in column 'label'; labels must be "
                                         r"integers 0\.\.2 \(this task has 3 classes\)"):
        load_split(cfg, "train", 0)
    # a balanced split cannot be made without one of the classes
    _jsonl(path, [r for r in rows if r["label"] != 1])
    with pytest.raises(DataError, match=r"data\.balance: the train split has no examples of "
                                         r"label\(s\) \[1\]"):
        make_splits(cfg, 0)


def test_bbc_news_offline_five_topics():
    cfg = DataConfig(dataset="bbc_news", n_train=1600, n_test=500)
    assert num_classes(cfg) == 5
    pool = load_split(cfg, "train", 0)
    assert len(pool) == 2225
    assert Counter(e.label for e in pool) == {0: 510, 1: 386, 2: 417, 3: 511, 4: 401}
    first = next(e for e in pool if e.id == "train-0")
    assert first.text.startswith("Ad sales boost Time Warner profit\nQuarterly profits")
    assert load_split(cfg, "test", 0) is None  # cut from the pool
    s = make_splits(cfg, 0)
    assert s.counts == {"a": 800, "b": 800, "test": 500}
    assert len({e.label for e in s.test}) == 5
    # a registered task's K is its own
    with pytest.raises(DataError, match=r"data\.num_classes: dataset 'bbc_news' has 5 classes, "
                                         r"not 3; remove data\.num_classes"):
        num_classes(DataConfig(dataset="bbc_news", num_classes=3))
    assert num_classes(DataConfig(dataset="movie_snippets")) == 2


def test_cli_refuses_a_k_that_is_not_the_tasks(tmp_path, tiny_models):
    """A user's mistake: exit 2, one `w2s: error:` line naming the field, nothing written."""
    from conftest import run_w2s, tiny_config, write_config

    config = tiny_config(tmp_path / "results", tiny_models, tmp_path / "unused.jsonl")
    config["data"] = {"dataset": "bbc_news", "num_classes": 3, "n_train": 100, "n_test": 50,
                      "max_length": 32}
    proc = run_w2s(["experiment", "-c", str(write_config(tmp_path / "cfg.yaml", config))])
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("w2s: error:")]
    assert lines == ["w2s: error: data.num_classes: dataset 'bbc_news' has 5 classes, not 3; remove "
                     "data.num_classes (only local jsonl/csv/parquet files take it)"]
    assert "Traceback" not in proc.stderr and not (tmp_path / "results").exists()
