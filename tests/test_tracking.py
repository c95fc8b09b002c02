"""Tracking: a jsonl log of every run, and W&B offline (no account, no network), rank 0 only."""
import json

from conftest import run_w2s, tiny_config, write_config


def test_wandb_offline_one_run_per_stage_from_rank_zero_only(tiny_models, tiny_data, tmp_path):
    config = tiny_config(tmp_path / "results", tiny_models, tiny_data, losses=["xent"],
                         tracking={"wandb": "offline", "project": "w2s-test", "progress": True})
    cfg = write_config(tmp_path / "cfg.yaml", config)
    proc = run_w2s(["experiment", "-c", str(cfg), "--launcher", "torchrun", "--nproc", "2"],
                   env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    seed_dir = tmp_path / "results/tiny/jsonl/seed0"
    runs = ["gt-gpt2-weak", "gt-gpt2-strong", "w2s-gpt2-weak-to-gpt2-strong-xent"]
    for run in runs:
        offline = list((seed_dir / run / "wandb").glob("offline-run-*"))
        assert len(offline) == 1, f"{run}: {offline}"  # one W&B run per stage, from rank 0
        assert list(offline[0].glob("*.wandb"))
        events = [json.loads(l) for l in (seed_dir / run / "log.jsonl").read_text().splitlines()]
        kinds = [e["event"] for e in events]
        assert kinds[0] == "start" and kinds[-1] == "done" and "test" in kinds
        train = [e for e in events if e["event"] == "train"]
        assert len(train) == 10 and all(e["examples_per_s"] > 0 for e in train)
        assert len({e["step"] for e in train}) == 10  # rank 1 wrote nothing into the log
    assert "train:" in proc.stderr  # the progress bar, on rank 0
