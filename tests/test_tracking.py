"""Tracking: a jsonl log of every run, and W&B offline (no account, no network), rank 0 only."""
import json

from conftest import ELEUTHER, REPO, SCENARIO_RUNS, tiny_config, write_config


def test_wandb_offline_one_run_per_stage_from_rank_zero_only(interrupted_experiment):
    """The session's 2-rank experiment (tests/conftest.py), W&B offline, progress bars on: each
    run that was not interrupted is one W&B run, from rank 0."""
    code, out = interrupted_experiment.stop  # the attempt that ran the uninterrupted runs
    assert code == 75, out[-3000:]
    seed_dir = interrupted_experiment.results / "tiny/jsonl/seed0"
    for run in [r for r in SCENARIO_RUNS if r != ELEUTHER]:
        offline = list((seed_dir / run / "wandb").glob("offline-run-*"))
        assert len(offline) == 1, f"{run}: {offline}"  # one W&B run per stage, from rank 0
        assert list(offline[0].glob("*.wandb"))
        events = [json.loads(l) for l in (seed_dir / run / "log.jsonl").read_text().splitlines()]
        kinds = [e["event"] for e in events]
        assert kinds[0] == "start" and kinds[-1] == "done" and "test" in kinds
        train = [e for e in events if e["event"] == "train"]
        assert len(train) == events[0]["total_steps"] and all(e["examples_per_s"] > 0 for e in train)
        assert len({e["step"] for e in train}) == len(train)  # rank 1 wrote nothing into the log
    assert "train:" in out  # the progress bar, on rank 0


# --- W&B online with no network: decided in seconds, before training ---------------------------

import os  # noqa: E402
from pathlib import Path  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from w2s_scale.tracking import WANDB_CHECK_S  # noqa: E402


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _online_run(tmp_path, tiny_models, tiny_data, base_url: str, key: str | None, policy=None):
    """`w2s run` of one tiny run with tracking.wandb: online, W&B's server at `base_url` (only
    ever on 127.0.0.1), and HOME emptied so no netrc or wandb settings give a key."""
    tracking = {"wandb": "online", "project": "w2s-test", "progress": False}
    if policy:
        tracking["on_no_network"] = policy
    config = tiny_config(tmp_path / "results", tiny_models, tiny_data, losses=["xent"],
                         tracking=tracking)
    config["train"]["zero_stage"] = 0
    cfg = write_config(tmp_path / "cfg.yaml", config)
    (tmp_path / "home").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    env.update(WANDB_BASE_URL=base_url, HOME=str(tmp_path / "home"), WANDB_SILENT="true",
               WANDB_CONFIG_DIR=str(tmp_path / "home"), **({"WANDB_API_KEY": key} if key else {}))
    # caches stay where they were (they hold no W&B key): under an empty HOME, DeepSpeed would
    # JIT-build its CPU communication op again (~50 s) into a new ~/.cache/torch_extensions
    env.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "w2s_scale.cli", "run", "-c", str(cfg), "--run-key",
                           "jsonl/seed0/gt-gpt2-weak"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    return proc, time.monotonic() - started, tmp_path / "results/tiny/jsonl/seed0/gt-gpt2-weak"


@pytest.mark.parametrize("server, key, message", [
    ("closed", "0123456789abcdef0123456789abcdef01234567", "cannot be reached (ConnectionRefusedError"),
    ("silent", "0123456789abcdef0123456789abcdef01234567", f"cannot be reached (no answer within {WANDB_CHECK_S:.0f} s)"),
    ("closed", None, "no W&B API key for http://127.0.0.1:"),
])
def test_wandb_online_without_network_stops_before_training_when_asked(
        server, key, message, tiny_models, tiny_data, tmp_path):
    with socket.socket() as silent:  # accepts connections, never answers: a blackholed server
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1] if server == "silent" else _closed_port()
        proc, seconds, run_dir = _online_run(tmp_path, tiny_models, tiny_data,
                                             f"http://127.0.0.1:{port}", key, policy="error")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("w2s: error:")]
    assert len(errors) == 1 and message in errors[0] and "tracking.on_no_network" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not run_dir.exists()  # nothing trained, nothing written
    assert seconds < 120  # process start and preflight included; the W&B check itself is below
    waited = float(errors[0].split(" after ")[1].split(" s;")[0])
    assert waited <= WANDB_CHECK_S + 5  # the probe's deadline, plus reading wandb's settings under load


def test_wandb_online_without_network_falls_back_to_offline_by_default(tiny_models, tiny_data,
                                                                        tmp_path):
    proc, seconds, run_dir = _online_run(tmp_path, tiny_models, tiny_data,
                                         f"http://127.0.0.1:{_closed_port()}",
                                         "0123456789abcdef0123456789abcdef01234567")
    assert proc.returncode == 0, proc.stderr[-2000:]
    notes = [line for line in proc.stderr.splitlines() if "W&B online is not possible" in line]
    assert len(notes) == 1 and "logging offline" in notes[0] and "wandb sync " in notes[0]
    assert (run_dir / "DONE").exists()
    assert len(list((run_dir / "wandb").glob("offline-run-*/*.wandb"))) == 1
