"""Planning: which runs an experiment makes, and each run's resolved settings.

A plan is data: a RunPlan names a run, its folder, the hash of everything that changes its results,
its model with the train settings resolved once here (catalogue defaults < the experiment's `train`
< the model's own overrides, config.train_for), and the runs it reads. `w2s experiment` and
`w2s sweep` plan with the same functions, so both name and hash a run alike and share finished
runs. Running a plan is w2s_scale/pipeline.py (and labels.py for label stages); nothing here
opens a file or loads a model.

The label sources (w2s_scale/labels.py says what each does) are planned here too: ensembles,
probes, bootstrap chains and strong-to-strong iterations, each a list of RunPlans ending in the
students.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from w2s_scale.config import (ConfigError, ExperimentConfig, LabelsConfig, LoraConfig, LossConfig,
                              MethodConfig, ModelConfig, ProbeConfig, TrainConfig, stable_hash,
                              train_for)
from w2s_scale.config import ElicitationConfig
from w2s_scale.ccs import Contrast, contrast_spec
from w2s_scale.elicitation import scoring_model
from w2s_scale.data.sources import DATASETS
from w2s_scale.losses import LOSSES

GT_LOSS = LossConfig(name="xent")  # ground truth runs: cross-entropy against one-hot labels
# settings that change how a run is carried out but not its results (padding_free: the same
# logits within float tolerance): left out of its hash, so they can change between an
# interrupted attempt and its resumption
NOT_IN_HASH = {"checkpoint_every", "keep_checkpoints", "eval_batch_size", "padding_free"}
ModelRef = Union[str, ModelConfig]


def results_identity(model: ModelConfig, train_cfg: TrainConfig) -> tuple:
    """What of a model and its training changes results: not its display label, where its
    train overrides came from (train_cfg holds them resolved), what is saved, or NOT_IN_HASH."""
    model_id = model.model_copy(update={"train": {}, "label": None, "save": "none"})
    # settings added later (early stopping, ...) enter the hash only when set: config.Strict
    return model_id, train_cfg.model_dump(mode="json", exclude=NOT_IN_HASH)


def split_identity(data) -> tuple:
    """What of the split rule enters a run's hash: datasets whose related rows are kept on one side
    of A / B (data/groups.py) were cut row by row before, so their runs' hashes change; every other
    dataset's hash stays as it was."""
    source = DATASETS.get(data.dataset)
    if source is not None and source.fixed_parts:  # A and B are given files, not cut
        return (("split", "given"),)
    return (("split", "grouped"),) if source is not None and source.group_by is not None else ()


def held_out_tag(train_cfg: TrainConfig) -> str:
    """Appended to a transfer run's folder name when slices of B are held out ("-es20v0.1",
    "-gtc50f0.1"; w2s_scale/selection.py), so it lives beside the run without them and both
    reuse the same gt runs."""
    stop, curve = train_cfg.early_stopping, train_cfg.gt_curve
    return ((f"-es{stop.every}v{stop.val_fraction:g}" if stop else "")
            + (f"-gtc{curve.every}f{curve.fraction:g}" if curve else ""))


def pretrained_only(model: ModelConfig) -> ModelConfig:
    """The model as loaded, before any fine-tuning: no adapters, nothing frozen or saved (LoRA
    adapters start at zero, so they would not change the activations anyway)."""
    # a label-token model's activations are its decoder's, of the document without the prompt
    head = {"head": "auto", "label_tokens": None} if model.head == "label_tokens" else {}
    return model.model_copy(update={"lora": LoraConfig(), "linear_probe": False,
                                    "gradient_checkpointing": False, "save": "none",
                                    "train": {}, "label": None, **head})


@dataclass(frozen=True)
class RunPlan:
    name: str                        # gt-<model>, w2s-<weak>-to-<strong>-<loss>, labels-..., acts-..., method-...
    kind: Literal["gt", "transfer", "labels", "activations", "method"]
    model: ModelConfig
    train: TrainConfig
    loss: LossConfig
    seed: int
    dir: Path
    hash: str                        # of everything that changes this run's results
    # transfer: the gt run of its weak model, whose test accuracy is the PGR floor; also the
    # label source unless `source` says otherwise
    weak: Optional["RunPlan"] = field(default=None, compare=False)
    # transfer: the run whose B labels (weak_labels.jsonl) it trains on: a label stage, or a
    # previous student (strong-to-strong, bootstrapping); None: `weak`
    source: Optional["RunPlan"] = field(default=None, compare=False)
    # label and activation stages: the runs they read (see w2s_scale/labels.py); method runs:
    # the weak gt run, the ceiling and the label source (w2s_scale/methods/runner.py)
    inputs: tuple = field(default=(), compare=False)
    stage: Any = field(default=None, compare=False)  # a stage's settings (LabelsConfig, layer, MethodConfig)
    label_tag: str = "weak"          # transfer: where its labels come from, for tables
    seed_offset: int = 0             # gt run of an ensemble member: trains with seed + offset
    # gt runs: the part whose ground truth it trains on; "b" only for a strong ceiling of a
    # dataset whose ceiling trains on B (the automated-W2S testbed's, DatasetSource.ceiling_on)
    trains_on: Literal["a", "b"] = "a"

    @property
    def train_seed(self) -> int:
        return self.seed + self.seed_offset

    @property
    def variant(self) -> str:
        """The loss, and the label source when it is not the weak model alone: how tables
        and figures tell transfer runs of one (weak, strong) pair apart; a method run: its tag."""
        if self.kind == "method":
            return self.label_tag
        return self.loss.tag if self.label_tag == "weak" else f"{self.loss.tag}+{self.label_tag}"

    def reads(self) -> list["RunPlan"]:
        """The runs whose results this one reads (each must be done first)."""
        if self.kind == "transfer":
            return [self.weak] + ([self.source] if self.source is not None else [])
        return list(self.inputs)


def seed_dir(cfg: ExperimentConfig, seed: int) -> Path:
    return Path(cfg.results_dir) / cfg.name / cfg.data.dataset / f"seed{seed}"


def ceiling_part(data) -> Literal["a", "b"]:
    """The part a strong ceiling trains on: A (the reference's), or B where the dataset says so
    (the automated-W2S testbed's: the ground truth of the documents the students learn from)."""
    source = DATASETS.get(data.dataset)
    return source.ceiling_on if source is not None else "a"


def plan_gt(cfg: ExperimentConfig, model: ModelConfig, seed: int, seed_offset: int = 0,
            ceiling: bool = False) -> RunPlan:
    """The run of `model` on ground truth: on A (a weak model's, and the ceiling's unless the
    dataset puts the ceiling on B); `ceiling`: the run that serves as a strong model's ceiling."""
    # early stopping and the ground-truth curve hold out slices of B: transfer runs only
    train_cfg = train_for(cfg, model).model_copy(update={"early_stopping": None, "gt_curve": None})
    trains_on = ceiling_part(cfg.data) if ceiling else "a"
    name = (f"gt-{model.short_name}" + (f"-seed+{seed_offset}" if seed_offset else "")
            + ("-on-b" if trains_on == "b" else ""))
    # an offset and the part enter the hash only when set: existing gt runs keep their hashes
    offset = (("seed_offset", seed_offset),) if seed_offset else ()
    part = (("trains_on", "b"),) if trains_on == "b" else ()
    return RunPlan(name=name, kind="gt", model=model, train=train_cfg, loss=GT_LOSS, seed=seed,
                   dir=seed_dir(cfg, seed) / name, seed_offset=seed_offset, trains_on=trains_on,
                   hash=stable_hash("gt", *results_identity(model, train_cfg), cfg.data, seed, *offset,
                                    *split_identity(cfg.data), *part))


def plan_transfer(cfg: ExperimentConfig, weak: RunPlan, strong: ModelConfig, loss: LossConfig,
                  seed: int, source: Optional[RunPlan] = None, label_tag: str = "weak",
                  name: Optional[str] = None) -> RunPlan:
    """`strong` trained on B against the labels of `source` (default: the weak gt run)."""
    train_cfg = train_for(cfg, strong).model_copy(update={"gt_n_train": None})  # gt runs only
    name = name or f"w2s-{weak.model.short_name}-to-{strong.short_name}-{loss.tag}"
    name += held_out_tag(train_cfg)
    labels_from = source if source is not None else weak
    return RunPlan(name=name, kind="transfer", model=strong, train=train_cfg, loss=loss,
                   seed=seed, dir=seed_dir(cfg, seed) / name,
                   hash=stable_hash("transfer", *results_identity(strong, train_cfg), cfg.data,
                                    seed, loss_identity(loss), labels_from.hash,
                                    *split_identity(cfg.data)),
                   weak=weak, source=source, label_tag=label_tag)


def loss_identity(loss: LossConfig):
    """The loss as it enters a run's hash: its config, and its revision once its meaning changed."""
    revision = LOSSES[loss.name].revision
    return loss if not revision else (loss.model_dump(mode="json"), revision)


def plan_experiment(cfg: ExperimentConfig) -> list[RunPlan]:
    """Runs in the order they must happen (a run after every run it reads), each once."""
    plans: dict[Path, RunPlan] = {}
    for seed in cfg.seeds:
        weak = plan_gt(cfg, cfg.weak, seed)
        strong = plan_gt(cfg, cfg.strong, seed, ceiling=True)
        named = {"weak": cfg.weak, "strong": cfg.strong,
                 cfg.weak.short_name: cfg.weak, cfg.strong.short_name: cfg.strong}
        for plan in [weak, strong] + [p for loss in cfg.losses for labels in cfg.labels
                                      for p in plan_label_source(cfg, weak, cfg.strong, labels,
                                                                 loss, seed, named)] + [
                p for method in cfg.method
                for p in plan_method(cfg, weak, strong, cfg.strong, method, seed, named)]:
            if plan.dir in plans and plans[plan.dir].hash != plan.hash:
                # two different runs named alike would share one folder, one reading the other's
                raise ConfigError(f"{plan.dir.name}: two different runs would share this folder "
                                  f"(models, label sources or methods named alike); give the "
                                  f"models (or methods) distinct `label`s")
            plans.setdefault(plan.dir, plan)
    return list(plans.values())


# --- the label sources ---------------------------------------------------------------------------

def resolve(ref: ModelRef, weak: ModelConfig, strong: ModelConfig, named: dict[str, ModelConfig]) -> ModelConfig:
    if not isinstance(ref, str):
        return ref
    return {"weak": weak, "strong": strong}.get(ref) or named[ref]


def probe_tag(probe: ProbeConfig) -> str:
    """knn-relabel, logreg-filter, topo-filter-c0.2-L3, ...: the probe's settings that differ
    from the defaults, for run names."""
    default = ProbeConfig()
    tag = f"{probe.kind}-{probe.mode}"
    if probe.k != default.k and probe.kind in ("knn", "topo"):
        tag += f"-k{probe.k}"
    if probe.restarts != default.restarts and probe.kind == "ccs":
        tag += f"-r{probe.restarts}"
    if probe.l2 != default.l2 and probe.kind == "logreg":
        tag += f"-l2{probe.l2:g}"
    if probe.contamination != default.contamination and probe.mode == "filter":
        tag += f"-c{probe.contamination:g}"
    if probe.layer is not None:
        tag += f"-L{probe.layer}"
    return tag


def elicitation_tag(settings: ElicitationConfig) -> str:
    """icms, icms-m4-it500, zeroshot: the elicitation mode and its settings that differ from the
    defaults, for run names."""
    if settings.mode == "zero_shot":
        return "zeroshot"
    short = {"n_search": "n", "context": "m", "iterations": "it", "initial": "k", "alpha": "a",
             "t0": "t", "t_min": "tmin", "min_class_fraction": "b"}
    default = ElicitationConfig()
    return "icms" + "".join(f"-{key}{getattr(settings, name):g}" for name, key in short.items()
                            if getattr(settings, name) != getattr(default, name))


def plan_activations(cfg: ExperimentConfig, model: ModelConfig, layer: Optional[int], seed: int) -> RunPlan:
    """The pretrained model's activations on B (they depend on the seed's split of the data)."""
    train_cfg = train_for(cfg, model)
    name = f"acts-{model.short_name}-L{'mid' if layer is None else layer}"
    identity = pretrained_only(model).model_dump(mode="json")
    return RunPlan(name=name, kind="activations", model=model, train=train_cfg, loss=GT_LOSS,
                   seed=seed, dir=seed_dir(cfg, seed) / name, stage=layer,
                   hash=stable_hash("activations", identity, layer, cfg.data, seed,
                                    *split_identity(cfg.data)))


def plan_contrast(cfg: ExperimentConfig, model: ModelConfig, layer: Optional[int], seed: int) -> RunPlan:
    """The pretrained model's activations of B's contrast pairs, for CCS (w2s_scale/ccs.py):
    each document with the answer of class 0 and of class 1 after it, both sides in one stage."""
    spec = contrast_spec(model, cfg.data, layer)
    train_cfg = train_for(cfg, model)
    name = f"acts-{model.short_name}-L{'mid' if layer is None else layer}-contrast"
    identity = pretrained_only(model).model_dump(mode="json")
    return RunPlan(name=name, kind="activations", model=model, train=train_cfg, loss=GT_LOSS,
                   seed=seed, dir=seed_dir(cfg, seed) / name, stage=spec,
                   hash=stable_hash("contrast", identity, asdict(spec), cfg.data, seed,
                                    *split_identity(cfg.data)))


def confident_tag(labels: LabelsConfig) -> str:
    """conf-t0.75 (a threshold on the confidence), conf-k0.5 (the most confident half)."""
    rule, value = labels.confident_rule
    return f"conf-{'k' if rule == 'keep_fraction' else 't'}{value:g}"


def label_stage(cfg: ExperimentConfig, name: str, model: ModelConfig, settings: dict,
                 inputs: list[RunPlan], seed: int, stage) -> RunPlan:
    return RunPlan(name=name, kind="labels", model=model, train=train_for(cfg, model),
                   loss=GT_LOSS, seed=seed, dir=seed_dir(cfg, seed) / name, inputs=tuple(inputs),
                   stage=stage, hash=stable_hash("labels", settings, [p.hash for p in inputs]))


def plan_label_source(cfg: ExperimentConfig, weak: RunPlan, strong: ModelConfig,
                      labels: LabelsConfig, loss: LossConfig, seed: int,
                      named: dict[str, ModelConfig],
                      ladder: Optional[list[ModelConfig]] = None) -> list[RunPlan]:
    """Every run a transfer from `weak` (a gt run) to `strong` with these labels needs, each
    after the runs it reads; the students last. `named`: the models members and `via` may
    name; `ladder`: a sweep's models between weak and strong (a bootstrap without `via`)."""
    plans: list[RunPlan] = []
    src = labels.source
    if src == "weak":
        plans.append(plan_transfer(cfg, weak, strong, loss, seed))
    elif src == "ensemble":
        members = [plan_gt(cfg, resolve(m.model, weak.model, strong, named), seed, m.seed_offset)
                   for m in labels.members]
        # named by what the members are, not by their runs' hashes (those differ per seed): the
        # same ensemble is one row of the summary over seeds
        tag = "ens-" + stable_hash([(results_identity(m.model, m.train), m.seed_offset)
                                    for m in members], labels.weights)[:6]
        stage = label_stage(cfg, f"labels-{tag}", members[0].model,
                             {"source": "ensemble", "weights": labels.weights}, members, seed,
                             labels)
        plans += members + [stage, plan_transfer(cfg, members[0], strong, loss, seed, source=stage,
                                                 label_tag=tag,
                                                 name=f"w2s-{tag}-to-{strong.short_name}-{loss.tag}")]
    elif src == "probe":
        probe = labels.probe_or_default
        acts = (plan_contrast(cfg, strong, probe.layer, seed) if probe.kind == "ccs"
                else plan_activations(cfg, strong, probe.layer, seed))
        tag = probe_tag(probe)
        settings = probe.model_dump(mode="json", exclude={"layer"})  # the layer: in acts' hash
        stage = label_stage(cfg, f"labels-{weak.model.short_name}-{tag}-{strong.short_name}",
                             strong, {"source": "probe", **settings}, [weak, acts], seed, probe)
        plans += [weak, acts, stage, plan_transfer(
            cfg, weak, strong, loss, seed, source=stage, label_tag=tag,
            name=f"w2s-{weak.model.short_name}-{tag}-to-{strong.short_name}-{loss.tag}")]
    elif src == "confident":
        # the weak labels of B, the least confident left out (labels.confident_keep): no model runs
        tag = confident_tag(labels)
        rule, value = labels.confident_rule
        stage = label_stage(cfg, f"labels-{weak.model.short_name}-{tag}", weak.model,
                             {"source": "confident", rule: value}, [weak], seed, labels)
        plans += [weak, stage, plan_transfer(
            cfg, weak, strong, loss, seed, source=stage, label_tag=tag,
            name=f"w2s-{weak.model.short_name}-{tag}-to-{strong.short_name}-{loss.tag}")]
    elif src == "elicitation":
        # the pretrained strong model labels B alone (w2s_scale/elicitation.py): the stage reads
        # no run; the weak gt run is the PGR floor only
        elicit = labels.elicitation_or_default
        tag = elicitation_tag(elicit)
        settings = {"source": "elicitation", **elicit.model_dump(mode="json"),
                    "model": scoring_model(strong).model_dump(mode="json"),
                    "data": cfg.data.model_dump(mode="json"), "seed": seed,
                    "split": split_identity(cfg.data)}
        stage = label_stage(cfg, f"labels-{tag}-{strong.short_name}", strong, settings, [], seed,
                             elicit)
        plans += [weak, stage, plan_transfer(
            cfg, weak, strong, loss, seed, source=stage, label_tag=tag,
            name=f"w2s-{weak.model.short_name}-{tag}-to-{strong.short_name}-{loss.tag}")]
    elif src == "bootstrap":
        via = [resolve(v, weak.model, strong, named) for v in labels.via] if labels.via else list(ladder or [])
        if not via:
            return []  # nothing between weak and strong: the direct transfer is the chain
        chain = [weak.model, *via, strong]
        student: Optional[RunPlan] = None
        for k in range(1, len(chain)):
            names = "-to-".join(m.short_name for m in chain[:k + 1])
            tag = "weak" if k == 1 else "boot-" + "-".join(m.short_name for m in chain[1:k])
            student = plan_transfer(cfg, weak, chain[k], loss, seed, source=student, label_tag=tag,
                                    name=f"w2s-{names}-{loss.tag}")
            plans.append(student)
    else:  # the config's Literal keeps this unreachable
        raise ConfigError(f"labels.source: unknown source {src!r}")
    final = plans[-1]
    for i in range(1, labels.s2s_iterations + 1):
        tag = f"s2s{i}" if final.label_tag == "weak" else f"{final.label_tag}+s2s{i}"
        plans.append(plan_transfer(cfg, final.weak, strong, loss, seed, source=plans[-1], label_tag=tag,
                                   name=f"{final.name}-s2s{i}"))
    return plans


# --- methods behind the method contract (w2s_scale/methods/) ------------------------------------

def method_identity(method: MethodConfig) -> dict:
    """What of a method section changes its results: its name, options and loss (its labels
    enter through the label source's hash; its display label does not)."""
    identity = {"name": method.name, "options": method.model_dump(mode="json")["options"],
                "loss": loss_identity(method.loss)}
    if method.isolated is not None:  # scored by the service, not in-process: a run of its own
        identity["isolated"] = True  # (which folders it hides and where the service is: not)
    return identity


def plan_method(cfg: ExperimentConfig, weak: RunPlan, ceiling: RunPlan, strong: ModelConfig,
                method: MethodConfig, seed: int, named: dict[str, ModelConfig],
                ladder: Optional[list[ModelConfig]] = None) -> list[RunPlan]:
    """The runs a method run from `weak` (a gt run) to `strong` reads, then the method run.

    Its label source is planned as for a transfer run with the method's loss, and the method is
    given the labels that source's student would train on; the source's own last student is not
    needed. Its hash covers the method's identity and the hashes of the runs it reads (the weak
    gt run: soft labels on test and the floor; the ceiling; the label source), so weak runs,
    ceilings and label stages are shared with every transfer and every other method."""
    source_runs = plan_label_source(cfg, weak, strong, method.labels, method.loss, seed, named, ladder)
    source = source_runs[-1].source if source_runs else None   # None: the weak gt run's labels
    # early stopping holds out weak-labelled rows, which needs no label; the ground-truth curve
    # scores against ground truth, which a method's students never see
    train_cfg = train_for(cfg, strong).model_copy(update={"gt_n_train": None, "gt_curve": None})
    name = f"method-{weak.model.short_name}-to-{strong.short_name}-{method.tag}" + held_out_tag(train_cfg)
    inputs = (weak, ceiling) + ((source,) if source is not None else ())
    plan = RunPlan(name=name, kind="method", model=strong, train=train_cfg, loss=method.loss,
                   seed=seed, dir=seed_dir(cfg, seed) / name, weak=weak, source=source,
                   inputs=inputs, stage=method, label_tag=method.tag,
                   hash=stable_hash("method", method_identity(method),
                                    *results_identity(strong, train_cfg), cfg.data, seed,
                                    [p.hash for p in inputs], *split_identity(cfg.data)))
    return source_runs[:-1] + [plan]
