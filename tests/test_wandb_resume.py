"""A run killed between checkpoints (SIGKILL: no chance to checkpoint or finish W&B) and then
resumed trains the steps after its last checkpoint again: W&B (offline, the same run id) still
holds every training step once. (A kill also loses the last steps W&B had not written yet; the
run is killed once W&B has written steps beyond the checkpoint, which the resumed attempt
trains again: without the fix they appeared twice.)"""
import json
import os
import signal
import subprocess
import sys
import time

from conftest import REPO, tiny_config, write_config
from helpers.wandb_log import wandb_records
from w2s_scale.wandb_log import last_history_step

STEPS = 100
EVERY = 20  # checkpoint every 20 steps


def _start(cfg) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "w2s_scale.cli", "run", "-c", str(cfg),
                             "--run-key", "jsonl/seed0/gt-gpt2-weak", "--launcher", "none",
                             "--nproc", "1"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})


def _train_steps(run_dir) -> list[int]:
    path = run_dir / "log.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return [r["step"] for r in records if r.get("event") == "train"]


def _wandb_steps(run_dir) -> tuple[set[str], list[int]]:
    ids, steps = set(), []
    for attempt in sorted((run_dir / "wandb").glob("offline-run-*")):
        for record in wandb_records(next(attempt.glob("*.wandb"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.add(record.run.run_id)
            elif kind == "history":
                steps.append(record.history.step.num)
    return ids, steps


def test_a_killed_and_resumed_run_logs_each_step_once_to_wandb(tiny_models, tiny_data, tmp_path):
    config = tiny_config(tmp_path / "results", tiny_models, tiny_data, losses=["xent"],
                         tracking={"wandb": "offline", "project": "w2s-test", "progress": False})
    config["train"]["checkpoint_every"] = EVERY
    config["weak"]["train"] = {"epochs": STEPS // 10}
    cfg = write_config(tmp_path / "cfg.yaml", config)
    run_dir = tmp_path / "results/tiny/jsonl/seed0/gt-gpt2-weak"

    def checkpoint() -> int:
        marker = run_dir / "checkpoints/latest_step"
        return int(marker.read_text().removeprefix("step")) if marker.exists() else STEPS

    def in_wandb() -> int:
        run_id = run_dir / "wandb_run_id"
        return last_history_step(run_dir, run_id.read_text().strip()) if run_id.exists() else 0

    proc = _start(cfg)
    deadline = time.time() + 300
    while in_wandb() <= checkpoint() and proc.poll() is None:
        assert time.time() < deadline, "W&B never held a step beyond a checkpoint"
        time.sleep(0.1)
    proc.kill()
    proc.communicate(timeout=60)
    checkpoint, in_wandb, killed_at = checkpoint(), in_wandb(), max(_train_steps(run_dir))
    assert checkpoint < in_wandb <= killed_at < STEPS, (checkpoint, in_wandb, killed_at)

    proc = _start(cfg)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    train = _train_steps(run_dir)  # the jsonl log keeps both attempts' records
    assert train == list(range(1, killed_at + 1)) + list(range(checkpoint + 1, STEPS + 1))
    ids, steps = _wandb_steps(run_dir)
    assert ids == {(run_dir / "wandb_run_id").read_text().strip()}
    assert steps == list(range(1, STEPS + 1)), (checkpoint, killed_at, steps)  # once each, in order
    print(f"killed at step {killed_at} (W&B had written up to {in_wandb}), resumed from the "
          f"checkpoint of step {checkpoint}: W&B history has steps 1..{STEPS} once each")


_TRACK = """
import sys, time
from pathlib import Path
from w2s_scale import tracking
from w2s_scale.config import TrackingConfig
tracking.RUN_ID_WAIT_S = 5.0  # fail fast: the bug holds the id for as long as the parent lives
tracker = tracking.Tracker(Path(sys.argv[1]) / "log.jsonl", TrackingConfig(wandb="offline", project="t",
                           progress=False), run_name="gt-x", group="g")
tracker.log({"event": "train", "step": 1, "loss": 1.0})
print("ready", flush=True)
if sys.argv[2] == "hold":
    time.sleep(600)
tracker.close()
"""

_PARENT = """
import os, subprocess, sys, wandb
run = wandb.init(mode="offline", project="t", dir=sys.argv[1])  # a parent with a W&B service of its own
assert os.environ.get("WANDB_SERVICE"), "wandb no longer shares its service through WANDB_SERVICE"
track = [sys.executable, "-c", sys.argv[2], sys.argv[1] + "/run"]
first = subprocess.Popen(track + ["hold"], stdout=subprocess.PIPE, text=True)
assert first.stdout.readline().strip() == "ready"
first.kill()
first.wait()
second = subprocess.run(track + ["finish"], capture_output=True, text=True, timeout=300)
print(second.stdout[-2000:], second.stderr[-2000:])
run.finish()
sys.exit(second.returncode)
"""


def test_a_killed_run_started_under_a_parent_with_a_wandb_service_resumes(tmp_path):
    """wandb hands its service to child processes through WANDB_SERVICE: a run killed while it used
    its parent's service (a sweep, a test session) left its id held there, and every resumed
    attempt was refused with "run ID ... is in use". Each run now starts a service of its own."""
    done = subprocess.run([sys.executable, "-c", _PARENT, str(tmp_path), _TRACK], cwd=REPO,
                          capture_output=True, text=True, timeout=400,
                          env={**os.environ, "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
