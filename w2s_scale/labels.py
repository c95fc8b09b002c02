"""The label stage: what a transfer run's student trains on, made from supervisors' predictions.

Every run (gt or transfer) labels B with its predictions (weak_labels.jsonl). A transfer run
trains on the labels of one run, its *source*:

- weak       the weak model's gt run (the reference's experiment);
- ensemble   a label stage averaging several gt runs' labels (other models, or the weak model
             trained with other seeds), with optional weights;
- probe      a label stage that relabels or filters the weak labels with a probe on the
             pretrained strong model's activations (an activation stage, extracted once);
             kind ccs: an unsupervised CCS probe on contrast pairs (w2s_scale/ccs.py),
             oriented by the weak labels;
- confident  a label stage keeping only the most confident weak labels of B (the 2026
             automated-W2S sandbox's filter baseline; confident_keep below);
- elicitation  the pretrained strong model's own labels, no weak labels (Wen et al. 2025's
             zero-shot prompting, or our sampled-context ICM search; w2s_scale/elicitation.py);
- bootstrap  the previous student of a chain weak -> m1 -> ... -> strong (Burns et al.);
- and after any of them, `s2s_iterations` strong-to-strong runs, each student trained from its
  pretrained weights on the previous student's labels (EleutherAI).

Label and activation stages are runs like the others (planning.RunPlan of kind "labels" /
"activations"): a folder with DONE and a hash of everything they read, reused when done, and
planned by the same function (planning.plan_label_source) for `w2s experiment` and `w2s sweep`,
so both share them. This module runs them and reads and writes label files. Every
floor (PGR's weak accuracy) is a gt run: for an ensemble its first member, for a chain and for
strong-to-strong the original weak model.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Optional

import numpy as np

from w2s_scale import distributed as dist
from w2s_scale import ccs, elicitation, predictions, probes
from w2s_scale.activations import extract
from w2s_scale.config import ElicitationConfig, ExperimentConfig, LabelsConfig
from w2s_scale.data.batching import tokenize
from w2s_scale.distributed import say
from w2s_scale.errors import ConfigError
from w2s_scale.models import load_tokenizer
from w2s_scale.planning import RunPlan, probe_tag
from w2s_scale.results import RunDir, finished

LABELS_FILE = "weak_labels.jsonl"
ACTIVATIONS_FILE = "activations.npy"


# --- label files -----------------------------------------------------------------------------------

def read_labels(run: RunDir) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(example ids, soft labels [N, K], ground-truth labels [N]) of a run's labels of B."""
    rows = run.read_jsonl(LABELS_FILE)
    probs = np.array([predictions.probs_of(r) for r in rows], dtype=np.float32)
    return [r["id"] for r in rows], probs.reshape(len(rows), -1), np.array([r["label"] for r in rows])


def write_labels(run: RunDir, ids: list[str], probs: np.ndarray, gt: np.ndarray) -> None:
    """In the format of every prediction file (w2s_scale/predictions.py)."""
    run.write_jsonl(LABELS_FILE, predictions.rows(ids, np.asarray(probs), gt))


def confidence(probs: np.ndarray) -> np.ndarray:
    """A soft label's confidence, max_k p_k (binary: max(p1, 1 - p1), ordered as |p1 - 0.5|),
    rounded to the label files' DECIMALS so that equal confidences compare equal."""
    return np.round(np.asarray(probs, dtype=np.float64).max(1), predictions.DECIMALS)


def confident_keep(ids: list[str], probs: np.ndarray, rule: str, value: float) -> np.ndarray:
    """Indices (in B's order) of the weak labels source: confident keeps. keep_fraction: the
    floor(f x N) most confident (at least 1), equal confidences in the order of their example
    ids (as strings); threshold: every one whose confidence is above t (strictly)."""
    conf = confidence(probs)
    if rule == "threshold":
        return np.flatnonzero(conf > value)
    n_keep = max(1, int(np.floor(value * len(ids) + 1e-9)))  # 1e-9: 0.29 x 100 is 28.999...
    order = sorted(range(len(ids)), key=lambda i: (-conf[i], ids[i]))
    return np.sort(np.array(order[:n_keep], dtype=np.int64))


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
    elif isinstance(plan.stage, ElicitationConfig):  # the strong model's own labels
        metrics = _elicit_labels(cfg, plan, splits, run_dir)
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
    if isinstance(stage, ccs.Contrast):
        return {**asdict(stage), "words": list(stage.words)}
    return stage.model_dump(mode="json") if hasattr(stage, "model_dump") else stage


def _extract_activations(cfg: ExperimentConfig, plan: RunPlan, splits, run_dir: RunDir) -> dict:
    tokenizer = load_tokenizer(plan.model)
    if isinstance(plan.stage, ccs.Contrast):  # CCS: both sides of each pair, stored side by side
        ids, pairs = ccs.contrast_tokens(plan.stage, plan.model, splits.b, tokenizer,
                                         cfg.data.max_length, cfg.data.overlong)
        acts, layer = extract(plan.model, plan.train, pairs, tokenizer, plan.stage.layer)
        acts = np.concatenate([acts[:len(ids)], acts[len(ids):]], axis=1)  # [N, 2D]: x- then x+
        b_set = pairs.subset(np.arange(len(ids)))
    else:
        b_set = tokenize(splits.b, tokenizer, cfg.data.max_length, cfg.data.overlong)
        acts, layer = extract(plan.model, plan.train, b_set, tokenizer, plan.stage)
    if dist.is_main():
        np.save(run_dir.path / ACTIVATIONS_FILE, acts)
        run_dir.write_json("ids.json", list(b_set.ids))
    pairs_note = " x 2 sides of contrast pairs" if isinstance(plan.stage, ccs.Contrast) else ""
    return {"layer": layer, "n": len(b_set), "dim": int(acts.shape[1]),
            "summary": f"{len(b_set)} activations{pairs_note} of layer {layer} ({acts.shape[1]} wide)"}


def _make_labels(plan: RunPlan, run_dir: RunDir) -> dict:
    """Combine the inputs' labels (cheap, numpy; every rank computes the same, rank 0 writes)."""
    cfg = plan.stage
    if isinstance(cfg, LabelsConfig) and cfg.source == "confident":  # the most confident weak labels
        (weak_run,) = plan.inputs
        w_ids, w_probs, w_gt = read_labels(finished(weak_run.dir, weak_run.hash))
        rule, value = cfg.confident_rule
        kept = confident_keep(w_ids, w_probs, rule, value)
        if not len(kept):
            raise ConfigError(f"labels.threshold: no weak label of B is more confident than "
                              f"{value:g} (the most confident: {float(w_probs.max(1).max()):.4f}); "
                              f"lower threshold, or use keep_fraction")
        ids, gt, base = [w_ids[i] for i in kept], w_gt[kept], w_probs[kept]
        probs = base
        extra = {"confident": {rule: value}, "n_before": len(w_ids), "n_dropped": len(w_ids) - len(kept),
                 "min_kept_confidence": float(confidence(base).min()),
                 "weak_label_accuracy_all": _acc(w_probs, w_gt)}
    elif isinstance(cfg, LabelsConfig):  # an ensemble
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
        fit_info = {}
        if cfg.kind == "ccs":  # unsupervised; the weak labels only orient it (ccs.py)
            ccs_probs, fit_info = ccs.relabel(x, base, seed=plan.seed, restarts=cfg.restarts)
            probs, kept = ccs_probs, np.arange(len(ids))
            if cfg.mode == "filter":
                kept = probes.drop_most_disagreeing(ccs_probs, base, cfg.contamination)
                probs = base[kept]
        elif cfg.mode == "relabel":
            probs = probes.predict(cfg.kind, x, base, cfg.k, cfg.l2)
            kept = np.arange(len(ids))
        else:
            kept = probes.filter_indices(cfg.kind, x, base, cfg.contamination, cfg.k, cfg.l2)
            probs = base[kept]
        ids, gt, base = [ids[i] for i in kept], gt[kept], base[kept]
        extra = {"probe": probe_tag(cfg), "n_before": len(both), "n_dropped": len(both) - len(kept),
                 **fit_info}
    write_labels(run_dir, ids, probs, gt)
    agreement = float(np.mean(probs.argmax(1) == base.argmax(1)))
    metrics = {"n": len(ids), "label_accuracy": _acc(probs, gt), "base_label_accuracy": _acc(base, gt),
               "agreement_with_base": agreement, **extra}
    metrics["summary"] = (f"{len(ids)} labels, accuracy {metrics['label_accuracy']:.4f} against "
                          f"ground truth (their source: {metrics['base_label_accuracy']:.4f})")
    return metrics


def _elicit_labels(cfg: ExperimentConfig, plan: RunPlan, splits, run_dir: RunDir) -> dict:
    """source: elicitation (w2s_scale/elicitation.py): B's ids and texts go in, labels come out;
    the ground truth is read afterwards, for the diagnostics and the file's `label` column only."""
    elicited, metrics = elicitation.run_stage(cfg, plan, splits)
    gt_of = {e.id: e.label for e in splits.b}
    gt = np.array([gt_of[ex_id] for ex_id in elicited.ids])
    write_labels(run_dir, elicited.ids, elicited.probs, gt)
    if elicited.found:
        found = list(elicited.found)
        metrics["found_accuracy"] = float(np.mean([elicited.found[i] == gt_of[i] for i in found]))
    spent = sum(metrics["forward_seconds_by_phase"].values())
    metrics.update(n=len(elicited.ids), n_dropped_overlong=elicited.n_dropped,
                   label_accuracy=_acc(elicited.probs, gt),
                   label_class_counts=np.bincount(elicited.probs.argmax(1),
                                                  minlength=elicited.probs.shape[1]).tolist())
    metrics["summary"] = (f"{len(elicited.ids)} labels, accuracy {metrics['label_accuracy']:.4f} "
                          f"against ground truth ({plan.stage.mode}: {metrics['forward_passes']} "
                          f"forward passes, {metrics['tokens']} tokens, {spent:.1f} s of forwards)")
    return metrics


def _acc(probs: np.ndarray, gt: np.ndarray) -> float:
    """How often soft labels side with the ground truth: a diagnostic of the label stage, never
    used to choose anything."""
    return float(np.mean(probs.argmax(1) == gt)) if len(gt) else float("nan")
