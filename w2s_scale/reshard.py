"""Resuming a ZeRO checkpoint on another number of ranks, through DeepSpeed's universal checkpoint.

A requeued Slurm job may get a different number of nodes or GPUs. A ZeRO-1/2/3 checkpoint holds
one optimizer shard per data-parallel rank, and DeepSpeed refuses to load it on another world
size. DeepSpeed's own answer is the universal checkpoint: `ds_to_universal` turns the shards
into one fp32 file per parameter (weights, Adam's two moments), which any number of ranks loads
with `checkpoint.load_universal`. Here rank 0 converts the latest checkpoint into
`checkpoints/universal/<tag>` when the world size changed, every rank loads it, and the
conversion is removed once loaded: the next checkpoint is written natively, for the new world
size. A stage-0 checkpoint has no shards and loads as it is.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from w2s_scale import distributed as dist
from w2s_scale.errors import UserError

UNIVERSAL = "universal"  # checkpoints/universal/<tag>: a conversion, beside the native tags
CONVERT_TIMEOUT_S = 3600.0  # a 72B model's shards take minutes to merge; a hung converter not forever


class ReshardError(UserError):
    """The checkpoint cannot be resumed on this world size."""


def saved_world_size(tag_dir: Path) -> Optional[int]:
    """The data-parallel ranks that wrote the ZeRO checkpoint `tag_dir` (each wrote one optimizer
    shard, `*zero_pp_rank_<r>_mp_rank_00_optim_states.pt`); None for a checkpoint without
    shards (stage 0), which any world size loads as it is."""
    shards = list(tag_dir.glob("*zero_pp_rank_*_mp_rank_*_optim_states.pt"))
    return len(shards) or None


def needs_reshard(ckpt_dir: Path, tag: str) -> Optional[int]:
    """The world size the checkpoint was written on, if it is not this one's; else None."""
    saved = saved_world_size(ckpt_dir / tag)
    return saved if saved is not None and saved != dist.world_size() else None


def _convert(ckpt_dir: Path, tag: str) -> Optional[str]:
    """Rank 0: DeepSpeed's converter, in a process of its own (it starts worker pools, which
    must not fork a rank that holds gloo threads). None, or why it failed (one line)."""
    out = ckpt_dir / UNIVERSAL / tag
    shutil.rmtree(ckpt_dir / UNIVERSAL, ignore_errors=True)  # an earlier attempt's, maybe partial
    # --inject_missing_state: ZeRO-1/2 checkpoints of plain (non-Megatron) models lack the
    # universal-checkpoint info the converter asks for; it adds the default
    cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
           str(ckpt_dir / tag), "--output_folder", str(out), "--inject_missing_state",
           "--num_extract_workers", "1", "--num_merge_workers", "1"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"ds_to_universal did not finish within {CONVERT_TIMEOUT_S:.0f} s"
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).strip().splitlines() if line.strip()]
        return f"ds_to_universal failed: {(lines or ['no output'])[-1][:300]}"
    return None


def load_resharded(engine: Any, ckpt_dir: Path, tag: str, saved: int) -> dict:
    """Load checkpoint `tag`, written on `saved` ranks, into `engine` on this world size; every
    rank calls this. Returns the client state (the same on every rank)."""
    problem = _convert(ckpt_dir, tag) if dist.is_main() else None
    problem = dist.broadcast_object(problem)
    if problem is not None:
        raise ReshardError(f"{ckpt_dir / tag}: written on {saved} ranks, resumed on "
                           f"{dist.world_size()}: {problem}; resume on {saved} ranks, or "
                           f"--redo the run")
    # DeepSpeed reads checkpoint.load_universal from its config only when it loads (engine.
    # load_universal_checkpoint()): set for this load, the engine otherwise stays as built
    config = engine._config
    config.load_universal_checkpoint = True
    try:
        _, client = engine.load_checkpoint(str(ckpt_dir / UNIVERSAL), tag=tag,
                                           load_optimizer_states=True,
                                           load_lr_scheduler_states=True)
    finally:
        config.load_universal_checkpoint = False
    dist.barrier()  # every rank has read it
    if dist.is_main():
        shutil.rmtree(ckpt_dir / UNIVERSAL, ignore_errors=True)
    if client is None:
        raise ReshardError(f"{ckpt_dir / tag}: DeepSpeed could not load its universal "
                           f"conversion; resume on {saved} ranks, or --redo the run")
    return client
