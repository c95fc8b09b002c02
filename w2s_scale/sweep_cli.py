"""The sweep commands of `w2s` (registered by cli.py):

  w2s sweep  -c S.yaml [--dry-run] [--executor local|slurm] [--wait]   plan, then run or submit
  w2s run    -c S.yaml --run KEY|NAME [--seed K] [--dataset D]        one run (what a job runs)
  w2s status -c S.yaml                                                 where every run stands
  w2s report -c S.yaml [--wandb-report]                                tables, scaling figures, W&B Report

An experiment YAML works wherever a sweep YAML does (the sweep of its two models). `w2s run`
starts its ranks like `w2s experiment` does (w2s_scale/launching.py).
"""
from __future__ import annotations

import argparse
import contextlib
import sys

from w2s_scale import costs
from w2s_scale import distributed as dist
from w2s_scale import executors as ex
from w2s_scale.catalogue import lookup
from w2s_scale.cli_args import add_config_args, add_launch_args, fraction, positive_float, positive_int
from w2s_scale.data.splits import make_splits
from w2s_scale.errors import ConfigError
from w2s_scale.launching import check_launcher, launch
from w2s_scale.loading import load_sweep
from w2s_scale.memory import format_table, plan_sweep_models
from w2s_scale.pipeline import execute
from w2s_scale.resolved import format_settings, resolved_settings
from w2s_scale.results import ResultsError
from w2s_scale.scaling import report
from w2s_scale.sweep import damage, disk_state, find_run, plan_sweep

COMMANDS = ("sweep", "run", "status", "report")


def add_commands(sub) -> None:
    sweep = sub.add_parser("sweep", help="a model-size sweep: plan the runs as a DAG, reuse the "
                                         "finished ones, run the rest locally or as Slurm jobs")
    add_config_args(sweep)
    sweep.add_argument("--dry-run", action="store_true",
                       help="print the plan (runs, dependencies, what is reused), the resolved "
                            "settings and the GPU-hours estimate, and stop")
    sweep.add_argument("--mfu", type=fraction, default=None,
                       help="dry run: assumed model-FLOPs utilisation (default 0.35)")
    sweep.add_argument("--cluster-gpus", type=positive_int, default=None,
                       help="dry run: H100s of the cluster to fit in (default 64)")
    sweep.add_argument("--cluster-hours", type=positive_float, default=None,
                       help="dry run: hours to fit in (default 48)")
    sweep.add_argument("--executor", choices=["local", "slurm"], help="default: the config's `executor`")
    add_launch_args(sweep, prefix="local executor: ")
    sweep.add_argument("--parallel", type=positive_int,
                       help="local executor: runs at once (default: launch.parallel)")
    sweep.add_argument("--sbatch", dest="sbatch_options", action="append", default=[], metavar="OPTION",
                       help="Slurm: an extra sbatch option for every job, e.g. --sbatch=--qos=high "
                            "(repeatable; per model: resources.sbatch)")
    sweep.add_argument("--redo", action="store_true",
                       help="redo every run, finished ones too (each replaces its finished "
                            "predecessor only once it is complete)")
    sweep.add_argument("--wait", action="store_true",
                       help="Slurm: wait for the jobs to end, then print the status and the summary")

    run = sub.add_parser("run", help="one run of a sweep (or experiment) in this process / job")
    add_config_args(run)
    run.add_argument("--run", "--run-key", dest="run", required=True,
                     help="the run's key (dataset/seed<k>/<name>) or name")
    run.add_argument("--seed", type=int, help="with a run name: its seed")
    run.add_argument("--dataset", help="with a run name: its dataset")
    add_launch_args(run)
    run.add_argument("--redo", action="store_true", help="redo the run even if it is complete")

    status = sub.add_parser("status", help="where every run of a sweep stands (done, queued, "
                                           "running, failed and why)")
    add_config_args(status)

    report = sub.add_parser("report", help="summary tables and scaling plots of a sweep")
    add_config_args(report)
    report.add_argument("--no-plots", action="store_true", help="tables only")
    report.add_argument("--wandb-report", action="store_true",
                        help="also build a W&B Report of the sweep (wandb-workspaces): published when "
                             "tracking.wandb is online, else saved as JSON with the command to publish it")


def main(args: argparse.Namespace, in_rank: bool) -> int:
    cfg = load_sweep(args.config, args.overrides)
    dist.export_collective_timeout(cfg.launch.collective_timeout_s)
    runs = plan_sweep(cfg)
    if args.command == "run":
        return _run(cfg, runs, args)
    if in_rank:
        raise ConfigError(f"w2s {args.command} starts its own processes; run it outside a launcher")
    if args.command == "sweep":
        return _sweep(cfg, runs, args)
    if args.command == "status":
        statuses = ex.sweep_status(cfg, runs)
        print(ex.format_status(cfg, statuses), flush=True)
        if all(s.state == "done" for s in statuses):
            return 0
        return 1 if any(s.failed for s in statuses) else 3
    report(cfg, runs, plots=not args.no_plots, wandb_report=args.wandb_report)
    return 0


def _sweep(cfg, runs, args) -> int:
    executor = args.executor or cfg.executor
    nproc = args.nproc or cfg.launch.nproc
    launcher = args.launcher or cfg.launch.launcher
    if executor == "slurm":
        world = lambda run: ex.slurm_world_size(cfg, run)  # noqa: E731
    else:
        world = lambda run: nproc  # noqa: E731
    print(ex.format_plan(cfg, runs, executor, world), flush=True)
    todo = [r for r in runs if args.redo or disk_state(r) != "done"]
    if args.dry_run:
        print(dry_run_text(cfg, runs, args), flush=True)
        if executor == "slurm" and todo:
            print("Slurm jobs (time limits from the estimate, w2s_scale/packing.py; new jobs' ids "
                  "shown as <jobN>):")
            ex.submit_slurm(cfg, runs, args.sbatch_options, dry_run=True, redo=args.redo)
        return 0
    if todo:
        if executor == "local":
            check_launcher(launcher, nproc)
        ex.preflight(cfg, todo, world, local=executor == "local")
    if executor == "local":
        parallel = args.parallel or cfg.launch.parallel
        ex.check_parallel(parallel, nproc)
        left = ex.execute_local(cfg, runs, launcher, nproc, redo=args.redo,
                                parallel=parallel) if todo else 0
        report(cfg, runs)
        if left:
            print(ex.format_status(cfg, ex.sweep_status(cfg, runs)), flush=True)
        return 0 if not left else 1
    ex.check_executor(executor)
    jobs = ex.submit_slurm(cfg, runs, args.sbatch_options, report_job=not args.wait, redo=args.redo)
    if not args.wait:
        print(f"[w2s] {len(set(jobs.values()))} job(s) queued or running; follow them with `w2s status -c "
              f"{args.config}`; `w2s report -c {args.config}` summarizes what has finished", flush=True)
        return 0
    ex.wait_slurm(jobs.values())
    statuses = ex.sweep_status(cfg, runs)
    print(ex.format_status(cfg, statuses), flush=True)
    report(cfg, runs)
    return 0 if all(s.state == "done" for s in statuses) else 1


def dry_run_text(cfg, runs, args) -> str:
    """The resolved settings and the compute estimate (also `w2s experiment --dry-run`)."""
    def given(name, default):
        value = getattr(args, name, None)
        return default if value is None else value

    parts = [format_settings(resolved_settings(cfg)), costs.format_costs(
        cfg, runs, mfu=given("mfu", costs.DEFAULT_MFU),
        cluster_gpus=given("cluster_gpus", costs.DEFAULT_CLUSTER_GPUS),
        cluster_hours=given("cluster_hours", costs.DEFAULT_CLUSTER_HOURS))]
    # GPU ladders (every model in the catalogue, whose shapes are known offline): the memory plan
    # of each model on its own Slurm request, as `w2s plan` prints it
    if all(lookup(m.name) is not None for m in cfg.models):
        with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed's estimators log as they load
            plans = plan_sweep_models(cfg)
        parts.append("memory per GPU (w2s plan):\n" + format_table(plans))
    # a dry run reads no data and asks the hub for nothing: say what stays unchecked
    parts.append("not checked by a dry run: the data files (data.path), the model hub, the "
                 "launcher and GPUs; `w2s sweep` without --dry-run checks them (preflight) "
                 "before anything starts")
    return "\n".join(parts)


def _run(cfg, runs, args) -> int:
    """`w2s run`: one run of the sweep, its ranks started (and preflight run on each) as
    `w2s experiment` does."""
    run = find_run(runs, args.run, args.seed, args.dataset)
    by_key = {r.key: r for r in runs}
    for dep in run.deps:
        state = disk_state(by_key[dep])
        if state == "damaged":
            raise ResultsError(f"{run.key} trains on the weak labels of {dep}, whose files changed "
                               f"since it finished ({damage(by_key[dep])}); redo it first "
                               f"(w2s run --run {dep})")
        if state != "done":
            raise ResultsError(f"{run.key} trains on the weak labels of {dep}, which has not "
                               f"finished; run it first (w2s run --run {dep})")
    args.run, args.seed, args.dataset = run.key, None, None  # what the ranks are given
    return launch(args, cfg.launch, preflight=lambda world: ex.preflight(cfg, [run], lambda _run: world),
                  work=lambda: execute(run.experiment, run.plan, make_splits(run.experiment.data, run.seed),
                                       redo=args.redo))
