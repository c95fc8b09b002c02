"""The weak-to-strong experiment, read top to bottom.

For each seed: train the weak model on A (ground truth), let it label B; train the strong model on
A (the ceiling); train the strong model on B against the weak labels, once per transfer loss (and
label source). What runs, in which order and with which resolved settings, is planned by
w2s_scale/planning.py; this module carries a plan out. Each run reads what it needs from disk and
is skipped when its DONE marker exists, so stages can also run as separate jobs (w2s_scale/sweep.py).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from transformers import set_seed

from w2s_scale import distributed as dist
from w2s_scale import predictions, selection
from w2s_scale.config import ExperimentConfig, TrainConfig
from w2s_scale.data.batching import TokenizedSet, tokenize
from w2s_scale.data.images import is_image_data, make_image_splits
from w2s_scale.data.sources import num_classes
from w2s_scale.data.groups import cut_at_group
from w2s_scale.data.splits import Splits, group_of, make_splits
from w2s_scale.diagnostics import transfer_diagnostics
from w2s_scale.distributed import say
from w2s_scale.engine import StopFlag, build_engine, predict, total_train_steps, train
from w2s_scale.labels import execute_stage, read_labels
from w2s_scale.methods.isolation import execute_isolated
from w2s_scale.methods.runner import execute_method
from w2s_scale.metrics import accuracy, roc_auc
from w2s_scale.models import load_tokenizer
from w2s_scale.planning import RunPlan, plan_experiment
from w2s_scale.prompts import label_prompt
from w2s_scale.report import summarize, write_summary
from w2s_scale.results import RunDir, finished
from w2s_scale.saving import save_weights
from w2s_scale.subsets import subset_metrics, subset_of
from w2s_scale.text_features import FrozenTextInputs
from w2s_scale.tracking import Tracker
from w2s_scale.vision import ImageInputs


# --- the experiment and one run ------------------------------------------------------------------

def run_experiment(cfg: ExperimentConfig, redo: bool = False) -> list[dict]:
    """Every run of the experiment (skipping finished ones), then the summary."""
    plans = plan_experiment(cfg)
    for seed in cfg.seeds:
        splits = make_run_splits(cfg, seed)
        for plan in (p for p in plans if p.seed == seed):
            execute(cfg, plan, splits, redo=redo)
    rows = summarize(plans)
    write_summary(rows, Path(cfg.results_dir) / cfg.name)
    return rows


def execute(cfg: ExperimentConfig, plan: RunPlan, splits: Splits, redo: bool = False) -> None:
    """Train one run, score it on test, and (gt runs) label B; DONE is written last. A redo of
    a complete run is written beside it and replaces it only once complete (results.RunDir)."""
    if plan.kind in ("labels", "activations"):  # a label stage: w2s_scale/labels.py
        return execute_stage(cfg, plan, splits, redo)
    if plan.kind == "method" and plan.stage.isolated is not None:  # w2s_scale/methods/isolation.py
        return execute_isolated(cfg, plan, splits, redo)
    if plan.kind == "method":  # the method contract: w2s_scale/methods/runner.py
        return execute_method(cfg, plan, splits, run_inputs, redo)
    run_dir = RunDir(plan.dir, plan.hash)
    if not redo and run_dir.is_done():
        pending = " (an interrupted --redo waits beside it; --redo resumes it)" if run_dir.pending_redo() else ""
        say(f"{plan.name} (seed {plan.seed}): done already, reused{pending}")
        return
    resumed = run_dir.prepare(redo)
    say(f"{plan.name} (seed {plan.seed}): {'resuming' if resumed else 'starting'} in {run_dir.path}")
    started = time.time()
    inputs = run_inputs(cfg, plan, splits)
    data = cfg.data
    train_set = inputs.encode(gt_examples(splits, plan.train, plan.trains_on) if plan.kind == "gt"
                              else splits.b)
    k = inputs.num_classes(splits)
    if plan.kind == "gt":
        targets = one_hot(train_set.labels, k)
        monitor = None
    else:
        train_set, targets = weak_targets(plan, train_set)
        # related rows of B stay in one held-out slice (text rows only: pictures have no groups)
        groups = ({e.id: e.group for e in splits.b if e.group is not None}
                  if isinstance(splits.b, list) else None)
        train_set, targets, monitor = selection.prepare(plan.train, plan.seed, train_set, targets,
                                                        run_dir.checkpoints, groups)
    test_set = inputs.encode(splits.test)
    # a classifier used as is (an image model's own head) trains nothing
    total_steps = total_train_steps(len(train_set), plan.train) if inputs.trains else 0
    tracker = Tracker(run_dir.path / "log.jsonl", cfg.tracking, run_name=plan.name,
                      group=f"{cfg.name}/seed{plan.seed}",
                      config={"experiment": cfg.model_dump(mode="json"), "run": plan.name})
    tracker.log({"event": "start", "run": plan.name, "resumed": resumed, "world_size": dist.world_size(),
                 "n_train": len(train_set), "n_test": len(test_set), "total_steps": total_steps})
    # random initialisation (a from-scratch weak model, the head before it is zeroed) must not
    # depend on what ran before in this process: seeded per run, the same on every rank
    set_seed(plan.train_seed)
    eng = inputs.build_engine(total_steps, k)
    with StopFlag() as stop:
        try:
            if inputs.trains and total_steps > 0:  # 0: a zero-shot run (train.epochs: 0)
                train(eng, train_set, targets, plan.loss, plan.train_seed, run_dir.checkpoints, tracker,
                      stop, monitor)
        except BaseException:
            # a stopped (or failed) attempt finishes its W&B run here, so that the attempt that
            # resumes it can take up the same run id (W&B refuses an id still in use)
            tracker.close()
            raise
    held_out = monitor.finish(eng, tracker) if monitor else {}  # early stopping: the chosen checkpoint
    test_probs = predict(eng, test_set, tracker, desc="test")
    metrics = {"run": plan.name, "kind": plan.kind, "seed": plan.seed,
               "accuracy": accuracy(test_set.labels, test_probs),
               "auc": roc_auc(test_set.labels, test_probs),
               "n_train": len(train_set), "n_test": len(test_set),
               "n_dropped_overlong": train_set.n_dropped + test_set.n_dropped,
               "steps": total_steps, "world_size": dist.world_size(),
               "seconds": round(time.time() - started, 1)}
    # the test subsets (the testbed's in- and out-of-distribution sets), where the data name them
    test_subsets = subset_of(splits.test) if isinstance(splits.test, list) else {}
    if test_subsets:
        metrics["subsets"] = subset_metrics(test_set.ids, test_set.labels, test_probs, test_subsets)
    run_dir.write_jsonl("test_predictions.jsonl",
                        predictions.rows(test_set.ids, test_probs, test_set.labels, test_subsets))
    # every model labels B, so any gt run can serve as a weak teacher and any student as the
    # next one's (strong-to-strong, bootstrapping; see w2s_scale/labels.py)
    b_set = inputs.encode(splits.b)
    b_probs = predict(eng, b_set, tracker, desc="label-B")
    run_dir.write_jsonl("weak_labels.jsonl", predictions.rows(b_set.ids, b_probs, b_set.labels))
    if plan.kind == "gt":
        metrics["b_accuracy"] = accuracy(b_set.labels, b_probs)
    else:  # how often the student sides with its teacher on B: imitation vs generalisation
        row_of = {ex_id: i for i, ex_id in enumerate(b_set.ids)}
        train_probs = b_probs[[row_of[ex_id] for ex_id in train_set.ids]]
        # the run page names its supervisor and how good it was (PGR: added by `w2s report`)
        metrics["weak_model"] = plan.weak.model.short_name
        metrics["weak_accuracy"] = finished(plan.weak.dir, plan.weak.hash).read_json("metrics.json")["accuracy"]
        metrics["labels"] = plan.label_tag
        metrics.update(_diagnostics(plan, test_set, test_probs, train_probs, targets))
        metrics.update(held_out)
    run_dir.write_yaml("config.yaml", {
        "run": plan.name, "kind": plan.kind, "seed": plan.seed, "hash": plan.hash,
        "experiment": cfg.name, "weak_run": str(plan.weak.dir) if plan.weak else None,
        "labels_run": str(plan.source.dir) if plan.source else None, "seed_offset": plan.seed_offset,
        "model": plan.model.model_dump(mode="json"), "train": plan.train.model_dump(mode="json"),
        "loss": plan.loss.model_dump(mode="json"), "data": data.model_dump(mode="json"),
        "world_size": dist.world_size(), "ds_config": eng.ds_config})
    run_dir.write_json("metrics.json", metrics)
    tracker.log({"event": "done", **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
    tracker.summary(metrics)
    tracker.close()
    save_weights(eng, plan.model, run_dir.path, run_dir.checkpoints)  # only what `save` asks for
    eng.close()
    run_dir.mark_done()
    say(f"{plan.name} (seed {plan.seed}): test accuracy {metrics['accuracy']:.4f} "
        f"in {metrics['seconds']:.0f} s")


# --- what a run trains on ------------------------------------------------------------------------

class TextInputs:
    """How a run's documents become engine inputs (tokens), and its engine; images: vision.ImageInputs."""
    trains = True

    def __init__(self, cfg: ExperimentConfig, plan: RunPlan):
        self.cfg, self.plan = cfg, plan
        self.tokenizer = load_tokenizer(plan.model)
        # head: label_tokens: documents go into the model's prompt (w2s_scale/prompts.py)
        self.prompt = label_prompt(plan.model, cfg.data, self.tokenizer)

    def encode(self, examples, tracker=None) -> TokenizedSet:
        data = self.cfg.data
        return tokenize(examples, self.tokenizer, data.max_length, data.overlong, self.prompt)

    def num_classes(self, splits) -> int:
        return num_classes(self.cfg.data)

    def build_engine(self, total_steps: int, k: int):
        label_ids = self.prompt.word_ids if self.prompt is not None else None
        return build_engine(self.plan.model, self.plan.train, total_steps, self.tokenizer, k,
                            label_ids=label_ids)


def run_inputs(cfg: ExperimentConfig, plan: RunPlan, splits: Splits):
    if is_image_data(cfg.data):
        return ImageInputs(cfg, plan.model, plan.train, plan.seed)
    if plan.model.linear_probe:  # a head on cached frozen features: w2s_scale/text_features.py
        # every document the run reads, so that the features it lacks are extracted in one pass
        documents = ((gt_examples(splits, plan.train, plan.trains_on) if plan.kind == "gt" else [])
                     + list(splits.test) + list(splits.b))
        return FrozenTextInputs(cfg, plan, documents)
    return TextInputs(cfg, plan)


def make_run_splits(cfg: ExperimentConfig, seed: int):
    """Text: A / B / test documents; images: pictures, where A and B are the same images when the
    weak model is a classifier used as is (it never trains on A: the reference's vision setting)."""
    if is_image_data(cfg.data):
        return make_image_splits(cfg.data, seed, shared_ab=cfg.weak.head == "pretrained")
    return make_splits(cfg.data, seed)


def one_hot(labels: np.ndarray, k: int = 2) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[labels]


def weak_targets(plan: RunPlan, train_set: TokenizedSet) -> tuple[TokenizedSet, np.ndarray]:
    """B's examples with the soft labels [N, K] of the run's label source (the weak model's, read
    from its run folder); examples the source never labelled (over-long for its tokenizer, or
    filtered out by a label stage) are left out."""
    # only the labels of a run finished with the settings this run was planned against
    source = plan.source if plan.source is not None else plan.weak
    ids, probs, _ = read_labels(finished(source.dir, source.hash))
    labelled = dict(zip(ids, probs))
    keep = np.array([i for i, ex_id in enumerate(train_set.ids) if ex_id in labelled], dtype=int)
    kept = train_set.subset(keep)
    return kept, np.stack([labelled[ex_id] for ex_id in kept.ids]).astype(np.float32)


def gt_examples(splits: Splits, train_cfg: TrainConfig, part: str = "a"):
    """What a ground-truth run trains on: A (B for a ceiling the dataset puts on B, the
    testbed's), or its first train.gt_n_train documents (up to the end of the group of related
    rows the last one belongs to: A keeps groups contiguous)."""
    examples = splits.b if part == "b" else splits.a
    if train_cfg.gt_n_train is None:
        return examples
    return examples[:cut_at_group(examples, train_cfg.gt_n_train, group_of)]


def _diagnostics(plan: RunPlan, test_set: TokenizedSet, test_probs: np.ndarray,
                 train_probs: np.ndarray, targets: np.ndarray) -> dict:
    """Agreement with the supervisor on test and B, misfit, gain, ECE (w2s_scale/diagnostics.py),
    on the test examples both the student and its supervisor scored. The supervisor on test is
    the label source when it scored test (a student before it, in s2s and bootstrap chains);
    label stages (ensembles, probes) label B only, so on test it is their weak model."""
    teacher = plan.source if plan.source is not None and plan.source.kind in ("gt", "transfer") else plan.weak
    weak_probs = {r["id"]: predictions.probs_of(r) for r in finished(teacher.dir, teacher.hash).read_jsonl(
        "test_predictions.jsonl")}
    both = [i for i, ex_id in enumerate(test_set.ids) if ex_id in weak_probs]
    weak_test = np.stack([weak_probs[test_set.ids[i]] for i in both]).astype(np.float64)
    return transfer_diagnostics(test_set.labels[both], test_probs[both], weak_test, train_probs,
                                targets)
