"""Sweeps: every model size against every larger one (and itself), over seeds, losses, datasets.

A sweep is planned as a DAG of the same runs `w2s experiment` makes (planning.plan_gt and
plan_transfer, same hashes and folders, so the two share finished runs): one ground-truth run per
(dataset, seed, model), one transfer run per (dataset, seed, weak <= strong, loss), each transfer
run depending on its weak model's ground-truth run only (that run's weak labels are all it reads),
and one method run per pair and `method` entry (planning.plan_method), depending on the weak gt
run, the strong model's ceiling and its label source's runs.
A run whose DONE marker exists is reused, so extending a sweep (a larger model, another seed)
runs only what is new. Executors (local, Slurm) are in executors.py; tables and plots in scaling.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from w2s_scale.config import (ConfigError, ExperimentConfig, Resources, SweepConfig, experiment_for,
                              resources_for)
from w2s_scale.planning import RunPlan, plan_gt, plan_label_source, plan_method
from w2s_scale.results import inspect, run_state


@dataclass(frozen=True)
class SweepRun:
    key: str                       # "<dataset>/seed<k>/<run name>", unique in the sweep
    plan: RunPlan
    experiment: ExperimentConfig   # what pipeline.execute is given
    deps: tuple[str, ...]          # keys of the runs this one reads (its weak gt run)
    resources: Resources

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def seed(self) -> int:
        return self.plan.seed

    @property
    def dataset(self) -> str:
        return self.experiment.data.dataset


def plan_sweep(cfg: SweepConfig) -> list[SweepRun]:
    """Every run of the sweep, each after the runs it depends on, each once."""
    runs: dict[str, SweepRun] = {}
    models = [(m.model_config_only(), resources_for(cfg, m)) for m in cfg.models]
    named = {model.short_name: model for model, _ in models}
    resources = {model.short_name: res for model, res in models}
    roles = [m.role for m in cfg.models]
    model_seeds = [set(cfg.seeds if m.seeds is None else m.seeds) for m in cfg.models]

    def add(exp: ExperimentConfig, prefix: str, plan: RunPlan) -> None:
        key = f"{prefix}/{plan.name}"
        if key in runs and runs[key].plan.hash != plan.hash:
            # two different runs named alike would share one folder, the second reading the first's
            raise ConfigError(f"models: two different runs are both named {key} (their settings "
                              f"differ); give the models distinct `label`s")
        if key not in runs:  # label stages and students are shared by every source that reads them
            for read in plan.reads():  # a run it reads that is not planned yet comes first
                if f"{prefix}/{read.name}" not in runs:
                    add(exp, prefix, read)
            deps = tuple(f"{prefix}/{p.name}" for p in plan.reads())
            runs[key] = SweepRun(key, plan, exp, deps,
                                 resources.get(plan.model.short_name, cfg.resources))

    for i, data in enumerate(cfg.datasets):
        exp = experiment_for(cfg, i)
        for seed in cfg.seeds:
            prefix = f"{data.dataset}/seed{seed}"
            gt, ceilings = {}, {}
            for m, (model, _) in enumerate(models):
                if seed not in model_seeds[m]:
                    continue
                gt[model.short_name] = plan_gt(exp, model, seed)
                ceiling = ceilings[model.short_name] = plan_gt(exp, model, seed, ceiling=True)
                # its run on A's ground truth teaches; a student only (role strong) needs it only
                # where it is also its ceiling (the data may put the ceiling on B: the testbed)
                if roles[m] != "strong" or ceiling.hash == gt[model.short_name].hash:
                    add(exp, prefix, gt[model.short_name])
                if roles[m] != "weak":
                    add(exp, prefix, ceiling)
            for w, (weak, _) in enumerate(models):
                if roles[w] == "strong" or seed not in model_seeds[w]:
                    continue
                first_strong = w if cfg.self_transfer and roles[w] == "both" else w + 1
                for s, (strong, _) in enumerate(models[first_strong:], first_strong):
                    if roles[s] == "weak" or seed not in model_seeds[s]:
                        continue
                    # a bootstrap chain steps through the models between that both learn and teach
                    ladder = [m for j, (m, _) in enumerate(models) if w < j < s and roles[j] == "both"]
                    for loss in cfg.losses:
                        for labels in cfg.labels:
                            for plan in plan_label_source(exp, gt[weak.short_name], strong, labels,
                                                          loss, seed, named, ladder):
                                add(exp, prefix, plan)
                    for method in cfg.method:  # the method contract (w2s_scale/methods/)
                        for plan in plan_method(exp, gt[weak.short_name], ceilings[strong.short_name],
                                                strong, method, seed, named, ladder):
                            add(exp, prefix, plan)
    return list(runs.values())


def find_run(runs: list[SweepRun], run: str, seed: Optional[int], dataset: Optional[str]) -> SweepRun:
    """A run by its key ("jsonl/seed0/gt-gpt2") or by name with --seed / --dataset."""
    matches = [r for r in runs if r.key == run] or [
        r for r in runs if r.name == run and (seed is None or r.seed == seed)
        and (dataset is None or r.dataset == dataset)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        names = sorted({r.name for r in runs})
        raise ConfigError(f"--run {run}: no such run in this sweep (seed {seed}, dataset "
                          f"{dataset}); runs are named {', '.join(names[:8])}"
                          f"{' ...' if len(names) > 8 else ''}")
    raise ConfigError(f"--run {run}: {len(matches)} runs match ({', '.join(r.key for r in matches[:4])}); "
                      f"add --seed and/or --dataset")


def sweep_dir(cfg: SweepConfig) -> Path:
    return Path(cfg.results_dir) / cfg.name


def disk_state(run: SweepRun) -> str:
    """done (DONE with this run's hash, its files as recorded), damaged (DONE with this hash, its
    files changed since: redone like an unfinished run), conflict (DONE with other settings),
    partial (started: the next attempt resumes from its checkpoint), or missing."""
    state = run_state(run.plan.dir, run.plan.hash)
    return "conflict" if state == "stale" else state


def damage(run: SweepRun) -> str:
    """What is wrong with a damaged run's files, in words ('' when nothing is)."""
    return inspect(run.plan.dir, run.plan.hash)[1] or ""


def describe(cfg: SweepConfig, runs: list[SweepRun]) -> str:
    """One line on the shape of the sweep."""
    n_gt = sum(r.plan.kind == "gt" for r in runs)
    n_transfer = sum(r.plan.kind == "transfer" for r in runs)
    n_method = sum(r.plan.kind == "method" for r in runs)
    n_stages = len(runs) - n_gt - n_transfer - n_method
    losses = ", ".join(loss.tag for loss in cfg.losses)
    stages = f", {n_stages} label/activation stages" if n_stages else ""
    stages += f", {n_method} method runs" if n_method else ""
    return (f"sweep {cfg.name}: {len(cfg.datasets)} dataset(s) x {len(cfg.seeds)} seed(s) x "
            f"{len(cfg.models)} model(s) [{', '.join(m.short_name for m in cfg.models)}], losses "
            f"[{losses}]: {n_gt} gt runs, {n_transfer} transfer runs{stages}")


def resources_text(res: Resources, world: Optional[int] = None) -> str:
    gpus = f", {res.gpus_per_node} GPU/node" if res.gpus_per_node else ""
    ranks = f" = {world} rank(s)" if world else ""
    return f"{res.nodes} node(s){gpus}{ranks}, {res.time}"
