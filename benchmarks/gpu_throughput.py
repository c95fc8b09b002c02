"""Training throughput on a GPU through the project's own engine: tokens/s per GPU and MFU for
Qwen2.5 0.5B, 1.5B and 7B, full fine-tuning under ZeRO-2 and ZeRO-3 and LoRA, bf16, at the paper
suite's sequence lengths, against two published anchors. Not a test: it prints figures.

    make bench-gpu                     # or: python benchmarks/gpu_throughput.py [--sizes 0.5b,7b]
    python benchmarks/gpu_throughput.py --tiny   # a tiny Qwen2 shape on CPU (what the test runs)

What is measured is what users get: each configuration builds its engine with
w2s_scale.engine.build_engine (the run's DeepSpeed config, model, head, optimizer) and trains with
w2s_scale.engine.train (the run's batching, loss and step), models random-initialised from the
catalogue's architecture (Entry.hf_config: no model hub needed), micro batches and gradient
checkpointing as the catalogue sets them, global batch 32 as the paper suite. tokens/s counts real
tokens (padding not counted), from the steps after the warm-up, per GPU (one rank per process
here: ZeRO partitions over one rank, so its communication is not measured).

MFU = tokens/s x FLOPs per token / the GPU's dense bf16 peak, with FLOPs per token (model FLOPs:
gradient checkpointing's recomputed forward is not counted):
  full fine-tuning  6 N + 12 L s d
  LoRA              4 N + 8 L s d     (no weight gradients of the frozen backbone)
N the backbone's non-embedding parameters, L layers, d attention width (heads x head dim), s the
mean real tokens of an example (attention scores and mixing: 4 L s d per token forward).

Anchors (tokens/s per GPU, MFU): NeMo AutoModel, Qwen2.5-7B LoRA on one H100: 14,110 tokens/s,
43%; torchtitan, Llama-3.1-8B FSDP: 5,762 tokens/s per H100, 33-39% (mid 36%). The ratio printed
is ours / the anchor's, tokens/s where the model is 7B, MFU for every size.

Batches are padded to their longest example (the project's batching, length-grouped). Rows that
pack several texts (train.padding_free, w2s_scale/padding_free.py) are not measured here: they are
checked with sdpa and eager attention only, and refused with flash-attention, which this benchmark
uses where it can; the benchmark says so.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SIZES = {"0.5b": "qwen2.5-0.5b", "1.5b": "qwen2.5-1.5b", "7b": "qwen2.5-7b"}
MODES = {"full-zero2": (False, 2), "full-zero3": (False, 3), "lora": (True, 2)}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, per GPU
ANCHORS = {  # (tokens/s per GPU, MFU), published
    "lora": ("NeMo AutoModel Qwen2.5-7B LoRA, 1 H100", 14_110.0, 0.43),
    "full": ("torchtitan Llama-3.1-8B FSDP, per H100", 5_762.0, 0.36),
}
# the tiny shape of --tiny: Qwen2 with a few small layers, through the catalogue's own config
TINY = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}
COLUMNS = ["model", "mode", "zero", "attention", "seq len", "micro", "tokens/s/GPU", "pad %",
           "TFLOP/s", "MFU", "vs anchor tok/s", "vs anchor MFU"]


def suite_lengths() -> list[int]:
    """The paper suite's shortest, median and longest mean tokens per example (costs.py's
    estimates for configs/paper_suite.yaml's datasets)."""
    import yaml

    from w2s_scale.costs import DATA_SHAPES, UNKNOWN_SHAPE

    datasets = yaml.safe_load((REPO / "configs" / "paper_suite.yaml").read_text())["datasets"]
    means = sorted(DATA_SHAPES.get(d["dataset"], UNKNOWN_SHAPE).mean_tokens for d in datasets)
    return [means[0], int(statistics.median(means)), means[-1]]


def attention_implementation(device: str) -> str:
    from transformers.utils import is_flash_attn_2_available

    return "flash_attention_2" if device == "cuda" and is_flash_attn_2_available() else "sdpa"


def device_peak() -> tuple[str, float | None]:
    """(device name, dense bf16 peak FLOP/s or None where unknown: CPU, another GPU)."""
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return name, None if peak is None else peak * 1e12


def flops_per_token(hf_config, n_params: int, lora: bool, seq: float) -> float:
    heads = hf_config.num_attention_heads
    width = heads * (getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads)
    forward = 2.0 * n_params + 4.0 * hf_config.num_hidden_layers * seq * width
    return (2.0 if lora else 3.0) * forward


def non_embedding_params(model) -> int:
    """The backbone's parameters but its token embeddings (and the head's), under any ZeRO stage
    (a ZeRO-3 partition's full size is ds_numel)."""
    total = 0
    for name, p in model.named_parameters():
        if "embed_tokens" in name or name.startswith("head") or "lora_" in name:
            continue
        total += getattr(p, "ds_numel", p.numel())
    return total


def measure(size: str, mode: str, seq: int, steps: int, warmup: int, tiny: bool) -> dict:
    """One configuration, in this process: build the engine, train `steps` steps, read the
    per-step records the engine logs."""
    import numpy as np
    import torch

    from w2s_scale import distributed as dist
    from w2s_scale.config import LossConfig, ModelConfig, TrackingConfig, TrainConfig
    from w2s_scale.data.batching import TokenizedSet
    from w2s_scale.engine import StopFlag, build_engine, train
    from w2s_scale.models import load_hf_config
    from w2s_scale.tracking import Tracker

    lora, zero = MODES[mode]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    attn = attention_implementation(device)
    overrides = dict(TINY) if tiny else {}
    overrides["_attn_implementation"] = attn
    model_cfg = ModelConfig(name=SIZES[size], init="random", dtype="bf16", config_overrides=overrides,
                            lora={"enabled": lora})
    micro = 4 if tiny else model_cfg.train.get("micro_batch_size", 8)
    batch = 8 if tiny else 32
    train_cfg = TrainConfig(epochs=1, batch_size=batch, micro_batch_size=micro, zero_stage=zero,
                            lr=1e-5, checkpoint_every=0)
    hf_config = load_hf_config(model_cfg)
    rng = np.random.default_rng(0)
    n = batch * steps
    # lengths spread about the mean as a dataset's are: uniform in [s/2, 3s/2]
    lengths = rng.integers(max(2, seq // 2), seq + seq // 2 + 1, size=n)
    ids = [rng.integers(1, hf_config.vocab_size, size=int(k)).tolist() for k in lengths]
    data = TokenizedSet([str(i) for i in range(n)], ids, rng.integers(0, 2, size=n))
    targets = np.eye(2, dtype=np.float32)[data.labels]
    tokenizer = type("PadOnly", (), {"pad_token_id": 0, "padding_side": "left"})()

    dist.init()
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(Path(tmp) / "log.jsonl", TrackingConfig(progress=False), "bench", "bench")
        eng = build_engine(model_cfg, train_cfg, steps, tokenizer)
        n_params = non_embedding_params(eng.engine.module)
        with StopFlag() as stop:
            train(eng, data, targets, LossConfig(name="xent"), 0, Path(tmp), tracker, stop)
        records = [json.loads(line) for line in (Path(tmp) / "log.jsonl").read_text().splitlines()]
        eng.close()
    steps_seen = [r for r in records if r.get("event") == "train"][warmup:]
    tokens_s = statistics.median(r["tokens_per_s"] for r in steps_seen) / dist.world_size()
    memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    # padding: the project's batches are length-grouped; the share of padded positions
    padded = sum(max(lengths[i:i + micro]) * len(lengths[i:i + micro])
                 for i in range(0, n, micro))
    return {"size": size, "mode": mode, "zero": zero, "attention": attn, "seq": seq, "micro": micro,
            "tokens_s": tokens_s, "flops_token": flops_per_token(hf_config, n_params, lora,
                                                                 float(lengths.mean())),
            "pad": 1.0 - lengths.sum() / padded, "gpu_mem_gib": memory, "n_params": n_params}


def child(args) -> None:
    result = measure(args.child_size, args.child_mode, args.child_seq, args.steps, args.warmup,
                     args.tiny)
    print("RESULT " + json.dumps(result), flush=True)


def row(result: dict, peak: float | None, tiny: bool) -> list[str]:
    name = "tiny-qwen2" if tiny else SIZES[result["size"]]
    if "error" in result:
        return [name, result["mode"], str(MODES[result["mode"]][1]), "-", str(result["seq"]), "-",
                result["error"], "-", "-", "-", "-", "-"]
    flops = result["tokens_s"] * result["flops_token"]
    mfu = flops / peak if peak else None
    anchor_name, anchor_tokens, anchor_mfu = ANCHORS["lora" if result["mode"] == "lora" else "full"]
    vs_tokens = (f"{result['tokens_s'] / anchor_tokens:.2f}x" if result["size"] == "7b" and not tiny
                 else "n/a (not 7B)")
    vs_mfu = f"{mfu / anchor_mfu:.2f}x" if mfu is not None else "n/a (no peak)"
    return [name, result["mode"], str(result["zero"]), result["attention"], str(result["seq"]),
            str(result["micro"]), f"{result['tokens_s']:,.0f}", f"{100 * result['pad']:.0f}",
            f"{flops / 1e12:.2f}", f"{100 * mfu:.1f}%" if mfu is not None else "n/a (no peak)",
            vs_tokens, vs_mfu]


def print_table(rows: list[list[str]]) -> None:
    table = [COLUMNS] + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny Qwen2 shape (chosen by itself when there is no GPU)")
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"of {', '.join(SIZES)}")
    parser.add_argument("--modes", default=",".join(MODES), help=f"of {', '.join(MODES)}")
    parser.add_argument("--seq-lens", default=None,
                        help="mean tokens per example (default: the paper suite's shortest, median "
                             "and longest, from costs.py)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per configuration")
    parser.add_argument("--warmup", type=int, default=None, help="first steps left out")
    parser.add_argument("--child-size", help=argparse.SUPPRESS)
    parser.add_argument("--child-mode", help=argparse.SUPPRESS)
    parser.add_argument("--child-seq", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    args.tiny = args.tiny or not torch.cuda.is_available()
    args.steps = args.steps or (3 if args.tiny else 12)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    if args.child_mode:
        child(args)
        return
    sizes = [s for s in args.sizes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    for bad in [s for s in sizes if s not in SIZES] + [m for m in modes if m not in MODES]:
        sys.exit(f"--sizes/--modes: {bad!r} is not one of {', '.join([*SIZES, *MODES])}")
    if args.tiny:
        sizes = sizes[:1]
    seqs = [int(s) for s in args.seq_lens.split(",")] if args.seq_lens else suite_lengths()
    device, peak = device_peak()
    attn = attention_implementation("cuda" if device != "cpu" else "cpu")
    print(f"device: {device}; dense bf16 peak: "
          f"{f'{peak / 1e12:g} TFLOP/s' if peak else 'unknown here (no MFU)'}; attention: {attn}; "
          f"bf16; {'TINY model on CPU: the figures only show the benchmark works' if args.tiny else ''}")
    print("MFU FLOPs per token: full 6N + 12 L s d, LoRA 4N + 8 L s d (N non-embedding params, "
          "L layers, d attention width, s mean real tokens); anchors: "
          + "; ".join(f"{name}: {tok:,.0f} tok/s, {100 * mfu:.0f}% MFU"
                      for name, tok, mfu in ANCHORS.values()))
    print("batches: padded (length-grouped); packed (train.padding_free): not measured here, "
          "and refused with flash-attention")
    rows = []
    for size in sizes:
        for mode in modes:
            for seq in seqs:
                if args.tiny:  # one process for all: seconds, not a start-up per configuration
                    rows.append(row(measure(size, mode, seq, args.steps, args.warmup, True), peak, True))
                    continue
                # a fresh process per configuration on a GPU: its memory is its own, an OOM its own
                cmd = [sys.executable, __file__, "--child-size", size, "--child-mode", mode,
                       "--child-seq", str(seq), "--steps", str(args.steps), "--warmup",
                       str(args.warmup)] + (["--tiny"] if args.tiny else [])
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                                      env={**os.environ, "HF_HUB_OFFLINE": "1"})
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:  # e.g. out of memory: said in the row, the others go on
                    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                    result = {"size": size, "mode": mode, "seq": seq,
                              "error": "OOM" if "out of memory" in proc.stderr.lower() else tail[:60]}
                else:
                    result = json.loads(line.removeprefix("RESULT "))
                rows.append(row(result, peak, args.tiny))
                print(f"  ({size} {mode} s={seq}: {time.perf_counter() - t0:.0f} s)", flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
    from w2s_scale import distributed

    distributed.exit_process(0)  # a process that joined a group of one: see exit_process
