"""Shared fixtures: tiny random-initialised models of the real architectures (GPT-2, Qwen2, Llama)
with the real GPT-2 tokenizer, a small learnable text dataset, and experiment configs over them."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
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
