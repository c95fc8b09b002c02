"""PGR aggregation by its one definition (the reference's median against seed means), on accuracy
and AUC, with counts of what each figure rests on; summarize's rows on real run folders written
here (what finished runs leave on disk)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from w2s_scale.aggregate import (DROP_GAP, DROP_SELF, cross_dataset, model_means, paper_pgr,
                                 pair_paper_pgr)
from w2s_scale.loading import load_config
from w2s_scale.planning import plan_experiment
from w2s_scale.metrics import PGR_DEFINITION
from w2s_scale.report import format_table, summarize, write_summary

# gt accuracy per (model, seed) and AUC a bit higher; three models s < m < l, two seeds
GT = {("s", 0): 0.60, ("s", 1): 0.64, ("m", 0): 0.70, ("m", 1): 0.74, ("l", 0): 0.80, ("l", 1): 0.84}
TRANSFER = {("s", "m", 0): 0.66, ("s", "m", 1): 0.71, ("s", "l", 0): 0.75, ("s", "l", 1): 0.70,
            ("m", "l", 0): 0.79, ("m", "l", 1): 0.77, ("s", "s", 0): 0.61, ("s", "s", 1): 0.63}


def _rows(dataset="d1", loss="xent", gt=GT, transfer=TRANSFER):
    rows = []
    for (w, s, seed), t in transfer.items():
        wa, ca = gt[(w, seed)], gt[(s, seed)]
        rows.append({"dataset": dataset, "seed": seed, "weak": w, "strong": s, "loss": loss,
                     "weak_acc": wa, "ceiling_acc": ca, "transfer_acc": t,
                     "weak_auc": wa + 0.1, "ceiling_auc": ca + 0.1, "transfer_auc": t + 0.05,
                     "pgr": (t - wa) / (ca - wa) if ca > wa else None,
                     "pgr_auc": (t + 0.05 - wa - 0.1) / (ca - wa) if ca > wa else None})
    return rows


def test_model_means_average_over_seeds():
    means = model_means(_rows())
    assert means[("d1", "s")] == pytest.approx(0.62)
    assert means[("d1", "m")] == pytest.approx(0.72)
    assert means[("d1", "l")] == pytest.approx(0.82)


def test_paper_median_pgr_by_hand():
    # means s .62, m .72, l .82. Kept runs (self-transfer dropped):
    # s->m: (.66-.62)/.10 = .4, (.71-.62)/.10 = .9; s->l: (.75-.62)/.2 = .65, (.70-.62)/.2 = .4;
    # m->l: (.79-.72)/.1 = .7, (.77-.72)/.1 = .5.  Median of [.4 .9 .65 .4 .7 .5] = .575
    [acc] = [r for r in paper_pgr(_rows()) if r["metric"] == "acc"]
    assert acc["pgr_median"] == pytest.approx(0.575)
    assert (acc["n_runs"], acc["n_pairs"], acc["n_seeds"], acc["n_dropped"]) == (6, 3, 2, 2)
    assert acc["dropped"] == f"2 {DROP_SELF}"
    assert "per_seed_pgr_mean" not in acc  # no second definition beside it
    # AUC: weak and ceiling +.1, transfer +.05: (t + .05 - w̄ - .1) / (c̄ - w̄)
    [auc] = [r for r in paper_pgr(_rows()) if r["metric"] == "auc"]
    values = [(0.66 - 0.67) / 0.1, (0.71 - 0.67) / 0.1, (0.75 - 0.67) / 0.2, (0.70 - 0.67) / 0.2,
              (0.79 - 0.77) / 0.1, (0.77 - 0.77) / 0.1]
    assert auc["pgr_median"] == pytest.approx(float(np.median(values)))


def test_pairs_whose_mean_ceiling_does_not_beat_the_weak_mean_are_dropped_and_counted():
    gt = {**GT, ("l", 0): 0.70, ("l", 1): 0.72}  # l's mean .71 < m's .72: m->l dropped
    [acc] = [r for r in paper_pgr(_rows(gt=gt)) if r["metric"] == "acc"]
    assert acc["n_runs"] == 4 and acc["n_pairs"] == 2 and acc["n_dropped"] == 4
    assert acc["dropped"] == f"2 {DROP_GAP}; 2 {DROP_SELF}"
    # the same pair per seed: seed 0 m .70 = l .70 -> undefined paired PGR; seed 1 defined
    value, n, dropped = pair_paper_pgr(_rows(gt=gt), "d1", "m", "l", "xent")
    assert value is None and n == 0 and dropped == f"2 {DROP_GAP}"


def test_cross_dataset_table_and_its_median():
    rows = _rows("d1") + _rows("d2", transfer={**TRANSFER, ("s", "l", 0): 0.81, ("s", "l", 1): 0.83})
    table = cross_dataset(rows, order=["s", "m", "l"])
    d1, d2, median = table
    assert (d1["dataset"], d1["weak"], d1["strong"]) == ("d1", "s", "l")
    assert d1["weak_acc"] == pytest.approx(0.62) and d1["ceiling_acc"] == pytest.approx(0.82)
    assert d1["transfer_acc"] == pytest.approx(0.725)
    assert d1["pgr"] == pytest.approx(np.median([0.65, 0.4]))
    assert d2["pgr"] == pytest.approx(np.median([(0.81 - 0.62) / 0.2, (0.83 - 0.62) / 0.2]))
    assert median["dataset"] == "median of 2" and median["n_datasets"] == 2
    assert median["pgr"] == pytest.approx(np.median([d1["pgr"], d2["pgr"]]))
    assert median["transfer_acc"] == pytest.approx(np.median([0.725, 0.82]))
    # without an order: the pair with the largest gap (s -> l)
    assert cross_dataset(_rows())[0]["strong"] == "l"


# --- summarize on run folders --------------------------------------------------------------------

def _finish(plan, correct: np.ndarray, auc: float) -> None:
    """What a finished run leaves: test predictions, metrics, DONE with its hash."""
    plan.dir.mkdir(parents=True, exist_ok=True)
    with (plan.dir / "test_predictions.jsonl").open("w") as f:
        for i, ok in enumerate(correct):
            label = i % 2
            p1 = (0.9 if label else 0.1) if ok else (0.1 if label else 0.9)
            f.write(json.dumps({"id": f"x{i}", "p1": p1, "label": label}) + "\n")
    (plan.dir / "metrics.json").write_text(json.dumps({"accuracy": float(correct.mean()), "auc": auc}))
    (plan.dir / "DONE").write_text(json.dumps({"hash": plan.hash}))


def test_summary_pgr_over_seeds_is_the_one_definition(tmp_path, capsys):
    cfg = load_config(raw={
        "name": "agg", "results_dir": str(tmp_path), "seeds": [0, 1],
        "data": {"dataset": "jsonl", "path": str(tmp_path / "none.jsonl")},
        "weak": {"name": "weak-model", "label": "w"}, "strong": {"name": "strong-model", "label": "s"},
        "losses": ["xent"]})
    n = 100
    # seed 0: weak 60, ceiling 80, transfer 70 of 100 correct (PGR .5);
    # seed 1: weak 70, ceiling 70 (PGR undefined), transfer 72
    counts = {(0, "gt-w"): 60, (0, "gt-s"): 80, (1, "gt-w"): 70, (1, "gt-s"): 70}
    for plan in plan_experiment(cfg):
        k = counts.get((plan.seed, plan.name), 70 if plan.seed == 0 else 72)
        _finish(plan, np.arange(n) < k, auc=0.5 + k / 400)
    rows = summarize(plan_experiment(cfg))
    mean = [r for r in rows if r["seed"] == "mean"][0]
    assert mean["n_seeds"] == 2 and "pgr_paper" not in mean and "n_seeds_pgr" not in mean
    # means weak .65, ceiling .75; runs .70 -> .5 and .72 -> .7; median .6 (seed 1's own
    # ceiling does not beat its weak model, but the point's anchors are the seed means)
    assert mean["pgr"] == pytest.approx(0.6)
    assert mean["pgr_lo"] <= mean["pgr"] <= mean["pgr_hi"]  # two-level bootstrap over 2 seeds
    seed0, seed1 = ([r for r in rows if r["seed"] == s][0] for s in (0, 1))
    assert seed0["pgr"] == pytest.approx(0.5) and seed1["pgr"] is None  # a seed alone: its own runs
    # AUC-PGR of seed 0: aucs .65, .70, .675 -> .5; over the seeds: weak (.65, .675), ceiling
    # (.70, .675), transfer (.675, .68) -> means .6625, .6875; median of .5, .7 = .6
    assert seed0["pgr_auc"] == pytest.approx(0.5)
    assert mean["pgr_auc"] == pytest.approx(0.6)
    table = format_table(rows)
    assert table.startswith(PGR_DEFINITION) and "mean of 2" in table
    write_summary(rows, tmp_path / "agg", order=["w", "s"])
    printed = capsys.readouterr().out
    assert "median PGR" in printed and "across datasets" in printed
    paper = json.loads((tmp_path / "agg" / "paper_pgr.json").read_text())
    assert paper[0]["pgr_median"] == pytest.approx(0.6) and paper[0]["n_runs"] == 2
    assert (tmp_path / "agg" / "cross_dataset.csv").exists()
