"""The label store built from a finished experiment or sweep, once, where the labels are.

The ground truth comes from the splits themselves (pipeline.make_run_splits, the very call every
run makes, so the store's B and test are the runs' B and test, example for example). The
baselines come from the finished ground-truth runs: for each (dataset, weak, strong) pair the
sweep plans a transfer for, the weak model's gt run and the strong model's ceiling run (on A, or
on B where the dataset puts the ceiling there: the testbed), their metrics.json per seed. A run
that is not finished (or whose files no longer match its DONE record) is left out and said so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from w2s_scale.data.images import ImageSet
from w2s_scale.data.sources import num_classes
from w2s_scale.loading import load_sweep
from w2s_scale.pipeline import make_run_splits
from w2s_scale.planning import RunPlan, plan_gt
from w2s_scale.results import finished, inspect
from w2s_scale.service.store import Baseline, Part, StoreError, now, write_store
from w2s_scale.sweep import SweepRun, plan_sweep, sweep_dir

# what a baseline keeps of a gt run's metrics.json
KEPT = ("accuracy", "auc", "n_test")


def ground_truth(examples) -> Part:
    """A split's ids, labels and test subsets: text Examples, or an image split's ImageSet."""
    if isinstance(examples, ImageSet):
        part = Part(ids=tuple(examples.ids), labels=examples.labels.astype(int))
    else:
        part = Part(ids=tuple(e.id for e in examples),
                    labels=np.array([e.label for e in examples], dtype=int),
                    subsets={e.id: e.subset for e in examples if e.subset is not None})
    if len(part.position) != len(part.ids):
        raise StoreError("the split has repeated example ids; the store needs one id per example")
    return part


def _scores(plan: RunPlan) -> Optional[dict[str, Any]]:
    """The test scores of a finished run, None if it is not finished with its planned settings."""
    if inspect(plan.dir, plan.hash)[0] != "done":
        return None
    metrics = finished(plan.dir, plan.hash).read_json("metrics.json")
    kept = {k: metrics[k] for k in KEPT if k in metrics}
    kept["subsets"] = {name: {k: m[k] for k in KEPT if k in m}
                       for name, m in (metrics.get("subsets") or {}).items()}
    return kept


def baselines(runs: Sequence[SweepRun]) -> tuple[list[Baseline], list[str]]:
    """The baseline of every (dataset, weak, strong) pair with a transfer or a method planned, and notes on
    the runs left out."""
    anchors: dict[tuple[str, str, str], tuple[dict, dict]] = {}
    for run in runs:
        plan = run.plan
        # a method run is anchored like a transfer of its pair (its weak gt run and the ceiling)
        if plan.kind not in ("transfer", "method") or plan.weak is None or plan.weak.seed_offset:
            continue
        weak, strong = plan.weak.model.short_name, plan.model.short_name
        if weak == strong:  # self-transfer: no gap to recover
            continue
        weak_plans, ceiling_plans = anchors.setdefault((run.dataset, weak, strong), ({}, {}))
        weak_plans[run.seed] = plan.weak
        ceiling_plans[run.seed] = plan_gt(run.experiment, plan.model, run.seed, ceiling=True)
    out, notes = [], []
    for (dataset, weak, strong), (weak_plans, ceiling_plans) in sorted(anchors.items()):
        found = []
        for plans in (weak_plans, ceiling_plans):
            scored = {seed: _scores(p) for seed, p in sorted(plans.items())}
            missing = [f"{p.name} seed {s}" for s, p in sorted(plans.items()) if scored[s] is None]
            if missing:
                notes.append(f"{dataset} {weak}->{strong}: not finished, left out of the "
                             f"baseline: {', '.join(missing)}")
            found.append({s: v for s, v in scored.items() if v is not None})
        if found[0] and found[1]:
            out.append(Baseline(dataset, weak, strong, found[0], found[1]))
    return out, notes


def export(config: str | Path, overrides: Sequence[str], folder: Path) -> list[str]:
    """Write the label store of the experiment or sweep `config` into `folder`; returns lines
    saying what it holds and what was left out."""
    sweep = load_sweep(config, list(overrides))
    runs = plan_sweep(sweep)
    anchors, notes = baselines(runs)
    if not anchors:
        raise StoreError(f"-c {config}: no (weak, strong) pair has both its weak and its ceiling "
                         f"run finished under {sweep_dir(sweep)}; run its ground-truth runs first "
                         f"(`w2s experiment` or `w2s sweep` with this config), then export")
    experiments: dict[tuple[str, int], Any] = {}
    for run in runs:
        experiments.setdefault((run.dataset, run.seed), run.experiment)
    parts, classes = {}, {}
    for (dataset, seed), exp in sorted(experiments.items()):
        splits = make_run_splits(exp, seed)
        parts[(dataset, seed, "test")] = ground_truth(splits.test)
        parts[(dataset, seed, "b")] = ground_truth(splits.b)
        classes[dataset] = (splits.test.n_classes if isinstance(splits.test, ImageSet)
                            else num_classes(exp.data))
    info = {"experiment": sweep.name, "config": str(Path(config).resolve()), "exported": now(),
            "results": str(sweep_dir(sweep).resolve())}
    write_store(folder, info, classes, parts, anchors)
    sizes = ", ".join(f"{d} seed {s} {split} {len(p.ids)}" for (d, s, split), p in sorted(parts.items()))
    return [f"label store written to {folder} (owner-only): {sizes}",
            *(f"baseline {b.dataset} {b.weak}->{b.strong}: weak acc {b.means()['weak_acc']:.4f} "
              f"over {len(b.weak_runs)} seed(s), ceiling acc {b.means()['ceiling_acc']:.4f} over "
              f"{len(b.ceiling_runs)} seed(s)" for b in anchors),
            *notes]
