"""A method run carried out: the framework's side of the method contract.

It builds the MethodContext from what the run reads (B and test without labels, the label
source's soft labels of B, the weak model's soft labels of test, the anchors' metrics), calls
the method on every rank, then scores what it returned against the ground truth that only this
side holds, and writes the run's folder as a transfer run's (test_predictions.jsonl,
metrics.json, config.yaml, log.jsonl, DONE), so summaries, tables and figures read it alike.

The context holds no ground truth, by construction: the students are trained on copies of B and
test whose label is -1 (TokenizedSet needs an integer there; no code path of a method run reads
it), and `labels` fields are dropped as label files are read.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
from transformers import set_seed

from w2s_scale import distributed as dist
from w2s_scale import predictions, selection
from w2s_scale.config import ConfigError, ExperimentConfig, LossConfig, ModelConfig
from w2s_scale.data.sources import num_classes
from w2s_scale.data.splits import Splits
from w2s_scale.data.values import Example
from w2s_scale.diagnostics import transfer_diagnostics
from w2s_scale.distributed import say
from w2s_scale.engine import StopFlag, predict, total_train_steps, train
from w2s_scale.errors import MethodResultError
from w2s_scale.metrics import accuracy, roc_auc
from w2s_scale.methods.contract import Anchors, MethodContext, MethodResult, Student, UnlabelledSet
from w2s_scale.methods.registry import find_method
from w2s_scale.planning import RunPlan
from w2s_scale.results import RunDir, finished
from w2s_scale.subsets import subset_metrics, subset_of
from w2s_scale.tracking import Tracker

NO_LABEL = -1  # what the students' copies of B and test carry where a label would be
# how a run's inputs (tokenizer, engine) are made: pipeline.run_inputs, passed in by the pipeline
# (which sits above this module)
MakeInputs = Callable[[ExperimentConfig, RunPlan, Splits], Any]


def execute_method(cfg: ExperimentConfig, plan: RunPlan, splits: Splits, make_inputs: MakeInputs,
                   redo: bool = False) -> None:
    """Run one method run (every rank calls this; rank 0 writes). DONE is written last."""
    run_dir = RunDir(plan.dir, plan.hash)
    if not redo and run_dir.is_done():
        say(f"{plan.name} (seed {plan.seed}): done already, reused")
        return
    if not all(isinstance(e, Example) for e in (*splits.b, *splits.test)):
        raise ConfigError("method: methods take text datasets (B and test as texts); remove "
                          "`method` for this image dataset")
    method_cfg = plan.stage
    method = find_method(method_cfg.name)  # in every rank's process, as the submitter did
    resumed = run_dir.prepare(redo)
    say(f"{plan.name} (seed {plan.seed}): {'resuming' if resumed else 'starting'} in {run_dir.path}")
    started = time.time()
    tracker = Tracker(run_dir.path / "log.jsonl", cfg.tracking, run_name=plan.name,
                      group=f"{cfg.name}/seed{plan.seed}",
                      config={"experiment": cfg.model_dump(mode="json"), "run": plan.name})
    blind = Splits(a=[], b=[_blind(e) for e in splits.b], test=[_blind(e) for e in splits.test])
    trainer = StudentTrainer(cfg, plan, blind, make_inputs, run_dir, tracker)
    ctx = method_context(plan, blind, trainer.num_classes, trainer,
                         lambda values: tracker.log({"event": "method", **dict(values)}))
    tracker.log({"event": "start", "run": plan.name, "method": method_cfg.name, "resumed": resumed,
                 "world_size": dist.world_size(), "n_b": len(ctx.b), "n_test": len(ctx.test)})
    set_seed(plan.train_seed)  # a method's own draws: the same on every rank
    try:
        result = method(ctx)
    except BaseException:
        tracker.close()  # a stopped attempt's W&B run ends here, so the resumed one can take its id
        raise
    test_probs, b_probs = _checked(result, ctx)
    metrics = _scores(plan, splits, ctx, test_probs, b_probs)
    metrics.update(seconds=round(time.time() - started, 1), students=trainer.trained,
                   world_size=dist.world_size(), method=method_cfg.model_dump(mode="json"),
                   method_extra=_plain(result.extra))
    write_run_files(run_dir, cfg, plan, splits, ctx, test_probs, b_probs,
                    {"world_size": dist.world_size()})
    run_dir.write_json("metrics.json", metrics)
    tracker.log({"event": "done", **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
    tracker.summary({k: v for k, v in metrics.items() if k != "method_extra"})
    tracker.close()
    run_dir.mark_done()
    say(f"{plan.name} (seed {plan.seed}): test accuracy {metrics['accuracy']:.4f} "
        f"in {metrics['seconds']:.0f} s")


def write_run_files(run_dir: RunDir, cfg: ExperimentConfig, plan: RunPlan, splits: Splits,
                    ctx: MethodContext, test_probs: np.ndarray, b_probs: Optional[np.ndarray],
                    about: Mapping[str, Any]) -> None:
    """A method run's prediction files and config.yaml, as every run writes them (in-process or
    isolated alike; metrics.json and DONE are the caller's). `about`: more config.yaml fields."""
    scored = ~np.isnan(test_probs).any(1)
    test_ids = [i for i, keep in zip(ctx.test.ids, scored) if keep]
    truth = {e.id: e.label for e in splits.test}  # the files' `label` field, as every run's
    run_dir.write_jsonl("test_predictions.jsonl", predictions.rows(
        test_ids, test_probs[scored], [truth[i] for i in test_ids], subset_of(splits.test)))
    if b_probs is not None:  # like every run, its labels of B: a later method may read them
        labelled = ~np.isnan(b_probs).any(1)
        b_ids = [i for i, keep in zip(ctx.b.ids, labelled) if keep]
        b_truth = {e.id: e.label for e in splits.b}
        run_dir.write_jsonl("weak_labels.jsonl", predictions.rows(
            b_ids, b_probs[labelled], [b_truth[i] for i in b_ids]))
    method_cfg = plan.stage
    run_dir.write_yaml("config.yaml", {
        "run": plan.name, "kind": plan.kind, "seed": plan.seed, "hash": plan.hash,
        "experiment": cfg.name, "method": method_cfg.model_dump(mode="json"),
        "inputs": [str(p.dir) for p in plan.inputs], "model": plan.model.model_dump(mode="json"),
        "train": plan.train.model_dump(mode="json"), "data": cfg.data.model_dump(mode="json"),
        **about})


def _plain(values: dict) -> dict:
    """`extra` as JSON (numpy numbers and arrays as lists; anything else as its text)."""
    return json.loads(json.dumps(values, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# --- the context ---------------------------------------------------------------------------------

def _blind(example: Example) -> Example:
    return Example(example.id, example.text, NO_LABEL, group=example.group)


def unlabelled(examples: Sequence[Example]) -> UnlabelledSet:
    return UnlabelledSet(tuple(e.id for e in examples), tuple(e.text for e in examples),
                         tuple(e.group for e in examples))


def soft_labels(run: RunDir, file: str, ids: Sequence[str], k: int) -> np.ndarray:
    """A run's soft labels as [N, K] aligned with `ids`, NaN rows where it has none; the rows'
    `label` fields are never read."""
    found = {r["id"]: predictions.probs_of(r) for r in run.read_jsonl(file)}
    out = np.full((len(ids), k), np.nan, dtype=np.float32)
    for n, ex_id in enumerate(ids):
        if ex_id in found:
            out[n] = found[ex_id]
    return out


def method_context(plan: RunPlan, blind: Splits, k: int, train: Optional[Callable[..., Student]] = None,
                   log: Optional[Callable[[Mapping[str, Any]], None]] = None) -> MethodContext:
    """What the method is given, read from the runs it reads (the isolated mode writes it into
    the method's bundle, w2s_scale/methods/bundle.py, without `train` and `log`)."""
    weak, ceiling = plan.inputs[0], plan.inputs[1]
    source = plan.source if plan.source is not None else weak
    weak_run, ceiling_run = finished(weak.dir, weak.hash), finished(ceiling.dir, ceiling.hash)
    b, test = unlabelled(blind.b), unlabelled(blind.test)
    weak_metrics, ceiling_metrics = weak_run.read_json("metrics.json"), ceiling_run.read_json("metrics.json")
    return MethodContext(
        seed=plan.seed, options=dict(plan.stage.options), num_classes=k, b=b, test=test,
        weak_b=soft_labels(finished(source.dir, source.hash), "weak_labels.jsonl", b.ids, k),
        weak_test=soft_labels(weak_run, "test_predictions.jsonl", test.ids, k),
        anchors=Anchors(weak_accuracy=weak_metrics["accuracy"],
                        ceiling_accuracy=ceiling_metrics["accuracy"],
                        weak_auc=weak_metrics.get("auc"), ceiling_auc=ceiling_metrics.get("auc")),
        weak_model=weak.model.short_name, strong_model=plan.model.short_name, _train=train, _log=log)


# --- students -------------------------------------------------------------------------------------

class StudentTrainer:
    """ctx.train_student: the strong model trained through the engine as a transfer run trains
    it (same tokenisation, held-out cut, seed and settings), on label-free copies of B and test.
    Each student checkpoints into its own folder, so a stopped method resumes the student it was
    training (students before it train again: the same seed gives the same student)."""

    def __init__(self, cfg: ExperimentConfig, plan: RunPlan, blind: Splits, make_inputs: MakeInputs,
                 run_dir: RunDir, tracker: Tracker):
        self.cfg, self.plan, self.blind, self.make_inputs = cfg, plan, blind, make_inputs
        self.run_dir, self.tracker = run_dir, tracker
        self.trained = 0
        self.num_classes = num_classes(cfg.data)  # text data only (execute_method checks)

    def __call__(self, targets: np.ndarray, rows: Optional[Sequence[int]] = None,
                 loss: Union[None, str, Mapping[str, Any]] = None,
                 model: Optional[Mapping[str, Any]] = None) -> Student:
        plan, k = self.plan, self.num_classes
        targets = np.asarray(targets, dtype=np.float32)
        n_b = len(self.blind.b)
        if targets.shape != (n_b, k):
            raise MethodResultError(f"train_student: targets of shape {targets.shape}; give one row of "
                                    f"{k} class probabilities per example of ctx.b, i.e. ({n_b}, {k})")
        rows = _rows(targets, rows, n_b)
        loss_cfg = plan.loss if loss is None else LossConfig(**({"name": loss} if isinstance(loss, str) else loss))
        student_plan = plan if not model else dataclasses.replace(
            plan, model=ModelConfig(**{**plan.model.model_dump(), **dict(model)}))
        inputs = self.make_inputs(self.cfg, student_plan, self.blind)
        b_set = inputs.encode(self.blind.b)
        chosen = set(rows.tolist())
        ids = list(self.blind.b[i].id for i in range(n_b))
        row_of = {ex_id: n for n, ex_id in enumerate(ids)}
        keep = np.array([n for n, ex_id in enumerate(b_set.ids) if row_of[ex_id] in chosen], dtype=int)
        train_set = b_set.subset(keep)
        train_targets = targets[[row_of[ex_id] for ex_id in train_set.ids]]
        ckpt = self.run_dir.checkpoints / f"student{self.trained}"
        groups = {e.id: e.group for e in self.blind.b if e.group is not None}
        train_set, train_targets, monitor = selection.prepare(plan.train, plan.seed, train_set,
                                                              train_targets, ckpt, groups)
        total = total_train_steps(len(train_set), plan.train) if inputs.trains else 0
        self.tracker.log({"event": "student", "index": self.trained, "n_train": len(train_set),
                          "loss": loss_cfg.tag, "model": student_plan.model.short_name,
                          "total_steps": total})
        set_seed(plan.train_seed)  # as a transfer run: its initialisation does not depend on what ran before
        eng = inputs.build_engine(total, k)
        with StopFlag() as stop:
            if inputs.trains and total > 0:
                train(eng, train_set, train_targets, loss_cfg, plan.train_seed, ckpt, self.tracker,
                      stop, monitor)
        chosen_step = monitor.finish(eng, self.tracker) if monitor else {}
        test_set = inputs.encode(self.blind.test)
        test_probs = _aligned(predict(eng, test_set, self.tracker, desc="test"), test_set.ids,
                              [e.id for e in self.blind.test], k)
        b_probs = _aligned(predict(eng, b_set, self.tracker, desc="label-B"), b_set.ids, ids, k)
        eng.close()
        self.trained += 1
        return Student(b_probs=b_probs, test_probs=test_probs, n_train=len(train_set), steps=total,
                       selection=chosen_step)


def _rows(targets: np.ndarray, rows: Optional[Sequence[int]], n_b: int) -> np.ndarray:
    """The rows to train on, sorted (B's order), each once; NaN targets are refused there."""
    labelled = ~np.isnan(targets).any(1)
    if rows is None:
        return np.flatnonzero(labelled)
    rows = np.unique(np.asarray(rows, dtype=int))
    if len(rows) and (rows[0] < 0 or rows[-1] >= n_b):
        raise MethodResultError(f"train_student: rows must index ctx.b (0..{n_b - 1}); got "
                                f"{rows[0]}..{rows[-1]}")
    if not labelled[rows].all():
        raise MethodResultError(f"train_student: {int((~labelled[rows]).sum())} of the rows have NaN "
                                f"targets; leave them out of rows or give them targets")
    return rows


def _aligned(probs: np.ndarray, scored_ids: Sequence[str], ids: Sequence[str], k: int) -> np.ndarray:
    """[N, K] aligned with `ids`, NaN rows for the examples not scored (over-long)."""
    out = np.full((len(ids), k), np.nan, dtype=np.float32)
    row_of = {ex_id: n for n, ex_id in enumerate(ids)}
    out[[row_of[ex_id] for ex_id in scored_ids]] = probs
    return out


# --- what the method returned, scored -------------------------------------------------------------

def _checked(result: Any, ctx: MethodContext) -> tuple[np.ndarray, Optional[np.ndarray]]:
    if not isinstance(result, MethodResult):
        raise MethodResultError(f"method returned a {type(result).__name__}; return a MethodResult("
                                f"test_probs=..., b_probs=..., extra={{...}})")
    k = ctx.num_classes
    arrays = []
    for name, probs, n in (("test_probs", result.test_probs, len(ctx.test)),
                           ("b_probs", result.b_probs, len(ctx.b))):
        if probs is None and name == "b_probs":
            arrays.append(None)
            continue
        probs = np.asarray(probs, dtype=np.float32)
        if probs.shape != (n, k):
            raise MethodResultError(f"MethodResult.{name}: shape {probs.shape}; give ({n}, {k}), one "
                                    f"row of class probabilities per example of ctx.{name[:-6]}")
        given = probs[~np.isnan(probs).any(1)]
        if len(given) and ((given < 0).any() or (given > 1).any()
                           or not np.allclose(given.sum(1), 1.0, atol=1e-3)):
            raise MethodResultError(f"MethodResult.{name}: rows must be probabilities summing to 1 "
                                    f"(NaN rows: no prediction)")
        arrays.append(probs)
    if np.isnan(arrays[0]).any(1).all():
        raise MethodResultError("MethodResult.test_probs: every row is NaN; predict test")
    return arrays[0], arrays[1]


def _scores(plan: RunPlan, splits: Splits, ctx: MethodContext, test_probs: np.ndarray,
            b_probs: Optional[np.ndarray]) -> dict:
    """metrics.json of a method run: a transfer run's fields (accuracy, AUC, subsets, the weak
    model, diagnostics against it), on the test examples the method predicted."""
    scored = ~np.isnan(test_probs).any(1)
    truth = {e.id: e.label for e in splits.test}
    labels = np.array([truth[i] for i in ctx.test.ids])
    probs = test_probs[scored]
    metrics = {"run": plan.name, "kind": plan.kind, "seed": plan.seed,
               "accuracy": accuracy(labels[scored], probs), "auc": roc_auc(labels[scored], probs),
               "n_test": int(scored.sum()), "n_test_unpredicted": int((~scored).sum()),
               "weak_model": ctx.weak_model, "weak_accuracy": ctx.anchors.weak_accuracy,
               "labels": plan.label_tag}
    subsets = subset_of(splits.test)
    if subsets:
        ids = [i for i, keep in zip(ctx.test.ids, scored) if keep]
        metrics["subsets"] = subset_metrics(ids, labels[scored], probs, subsets)
    # diagnostics against the weak model, on the test examples both scored
    both = scored & ~np.isnan(ctx.weak_test).any(1)
    if both.any():
        b_rows = (~np.isnan(ctx.weak_b).any(1) & ~np.isnan(b_probs).any(1)) if b_probs is not None else None
        have_b = b_rows is not None and b_rows.any()
        diag = transfer_diagnostics(labels[both], test_probs[both], ctx.weak_test[both].astype(np.float64),
                                    b_probs[b_rows] if have_b else ctx.weak_b[:1],
                                    ctx.weak_b[b_rows] if have_b else ctx.weak_b[:1])
        if not have_b:  # no predictions on B: no agreement with the labels it was given there
            diag.pop("train_agreement_with_weak")
        metrics.update(diag)
    return metrics
