"""Keeping a run's weights: LoRA adapters + head, or the whole model, under any ZeRO stage.

By default a run keeps no weights (its metrics, predictions and weak labels are what the experiment
needs). `save` in a model section asks for more:

- `adapters`: the LoRA adapters in peft's format (`adapter_config.json`, `adapter_model.safetensors`)
  plus the head; `PeftModel.from_pretrained(AutoModel.from_pretrained(base), folder)` loads them.
- `model16`: the whole backbone in the training dtype as a transformers folder (LoRA merged in),
  `AutoModel.from_pretrained(folder)` loads it; plus the head.
- `model32`: the same in fp32, read from the ZeRO checkpoint's fp32 master weights.

Every folder also holds `head.safetensors` (the classifier head, weight [K, hidden], K the task's classes) and
`classifier.json` (how to rebuild the classifier); `load_classifier(folder)` does so.

Under ZeRO-3 each rank holds a slice of every parameter: saving the model's own state dict writes
empty tensors (peft #453, #1443, #2450, #2500). Here every rank gathers one module at a time
(`deepspeed.zero.GatheredParameters`, a collective: all ranks call every function below), rank 0
copies the full tensors to host memory and writes them, and each tensor's shape is checked against
the parameter's real shape before anything is written.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from w2s_scale import distributed as dist
from w2s_scale.config import ModelConfig
from w2s_scale.models import Classifier, resolve_name

HEAD_FILE = "head.safetensors"
META_FILE = "classifier.json"
FOLDERS = {"adapters": "adapters", "model16": "model", "model32": "model"}


class SavingError(RuntimeError):
    """Weights could not be saved or loaded intact; the message says which tensor and why."""


def _true_shape(param: torch.Tensor) -> tuple[int, ...]:
    return tuple(param.ds_shape) if hasattr(param, "ds_shape") else tuple(param.shape)


def gathered_state_dict(module: nn.Module, keep: Callable[[str], bool] = lambda name: True,
                        prefix: str = "") -> Optional[dict[str, torch.Tensor]]:
    """Full-size copies (on the host) of `module`'s parameters and persistent buffers whose name
    passes `keep`, on rank 0; None on the other ranks. Gathers one module at a time, so beyond
    rank 0's host copy no rank holds more than one module's full weights. All ranks must call."""
    main = dist.is_main()
    state: dict[str, torch.Tensor] = {}
    for mod_name, mod in module.named_modules(prefix=prefix.rstrip(".")):
        dot = f"{mod_name}." if mod_name else ""
        params = [(dot + n, p) for n, p in mod.named_parameters(recurse=False) if keep(dot + n)]
        partitioned = [p for _, p in params if hasattr(p, "ds_id")]
        if partitioned:
            import deepspeed

            gather = deepspeed.zero.GatheredParameters(partitioned)
        else:
            gather = contextlib.nullcontext()
        with gather:
            if main:
                for name, p in params:
                    state[name] = p.detach().to("cpu", copy=True)
        if main:
            for n, buf in mod.named_buffers(recurse=False):
                if buf is not None and n not in mod._non_persistent_buffers_set and keep(dot + n):
                    state[dot + n] = buf.detach().to("cpu", copy=True)
        if main:  # shapes as the model declares them, not as the partitions happen to be
            for name, p in params:
                if tuple(state[name].shape) != _true_shape(p) or state[name].numel() == 0:
                    raise SavingError(f"{name}: gathered shape {tuple(state[name].shape)} is not "
                                      f"the parameter's {_true_shape(p)}")
    return state if main else None


def check_nonempty(state: dict[str, torch.Tensor], what: str) -> None:
    if not state:
        raise SavingError(f"{what}: nothing to save")
    for name, t in state.items():
        if t.numel() == 0 or (("lora_A" in name or "lora_B" in name) and t.dim() != 2):
            raise SavingError(f"{what}: {name} has shape {tuple(t.shape)}: a ZeRO-3 partition "
                              f"rather than the whole tensor")


def _peft_config(backbone: nn.Module):
    config = getattr(backbone, "peft_config", None)
    return None if config is None else config["default"]


def _base_config(backbone: nn.Module):
    return backbone.get_base_model().config if _peft_config(backbone) else backbone.config


def _write_meta(folder: Path, model: nn.Module, model_cfg: ModelConfig, kind: str, dtype: str) -> None:
    meta = {"kind": kind, "head_mode": model.mode, "hidden_size": int(model.head.weight.ds_shape[1]
            if hasattr(model.head.weight, "ds_shape") else model.head.weight.shape[1]),
            "dtype": dtype, "base_model": resolve_name(model_cfg.name),
            "config_overrides": model_cfg.config_overrides, "model": model_cfg.model_dump(mode="json")}
    classes = int(model.head.weight.ds_shape[0] if hasattr(model.head.weight, "ds_shape")
                  else model.head.weight.shape[0])
    if classes != 2:  # a K-class head; binary folders stay as they were
        meta["num_classes"] = classes
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _save_head(folder: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({"weight": _own_storage(state["head.weight"])}, str(folder / HEAD_FILE))


def _fresh(folder: Path) -> Path:
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


# --- saving from a DeepSpeed engine (every rank calls) -----------------------------------------

def save_adapters(model: nn.Module, model_cfg: ModelConfig, folder: Path, tokenizer=None) -> None:
    """The LoRA adapters in peft's format + the head, gathered whole from any ZeRO stage."""
    backbone = model.backbone
    if _peft_config(backbone) is None:
        raise SavingError("save: adapters needs a LoRA model (lora.enabled: true)")
    adapters = gathered_state_dict(backbone, keep=lambda n: "lora_" in n)
    head = gathered_state_dict(model.head, prefix="head.")
    if dist.is_main():
        check_nonempty(adapters, "adapters")
        tmp = _fresh(Path(folder))
        backbone.save_pretrained(str(tmp), state_dict=adapters, safe_serialization=True,
                                 save_embedding_layers=False, is_main_process=True)
        _save_head(tmp, head)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        _write_meta(tmp, model, model_cfg, "adapters", model_cfg.dtype)
        _publish(tmp, Path(folder))
    dist.barrier()


def merge_lora_state_dict(state: dict[str, torch.Tensor], peft_config) -> dict[str, torch.Tensor]:
    """A peft LoRA model's full state dict -> the base model's (W + scale * B @ A per adapted
    module, names without peft's prefixes), computed in fp32 and cast back."""
    scale = peft_config.lora_alpha / (peft_config.r ** 0.5 if peft_config.use_rslora else peft_config.r)
    out, suffix_a = {}, ".lora_A.default.weight"
    for name in [n for n in state if n.endswith(suffix_a)]:
        module = name[: -len(suffix_a)]
        a, b = state.pop(name).float(), state.pop(f"{module}.lora_B.default.weight").float()
        base = state.pop(f"{module}.base_layer.weight")
        delta = (b @ a) * scale
        if peft_config.fan_in_fan_out:  # GPT-2's Conv1D stores weights as [in, out]
            delta = delta.T
        out[f"{module}.weight"] = (base.float() + delta).to(base.dtype)
    for name, tensor in state.items():
        if "lora_" in name:
            raise SavingError(f"{name}: an adapter tensor merge_lora_state_dict cannot place")
        out[name.replace(".base_layer.", ".")] = tensor
    return {n.removeprefix("base_model.model."): t for n, t in out.items()}


def _write_transformers_folder(folder: Path, backbone_state: dict[str, torch.Tensor], hf_config,
                               dtype: torch.dtype) -> None:
    from huggingface_hub import save_torch_state_dict

    hf_config = hf_config.__class__.from_dict(hf_config.to_dict())
    hf_config.dtype = dtype  # noqa - transformers 5 name of torch_dtype
    hf_config.save_pretrained(str(folder))
    save_torch_state_dict({n: _own_storage(t.to(dtype)) for n, t in backbone_state.items()},
                          str(folder), max_shard_size="5GB")


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """safetensors refuses views into a larger buffer (zero_to_fp32 returns such views for ZeRO
    stages 1-2); copy only those."""
    t = t.contiguous()
    return t if t.untyped_storage().nbytes() == t.numel() * t.element_size() else t.clone()


def save_model(eng, model_cfg: ModelConfig, folder: Path, precision: str = "model16",
               ckpt_dir: Optional[Path] = None) -> None:
    """The whole classifier: the backbone as a transformers folder (LoRA merged), the head."""
    model = eng.engine.module
    if precision == "model32":
        state = fp32_state_dict(eng, Path(ckpt_dir))
        dtype = torch.float32
    else:
        state = gathered_state_dict(model)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[model_cfg.dtype]
    if dist.is_main():
        check_nonempty(state, precision)
        backbone = {n.removeprefix("backbone."): t for n, t in state.items() if n.startswith("backbone.")}
        peft_config = _peft_config(model.backbone)
        if peft_config is not None:
            backbone = merge_lora_state_dict(backbone, peft_config)
        tmp = _fresh(Path(folder))
        _write_transformers_folder(tmp, backbone, _base_config(model.backbone), dtype)
        _save_head(tmp, {"head.weight": state["head.weight"].to(dtype)})
        if eng.tokenizer is not None:
            eng.tokenizer.save_pretrained(str(tmp))
        _write_meta(tmp, model, model_cfg, "model", str(dtype).removeprefix("torch."))
        _publish(tmp, Path(folder))
    dist.barrier()


def fp32_state_dict(eng, ckpt_dir: Path) -> Optional[dict[str, torch.Tensor]]:
    """fp32 weights from a ZeRO checkpoint (DeepSpeed's fp32 master copies, consolidated by
    zero_to_fp32 on rank 0); the checkpoint is written here by all ranks, then removed."""
    stage = eng.ds_config.get("zero_optimization", {}).get("stage", 0)
    if stage == 0:
        if eng.ds_config.get("bf16", {}).get("enabled") or eng.ds_config.get("fp16", {}).get("enabled"):
            raise SavingError("save: model32 under ZeRO stage 0 in 16-bit has no fp32 master "
                              "weights to read; use zero_stage >= 1 or save: model16")
        return gathered_state_dict(eng.engine.module)
    tag = "fp32-export"
    ckpt_dir = Path(ckpt_dir)
    eng.engine.save_checkpoint(str(ckpt_dir), tag=tag, save_latest=False)
    dist.barrier()
    state = None
    if dist.is_main():
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = {n: t.float() for n, t in get_fp32_state_dict_from_zero_checkpoint(
            str(ckpt_dir), tag=tag).items()}
        shutil.rmtree(ckpt_dir / tag, ignore_errors=True)
    dist.barrier()
    return state


def save_weights(eng, model_cfg: ModelConfig, run_dir: Path, ckpt_dir: Path) -> Optional[Path]:
    """What `model_cfg.save` asks for, into `run_dir/adapters` or `run_dir/model`."""
    if model_cfg.save == "none":
        return None
    folder = Path(run_dir) / FOLDERS[model_cfg.save]
    if model_cfg.save == "adapters":
        save_adapters(eng.engine.module, model_cfg, folder, eng.tokenizer)
    else:
        save_model(eng, model_cfg, folder, model_cfg.save, ckpt_dir)
    return folder


# --- loading and merging (one process, plain transformers / peft) -------------------------------

def _load_head(folder: Path, hidden: int, dtype: torch.dtype, classes: int = 2) -> torch.Tensor:
    from safetensors.torch import load_file

    weight = load_file(str(Path(folder) / HEAD_FILE))["weight"]
    if tuple(weight.shape) != (classes, hidden):
        raise SavingError(f"{folder}/{HEAD_FILE}: head weight has shape {tuple(weight.shape)}, "
                          f"expected ({classes}, {hidden})")
    return weight.to(dtype)


def load_classifier(folder: str | Path, base: Optional[str] = None, dtype: Optional[torch.dtype] = None):
    """A Classifier from a folder written by `save_weights` (adapters need their base model:
    `base`, else the one recorded at saving)."""
    from transformers import AutoConfig, AutoModel

    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text())
    if meta["kind"] == "adapters":
        from peft import PeftModel

        base = base or meta["base_model"]
        config = AutoConfig.from_pretrained(base)
        for key, value in meta.get("config_overrides", {}).items():
            setattr(config, key, value)
        backbone = AutoModel.from_pretrained(base, config=config, dtype=dtype or torch.float32)
        backbone = PeftModel.from_pretrained(backbone, str(folder))
    else:
        backbone = AutoModel.from_pretrained(str(folder), dtype=dtype or torch.float32)
    classes = meta.get("num_classes", 2)
    model = Classifier(backbone, meta["hidden_size"], meta["head_mode"], classes)
    with torch.no_grad():
        model.head.weight.copy_(_load_head(folder, meta["hidden_size"], model.head.weight.dtype,
                                           classes))
    return model.eval()


def merge_adapters(folder: str | Path, out: str | Path, base: Optional[str] = None) -> Path:
    """An adapters folder -> a full model folder (peft's merge_and_unload), head and tokenizer
    copied: `AutoModel.from_pretrained(out)` then needs no peft."""
    folder, out = Path(folder), Path(out)
    model = load_classifier(folder, base)
    merged = model.backbone.merge_and_unload()
    merged.save_pretrained(str(out))
    shutil.copy(folder / HEAD_FILE, out / HEAD_FILE)
    meta = json.loads((folder / META_FILE).read_text())
    meta["kind"] = "model"
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    for name in os.listdir(folder):
        if name.startswith(("tokenizer", "vocab", "merges", "special_tokens")):
            shutil.copy(folder / name, out / name)
    return out
