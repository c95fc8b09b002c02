"""Evaluation during a transfer run on slices of B held out of its training: early stopping
without peeking (a validation split labelled by the weak supervisor) and the accuracy against
ground truth through training (a slice used for that curve alone).

Early stopping (Section 2 of issue 9; EleutherAI's rule): every `every` optimizer steps and at the
last step the student is scored on the validation split; the checkpoint with the highest ROC AUC of
the student's p1 against the weak labels hardened at 0.5 (EleutherAI: `labels > 0.5`) is kept
(ties keep the earlier step, as the HF Trainer's best-model rule) and, at the end, loaded back, so
the test set is scored once, on the chosen checkpoint. Neither ground truth nor test is looked at.

Every rank runs every function here: the evaluations are ZeRO-3 forwards (collectives), their
predictions are gathered on every rank, so all ranks take the same decision; DeepSpeed checkpoints
are written and read by every rank; only rank 0 logs and deletes folders.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Optional, Sequence

import numpy as np

from w2s_scale import distributed as dist
from w2s_scale.config import ConfigError, TrainConfig
from w2s_scale.data.batching import TokenizedSet
from w2s_scale.data.groups import contiguous, cut_at_group
from w2s_scale.engine import predict
from w2s_scale.metrics import accuracy, roc_auc
from w2s_scale.results import ResultsError, checkpoint_problem, record_checkpoint

HELD_OUT_STREAM = 9  # the held-out cut draws from its own stream beside the run's seed
BEST_PREFIX = "best-step"  # checkpoints/best-stepN (the step* glob that prunes regular ones misses it)


@dataclass(frozen=True)
class HeldOutCut:
    """Positions in B's weak-labelled examples (the transfer run's training set before the cut),
    each in B's order; disjoint."""
    train: np.ndarray
    val: np.ndarray    # early stopping's validation split (weak labels only)
    curve: np.ndarray  # the ground-truth curve's slice


def held_out_sizes(n: int, train_cfg: TrainConfig, where: str = "train") -> tuple[int, int]:
    """(validation split, curve slice) sizes out of B's n examples; ConfigError when one of them
    is too small to use (preflight calls this with B's planned size)."""
    stop, curve = train_cfg.early_stopping, train_cfg.gt_curve
    n_val = int(round(stop.val_fraction * n)) if stop else 0
    n_curve = int(round(curve.fraction * n)) if curve else 0
    if stop and n_val < 2:
        raise ConfigError(f"{where}.early_stopping.val_fraction: {stop.val_fraction:g} of B's {n} "
                          f"examples holds out {n_val} for validation; raise it (or data.n_train) "
                          f"so at least 2 are held out")
    if curve and n_curve < 1:
        raise ConfigError(f"{where}.gt_curve.fraction: {curve.fraction:g} of B's {n} examples holds "
                          f"none out; raise it (or data.n_train)")
    return n_val, n_curve


def cut_held_out(n: int, seed: int, train_cfg: TrainConfig,
                 groups: Optional[Sequence[Hashable]] = None) -> HeldOutCut:
    """The same cut on any number of ranks (it depends on the seed, n and the groups only).
    `groups`: each example's group key (data/groups.py); related examples land in one slice,
    each slice ending at a group boundary. Without groups (or all distinct) the cut is as it was."""
    order = np.random.default_rng([seed, HELD_OUT_STREAM]).permutation(n)
    n_val, n_curve = held_out_sizes(n, train_cfg)
    if groups is None:
        val_end, curve_end = n_val, n_val + n_curve
    else:
        key = lambda pos: groups[pos]  # noqa: E731
        order = np.array(contiguous(list(order), key), dtype=int)
        val_end = cut_at_group(order, n_val, key)
        curve_end = cut_at_group(order, val_end + n_curve, key) if n_curve else val_end
    return HeldOutCut(train=np.sort(order[curve_end:]), val=np.sort(order[:val_end]),
                      curve=np.sort(order[val_end:curve_end]))


def _score(probs: np.ndarray, weak: np.ndarray) -> float:
    """ROC AUC of the student's p1 against the weak labels hardened at 0.5 (EleutherAI:
    labels > 0.5); K > 2 classes: the macro one-vs-rest AUC against the weak labels' argmax.
    Where the hardened labels lack a class (AUC undefined), the agreement."""
    hard = (weak[:, 1] > 0.5).astype(int) if weak.shape[1] == 2 else weak.argmax(1)
    auc = roc_auc(hard, probs)
    return auc if auc is not None else accuracy(hard, probs)


class TrainingMonitor:
    """Called by engine.train after every optimizer step (all ranks). State that must survive a
    resume (the best step so far) travels in the regular checkpoints' client state."""

    def __init__(self, train_cfg: TrainConfig, val: Optional[tuple[TokenizedSet, np.ndarray]],
                 curve: Optional[TokenizedSet], ckpt_dir: Path):
        self.stop_cfg, self.curve_cfg = train_cfg.early_stopping, train_cfg.gt_curve
        self.val = val      # (examples, weak soft labels [N, K])
        self.curve = curve  # examples with their ground truth
        self.ckpt_dir = ckpt_dir
        self.best_step: Optional[int] = None
        self.best_auc: Optional[float] = None
        self._kept_step: Optional[int] = None  # best as of the last regular checkpoint
        self._best_probs: Optional[np.ndarray] = None

    # -- resume
    def state(self) -> dict[str, Any]:
        """Saved with a regular checkpoint: the best checkpoint it refers to is kept until a
        later regular checkpoint supersedes it (a crash resumes from the regular one)."""
        self._kept_step = self.best_step
        return {"best_step": self.best_step, "best_auc": self.best_auc}

    def load(self, state: Optional[dict[str, Any]]) -> None:
        state = state or {}
        self.best_step, self.best_auc = state.get("best_step"), state.get("best_auc")
        self._kept_step = self.best_step

    # -- the hook
    def after_step(self, eng, done: int, tracker) -> None:
        last = done == eng.total_steps
        if self.curve is not None and (done % self.curve_cfg.every == 0 or last):
            probs = predict(eng, self.curve)
            tracker.log({"event": "eval", "step": done,
                         "gt_curve_accuracy": accuracy(self.curve.labels, probs),
                         "gt_curve_auc": roc_auc(self.curve.labels, probs)})
        if self.val is not None and (done % self.stop_cfg.every == 0 or last):
            data, weak = self.val
            probs = predict(eng, data)
            score = _score(probs, weak)
            improved = self.best_auc is None or score > self.best_auc
            tracker.log({"event": "eval", "step": done, "val_weak_auc": score,
                         "val_weak_agreement": float(np.mean(probs.argmax(1) == weak.argmax(1))),
                         "best": improved})
            if improved:
                self.best_step, self.best_auc = done, score
                self._best_probs = probs  # to check the reload against (this attempt only)
                if not last:  # the final weights are the engine's own: no copy needed
                    self._save_best(eng, done)

    def _save_best(self, eng, step: int) -> None:
        eng.engine.save_checkpoint(str(self.ckpt_dir), tag=f"{BEST_PREFIX}{step}",
                                   client_state={"step": step}, save_latest=False)
        dist.barrier()
        if dist.is_main():
            record_checkpoint(self.ckpt_dir / f"{BEST_PREFIX}{step}")  # checked before finish loads it
            keep = {f"{BEST_PREFIX}{s}" for s in (step, self._kept_step) if s is not None}
            for old in self.ckpt_dir.glob(f"{BEST_PREFIX}*"):
                if old.name not in keep:
                    shutil.rmtree(old, ignore_errors=True)
        dist.barrier()

    def finish(self, eng, tracker) -> dict[str, Any]:
        """Load the chosen checkpoint into the engine (all ranks); what metrics.json records."""
        out = {"gt_curve": {"n": len(self.curve), "every": self.curve_cfg.every}} if self.curve else {}
        if self.val is None:
            return out
        if self.best_step != eng.total_steps:
            tag = f"{BEST_PREFIX}{self.best_step}"
            problem = checkpoint_problem(self.ckpt_dir / tag)[1] if dist.is_main() else None
            problem = dist.broadcast_object(problem)
            if problem is not None:
                # the regular checkpoints' early-stopping state points at it: none can resume
                if dist.is_main():
                    shutil.rmtree(self.ckpt_dir, ignore_errors=True)
                raise ResultsError(f"{self.ckpt_dir.parent}: early stopping chose step "
                                   f"{self.best_step}, but its checkpoint {tag} is damaged "
                                   f"({problem}); rerun the same command: the run trains again "
                                   f"from scratch")
            # with the optimizer states: under ZeRO they hold the fp32 master weights
            eng.engine.load_checkpoint(str(self.ckpt_dir), tag=tag, load_optimizer_states=True,
                                       load_lr_scheduler_states=False)
        # the chosen weights really are in the engine: the validation score comes out the same
        data, weak = self.val
        probs = predict(eng, data)
        reloaded = _score(probs, weak)
        drift = None if self._best_probs is None else float(np.abs(probs - self._best_probs).max())
        tracker.log({"event": "selected", "step": self.best_step, "val_score": self.best_auc,
                     "val_score_reloaded": reloaded, "val_probs_max_diff_reloaded": drift})
        return {**out, "early_stopping": {"chosen_step": self.best_step, "chosen_val_weak_auc": self.best_auc,
                                   "val_score_reloaded": reloaded, "n_val": len(data),
                                   "every": self.stop_cfg.every}}


def prepare(train_cfg: TrainConfig, seed: int, train_set: TokenizedSet, targets: np.ndarray,
            ckpt_dir: Path, group_of: Optional[dict[str, str]] = None
            ) -> tuple[TokenizedSet, np.ndarray, Optional[TrainingMonitor]]:
    """B's weak-labelled examples with the held-out slices cut out, and the monitor that
    evaluates on them (None, and B untouched, when neither early stopping nor the curve is on).
    `group_of`: example id -> group key, for the examples that share one with others."""
    if train_cfg.early_stopping is None and train_cfg.gt_curve is None:
        return train_set, targets, None
    groups = [group_of.get(ex_id, ex_id) for ex_id in train_set.ids] if group_of else None
    cut = cut_held_out(len(train_set), seed, train_cfg, groups)
    val = (train_set.subset(cut.val), targets[cut.val]) if train_cfg.early_stopping else None
    curve = train_set.subset(cut.curve) if train_cfg.gt_curve else None
    monitor = TrainingMonitor(train_cfg, val, curve, ckpt_dir)
    return train_set.subset(cut.train), targets[cut.train], monitor
