"""The label stage: what a transfer run's student trains on, made from supervisors' predictions.

Every run (gt or transfer) labels B with its predictions (weak_labels.jsonl). A transfer run
trains on the labels of one run, its *source*:

- weak       the weak model's gt run (the reference's experiment);
- ensemble   a label stage averaging several gt runs' labels (other models, or the weak model
             trained with other seeds), with optional weights;
- probe      a label stage that relabels or filters the weak labels with a probe on the
             pretrained strong model's activations (an activation stage, extracted once);
- bootstrap  the previous student of a chain weak -> m1 -> ... -> strong (Burns et al.);
- and after any of them, `s2s_iterations` strong-to-strong runs, each student trained from its
  pretrained weights on the previous student's labels (EleutherAI).

Label and activation stages are runs like the others (pipeline.RunPlan of kind "labels" /
"activations"): a folder with DONE and a hash of everything they read, reused when done, and
planned by the same function for `w2s experiment` and `w2s sweep`, so both share them. Every
floor (PGR's weak accuracy) is a gt run: for an ensemble its first member, for a chain and for
strong-to-strong the original weak model.
"""
from __future__ import annotations

import time
from typing import Optional, Union

import numpy as np

from w2s_scale.config import (ConfigError, ExperimentConfig, LabelsConfig, LossConfig, ModelConfig,
                              ProbeConfig, stable_hash, train_for)
from w2s_scale import predictions
from w2s_scale.errors import shorten
from w2s_scale.pipeline import (GT_LOSS, RunPlan, _results_identity, plan_gt, plan_transfer,
                                say, seed_dir)
from w2s_scale.results import RunDir, finished

LABELS_FILE = "weak_labels.jsonl"
ACTIVATIONS_FILE = "activations.npy"
ModelRef = Union[str, ModelConfig]


# --- label files -----------------------------------------------------------------------------------

def read_labels(run: RunDir) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(example ids, soft labels [N, K], ground-truth labels [N]) of a run's labels of B."""
    rows = run.read_jsonl(LABELS_FILE)
    probs = np.array([predictions.probs_of(r) for r in rows], dtype=np.float32)
    return [r["id"] for r in rows], probs.reshape(len(rows), -1), np.array([r["label"] for r in rows])


def write_labels(run: RunDir, ids: list[str], probs: np.ndarray, gt: np.ndarray) -> None:
    """In the format of every prediction file (w2s_scale/predictions.py)."""
    run.write_jsonl(LABELS_FILE, predictions.rows(ids, np.asarray(probs), gt))


def ensemble(members: list[np.ndarray], weights: Optional[list[float]] = None) -> np.ndarray:
    """Weighted mean of the members' class probabilities ([N, K] each, rows aligned); equal
    weights when none are given. The result is again a distribution over the K classes."""
    w = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=np.float64)
    stacked = np.stack(members)                              # [M, N, K]
    return np.tensordot(w / w.sum(), stacked, axes=1)


def align(sources: list[tuple[list[str], np.ndarray, np.ndarray]]):
    """The examples every source labelled (in the first source's order): ids, each source's
    labels on them, and their ground truth."""
    common = set.intersection(*(set(ids) for ids, _, _ in sources))
    ids = [i for i in sources[0][0] if i in common]
    rows = [{ex_id: n for n, ex_id in enumerate(src_ids)} for src_ids, _, _ in sources]
    probs = [p[[row[i] for i in ids]] for (_, p, _), row in zip(sources, rows)]
    gt = sources[0][2][[rows[0][i] for i in ids]]
    return ids, probs, gt


# --- config checks -------------------------------------------------------------------------------

def check_label_models(labels: list[LabelsConfig], named: dict[str, ModelConfig],
                       bootstrap_needs_via: bool) -> None:
    """Every model a label source names exists (ValueError naming the field otherwise)."""
    for i, entry in enumerate(labels):
        refs = [(f"labels.{i}.members.{j}.model", m.model) for j, m in enumerate(entry.members)]
        refs += [(f"labels.{i}.via.{j}", v) for j, v in enumerate(entry.via)]
        for where, ref in refs:
            if isinstance(ref, str) and ref not in named:
                raise ValueError(f"{where}: no model named {shorten(ref)}; name one of "
                                 f"{sorted(named)} or give a model section (name: ...)")
        if entry.source == "bootstrap" and bootstrap_needs_via and not entry.via:
            raise ValueError(f"labels.{i}.via: a bootstrap chain needs its intermediate models, "
                             f"e.g. via: [{{name: MODEL, label: mid}}] (a sweep walks its model "
                             f"ladder instead)")


def label_models(cfg: ExperimentConfig) -> list[tuple[str, ModelConfig]]:
    """The model sections an experiment's label sources add (ensemble members, bootstrap steps):
    preflight checks them as it checks weak and strong."""
    out = []
    for i, entry in enumerate(cfg.labels):
        refs = [(f"labels.{i}.members.{j}.model", m.model) for j, m in enumerate(entry.members)]
        refs += [(f"labels.{i}.via.{j}", v) for j, v in enumerate(entry.via)]
        out += [(where, ref) for where, ref in refs if isinstance(ref, ModelConfig)]
    return out


def check_probe_layers(plans: list[RunPlan]) -> None:
    """A probe's layer must be one of its model's hidden states (0: embeddings .. num_layers)."""
    from w2s_scale.errors import ProbeLayerError
    from w2s_scale.models import load_hf_config

    for plan in (p for p in plans if p.kind == "activations" and p.stage is not None):
        n_layers = load_hf_config(plan.model).num_hidden_layers
        if plan.stage > n_layers:
            raise ProbeLayerError(f"labels.probe.layer: {plan.stage} is not a layer of "
                                  f"{plan.model.short_name}, whose hidden states are 0..{n_layers}; "
                                  f"choose one of them, or leave it unset for the middle one "
                                  f"({n_layers // 2})")


# --- planning ---------------------------------------------------------------------------------------

def resolve(ref: ModelRef, weak: ModelConfig, strong: ModelConfig, named: dict[str, ModelConfig]) -> ModelConfig:
    if not isinstance(ref, str):
        return ref
    return {"weak": weak, "strong": strong}.get(ref) or named[ref]


def probe_tag(probe: ProbeConfig) -> str:
    """knn-relabel, logreg-filter, topo-filter-c0.2-L3, ...: the probe's settings that differ
    from the defaults, for run names."""
    default = ProbeConfig()
    tag = f"{probe.kind}-{probe.mode}"
    if probe.k != default.k and probe.kind != "logreg":
        tag += f"-k{probe.k}"
    if probe.l2 != default.l2 and probe.kind == "logreg":
        tag += f"-l2{probe.l2:g}"
    if probe.contamination != default.contamination and probe.mode == "filter":
        tag += f"-c{probe.contamination:g}"
    if probe.layer is not None:
        tag += f"-L{probe.layer}"
    return tag


def plan_activations(cfg: ExperimentConfig, model: ModelConfig, layer: Optional[int], seed: int) -> RunPlan:
    """The pretrained model's activations on B (they depend on the seed's split of the data)."""
    from w2s_scale.activations import pretrained_only

    train_cfg = train_for(cfg, model)
    name = f"acts-{model.short_name}-L{'mid' if layer is None else layer}"
    identity = pretrained_only(model).model_dump(mode="json")
    return RunPlan(name=name, kind="activations", model=model, train=train_cfg, loss=GT_LOSS,
                   seed=seed, dir=seed_dir(cfg, seed) / name, stage=layer,
                   hash=stable_hash("activations", identity, layer, cfg.data, seed))


def _label_stage(cfg: ExperimentConfig, name: str, model: ModelConfig, settings: dict,
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
        tag = "ens-" + stable_hash([(_results_identity(m.model, m.train), m.seed_offset)
                                    for m in members], labels.weights)[:6]
        stage = _label_stage(cfg, f"labels-{tag}", members[0].model,
                             {"source": "ensemble", "weights": labels.weights}, members, seed,
                             labels)
        plans += members + [stage, plan_transfer(cfg, members[0], strong, loss, seed, source=stage,
                                                 label_tag=tag,
                                                 name=f"w2s-{tag}-to-{strong.short_name}-{loss.tag}")]
    elif src == "probe":
        probe = labels.probe_or_default
        acts = plan_activations(cfg, strong, probe.layer, seed)
        tag = probe_tag(probe)
        settings = probe.model_dump(mode="json", exclude={"layer"})  # the layer: in acts' hash
        stage = _label_stage(cfg, f"labels-{weak.model.short_name}-{tag}-{strong.short_name}",
                             strong, {"source": "probe", **settings}, [weak, acts], seed, probe)
        plans += [weak, acts, stage, plan_transfer(
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


# --- running a stage ------------------------------------------------------------------------------

def execute_stage(cfg: ExperimentConfig, plan: RunPlan, splits, redo: bool = False) -> None:
    """Run one label or activation stage (every rank calls this; rank 0 writes)."""
    run_dir = RunDir(plan.dir, plan.hash)
    if not redo and run_dir.is_done():
        say(f"{plan.name} (seed {plan.seed}): done already, reused")
        return
    run_dir.prepare(redo)
    started = time.time()
    if plan.kind == "activations":
        metrics = _extract_activations(cfg, plan, splits, run_dir)
    else:
        metrics = _make_labels(plan, run_dir)
    metrics.update(run=plan.name, kind=plan.kind, seed=plan.seed,
                   seconds=round(time.time() - started, 1))
    run_dir.write_yaml("config.yaml", {"run": plan.name, "kind": plan.kind, "seed": plan.seed,
                                       "hash": plan.hash, "experiment": cfg.name,
                                       "inputs": [str(p.dir) for p in plan.inputs],
                                       "settings": _settings(plan)})
    run_dir.write_json("metrics.json", metrics)
    run_dir.mark_done()
    say(f"{plan.name} (seed {plan.seed}): {metrics.get('summary', 'done')}")


def _settings(plan: RunPlan):
    stage = plan.stage
    return stage.model_dump(mode="json") if hasattr(stage, "model_dump") else stage


def _extract_activations(cfg: ExperimentConfig, plan: RunPlan, splits, run_dir: RunDir) -> dict:
    from w2s_scale import distributed as dist
    from w2s_scale.activations import extract
    from w2s_scale.data.batching import tokenize
    from w2s_scale.models import load_tokenizer

    tokenizer = load_tokenizer(plan.model)
    b_set = tokenize(splits.b, tokenizer, cfg.data.max_length, cfg.data.overlong)
    acts, layer = extract(plan.model, plan.train, b_set, tokenizer, plan.stage)
    if dist.is_main():
        np.save(run_dir.path / ACTIVATIONS_FILE, acts)
        run_dir.write_json("ids.json", list(b_set.ids))
    return {"layer": layer, "n": len(b_set), "dim": int(acts.shape[1]),
            "summary": f"{len(b_set)} activations of layer {layer} ({acts.shape[1]} wide)"}


def _make_labels(plan: RunPlan, run_dir: RunDir) -> dict:
    """Combine the inputs' labels (cheap, numpy; every rank computes the same, rank 0 writes)."""
    from w2s_scale import probes

    cfg = plan.stage
    if isinstance(cfg, LabelsConfig):  # an ensemble
        sources = [read_labels(finished(p.dir, p.hash)) for p in plan.inputs]
        ids, member_probs, gt = align(sources)
        probs = ensemble(member_probs, cfg.weights)
        extra = {"members": [p.name for p in plan.inputs], "weights": cfg.weights,
                 "member_accuracy": [_acc(p, gt) for p in member_probs]}
        base = member_probs[0]
    else:  # a probe: the weak labels and the strong model's activations
        weak_run, acts_run = plan.inputs
        w_ids, w_probs, w_gt = read_labels(finished(weak_run.dir, weak_run.hash))
        acts_dir = finished(acts_run.dir, acts_run.hash)
        a_ids = acts_dir.read_json("ids.json")
        acts = np.load(acts_dir.path / ACTIVATIONS_FILE)
        # the examples both the weak model and the strong tokenizer kept (over-long ones differ)
        row_of = {ex_id: n for n, ex_id in enumerate(a_ids)}
        both = [n for n, ex_id in enumerate(w_ids) if ex_id in row_of]
        ids, base, gt = [w_ids[n] for n in both], w_probs[both], w_gt[both]
        x = acts[[row_of[ex_id] for ex_id in ids]].astype(np.float64)
        if cfg.mode == "relabel":
            probs = probes.predict(cfg.kind, x, base, cfg.k, cfg.l2)
            kept = np.arange(len(ids))
        else:
            kept = probes.filter_indices(cfg.kind, x, base, cfg.contamination, cfg.k, cfg.l2)
            probs = base[kept]
        ids, gt, base = [ids[i] for i in kept], gt[kept], base[kept]
        extra = {"probe": probe_tag(cfg), "n_before": len(both), "n_dropped": len(both) - len(kept)}
    write_labels(run_dir, ids, probs, gt)
    agreement = float(np.mean(probs.argmax(1) == base.argmax(1)))
    metrics = {"n": len(ids), "label_accuracy": _acc(probs, gt), "base_label_accuracy": _acc(base, gt),
               "agreement_with_base": agreement, **extra}
    metrics["summary"] = (f"{len(ids)} labels, accuracy {metrics['label_accuracy']:.4f} against "
                          f"ground truth (their source: {metrics['base_label_accuracy']:.4f})")
    return metrics


def _acc(probs: np.ndarray, gt: np.ndarray) -> float:
    """How often soft labels side with the ground truth: a diagnostic of the label stage, never
    used to choose anything."""
    return float(np.mean(probs.argmax(1) == gt)) if len(gt) else float("nan")
