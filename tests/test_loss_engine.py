"""EleutherAI's losses through the real engine (DeepSpeed ZeRO-3, tiny GPT-2 models): logconf_eleuther
with a rolling buffer longer than the batch (so earlier steps' predictions matter) and window with
radius midweak give the same transfer models on 2 ranks, stopped and resumed mid-run, as on 1 rank
uninterrupted: the buffer is gathered in the global batch's order and restored from the checkpoint."""
import json
import os
import signal

import numpy as np

from conftest import tiny_config, write_config
from test_experiment_e2e import _start, _wait_for_checkpoint, predictions, w2s

ELEUTHER = "w2s-gpt2-weak-to-gpt2-strong-logconf_eleuther-batch_prior1-buffer_size20-warmup_steps3"
WINDOW = "w2s-gpt2-weak-to-gpt2-strong-window-radiusmidweak"


def _config(results, tiny_models, tiny_data) -> dict:
    config = tiny_config(results, tiny_models, tiny_data, losses=[
        {"name": "logconf_eleuther", "params": {"buffer_size": 20, "batch_prior": 1, "warmup_steps": 3}},
        {"name": "window", "params": {"radius": "midweak"}}])
    config["train"]["checkpoint_every"] = 3
    config["strong"]["train"] = {"epochs": 3}  # 30 steps: room to stop a transfer run mid-way
    return config


def two_ranks_stopped_and_resumed(cfg, run_dir) -> None:
    """The experiment on 2 ranks, stopped by a signal once `run_dir` has a checkpoint, then rerun
    to the end (which resumes that run from its checkpoint)."""
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


def test_eleuther_losses_one_rank_equals_two_ranks_stopped_and_resumed(tiny_models, tiny_data, tmp_path):
    one = _config(tmp_path / "one", tiny_models, tiny_data)
    proc = w2s(["experiment", "-c", str(write_config(tmp_path / "one.yaml", one))])
    assert proc.returncode == 0, proc.stderr[-3000:]

    two_cfg = write_config(tmp_path / "two.yaml", _config(tmp_path / "two", tiny_models, tiny_data))
    two_ranks_stopped_and_resumed(two_cfg, tmp_path / "two/tiny/jsonl/seed0" / ELEUTHER)
    for run in (ELEUTHER, WINDOW):
        np.testing.assert_allclose(predictions(tmp_path / "two", run),
                                   predictions(tmp_path / "one", run), atol=1e-5, err_msg=run)
    # midweak: the median |weak p1 - 0.5| over the training set (B, as labelled by the weak model)
    weak = [json.loads(line)["p1"] for line in
            (tmp_path / "one/tiny/jsonl/seed0/gt-gpt2-weak/weak_labels.jsonl").read_text().splitlines()]
    conf = np.sort(np.abs(np.array(weak) - 0.5))
    lower_median = conf[(len(conf) - 1) // 2]
    window_log = tmp_path / "one/tiny/jsonl/seed0" / WINDOW / "log.jsonl"
    resolved = [json.loads(line) for line in window_log.read_text().splitlines()
                if json.loads(line)["event"] == "loss_params"]
    assert abs(resolved[0]["resolved"]["radius"] - lower_median) < 1e-5
