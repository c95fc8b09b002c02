"""Stop signals as users and Slurm send them: Ctrl-C (SIGINT), SIGTERM and SIGUSR1, with one rank or
several, under each launcher `w2s` starts and under launch/slurm_node.py (what a Slurm step runs
on each node, and what Slurm signals). Whatever carried the request to the ranks, the command
exits 75 after a checkpoint, prints one line naming the signal it received, and neither we nor
the launcher print a traceback. (SIGUSR1 under torchrun and in a real Slurm job: the session's
interrupted_experiment and tests/test_multinode.py.)"""
from __future__ import annotations

import json
import os
import re
import signal
import sys

import pytest

from conftest import REPO, finish, start_w2s, tiny_config, wait_for_checkpoint, write_config
from w2s_scale.distributed import free_port
from w2s_scale.processes import descendants

RUN = "jsonl/seed0/gt-gpt2-weak"


@pytest.fixture(scope="module")
def long_config(tiny_models, tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    config = tiny_config(root / "results", tiny_models, tiny_data, losses=["xent"])
    config["train"]["checkpoint_every"] = 2
    config["weak"]["train"] = {"epochs": 40}  # long enough to be stopped mid-way
    return write_config(root / "cfg.yaml", config)


def _command(how: str, config, results) -> list[str]:
    w2s = ["run", "-c", str(config), "--run-key", RUN, "--set", f"results_dir={results}"]
    if how == "none":
        return [*w2s, "--launcher", "none", "--nproc", "1"]
    if how in ("torchrun", "deepspeed"):
        return [*w2s, "--launcher", how, "--nproc", "2"]
    # what srun starts on a node: the Slurm wrapper, here on one "node" of 2 ranks
    return ["--slurm-node", "--launcher", "torchrun", "--rdzv", "static", "--nproc-per-node", "2",
            "--", *w2s]


@pytest.mark.parametrize("how, sent", [
    ("none", signal.SIGINT),         # Ctrl-C on a run of one process
    ("deepspeed", signal.SIGINT),    # Ctrl-C on `w2s` over the deepspeed launcher
    ("torchrun", signal.SIGTERM),    # kill / scancel on `w2s` over torchrun
    ("slurm_node", signal.SIGINT),   # a Slurm step's wrapper, interrupted
])
def test_a_stop_signal_checkpoints_exits_75_and_names_the_signal(how, sent, long_config, tmp_path):
    results = tmp_path / "results"
    args = _command(how, long_config, results)
    log = tmp_path / "out.log"
    env = {"MASTER_PORT": str(free_port())} if how == "slurm_node" else {}
    if args[0] == "--slurm-node":  # not a w2s command: start the wrapper itself
        import subprocess

        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, str(REPO / "launch/slurm_node.py"), *args[1:]],
                                    cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True, env={**os.environ, **env})
    else:
        proc = start_w2s(args, log, env)
    run_dir = results / "tiny" / RUN
    try:
        wait_for_checkpoint(run_dir, None, proc)
        os.kill(proc.pid, sent)
        code, out = finish(proc, log, timeout=600)
    finally:
        if proc.poll() is None:
            for pid in [proc.pid, *descendants(proc.pid)]:
                os.kill(pid, signal.SIGKILL)
    name = signal.Signals(sent).name
    lines = [line for line in out.splitlines() if line.startswith("w2s: ")]
    assert code == 75, out[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"w2s: stopped by {name} after step "), out[-3000:]
    for noise in ("Traceback", "ChildFailedError", "CalledProcessError", "KeyboardInterrupt"):
        assert noise not in out, out[-3000:]
    step = int(re.search(r"after step (\d+)", lines[0]).group(1))
    # a resumable state: the checkpoint of that step, and the log says why it stopped
    assert (run_dir / "checkpoints/latest_step").read_text() == f"step{step}"
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "stopped" and events[-1]["signal"] == name
    assert not (run_dir / "DONE").exists()
    print(f"{how}, {name}: exit 75 after step {step}: {lines[0]}")


def test_a_second_ctrl_c_stops_at_once_with_one_line(long_config, tmp_path):
    """Ctrl-C twice on a run of one process: the second does not wait for the step boundary;
    exit 130, one line, the last checkpoint kept."""
    results = tmp_path / "results"
    log = tmp_path / "out.log"
    proc = start_w2s(_command("none", long_config, results), log)
    run_dir = results / "tiny" / RUN
    try:
        wait_for_checkpoint(run_dir, None, proc)
        os.kill(proc.pid, signal.SIGINT)
        os.kill(proc.pid, signal.SIGINT)
        code, out = finish(proc, log, timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in out.splitlines() if line.startswith("w2s: ")]
    assert code in (75, 130), out[-3000:]  # 75: the first had already stopped it at a step
    assert len(lines) == 1 and "Traceback" not in out, out[-3000:]
    if code == 130:
        assert "second SIGINT" in lines[0] and "without a checkpoint" in lines[0]
    assert (run_dir / "checkpoints/latest_step").exists() and not (run_dir / "DONE").exists()
