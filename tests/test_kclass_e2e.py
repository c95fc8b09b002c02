"""K classes end to end, through the real engine (tiny GPT-2 models, the real GPT-2 tokenizer).

- The binary path is unchanged: the tiny experiment's predictions, weak labels and metrics are
  those main's code gave before K classes (tests/goldens/binary_e2e_main.json, computed at
  commit 83bbb34 with the same config), to the files' 6th decimal, one rounding step either way.
- A 3-class task: logconf (global class-wise hardening) and logconf_eleuther (a rolling buffer of
  K-class rows, saved in the checkpoint) give the same transfer models on 2 ranks under ZeRO-3,
  stopped and resumed mid-run, as on 1 rank; metrics, prediction files and the summary are K-class.
"""
import json
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import NEUTRAL, run_w2s, stop_and_resume, tiny_config, write_config

GOLDEN = Path(__file__).parent / "goldens" / "binary_e2e_main.json"
TOPICS = [["goal", "match", "team", "coach"], ["vote", "party", "minister", "law"],
          ["chip", "phone", "software", "robot"]]


def write_topic_jsonl(path: Path, n: int, seed: int = 0) -> Path:
    """A learnable 3-class task: the label is the group of the one topic word."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            label = rng.randrange(3)
            words = [rng.choice(NEUTRAL) for _ in range(rng.randint(4, 12))]
            words.insert(rng.randint(0, len(words)), rng.choice(TOPICS[label]))
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path


def _rows(results: Path, run: str, name: str = "test_predictions.jsonl") -> list[dict]:
    return [json.loads(line) for line in
            (results / "tiny/jsonl/seed0" / run / name).read_text().splitlines()]


def _same(got, want, tol: float = 2e-6) -> bool:
    """Equal, floats within `tol`: the files keep 6 decimals, and a sum taken in another order
    (another CPU's vector width) can move a probability across a rounding edge, 1e-6 either way."""
    if isinstance(want, float) or isinstance(got, float):
        return isinstance(got, (int, float)) and abs(got - want) <= tol
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(
            _same(got[k], want[k], tol) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(
            _same(g, w, tol) for g, w in zip(got, want))
    return got == want


def test_binary_experiment_identical_to_main(tiny_models, tiny_data, tmp_path):
    golden = json.loads(GOLDEN.read_text())
    config = tiny_config(tmp_path / "results", tiny_models, tiny_data,
                         losses=["xent", "logconf", "logconf_eleuther", "window", "product",
                                 "entropy_min"])
    config["weak"].update(init="random")
    config["train"]["zero_stage"] = 0
    # the goldens were written by runs on 2 CPU threads; another thread count sums in another
    # order and moves the 6th decimal of a probability (the suite's workers run on 1 each)
    proc = run_w2s(["experiment", "-c", str(write_config(tmp_path / "cfg.yaml", config))], timeout=900,
                   env={"OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "results/tiny/jsonl/seed0").iterdir()) == sorted(golden)
    for run, expect in golden.items():
        metrics = json.loads((tmp_path / "results/tiny/jsonl/seed0" / run / "metrics.json").read_text())
        assert _same({k: metrics[k] for k in expect["metrics"]}, expect["metrics"]), run
        for name in ("test_predictions.jsonl", "weak_labels.jsonl"):
            if name in expect:
                rows = _rows(tmp_path / "results", run, name)
                assert _same(rows, expect[name]), (run, name, next(
                    (g, w) for g, w in zip(rows, expect[name]) if not _same(g, w)))


ELEUTHER = "w2s-gpt2-weak-to-gpt2-strong-logconf_eleuther-buffer_size20-warmup_steps3"
LOGCONF = "w2s-gpt2-weak-to-gpt2-strong-logconf"


def _k3_config(results: Path, tiny_models, data: Path) -> dict:
    config = tiny_config(results, tiny_models, data, losses=[
        "logconf", {"name": "logconf_eleuther", "params": {"buffer_size": 20, "warmup_steps": 3}}])
    config["data"]["num_classes"] = 3
    config["train"]["checkpoint_every"] = 3
    config["strong"]["train"] = {"epochs": 3}  # 30 steps: room to stop a transfer run mid-way
    return config


def test_k3_experiment_one_rank_equals_two_ranks_stopped_and_resumed(tiny_models, tmp_path):
    data = write_topic_jsonl(tmp_path / "topics.jsonl", 400)
    one = _k3_config(tmp_path / "one", tiny_models, data)
    proc = run_w2s(["experiment", "-c", str(write_config(tmp_path / "one.yaml", one))], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    two_cfg = write_config(tmp_path / "two.yaml", _k3_config(tmp_path / "two", tiny_models, data))
    stop_and_resume(two_cfg, tmp_path / "two/tiny/jsonl/seed0" / ELEUTHER, tmp_path)

    seed_dir = tmp_path / "one/tiny/jsonl/seed0"
    for run in ("gt-gpt2-weak", "gt-gpt2-strong", LOGCONF, ELEUTHER):
        one_rows, two_rows = _rows(tmp_path / "one", run), _rows(tmp_path / "two", run)
        assert [r["id"] for r in one_rows] == [r["id"] for r in two_rows]
        assert all(len(r["probs"]) == 3 and "p1" not in r for r in one_rows)
        np.testing.assert_allclose([r["probs"] for r in two_rows], [r["probs"] for r in one_rows],
                                   atol=1e-5, err_msg=run)
        metrics = json.loads((seed_dir / run / "metrics.json").read_text())
        probs = np.array([r["probs"] for r in one_rows])
        labels = np.array([r["label"] for r in one_rows])
        assert metrics["accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == labels)))
        assert metrics["auc"] is not None and 0 <= metrics["auc"] <= 1  # macro one-vs-rest
    weak = _rows(tmp_path / "one", "gt-gpt2-weak", "weak_labels.jsonl")
    assert len(weak) == 80 and all(abs(sum(r["probs"]) - 1) < 1e-4 for r in weak)
    ceiling = json.loads((seed_dir / "gt-gpt2-strong/metrics.json").read_text())["accuracy"]
    summary = json.loads((tmp_path / "one/tiny/summary.json").read_text())
    rows = {(r["seed"], r["loss"]): r for r in summary}
    assert set(rows) == {(0, "logconf"), (0, "logconf_eleuther-buffer_size20-warmup_steps3"),
                         ("mean", "logconf"), ("mean", "logconf_eleuther-buffer_size20-warmup_steps3")}
    row = rows[(0, "logconf")]
    assert row["ceiling_acc"] == pytest.approx(ceiling)
    if row["ceiling_acc"] > row["weak_acc"]:
        assert row["pgr"] == pytest.approx((row["transfer_acc"] - row["weak_acc"]) /
                                           (row["ceiling_acc"] - row["weak_acc"]))
