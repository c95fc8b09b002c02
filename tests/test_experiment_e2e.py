"""A whole weak-to-strong experiment with tiny random-initialised GPT-2 models and the real GPT-2
tokenizer, under ZeRO-3 with 2 ranks, through torchrun and through the deepspeed launcher; and
resumption after the run is stopped by a signal and after it is killed outright."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, tiny_config, write_config

RUNS = ["gt-gpt2-weak", "gt-gpt2-strong", "w2s-gpt2-weak-to-gpt2-strong-xent",
        "w2s-gpt2-weak-to-gpt2-strong-logconf"]


def e2e_config(results: Path, models, data) -> dict:
    """The weak model is initialised at random (its architecture from the tiny GPT-2 folder):
    equal results on 1 and 2 ranks then also show the per-run seed reaches every rank."""
    config = tiny_config(results, models, data)
    config["weak"].update(init="random")
    return config


def w2s(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "w2s_scale.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=900, **kw)


def predictions(results: Path, run: str) -> np.ndarray:
    rows = [json.loads(l) for l in (results / "tiny/jsonl/seed0" / run / "test_predictions.jsonl").read_text().splitlines()]
    return np.array([r["p1"] for r in rows])


@pytest.fixture(scope="module")
def one_rank(tiny_models, tiny_data, tmp_path_factory):
    """The reference result: the same experiment on one rank (same global batch of 8)."""
    out = tmp_path_factory.mktemp("one-rank")
    cfg = write_config(out / "cfg.yaml", e2e_config(out / "results", tiny_models, tiny_data))
    proc = w2s(["experiment", "-c", str(cfg)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "results"


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_zero3_two_ranks_whole_experiment(launcher, tiny_models, tiny_data, tmp_path, one_rank):
    cfg = write_config(tmp_path / "cfg.yaml", e2e_config(tmp_path / "results", tiny_models, tiny_data))
    proc = w2s(["experiment", "-c", str(cfg), "--launcher", launcher, "--nproc", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    seed_dir = tmp_path / "results/tiny/jsonl/seed0"
    for run in RUNS:
        run_dir = seed_dir / run
        assert (run_dir / "DONE").exists()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["world_size"] == 2 and 0 <= metrics["accuracy"] <= 1
        assert metrics["n_test"] == 64 and len(predictions(tmp_path / "results", run)) == 64
        assert "zero_optimization" in (run_dir / "config.yaml").read_text()
        assert not (run_dir / "checkpoints").exists()  # weights are not kept by default
        # 2 ranks x micro 4 = the 1-rank run's 2 accumulation steps x micro 4: same results
        np.testing.assert_allclose(predictions(tmp_path / "results", run),
                                   predictions(one_rank, run), atol=2e-4)
    weak_labels = (seed_dir / "gt-gpt2-weak/weak_labels.jsonl").read_text().splitlines()
    assert len(weak_labels) == 80  # every example of B labelled once, none duplicated
    assert len({json.loads(l)["id"] for l in weak_labels}) == 80
    summary = json.loads((tmp_path / "results/tiny/summary.json").read_text())
    assert {(r["seed"], r["loss"]) for r in summary} == {(0, "xent"), (0, "logconf"),
                                                         ("mean", "xent"), ("mean", "logconf")}
    assert "PGR" in proc.stdout and "gpt2-weak" in proc.stdout
    # a second call finds every run complete and does no training
    again = w2s(["experiment", "-c", str(cfg), "--launcher", launcher, "--nproc", "2"])
    assert again.returncode == 0 and again.stdout.count("done already, reused") == 4


def _start(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "w2s_scale.cli", "experiment", "-c", str(cfg),
                             "--launcher", "torchrun", "--nproc", "2"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for_checkpoint(run_dir: Path, beyond: str | None, proc: subprocess.Popen) -> str:
    marker = run_dir / "checkpoints/latest_step"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if marker.exists() and marker.read_text() != beyond:
            return marker.read_text()
        time.sleep(0.05)
    raise AssertionError(f"no new checkpoint appeared in {run_dir}")


def stop_and_resume(cfg: Path, run_dir: Path) -> None:
    """2 ranks: SIGUSR1 once `run_dir` has a checkpoint (exit 75), then the same command to the end;
    asserts the second attempt resumed from a step > 0."""
    proc = _start(cfg)
    _wait_for_checkpoint(run_dir, None, proc)
    os.kill(proc.pid, signal.SIGUSR1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, out[-2000:]
    proc = _start(cfg)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [e for e in events if e["event"] == "resumed"][0]["step"] > 0


def test_stopped_and_killed_run_resumes_to_the_same_result(tiny_models, tiny_data, tmp_path):
    config = tiny_config(tmp_path / "results", tiny_models, tiny_data, losses=["xent"])
    config["train"]["checkpoint_every"] = 4
    config["weak"]["train"] = {"epochs": 12}  # the run that is interrupted: 120 steps
    cfg = write_config(tmp_path / "cfg.yaml", config)
    run_dir = tmp_path / "results/tiny/jsonl/seed0/gt-gpt2-weak"

    # 1. a preemption warning: checkpoint at the next step, exit 75 (rerun resumes)
    proc = _start(cfg)
    first = _wait_for_checkpoint(run_dir, None, proc)
    os.kill(proc.pid, signal.SIGUSR1)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out[-2000:]
    assert "checkpoint saved, rerun the same command to resume" in out

    # 2. killed outright (no chance to save) after the next periodic checkpoint
    stopped_at = (run_dir / "checkpoints/latest_step").read_text()
    assert stopped_at != first  # the stop saved a checkpoint of its own
    proc = _start(cfg)
    second = _wait_for_checkpoint(run_dir, stopped_at, proc)
    # the whole tree, as a node failure would: the command, the launcher and both ranks
    subprocess.run(["pkill", "-KILL", "-f", str(cfg)])
    proc.wait(timeout=60)
    time.sleep(1)
    assert not (run_dir / "DONE").exists()

    # 3. the same command finishes the job, continuing from the last checkpoint
    proc = _start(cfg)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    events = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e["event"] == "resumed"]
    assert len(resumed) == 2 and resumed[0]["step"] > 0
    assert resumed[1]["step"] >= int(second.removeprefix("step"))
    steps = [e["step"] for e in events if e["event"] == "train"]
    assert steps[-1] == 120 and steps.count(1) == 1  # started once from scratch, never again
    assert resumed[0]["step"] == int(stopped_at.removeprefix("step"))

    # the interrupted experiment ends where an uninterrupted one does
    ref_cfg = dict(config, results_dir=str(tmp_path / "reference"))
    ref = w2s(["experiment", "-c", str(write_config(tmp_path / "ref.yaml", ref_cfg)),
               "--launcher", "torchrun", "--nproc", "2"])
    assert ref.returncode == 0, ref.stderr[-3000:]
    for run in RUNS[:3]:
        np.testing.assert_allclose(predictions(tmp_path / "results", run),
                                   predictions(tmp_path / "reference", run), atol=1e-5)
