"""The `w2s` command: parse, dispatch, and turn a user's mistake into one line and exit 2.

`w2s experiment --config X.yaml` validates everything it can first (config, data, DeepSpeed
config, model configs) in one process, then, if more than one rank is asked for, starts them
with torchrun or the deepspeed launcher on launch/rank.py, which comes back here on every rank
(w2s_scale/launching.py). The sweep commands (sweep, run, status, report) are sweep_cli.py.
"""
from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from pathlib import Path
from typing import Optional

from w2s_scale import distributed as dist
from w2s_scale import sweep_cli
from w2s_scale.cli_args import (EXIT_USER_ERROR, Parser, add_config_args, add_launch_args)
from w2s_scale.data.sources import registry_table
from w2s_scale.errors import UserError
from w2s_scale.launching import in_rank, launch
from w2s_scale.loading import load_config, load_sweep
from w2s_scale.memory import add_plan_args, plan_command
from w2s_scale.pipeline import run_experiment
from w2s_scale.planning import plan_experiment
from w2s_scale.preflight import preflight
from w2s_scale.processes import EXIT_INTERRUPTED
from w2s_scale.report import summarize, unfinished_runs, write_summary
from w2s_scale.service import commands as service_commands
from w2s_scale.sweep import plan_sweep

MESSAGE_LIMIT = 600  # characters of one error line; values inside are already cut (errors.shorten)


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="w2s", description="weak-to-strong experiments on DeepSpeed")
    sub = parser.add_subparsers(dest="command", required=True)

    exp = sub.add_parser("experiment", help="run one weak-to-strong experiment (all stages)")
    add_config_args(exp)
    add_launch_args(exp)
    exp.add_argument("--redo", action="store_true", help="redo runs that are already complete")
    exp.add_argument("--dry-run", action="store_true",
                     help="print the runs and the resolved settings (lr, dtype, clipping, batch "
                          "order, loss parameters, ...) and stop; loads no model")

    summ = sub.add_parser("summary", help="print and save the summary of finished runs")
    add_config_args(summ)

    plan = sub.add_parser("plan", help="per-GPU memory of each model on a cluster shape, and "
                                       "whether it fits (no GPU needed)")
    add_config_args(plan)
    add_plan_args(plan)

    sweep_cli.add_commands(sub)  # sweep, run, status, report
    service_commands.add_commands(sub)  # serve, submit: the evaluation service (docs/isolation.md)
    sub.add_parser("datasets", help="list the dataset registry: name, source, task family, "
                                    "formulation, train/test sizes")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """The `w2s` command. A process that ran a rank does not return: it ends in
    distributed.exit_process (why: see there), with this exit status."""
    try:
        code = _command(argv)
    except KeyboardInterrupt:  # Ctrl-C outside training (checks, loading): nothing to save
        print("w2s: interrupted by SIGINT before training: nothing was written since the last "
              "checkpoint; rerun the same command to resume", file=sys.stderr, flush=True)
        code = EXIT_INTERRUPTED
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
    try:
        return _dispatch(args)
    except UserError as err:  # every user mistake (w2s_scale/errors.py): config, data, results...
        if dist.is_main():
            message = " ".join(str(err).split())  # one line, whatever the message holds
            if len(message) > MESSAGE_LIMIT:
                message = message[:MESSAGE_LIMIT - 1] + "…"
            print(f"w2s: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in sweep_cli.COMMANDS:
        return sweep_cli.main(args, in_rank())
    if args.command in service_commands.COMMANDS:
        return service_commands.main(args)
    if args.command == "datasets":
        print(registry_table())
        return 0
    if args.command == "plan":  # sweep or experiment YAMLs alike
        return plan_command(args)
    if args.command == "experiment" and args.dry_run:
        return _dry_run(args)
    cfg = load_config(args.config, args.overrides)
    dist.export_collective_timeout(cfg.launch.collective_timeout_s)
    if args.command == "summary":
        plans = plan_experiment(cfg)
        write_summary(summarize(plans), Path(cfg.results_dir) / cfg.name)
        lacking = unfinished_runs(plans)
        if lacking:
            print(lacking, flush=True)
        return 0
    return launch(args, cfg.launch, preflight=lambda world: preflight(cfg, world),
                  work=lambda: run_experiment(cfg, redo=args.redo))


def _dry_run(args: argparse.Namespace) -> int:
    """`w2s experiment --dry-run`: an experiment YAML read as the sweep of its two models (a
    sweep YAML, such as configs/reference/*.yaml, as itself)."""
    sweep = load_sweep(args.config, args.overrides)
    runs = plan_sweep(sweep)
    print("runs: " + ", ".join(run.key for run in runs))
    print(sweep_cli.dry_run_text(sweep, runs, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
