"""ZeRO-3 with CPU offload of parameters and optimizer (DeepSpeedCPUAdam, JIT-built on first use)
and bf16 weights, on 2 CPU ranks: the configuration a 70B student uses, in miniature. One run of
the experiment (the strong model's ground-truth run) is enough: the other runs train the same way."""
import json

import yaml

from conftest import run_w2s, tiny_config, write_config


def test_zero3_offload_bf16_two_ranks(tiny_models, tiny_data, tmp_path):
    config = tiny_config(tmp_path / "results", tiny_models, tiny_data, losses=["logconf"])
    config["train"]["ds_config"] = "zero3_offload.json"
    config["weak"]["dtype"] = config["strong"]["dtype"] = "bf16"
    cfg = write_config(tmp_path / "cfg.yaml", config)
    proc = run_w2s(["run", "-c", str(cfg), "--run-key", "jsonl/seed0/gt-gpt2-strong",
                    "--launcher", "torchrun", "--nproc", "2"], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "results/tiny/jsonl/seed0/gt-gpt2-strong"
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    ds = resolved["ds_config"]
    assert ds["bf16"]["enabled"] is True and ds["communication_data_type"] == "fp32"
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert resolved["model"]["dtype"] == "bf16"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1 and metrics["world_size"] == 2
    losses = [json.loads(l)["loss"] for l in (run_dir / "log.jsonl").read_text().splitlines()
              if '"train"' in l]
    assert len(losses) == 10 and all(0 < l < 5 for l in losses)
