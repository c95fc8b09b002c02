"""`w2s sweep --executor slurm` on the real two-node test cluster (tests/slurm_cluster): a sweep of
tiny models submitted as dependent jobs. A ground-truth run that fails takes its dependants down
with it (cancelled, not pending forever); `w2s status` says what failed and why; rerunning the
sweep resubmits only what is missing; the summary (from the report job, and at the end of
`--wait`) matches the runs' own metrics."""
from __future__ import annotations

import json
import re
import time
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import run_w2s, tiny_config, write_config  # noqa: E402

WEAK, STRONG = "gpt2-weak", "gpt2-strong"


def sweep_config(root: Path, models: dict, data: Path, pack: bool = False) -> Path:
    base = tiny_config(root / "results", models, data)
    cfg = {k: base[k] for k in ("results_dir", "data", "train", "tracking")}
    cfg["data"]["n_train"] = 320
    cfg["train"].update(epochs=2, lr=3e-3, zero_stage=0)
    cfg.update(name="sweep", seeds=[0], losses=["xent"], executor="slurm",
               models=[{"name": str(models[WEAK]), "label": WEAK},
                       {"name": str(models[STRONG]), "label": STRONG}],
               resources={"time": "00:10:00", "pack": pack})
    return write_config(root / "sweep.yaml", cfg)


def jobs_submitted(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"\[w2s\] (\S+): job (\d+)", stdout))


def test_sweep_of_dependent_jobs_failure_status_resubmit_summary(slurm_cluster, tiny_models,
                                                                   tiny_data, tmp_path):
    env = slurm_cluster.env
    config = sweep_config(tmp_path, tiny_models, tiny_data)
    seed_dir = tmp_path / "results" / "sweep" / "jsonl" / "seed0"
    # the weak model's gt run cannot create its folder: its job fails, like a crashed run
    blocker = seed_dir / f"gt-{WEAK}"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")

    first = run_w2s(["sweep", "-c", str(config)], env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    print(first.stdout)
    jobs = jobs_submitted(first.stdout)
    assert len(jobs) == 5  # 2 gt runs, 3 transfer runs (weak <= strong)
    report_job = re.search(r"summary and plots: job (\d+)", first.stdout).group(1)
    info = slurm_cluster.wait(report_job, timeout=300)  # runs once every job has ended
    assert info.ok, (tmp_path / "results/sweep/sweep/logs").glob("report.*")

    status = run_w2s(["status", "-c", str(config)], env=env)
    print(status.stdout)
    assert status.returncode == 1, status.stdout + status.stderr
    lines = {line.split()[0]: line for line in status.stdout.splitlines()[1:-2]}
    failed = lines[f"jsonl/seed0/gt-{WEAK}"]
    assert " failed " in failed and f"job {jobs[f'jsonl/seed0/gt-{WEAK}']} failed" in failed
    assert "FileExistsError" in failed  # why, from the job's log
    for strong in (WEAK, STRONG):
        dependant = lines[f"jsonl/seed0/w2s-{WEAK}-to-{strong}-xent"]
        assert " cancelled " in dependant
        assert f"its dependency jsonl/seed0/gt-{WEAK} (job {jobs[f'jsonl/seed0/gt-{WEAK}']}) failed" in dependant
    assert " done" in lines[f"jsonl/seed0/gt-{STRONG}"]
    assert " done" in lines[f"jsonl/seed0/w2s-{STRONG}-to-{STRONG}-xent"]
    assert "2 done, 1 failed, 2 cancelled" in status.stdout
    # the report job summarized what had finished
    partial = json.loads((tmp_path / "results/sweep/gt_summary.json").read_text())
    assert {r["model"] for r in partial} == {STRONG}

    blocker.unlink()  # fix the cause; the rerun submits the 3 missing runs only
    second = run_w2s(["sweep", "-c", str(config), "--wait"], env=env)
    print(second.stdout)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "executor slurm: 2 reused (done), 3 to run" in second.stdout
    again = jobs_submitted(second.stdout)
    assert set(again) == {f"jsonl/seed0/gt-{WEAK}", f"jsonl/seed0/w2s-{WEAK}-to-{WEAK}-xent",
                          f"jsonl/seed0/w2s-{WEAK}-to-{STRONG}-xent"}
    assert not set(again.values()) & set(jobs.values())
    assert re.search(rf"w2s-{WEAK}-to-{STRONG}-xent: job \d+ after {again[f'jsonl/seed0/gt-{WEAK}']}",
                     second.stdout)

    # the summary agrees with the runs' own metrics
    metrics = {p.parent.name: json.loads(p.read_text()) for p in seed_dir.glob("*/metrics.json")}
    assert len(metrics) == 5 and all(m["world_size"] == 1 for m in metrics.values())
    gt = {r["model"]: r for r in json.loads((tmp_path / "results/sweep/gt_summary.json").read_text())
          if r["seed"] == 0}
    assert gt[WEAK]["accuracy"] == metrics[f"gt-{WEAK}"]["accuracy"]
    assert gt[STRONG]["accuracy"] == metrics[f"gt-{STRONG}"]["accuracy"]
    rows = json.loads((tmp_path / "results/sweep/summary.json").read_text())
    per_seed = {(r["weak"], r["strong"]): r for r in rows if r["seed"] == 0}
    assert set(per_seed) == {(WEAK, WEAK), (WEAK, STRONG), (STRONG, STRONG)}
    for (weak, strong), row in per_seed.items():
        assert row["transfer_acc"] == pytest.approx(metrics[f"w2s-{weak}-to-{strong}-xent"]["accuracy"])
        assert row["weak_acc"] == pytest.approx(metrics[f"gt-{weak}"]["accuracy"])
        assert row["ceiling_acc"] == pytest.approx(metrics[f"gt-{strong}"]["accuracy"])
        if row["ceiling_acc"] > row["weak_acc"]:
            assert row["pgr"] == pytest.approx((row["transfer_acc"] - row["weak_acc"])
                                               / (row["ceiling_acc"] - row["weak_acc"]))
        else:
            assert row["pgr"] is None
    assert "transfer runs: test accuracy and PGR" in second.stdout
    assert (tmp_path / "results/sweep/figures/jsonl-xent.png").exists()
    assert (tmp_path / "results/sweep/figures/grid-xent.png").exists()
    status = run_w2s(["status", "-c", str(config)], env=env)
    assert status.returncode == 0 and "5 done" in status.stdout


def _without_dependency(command: str) -> list[str]:
    import shlex

    words = shlex.split(command)
    return [w for w in words if not w.startswith(("--dependency=", "--kill-on-invalid-dep"))]


def test_packed_sweep_test_only_failure_resubmit_requeue(slurm_cluster, tiny_models, tiny_data,
                                                         tmp_path):
    """Runs asking for the same resources share a job (packing.py): sbatch --test-only accepts
    the dry run's commands; a run failing inside a pack leaves its pack-mates done and is shown
    alone; the rerun submits only the missing runs; a requeued pack skips its finished runs."""
    env = slurm_cluster.env
    config = sweep_config(tmp_path, tiny_models, tiny_data, pack=True)
    seed_dir = tmp_path / "results" / "sweep" / "jsonl" / "seed0"
    logs = tmp_path / "results" / "sweep" / "sweep" / "logs"

    dry = run_w2s(["sweep", "-c", str(config), "--dry-run"], env=env)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    # 2 gt runs (depth 0) in one job, 3 transfer runs (depth 1) in another; 10 min each as written
    assert "jobs: 2 (5 runs packed by resources into 2 shared jobs, limits 0:20-0:30)" in dry.stdout
    commands = [line.strip() for line in dry.stdout.splitlines() if line.startswith("  sbatch ")]
    assert len(commands) == 2 and "--dependency=afterok:<job1>" in commands[1]
    for command in commands:  # what the dry run prints, as sbatch reads it
        words = _without_dependency(command)
        check = slurm_cluster.run(words[0], "--test-only", *words[1:], check=False)
        assert check.returncode == 0 and "to start at" in check.stderr, (command, check.stderr)

    blocker = seed_dir / f"gt-{WEAK}"  # the weak gt run fails (its folder cannot be made)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    first = run_w2s(["sweep", "-c", str(config), "--wait"], env=env)
    print(first.stdout)
    jobs = jobs_submitted(first.stdout)
    assert len(jobs) == 5 and len(set(jobs.values())) == 2
    status = run_w2s(["status", "-c", str(config)], env=env)
    print(status.stdout)
    lines = {line.split()[0]: line for line in status.stdout.splitlines()[1:-2]}
    failed = lines[f"jsonl/seed0/gt-{WEAK}"]
    assert " failed " in failed and "FileExistsError" in failed and "run 1 of 2 in job" in failed
    assert " done" in lines[f"jsonl/seed0/gt-{STRONG}"]
    assert " done" in lines[f"jsonl/seed0/w2s-{STRONG}-to-{STRONG}-xent"]
    for strong in (WEAK, STRONG):
        assert " cancelled " in lines[f"jsonl/seed0/w2s-{WEAK}-to-{strong}-xent"]
    assert "2 done, 1 failed, 2 cancelled" in status.stdout

    blocker.unlink()  # the rerun submits the 3 missing runs: the gt run alone, its dependants packed
    second = run_w2s(["sweep", "-c", str(config)], env=env)
    print(second.stdout)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    again = jobs_submitted(second.stdout)
    assert set(again) == {f"jsonl/seed0/gt-{WEAK}", f"jsonl/seed0/w2s-{WEAK}-to-{WEAK}-xent",
                          f"jsonl/seed0/w2s-{WEAK}-to-{STRONG}-xent"}
    pack = again[f"jsonl/seed0/w2s-{WEAK}-to-{WEAK}-xent"]
    assert again[f"jsonl/seed0/w2s-{WEAK}-to-{STRONG}-xent"] == pack != again[f"jsonl/seed0/gt-{WEAK}"]
    # once the pack's first run is done, requeue the job (as preemption would): its next start
    # skips the finished run and runs (or resumes) the rest
    done_file = logs / f"pack.{pack}.done"
    deadline = time.monotonic() + 400
    while not (done_file.exists() and done_file.read_text().strip()):
        assert time.monotonic() < deadline, (logs / f"pack.{pack}.out").read_text(errors="replace")
        time.sleep(0.5)
    slurm_cluster.run("scontrol", "requeue", pack)
    assert slurm_cluster.wait(pack, timeout=400).ok
    pack_log = (logs / f"pack.{pack}.out").read_text()
    print(pack_log)
    assert "(restart 1)" in pack_log
    assert f"jsonl/seed0/w2s-{WEAK}-to-{WEAK}-xent: finished in an earlier start of this job" in pack_log
    status = run_w2s(["status", "-c", str(config)], env=env)
    assert status.returncode == 0 and "5 done" in status.stdout, status.stdout
