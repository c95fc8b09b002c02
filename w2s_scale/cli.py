"""The `w2s` command.

`w2s experiment --config X.yaml` validates everything it can first (config, data, DeepSpeed
config, model configs) in one process, then, if more than one rank is asked for, starts them
with torchrun or the deepspeed launcher on launch/rank.py, which comes back here on every rank.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Optional

from w2s_scale import distributed as dist
from w2s_scale.config import ConfigError, ExperimentConfig, load_config
from w2s_scale.errors import UserError
from w2s_scale.preflight import positive_int, preflight  # noqa: F401 - preflight: cli.preflight
from w2s_scale.processes import (EXIT_STOPPED, STATUS_ENV, descendants, heartbeat, rank_beacon,
                                 watch_ranks)

# every user mistake is a UserError (w2s_scale/errors.py): config, data, results, tracking...
USER_ERRORS = (UserError,)
EXIT_USER_ERROR = 2
MESSAGE_LIMIT = 600  # characters of one error line; values inside are already cut (errors.shorten)
RANK_ENTRY = Path(__file__).resolve().parent.parent / "launch" / "rank.py"


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error line: usage, then one `w2s: error:` line, exit 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USER_ERROR, f"w2s: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="w2s", description="weak-to-strong experiments on DeepSpeed")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_config_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", required=True, help="experiment YAML")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set train.lr=1e-4 (repeatable)")

    exp = sub.add_parser("experiment", help="run one weak-to-strong experiment (all stages)")
    add_config_args(exp)
    exp.add_argument("--nproc", type=positive_int, help="ranks on this machine (default: launch.nproc)")
    exp.add_argument("--launcher", choices=["none", "torchrun", "deepspeed"],
                     help="how to start the ranks (default: launch.launcher)")
    exp.add_argument("--redo", action="store_true", help="redo runs that are already complete")
    exp.add_argument("--dry-run", action="store_true",
                     help="print the runs and the resolved settings (lr, dtype, clipping, batch "
                          "order, loss parameters, ...) and stop; loads no model")

    summ = sub.add_parser("summary", help="print and save the summary of finished runs")
    add_config_args(summ)

    from w2s_scale.memory import add_plan_args

    plan = sub.add_parser("plan", help="per-GPU memory of each model on a cluster shape, and "
                                       "whether it fits (no GPU needed)")
    add_config_args(plan)
    add_plan_args(plan)

    from w2s_scale.sweep_cli import add_commands as add_sweep_commands

    add_sweep_commands(sub, add_config_args)  # sweep, run, status, report
    sub.add_parser("datasets", help="list the dataset registry: name, source, task family, "
                                    "formulation, train/test sizes")
    return parser


def _rank_args(args: argparse.Namespace) -> list[str]:
    """The command each rank runs. Launcher options (--nproc, --launcher) are left out: the
    launchers' own parsers match abbreviations and would take them for theirs."""
    forwarded = [args.command, f"--config={Path(args.config).resolve()}"]
    forwarded += [f"--set={o}" for o in args.overrides]
    if getattr(args, "run", None):  # `w2s run`: which run of the sweep (its key); not spelt
        forwarded.append(f"--run-key={args.run}")  # --run, which torchrun takes for --run-path
    return forwarded + (["--redo"] if getattr(args, "redo", False) else [])


def _relaunch(args: argparse.Namespace, launcher: str, nproc: int) -> int:
    port = str(dist._free_port())
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", port]
    else:
        ds_bin = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
        cmd = [ds_bin, "--num_gpus", str(nproc), "--master_port", port]
    cmd += [str(RANK_ENTRY), *_rank_args(args)]
    # the launchers report any non-zero rank exit as their own failure (1): rank 0 leaves the
    # run's outcome here so a checkpointed stop still exits 75 and can be told from a crash
    status_file = Path(tempfile.mkstemp(prefix="w2s-status-")[1])
    env = {**os.environ, STATUS_ENV: str(status_file), PREFLIGHT_PASSED_ENV: "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(
        max(1, (os.cpu_count() or 1) // nproc)))}
    # The launcher (torchrun, deepspeed) inherits SIGUSR1 ignored, so a preemption warning sent
    # to every process (as Slurm does) stops the ranks, which checkpoint, and not the launcher,
    # which would die of it; the ranks install their own handler (engine.StopFlag).
    child = subprocess.Popen(cmd, env=env, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGUSR1, signal.SIG_IGN))

    def forward(signum, _frame):
        # SIGTERM means "stop soon" too: the ranks get SIGUSR1, checkpoint and exit 75. The
        # launchers start ranks in process groups of their own, so each process is signalled.
        sent = signal.SIGUSR1 if signum == signal.SIGTERM else signum
        for pid in [child.pid, *descendants(child.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sent)

    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    code, failure = watch_ranks(child, status_file, dist.collective_timeout_s())
    outcome = status_file.read_text().strip()
    status_file.unlink(missing_ok=True)
    if outcome == "stopped":
        return EXIT_STOPPED
    if code != 0 and failure:
        print(f"w2s: error: {failure}", file=sys.stderr, flush=True)
    return code


# set by `w2s` for the ranks it launches after its preflight passed (they skip repeating it)
PREFLIGHT_PASSED_ENV = "W2S_PREFLIGHT_PASSED"


def main(argv: Optional[list[str]] = None) -> int:
    """The `w2s` command. A process that ran a rank does not return: it ends in
    distributed.exit_process (why: see there), with this exit status."""
    try:
        code = _command(argv)
    except BaseException:
        if not dist.has_joined():
            raise  # the parent process or a check before any rank: Python reports it
        traceback.print_exc()
        code = 1
    finally:
        dist.shutdown(clean=False)  # after an error; a finished rank has left already
    if dist.has_joined():
        dist.exit_process(code)
    return code


def _command(argv: Optional[list[str]]) -> int:
    # DeepSpeed's ZeRO still calls collectives that torch marks deprecated, once per step
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    warnings.filterwarnings("ignore", message=r".*is deprecated\. Please use `torch\.distributed")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    in_rank = "WORLD_SIZE" in os.environ
    try:
        from w2s_scale import sweep_cli

        if args.command in sweep_cli.COMMANDS:
            return sweep_cli.main(args, in_rank)
        if args.command == "datasets":
            from w2s_scale.data.registry import registry_table

            print(registry_table())
            return 0
        if args.command == "plan":  # sweep or experiment YAMLs alike
            from w2s_scale.memory import plan_command

            return plan_command(args)
        if args.command == "experiment" and args.dry_run:
            return _dry_run(args)
        cfg = load_config(args.config, args.overrides)
        dist.export_collective_timeout(cfg.launch.collective_timeout_s)
        if args.command == "summary":
            from w2s_scale.pipeline import plan_experiment
            from w2s_scale.report import summarize, unfinished_runs, write_summary

            plans = plan_experiment(cfg)
            write_summary(summarize(plans), Path(cfg.results_dir) / cfg.name)
            lacking = unfinished_runs(plans)
            if lacking:
                print(lacking, flush=True)
            return 0
        launcher = args.launcher or cfg.launch.launcher
        nproc = args.nproc or cfg.launch.nproc  # --nproc is >= 1 when given (positive_int)
        if not in_rank:
            preflight(cfg, nproc)
            if launcher != "none":
                return _relaunch(args, launcher, nproc)
            if nproc > 1:
                raise ConfigError(f"launch.nproc: {nproc} ranks need a launcher; "
                                  f"set launch.launcher to torchrun or deepspeed")
        elif os.environ.get(PREFLIGHT_PASSED_ENV) != "1":
            # ranks started by torchrun, the deepspeed launcher or a Slurm node themselves (not
            # by `w2s`, whose own preflight passed): the same checks on every rank, before any
            # collective, so a mistake stops each rank alone with the same one line from rank 0
            preflight(cfg, dist.world_size())
        return _run_in_rank(cfg, args)
    except USER_ERRORS as err:
        if dist.is_main():
            message = " ".join(str(err).split())  # one line, whatever the message holds
            if len(message) > MESSAGE_LIMIT:
                message = message[:MESSAGE_LIMIT - 1] + "…"
            print(f"w2s: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR


def run_until_stopped(work) -> int:
    """Join the process group and call `work()` on this rank. A stop signal ends it with a
    checkpoint: exit 75, and rank 0 tells the parent process so (see processes.STATUS_ENV)."""
    from w2s_scale.engine import RunStopped

    dist.init()
    beacon = rank_beacon(dist.rank())  # what this rank is doing, for the parent (watch_ranks)
    beating = heartbeat(beacon, dist.collective_timeout_s()) if beacon else None
    try:
        work()
        code = 0
    except RunStopped as stop:
        if dist.is_main():
            print(f"w2s: {stop}", file=sys.stderr, flush=True)
            if os.environ.get(STATUS_ENV):
                Path(os.environ[STATUS_ENV]).write_text("stopped")
        code = EXIT_STOPPED
    except BaseException as err:
        if beacon and isinstance(err, USER_ERRORS):  # those the rank reports itself
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


def _dry_run(args: argparse.Namespace) -> int:
    """`w2s experiment --dry-run`: an experiment YAML read as the sweep of its two models (a
    sweep YAML, such as configs/reference/*.yaml, as itself)."""
    from w2s_scale.sweep import load_sweep, plan_sweep
    from w2s_scale.sweep_cli import dry_run_text

    sweep = load_sweep(args.config, args.overrides)
    runs = plan_sweep(sweep)
    print("runs: " + ", ".join(run.key for run in runs))
    print(dry_run_text(sweep, runs, args), flush=True)
    return 0


def _run_in_rank(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from w2s_scale.pipeline import run_experiment

    return run_until_stopped(lambda: run_experiment(cfg, redo=args.redo))


if __name__ == "__main__":
    sys.exit(main())
