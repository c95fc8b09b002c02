"""Summary of finished runs: accuracy and AUC of every run, PGR of every transfer run and of every
(weak, strong, loss) over its seeds, read from disk. PGR by its one definition
(metrics.PGR_DEFINITION) with two-level bootstrap intervals (intervals.py: seeds, then test
examples; one seed: test examples); accuracy means with t-intervals over seeds."""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from w2s_scale import distributed as dist
from w2s_scale import intervals, predictions
from w2s_scale.aggregate import (cross_dataset, format_cross_dataset, format_paper_pgr, on_subset,
                                 paper_pgr, subset_key, subset_names)
from w2s_scale.metrics import PGR_DEFINITION, mean_interval, pgr, pgr_point
from w2s_scale.files import atomic_write
from w2s_scale.results import RunDir, describe_state, inspect, run_state


# transfer runs' diagnostics (w2s_scale/diagnostics.py) carried from metrics.json into the rows;
# runs finished before they existed read None
DIAGNOSTICS = ("agreement_with_weak_test", "misfit", "gain_over_weak", "ece", "weak_ece")


def _load(plan) -> Optional[tuple[dict, dict[str, tuple[bool, int]]]]:
    """(metrics, {example id: (correct, label)}) of a run finished with its plan's settings (its
    DONE carries the plan's hash), None otherwise: another config's result is not this one's.
    Correct: the top-1 class is the label (p1 > 0.5 for a binary task), for any K."""
    if run_state(plan.dir, plan.hash) != "done":
        return None
    run = RunDir(plan.dir, plan.hash)
    # the third item: the example's test subset (None for datasets without subsets)
    preds = {r["id"]: (predictions.correct(r), r["label"], r.get("subset"))
             for r in run.read_jsonl("test_predictions.jsonl")}
    return run.read_json("metrics.json"), preds


def _correct(preds: dict, ids: list[str]) -> np.ndarray:
    return np.array([preds[i][0] for i in ids], dtype=float)


def summarize(plans: Iterable) -> list[dict]:
    """One row per transfer run (weak, ceiling, transfer, PGR with a bootstrap interval) plus
    one row per (weak, strong, loss) over its seeds: mean accuracies, and PGR by its definition
    (median over seeds against the seed means) with a two-level bootstrap interval."""
    plans = list(plans)
    # ceilings: the gt runs of the experiment's own seed (not an ensemble member's seed_offset);
    # where the dataset puts the ceiling on B (the testbed's), that run, not the one on A
    gt = {(p.model.short_name, p.seed): p
          for p in sorted((p for p in plans if p.kind == "gt" and not p.seed_offset),
                          key=lambda p: p.trains_on == "b")}
    rows = []
    # per (weak, strong, loss), then per test subset (None: all of test): each seed's aligned
    # correct arrays, which the mean rows' PGR interval resamples
    triples: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
    # method runs (w2s_scale/methods/) are read as transfer runs: a student of the weak model
    students = [p for p in plans if p.kind in ("transfer", "method")]
    for plan in students:
        weak_plan, ceiling_plan = plan.weak, gt.get((plan.model.short_name, plan.seed))
        loaded = [_load(p) if p else None for p in (weak_plan, ceiling_plan, plan)]
        if any(x is None for x in loaded):
            continue
        (wm, wp), (cm, cp), (tm, tp) = loaded
        # score the three on the same examples (over-long ones may differ between tokenizers)
        ids = sorted(set(wp) & set(cp) & set(tp))
        if not ids:  # no test example scored by all three: nothing to compare
            continue
        weak_c, ceil_c, tran_c = (_correct(p, ids) for p in (wp, cp, tp))
        estimate = intervals.pgr([(weak_c, ceil_c, tran_c)], seed=plan.seed)  # one seed: over examples
        key = (weak_plan.model.short_name, plan.model.short_name, plan.variant)
        triples[key][None].append((weak_c, ceil_c, tran_c))
        subsets, subset_triples = _subset_scores(ids, (wp, cp, tp), (wm, cm, tm), plan.seed)
        for name, triple in subset_triples.items():
            triples[key][name].append(triple)
        rows.append({
            "seed": plan.seed, "weak": weak_plan.model.short_name, "strong": plan.model.short_name,
            "loss": plan.variant, "labels": plan.label_tag, "n_test": len(ids),
            "weak_acc": weak_c.mean(), "ceiling_acc": ceil_c.mean(), "transfer_acc": tran_c.mean(),
            "weak_auc": wm.get("auc"), "ceiling_auc": cm.get("auc"), "transfer_auc": tm.get("auc"),
            "pgr": estimate.value, "pgr_lo": estimate.lo, "pgr_hi": estimate.hi,
            "pgr_auc": _auc_pgr(wm.get("auc"), cm.get("auc"), tm.get("auc")),
            "agreement_with_weak": tm.get("train_agreement_with_weak"),
            **{key: tm.get(key) for key in DIAGNOSTICS},
            "chosen_step": (tm.get("early_stopping") or {}).get("chosen_step"),
            **subsets})
    _add_pgr_vs_direct(rows, students)
    groups = defaultdict(list)
    for row in rows:
        groups[(row["weak"], row["strong"], row["loss"])].append(row)
    for (weak, strong, loss), members in groups.items():
        estimate = intervals.pgr(triples[(weak, strong, loss)][None])
        vs_direct = mean_interval([m["pgr_vs_direct"] for m in members])
        rows.append({"seed": "mean", "weak": weak, "strong": strong, "loss": loss,
                     "labels": members[0]["labels"],
                     "pgr_vs_direct": vs_direct["mean"], "pgr_vs_direct_ci95": vs_direct["ci95"],
                     "n_test": int(np.mean([m["n_test"] for m in members])),
                     **{k: float(np.mean([m[k] for m in members]))
                        for k in ("weak_acc", "ceiling_acc", "transfer_acc")},
                     "pgr": estimate.value, "pgr_lo": estimate.lo, "pgr_hi": estimate.hi,
                     "pgr_auc": _auc_pgr_over_seeds(members),
                     **{key: mean_interval([m[key] for m in members])["mean"] for key in DIAGNOSTICS},
                     "n_seeds": len(members),
                     **_subset_means(members, triples[(weak, strong, loss)])})
    return rows


def _subset_scores(ids: list[str], preds: tuple, metrics: tuple, seed: int) -> tuple[dict, dict]:
    """Per test subset (w2s_scale/subsets.py), what a transfer row holds overall: weak, ceiling
    and transfer accuracy on the subset's examples, PGR with its bootstrap interval, AUC and
    AUC-PGR (each run's AUC on the subset, from its metrics.json); {} without subsets. Also
    {subset: the (weak, ceiling, transfer) correct arrays}, for the mean rows' intervals."""
    wp, cp, tp = preds
    by_subset: dict[str, list[str]] = defaultdict(list)
    for i in ids:
        if tp[i][2] is not None:
            by_subset[tp[i][2]].append(i)
    out: dict = {}
    arrays: dict = {}
    for name, sub in sorted(by_subset.items()):
        weak_c, ceil_c, tran_c = (_correct(p, sub) for p in (wp, cp, tp))
        arrays[name] = (weak_c, ceil_c, tran_c)
        estimate = intervals.pgr([arrays[name]], seed=seed)
        aucs = [((m.get("subsets") or {}).get(name) or {}).get("auc") for m in metrics]
        scores = {"n_test": len(sub), "weak_acc": weak_c.mean(), "ceiling_acc": ceil_c.mean(),
                  "transfer_acc": tran_c.mean(), "weak_auc": aucs[0], "ceiling_auc": aucs[1],
                  "transfer_auc": aucs[2], "pgr": estimate.value, "pgr_lo": estimate.lo,
                  "pgr_hi": estimate.hi, "pgr_auc": _auc_pgr(*aucs)}
        out.update({subset_key(name, k): v for k, v in scores.items()})
    return out, arrays


def _subset_means(members: list[dict], triples: dict) -> dict:
    """A mean row's per-subset scores: means over seeds, PGR by its definition with its
    two-level bootstrap interval, as the row's overall ones."""
    out: dict = {}
    for name in subset_names(members):
        part = on_subset(members, name)
        estimate = intervals.pgr(triples[name])
        scores = {"n_test": int(np.mean([m["n_test"] for m in part])),
                  **{k: float(np.mean([m[k] for m in part]))
                     for k in ("weak_acc", "ceiling_acc", "transfer_acc")},
                  "pgr": estimate.value, "pgr_lo": estimate.lo, "pgr_hi": estimate.hi,
                  "pgr_auc": _auc_pgr_over_seeds(part)}
        out.update({subset_key(name, k): v for k, v in scores.items()})
    return out


def _add_pgr_vs_direct(rows: list[dict], transfers: list) -> None:
    """A label source's PGR minus that of direct transfer (labels: weak) of the same seed, weak
    model, strong model and loss: how the paper compares bootstrapping with direct transfer,
    paired per seed. None for direct transfer itself, or where either PGR is undefined."""
    # rows were made in the order of the finished transfer plans; match them by run identity
    base = {(r["seed"], r["weak"], r["strong"], r["loss"]): r for r in rows}
    direct = {}
    for plan in transfers:
        if plan.label_tag == "weak":
            row = base.get((plan.seed, plan.weak.model.short_name, plan.model.short_name, plan.variant))
            if row is not None:
                direct[(plan.seed, row["weak"], row["strong"], plan.loss.tag)] = row["pgr"]
    for row in rows:
        row["pgr_vs_direct"] = None
    for plan in transfers:
        row = base.get((plan.seed, plan.weak.model.short_name, plan.model.short_name, plan.variant))
        if row is None or plan.label_tag == "weak":
            continue
        other = direct.get((plan.seed, row["weak"], row["strong"], plan.loss.tag))
        if other is not None and row["pgr"] is not None:
            row["pgr_vs_direct"] = row["pgr"] - other


def unfinished_runs(plans: Iterable) -> str:
    """Which planned runs the summary lacks and why (missing, unfinished, stale), one line
    each, and how to fix; empty when every run is complete."""
    lines = []
    for plan in plans:
        state, problem = inspect(plan.dir, plan.hash)
        if state != "done":
            lines.append(f"[w2s]   {state:8s} {plan.dir}: {describe_state(state, problem)}")
    if not lines:
        return ""
    return "\n".join([f"[w2s] {len(lines)} run(s) not in the summary:", *lines])


def _auc_pgr(weak: Optional[float], ceiling: Optional[float], transfer: Optional[float]) -> Optional[float]:
    if weak is None or ceiling is None or transfer is None:
        return None
    return pgr(weak, ceiling, transfer)


def _auc_pgr_over_seeds(members: list[dict]) -> Optional[float]:
    """PGR's definition on the runs' AUCs over the seeds (None where a run has no AUC)."""
    aucs = [[m[f"{role}_auc"] for m in members] for role in ("weak", "ceiling", "transfer")]
    if any(a is None for role in aucs for a in role):
        return None
    return pgr_point(*aucs)


# the caption of every table of transfer rows: the definition, then what a row's PGR rests on
PGR_CAPTION = (f"{PGR_DEFINITION}. A seed's row: that seed's runs; a 'mean of N' row: its N seeds. "
               "95%: bootstrap over seeds, then test examples within each drawn seed")


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_table(rows: list[dict]) -> str:
    """A plain-text table under the PGR definition; PGR reads 'undefined' where the ceiling does
    not beat the floor."""
    header = ["seed", "weak", "strong", "loss", "weak_acc", "ceiling_acc", "transfer_acc",
              "PGR", "PGR 95% (bootstrap)", "AUC-PGR"]
    lines = [header]
    for r in rows:
        undefined = r["pgr"] is None
        interval = "" if r["pgr_lo"] is None else f"[{r['pgr_lo']:.2f}, {r['pgr_hi']:.2f}]"
        lines.append([seed_text(r), r["weak"], r["strong"], r["loss"], _fmt(r["weak_acc"]),
                      _fmt(r["ceiling_acc"]), _fmt(r["transfer_acc"]),
                      "undefined (ceiling <= weak)" if undefined else _fmt(r["pgr"]), interval,
                      _fmt(r.get("pgr_auc"))])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return PGR_CAPTION + "\n" + "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                                          for line in lines)


def format_subsets(rows: list[dict]) -> str:
    """format_table once per test subset (the testbed's in- and out-of-distribution sets), each
    under its name; '' for datasets without subsets."""
    tables = [f"test subset {name!r} (PGR and its intervals on that subset's examples)\n"
              + format_table(on_subset(rows, name)) for name in subset_names(rows)]
    return "\n\n".join(tables)


def format_diagnostics(rows: list[dict]) -> str:
    """Transfer runs' gain over their supervisor beside their misfit (disagreement with it on
    test), agreement on test and on B, and ECE (10 equal-width bins); '' when no run has them."""
    rows = [r for r in rows if r.get("misfit") is not None]
    if not rows:
        return ""
    header = ["seed", "weak", "strong", "loss", "gain over weak", "misfit (test)", "agree test",
              "agree B", "ECE", "weak ECE", "chosen step"]
    lines = [header] + [[seed_text(r), r["weak"], r["strong"], r["loss"],
                         _fmt(r["gain_over_weak"]), _fmt(r["misfit"]),
                         _fmt(r["agreement_with_weak_test"]), _fmt(r.get("agreement_with_weak")),
                         _fmt(r["ece"]), _fmt(r["weak_ece"]), _fmt(r.get("chosen_step", ""))]
                        for r in rows]
    if any(r.get("dataset") for r in rows):  # a sweep's rows name their dataset
        lines = [[h, *line] for h, line in zip(["dataset"] + [r["dataset"] for r in rows], lines)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
    return ("diagnostics: gain = transfer - weak accuracy; misfit = the student's disagreement with "
            "its supervisor on test (with accuracy, gain <= misfit); ECE over 10 equal-width "
            "confidence bins\n"
            + table)


def seed_text(row: dict) -> str:
    """'0', or for a mean row how many seeds it rests on: 'mean of 3'."""
    return str(row["seed"]) if row["seed"] != "mean" else f"mean of {row['n_seeds']}"


def write_rows(path_stem: Path, rows: list[dict]) -> None:
    """<stem>.json and <stem>.csv of a list of flat rows (rank 0 only)."""
    atomic_write(path_stem.with_suffix(".json"), json.dumps(rows, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path_stem.with_suffix(".csv"), buffer.getvalue())


def aggregate_tables(rows: list[dict], out_dir: Path, order=None) -> str:
    """The reference's median PGR and the cross-dataset table: written as paper_pgr.{json,csv}
    and cross_dataset.{json,csv}; returned as text."""
    paper, across = paper_pgr(rows), cross_dataset(rows, order)
    write_rows(out_dir / "paper_pgr", paper)
    write_rows(out_dir / "cross_dataset", across)
    return format_paper_pgr(paper) + "\n\n" + format_cross_dataset(across)


def write_summary(rows: list[dict], out_dir: Path, order=None) -> None:
    """summary.{json,csv}, paper_pgr.{json,csv}, cross_dataset.{json,csv} (rank 0), and the
    tables on stdout."""
    if not dist.is_main():
        return
    if not rows:  # settings with no finished run: the files of other settings stay as they are
        print(f"[w2s] no finished transfer runs to summarize; {out_dir}/summary is left as it was",
              flush=True)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    write_rows(out_dir / "summary", rows)
    print(format_table(rows), flush=True)
    if format_subsets(rows):
        print("\n" + format_subsets(rows), flush=True)
    if format_diagnostics(rows):
        print("\n" + format_diagnostics(rows), flush=True)
    print("\n" + aggregate_tables(rows, out_dir, order), flush=True)
    print(f"[w2s] summary written to {out_dir}/summary, paper_pgr and cross_dataset (.json, .csv)",
          flush=True)
