"""The Slurm jobs of a sweep: each job's time limit from the sweep's own cost estimate, and short
runs packed into shared jobs. Pure planning: executors.py submits what this returns.

Time limits (resources.time: auto, the default). A run is allowed MARGIN x its estimate (costs.py:
its compute at the assumed MFU plus the job's start-up) + EXTRA_S, at least FLOOR_S (and EXTRA_S
more than signal_before_s), rounded up to whole minutes, at most resources.max_job_time. Short
limits backfill: a scheduler starts a job in a gap of its plan only if the job's limit ends before
the gap does, so a 20-minute run asking for 24 hours waits behind every reservation. A run that
outgrows its limit is not lost: the stop signal before the limit makes it checkpoint and its job
requeues (slurm/run.sbatch, slurm/pack.sbatch), resuming from the checkpoint. A run without an
estimate (a model not in the catalogue) is allowed max_job_time. A time written in the config is
each run's allowance as given.

Packs (resources.pack: true, the default). Clusters cap the jobs a user may queue, and every job
pays the scheduler's latency, so runs that ask for the same resources share one job, run one
after another by slurm/pack.sbatch (`w2s run` for each). A pack asks MARGIN x the sum of its
runs' estimates + EXTRA_S (the margin once per job: the start-up each run pays is in its
estimate), or the sum of its runs' written times, and never more than max_job_time. A run joins
the newest pack of its resources and its depth (ground-truth runs 0, a run reading them 1, ...)
while that limit stays within max_job_time. The runs a run reads are done, already queued, or in
jobs of a lower depth, submitted before its own (afterok): no cycle, and with unlimited GPUs the
sweep takes one pack per depth, not a chain of packs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from w2s_scale.config import slurm_seconds
from w2s_scale.sweep import SweepRun

AUTO = "auto"
MARGIN = 2.0        # estimates are estimates: tokens per example and MFU are assumed (costs.py)
EXTRA_S = 600       # per job, for what the estimate leaves out: queue-to-start, a slow filesystem
FLOOR_S = 900       # the shortest limit asked for: a few minutes of slack costs nothing to backfill


@dataclass
class Job:
    """One Slurm job: its runs in the order they run, its time limit, the indices of the earlier
    jobs (of the same plan) whose runs it reads."""
    runs: list[SweepRun]
    limit_s: int
    after: set[int] = field(default_factory=set)

    @property
    def packed(self) -> bool:
        return len(self.runs) > 1


def cap_s(run: SweepRun) -> int:
    """The longest limit this run's jobs may ask for (0: no cap, max_job_time UNLIMITED)."""
    return slurm_seconds(run.resources.max_job_time) or 0


def _minutes(seconds: float) -> int:
    return int(math.ceil(seconds / 60.0 - 1e-9)) * 60


def limit_s(runs: Sequence[SweepRun], estimates: Mapping[str, Optional[float]]) -> tuple[int, bool]:
    """(the time limit of a job of these runs, whether it fits max_job_time uncapped). All runs
    share their resources (time, max_job_time, signal_before_s)."""
    res, cap = runs[0].resources, cap_s(runs[0])
    if res.time != AUTO:
        wanted = len(runs) * (slurm_seconds(res.time) or 0)
        if not wanted:  # UNLIMITED as written
            return 0, len(runs) == 1
        return (wanted if len(runs) == 1 else min(wanted, cap or wanted)), not cap or wanted <= cap
    if any(estimates.get(r.key) is None for r in runs):
        return cap, len(runs) == 1  # no estimate: the cap, alone
    floor = max(FLOOR_S, res.signal_before_s + EXTRA_S)
    wanted = max(floor, _minutes(MARGIN * sum(estimates[r.key] for r in runs) + EXTRA_S))
    return (min(wanted, cap) if cap else wanted), not cap or wanted <= cap


def plan_jobs(todo: Sequence[SweepRun], estimates: Mapping[str, Optional[float]]) -> list[Job]:
    """The jobs of the runs to submit (`todo`, each after the runs it reads, as plan_sweep lists
    them). A run's dependency outside `todo` is done or queued already: it constrains nothing."""
    jobs: list[Job] = []
    job_of: dict[str, int] = {}
    depth: dict[str, int] = {}
    newest: dict[tuple[str, int], int] = {}  # (resources as JSON, depth) -> the newest such pack
    for run in todo:
        # runs of one depth never read each other, and a job of depth k waits only on jobs of
        # lower depths: packs of ground-truth runs start at once, side by side, and the sweep's
        # critical path stays one pack per level (packing a run with the runs it reads would
        # chain every ladder through a few long jobs)
        depth[run.key] = 1 + max((depth[d] for d in run.deps if d in depth), default=-1)
        after = {job_of[d] for d in run.deps if d in job_of}
        group = (run.resources.model_dump_json(), depth[run.key])
        index = newest.get(group) if run.resources.pack else None
        if index is not None:
            runs = jobs[index].runs + [run]
            limit, fits = limit_s(runs, estimates)
            if fits:
                jobs[index].runs, jobs[index].limit_s = runs, limit
                jobs[index].after |= after
                job_of[run.key] = index
                continue
        jobs.append(Job([run], limit_s([run], estimates)[0], after))
        job_of[run.key] = newest[group] = len(jobs) - 1
    # submitted by depth, so that the jobs a job waits on have ids when it is submitted
    order = sorted(range(len(jobs)), key=lambda i: depth[jobs[i].runs[0].key])
    new_index = {old: new for new, old in enumerate(order)}
    for job in jobs:
        job.after = {new_index[i] for i in job.after}
    return [jobs[i] for i in order]


def slurm_time(seconds: int) -> str:
    """A limit as sbatch's --time takes it: HH:MM:00, D-HH:MM:00 from a day on; UNLIMITED for 0."""
    if not seconds:
        return "UNLIMITED"
    minutes = _minutes(seconds) // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{days}-" if days else "") + f"{hours:02d}:{minutes:02d}:00"


def short_time(seconds: int) -> str:
    """H:MM for the summary line (UNLIMITED for 0)."""
    if not seconds:
        return "UNLIMITED"
    minutes = _minutes(seconds) // 60
    return f"{minutes // 60}:{minutes % 60:02d}"


def summary(jobs: Sequence[Job]) -> str:
    """One line: how many jobs, how many runs, the range of their limits."""
    n_runs = sum(len(j.runs) for j in jobs)
    if not jobs:
        return "jobs: 0 (nothing to submit)"
    limits = [j.limit_s for j in jobs]
    low, high = min(limits, key=lambda s: s or math.inf), max(limits, key=lambda s: s or math.inf)
    span = short_time(low) if low == high else f"{short_time(low)}-{short_time(high)}"
    packed = sum(j.packed for j in jobs)
    how = (f"{n_runs:,} runs packed by resources into {packed:,} shared jobs" if packed else
           f"{n_runs:,} runs, one job each")
    return f"jobs: {len(jobs):,} ({how}, limits {span})"
