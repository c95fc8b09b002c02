"""What users' own tools read from a stopped and resumed 2-rank ZeRO-3 run: DeepSpeed's
zero_to_fp32.py, run as its header says (no --tag), turns the checkpoint into fp32 weights; and
W&B (offline) sees one run, in one folder, with every training step, though three attempts logged
it (stopped by SIGUSR1, then killed outright, then finished). The run is the session's interrupted_experiment
(tests/conftest.py): its logconf_eleuther transfer run, of the tiny GPT-2 strong model."""
import json
import subprocess
import sys
from pathlib import Path

import torch

from conftest import ELEUTHER, STRONG_STEPS
from helpers.wandb_log import wandb_records


def _history_and_ids(run_dir: Path) -> tuple[list[str], list[list[int]], list[dict]]:
    """Per offline W&B attempt: its run id; its history rows' steps; its last summary."""
    ids, steps, summaries = [], [], []
    for attempt in sorted((run_dir / "wandb").glob("offline-run-*")):
        (log,) = attempt.glob("*.wandb")
        summary, attempt_steps = {}, []
        for record in wandb_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.append(record.run.run_id)
            elif kind == "history":
                row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
                assert row["train/step"] == record.history.step.num  # W&B's step is ours
                assert "train/loss" in row and "train/agreement" in row
                attempt_steps.append(record.history.step.num)
            elif kind == "summary":
                summary.update({"/".join(i.nested_key) or i.key: i.value_json for i in record.summary.update})
        steps.append(attempt_steps)
        summaries.append(summary)
    return ids, steps, summaries


def test_stopped_zero3_run_works_with_zero_to_fp32(interrupted_experiment, tiny_models, tmp_path):
    ckpt = interrupted_experiment.stopped_checkpoints  # as the stopped attempt left them
    tag = interrupted_experiment.stopped_at
    assert (ckpt / "latest").read_text() == tag  # DeepSpeed's pointer agrees with ours

    # DeepSpeed's own converter, which it copies beside its checkpoints, run as its header
    # says: `python zero_to_fp32.py . output_dir/`, no --tag
    assert (ckpt / "zero_to_fp32.py").read_text() == (
        Path(__import__("deepspeed").__file__).parent / "utils" / "zero_to_fp32.py").read_text()
    converted = subprocess.run([sys.executable, "zero_to_fp32.py", ".", str(tmp_path / "fp32")],
                               cwd=ckpt, capture_output=True, text=True, timeout=600)
    assert converted.returncode == 0, converted.stderr[-3000:]
    assert tag in converted.stdout + converted.stderr  # it read the tag from `latest`
    state = torch.load(tmp_path / "fp32" / "pytorch_model.bin", weights_only=True)
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(tiny_models["gpt2-strong"])
    expected = {f"backbone.{n}": tuple(p.shape) for n, p in backbone.named_parameters()}
    assert {n: tuple(t.shape) for n, t in state.items() if n in expected} == expected
    assert tuple(state["head.weight"].shape) == (2, 64)
    assert all(t.dtype == torch.float32 for t in state.values())


def test_stopped_killed_and_resumed_run_is_one_wandb_run(interrupted_experiment):
    run = interrupted_experiment
    assert run.completed[0] == 0, run.completed[1][-3000:]
    events = [json.loads(line) for line in (run.interrupted / "log.jsonl").read_text().splitlines()]
    train = [e["step"] for e in events if e["event"] == "train"]
    stopped, after_kill = [e["step"] for e in events if e["event"] == "resumed"]
    # every step logged once, except those the killed attempt made after its last checkpoint,
    # which the attempt that resumed from that checkpoint made (and logged) again
    killed_at = len(train) - (STRONG_STEPS - after_kill)  # the killed attempt's last step
    assert killed_at >= after_kill > stopped
    assert train == list(range(1, killed_at + 1)) + list(range(after_kill + 1, STRONG_STEPS + 1))
    ids, steps, summaries = _history_and_ids(run.interrupted)
    # one W&B run folder across the three attempts: W&B cannot resume an offline run (each
    # attempt wrote a folder of its own), so the tracker merged them (wandb_log.merge_offline_attempts)
    assert len(steps) == 1 and ids == [(run.interrupted / "wandb_run_id").read_text().strip()]
    assert len(list((run.interrupted / "wandb/.merged-attempts").glob("offline-run-*"))) == 2
    # every step at most once, in order: the stopped attempt's, then what the killed attempt's
    # W&B service had written before the kill (a kill loses what it had not: here often all of
    # it; log.jsonl keeps those steps), then the last attempt's, from after what W&B held
    logged = steps[0]
    assert logged == sorted(set(logged)) and logged[:stopped] == list(range(1, stopped + 1))
    assert set(range(after_kill + 1, STRONG_STEPS + 1)) <= set(logged) and logged[-1] == STRONG_STEPS
    assert set(range(1, STRONG_STEPS + 1)) - set(logged) <= set(range(stopped + 1, after_kill + 1))
    assert "accuracy" in summaries[0] and "test/examples" in summaries[0]


def test_redo_on_two_ranks_is_swapped_in_and_is_a_wandb_run_of_its_own(interrupted_experiment):
    """A redo on 2 ranks: built beside the run, swapped in at DONE, a W&B run of its own."""
    run = interrupted_experiment
    code, out = run.redo
    assert code == 0, out[-3000:]
    run_dir = run.results / "tiny/jsonl/seed0" / ELEUTHER
    assert f".{ELEUTHER}.redo" in out and not run_dir.with_name(f".{ELEUTHER}.redo").exists()
    assert (run_dir / "DONE").read_text() != (run.interrupted / "DONE").read_text()
    assert (run_dir / "wandb_run_id").read_text() != (run.interrupted / "wandb_run_id").read_text()
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
