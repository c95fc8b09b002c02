"""Memory planning: will this model train on that cluster, and with which settings?

Per GPU, for one training micro batch: parameters, gradients, optimizer states, activations and
other (runtime and communication buffers), under the run's ZeRO stage, offload, LoRA, dtype and
gradient checkpointing, as `w2s plan` prints them.

Model states (parameters + gradients + optimizer states) follow DeepSpeed's own estimators
(`estimate_zero2_model_states_mem_needs`, `estimate_zero3_model_states_mem_needs`, the functions
behind the `*_all_cold` tables) where they apply, i.e. full fine-tuning in 16-bit mixed precision
under ZeRO-2/3. Elsewhere (LoRA, where only the adapters and the head carry gradients and Adam
states; fp32; stages 0/1) the same byte counts are applied to the trainable parameters only; the
two agree exactly where both apply (tests/test_catalogue_memory.py). Bytes per parameter, mixed
precision: 2 (16-bit weights), 2 + 4 (16-bit gradients, fp32 gradient partition), 12 (fp32 master
weights, Adam's two moments).

Activations are an estimate of what backward keeps per layer with memory-efficient attention
(flash / SDPA kernels, no seq x seq matrix), counted tensor by tensor (Korthikanti et al. 2022):
the norm inputs, the attention inputs, q, k, v and the attention output, and the MLP's
intermediates (four of width `intermediate` for gated MLPs, two for GELU MLPs). With gradient
checkpointing only each layer's input is kept, plus one layer being recomputed. The classifier
reads one token, so no vocabulary-sized logits exist. Units are GB = 1e9 bytes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional

from w2s_scale import ds_config as dsc
from w2s_scale.catalogue import apply_train_defaults, lookup
from w2s_scale.cli_args import positive_float, positive_int
from w2s_scale.config import ExperimentConfig, ModelConfig, TrainConfig, experiment_for, resources_for
from w2s_scale.data.images import is_image_data
from w2s_scale.data.sources import num_classes
from w2s_scale.loading import load_sweep
from w2s_scale.models import load_hf_config, lora_targets
from w2s_scale.planning import plan_gt

GB = 1e9
RUNTIME_GB = 1.5          # CUDA context, NCCL, allocator slack: a fixed allowance per GPU
CPU_BUFFER_FACTOR = 1.5   # DeepSpeed's additional_buffer_factor for host memory
MIXED = ("bf16", "fp16")


@dataclass(frozen=True)
class Cluster:
    nodes: int = 1
    gpus_per_node: int = 8
    gpu_mem_gb: float = 80.0
    cpu_mem_gb: Optional[float] = None   # host memory per node; None: not checked

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def __str__(self) -> str:
        return f"{self.nodes} x {self.gpus_per_node} x {self.gpu_mem_gb:g} GB"


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on: parameter counts and the layer dimensions."""

    name: str
    model_type: str
    params: int              # backbone + classifier head
    trainable: int           # all of them, or LoRA adapters + head, or the head alone
    largest_layer: int       # parameters of the largest single module (ZeRO-3 gathers it whole)
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    gated_mlp: bool


def _hf_config(model: ModelConfig):
    """The catalogue's config (no download) when the name is in it, else the real one."""
    entry = lookup(model.name)
    if entry is None:
        return load_hf_config(model)
    hf_config = entry.hf_config()
    for key, value in model.config_overrides.items():
        setattr(hf_config, key, value)
    return hf_config


def _matches(module_name: str, targets: Iterable[str]) -> bool:
    # peft's rule for a list of target names: the full name or its last dotted components
    return any(module_name == t or module_name.endswith("." + t) for t in targets)


def model_shape(model: ModelConfig, hf_config=None, num_classes: int = 2) -> ModelShape:
    """Counts from the model built on the meta device (no memory, no download for catalogue
    entries); LoRA's trainable parameters from the shapes of the modules it adapts. The head has
    `num_classes` outputs (1000 for ImageNet: no longer negligible beside a small backbone)."""
    import torch
    from transformers import AutoModel

    hf_config = hf_config if hf_config is not None else _hf_config(model)
    with torch.device("meta"):
        backbone = AutoModel.from_config(hf_config)
    hidden = hf_config.hidden_size
    head = num_classes * hidden
    params = sum(p.numel() for p in backbone.parameters()) + head
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in backbone.modules())
    if model.linear_probe:
        trainable = head
    elif model.lora.enabled:
        targets = lora_targets(model, hf_config)
        adapters = 0
        for name, module in backbone.named_modules():
            weight = getattr(module, "weight", None)
            if weight is not None and weight.dim() == 2 and _matches(name, targets):
                adapters += model.lora.r * sum(weight.shape)  # A: r x in, B: out x r
        trainable = adapters + head
    else:
        trainable = params
    heads = hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or hidden // heads
    gated = any(name.endswith("gate_proj") for name, _ in backbone.named_modules())
    intermediate = (getattr(hf_config, "intermediate_size", None) or getattr(hf_config, "n_inner", None)
                    or 4 * hidden)
    return ModelShape(name=model.short_name, model_type=hf_config.model_type, params=params,
                      trainable=trainable, largest_layer=largest,
                      layers=hf_config.num_hidden_layers, hidden=hidden, heads=heads,
                      kv_heads=getattr(hf_config, "num_key_value_heads", None) or heads,
                      head_dim=head_dim, intermediate=intermediate, gated_mlp=gated)


def activation_bytes(shape: ModelShape, micro_batch: int, seq_len: int, dtype: str,
                     checkpointing: bool) -> float:
    a = 2 if dtype in MIXED else 4
    tokens = micro_batch * seq_len
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    mlp = (4 if shape.gated_mlp else 2) * shape.intermediate
    per_layer = tokens * a * (4 * shape.hidden + 2 * q + 2 * kv + mlp)
    layer_input = tokens * a * shape.hidden
    if checkpointing:  # inputs of every layer, one layer recomputed (and its gradients)
        return shape.layers * layer_input + 2 * per_layer
    return shape.layers * per_layer + 2 * layer_input


@dataclass
class MemoryPlan:
    model: str
    cluster: Cluster
    zero_stage: int
    offload_optimizer: bool
    offload_param: bool
    lora: bool
    gradient_checkpointing: bool
    dtype: str
    micro_batch: int
    seq_len: int
    params: int
    trainable: int
    params_gb: float
    grads_gb: float
    optimizer_gb: float
    activations_gb: float
    other_gb: float
    cpu_gb_per_node: float
    deepspeed_model_states_gb: Optional[float] = None  # DeepSpeed's estimator, where it applies
    notes: list[str] = field(default_factory=list)

    @property
    def model_states_gb(self) -> float:
        return self.params_gb + self.grads_gb + self.optimizer_gb

    @property
    def total_gb(self) -> float:
        return self.model_states_gb + self.activations_gb + self.other_gb

    @property
    def fits(self) -> bool:
        cpu_ok = self.cluster.cpu_mem_gb is None or self.cpu_gb_per_node <= self.cluster.cpu_mem_gb
        return self.total_gb <= self.cluster.gpu_mem_gb and cpu_ok

    @property
    def method(self) -> str:
        parts = [f"ZeRO-{self.zero_stage}"]
        if self.offload_param:
            parts.append("offload p+o")
        elif self.offload_optimizer:
            parts.append("offload opt")
        parts.append("LoRA" if self.lora else ("full" if self.trainable == self.params else "probe"))
        if self.gradient_checkpointing:
            parts.append("ckpt")
        parts.append(self.dtype)
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cluster"] = str(self.cluster)
        out.update(model_states_gb=self.model_states_gb, total_gb=self.total_gb, fits=self.fits,
                   method=self.method)
        return out


def _zero_settings(ds: dict[str, Any]):
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    zero = DeepSpeedZeroConfig(**(ds.get("zero_optimization") or {}))
    off_opt = bool(zero.offload_optimizer and str(zero.offload_optimizer.device).endswith(("cpu", "nvme")))
    off_par = bool(zero.offload_param and str(zero.offload_param.device).endswith(("cpu", "nvme")))
    return zero, int(zero.stage), off_opt, off_par


def estimate(shape: ModelShape, train: TrainConfig, dtype: str, checkpointing: bool, lora: bool,
             seq_len: int, cluster: Cluster, ds: Optional[dict] = None) -> MemoryPlan:
    """Per-GPU memory of one training step; `ds` is the run's DeepSpeed config (built from
    `train` for the cluster's GPU count when not given)."""
    notes: list[str] = []
    if ds is None:
        try:
            ds = dsc.build(train, dtype, cluster.gpus)
        except dsc.DSConfigError as err:
            notes.append(str(err))
            ds = dsc.build(train.model_copy(update={"batch_size": train.micro_batch_size * cluster.gpus}),
                           dtype, cluster.gpus)
    zero, stage, off_opt, off_par = _zero_settings(ds)
    if stage < 3 and off_par:
        off_par = False  # parameter offload exists under ZeRO-3 only
    P, T, LL = shape.params, shape.trainable, shape.largest_layer
    N, g, n = cluster.gpus, cluster.gpus_per_node, cluster.nodes
    mixed = dtype in MIXED
    pb = 2 if mixed else 4                   # weights as computed with
    grad32 = 4 if mixed else 0               # fp32 gradient partition for the fp32 step
    opt_b = 12 if mixed else 8               # fp32 master copy (mixed only) + Adam m and v
    gb = grad32 or pb                        # bytes of the gradient the optimizer reads

    if stage == 3:
        live = 2 * pb * LL                   # the largest module gathered whole (weights + grads)
        params = (0 if off_par else pb * P / N) + live
        grads = 0 if off_opt else gb * T / N
        optim = 0 if off_opt else opt_b * T / N
        cpu = ((pb * P if off_par else 0) + ((opt_b + gb) * T if off_opt else 0)) / n
        cpu = cpu * CPU_BUFFER_FACTOR if (off_par or off_opt) else 2 * pb * LL * g * CPU_BUFFER_FACTOR
    else:
        params = pb * P
        if off_opt:
            grads = optim = 0
            cpu = max(4 * N * P, (opt_b + gb) * T) * CPU_BUFFER_FACTOR
        else:
            if stage == 2:
                grads = ((2 if mixed else 0) + gb) * T / N
            elif stage == 1:
                grads = pb * T + grad32 * T / N
            else:
                grads = pb * T + grad32 * T
            optim = opt_b * T / (N if stage >= 1 else 1)
            cpu = 4 * P * g * CPU_BUFFER_FACTOR   # each process's copy while loading
    ds_states = None
    if mixed and T == P and stage in (2, 3):
        ds_states, ds_cpu = deepspeed_estimate(stage, P, LL, cluster, off_opt, off_par)
        cpu = ds_cpu
    buffers = 0.0
    if stage >= 2 and T:
        # DeepSpeed's communication buckets, bounded by what there is to communicate
        buffers += min(zero.reduce_bucket_size, T) * gb
        bucket = zero.prefetch_bucket_size if stage == 3 else zero.allgather_bucket_size
        buffers += min(bucket, P if stage == 3 else T) * pb
    acts = activation_bytes(shape, train.micro_batch_size, seq_len, dtype, checkpointing)
    if lora and stage < 3 and P * pb > cluster.gpu_mem_gb * GB / 2:
        notes.append("ZeRO-0/1/2 keep the whole frozen model on every GPU; use zero_stage 3")
    return MemoryPlan(
        model=shape.name, cluster=cluster, zero_stage=stage, offload_optimizer=off_opt,
        offload_param=off_par, lora=lora, gradient_checkpointing=checkpointing, dtype=dtype,
        micro_batch=train.micro_batch_size, seq_len=seq_len, params=P, trainable=T,
        params_gb=params / GB, grads_gb=grads / GB, optimizer_gb=optim / GB,
        activations_gb=acts / GB, other_gb=RUNTIME_GB + buffers / GB, cpu_gb_per_node=cpu / GB,
        deepspeed_model_states_gb=None if ds_states is None else ds_states / GB, notes=notes)


def deepspeed_estimate(stage: int, params: int, largest_layer: int, cluster: Cluster,
                       offload_optimizer: bool, offload_param: bool) -> tuple[float, float]:
    """DeepSpeed's own (GPU bytes, host bytes per node) for full fine-tuning in 16-bit."""
    if stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            total_params=params, largest_layer_params=largest_layer,
            num_gpus_per_node=cluster.gpus_per_node, num_nodes=cluster.nodes,
            cpu_offload=offload_optimizer or offload_param, cpu_offload_params=offload_param,
            zero_init=True, additional_buffer_factor=CPU_BUFFER_FACTOR)
        return float(gpu), float(cpu)
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    cpu, gpu = estimate_zero2_model_states_mem_needs(
        total_params=params, num_gpus_per_node=cluster.gpus_per_node, num_nodes=cluster.nodes,
        cpu_offload=offload_optimizer, additional_buffer_factor=CPU_BUFFER_FACTOR)
    return float(gpu), float(cpu)


def _classes(data) -> int:
    """The task's K where the dataset registry knows it (text tasks, data.num_classes), else 2."""
    if is_image_data(data):
        return data.num_classes or 2
    return num_classes(data)


def plan_model(cfg: ExperimentConfig, model: ModelConfig, cluster: Cluster,
               seq_len: Optional[int] = None) -> MemoryPlan:
    """The plan of one model of an experiment, with the run's own train settings."""
    train = plan_gt(cfg, model, cfg.seeds[0]).train  # the settings its runs resolve
    shape = model_shape(model, num_classes=_classes(cfg.data))
    plan = estimate(shape, train, model.dtype, model.gradient_checkpointing, model.lora.enabled,
                    seq_len or cfg.data.max_length, cluster)
    if train.ds_config is None and not plan.fits and not model.lora.enabled and train.zero_stage == 3:
        plan.notes.append("try lora.enabled: true, train.offload: true or more GPUs")
    return plan


def named_models(cfg: ExperimentConfig, names: Iterable[str]) -> list[ModelConfig]:
    """Models given by name only (catalogue names or hub ids), with their catalogue defaults and
    the experiment's train section, as a model section naming them would get."""
    return [ModelConfig(**apply_train_defaults({"name": name}, cfg.train.model_fields_set))
            for name in names]


def cluster_for(model: ModelConfig, nodes: Optional[int] = None, gpus_per_node: Optional[int] = None,
                gpu_mem_gb: float = 80.0, cpu_mem_gb: Optional[float] = None) -> Cluster:
    """The given shape; what is not given comes from the model's catalogue resources (else 1)."""
    entry = lookup(model.name)
    return Cluster(nodes or (entry.slurm.nodes if entry else 1),
                   gpus_per_node or (entry.slurm.gpus_per_node if entry else 1), gpu_mem_gb, cpu_mem_gb)


def add_plan_args(parser) -> None:
    parser.add_argument("--nodes", type=positive_int,
                        help="nodes (default: the model's catalogue resources, else 1)")
    parser.add_argument("--gpus-per-node", type=positive_int,
                        help="GPUs per node (default: the model's catalogue resources, else 1)")
    parser.add_argument("--gpu-mem", type=positive_float, default=80.0, help="GB per GPU (default 80)")
    parser.add_argument("--cpu-mem", type=positive_float,
                        help="host memory per node in GB (checked if given)")
    parser.add_argument("--seq-len", type=positive_int, help="tokens per example (default: data.max_length)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME",
                        help="also plan this catalogue name or hub id (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON rather than a table")


def plan_sweep_models(sweep, nodes: Optional[int] = None, gpus_per_node: Optional[int] = None,
                      gpu_mem_gb: float = 80.0, cpu_mem_gb: Optional[float] = None,
                      seq_len: Optional[int] = None, extra: Iterable[str] = ()) -> list[MemoryPlan]:
    """The plan of every model of a sweep (w2s_scale.config.SweepConfig), on its first dataset's
    max_length. The cluster shape: what is given, else the sweep's Slurm resources for the model
    (when they name GPUs), else the model's catalogue resources, else one GPU."""
    cfg = experiment_for(sweep, 0)
    plans = []
    for model in list(sweep.models) + named_models(cfg, extra):
        res = resources_for(sweep, model) if hasattr(model, "resources") else None
        has_gpus = res is not None and res.gpus_per_node > 0
        cluster = cluster_for(model, nodes or (res.nodes if has_gpus else None),
                              gpus_per_node or (res.gpus_per_node if has_gpus else None),
                              gpu_mem_gb, cpu_mem_gb)
        plain = model.model_config_only() if hasattr(model, "model_config_only") else model
        plans.append(plan_model(cfg, plain, cluster, seq_len))
    return plans


def plan_command(args) -> int:
    """`w2s plan -c X.yaml`: the plan of every model of a sweep or experiment YAML (and of the
    --model names), as a table or JSON; stdout carries nothing else."""
    import contextlib
    import json
    import sys

    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed logs to stdout as it loads
        plans = plan_sweep_models(load_sweep(args.config, args.overrides), args.nodes,
                                  args.gpus_per_node, args.gpu_mem, args.cpu_mem, args.seq_len,
                                  args.model)
    print(json.dumps([p.as_dict() for p in plans], indent=1) if args.json else format_table(plans))
    return 0


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def format_table(plans: list[MemoryPlan]) -> str:
    """A plain-text table, one row per plan (GB per GPU; host memory per node)."""
    head = ["model", "cluster", "method", "mb x seq", "params", "train", "param", "grad", "optim",
            "act", "other", "total", "DS est", "host/node", "fits"]
    rows = [head]
    for p in plans:
        ds = "-" if p.deepspeed_model_states_gb is None else f"{p.deepspeed_model_states_gb:.1f}"
        rows.append([p.model, str(p.cluster), p.method, f"{p.micro_batch} x {p.seq_len}",
                     _count(p.params), _count(p.trainable), f"{p.params_gb:.1f}",
                     f"{p.grads_gb:.1f}", f"{p.optimizer_gb:.1f}", f"{p.activations_gb:.1f}",
                     f"{p.other_gb:.1f}", f"{p.total_gb:.1f}", ds, f"{p.cpu_gb_per_node:.0f}",
                     "yes" if p.fits else "NO"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {p.model}: {note}" for p in plans for note in p.notes]
    footer = ["GB per GPU (1e9 bytes): param/grad/optim = model states (DS est: DeepSpeed's own "
              "estimator, full fine-tuning only), act = activations of one micro batch, "
              "other = runtime + DeepSpeed buffers; host/node = host memory per node."]
    return "\n".join(lines + ([""] + ["notes:"] + notes if notes else []) + [""] + footer)
