"""Run alone or under torchrun: train each given tiny model for a few steps through the real engine
(DeepSpeed, the given ZeRO stage, loss logconf: its no-grad pass over the global batch too), once
with padded and once with padding-free batches from the same initial weights, and write rank 0's
per-step losses and test probabilities of both as JSON.

argv: OUT_JSON ZERO_STAGE MODEL_FOLDER...
"""
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from w2s_scale import distributed as dist
from w2s_scale.config import LossConfig, ModelConfig, TrainConfig
from w2s_scale.data.batching import TokenizedSet
from w2s_scale.engine import StopFlag, build_engine, predict, train
from w2s_scale.models import load_tokenizer

WORDS = "the film was a fine and moving story but its cast felt dull tired flat and far too long".split()


class Recorder:
    """What engine.train logs, kept in memory: the per-step records."""

    def __init__(self):
        self.records = []

    def log(self, record):
        self.records.append(record)

    def progress(self, total, desc, initial=0):
        class NoBar:
            def update(self, n=1, **postfix):
                pass

            def close(self):
                pass
        return NoBar()


def texts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Texts of 1 to 24 words (lengths spread as real data's are) and a label per text."""
    rng = np.random.default_rng(seed)
    out = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 25)))) for _ in range(n)]
    return out, rng.integers(0, 2, size=n)


def token_set(tokenizer, n: int, seed: int) -> TokenizedSet:
    words, labels = texts(n, seed)
    ids = tokenizer(words)["input_ids"]
    return TokenizedSet([f"x{i}" for i in range(n)], [list(t) for t in ids], labels)


def run(folder: str, stage: int, padding_free: bool) -> dict:
    cfg = ModelConfig(name=folder)
    tokenizer = load_tokenizer(cfg)
    data, test = token_set(tokenizer, 32, 0), token_set(tokenizer, 12, 1)
    targets = np.eye(2, dtype=np.float32)[data.labels] * 0.8 + 0.1  # soft, as weak labels are
    train_cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=8, micro_batch_size=8 // dist.world_size() // 2,
                            eval_batch_size=5, zero_stage=stage, length_grouping=False,
                            padding_free=padding_free)
    torch.manual_seed(0)
    eng = build_engine(cfg, train_cfg, 4, tokenizer)
    recorder = Recorder()
    with tempfile.TemporaryDirectory() as tmp, StopFlag() as stop:
        train(eng, data, targets, LossConfig(name="logconf"), 0, Path(tmp), recorder, stop)
    probs = predict(eng, test)
    eng.close()
    losses = [r["loss"] for r in recorder.records if r.get("event") == "train"]
    return {"losses": losses, "probs": probs[:, 1].tolist()}


def main() -> None:
    out, stage, folders = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    dist.init()
    result = {folder: {mode: run(folder, stage, mode == "packed") for mode in ("padded", "packed")}
              for folder in folders}
    if dist.is_main():
        Path(out).write_text(json.dumps(result))
    dist.finish()


if __name__ == "__main__":
    main()
