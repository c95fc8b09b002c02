"""The DeepSpeed engine around one run: build, train (with checkpoints and resume), predict.

Every rank runs every function here; collectives are entered by all ranks in the same order.
"""
from __future__ import annotations

import gc
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from w2s_scale import distributed as dist
from w2s_scale import ds_config as dsc
from w2s_scale.config import ConfigError, LossConfig, ModelConfig, TrainConfig
from w2s_scale.data.batching import (TokenizedSet, collate, eval_batches, global_batches,
                                     rank_micro_batches, steps_per_epoch)
from w2s_scale.losses import (GlobalBatchStats, PredictionHistory, compute_loss,
                              needs_global_stats, resolve_params)
from w2s_scale.models import build_classifier
from w2s_scale.padding_free import pack
from w2s_scale.results import record_checkpoint, resume_tag
from w2s_scale.processes import handling, received_signal
from w2s_scale.reshard import load_resharded, needs_reshard


class RunStopped(Exception):
    """A stop signal (preemption) arrived: a checkpoint was saved, and the same command resumes."""


class StopFlag:
    """Set by SIGUSR1 (Slurm's advance warning), SIGTERM or SIGINT (Ctrl-C); acted on at the
    next step boundary, where all ranks agree to stop together. The request is shared by the
    flags of one process: `launching` holds one over the whole command, so a stop that comes
    while a run loads or predicts is kept for the next training step, not lost and not fatal.
    A second SIGINT is a KeyboardInterrupt: stop now, without a checkpoint."""

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
    pending: Optional[str] = None  # the signal to name, once a stop was asked for
    _depth = 0                     # flags entered and not yet left, in this process

    def __init__(self):
        self._handlers = handling(self.SIGNALS, self._handle)

    @property
    def requested(self) -> bool:
        return StopFlag.pending is not None

    @property
    def signal_name(self) -> Optional[str]:
        return StopFlag.pending

    def __enter__(self) -> "StopFlag":
        if StopFlag._depth == 0:
            StopFlag.pending = None
        StopFlag._depth += 1
        self._handlers.__enter__()
        return self

    def _handle(self, signum, _frame) -> None:
        if signum == signal.SIGINT and StopFlag.pending is not None:
            raise KeyboardInterrupt
        # under a launcher every request arrives as SIGUSR1: name the one that was sent
        StopFlag.pending = received_signal(signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        StopFlag._depth -= 1
        self._handlers.__exit__(*exc)


@dataclass
class Engine:
    engine: Any            # deepspeed.DeepSpeedEngine
    tokenizer: Any
    ds_config: dict
    train_cfg: TrainConfig
    total_steps: int
    num_classes: int = 2   # the head's outputs: the task's K

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def close(self) -> None:
        destroy = getattr(self.engine, "destroy", None)
        if destroy is not None:
            destroy()
        self.engine = None
        gc.collect()


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int, epochs: float = 1.0):
    """Linear warm-up, then cosine annealing to zero (the reference) or constant; or the reference
    vision code's schedule (see TrainConfig.schedule), which cycles every 2 x `epochs` steps; or
    `linear`, transformers' get_linear_schedule_with_warmup factor for factor."""
    def factor(step: int) -> float:
        if schedule == "linear":  # its warm-up starts at 0, unlike the others' (step + 1) / warmup
            if step < warmup_steps:
                return step / max(1, warmup_steps)
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "reference_vision":
            return 0.5 * (1.0 + math.cos(math.pi * step / epochs))
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def total_train_steps(n_examples: int, train: TrainConfig) -> int:
    if train.epochs == 0:  # a zero-shot run: the label-token head scores as the LM is
        return 0
    per_epoch = steps_per_epoch(n_examples, train.batch_size)
    if per_epoch == 0:
        raise ConfigError(f"train.batch_size: {train.batch_size} is larger than the "
                         f"{n_examples} training examples; lower batch_size or use more data")
    return max(1, round(train.epochs * per_epoch))


def build_engine(model_cfg: ModelConfig, train: TrainConfig, total_steps: int, tokenizer,
                 num_classes: int = 2, build=None, label_ids=None) -> Engine:
    """`num_classes`: the task's K, the size of the model's head; `label_ids` (head: label_tokens):
    the label words' token ids, whose LM-head rows the head starts from. `build(ds_config) -> nn.Module`:
    a model other than the text classifier (images); a model with nothing to train (a frozen
    feature extractor, a classifier used as is) gets no optimizer."""
    import deepspeed

    ds = dsc.build(train, model_cfg.dtype, dist.world_size())
    model = build(ds) if build is not None else build_classifier(model_cfg, ds, num_classes, label_ids)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        engine, *_ = deepspeed.initialize(model=model, config=ds, dist_init_required=False)
        return Engine(engine, tokenizer, ds, train, total_steps, num_classes)
    if dsc.offloads_optimizer(ds):
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(params, lr=train.lr, weight_decay=train.weight_decay,
                                     adamw_mode=True)
    else:
        # on CPU, torch's fused AdamW: the same update, one kernel instead of a loop over the
        # tensors (MiniLM-L6's step: 16 ms against 131 ms, one thread); GPUs keep the default
        optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay,
                                      fused=True if not torch.cuda.is_available() else None)
    warmup = int(train.warmup_frac * total_steps)
    schedule = lambda opt: torch.optim.lr_scheduler.LambdaLR(  # noqa: E731 - built on DS's optimizer
        opt, lr_lambda(train.schedule, warmup, total_steps, train.epochs))
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule,
                                      config=ds, dist_init_required=False)
    return Engine(engine, tokenizer, ds, train, total_steps, num_classes)


# --- checkpoints -------------------------------------------------------------------------------

LATEST = "latest_step"
DS_LATEST = "latest"  # DeepSpeed's own pointer: its tools (zero_to_fp32.py) read it when no tag is given


def latest_checkpoint(ckpt_dir: Path) -> Optional[str]:
    marker = ckpt_dir / LATEST
    return marker.read_text().strip() if marker.exists() else None


def save_checkpoint(eng: Engine, ckpt_dir: Path, step: int,
                    history: Optional[PredictionHistory] = None, monitor=None) -> None:
    """Every rank writes its shard; only when all are done does rank 0 point `latest_step` (and
    DeepSpeed's `latest`) at the new tag (atomically), so a crash mid-save leaves the previous
    checkpoint in force.
    `history`: the losses' rolling prediction buffer, resumed with the weights; `monitor`:
    early stopping's best step so far (selection.TrainingMonitor)."""
    tag = f"step{step}"
    client = {"step": step, "prediction_history": history.state() if history else [],
              "monitor": monitor.state() if monitor else None}
    eng.engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client, save_latest=False)
    dist.barrier()
    if dist.is_main():
        record_checkpoint(ckpt_dir / tag)  # before any pointer names it: a resume checks it
        for pointer in (DS_LATEST, LATEST):  # ours last: it is what a resume trusts
            tmp = ckpt_dir / f".{pointer}.tmp"
            tmp.write_text(tag)
            os.replace(tmp, ckpt_dir / pointer)
        by_age = sorted(ckpt_dir.glob("step*"), key=lambda p: int(p.name[4:]))
        for old in by_age[:-eng.train_cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def load_checkpoint(eng: Engine, ckpt_dir: Path, monitor=None) -> tuple[int, PredictionHistory]:
    """The step to continue from and the prediction buffer as it was then (and the monitor's
    state, restored into it)."""
    tag = resume_tag(ckpt_dir, latest_checkpoint(ckpt_dir))  # its files checked (results.py)
    if tag is None:
        return 0, PredictionHistory()
    saved = needs_reshard(ckpt_dir, tag)
    if saved is not None:  # written on another number of ranks: DeepSpeed's universal checkpoint
        dist.say(f"checkpoint {tag} was written on {saved} ranks, resuming on "
                 f"{dist.world_size()}: converting it to a universal checkpoint")
        client = load_resharded(eng.engine, ckpt_dir, tag, saved)
    else:
        _, client = eng.engine.load_checkpoint(str(ckpt_dir), tag=tag, load_optimizer_states=True,
                                               load_lr_scheduler_states=True)
    if monitor is not None:
        monitor.load(client.get("monitor"))
    return int(client["step"]), PredictionHistory(client.get("prediction_history", []))


# --- training ----------------------------------------------------------------------------------

def _forward(eng: Engine, data: TokenizedSet, rows: np.ndarray) -> tuple[torch.Tensor, int]:
    """Logits of `rows` and how many tokens they hold (images, features: one per example)."""
    if hasattr(data, "model_inputs"):  # images or cached features: w2s_scale/vision.py
        return eng.engine(data.model_inputs(rows).to(eng.engine.device)), len(rows)
    tokens, device = [data.input_ids[i] for i in rows], eng.engine.device
    if eng.train_cfg.padding_free:  # rows with no padding, logits in the order of `rows`
        input_ids, layout = pack(tokens, eng.pad_id)
        return eng.engine(input_ids.to(device), None, packed=layout.to(device)), layout.n_tokens
    input_ids, mask = collate(tokens, eng.pad_id, eng.tokenizer.padding_side)
    return eng.engine(input_ids.to(device), mask.to(device)), int(mask.sum())


def _global_stats(eng: Engine, data: TokenizedSet, micro: list[np.ndarray], batch: np.ndarray,
                  targets: np.ndarray, history: PredictionHistory) -> GlobalBatchStats:
    """The student's predictions over the whole global batch (all ranks, all accumulation
    steps), from a no-grad pass before the step, put in the global batch's own order: losses
    such as logconf take a quantile over the global batch, exactly as the reference does over
    its one-device batch; logconf_eleuther's buffer runs through the batch in that order."""
    with torch.no_grad():
        probs = torch.cat([torch.softmax(_forward(eng, data, rows)[0].float(), -1)
                           for rows in micro]).cpu()  # [n, K]
    gathered = dist.all_gather_tensor(probs)
    rows = dist.all_gather_tensor(torch.as_tensor(np.concatenate(micro), dtype=torch.long))
    in_order = torch.empty_like(gathered)
    in_order[torch.as_tensor(_positions(batch, rows.numpy()))] = gathered
    y = torch.as_tensor(targets[batch], dtype=torch.float64)
    return GlobalBatchStats.build(in_order, y, history0=history.values)


def _positions(batch: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Where each of `rows` stands in the global batch (a batch never repeats an example)."""
    where = {int(r): i for i, r in enumerate(batch)}
    return np.array([where[int(r)] for r in rows], dtype=np.int64)


def train(eng: Engine, data: TokenizedSet, targets: np.ndarray, loss: LossConfig, seed: int,
          ckpt_dir: Path, tracker, stop: StopFlag, monitor=None) -> None:
    """Train on `data` against soft `targets` [N, K]; resumes from `ckpt_dir` if a checkpoint
    exists there; raises RunStopped after checkpointing if a stop signal arrives. `monitor`
    (selection.TrainingMonitor): evaluated after every step, on every rank."""
    train_cfg = eng.train_cfg
    with_stats = needs_global_stats(loss.name, loss.params)
    params = resolve_params(loss.name, loss.params, targets)  # e.g. radius: midweak -> a number
    if params != dict(loss.params):
        tracker.log({"event": "loss_params", "loss": loss.name, "resolved": params})
    accumulation = eng.ds_config["gradient_accumulation_steps"]
    per_epoch = steps_per_epoch(len(data), train_cfg.batch_size)
    start, history = load_checkpoint(eng, ckpt_dir, monitor)
    if start:
        tracker.log({"event": "resumed", "step": start, "checkpoint": latest_checkpoint(ckpt_dir)})
    lengths = data.lengths
    batches_of_epoch: dict[int, list[np.ndarray]] = {}
    bar = tracker.progress(total=eng.total_steps, initial=start, desc="train")
    eng.engine.train()
    for step in range(start, eng.total_steps):
        epoch = step // per_epoch
        if epoch not in batches_of_epoch:
            batches_of_epoch = {epoch: global_batches(lengths, train_cfg.batch_size, seed, epoch,
                                                      train_cfg.length_grouping)}
        batch = batches_of_epoch[epoch][step % per_epoch]
        micro = rank_micro_batches(batch, dist.rank(), dist.world_size(), accumulation)
        t0 = time.perf_counter()
        stats = _global_stats(eng, data, micro, batch, targets, history) if with_stats else None
        totals = torch.zeros(4, dtype=torch.float64)  # loss sum, agreement, examples, tokens
        for rows in micro:
            logits, n_tokens = _forward(eng, data, rows)
            target = torch.as_tensor(targets[rows], dtype=torch.float32, device=logits.device)
            value = compute_loss(loss.name, logits.float(), target, step / eng.total_steps,
                                 stats and stats.for_positions(_positions(batch, rows)), params,
                                 step=step)
            eng.engine.backward(value)
            eng.engine.step()
            agree = (logits.argmax(-1) == target.argmax(-1)).sum().item()
            totals += torch.tensor([value.item() * len(rows), agree, len(rows), n_tokens],
                                   dtype=torch.float64)
        if stats is not None:
            history.push(stats.history_rows())
        totals = dist.all_reduce_sum(totals)
        elapsed = time.perf_counter() - t0
        record = {"event": "train", "step": step + 1, "epoch": epoch,
                  "loss": totals[0].item() / totals[2].item(),
                  "agreement": totals[1].item() / totals[2].item(),
                  "lr": eng.engine.get_lr()[0], "examples_per_s": totals[2].item() / elapsed,
                  "tokens_per_s": totals[3].item() / elapsed}
        tracker.log(record)
        bar.update(1, loss=record["loss"], acc=record["agreement"], ex_s=record["examples_per_s"])
        done = step + 1
        if monitor is not None:
            monitor.after_step(eng, done, tracker)
        if dist.any_rank(stop.requested):
            save_checkpoint(eng, ckpt_dir, done, history, monitor)
            tracker.log({"event": "stopped", "step": done, "signal": stop.signal_name})
            bar.close()
            raise RunStopped(f"stopped by {stop.signal_name or 'a signal'} after step {done}; "
                             f"checkpoint saved, rerun the same command to resume")
        if train_cfg.checkpoint_every and done % train_cfg.checkpoint_every == 0 and done < eng.total_steps:
            save_checkpoint(eng, ckpt_dir, done, history, monitor)
    bar.close()


# --- prediction --------------------------------------------------------------------------------

def predict(eng: Engine, data: TokenizedSet, tracker=None, desc: str = "predict") -> np.ndarray:
    """Class probabilities [N, K] in dataset order, on every rank."""
    def probs(rows):
        logits, tokens = _forward(eng, data, rows)
        return torch.softmax(logits.float(), -1), tokens

    return map_examples(eng, data, probs, tracker, desc, width=eng.num_classes)


def forward_all(eng: Engine, data: TokenizedSet, tracker=None, desc: str = "predict") -> np.ndarray:
    """The model's raw outputs [N, width] in dataset order, on every rank: frozen image features
    are extracted this way, once, under the run's own engine (w2s_scale/vision.py)."""
    return map_examples(eng, data, lambda rows: _forward(eng, data, rows), tracker, desc)


def on_tokens(eng: Engine, data: TokenizedSet, fn):
    """A map_examples function from fn(input_ids, attention_mask) -> [B, W] on a text batch."""
    def batch(rows):
        input_ids, mask = collate([data.input_ids[r] for r in rows], eng.pad_id,
                                  eng.tokenizer.padding_side)
        device = eng.engine.device
        return fn(input_ids.to(device), mask.to(device)), int(mask.sum())
    return batch


def map_examples(eng: Engine, data: TokenizedSet, fn, tracker=None, desc: str = "predict",
                 width: Optional[int] = None) -> np.ndarray:
    """fn(rows) -> ([B, W] values, tokens in them) for every example, as an array [N, W] in dataset
    order, on every rank. Each example is scored by exactly one rank; results are gathered and
    put back in order. `width`: W where known in advance (else taken from the outputs)."""
    batch_size = eng.train_cfg.eval_batch_size
    batches, n_forward = eval_batches(data.lengths, batch_size, dist.rank(), dist.world_size())
    eng.engine.eval()
    rows_done, out_done = [], []
    bar = tracker.progress(total=n_forward, desc=desc) if tracker else None
    t0, n_tokens = time.perf_counter(), 0
    with torch.no_grad():
        for i in range(n_forward):
            # a rank out of work repeats a batch and discards it: ZeRO-3 forwards are collectives
            rows = batches[i] if i < len(batches) else (batches[0] if batches else np.array([0]))
            values, tokens = fn(rows)
            width = values.shape[-1] if width is None else width
            if i < len(batches):
                rows_done.append(rows)
                out_done.append(values.float().cpu().numpy())
                n_tokens += tokens
            if bar:
                bar.update(1)
    if bar:
        bar.close()
    eng.engine.train()
    width = 0 if width is None else width  # no forward at all: no examples, on every rank
    rows = np.concatenate(rows_done) if rows_done else np.zeros(0, dtype=np.int64)
    values = np.concatenate(out_done) if out_done else np.zeros((0, width), dtype=np.float32)
    gathered = dist.all_gather_objects((rows, values))
    out = np.full((len(data), width), np.nan, dtype=np.float32)
    for part_rows, part_values in gathered:
        out[part_rows] = part_values
    assert not np.isnan(out).any(), f"{desc} left examples unscored"
    if tracker:
        elapsed = time.perf_counter() - t0
        tracker.log({"event": desc, "examples": len(data), "seconds": elapsed,
                     "examples_per_s_rank0": sum(len(r) for r in rows_done) / max(elapsed, 1e-9),
                     "tokens_per_s_rank0": n_tokens / max(elapsed, 1e-9)})
    return out
