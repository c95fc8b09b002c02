"""Early stopping without peeking and the ground-truth curve (w2s_scale/selection.py): the held-out
cut, the run hash, and the real engine (tiny GPT-2 models, ZeRO-3): on 1 rank the chosen checkpoint
is the one tested; on 2 ranks, stopped by a signal and resumed, the same step is chosen and the
same test predictions come out."""
import json
import shutil

import numpy as np
import pytest

from conftest import predictions, run_w2s, stop_and_resume, tiny_config, write_config

from w2s_scale.config import TrainConfig
from w2s_scale.loading import load_config

RUN = "w2s-gpt2-weak-to-gpt2-strong-xent-es3v0.25-gtc3f0.2"
HELD_OUT = {"early_stopping": {"every": 3, "val_fraction": 0.25}, "gt_curve": {"every": 3, "fraction": 0.2}}


def test_held_out_cut_is_disjoint_and_fixed_by_the_seed():
    from w2s_scale.selection import cut_held_out

    cfg = TrainConfig(**HELD_OUT)
    cut = cut_held_out(80, 0, cfg)
    assert (len(cut.val), len(cut.curve), len(cut.train)) == (20, 16, 44)
    assert sorted(np.concatenate([cut.val, cut.curve, cut.train]).tolist()) == list(range(80))
    again = cut_held_out(80, 0, cfg)
    assert all(np.array_equal(a, b) for a, b in zip((cut.val, cut.curve), (again.val, again.curve)))
    assert not np.array_equal(cut_held_out(80, 1, cfg).val, cut.val)


def test_held_out_settings_enter_transfer_hashes_only(tiny_models, tiny_data, tmp_path):
    from w2s_scale.planning import results_identity as _results_identity, plan_experiment

    base = tiny_config(tmp_path, tiny_models, tiny_data, losses=["xent"])
    off = plan_experiment(load_config(raw=base))
    # off: the dumped train section has no such keys, so finished runs keep their hashes
    assert not {"early_stopping", "gt_curve"} & set(_results_identity(off[2].model, off[2].train)[1])
    for extra in ({"early_stopping": {"every": 3}}, {"gt_curve": {"every": 3}}):
        on = plan_experiment(load_config(raw={**base, "train": {**base["train"], **extra}}))
        assert [p.hash for p in on[:2]] == [p.hash for p in off[:2]]  # gt runs: unchanged
        assert on[2].hash != off[2].hash and on[2].train.model_dump()[next(iter(extra))]
        assert on[0].train.early_stopping is None and on[0].train.gt_curve is None
        assert on[2].name != off[2].name  # a folder of its own beside the run without it


def _config(results, tiny_models, tiny_data) -> dict:
    config = tiny_config(results, tiny_models, tiny_data, losses=["xent"])
    config["train"].update(HELD_OUT, checkpoint_every=3)
    config["strong"]["train"] = {"epochs": 3}  # 44 of B's 80 examples train: 5 steps an epoch, 15 in all
    return config


def _events(results, kind):
    log = results / "tiny/jsonl/seed0" / RUN / "log.jsonl"
    return [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == kind]


def _metrics(results):
    return json.loads((results / "tiny/jsonl/seed0" / RUN / "metrics.json").read_text())


@pytest.fixture(scope="module")
def one_rank(tiny_models, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("select-one")
    proc = run_w2s(["experiment", "-c", str(write_config(out / "cfg.yaml", _config(out / "results", tiny_models, tiny_data)))], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "results"


def test_one_rank_tests_the_chosen_checkpoint(one_rank):
    metrics = _metrics(one_rank)
    chosen = metrics["early_stopping"]
    assert metrics["n_train"] == 44 and chosen["n_val"] == 20 and metrics["gt_curve"]["n"] == 16
    evals = _events(one_rank, "eval")
    val = [e for e in evals if "val_weak_auc" in e]
    curve = [e for e in evals if "gt_curve_accuracy" in e]
    assert [e["step"] for e in val] == [e["step"] for e in curve] == [3, 6, 9, 12, 15]
    best = max(e["val_weak_auc"] for e in val)  # the first step reaching the best AUC is chosen
    assert chosen["chosen_step"] == next(e["step"] for e in val if e["val_weak_auc"] == best)
    assert chosen["chosen_val_weak_auc"] == best == chosen["val_score_reloaded"]
    selected = _events(one_rank, "selected")[0]
    if chosen["chosen_step"] != 15:  # reloaded from its checkpoint: the same predictions
        assert selected["val_probs_max_diff_reloaded"] < 1e-6
    for key in ("misfit", "gain_over_weak", "ece", "weak_ece", "agreement_with_weak_test"):
        assert metrics[key] is not None, key
    assert metrics["misfit"] == pytest.approx(1 - metrics["agreement_with_weak_test"])


def test_two_ranks_stopped_and_resumed_choose_the_same_step(one_rank, tiny_models, tiny_data, tmp_path):
    results = tmp_path / "results"
    for gt in ("gt-gpt2-weak", "gt-gpt2-strong"):  # the same supervisor: only the student differs
        shutil.copytree(one_rank / "tiny/jsonl/seed0" / gt, results / "tiny/jsonl/seed0" / gt)
    cfg = write_config(tmp_path / "cfg.yaml", _config(results, tiny_models, tiny_data))
    run_dir = results / "tiny/jsonl/seed0" / RUN
    stop_and_resume(cfg, run_dir, tmp_path)
    one, two = _metrics(one_rank), _metrics(results)
    assert two["world_size"] == 2
    assert two["early_stopping"]["chosen_step"] == one["early_stopping"]["chosen_step"]
    np.testing.assert_allclose(predictions(results, RUN), predictions(one_rank, RUN), atol=1e-5)
    aucs = lambda r: {e["step"]: e["val_weak_auc"] for e in _events(r, "eval") if "val_weak_auc" in e}
    assert aucs(results).keys() == aucs(one_rank).keys()
    np.testing.assert_allclose(list(aucs(results).values()), list(aucs(one_rank).values()), atol=1e-6)
