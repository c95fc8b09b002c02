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
from w2s_scale.errors import DSConfigError, DSKeyError, DSTemplateError, RanksError, shorten  # noqa: F401

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
    "bfloat16", "managed_gradient_accumulation", "disable_python_gc", "gradient_allreduce_op",
    "log_level", "datastates_ckpt", "tensor_parallel", "expert_parallel",
}
BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
DS_CONFIG_DIR = Path(__file__).resolve().parent.parent / "ds_configs"

# Sections DeepSpeed reads through pydantic models of its own (extra keys forbidden there, but
# only once the engine starts): section -> (module, class).
PYDANTIC_SECTIONS = {
    "zero_optimization": ("deepspeed.runtime.zero.config", "DeepSpeedZeroConfig"),
    "bf16": ("deepspeed.runtime.precision_config", "DeepSpeedBF16Config"),
    "bfloat16": ("deepspeed.runtime.precision_config", "DeepSpeedBF16Config"),
    "fp16": ("deepspeed.runtime.precision_config", "DeepSpeedFP16Config"),
    "tensorboard": ("deepspeed.monitor.config", "TensorBoardConfig"),
    "wandb": ("deepspeed.monitor.config", "WandbConfig"),
    "csv_monitor": ("deepspeed.monitor.config", "CSVConfig"),
    "comet": ("deepspeed.monitor.config", "CometConfig"),
    "comms_logger": ("deepspeed.comm.config", "CommsLoggerConfig"),
    "compile": ("deepspeed.compile.config", "CompileConfig"),
    "hybrid_engine": ("deepspeed.runtime.config", "HybridEngineConfig"),
    "tensor_parallel": ("deepspeed.runtime.tensor_parallel.config", "TPTrainingConfig"),
}
# Sections DeepSpeed reads key by key with .get() (a misspelt key is simply never read): their
# keys are the string constants DeepSpeed declares for them, found by name prefix.
CONSTANT_SECTIONS = {
    "activation_checkpointing": ("deepspeed.runtime.activation_checkpointing.config", "ACT_CHKPT_"),
    "flops_profiler": ("deepspeed.profiling.constants", "FLOPS_PROFILER_"),
    "aio": ("deepspeed.runtime.swap_tensor.constants", "AIO_"),
    "torch_autocast": ("deepspeed.runtime.constants", "TORCH_AUTOCAST_"),
    "data_types": ("deepspeed.runtime.constants", ("GRAD_ACCUM_DTYPE", "PARAM_DTYPE", "BUFFER_DTYPE",
                                                   "KEEP_IN_FP32_MODULES")),
    "checkpoint": ("deepspeed.runtime.constants", ("CHECKPOINT_TAG_VALIDATION", "LOAD_UNIVERSAL_CHECKPOINT",
                                                   "USE_NODE_LOCAL_STORAGE_CHECKPOINT",
                                                   "CHECKPOINT_PARALLEL_WRITE")),
    "timers": ("deepspeed.utils.config", ("TIMERS_THROUGHPUT",)),
}


def _suggest(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else "; remove it or check DeepSpeed's docs"


def _constant_keys(module: str, names) -> set[str]:
    import importlib

    mod = importlib.import_module(module)
    if isinstance(names, str):  # a prefix: every string constant under it but the defaults
        names = [n for n in vars(mod) if n.startswith(names) and not n.endswith(("_DEFAULT", "_FORMAT"))]
    return {v for n in names if isinstance(v := getattr(mod, n, None), str)}


def _submodel(model, key: str):
    """The pydantic model a field of `model` holds (offload_param -> its config), if any."""
    from pydantic import BaseModel

    field = model.model_fields.get(key) or next(
        (f for f in model.model_fields.values() if f.alias == key), None)
    ann = getattr(field, "annotation", None)
    inner = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
    return inner[0] if inner else None


def _unknown_key(model, values: dict[str, Any], where: str) -> str | None:
    """The first key of `values` (nested sections too) that `model` does not declare. Checked by
    name: DeepSpeed's models drop "auto" values before validating, unknown keys with them."""
    known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    for key, value in values.items():
        if key not in known:
            return f"{where}.{str(key)[:80]}: unknown key{_suggest(str(key), known)}"
        sub = _submodel(model, key)
        if sub is not None and isinstance(value, dict):
            problem = _unknown_key(sub, value, f"{where}.{key}")
            if problem:
                return problem
    return None


def _pydantic_problem(section: str, values: dict[str, Any]) -> str | None:
    """The first problem DeepSpeed's own model of `section` finds: an unknown key, else a value
    it rejects ("auto" values are filled by build())."""
    import importlib

    from pydantic import ValidationError

    module, name = PYDANTIC_SECTIONS[section]
    model = getattr(importlib.import_module(module), name)
    unknown = _unknown_key(model, values, section)
    if unknown:
        return unknown
    try:
        model(**values)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{section}.{where}: {first['msg']} (got {shorten(first.get('input'))})"
    return None


def validate(ds: Any, source: str = "ds_config") -> None:
    """Reject keys DeepSpeed would silently ignore, in every section whose keys DeepSpeed declares,
    with the closest known key; and values DeepSpeed's own config models reject."""
    if not isinstance(ds, dict):
        raise DSTemplateError(f"{source}: the DeepSpeed config is a JSON {type(ds).__name__}, not an "
                              f"object of settings; see ds_configs/zero3.json")
    for key in ds:
        if key not in KNOWN_TOP_LEVEL:
            raise DSKeyError(f"{source}: unknown DeepSpeed key {shorten(key)}{_suggest(key, KNOWN_TOP_LEVEL)}")
    for section in ("optimizer", "scheduler"):
        if section in ds:
            raise DSKeyError(f"{source}: remove the {section!r} section; w2s-scale builds the "
                             f"optimizer and schedule from train.lr / train.schedule")
    for section, values in ds.items():
        if section not in PYDANTIC_SECTIONS and section not in CONSTANT_SECTIONS:
            continue
        if not isinstance(values, dict):
            raise DSKeyError(f"{source}: {section} is {shorten(values)}, not a JSON object of "
                             f"settings; write it as \"{section}\": {{...}}")
        if section in PYDANTIC_SECTIONS:
            problem = _pydantic_problem(section, values)
            if problem:
                raise DSKeyError(f"{source}: {problem}")
            continue
        known = _constant_keys(*CONSTANT_SECTIONS[section])
        for key in values:
            if key not in known:
                raise DSKeyError(f"{source}: {section}.{str(key)[:80]}: unknown key{_suggest(key, known)}")
        if section == "timers" and isinstance(values.get("throughput"), dict):
            from pydantic import ValidationError
            from deepspeed.utils.config import DeepSpeedThroughputTimerConfig as Throughput

            try:
                Throughput(**values["throughput"])
            except ValidationError as err:
                first = err.errors()[0]
                raise DSKeyError(f"{source}: timers.throughput.{first['loc'][-1]}: "
                                 f"{first['msg']}") from None


def load_template(path: str | Path) -> dict[str, Any]:
    """A DeepSpeed JSON template: a path, or the name of one in ds_configs/."""
    path = Path(path)
    if not path.exists() and (DS_CONFIG_DIR / path.name).exists():
        path = DS_CONFIG_DIR / path.name
    shipped = sorted(p.name for p in DS_CONFIG_DIR.glob("*.json"))
    if not path.exists():
        raise DSTemplateError(f"train.ds_config: {path} does not exist; use one of {shipped} or "
                              f"a path to your own JSON")
    if path.is_dir():
        raise DSTemplateError(f"train.ds_config: {path} is a folder; give the JSON file itself "
                              f"(e.g. one of {shipped})")
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DSTemplateError(f"train.ds_config: {path} is not a text file; give a DeepSpeed "
                              f"JSON config") from None
    except OSError as err:
        raise DSTemplateError(f"train.ds_config: {path} cannot be read ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise DSTemplateError(f"train.ds_config: {path} is not valid JSON ({err.msg} at line "
                              f"{err.lineno}); fix the file") from None
    if not isinstance(template, dict):
        raise DSTemplateError(f"train.ds_config: {path} holds a JSON {type(template).__name__}, not "
                              f"an object of DeepSpeed settings; see ds_configs/zero3.json")
    return template


def accumulation_steps(train: TrainConfig, world_size: int) -> int:
    if world_size < 1:
        raise RanksError(f"--nproc / launch.nproc: {world_size} ranks; give a positive number of ranks")
    per_step = train.micro_batch_size * world_size
    if train.batch_size % per_step:
        # batch_size is a multiple of micro_batch_size (TrainConfig checks it): the ranks are at fault
        micro_steps = train.batch_size // train.micro_batch_size
        fits = [n for n in range(1, micro_steps + 1) if micro_steps % n == 0][:6]
        raise RanksError(
            f"--nproc / launch.nproc (under Slurm: nodes x GPUs): {world_size} ranks cannot share train.batch_size "
            f"{train.batch_size} in micro-batches of {train.micro_batch_size}; use {fits} ranks, "
            f"or a train.batch_size that is a multiple of {per_step}")
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
    source = f"train.ds_config ({train.ds_config})" if train.ds_config else "ds_config"
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
            raise DSConfigError(f"{source}: {key} is {shorten(ds[key])} but train settings give "
                                f"{filled[key]}; set it to \"auto\" so batch sizes are stated once")
    missing = [k for k in BATCH_KEYS if k not in ds]
    if missing:  # DeepSpeed would derive them from what is there, or stop with an assertion
        raise DSTemplateError(f"{source}: lacks {', '.join(missing)}; add them as "
                              f"\"auto\" so they come from the train section")
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
