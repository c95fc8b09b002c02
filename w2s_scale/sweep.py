"""Sweeps: every model size against every larger one (and itself), over seeds, losses, datasets.

A sweep is planned as a DAG of the same runs `w2s experiment` makes (pipeline.plan_gt and
plan_transfer, same hashes and folders, so the two share finished runs): one ground-truth run per
(dataset, seed, model), one transfer run per (dataset, seed, weak <= strong, loss), each transfer
run depending on its weak model's ground-truth run only (that run's weak labels are all it reads).
A run whose DONE marker exists is reused, so extending a sweep (a larger model, another seed)
runs only what is new. Executors (local, Slurm) are in executors.py; tables and plots in scaling.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from w2s_scale.config import (ConfigError, DataConfig, ExperimentConfig, LabelsConfig, LaunchConfig,
                              LossConfig, ModelConfig, Strict, TrackingConfig, TrainConfig, _one_line,
                              apply_overrides, labels_shorthand, read_config_file)
from w2s_scale.pipeline import RunPlan, plan_gt
from w2s_scale.results import run_state


class Resources(Strict):
    """What one run asks of Slurm. Ranks per node default to the GPUs per node (one rank per
    GPU), or to launch.nproc on CPU-only nodes."""
    nodes: int = Field(1, gt=0)
    gpus_per_node: int = Field(0, ge=0)
    ranks_per_node: Optional[int] = Field(None, gt=0)
    cpus_per_task: Optional[int] = Field(None, gt=0)  # cores for all the ranks of one node
    mem: Optional[str] = None                          # e.g. "64G" (--mem, per node)
    time: str = "04:00:00"
    partition: Optional[str] = None
    account: Optional[str] = None
    # per-node launcher (launch/slurm_node.py); None: none for a single rank, else torchrun
    launcher: Optional[Literal["torchrun", "deepspeed", "none"]] = None
    rdzv: Literal["c10d", "static"] = "c10d"          # torchrun: its rendezvous or fixed ranks
    signal_before_s: int = Field(180, ge=0)           # --signal=USR1@N: checkpoint, requeue
    sbatch: list[str] = Field(default_factory=list)   # extra options, passed through as given


class SweepModel(ModelConfig):
    """A model of the sweep: a ModelConfig plus the Slurm resources its runs ask for (merged
    over the sweep's `resources`)."""
    resources: dict[str, Any] = Field(default_factory=dict)
    # weak: only teaches (a supervisor, never a student); strong: only learns; both: the
    # reference's grid, every model teaching every larger one. Not part of a run's identity.
    role: Literal["both", "weak", "strong"] = "both"

    def model_config_only(self) -> ModelConfig:
        return ModelConfig(**self.model_dump(exclude={"resources", "role"}))


class SweepConfig(Strict):
    name: str
    results_dir: str = "results"
    seeds: list[int] = Field(default_factory=lambda: [0])
    datasets: list[DataConfig]
    models: list[SweepModel]           # ordered small -> large: a model teaches those after it
    train: TrainConfig = Field(default_factory=TrainConfig)
    losses: list[LossConfig] = Field(default_factory=lambda: [LossConfig(name="xent")])
    self_transfer: bool = True         # also weak == strong (each model taught by itself)
    # where transfer runs' labels come from: one set of transfer runs per entry, pair and loss
    # (see w2s_scale/labels.py; source: bootstrap walks the ladder between each pair)
    labels: list[LabelsConfig] = Field(default_factory=lambda: [LabelsConfig()])
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    launch: LaunchConfig = Field(default_factory=LaunchConfig)  # the local executor's ranks
    executor: Literal["local", "slurm"] = "local"
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "data" in data and "datasets" not in data:  # one dataset: `data:` as in experiments
                data["datasets"] = [data.pop("data")]
            if isinstance(data.get("losses"), list):
                data["losses"] = [{"name": v} if isinstance(v, str) else v for v in data["losses"]]
            if "labels" in data:
                data["labels"] = labels_shorthand(data["labels"])
        return data

    @field_validator("seeds", "datasets", "models", "losses")
    @classmethod
    def _nonempty(cls, value: list, info) -> list:
        if not value:
            raise ValueError(f"give at least one entry in {info.field_name}")
        return value

    @model_validator(mode="after")
    def _check(self) -> "SweepConfig":
        names = [m.short_name for m in self.models]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise ValueError(f"models.{i}: two models are both named {name!r}; give one a "
                                 f"`label`")
        datasets = [d.dataset for d in self.datasets]
        for i, name in enumerate(datasets):
            if datasets.index(name) != i:
                raise ValueError(f"datasets.{i}: dataset {name!r} appears twice; results of a "
                                 f"dataset share one folder, so run the other as its own sweep")
        from w2s_scale.labels import check_label_models

        named = {m.short_name: m.model_config_only() for m in self.models}
        check_label_models(self.labels, {**named, "weak": self.models[0], "strong": self.models[-1]},
                           bootstrap_needs_via=False)
        for i, model in enumerate(self.models):
            try:
                resources_for(self, model)
            except ConfigError as err:
                raise ValueError(f"models.{i}.{err}") from None
        for i in range(len(self.datasets)):
            try:
                experiment_for(self, i)
            except ConfigError as err:
                raise ValueError(str(err)) from None
        return self


def resources_for(cfg: SweepConfig, model: SweepModel) -> Resources:
    merged = {**cfg.resources.model_dump(), **model.resources}
    try:
        return Resources(**merged)
    except ValidationError as err:
        raise ConfigError(_one_line(err, prefix="resources")) from None


def experiment_for(cfg: SweepConfig, dataset_index: int) -> ExperimentConfig:
    """The experiment config a run of this dataset is planned and executed with: the same
    name, data and train settings as `w2s experiment` would use, hence the same run hashes."""
    raw = dict(name=cfg.name, results_dir=cfg.results_dir, seeds=cfg.seeds,
               data=cfg.datasets[dataset_index], weak=cfg.models[0].model_config_only(),
               strong=cfg.models[-1].model_config_only(), train=cfg.train, losses=cfg.losses,
               tracking=cfg.tracking, launch=cfg.launch)
    try:
        return ExperimentConfig(**raw)
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None


def from_experiment(exp: ExperimentConfig) -> SweepConfig:
    """An experiment as a two-model sweep without self-transfer: the very same runs."""
    return SweepConfig(name=exp.name, results_dir=exp.results_dir, seeds=exp.seeds,
                       datasets=[exp.data], models=[exp.weak.model_dump(), exp.strong.model_dump()],
                       train=exp.train, losses=exp.losses, self_transfer=False,
                       labels=exp.labels, tracking=exp.tracking, launch=exp.launch)


def load_sweep(path: str | Path, overrides: list[str] = ()) -> SweepConfig:
    """A sweep YAML (or an experiment YAML, read as the sweep of its two models)."""
    raw = read_config_file(path)
    raw = apply_overrides(raw, list(overrides))
    if "models" not in raw and ("weak" in raw or "strong" in raw):
        from w2s_scale.config import load_config

        return from_experiment(load_config(raw=raw))
    try:
        cfg = SweepConfig(**raw)
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None
    from w2s_scale.preflight import check_settings  # preflight imports this module

    check_settings(cfg)
    return cfg


# --- the plan ----------------------------------------------------------------------------------

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
    from w2s_scale.labels import plan_label_source

    runs: dict[str, SweepRun] = {}
    models = [(m.model_config_only(), resources_for(cfg, m)) for m in cfg.models]
    named = {model.short_name: model for model, _ in models}
    resources = {model.short_name: res for model, res in models}
    roles = [m.role for m in cfg.models]

    def add(exp: ExperimentConfig, prefix: str, plan: RunPlan) -> None:
        key = f"{prefix}/{plan.name}"
        if key not in runs:  # label stages and students are shared by every source that reads them
            deps = tuple(f"{prefix}/{p.name}" for p in plan.reads())
            runs[key] = SweepRun(key, plan, exp, deps,
                                 resources.get(plan.model.short_name, cfg.resources))

    for i, data in enumerate(cfg.datasets):
        exp = experiment_for(cfg, i)
        for seed in cfg.seeds:
            prefix = f"{data.dataset}/seed{seed}"
            gt = {}
            for model, _ in models:
                gt[model.short_name] = plan_gt(exp, model, seed)
                add(exp, prefix, gt[model.short_name])
            for w, (weak, _) in enumerate(models):
                if roles[w] == "strong":
                    continue
                first_strong = w if cfg.self_transfer and roles[w] == "both" else w + 1
                for s, (strong, _) in enumerate(models[first_strong:], first_strong):
                    if roles[s] == "weak":
                        continue
                    # a bootstrap chain steps through the models between that both learn and teach
                    ladder = [m for j, (m, _) in enumerate(models) if w < j < s and roles[j] == "both"]
                    for loss in cfg.losses:
                        for labels in cfg.labels:
                            for plan in plan_label_source(exp, gt[weak.short_name], strong, labels,
                                                          loss, seed, named, ladder):
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
    """done (DONE with this run's hash), conflict (DONE with other settings), partial (started:
    the next attempt resumes from its checkpoint), or missing."""
    state = run_state(run.plan.dir, run.plan.hash)
    return "conflict" if state == "stale" else state


def describe(cfg: SweepConfig, runs: list[SweepRun]) -> str:
    """One line on the shape of the sweep."""
    n_gt = sum(r.plan.kind == "gt" for r in runs)
    n_transfer = sum(r.plan.kind == "transfer" for r in runs)
    n_stages = len(runs) - n_gt - n_transfer
    losses = ", ".join(loss.tag for loss in cfg.losses)
    stages = f", {n_stages} label/activation stages" if n_stages else ""
    return (f"sweep {cfg.name}: {len(cfg.datasets)} dataset(s) x {len(cfg.seeds)} seed(s) x "
            f"{len(cfg.models)} model(s) [{', '.join(m.short_name for m in cfg.models)}], losses "
            f"[{losses}]: {n_gt} gt runs, {n_transfer} transfer runs{stages}")


def resources_text(res: Resources, world: Optional[int] = None) -> str:
    gpus = f", {res.gpus_per_node} GPU/node" if res.gpus_per_node else ""
    ranks = f" = {world} rank(s)" if world else ""
    return f"{res.nodes} node(s){gpus}{ranks}, {res.time}"
