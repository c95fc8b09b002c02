"""Per-node launcher for multi-node jobs: `srun` starts one of these on every node of the
allocation (one task per node), and each starts the ranks of its node.

    srun --ntasks-per-node=1 python launch/slurm_node.py [--launcher torchrun|deepspeed|none]
         [--nproc-per-node N] [--rdzv c10d|static] -- <w2s arguments, e.g. run --config X --run Y>

Everything else comes from Slurm's environment: the number of nodes (SLURM_JOB_NUM_NODES), this
node's index (SLURM_NODEID), the node list (SLURM_JOB_NODELIST: the first node hosts the
rendezvous) and the job id (the rendezvous port and id; see w2s_scale.slurm.master_addr_port).

  torchrun   --rdzv c10d (default): torchrun's own rendezvous at <first node>:<port>, id = job id
             --rdzv static: --node_rank=$SLURM_NODEID --master_addr/--master_port
  deepspeed  the deepspeed launcher with a hostfile built from the allocation ("host slots=N"),
             started on every node with --no_ssh --node_rank=$SLURM_NODEID (no ssh/pdsh needed)
  none       one node, one rank: the rank itself, no launcher

A rank of this node that dies, fails or stops responding (see w2s_scale.processes.watch_ranks) is
named in one `w2s: error: rank N ...` line on this node's stderr.

Stopping: SIGUSR1 (`#SBATCH --signal=USR1@T`, `scancel --signal=USR1`), SIGTERM or SIGINT asks the ranks
to checkpoint at the next step boundary and exit. The launchers would not pass it on (torchrun
dies of SIGUSR1, both kill their workers on SIGTERM), so they start with SIGUSR1 ignored and the
request is sent as SIGUSR1 to every process under them, again every few seconds until they exit
(a request that comes while the ranks still load is not lost), with the name of the signal
received beside the status file, which the ranks' line names. A second SIGINT kills the ranks
at once (no checkpoint; the last one stays). Exit code 75 then means "stopped
after a checkpoint; run the same command again (slurm/run.sbatch requeues the job) to resume".
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # a source checkout works without installing

from w2s_scale import slurm  # noqa: E402
from w2s_scale.processes import (EXIT_STOPPED, STATUS_ENV, descendants, record_signal,  # noqa: E402
                                 watch_ranks)

RANK_ENTRY = REPO / "launch" / "rank.py"
RESEND_EVERY_S = 3.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slurm_node.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--launcher", choices=["torchrun", "deepspeed", "none"],
                   default=os.environ.get("W2S_LAUNCHER") or "torchrun")
    p.add_argument("--nproc-per-node", type=int, default=None,
                   help="ranks per node (default: $W2S_NPROC_PER_NODE, else the GPUs Slurm "
                        "gave this node, else 1)")
    p.add_argument("--rdzv", choices=["c10d", "static"], default=os.environ.get("W2S_RDZV") or "c10d",
                   help="torchrun only: its c10d rendezvous, or fixed node ranks and master address")
    p.add_argument("w2s_args", nargs=argparse.REMAINDER, help="-- then the w2s arguments")
    return p


def ranks_per_node(explicit: int | None) -> int:
    if explicit:
        return explicit
    if os.environ.get("W2S_NPROC_PER_NODE"):
        return int(os.environ["W2S_NPROC_PER_NODE"])
    gpus = os.environ.get("SLURM_GPUS_ON_NODE", "").split(":")[-1]  # "4"; some sites: "gpu:4"
    return int(gpus) if gpus.isdigit() and int(gpus) > 0 else 1


def launcher_command(launcher: str, rdzv: str, nnodes: int, node_rank: int, nproc: int,
                     w2s_args: list[str], workdir: Path) -> list[str]:
    addr, port = slurm.master_addr_port()
    # the launchers' parsers take `--run` for their own --run-path: say --run-key, the same option
    w2s_args = ["--run-key" + a[len("--run"):] if a == "--run" or a.startswith("--run=") else a
                for a in w2s_args]
    entry = [str(RANK_ENTRY), *w2s_args]
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}",
               f"--nproc_per_node={nproc}"]
        if rdzv == "c10d":
            job = os.environ.get("SLURM_JOB_ID", "w2s")
            # the first node hosts the store; say so rather than have each node guess from its
            # addresses (emulated nodes on one machine would all claim it)
            cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint={addr}:{port}", f"--rdzv_id={job}",
                    f"--rdzv_conf=is_host={1 if node_rank == 0 else 0}"]
        else:
            cmd += [f"--node_rank={node_rank}", f"--master_addr={addr}", f"--master_port={port}"]
        return cmd + entry
    if launcher == "deepspeed":
        hosts = slurm.hostnames(os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST") or "")
        hosts = hosts or ["localhost"]  # outside an allocation: this machine
        if len(hosts) != nnodes:
            raise SystemExit(f"slurm_node.py: the node list {hosts} does not have {nnodes} nodes")
        hostfile = slurm.write_deepspeed_hostfile(workdir / "hostfile", hosts, nproc)
        ds_bin = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
        return [ds_bin, f"--hostfile={hostfile}", "--no_ssh", f"--node_rank={node_rank}",
                f"--master_addr={addr}", f"--master_port={port}", *entry]
    if nnodes * nproc != 1:
        raise SystemExit(f"slurm_node.py: --launcher none runs one rank, but the job has "
                         f"{nnodes} node(s) x {nproc} rank(s); use torchrun or deepspeed")
    return [sys.executable, *entry]


def say(message: str) -> None:
    node = os.environ.get("SLURM_NODEID", "0")
    print(f"[w2s-node {node}] {time.strftime('%H:%M:%S')} {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    w2s_args = args.w2s_args[1:] if args.w2s_args[:1] == ["--"] else args.w2s_args
    if not w2s_args:
        raise SystemExit("slurm_node.py: give the w2s arguments after --, e.g. -- run --config X --run Y")
    nnodes = int(os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES") or 1)
    node_rank = int(os.environ.get("SLURM_NODEID") or 0)
    nproc = ranks_per_node(args.nproc_per_node)
    workdir = Path(tempfile.mkdtemp(prefix="w2s-node-"))
    status_file = workdir / "status"
    env = {k: v for k, v in os.environ.items()  # a stale rank identity must not leak into the ranks
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")}
    env[STATUS_ENV] = str(status_file)
    # threads per rank from the CPUs Slurm gave this job on the node, not the node's count: a
    # node shared by several jobs is otherwise oversubscribed (OpenMP threads then spin-wait
    # for each other, and everything runs many times slower)
    cpus = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or ""
    cpus = int(cpus) if cpus.isdigit() else (os.cpu_count() or 1)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpus // nproc)))
    if args.launcher == "none":
        addr, port = slurm.master_addr_port()
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                   MASTER_ADDR=addr, MASTER_PORT=str(port))
    cmd = launcher_command(args.launcher, args.rdzv, nnodes, node_rank, nproc, w2s_args, workdir)
    say(f"node {node_rank + 1} of {nnodes} ({os.environ.get('SLURMD_NODENAME', 'this host')}), "
        f"{nproc} rank(s): {' '.join(cmd)}")
    # handlers first: a warning that comes while the launcher starts is kept for it
    child: subprocess.Popen | None = None
    exited = threading.Event()
    requested: list[str] = []

    def signal_ranks() -> None:
        if child is None:
            return
        for pid in descendants(child.pid) + ([child.pid] if args.launcher == "none" else []):
            try:
                os.kill(pid, signal.SIGUSR1)
            except (ProcessLookupError, PermissionError):
                pass

    def resend() -> None:
        while not exited.wait(RESEND_EVERY_S):
            signal_ranks()

    def on_stop(signum, _frame) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and requested and child is not None:
            # a second ^C: now, without a checkpoint (the launcher's own SIGINT handling would
            # print a traceback); the job resumes from the last checkpoint
            say("second SIGINT: stopping the ranks now, without a checkpoint")
            for pid in [child.pid, *descendants(child.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            return
        say(f"{name}: asking the ranks to checkpoint and stop")
        record_signal(status_file, name)  # the ranks name it, though SIGUSR1 carries it
        signal_ranks()
        if not requested:
            requested.append(name)
            threading.Thread(target=resend, daemon=True).start()

    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_stop)
    child = subprocess.Popen(cmd, env=env, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGUSR1, signal.SIG_IGN))
    # the ranks of this node say how they are doing (processes.rank_beacon): a rank of this node
    # that died or stopped responding is named in one line, and ends this node's part of the job
    rc, failure = watch_ranks(child, status_file)
    exited.set()
    stopped = status_file.exists() and status_file.read_text().strip() == "stopped"
    shutil.rmtree(workdir, ignore_errors=True)
    if stopped:
        say("the ranks stopped after a checkpoint (exit 75)")
        return EXIT_STOPPED
    say(f"launcher exited with {rc}")
    if rc != 0 and failure:
        print(f"w2s: error: {failure}", file=sys.stderr, flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
