"""Small torch.distributed helpers that degrade to single-process no-ops.

Every helper works whether or not ``torch.distributed`` is initialised. Before initialisation
``rank``/``world_size``/``local_rank`` read the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK,
as set by torchrun and the deepspeed launcher), while the collectives act as identities.
Collectives run on CPU with gloo and on the current CUDA device with nccl; results come back on the
input tensor's device. They carry no gradient.
"""
from __future__ import annotations

import datetime
import os
import sys
from typing import Any, NoReturn

import torch
import torch.distributed as dist

__all__ = ["is_initialized", "rank", "world_size", "local_rank", "is_main", "barrier",
           "all_gather_tensor", "all_gather_objects", "any_rank", "all_reduce_sum",
           "broadcast_object", "init", "shutdown", "exit_process", "finish",
           "has_joined", "collective_timeout_s", "export_collective_timeout", "TIMEOUT_ENV"]

# How long a collective waits for the other ranks before it fails (seconds). A rank that died or
# hangs otherwise keeps the others waiting; torch's own default is 30 minutes for gloo and 10 for
# nccl. `w2s` sets it from launch.collective_timeout_s; scripts may set the variable themselves.
TIMEOUT_ENV = "W2S_COLLECTIVE_TIMEOUT_S"
DEFAULT_COLLECTIVE_TIMEOUT_S = 1800.0
_joined = False  # this process has been part of a process group (its gloo/nccl threads exist)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def rank() -> int:
    return dist.get_rank() if is_initialized() else _env_int("RANK", 0)


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else _env_int("WORLD_SIZE", 1)


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    return rank() == 0


def say(message: str) -> None:
    """A progress line, printed by rank 0 alone."""
    if is_main():
        print(f"[w2s] {message}", flush=True)


def barrier() -> None:
    if is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _comm_device(t: torch.Tensor) -> torch.device:
    """Where a collective on ``t`` must run for the active backend."""
    backend = str(dist.get_backend()).lower()
    if "nccl" in backend:
        return t.device if t.is_cuda else torch.device("cuda", torch.cuda.current_device())
    if "gloo" in backend and not t.device.type == "cpu":
        return torch.device("cpu")
    return t.device


def all_gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every rank along dim 0, in rank order.

    Lengths along dim 0 may differ between ranks; trailing dims and dtype must agree. A 0-d tensor
    counts as length 1. Identity (detached) when not distributed.
    """
    t = t.detach()
    if t.dim() == 0:
        t = t.reshape(1)
    if not is_initialized() or dist.get_world_size() == 1:
        return t
    out_device = t.device
    dev = _comm_device(t)
    x = t.to(dev).contiguous()
    n = dist.get_world_size()
    size = torch.tensor([x.shape[0]], dtype=torch.long, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(n)]
    dist.all_gather(sizes, size)
    lengths = [int(s.item()) for s in sizes]
    longest = max(lengths)
    if x.shape[0] < longest:
        pad = torch.zeros((longest - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=dev)
        x = torch.cat([x, pad], dim=0)
    parts = [torch.empty_like(x) for _ in range(n)]
    dist.all_gather(parts, x)
    return torch.cat([p[:k] for p, k in zip(parts, lengths)], dim=0).to(out_device)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order; ``[obj]`` when not distributed."""
    if not is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on at least one rank."""
    if not is_initialized() or dist.get_world_size() == 1:
        return bool(flag)
    dev = _comm_device(torch.empty(0))
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (a copy); identity when not distributed."""
    if not is_initialized() or dist.get_world_size() == 1:
        return t.clone()
    x = t.detach().to(_comm_device(t)).clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x.to(t.device)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_joined() -> bool:
    """Whether this process has been part of a process group (and must end in exit_process)."""
    return _joined


def collective_timeout_s() -> float:
    try:
        value = float(os.environ.get(TIMEOUT_ENV, DEFAULT_COLLECTIVE_TIMEOUT_S))
    except ValueError:
        return DEFAULT_COLLECTIVE_TIMEOUT_S
    return value if value > 0 else DEFAULT_COLLECTIVE_TIMEOUT_S


def export_collective_timeout(timeout_s: float) -> None:
    """Set the collective timeout this process's ranks read when they join (inherited through the
    launcher). Set, not defaulted: a value inherited from a parent process (a sweep, a test
    session, a shell that once ran a run) must not replace the one this run's config gives."""
    os.environ[TIMEOUT_ENV] = f"{timeout_s:g}"


def init() -> None:
    """Join (or, for a lone process, form) the process group every run uses.

    Launchers (torchrun, the deepspeed launcher, our Slurm wrapper) set RANK, WORLD_SIZE and
    MASTER_ADDR/PORT; a process started without one becomes a group of one, since DeepSpeed
    needs a process group even then. gloo on CPU machines (no oneCCL here), nccl on GPUs.
    A process that joins must end with `finish` (or `shutdown` then `exit_process`).
    """
    global _joined
    if is_initialized():
        _joined = True
        return
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    import deepspeed

    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(local_rank())
    else:
        # ranks on one machine share its cores; oversubscribed threads slow every rank down
        per_rank = max(1, (os.cpu_count() or 1) // _env_int("LOCAL_WORLD_SIZE", 1))
        torch.set_num_threads(min(torch.get_num_threads(), per_rank))
    timeout = datetime.timedelta(seconds=collective_timeout_s())
    _default_group_timeout(timeout)
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False,
                               timeout=timeout)
    _joined = True


def _default_group_timeout(timeout: datetime.timedelta) -> None:
    """Make `timeout` the default of every process group made later, not only the world group.
    Why: DeepSpeed runs ZeRO's collectives on groups of its own (`dist.new_group(ranks)`, e.g.
    its clone of the world group, deepspeed.utils.groups), which take torch's default timeout
    (30 minutes for gloo, 10 for nccl), not the one given to init_distributed: a rank that
    waits there for a hung peer ignored launch.collective_timeout_s (tests/helpers/
    group_timeout.py). torch reads these module attributes each time a group is made."""
    from torch.distributed import distributed_c10d

    distributed_c10d.default_pg_timeout = timeout
    distributed_c10d.default_pg_nccl_timeout = timeout


def shutdown(clean: bool = True) -> None:
    """Leave the process group. `clean`: every rank got here the same way (its work finished
    or stopped at the same step), so all wait for each other first and no rank closes its
    connections (or, under the deepspeed launcher, rank 0 the rendezvous store) while another
    still uses them. After an error on one rank only, a barrier would pair with some other
    collective of the healthy ranks, so it is skipped."""
    if not is_initialized():
        return
    if clean and dist.get_world_size() > 1:
        try:
            dist.barrier()
        except RuntimeError:  # a peer is gone; leaving is all that is left to do
            pass
    dist.destroy_process_group()


def exit_process(code: Any = 0) -> NoReturn:
    """End a process that joined a process group, without tearing the interpreter down.

    Why: DeepSpeed keeps the world group alive past `destroy_process_group` (every ZeRO-3
    parameter's `ds_process_group`, the `zero.Init` contexts), so gloo's worker threads
    ("pt_gloo_runloop") are never joined. A worker that frees a finished collective's
    tensors must take the GIL to drop their Python objects; when the main thread is
    already in Py_FinalizeEx, Python (3.11) ends such a thread with pthread_exit, whose
    forced unwind meets a noexcept destructor (~AsyncWork): std::terminate, "terminate
    called without an active exception", SIGABRT after the work is done. Under CPU load
    the worker lags the main thread and this happens in a few percent of runs (core dump
    and reproduction: benchmarks/stress_exit.py, tests/test_clean_exit.py).
    So the steps of a normal exit that matter run here while the interpreter is whole
    (non-daemon threads joined, atexit handlers: W&B, logging, temporary files; streams
    flushed), then os._exit ends the process with no finalization left to race.
    A process that never joined a group exits the ordinary way.
    """
    if code is None or isinstance(code, bool):
        code = int(bool(code))
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    if not _joined:
        sys.exit(code)
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]  # Py_FinalizeEx's first step
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(code)


def finish(code: Any = 0) -> NoReturn:
    """The end of a script whose ranks all got here: leave the group together, then exit."""
    shutdown(clean=True)
    exit_process(code)
