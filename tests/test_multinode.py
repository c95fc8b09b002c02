"""Multi-node runs on the real two-node test Slurm cluster (tests/slurm_cluster), submitted with
slurm/run.sbatch as a user would: one ground-truth run of a tiny GPT-2 under ZeRO-3 on
2 nodes x 1 rank gives the same weak labels and metrics as the same global batch on one node
(1 rank, 2 accumulation steps); and a 2-node job signalled with `scancel --signal=USR1`
checkpoints, requeues itself and finishes with the same result as an uninterrupted job; a rank
that stops responding on one node ends the job with one line naming it."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO, run_w2s, tiny_config, write_config  # noqa: E402

from w2s_scale import slurm  # noqa: E402
from w2s_scale.distributed import TIMEOUT_ENV  # noqa: E402

RUN = "jsonl/seed0/gt-gpt2-weak"
SCRIPT = REPO / "slurm" / "run.sbatch"


def rows(run_dir: Path, name: str) -> dict:
    return {r["id"]: r for r in map(json.loads, (run_dir / name).read_text().splitlines())}


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def config(tiny_models, tiny_data, tmp_path_factory) -> Path:
    """A config long enough to be interrupted (80 optimizer steps)."""
    root = tmp_path_factory.mktemp("multinode")
    cfg = tiny_config(root / "unused", tiny_models, tiny_data, losses=["xent"])
    cfg["data"]["n_train"] = 320
    cfg["train"].update(epochs=4, lr=3e-3)  # global batch 8 = micro 4 x (2 ranks, or 2 steps)
    return write_config(root / "cfg.yaml", cfg)


@pytest.fixture(scope="module")
def setup(config, tmp_path_factory):
    """The config, and its reference result: the run on one node, one rank, uninterrupted."""
    ref = tmp_path_factory.mktemp("multinode-ref") / "one-node"
    # one thread, as in the test cluster's jobs (1 CPU each): the thread count changes the
    # order of float32 sums, which would add its own (small) differences to the comparison
    proc = run_w2s(["run", "-c", str(config), "--run", RUN, "--set", f"results_dir={ref}"],
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return config, ref / "tiny" / RUN


def submit(cluster, config: Path, results: Path, log: Path, launcher: str, extra=()) -> str:
    # sbatch exports the submitter's environment: a collective timeout left there by an earlier
    # `w2s` call must not replace the config's (the hang case once waited out its limit on it)
    env = {**cluster.env, "W2S_HOME": str(REPO), "W2S_PYTHON": sys.executable,
           TIMEOUT_ENV: "1800"}
    return slurm.submit(SCRIPT, [f"--launcher={launcher}", "--", "run", f"--config={config}",
                                 f"--run={RUN}", f"--set=results_dir={results}", *extra],
                        ["--nodes=2", "--ntasks-per-node=1", f"--output={log}"], env=env)


def _script(path: Path, out: Path) -> Path:
    path.write_text(f"#!/bin/bash\necho ran > {out}\n")
    path.chmod(0o755)
    return path


def assert_same_result(run_dir: Path, ref_dir: Path, atol: float) -> float:
    """Same weak labels and test predictions (up to atol), same metrics; returns the largest
    difference seen."""
    worst = 0.0
    for name in ("weak_labels.jsonl", "test_predictions.jsonl"):
        got, want = rows(run_dir, name), rows(ref_dir, name)
        assert got.keys() == want.keys() and len(got) == len(want)
        diff = np.abs(np.array([got[i]["p1"] for i in want]) - np.array([want[i]["p1"] for i in want]))
        worst = max(worst, float(diff.max()))
        np.testing.assert_allclose(diff, 0, atol=atol)
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, ref_dir))
    for key in ("n_train", "n_test", "steps"):
        assert got[key] == want[key], (key, got[key], want[key])
    # a probability within atol of 0.5 may flip one example: at most one
    assert abs(got["accuracy"] - want["accuracy"]) <= 1 / got["n_test"] + 1e-9
    assert abs(got["b_accuracy"] - want["b_accuracy"]) <= 1 / len(rows(run_dir, "weak_labels.jsonl")) + 1e-9
    assert abs(got["auc"] - want["auc"]) < 1e-3
    return worst


def test_two_nodes_zero3_match_one_node(slurm_cluster, setup, tmp_path):
    config, ref = setup
    log = tmp_path / "job.out"
    job = submit(slurm_cluster, config, tmp_path / "results", log, "torchrun")
    info = slurm_cluster.wait(job, timeout=240)
    out = log.read_text()
    assert info.ok, out[-4000:]
    run_dir = tmp_path / "results" / "tiny" / RUN
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert "stage: 3" in (run_dir / "config.yaml").read_text()  # ZeRO-3, parameters split over nodes
    assert "[w2s-node 0]" in out and "[w2s-node 1]" in out  # one launcher per node
    assert {"127.0.0.1", "127.0.0.2"} <= {w for line in out.splitlines() if "[w2s-node" in line
                                          for w in line.replace("(", " ").replace(")", " ").split()}
    # global rank 0 alone writes: one start record, every example labelled exactly once
    assert [e["event"] for e in events(run_dir)].count("start") == 1
    assert len((run_dir / "weak_labels.jsonl").read_text().splitlines()) == len(rows(run_dir, "weak_labels.jsonl"))
    worst = assert_same_result(run_dir, ref, atol=1e-3)
    ref_metrics = json.loads((ref / "metrics.json").read_text())
    for name, m in (("2 nodes x 1 rank", metrics), ("1 node x 1 rank", ref_metrics)):
        print(f"{name}: world size {m['world_size']}, test accuracy {m['accuracy']:.4f}, auc "
              f"{m['auc']:.4f}, weak-label (B) accuracy {m['b_accuracy']:.4f}, steps {m['steps']}")
    print(f"largest difference of a probability (test and B): {worst:.2e}")


def test_usr1_checkpoints_requeues_and_resumes(slurm_cluster, setup, tmp_path):
    """2 nodes, the deepspeed launcher with a hostfile: `scancel --signal=USR1` mid-training ->
    checkpoint -> exit 75 -> `scontrol requeue` -> the job restarts and resumes from the step
    it stopped at -> the same result as the uninterrupted run."""
    config, ref = setup
    log = tmp_path / "job.out"
    results = tmp_path / "results"
    run_dir = results / "tiny" / RUN
    # a checkpoint every 5 steps, 2 kept: the pruning is seen too (not part of the run's hash)
    job = submit(slurm_cluster, config, results, log, "deepspeed",
                 ["--set=train.checkpoint_every=5", "--set=train.keep_checkpoints=2"])
    deadline = time.monotonic() + 180
    while sum(e["event"] == "train" for e in events(run_dir)) < 12:
        assert time.monotonic() < deadline, log.read_text()[-3000:] if log.exists() else "no log"
        time.sleep(0.2)
    # a job that needs this one (as a sweep's transfer run needs its gt run) keeps waiting
    # through the requeue and runs once the resumed job has completed
    after = tmp_path / "after.txt"
    dependant = slurm.submit(_script(tmp_path / "dependant.sh", after), [], ["--output=/dev/null"],
                             [job], env=slurm_cluster.env)
    slurm_cluster.run("scancel", "--signal=USR1", job)
    while not any(e["event"] == "stopped" for e in events(run_dir)):
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    stopped = next(e for e in events(run_dir) if e["event"] == "stopped")
    ckpts = run_dir / "checkpoints"
    assert (ckpts / "latest_step").read_text() == f"step{stopped['step']}"
    kept = sorted(p.name for p in ckpts.glob("step*"))
    assert f"step{stopped['step']}" in kept and len(kept) <= 2, kept  # older ones pruned
    info = slurm_cluster.wait(job, timeout=240)
    out = log.read_text()
    assert info.ok and info.restarts == 1, (info, out[-4000:])
    names = [e["event"] for e in events(run_dir)]
    assert names.count("start") == 2 and names.count("stopped") == 1
    resumed = next(e for e in events(run_dir) if e["event"] == "resumed")
    assert resumed["step"] == stopped["step"] < 80
    steps = [e["step"] for e in events(run_dir) if e["event"] == "train"]
    assert steps == list(range(1, 81)), "a step lost or repeated"
    assert "requeueing job" in out and "(restart 1)" in out
    assert not ckpts.exists()  # removed once the run is complete
    assert slurm_cluster.wait(dependant, timeout=60).ok and after.read_text().strip() == "ran"
    worst = assert_same_result(run_dir, ref, atol=1e-3)
    for line in out.splitlines():
        if line.startswith(("[w2s-job]", "[w2s] gt", "w2s: stopped")) or "SIGUSR1" in line:
            print(line)
    print(f"stopped after step {stopped['step']}, resumed at {resumed['step']}; largest "
          f"probability difference to the uninterrupted run {worst:.2e}")


def _rank_pid(job: str, rank: int) -> int | None:
    """The process of global rank `rank` of Slurm job `job`, on whichever emulated node."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"launch/rank.py" not in (proc / "cmdline").read_bytes():
                continue
            environ = set((proc / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if {f"SLURM_JOB_ID={job}".encode(), f"RANK={rank}".encode()} <= environ:
            return int(proc.name)
    return None


def test_a_rank_that_stops_responding_on_the_second_node_is_named(slurm_cluster, config, tmp_path):
    """Global rank 1 (alone on one of the 2 nodes; torchrun's rendezvous picks which) is frozen
    mid-training (SIGSTOP): its node's launcher sees it stop responding within
    launch.collective_timeout_s and ends the job with one line naming it."""
    log = tmp_path / "job.out"
    run_dir = tmp_path / "results" / "tiny" / RUN
    job = submit(slurm_cluster, config, tmp_path / "results", log, "torchrun",
                 ["--set=launch.collective_timeout_s=20", "--set=train.checkpoint_every=1000"])
    deadline = time.monotonic() + 180
    while not any(e["event"] == "train" for e in events(run_dir)):
        assert time.monotonic() < deadline, log.read_text()[-3000:] if log.exists() else "no log"
        time.sleep(0.2)
    pid = _rank_pid(job, 1)
    assert pid is not None, log.read_text()[-3000:]
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        info = slurm_cluster.wait(job, timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    elapsed = time.monotonic() - stopped_at
    out = log.read_text()
    named = [line for line in out.splitlines() if line.startswith(f"w2s: error: rank 1 (pid {pid})")]
    print(f"job ended {elapsed:.0f} s after rank 1 was stopped: {named}")
    assert not info.ok and len(named) == 1, out[-4000:]
    assert "stopped responding" in named[0] and "collective_timeout_s=20" in named[0]
    assert not (run_dir / "DONE").exists()
