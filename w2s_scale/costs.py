"""What a sweep costs in GPU-hours, estimated before anything runs (`w2s sweep --dry-run`).

FLOPs, per token of one example (N = the backbone's non-embedding parameters, L layers, d the
attention width, s the example's tokens):
  forward            F = 2 N + 4 L s d           (matmuls; attention scores and mixing)
  full fine-tuning   3 F (forward + backward), + F with gradient checkpointing (recomputed forward)
  LoRA               2 F (the backward needs activation gradients only), + F with checkpointing
  global-stats pass  + F per training token (logconf's no-grad pre-pass over the batch)
  prediction         F per token (test set; B for weak labels or train agreement)
A gt run trains on A (epochs x |A| examples) and predicts test and B; a transfer run trains on B
and predicts test and B. Time = FLOPs / (MFU x peak); the peak is an H100 SXM's dense peak for the
model's dtype. Each job also pays a fixed start-up (process start, DeepSpeed init, reading the
weights; STARTUP_S + weight bytes / READ_BYTES_PER_S) on all its GPUs. Dataset sizes and mean
tokens per example are ESTIMATES (below), stated as such; queueing is not counted.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from w2s_scale.assets import gpt2_tokenizer
from w2s_scale.catalogue import lookup
from w2s_scale.data.sources import DATASETS
from w2s_scale.data.splits import make_splits
from w2s_scale.losses import needs_global_stats

# H100 SXM dense peak, TFLOP/s, per training dtype (fp32 without TF32, torch's matmul default)
PEAK_TFLOPS = {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}
DEFAULT_MFU = 0.35            # assumed model-FLOPs utilisation (typical of ZeRO fine-tuning)
STARTUP_S = 120.0             # assumed per-job start-up besides reading the weights
READ_BYTES_PER_S = 2e9        # assumed read speed of the weights from shared storage, per job
BYTES_PER_PARAM = {"bf16": 2, "fp16": 2, "fp32": 4}
DEFAULT_CLUSTER_GPUS = 64
DEFAULT_CLUSTER_HOURS = 48.0


@dataclass(frozen=True)
class DataShape:
    """Rows of the split serving as train and as test where the dataset registry has no sizes
    (None: unknown, taken as at least the config's n_train / n_test), and mean tokens per
    formatted example (GPT-2 BPE; Qwen's
    tokenizer gives similar counts on English). Sizes from the datasets' cards; token means are
    estimates from the formats (words x 1.3 plus the template), not measurements."""
    train_rows: Optional[int]
    test_rows: Optional[int]
    mean_tokens: int


DATA_SHAPES: dict[str, DataShape] = {
    "anli-r2": DataShape(45_460, 1_000, 70),
    "boolq": DataShape(9_427, 3_270, 160),
    "cola": DataShape(8_551, 1_043, 20),
    "cosmos_qa": DataShape(25_262, 2_985, 110),
    "dream": DataShape(6_116, 2_041, 130),
    "ethics-deontology": DataShape(18_164, 3_536, 35),  # ethics: the hub test split is test-hard
    "ethics-justice": DataShape(21_791, 2_052, 35),
    "ethics-virtue": DataShape(28_245, 4_780, 30),
    "ethics-utilitarianism": DataShape(13_737, 4_271, 60),
    "hellaswag": DataShape(39_905, 10_042, 90),
    "hellaswag_choices": DataShape(39_905, 10_042, 170),  # every ending listed
    "mc_taco": DataShape(9_442, 3_783, 50),
    "multirc": DataShape(27_243, 4_848, 330),
    "openbookqa": DataShape(4_957, 500, 30),
    "openbookqa_choices": DataShape(4_957, 500, 55),
    "paws": DataShape(49_401, 8_000, 55),
    "piqa": DataShape(16_113, 1_838, 50),
    "quail": DataShape(10_246, 2_164, 420),
    "quartz": DataShape(2_696, 784, 60),
    "sciq": DataShape(11_679, 1_000, 30),
    "sciq_with_support": DataShape(11_679, 1_000, 120),
    "social_i_qa": DataShape(33_410, 1_954, 45),
    "social_i_qa_choices": DataShape(33_410, 1_954, 70),
    "sst2": DataShape(67_349, 872, 25),
    "twitter-sentiment": DataShape(None, None, 30),
    "wic": DataShape(5_428, 638, 35),
    "amazon_polarity": DataShape(3_600_000, 400_000, 100),
    "anthropic_hh": DataShape(160_800, 8_552, 250),
    "anthropic_hh_pairwise": DataShape(160_800, 8_552, 500),
    # the automated-W2S testbed's folders: their row counts are not published with its code, so
    # the config's n_train / n_test stand in (printed as such); tokens: a HelpSteer-style prompt
    # and two answers of a few hundred tokens each; a question and one proposed solution
    "aar_pairwise": DataShape(None, None, 1100),
    "aar_binary": DataShape(None, None, 600),
}
UNKNOWN_SHAPE = DataShape(None, None, 100)


def split_rows(dataset: str) -> tuple[Optional[int], Optional[int]]:
    """Rows of the train and test splits: the dataset registry's sizes where it knows them, else
    DATA_SHAPES (None: unknown)."""
    known = getattr(DATASETS.get(dataset), "sizes", (None, None)) or (None, None)
    shape = DATA_SHAPES.get(dataset, UNKNOWN_SHAPE)
    return (known[0] if known[0] is not None else shape.train_rows,
            known[1] if known[1] is not None else shape.test_rows)


def rows_used(dataset: str, n_train: int, n_test: int) -> tuple[int, int]:
    """(A + B, test) rows a run of this dataset uses: the config's counts capped by the split."""
    train_rows, test_rows = split_rows(dataset)
    train = n_train if train_rows is None else min(n_train, train_rows)
    test = n_test if test_rows is None else min(n_test, test_rows)
    return train, test


MEASURE_ROWS = 2000  # documents tokenized to measure a local dataset's mean length


@functools.lru_cache(maxsize=None)
def tokens_per_example(data) -> tuple[float, str]:
    """(mean tokens per example, where the number comes from): measured with the GPT-2 tokenizer
    on up to MEASURE_ROWS documents when the data is in local files (`data.path`), else the
    estimate of DATA_SHAPES."""
    estimate = float(DATA_SHAPES.get(data.dataset, UNKNOWN_SHAPE).mean_tokens)
    if not data.path:
        return estimate, "estimate"
    if not Path(data.path).expanduser().exists():  # a dry run away from the data says so
        return estimate, f"estimate: data.path {data.path} not found here, not measured"
    try:
        return _measured(data.model_copy(update={"n_train": MEASURE_ROWS, "n_test": 2})), "measured"
    except Exception:  # noqa: BLE001 - unreadable data: preflight reports it; the plan estimates
        return estimate, "estimate"


def _measured(data) -> float:
    from transformers import AutoTokenizer

    splits = make_splits(data, seed=0)
    texts = [ex.text for ex in splits.a + splits.b]
    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer())
    return sum(min(len(ids), data.max_length) for ids in tokenizer(texts)["input_ids"]) / len(texts)


def forward_flops_per_token(entry, tokens: float) -> float:
    arch = entry.arch
    embeddings = arch.vocab * arch.hidden + (arch.max_positions * arch.hidden
                                             if arch.model_type == "gpt2" else 0)
    non_embedding = arch.backbone_params() - embeddings
    return 2.0 * non_embedding + 4.0 * arch.layers * tokens * arch.heads * arch.dim_per_head


def run_flops(entry, model, kind: str, train_examples: int, predict_examples: int, tokens: float,
              epochs: float, global_stats: bool) -> float:
    """FLOPs of one run (see the module doc for the formula)."""
    fwd = forward_flops_per_token(entry, tokens)
    if kind == "labels":  # combines label files (numpy): no model runs
        return 0.0
    if kind == "activations":  # one forward pass over B, nothing trained
        return tokens * train_examples * fwd
    per_train_token = (2.0 if model.lora.enabled else 3.0) * fwd
    if model.gradient_checkpointing:
        per_train_token += fwd
    if global_stats and kind == "transfer":
        per_train_token += fwd
    return tokens * (epochs * train_examples * per_train_token + predict_examples * fwd)


@dataclass(frozen=True)
class RunCost:
    key: str
    model: str
    kind: str
    gpus: int
    gpu_hours: Optional[float]   # None: the model is not in the catalogue (no architecture numbers)

    @property
    def wall_hours(self) -> Optional[float]:
        return None if self.gpu_hours is None else self.gpu_hours / self.gpus


def sweep_costs(cfg, runs, mfu: float = DEFAULT_MFU) -> list[RunCost]:
    """One RunCost per run of the sweep (sweep.plan_sweep's runs)."""
    out = []
    tokens_of = {d.dataset: tokens_per_example(d)[0] for d in cfg.datasets}
    for run in runs:
        plan, data = run.plan, run.experiment.data
        entry = lookup(plan.model.name)
        gpus = max(1, run.resources.nodes * run.resources.gpus_per_node)
        if entry is None:
            out.append(RunCost(run.key, plan.model.short_name, plan.kind, gpus, None))
            continue
        n_train, n_test = rows_used(data.dataset, data.n_train, data.n_test)
        tokens = min(tokens_of[data.dataset], data.max_length)
        n_a, n_b = data.a_b_sizes(n_train)
        n_trained = min(n_a, plan.train.gt_n_train or n_a) if plan.kind == "gt" else n_b
        if plan.kind == "activations" and hasattr(plan.stage, "words"):  # ccs.Contrast: 2 per example
            n_trained *= 2
        flops = run_flops(entry, plan.model, plan.kind, n_trained, n_test + n_b, tokens,
                          plan.train.epochs, needs_global_stats(plan.loss.name, plan.loss.params))
        compute_s = flops / (mfu * PEAK_TFLOPS[plan.model.dtype] * 1e12)
        startup_s = STARTUP_S + (entry.arch.total_params() * BYTES_PER_PARAM[plan.model.dtype]
                                 / READ_BYTES_PER_S)
        out.append(RunCost(run.key, plan.model.short_name, plan.kind, gpus,
                           (compute_s + startup_s * gpus) / 3600.0))
    return out


def rows_notes(cfg) -> list[str]:
    """Per dataset, the A + B and test rows the estimate counts, and whether they are the
    dataset's (registry or card) or only the config's caps (its size unknown here)."""
    out = []
    for d in cfg.datasets:
        train_rows, test_rows = split_rows(d.dataset)
        n_train, n_test = rows_used(d.dataset, d.n_train, d.n_test)
        known = train_rows is not None and test_rows is not None
        how = ("the dataset's sizes, capped by n_train / n_test" if known else
               "data.n_train / data.n_test: the dataset's size is not known before its files are "
               "read, so GPU-hours scale with these caps; lower them to the files' rows for a "
               "closer estimate")
        out.append(f"{d.dataset} A + B {n_train:,}, test {n_test:,} ({how})")
    return out


def critical_path_hours(runs, costs: list[RunCost]) -> float:
    """The longest chain of dependent runs (a gt run, then a transfer run on its labels), each
    on its own allocation: the sweep's wall time with unlimited GPUs."""
    wall = {c.key: c.wall_hours or 0.0 for c in costs}
    finish: dict[str, float] = {}
    for run in runs:  # plan_sweep lists each run after its dependencies
        # a run of a model with no estimate (not in `costs`) counts as 0 h, not a KeyError
        finish[run.key] = wall.get(run.key, 0.0) + max((finish[d] for d in run.deps), default=0.0)
    return max(finish.values(), default=0.0)


def format_costs(cfg, runs, mfu: float = DEFAULT_MFU, cluster_gpus: int = DEFAULT_CLUSTER_GPUS,
                 cluster_hours: float = DEFAULT_CLUSTER_HOURS) -> str:
    costs = sweep_costs(cfg, runs, mfu)
    by_model: dict[str, list[RunCost]] = {}
    for cost in costs:
        by_model.setdefault(cost.model, []).append(cost)
    peaks = ", ".join(f"{k} {v:g}" for k, v in PEAK_TFLOPS.items())
    lines = [f"compute estimate: {len(costs)} jobs; MFU {mfu:g} of an H100's dense peak ({peaks} "
             f"TFLOP/s), {STARTUP_S:g} s + weights at {READ_BYTES_PER_S / 1e9:g} GB/s start-up per "
             f"job; FLOPs, dataset sizes and tokens per example (estimates) in w2s_scale/costs.py"]
    header = ["model", "runs", "GPUs/run", "GPU-hours", "longest run (h)"]
    table = [header]
    unknown = []
    for model, items in by_model.items():
        if any(c.gpu_hours is None for c in items):
            unknown.append(model)
            continue
        table.append([model, str(len(items)), str(items[0].gpus),
                      f"{sum(c.gpu_hours for c in items):,.2f}",
                      f"{max(c.wall_hours for c in items):.2f}"])
    known = [c for c in costs if c.gpu_hours is not None]
    total = sum(c.gpu_hours for c in known)
    table.append(["total", str(len(costs)), "", f"{total:,.2f}", ""])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines += ["  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(row, widths))) for row in table]
    if unknown:
        lines.append(f"  not estimated (not in the catalogue, no architecture numbers): {', '.join(unknown)}")
    lines.append("  tokens per example: " + ", ".join(
        f"{d.dataset} {value:.0f} ({how})" for d in cfg.datasets
        for value, how in [tokens_per_example(d)]))
    lines += [f"  rows: {line}" for line in rows_notes(cfg)]
    path = critical_path_hours(runs, known)
    widest = max((c.gpus for c in costs), default=1)
    ideal = total / cluster_gpus
    wall = max(ideal, path)
    fits = wall <= cluster_hours and widest <= cluster_gpus
    lines.append(f"  on {cluster_gpus} x H100 for {cluster_hours:g} h ({cluster_gpus * cluster_hours:,.0f} "
                 f"GPU-hours): total / GPUs = {ideal:.1f} h, longest dependency chain = {path:.1f} h "
                 f"-> at least {wall:.1f} h: {'FITS' if fits else 'DOES NOT FIT'}"
                 + ("" if widest <= cluster_gpus else f" (a run asks for {widest} GPUs)"))
    lines.append("  another cluster: --cluster-gpus N --cluster-hours H")
    if cfg.executor == "local":
        lines.append(f"  executor local: one run after another, about "
                     f"{sum(c.wall_hours for c in known):.1f} h on one H100 per run")
    return "\n".join(lines)
