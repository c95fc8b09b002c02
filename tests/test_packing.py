"""w2s_scale/packing.py: time limits from estimates (margin, floor, cap, whole minutes; a written
time kept) and runs packed into jobs by resources and depth; the paper suite's dry run in jobs."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from conftest import REPO, run_w2s
from w2s_scale import packing
from w2s_scale.config import Resources


def run(key, deps=(), **res):
    return SimpleNamespace(key=key, deps=tuple(deps), resources=Resources(**res))


def test_limits_from_estimates_margin_floor_cap_minutes():
    r = run("a")
    # 2 x 1 min + 10 min = 12 min: under the 15-minute floor
    assert packing.limit_s([r], {"a": 60.0}) == (900, True)
    # 2 x 1800.5 s + 600 s = 70 min 1 s: rounded up to whole minutes
    assert packing.limit_s([r], {"a": 1800.5}) == (70 * 60 + 60, True)
    assert packing.limit_s([r], {"a": 3 * 3600.0}) == (6 * 3600, False)  # capped by max_job_time
    assert packing.limit_s([r], {"a": None}) == (6 * 3600, True)         # no estimate: the cap
    written = run("b", time="00:20:00")
    assert packing.limit_s([written], {"b": 10.0}) == (1200, True)       # as written, no margin
    assert packing.limit_s([written, written], {"b": 10.0}) == (2400, True)
    long = run("c", time="2-00:00:00")
    assert packing.limit_s([long], {}) == (2 * 86400, False)             # theirs, above the cap
    assert packing.slurm_time(900) == "00:15:00" and packing.slurm_time(86400 + 61) == "1-00:02:00"
    assert packing.short_time(6 * 3600) == "6:00"


def test_packs_by_resources_and_depth_within_the_cap():
    gts = [run(f"gt{i}") for i in range(4)]
    big = run("gt-big", gpus_per_node=8)
    transfers = [run(f"t{i}", deps=[f"gt{i}"]) for i in range(4)]
    alone = run("t-alone", deps=["gt-big"], pack=False)
    est = {r.key: 20 * 60.0 for r in gts + transfers + [big, alone]}
    est["t3"] = 5 * 3600.0  # does not fit with the others: a job of its own
    jobs = packing.plan_jobs(gts + [big] + transfers + [alone], est)
    keys = [[r.key for r in j.runs] for j in jobs]
    assert keys == [["gt0", "gt1", "gt2", "gt3"], ["gt-big"], ["t0", "t1", "t2"], ["t3"], ["t-alone"]]
    assert [j.after for j in jobs] == [set(), set(), {0}, {0}, {1}]  # only on earlier jobs
    assert jobs[0].limit_s == (2 * 80 + 10) * 60  # the margin once on the sum: 2 x 80 min + 10
    assert jobs[3].limit_s == 6 * 3600
    line = packing.summary(jobs)
    assert line == "jobs: 5 (10 runs packed by resources into 2 shared jobs, limits 0:50-6:00)"


def test_resources_time_errors_name_the_field():
    with pytest.raises(ValueError, match="auto"):
        Resources(time="soon")
    with pytest.raises(ValueError, match="signal_before_s"):
        Resources(max_job_time="00:02:00", signal_before_s=300)


def test_paper_suite_dry_run_is_packed_jobs_with_limits():
    out = run_w2s(["sweep", "-c", str(REPO / "configs/paper_suite.yaml"), "--dry-run"],
                  env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    line = re.search(r"^jobs: ([\d,]+) \(3,234 runs packed by resources into [\d,]+ shared jobs, "
                     r"limits (\d+:\d\d)-(\d+:\d\d)\)$", out.stdout, re.M)
    assert line, out.stdout[-3000:]
    jobs = int(line.group(1).replace(",", ""))
    commands = [c for c in out.stdout.splitlines() if c.startswith("  sbatch ")]
    assert 20 <= jobs < 1000 and len(commands) == jobs
    assert all(re.search(r" --time=\d\d:\d\d:00 ", c) for c in commands)
    assert line.group(3) == "6:00"
