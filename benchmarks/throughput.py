"""Training and prediction throughput and peak memory: our engine against a loop written the way
the reference trains (fp32, one example per forward, no length grouping), same model, same data,
same number of examples, measured in one run. Not a test: it prints figures and ratios.

    make bench            # or: python benchmarks/throughput.py --examples 512

Each variant runs in a fresh process so that its peak memory (max RSS) is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_data(n: int, max_length: int):
    from w2s_scale.config import DataConfig, ModelConfig
    from w2s_scale.data.batching import tokenize
    from w2s_scale.data.splits import make_splits
    from w2s_scale.models import load_tokenizer

    model_cfg = ModelConfig(name=MODEL)
    splits = make_splits(DataConfig(dataset="movie_snippets", n_train=2 * n, n_test=n,
                                    max_length=max_length, overlong="truncate"), seed=0)
    tok = load_tokenizer(model_cfg)
    return model_cfg, tok, tokenize(splits.a, tok, max_length, "truncate"), tokenize(splits.test, tok, max_length, "truncate")


MODEL = "offline:minilm-l6"


def run_ours(n: int, max_length: int, batch: int) -> dict:
    import numpy as np

    from w2s_scale import distributed as dist
    from w2s_scale.config import LossConfig, TrackingConfig, TrainConfig
    from w2s_scale.engine import StopFlag, build_engine, predict, train
    from w2s_scale.tracking import Tracker

    dist.init()
    model_cfg, tok, train_set, test_set = load_data(n, max_length)
    train_cfg = TrainConfig(epochs=1, lr=5e-5, batch_size=batch, micro_batch_size=batch,
                            eval_batch_size=128, zero_stage=0)
    steps = len(train_set) // batch
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(Path(tmp) / "log.jsonl", TrackingConfig(progress=False), "bench", "bench")
        eng = build_engine(model_cfg, train_cfg, steps, tok)
        targets = np.eye(2, dtype=np.float32)[train_set.labels]
        t0 = time.perf_counter()
        with StopFlag() as stop:
            train(eng, train_set, targets, LossConfig(name="xent"), 0, Path(tmp), tracker, stop)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        predict(eng, test_set)
        predict_s = time.perf_counter() - t0
    n_train = steps * batch
    train_tokens = int(train_set.lengths.sum() * n_train / len(train_set))
    dist.shutdown()
    return {"train_examples": n_train, "train_s": train_s, "train_tokens": train_tokens,
            "predict_examples": len(test_set), "predict_s": predict_s,
            "predict_tokens": int(test_set.lengths.sum())}


def run_reference_style(n: int, max_length: int, batch: int) -> dict:
    """fp32, plain PyTorch, one example per forward/backward (gradients accumulated over the
    batch), data in shuffled order with no length grouping; prediction one example at a time."""
    import numpy as np
    import torch

    from w2s_scale.models import build_classifier

    model_cfg, tok, train_set, test_set = load_data(n, max_length)
    model = build_classifier(model_cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    order = np.random.default_rng(0).permutation(len(train_set))
    steps = len(train_set) // batch
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        for i in order[step * batch:(step + 1) * batch]:
            ids = torch.tensor([train_set.input_ids[i]])
            logits = model(ids, torch.ones_like(ids))
            target = torch.tensor([int(train_set.labels[i])])
            (torch.nn.functional.cross_entropy(logits, target) / batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    train_s = time.perf_counter() - t0
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for tokens in test_set.input_ids:
            ids = torch.tensor([tokens])
            torch.softmax(model(ids, torch.ones_like(ids)), -1)
    predict_s = time.perf_counter() - t0
    n_train = steps * batch
    return {"train_examples": n_train, "train_s": train_s,
            "train_tokens": int(train_set.lengths[order[:n_train]].sum()),
            "predict_examples": len(test_set), "predict_s": predict_s,
            "predict_tokens": int(test_set.lengths.sum())}


VARIANTS = {"w2s-scale": run_ours, "reference-style": run_reference_style}


def child(variant: str, n: int, max_length: int, batch: int) -> None:
    import resource

    result = VARIANTS[variant](n, max_length, batch)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=512, help="training (and test) examples")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.examples, args.max_length, args.batch)
        return
    results = {}
    for variant in VARIANTS:
        proc = subprocess.run([sys.executable, __file__, "--child", variant, "--examples",
                               str(args.examples), "--max-length", str(args.max_length),
                               "--batch", str(args.batch)], capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"benchmark variant {variant} failed:\n{proc.stderr[-3000:]}")
        results[variant] = json.loads(line.removeprefix("RESULT "))
    print(f"model {MODEL}, {args.examples} train + test examples (movie_snippets), "
          f"max {args.max_length} tokens, batch {args.batch}, {os.cpu_count()} CPU cores")
    header = f"{'':18}{'train ex/s':>12}{'train tok/s':>13}{'predict ex/s':>14}{'predict tok/s':>15}{'peak RSS MB':>13}"
    print(header)
    rates = {}
    for variant, r in results.items():
        rates[variant] = (r["train_examples"] / r["train_s"], r["train_tokens"] / r["train_s"],
                          r["predict_examples"] / r["predict_s"], r["predict_tokens"] / r["predict_s"],
                          r["peak_rss_mb"])
        print(f"{variant:18}" + "".join(f"{v:>{w}.1f}" for v, w in zip(rates[variant], (12, 13, 14, 15, 13))))
    ours, ref = rates["w2s-scale"], rates["reference-style"]
    print(f"{'ratio':18}" + "".join(f"{a / b:>{w}.2f}x" for a, b, w in zip(ours, ref, (11, 12, 13, 14, 12))))
    print("(real tokens only: padding is not counted)")


if __name__ == "__main__":
    main()
    from w2s_scale import distributed

    distributed.exit_process(0)  # this process joined a group of one: see exit_process
