"""Every network service a run asks (the model hub, the dataset hub, W&B) on a network that drops
packets instead of refusing them: a server that accepts connections and never answers (only ever
on 127.0.0.1). Each ends in seconds with one line naming what could not be reached and what was
asked of it, exit 2, no traceback; before, the hub's client waited for minutes or forever (no
overall timeout in huggingface_hub's httpx client)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, tiny_config, write_config

MISSING_MODEL = "w2s-test/no-such-model"  # a hub id that no cache holds


@pytest.mark.parametrize("service", ["model hub", "dataset hub", "wandb"])
def test_a_silent_server_ends_the_run_in_seconds_with_one_line(service, tiny_models, tiny_data,
                                                               tmp_path):
    config = tiny_config(tmp_path / "results", tiny_models, tiny_data, losses=["xent"])
    config["train"]["zero_stage"] = 0
    if service == "model hub":
        config["weak"] = {"name": MISSING_MODEL, "label": "w"}
    elif service == "dataset hub":
        config["data"] = {"dataset": "sciq", "n_train": 160, "n_test": 64, "max_length": 32}
    else:
        config["tracking"] = {"wandb": "online", "project": "t", "progress": False,
                              "on_no_network": "error"}
    cfg = write_config(tmp_path / "cfg.yaml", config)
    with socket.socket() as silent:  # accepts, never answers: a blackholed server
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        env = {k: v for k, v in os.environ.items()
               if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
                            "WANDB_MODE", "W2S_HUB_CHECKED")}
        env.update(HF_ENDPOINT=url, HF_HOME=str(tmp_path / "hf"), WANDB_BASE_URL=url,
                   WANDB_API_KEY="0123456789abcdef0123456789abcdef01234567", WANDB_SILENT="true",
                   WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "w2s_scale.cli", "experiment", "-c", str(cfg)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        elapsed = time.monotonic() - started
    out = proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("w2s: error:")]
    print(f"{service}: exit {proc.returncode} after {elapsed:.0f} s: {errors}")
    assert proc.returncode == 2 and len(errors) == 1, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    # generous for a loaded machine (imports, the 10 s check); the hang it replaces had no end
    assert elapsed < 180, elapsed
    if service == "wandb":
        assert "cannot be reached (no answer within" in errors[0], errors
        return
    notice = [line for line in proc.stderr.splitlines() if "cannot be reached" in line]
    assert len(notice) == 1 and url in notice[0] and "HF_HUB_OFFLINE=1" in notice[0], out[-3000:]
    assert (MISSING_MODEL if service == "model hub" else "sciq") in errors[0], errors
    assert not Path(tmp_path / "results").exists() or not any((tmp_path / "results").rglob("DONE"))
