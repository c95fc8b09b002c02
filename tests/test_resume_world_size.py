"""A run stopped on one number of ranks resumes on another (a requeued job on other nodes):
DeepSpeed's universal checkpoint re-partitions the ZeRO shards. Stopped at 2 ranks and resumed
at 1 (ZeRO-3), and 1 to 2 (ZeRO-2): the same steps, each once, and the same result as the run
uninterrupted, up to floating-point summation order (the micro-batches of a global batch are
summed in another grouping on another number of ranks)."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from conftest import finish, run_predictions, start_w2s, tiny_config, wait_for_checkpoint, write_config
from w2s_scale.processes import descendants

RUN = "jsonl/seed0/gt-gpt2-weak"
EPOCHS = 3  # 10 steps an epoch (80 examples of A, batch 8)


def _config(tmp_path, tiny_models, tiny_data, stage: int):
    config = tiny_config(tmp_path / "results", tiny_models, tiny_data, losses=["xent"])
    config["train"].update(zero_stage=stage, checkpoint_every=2)
    config["weak"]["train"] = {"epochs": EPOCHS}
    return write_config(tmp_path / "cfg.yaml", config)


def _args(config, results, nproc: int) -> list[str]:
    launch = ["--launcher", "torchrun", "--nproc", "2"] if nproc == 2 else ["--launcher", "none"]
    return ["run", "-c", str(config), "--run-key", RUN, "--set", f"results_dir={results}", *launch]


def _train_losses(run_dir) -> dict[int, float]:
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return {e["step"]: e["loss"] for e in events if e["event"] == "train"}


@pytest.mark.parametrize("stage, first, then", [(3, 2, 1), (2, 1, 2)])
def test_a_run_stopped_on_one_world_size_resumes_on_another(stage, first, then, tiny_models,
                                                            tiny_data, tmp_path):
    config = _config(tmp_path, tiny_models, tiny_data, stage)
    run_dir = tmp_path / "results/tiny" / RUN
    # stopped by a preemption warning once it has checkpointed
    proc = start_w2s(_args(config, tmp_path / "results", first), tmp_path / "stop.log")
    try:
        wait_for_checkpoint(run_dir, None, proc)
        os.kill(proc.pid, signal.SIGUSR1)
        code, out = finish(proc, tmp_path / "stop.log", timeout=600)
    finally:
        if proc.poll() is None:
            for pid in [proc.pid, *descendants(proc.pid)]:
                os.kill(pid, signal.SIGKILL)
    assert code == 75, out[-3000:]
    stopped_at = int((run_dir / "checkpoints/latest_step").read_text().removeprefix("step"))
    # resumed on the other world size, to the end
    code, out = finish(start_w2s(_args(config, tmp_path / "results", then), tmp_path / "resume.log"),
                       tmp_path / "resume.log")
    assert code == 0, out[-3000:]
    assert f"was written on {first} ranks, resuming on {then}" in out, out[-3000:]
    assert not (run_dir / "checkpoints/universal").exists()  # the conversion is not kept
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in events if e["event"] == "train"]
    total = events[0]["total_steps"]
    assert steps == list(range(1, total + 1)), steps  # each step once: none lost, none repeated
    assert [e["step"] for e in events if e["event"] == "resumed"] == [stopped_at]

    # the same run uninterrupted, on one rank
    (tmp_path / "ref").mkdir()
    ref_config = _config(tmp_path / "ref", tiny_models, tiny_data, stage)
    code, out = finish(start_w2s(_args(ref_config, tmp_path / "ref/results", 1), tmp_path / "ref.log"),
                       tmp_path / "ref.log")
    assert code == 0, out[-3000:]
    ref_dir = tmp_path / "ref/results/tiny" / RUN
    ours, ref = _train_losses(run_dir), _train_losses(ref_dir)
    assert ours.keys() == ref.keys()
    # the steps after the resume too: weights, Adam's moments, the lr schedule and the data
    # order all came back
    np.testing.assert_allclose([ours[s] for s in sorted(ours)], [ref[s] for s in sorted(ref)],
                               rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(run_predictions(run_dir), run_predictions(ref_dir), atol=1e-3)
    largest = float(np.abs(run_predictions(run_dir) - run_predictions(ref_dir)).max())
    print(f"ZeRO-{stage}, {first} -> {then} ranks, stopped at step {stopped_at} of {total}: "
          f"largest difference in test p1 from the uninterrupted run {largest:.2e}")
