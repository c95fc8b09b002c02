"""The one launch path of `w2s experiment` and `w2s run`: start the ranks, run preflight on every
rank, run until stopped, exit cleanly.

Outside any launcher, `launch` runs preflight once in this process; with launch.nproc > 1 (or a
launcher asked for) it starts the ranks with torchrun or the deepspeed launcher on launch/rank.py,
which comes back to the `w2s` command on every rank with PREFLIGHT_PASSED_ENV set. Ranks that a
launcher started by itself (torchrun or deepspeed run by hand, a Slurm node's launch/slurm_node.py)
have no such mark: each runs the same preflight before any collective, so a mistake stops each
rank alone with one line from rank 0. Then every rank joins the process group and does its work;
a stop signal (SIGUSR1, SIGTERM, Ctrl-C) ends it with a checkpoint and exit 75.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable

from w2s_scale import distributed as dist
from w2s_scale.config import LaunchConfig
from w2s_scale.engine import RunStopped, StopFlag
from w2s_scale.environment import check_environment
from w2s_scale.errors import ConfigError, UserError
from w2s_scale.processes import (EXIT_INTERRUPTED, EXIT_STOPPED, RESEND_EVERY_S, STATUS_ENV,
                                 descendants, heartbeat, rank_beacon, record_signal, watch_ranks)

RANK_ENTRY = Path(__file__).resolve().parent.parent / "launch" / "rank.py"
# set by `w2s` for the ranks it launches after its preflight passed (they skip repeating it)
PREFLIGHT_PASSED_ENV = "W2S_PREFLIGHT_PASSED"


def in_rank() -> bool:
    """Whether a launcher (torchrun, deepspeed, a Slurm node) started this process as a rank."""
    return "WORLD_SIZE" in os.environ


def launch(args: argparse.Namespace, launch_cfg: LaunchConfig, preflight: Callable[[int], None],
           work: Callable[[], None]) -> int:
    """Run `work` on every rank of this command, after `preflight(world_size)` passed.

    `args` carries the command's --nproc / --launcher (None: the config's) and what the ranks are
    given again (see rank_args)."""
    launcher = args.launcher or launch_cfg.launcher
    nproc = args.nproc or launch_cfg.nproc  # --nproc is >= 1 when given (cli_args.positive_int)
    if not in_rank():
        check_environment(nproc)  # caches it writes, the devices it names
        preflight(nproc)
        check_launcher(launcher, nproc)
        if launcher != "none":
            return relaunch(args, launcher, nproc)
    elif os.environ.get(PREFLIGHT_PASSED_ENV) != "1":
        check_environment(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        preflight(dist.world_size())
    return run_until_stopped(work)


def check_launcher(launcher: str, nproc: int) -> None:
    """Several ranks on this machine need a launcher to start them."""
    if launcher == "none" and nproc > 1:
        raise ConfigError(f"launch.nproc: {nproc} ranks need a launcher; "
                          f"set launch.launcher to torchrun or deepspeed")


def rank_args(args: argparse.Namespace) -> list[str]:
    """The command each rank runs. Launcher options (--nproc, --launcher) are left out: the
    launchers' own parsers match abbreviations and would take them for theirs."""
    forwarded = [args.command, f"--config={Path(args.config).resolve()}"]
    forwarded += [f"--set={o}" for o in args.overrides]
    if getattr(args, "run", None):  # `w2s run`: which run of the sweep (its key); not spelt
        forwarded.append(f"--run-key={args.run}")  # --run, which torchrun takes for --run-path
    return forwarded + (["--redo"] if getattr(args, "redo", False) else [])


def relaunch(args: argparse.Namespace, launcher: str, nproc: int) -> int:
    """Start `nproc` ranks of this command under `launcher` and wait for them; the exit status
    is the run's (75 for a checkpointed stop), not the launcher's."""
    port = str(dist.free_port())
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", port]
    else:
        ds_bin = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
        cmd = [ds_bin, "--num_gpus", str(nproc), "--master_port", port]
    cmd += [str(RANK_ENTRY), *rank_args(args)]
    # the launchers report any non-zero rank exit as their own failure (1): rank 0 leaves the
    # run's outcome here so a checkpointed stop still exits 75 and can be told from a crash
    status_file = Path(tempfile.mkstemp(prefix="w2s-status-")[1])
    threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env = {**os.environ, STATUS_ENV: str(status_file), PREFLIGHT_PASSED_ENV: "1",
           "OMP_NUM_THREADS": threads}
    # The launcher (torchrun, deepspeed) inherits SIGUSR1 ignored, so a preemption warning sent
    # to every process (as Slurm does) stops the ranks, which checkpoint, and not the launcher,
    # which would die of it; the ranks install their own handler (engine.StopFlag).
    child = subprocess.Popen(cmd, env=env, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGUSR1, signal.SIG_IGN))
    requested: list[str] = []      # the stop signals received, in order
    exited = threading.Event()

    def signal_ranks(sent: int) -> None:
        # the launchers start ranks in process groups of their own: each process is signalled
        for pid in [child.pid, *descendants(child.pid)]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sent)

    def resend() -> None:
        while not exited.wait(RESEND_EVERY_S):
            signal_ranks(signal.SIGUSR1)

    def forward(signum, _frame):
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and requested:  # a second Ctrl-C: now, without a checkpoint
            requested.append(name)
            signal_ranks(signal.SIGKILL)
            return
        # SIGTERM and SIGINT mean "stop soon" too: every request reaches the ranks as SIGUSR1,
        # which the launcher ignores (it would kill its ranks on SIGTERM, and print a traceback
        # on SIGINT), with the name of the signal received beside the status file
        record_signal(status_file, name)
        signal_ranks(signal.SIGUSR1)
        if not requested:
            threading.Thread(target=resend, daemon=True, name="w2s-stop-resend").start()
        requested.append(name)

    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    code, failure = watch_ranks(child, status_file, dist.collective_timeout_s())
    exited.set()
    outcome = status_file.read_text().strip()
    status_file.unlink(missing_ok=True)
    if requested.count("SIGINT") > 1 and outcome != "stopped":
        print("w2s: interrupted by a second SIGINT: the ranks were stopped at once, without a "
              "checkpoint; rerun the same command to resume from the last one", file=sys.stderr,
              flush=True)
        return EXIT_INTERRUPTED
    if outcome == "stopped":
        return EXIT_STOPPED
    if code != 0 and failure:
        print(f"w2s: error: {failure}", file=sys.stderr, flush=True)
    return code


def run_until_stopped(work: Callable[[], None]) -> int:
    """Join the process group and call `work()` on this rank. A stop signal ends it with a
    checkpoint: exit 75, and rank 0 says so in one line naming the signal. Under a launcher
    that `w2s` or launch/slurm_node.py started (processes.STATUS_ENV set), each node's first
    rank tells that process "stopped" and the ranks exit 0, so that the launcher, which takes
    any non-zero exit for a failure, prints no traceback; the process above exits 75."""
    with StopFlag():  # a stop while a run loads or predicts is kept for the next step boundary
        return _run_rank(work)


def _run_rank(work: Callable[[], None]) -> int:
    dist.init()
    beacon = rank_beacon(dist.rank())  # what this rank is doing, for the parent (watch_ranks)
    beating = heartbeat(beacon, dist.collective_timeout_s()) if beacon else None
    status = os.environ.get(STATUS_ENV)
    try:
        work()
        code = 0
    except RunStopped as stop:
        if dist.is_main():
            print(f"w2s: {stop}", file=sys.stderr, flush=True)
        if status and dist.local_rank() == 0:
            Path(status).write_text("stopped")
        code = 0 if status else EXIT_STOPPED
    except KeyboardInterrupt:  # a second Ctrl-C on a rank of its own: now, no checkpoint
        if beacon:
            beacon.write_text(f"{os.getpid()} reported")
        if dist.is_main():
            print("w2s: interrupted by a second SIGINT: stopped at once, without a checkpoint; "
                  "rerun the same command to resume from the last one", file=sys.stderr, flush=True)
        dist.shutdown(clean=False)
        return EXIT_INTERRUPTED
    except BaseException as err:
        if beacon and isinstance(err, UserError):  # those the rank reports itself
            beacon.write_text(f"{os.getpid()} reported")
        elif beacon:
            reason = (str(err).strip().splitlines() or [""])[0][:300]
            beacon.write_text(f"{os.getpid()} failed {type(err).__name__}: {reason}")
        raise
    dist.shutdown(clean=True)  # every rank finished or stopped at the same step
    if beacon:
        beating.set()
        beacon.write_text(f"{os.getpid()} done")
    return code
