"""The DeepSpeed config, built in one place from the run's settings.

A template (ds_configs/*.json or the user's own) may leave fields as "auto"; they are filled from
the `train` section, so batch sizes are stated once. DeepSpeed ignores misspelt top-level keys,
so every key is checked against the ones it knows before a run starts.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Optional

from w2s_scale.config import TrainConfig

# top-level keys DeepSpeed reads (deepspeed/runtime/config.py and its sub-configs)
KNOWN_TOP_LEVEL = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
    "steps_per_print", "wall_clock_breakdown", "dump_state", "gradient_clipping",
    "prescale_gradients", "gradient_predivide_factor", "communication_data_type",
    "seq_parallel_communication_data_type", "sparse_gradients", "zero_optimization",
    "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "fp16", "bf16", "amp",
    "torch_autocast", "activation_checkpointing", "flops_profiler", "tensorboard", "wandb",
    "csv_monitor", "comet", "aio", "checkpoint", "elasticity", "autotuning",
    "compression_training", "data_efficiency", "data_types", "memory_breakdown",
    "comms_logger", "pipeline", "optimizer", "scheduler", "disable_allgather", "compile",
    "timers", "graph_harvesting", "use_data_before_expert_parallelism", "eigenvalue",
    "progressive_layer_drop", "curriculum_learning", "weight_quantization", "nebula",
    "dataloader_drop_last", "load_universal_checkpoint", "use_node_local_storage",
    "hybrid_engine", "sequence_parallel_size", "zenflow", "gradient_accumulation_dtype",
}
KNOWN_PRECISION = {"enabled", "auto_cast", "loss_scale", "initial_scale_power", "loss_scale_window",
                   "hysteresis", "consecutive_hysteresis", "min_loss_scale", "fp16_master_weights_and_grads",
                   "immediate_grad_update", "check_grad_overflow", "bf16_master_weights_and_grads",
                   "bf16_optimizer_states"}
DS_CONFIG_DIR = Path(__file__).resolve().parent.parent / "ds_configs"


class DSConfigError(ValueError):
    """A DeepSpeed config problem; one line naming the key and the fix."""


def _suggest(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else "; remove it or check DeepSpeed's docs"


def validate(ds: dict[str, Any], source: str = "ds_config") -> None:
    """Reject keys DeepSpeed would silently ignore, with the closest known key."""
    for key in ds:
        if key not in KNOWN_TOP_LEVEL:
            raise DSConfigError(f"{source}: unknown DeepSpeed key {key!r}{_suggest(key, KNOWN_TOP_LEVEL)}")
    for section in ("bf16", "fp16"):
        for key in ds.get(section, {}) or {}:
            if key not in KNOWN_PRECISION:
                raise DSConfigError(f"{source}: unknown key {section}.{key!r}{_suggest(key, KNOWN_PRECISION)}")
    zero = ds.get("zero_optimization")
    if zero:
        from pydantic import ValidationError
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

        try:
            DeepSpeedZeroConfig(**zero)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            known = set(DeepSpeedZeroConfig.model_fields) | {
                f.alias for f in DeepSpeedZeroConfig.model_fields.values() if f.alias}
            hint = _suggest(str(first["loc"][-1]), known) if first["type"] == "extra_forbidden" else ""
            raise DSConfigError(f"{source}: zero_optimization.{where}: {first['msg']}{hint}") from None
    for section in ("optimizer", "scheduler"):
        if section in ds:
            raise DSConfigError(f"{source}: remove the {section!r} section; w2s-scale builds the "
                                f"optimizer and schedule from train.lr / train.schedule")


def load_template(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists() and (DS_CONFIG_DIR / path.name).exists():
        path = DS_CONFIG_DIR / path.name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DSConfigError(f"train.ds_config: {path} does not exist; use one of "
                            f"{sorted(p.name for p in DS_CONFIG_DIR.glob('*.json'))}") from None
    except json.JSONDecodeError as err:
        raise DSConfigError(f"train.ds_config: {path} is not valid JSON ({err.msg} at line "
                            f"{err.lineno}); fix the file") from None


def accumulation_steps(train: TrainConfig, world_size: int) -> int:
    per_step = train.micro_batch_size * world_size
    if train.batch_size % per_step:
        raise DSConfigError(
            f"train.batch_size: {train.batch_size} is not divisible by micro_batch_size "
            f"{train.micro_batch_size} x {world_size} ranks; choose a batch size that is a "
            f"multiple of {per_step} or another micro_batch_size")
    return train.batch_size // per_step


def default_template(train: TrainConfig) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.offload and train.zero_stage >= 2:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if train.offload and train.zero_stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if train.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            "zero_optimization": zero, "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            "communication_data_type": "auto", "steps_per_print": 10**9}


def build(train: TrainConfig, dtype: str, world_size: int,
          template: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Resolve a DeepSpeed config: template values win unless they are "auto"."""
    source = train.ds_config or "ds_config"
    if template is None:
        template = load_template(train.ds_config) if train.ds_config else default_template(train)
    validate(template, source)
    ds = json.loads(json.dumps(template))
    gas = accumulation_steps(train, world_size)
    filled = {
        "train_batch_size": train.batch_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": gas,
        "gradient_clipping": train.max_grad_norm,
        # reduce gradients in fp32: bf16 all-reduce loses precision (see notes/environment.md)
        "communication_data_type": "fp32" if dtype != "fp32" else None,
    }
    for key, value in filled.items():
        if ds.get(key) == "auto":
            if value is None:
                del ds[key]
            else:
                ds[key] = value
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        if key in ds and ds[key] != filled[key]:
            raise DSConfigError(f"{source}: {key} is {ds[key]} but train settings give "
                                f"{filled[key]}; set it to \"auto\" so batch sizes are stated once")
    for section, wanted in (("bf16", dtype == "bf16"), ("fp16", dtype == "fp16")):
        if isinstance(ds.get(section), dict) and ds[section].get("enabled") == "auto":
            ds[section]["enabled"] = wanted
    zero = ds.setdefault("zero_optimization", {"stage": 0})
    if zero.get("stage") == "auto":
        zero["stage"] = train.zero_stage
    ds.setdefault("steps_per_print", 10**9)
    if any(v == "auto" for v in _walk(ds)):
        raise DSConfigError(f"{source}: a value is still \"auto\" that w2s-scale cannot fill; "
                            f"give it explicitly")
    if offloads_optimizer(ds):
        # the client optimizer is then DeepSpeedCPUAdam (see engine.build_optimizer)
        ds.setdefault("zero_force_ds_cpu_optimizer", True)
    else:
        # our torch AdamW is not one of DeepSpeed's own optimizers
        ds.setdefault("zero_allow_untested_optimizer", True)
    return ds


def offloads_optimizer(ds: dict[str, Any]) -> bool:
    off = (ds.get("zero_optimization") or {}).get("offload_optimizer") or {}
    return off.get("device") in ("cpu", "nvme")


def _walk(node: Any):
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    else:
        yield node
