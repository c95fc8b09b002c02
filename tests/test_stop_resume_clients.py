"""What users' own tools read from a stopped and resumed 2-rank ZeRO-3 run: DeepSpeed's
zero_to_fp32.py, run as its header says (no --tag), turns the checkpoint into fp32 weights; and
W&B (offline) sees one run with every training step once, though two attempts logged it."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from conftest import REPO, tiny_config, write_config
from helpers.wandb_log import wandb_records
from test_experiment_e2e import _wait_for_checkpoint

STEPS = 60


def _start(cfg: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "w2s_scale.cli", "run", "-c", str(cfg),
                             "--run-key", "jsonl/seed0/gt-gpt2-weak", "--launcher", "torchrun",
                             "--nproc", "2", *extra], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})


def _history_and_ids(run_dir: Path) -> tuple[list[str], list[int], list[dict]]:
    """Per offline W&B attempt: its run id; every history row's step; the last summary."""
    ids, steps, summaries = [], [], []
    for attempt in sorted((run_dir / "wandb").glob("offline-run-*")):
        (log,) = attempt.glob("*.wandb")
        summary = {}
        for record in wandb_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.append(record.run.run_id)
            elif kind == "history":
                row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
                assert row["train/step"] == record.history.step.num  # W&B's step is ours
                assert "train/loss" in row and "train/agreement" in row
                steps.append(record.history.step.num)
            elif kind == "summary":
                summary.update({"/".join(i.nested_key) or i.key: i.value_json for i in record.summary.update})
        summaries.append(summary)
    return ids, steps, summaries


def test_stopped_zero3_run_works_with_zero_to_fp32_and_is_one_wandb_run(tiny_models, tiny_data,
                                                                        tmp_path):
    config = tiny_config(tmp_path / "results", tiny_models, tiny_data, losses=["xent"],
                         tracking={"wandb": "offline", "project": "w2s-test", "progress": False})
    config["train"]["checkpoint_every"] = 4
    config["weak"]["train"] = {"epochs": STEPS // 10}
    cfg = write_config(tmp_path / "cfg.yaml", config)
    run_dir = tmp_path / "results/tiny/jsonl/seed0/gt-gpt2-weak"
    ckpt = run_dir / "checkpoints"

    proc = _start(cfg)
    _wait_for_checkpoint(run_dir, None, proc)
    os.kill(proc.pid, signal.SIGUSR1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, out[-3000:]
    tag = (ckpt / "latest_step").read_text()
    assert (ckpt / "latest").read_text() == tag  # DeepSpeed's pointer agrees with ours

    # DeepSpeed's own converter, which it copies beside its checkpoints, run as its header
    # says: `python zero_to_fp32.py . output_dir/`, no --tag
    assert (ckpt / "zero_to_fp32.py").read_text() == (
        Path(__import__("deepspeed").__file__).parent / "utils" / "zero_to_fp32.py").read_text()
    converted = subprocess.run([sys.executable, "zero_to_fp32.py", ".", str(tmp_path / "fp32")],
                               cwd=ckpt, capture_output=True, text=True, timeout=300)
    assert converted.returncode == 0, converted.stderr[-3000:]
    assert tag in converted.stdout + converted.stderr  # it read the tag from `latest`
    state = torch.load(tmp_path / "fp32" / "pytorch_model.bin", weights_only=True)
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(tiny_models["gpt2-weak"])
    expected = {f"backbone.{n}": tuple(p.shape) for n, p in backbone.named_parameters()}
    assert {n: tuple(t.shape) for n, t in state.items() if n in expected} == expected
    assert tuple(state["head.weight"].shape) == (2, 32)
    assert all(t.dtype == torch.float32 for t in state.values())

    proc = _start(cfg)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    train = [e["step"] for e in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())
             if e["event"] == "train"]
    assert train == list(range(1, STEPS + 1))  # each step logged once, across both attempts
    ids, steps, summaries = _history_and_ids(run_dir)
    assert len(ids) == 2 and set(ids) == {(run_dir / "wandb_run_id").read_text().strip()}
    assert steps == list(range(1, STEPS + 1))  # one W&B run, every step once, in order
    assert "accuracy" in summaries[-1] and "test/examples" in summaries[-1]

    # a redo on 2 ranks: built beside the run, swapped in at DONE, a W&B run of its own
    done_before, id_before = (run_dir / "DONE").read_text(), (run_dir / "wandb_run_id").read_text()
    proc = _start(cfg, "--redo")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert ".gt-gpt2-weak.redo" in out and not run_dir.with_name(".gt-gpt2-weak.redo").exists()
    assert (run_dir / "DONE").read_text() != done_before
    assert (run_dir / "wandb_run_id").read_text() != id_before
