"""Shared fixtures: tiny random-initialised models of the real architectures (GPT-2, Qwen2, Llama)
with the real GPT-2 tokenizer, a small learnable text dataset, and experiment configs over them."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# the two-node Slurm test cluster, one for the whole session (tests/slurm_cluster/fixture.py); a
# test module must not import it itself, or it gets a cluster of its own
from slurm_cluster.fixture import slurm_cluster  # noqa: E402,F401

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# `make test` runs on 2 pytest-xdist workers (--dist loadgroup). A worker builds each session or
# module fixture it needs itself, so every test that shares an expensive one (and, through
# tests that use two, everything linked to it) is put in one xdist group: the Slurm cluster starts
# once, the interrupted 2-rank experiment runs once. These are cheap enough to build per worker.
CHEAP_SHARED_FIXTURES = {"gpt2_tokenizer_dir", "tiny_models", "tiny_data"}
# the two longest groups (about 400 s and 350 s of one worker's time) go first, so that neither
# starts late and runs on alone at the end while the other worker idles
FIRST_GROUPS = ("slurm_cluster", "interrupted_experiment")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per worker's process: OpenMP threads that outnumber the cores spin and slow
    # every process (the workers' subprocesses inherit this; torchrun sets the same for ranks)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


def _shared_fixture_keys(item) -> list[str]:
    keys = []
    for name in item.fixturenames:
        defs = item._fixtureinfo.name2fixturedefs.get(name)
        if not defs or name in CHEAP_SHARED_FIXTURES:
            continue
        fixture = defs[-1]
        ours = getattr(fixture.func, "__module__", "").startswith(("conftest", "test_", "slurm_cluster"))
        if ours and fixture.scope in ("session", "module"):
            keys.append(name if fixture.scope == "session" else f"{item.module.__name__}::{name}")
    return keys


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups off the items
def pytest_collection_modifyitems(config, items):
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    item_keys = [(item, _shared_fixture_keys(item)) for item in items]
    for _, keys in item_keys:
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
    groups = {}
    for item, keys in item_keys:
        if keys:
            groups[item.nodeid] = root(keys[0])
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
    first = [root(name) for name in FIRST_GROUPS if name in parent]
    items.sort(key=lambda item: first.index(groups[item.nodeid])
               if groups.get(item.nodeid) in first else len(first))  # stable: the rest keep their order


TINY = {
    "gpt2-weak": ("gpt2", dict(n_layer=1, n_embd=32, n_head=2, n_positions=128)),
    "gpt2-strong": ("gpt2", dict(n_layer=2, n_embd=64, n_head=4, n_positions=128)),
    "qwen2": ("qwen2", dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)),
    "llama": ("llama", dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)),
}

POSITIVE = ["good", "great", "fine", "lovely", "superb", "fun", "moving", "sharp"]
NEGATIVE = ["bad", "awful", "dull", "boring", "weak", "messy", "flat", "tired"]
NEUTRAL = ("the film story cast plot scene music actor movie script score was is very quite "
           "really and but a an it this of with").split()


def make_tiny_model(kind: str, out: Path, tokenizer_dir: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    model_type, sizes = TINY[kind]
    torch.manual_seed(1234)
    config = AutoConfig.for_model(model_type, vocab_size=50257, **sizes)
    if model_type == "gpt2":
        config.bos_token_id = config.eos_token_id = 50256
    AutoModel.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


def write_sentiment_jsonl(path: Path, n: int, seed: int = 0) -> Path:
    """A learnable task: the label is whether the one sentiment word is positive."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            label = rng.random() < 0.5
            words = [rng.choice(NEUTRAL) for _ in range(rng.randint(4, 12))]
            words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
            f.write(json.dumps({"text": " ".join(words), "label": int(label)}) + "\n")
    return path


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir() -> Path:
    from w2s_scale.assets import gpt2_tokenizer

    return gpt2_tokenizer()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, gpt2_tokenizer_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {kind: make_tiny_model(kind, root / kind, gpt2_tokenizer_dir) for kind in TINY}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_sentiment_jsonl(tmp_path_factory.mktemp("data") / "sentiment.jsonl", 400)


def tiny_config(results: Path, models: dict[str, Path], data: Path, **sections) -> dict:
    """An experiment config dict over the tiny models; keyword arguments replace sections."""
    config = {
        "name": "tiny",
        "results_dir": str(results),
        "seeds": [0],
        "data": {"dataset": "jsonl", "path": str(data), "n_train": 160, "n_test": 64,
                 "max_length": 32},
        "weak": {"name": str(models["gpt2-weak"]), "label": "gpt2-weak"},
        "strong": {"name": str(models["gpt2-strong"]), "label": "gpt2-strong"},
        "train": {"epochs": 1, "lr": 1e-3, "batch_size": 8, "micro_batch_size": 4,
                  "eval_batch_size": 16, "zero_stage": 3},
        "losses": ["xent", "logconf"],
        "tracking": {"progress": False},
    }
    config.update(sections)
    return config


def write_config(path: Path, config: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config))
    return path


def run_w2s(args: list[str], timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """The `w2s` command as a user runs it, in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "w2s_scale.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def run_predictions(run_dir: Path):
    """A finished run's test p1 in the order of its predictions file."""
    import numpy as np

    rows = (run_dir / "test_predictions.jsonl").read_text().splitlines()
    return np.array([json.loads(row)["p1"] for row in rows])


def predictions(results: Path, run: str):
    return run_predictions(results / "tiny/jsonl/seed0" / run)


def start_w2s(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """`w2s ARGS` in the background (its own session, to be signalled), output into `log`
    (a file, not a pipe that nobody reads while waiting)."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "w2s_scale.cli", *args], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, env={**os.environ, **(env or {})})


def finish(proc: subprocess.Popen, log: Path, timeout: int = 900) -> tuple[int, str]:
    """Exit status and output of a process from start_w2s."""
    return proc.wait(timeout=timeout), log.read_text()


def wait_for_checkpoint(run_dir: Path, beyond: str | None, proc: subprocess.Popen) -> str:
    """The tag of the first checkpoint of run_dir other than `beyond`, once it is written."""
    marker = run_dir / "checkpoints/latest_step"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if marker.exists() and marker.read_text() != beyond:
            return marker.read_text()
        time.sleep(0.05)
    raise AssertionError(f"no new checkpoint appeared in {run_dir} (exit status {proc.poll()})")


# --- one interrupted 2-rank experiment, read by many tests -------------------------------------
# Starting ranks (imports, the process group) costs far more than these tiny runs, so the
# multi-rank story is told once per session and each test checks its part of it
# (test_experiment_e2e, test_loss_engine, test_stop_resume_clients, test_tracking): a whole
# experiment on 1 rank, the reference; the same experiment on 2 ranks (torchrun, ZeRO-3, W&B
# offline) stopped by SIGUSR1 in a transfer run whose loss keeps a rolling buffer, killed outright
# after that run's next checkpoint, resumed to the end, run again (all reused), and the
# interrupted run redone uninterrupted.

ELEUTHER = "w2s-gpt2-weak-to-gpt2-strong-logconf_eleuther-batch_prior1-buffer_size20-warmup_steps3"
WINDOW = "w2s-gpt2-weak-to-gpt2-strong-window-radiusmidweak"
SCENARIO_RUNS = ["gt-gpt2-weak", "gt-gpt2-strong", "w2s-gpt2-weak-to-gpt2-strong-xent",
                 "w2s-gpt2-weak-to-gpt2-strong-logconf", ELEUTHER, WINDOW]
STRONG_STEPS = 30  # per strong run: room to stop and kill a run mid-way


def scenario_config(results: Path, models: dict[str, Path], data: Path, **sections) -> dict:
    """The weak model is initialised at random (its architecture from the tiny GPT-2 folder):
    equal results on 1 and 2 ranks then also show the per-run seed reaches every rank.
    logconf_eleuther's rolling buffer is longer than a batch (earlier steps' predictions matter);
    window's radius midweak is resolved from the weak labels."""
    config = tiny_config(results, models, data, losses=[
        "xent", "logconf",
        {"name": "logconf_eleuther", "params": {"buffer_size": 20, "batch_prior": 1, "warmup_steps": 3}},
        {"name": "window", "params": {"radius": "midweak"}}], **sections)
    config["weak"].update(init="random")
    config["strong"]["train"] = {"epochs": STRONG_STEPS // 10, "checkpoint_every": 3}
    return config


@pytest.fixture(scope="session")
def one_rank_experiment(tiny_models, tiny_data, tmp_path_factory) -> Path:
    """The reference result: the scenario's experiment on one rank (same global batch of 8)."""
    root = tmp_path_factory.mktemp("one-rank")
    cfg = write_config(root / "cfg.yaml", scenario_config(root / "results", tiny_models, tiny_data))
    proc = run_w2s(["experiment", "-c", str(cfg)], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "results"


@dataclass
class InterruptedExperiment:
    config: Path
    results: Path                # the 2-rank experiment's results
    stop: tuple[int, str]        # exit status and output of the attempt stopped by SIGUSR1
    first_checkpoint: str        # the interrupted run's checkpoint that the stop was sent after
    stopped_at: str              # the checkpoint the stop saved
    stopped_checkpoints: Path    # a copy of the interrupted run's checkpoints right after the stop
    killed_after: str            # the checkpoint written by the resumed attempt before its kill
    done_after_kill: bool
    completed: tuple[int, str]   # the attempt that ran it to the end
    again: subprocess.CompletedProcess  # the same command once more
    interrupted: Path            # a copy of the interrupted run's folder before the redo
    redo: tuple[int, str]        # `w2s run --redo` of the interrupted run, 2 ranks


@pytest.fixture(scope="session")
def interrupted_experiment(tiny_models, tiny_data, tmp_path_factory) -> InterruptedExperiment:
    root = tmp_path_factory.mktemp("two-ranks-interrupted")
    tracking = {"wandb": "offline", "project": "w2s-test", "progress": True}
    cfg = write_config(root / "cfg.yaml", scenario_config(root / "results", tiny_models, tiny_data,
                                                          tracking=tracking))
    wandb_env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    two_ranks = ["-c", str(cfg), "--launcher", "torchrun", "--nproc", "2"]
    run_dir = root / "results/tiny/jsonl/seed0" / ELEUTHER

    # 1. a preemption warning after the run's first checkpoint: it checkpoints and exits 75
    proc = start_w2s(["experiment", *two_ranks], root / "stop.log", wandb_env)
    first = wait_for_checkpoint(run_dir, None, proc)
    os.kill(proc.pid, signal.SIGUSR1)
    stop = finish(proc, root / "stop.log", timeout=600)
    stopped_at = (run_dir / "checkpoints/latest_step").read_text()
    shutil.copytree(run_dir / "checkpoints", root / "stopped-checkpoints")

    # 2. resumed, then killed outright (no chance to save) after its next periodic checkpoint:
    # the whole tree, as a node failure would: the command, the launcher and both ranks
    proc = start_w2s(["experiment", *two_ranks], root / "killed.log", wandb_env)
    killed_after = wait_for_checkpoint(run_dir, stopped_at, proc)
    subprocess.run(["pkill", "-KILL", "-f", str(cfg)])
    proc.wait(timeout=120)
    time.sleep(1)
    done_after_kill = (run_dir / "DONE").exists()

    # 3. the same command finishes the experiment, continuing from the last checkpoint
    proc = start_w2s(["experiment", *two_ranks], root / "finish.log", wandb_env)
    finished = finish(proc, root / "finish.log")
    again = run_w2s(["experiment", *two_ranks], timeout=900, env=wandb_env)
    shutil.copytree(run_dir, root / "interrupted")

    # 4. the interrupted run redone in one go: the uninterrupted 2-rank reference
    proc = start_w2s(["run", "-c", str(cfg), "--run-key", f"jsonl/seed0/{ELEUTHER}", "--launcher",
                      "torchrun", "--nproc", "2", "--redo"], root / "redo.log", wandb_env)
    return InterruptedExperiment(cfg, root / "results", stop, first, stopped_at,
                                 root / "stopped-checkpoints", killed_after, done_after_kill,
                                 finished, again, root / "interrupted", finish(proc, root / "redo.log"))


def stop_and_resume(cfg: Path, run_dir: Path, log_dir: Path) -> None:
    """`w2s experiment` on 2 ranks: SIGUSR1 once `run_dir` has a checkpoint (exit 75), then the
    same command to the end; asserts the second attempt resumed from a step > 0."""
    args = ["experiment", "-c", str(cfg), "--launcher", "torchrun", "--nproc", "2"]
    proc = start_w2s(args, log_dir / "stopped.log")
    wait_for_checkpoint(run_dir, None, proc)
    os.kill(proc.pid, signal.SIGUSR1)
    code, out = finish(proc, log_dir / "stopped.log", timeout=600)
    assert code == 75, out[-2000:]
    code, out = finish(start_w2s(args, log_dir / "resumed.log"), log_dir / "resumed.log")
    assert code == 0, out[-3000:]
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [e for e in events if e["event"] == "resumed"][0]["step"] > 0
