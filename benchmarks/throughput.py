"""Training and prediction throughput and peak memory: our engine against a loop written the way
the reference trains (fp32, one example per forward, no length grouping), same model, same data,
same number of examples, measured in one run; then two of our levers, each against its baseline
measured in the same run: padding-free batches (train.padding_free) against padded ones, in real
tokens/s, with batches by length and random batches; and bf16 (model.dtype) against fp32, with
the test accuracy and loss of both so that "same results within noise" can be judged. Not a test:
it prints figures and ratios.

    make bench            # or: python benchmarks/throughput.py --examples 512
    python benchmarks/throughput.py --text snippets --max-length 64   # the short-text setting of
                                                                      # the first measurements

Text: `mixed` (default) is a mixed-length sample, 3 Rotten Tomatoes snippets (movie_snippets:
sentiment; median 27 MiniLM tokens, 95% under 50) to 1 BBC News article (bbc_news: sport or
entertainment against the other topics; most longer than 256 tokens, cut at max-length), so that
lengths spread over two orders of magnitude, as they do across the paper's suite (mean lengths of
20 to 420 tokens as w2s_scale/costs.py estimates them); `snippets`: the snippets alone;
`articles`: the news articles alone (where the long texts' share of the mixed ratio shows). Each
variant runs in a fresh process so that its peak memory (max RSS) is its own.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = "offline:minilm-l6"
ARTICLE_SHARE = 4  # mixed text: one news article per this many texts
LEISURE = (1, 3)   # bbc_news topics entertainment and sport: label 1 of the mixed task


def _split_sets(dataset: str, n: int, max_length: int, tok, seed: int = 0):
    from w2s_scale.config import DataConfig
    from w2s_scale.data.batching import tokenize
    from w2s_scale.data.splits import make_splits

    splits = make_splits(DataConfig(dataset=dataset, n_train=2 * n, n_test=n, max_length=max_length,
                                    overlong="truncate"), seed=seed)
    return (tokenize(splits.a, tok, max_length, "truncate"),
            tokenize(splits.test, tok, max_length, "truncate"))


def _joined(first, second):
    import numpy as np

    from w2s_scale.data.batching import TokenizedSet

    return TokenizedSet(first.ids + second.ids, first.input_ids + second.input_ids,
                        np.concatenate([first.labels, second.labels]))


def load_data(n: int, max_length: int, text: str):
    """(model config, tokenizer, train set, test set) of n examples each."""
    import numpy as np

    from w2s_scale.config import ModelConfig
    from w2s_scale.models import load_tokenizer

    model_cfg = ModelConfig(name=MODEL)
    tok = load_tokenizer(model_cfg)
    if text == "snippets":
        return (model_cfg, tok, *_split_sets("movie_snippets", n, max_length, tok))
    if text == "articles":
        news_train, news_test = _split_sets("bbc_news", n, max_length, tok)
        for part in (news_train, news_test):
            part.labels = np.isin(part.labels, LEISURE).astype(np.int64)
        return model_cfg, tok, news_train, news_test
    n_articles = n // ARTICLE_SHARE
    snip_train, snip_test = _split_sets("movie_snippets", n - n_articles, max_length, tok)
    news_train, news_test = _split_sets("bbc_news", n_articles, max_length, tok)
    for part in (news_train, news_test):  # K = 5 topics -> a binary task like the snippets'
        part.labels = np.isin(part.labels, LEISURE).astype(np.int64)
    return model_cfg, tok, _joined(snip_train, news_train), _joined(snip_test, news_test)


def run_ours(n: int, max_length: int, batch: int, text: str, dtype: str = "fp32",
             padding_free: bool = False, grouping: bool = True) -> dict:
    import numpy as np

    from w2s_scale import distributed as dist
    from w2s_scale.config import LossConfig, TrackingConfig, TrainConfig
    from w2s_scale.engine import StopFlag, build_engine, predict, train
    from w2s_scale.tracking import Tracker

    dist.init()
    model_cfg, tok, train_set, test_set = load_data(n, max_length, text)
    model_cfg = model_cfg.model_copy(update={"dtype": dtype})
    train_cfg = TrainConfig(epochs=1, lr=5e-5, batch_size=batch, micro_batch_size=batch,
                            eval_batch_size=128, zero_stage=0, length_grouping=grouping,
                            padding_free=padding_free)
    steps = len(train_set) // batch
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log.jsonl"
        tracker = Tracker(log, TrackingConfig(progress=False), "bench", "bench")
        eng = build_engine(model_cfg, train_cfg, steps, tok)
        targets = np.eye(2, dtype=np.float32)[train_set.labels]
        t0 = time.perf_counter()
        with StopFlag() as stop:
            train(eng, train_set, targets, LossConfig(name="xent"), 0, Path(tmp), tracker, stop)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        probs = predict(eng, test_set)
        predict_s = time.perf_counter() - t0
        tracker.close()
        losses = [e["loss"] for e in map(json.loads, log.read_text().splitlines()) if e.get("event") == "train"]
    n_train = steps * batch
    train_tokens = int(train_set.lengths.sum() * n_train / len(train_set))
    dist.shutdown()
    labels = test_set.labels
    return {"train_examples": n_train, "train_s": train_s, "train_tokens": train_tokens,
            "predict_examples": len(test_set), "predict_s": predict_s,
            "predict_tokens": int(test_set.lengths.sum()),
            "accuracy": float((probs.argmax(1) == labels).mean()),
            "test_loss": float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean()),
            "last_train_loss": float(np.mean(losses[-max(1, len(losses) // 4):])),
            "predicted": probs.argmax(1).tolist()}


def run_reference_style(n: int, max_length: int, batch: int, text: str) -> dict:
    """fp32, plain PyTorch, one example per forward/backward (gradients accumulated over the
    batch), data in shuffled order with no length grouping; prediction one example at a time."""
    import numpy as np
    import torch

    from w2s_scale.models import build_classifier

    model_cfg, tok, train_set, test_set = load_data(n, max_length, text)
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


# name -> settings of run_ours (None: the reference-style loop); each runs in its own process
VARIANTS = {
    "reference-style": None,
    "fp32 padded": dict(dtype="fp32"),
    "fp32 packed": dict(dtype="fp32", padding_free=True),
    "fp32 padded random": dict(dtype="fp32", grouping=False),
    "fp32 packed random": dict(dtype="fp32", padding_free=True, grouping=False),
    "bf16 padded": dict(dtype="bf16"),
    "bf16 packed": dict(dtype="bf16", padding_free=True),
}


def child(variant: str, n: int, max_length: int, batch: int, text: str) -> None:
    import resource

    settings = VARIANTS[variant]
    if settings is None:
        result = run_reference_style(n, max_length, batch, text)
    else:
        result = run_ours(n, max_length, batch, text, **settings)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def rates(r: dict) -> tuple[float, ...]:
    return (r["train_examples"] / r["train_s"], r["train_tokens"] / r["train_s"],
            r["predict_examples"] / r["predict_s"], r["predict_tokens"] / r["predict_s"],
            r["peak_rss_mb"])


def print_against_reference(results: dict, best: str) -> None:
    widths = (12, 13, 14, 15, 13)
    print(f"{'':22}{'train ex/s':>12}{'train tok/s':>13}{'predict ex/s':>14}{'predict tok/s':>15}"
          f"{'peak RSS MB':>13}")
    for name in ("reference-style", "fp32 padded", best):
        label = "w2s-scale " + name if name != "reference-style" else name
        print(f"{label:22}" + "".join(f"{v:>{w}.1f}" for v, w in zip(rates(results[name]), widths)))
    ref = rates(results["reference-style"])
    for name in ("fp32 padded", best):
        ratio = [a / b for a, b in zip(rates(results[name]), ref)]
        print(f"{'ratio ' + name:22}" + "".join(f"{v:>{w - 1}.2f}x" for v, w in zip(ratio, widths)))


def print_packed_against_padded(results: dict) -> None:
    print(f"{'':22}{'train tok/s':>13}{'predict tok/s':>15}")
    for order, suffix in (("batches by length", ""), ("random batches", " random")):
        padded, packed = rates(results["fp32 padded" + suffix]), rates(results["fp32 packed" + suffix])
        print(f"{order:22}")
        print(f"{'  padded':22}{padded[1]:>13.1f}{padded[3]:>15.1f}")
        print(f"{'  packed':22}{packed[1]:>13.1f}{packed[3]:>15.1f}")
        print(f"{'  ratio':22}{packed[1] / padded[1]:>12.2f}x{packed[3] / padded[3]:>14.2f}x")


def print_bf16_against_fp32(results: dict) -> None:
    fp32, bf16 = results["fp32 padded"], results["bf16 padded"]
    print(f"{'':22}{'train ex/s':>12}{'predict ex/s':>14}{'test acc':>10}{'test loss':>11}"
          f"{'last train loss':>17}")
    for name, r in (("fp32", fp32), ("bf16", bf16)):
        rate = rates(r)
        print(f"{name:22}{rate[0]:>12.1f}{rate[2]:>14.1f}{r['accuracy']:>10.3f}{r['test_loss']:>11.4f}"
              f"{r['last_train_loss']:>17.4f}")
    speed = [a / b for a, b in zip(rates(bf16), rates(fp32))]
    print(f"{'ratio / difference':22}{speed[0]:>11.2f}x{speed[2]:>13.2f}x"
          f"{bf16['accuracy'] - fp32['accuracy']:>+10.3f}{bf16['test_loss'] - fp32['test_loss']:>+11.4f}"
          f"{bf16['last_train_loss'] - fp32['last_train_loss']:>+17.4f}")
    n = len(fp32["predicted"])
    agree = sum(a == b for a, b in zip(fp32["predicted"], bf16["predicted"])) / n
    acc = fp32["accuracy"]
    print(f"noise: one test accuracy's standard error is {math.sqrt(acc * (1 - acc) / n):.3f} "
          f"({n} test examples); fp32 and bf16 predict the same class for {agree:.1%} of them")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=512, help="training (and test) examples")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--text", choices=("mixed", "snippets", "articles"), default="mixed")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = ["--examples", str(args.examples), "--max-length", str(args.max_length),
             "--batch", str(args.batch), "--text", args.text]
    if args.child:
        child(args.child, args.examples, args.max_length, args.batch, args.text)
        return
    results = {}
    for variant in VARIANTS:
        proc = subprocess.run([sys.executable, __file__, "--child", variant, *shape],
                              capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"benchmark variant {variant} failed:\n{proc.stderr[-3000:]}")
        results[variant] = json.loads(line.removeprefix("RESULT "))
    what = {"mixed": "mixed-length text (3 movie snippets to 1 BBC News article)",
            "snippets": "movie snippets", "articles": "BBC News articles"}[args.text]
    print(f"model {MODEL}, {args.examples} train + test examples of {what}, max {args.max_length} "
          f"tokens, batch {args.batch}, {os.cpu_count()} CPU cores; real tokens only (padding "
          f"is not counted)")
    best = max(("fp32 padded", "fp32 packed", "bf16 padded", "bf16 packed"),
               key=lambda name: rates(results[name])[0])
    print(f"\nours against the reference's loop (fp32, one example per forward, no length "
          f"grouping); ours at its fastest here: {best}")
    print_against_reference(results, best)
    print("\npadding-free batches (train.padding_free) against padded, fp32")
    print_packed_against_padded(results)
    print("\nbf16 (model.dtype: bf16, fp32 master weights) against fp32, padded batches by length")
    print_bf16_against_fp32(results)


if __name__ == "__main__":
    main()
    from w2s_scale import distributed

    distributed.exit_process(0)  # this process joined a group of one: see exit_process
