"""A pretrained transformer as a K-class classifier: backbone + a zero-initialised linear head.

The head reads the hidden state of the last real token (causal LMs; found from the attention
mask, so left and right padding both work and token id 0 is an ordinary token), the pooled
output (encoders), or the mean of the real tokens (encoders, `head: mean`). Works under ZeRO-3,
where parameters are partitioned as they are created.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch
from torch import nn

from w2s_scale import assets, cpu_attention, hub, padding_free
from w2s_scale.catalogue import lookup
from w2s_scale.config import ModelConfig
from w2s_scale.errors import ModelError, shorten  # noqa: F401

# model types whose classifier reads the last real token; every other type reads the pooled output
CAUSAL_TYPES = {"gpt2", "gpt_neox", "gptj", "llama", "mistral", "mixtral", "qwen2", "qwen2_moe",
                "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text", "phi", "phi3", "opt",
                "bloom", "falcon", "olmo", "olmo2", "stablelm", "starcoder2"}

# LoRA targets per architecture family (the attention and MLP projections)
LORA_TARGETS = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "bert": ["query", "key", "value", "dense"],
    "mpnet": ["q", "k", "v", "o", "intermediate.dense", "output.dense"],
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_name(name: str) -> str:
    """Offline assets and catalogue entries to something from_pretrained accepts."""
    if name.startswith("offline:"):
        return assets.resolve(name)
    entry = lookup(name)  # by catalogue name or hub id, as the config defaults are
    return entry.hf_id if entry is not None else name


def load_tokenizer(cfg: ModelConfig, padding_side: str = "right"):
    from transformers import AutoTokenizer

    name = resolve_name(cfg.tokenizer or cfg.name)
    hub.ensure_reachable(name)  # a hub that drops packets: seconds, not an endless wait
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except Exception as err:  # noqa: BLE001 - transformers raises many kinds here
        raise ModelError(f"model.tokenizer: cannot load a tokenizer from {shorten(name)} "
                         f"({type(err).__name__}); give a local folder, an offline: asset or a "
                         f"reachable hub id") from None
    if tok.pad_token is None:  # GPT-2, Llama: padding is masked out, any existing token will do
        tok.pad_token = tok.eos_token or tok.unk_token
    tok.padding_side = padding_side
    return tok


def load_hf_config(cfg: ModelConfig):
    from transformers import AutoConfig

    name = resolve_name(cfg.name)
    hub.ensure_reachable(name)
    try:
        entry = lookup(cfg.name) if cfg.init == "random" else None
        # a random-initialised catalogue model needs only its architecture: no download
        hf_config = entry.hf_config() if entry is not None else AutoConfig.from_pretrained(name)
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"model.name: cannot load {shorten(cfg.name)} ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:120]}); give a local folder, a catalogue "
                         f"name, an offline: asset or a reachable hub id") from None
    for key, value in cfg.config_overrides.items():
        if not hasattr(hf_config, key):
            raise ModelError(f"model.config_overrides.{key}: {hf_config.model_type} configs have "
                             f"no such field; check its spelling")
        setattr(hf_config, key, value)
    if not cfg.dropout:
        # the reference trains with dropout off; zero every dropout rate the config declares
        for key, value in hf_config.to_dict().items():
            if ("dropout" in key or "pdrop" in key) and isinstance(value, float):
                setattr(hf_config, key, 0.0)
    return hf_config


def head_mode(cfg: ModelConfig, hf_config) -> str:
    if cfg.head == "label_tokens" and hf_config.model_type not in CAUSAL_TYPES:
        raise ModelError(f"model.head: label_tokens reads a causal LM's own LM head; "
                         f"{shorten(cfg.name)} is a {hf_config.model_type} model; use head: auto")
    if cfg.head == "mean" and hf_config.model_type in CAUSAL_TYPES:
        raise ModelError(f"model.head: mean pools an encoder's tokens; {shorten(cfg.name)} is a "
                         f"causal {hf_config.model_type} model, whose last token sees the whole "
                         f"document; use head: auto (last_token)")
    if cfg.head != "auto":
        return cfg.head
    return "last_token" if hf_config.model_type in CAUSAL_TYPES else "pooled"


def mean_of_real_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T, H] -> [B, H]: the mean over each row's real tokens (sentence-transformers' pooling,
    which all-MiniLM-L6-v2 and all-mpnet-base-v2 were trained with), padding left out."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last real token of each row, for left or right padding alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(dim=1)


class Classifier(nn.Module):
    """Backbone (HF base model, optionally with LoRA) + linear head over the task's K classes
    (two by default). Mode `label_tokens`: the head holds the LM head's rows of the K label words
    (w2s_scale/prompts.py), read at the last real token like `last_token`."""

    def __init__(self, backbone: nn.Module, hidden_size: int, mode: str, num_classes: int = 2):
        super().__init__()
        self.backbone = backbone
        self.mode = mode
        # no bias: with a zero weight every example starts at p = 1/K (0.5), as in the reference
        self.head = nn.Linear(hidden_size, num_classes, bias=False)

    def features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                 layer: Optional[int] = None, packed=None) -> torch.Tensor:
        """What the head reads: the last real token's (causal LMs) or the pooled (encoders)
        hidden state, or (mode `mean`) the mean of the real tokens' hidden states. `layer`: the
        hidden state after that many blocks instead (0: the embeddings), at the same token (or
        mean); encoders in `pooled` then read their first token (CLS), as the pooler does before
        its dense layer."""
        if packed is not None:  # a padding-free batch (w2s_scale/padding_free.py), no mask
            return padding_free.features(self.backbone, self.mode, input_ids, packed, layer)
        kwargs = {"output_hidden_states": True} if layer is not None else {}
        if self.mode == "mean":  # encoders only (head_mode): their own position scheme
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            return mean_of_real_tokens(out.hidden_states[layer] if layer is not None
                                       else out.last_hidden_state, attention_mask)
        if self.mode == "pooled":
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            if layer is not None:
                return out.hidden_states[layer][:, 0]
            pooled = getattr(out, "pooler_output", None)
            return pooled if pooled is not None else out.last_hidden_state[:, 0]
        # positions count real tokens only, so left padding does not shift absolute position
        # embeddings (GPT-2); encoders keep their own position scheme (MPNet's is offset)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=positions, **kwargs)
        hidden = out.hidden_states[layer] if layer is not None else out.last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, last_token_index(attention_mask)]

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                packed=None) -> torch.Tensor:
        feats = self.features(input_ids, attention_mask, packed=packed)
        return self.head(feats.to(self.head.weight.dtype)).float()


def zero_init_context(ds_config: Optional[dict]):
    """Under ZeRO-3, parameters must be partitioned while they are created."""
    if ds_config and ds_config.get("zero_optimization", {}).get("stage") == 3:
        import deepspeed

        return deepspeed.zero.Init(config_dict_or_path=ds_config)
    return contextlib.nullcontext()


def zero_init_head(head: nn.Linear) -> None:
    """Set the head to zero. Under ZeRO-3 an in-place init of a partitioned parameter silently
    does nothing (transformers #28244), so gather it, modify on rank 0 and re-partition."""
    weight = head.weight
    if hasattr(weight, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([weight], modifier_rank=0):
            if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
                with torch.no_grad():
                    weight.zero_()
    else:
        with torch.no_grad():
            weight.zero_()


def load_weights(auto, cfg: ModelConfig, hf_config) -> nn.Module:
    """`auto` (a transformers Auto class) of `cfg`: its weights, or its architecture at random;
    dropout off unless `cfg.dropout`. Under ZeRO-3 the caller keeps an HfDeepSpeedConfig alive."""
    try:
        if cfg.init == "random":
            model = auto.from_config(hf_config, dtype=DTYPES[cfg.dtype])
        else:
            model = auto.from_pretrained(resolve_name(cfg.name), config=hf_config,
                                         dtype=DTYPES[cfg.dtype])
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"model.name: cannot load weights of {shorten(cfg.name)} "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
    cpu_attention.use_on_cpu(model, DTYPES[cfg.dtype])  # bf16 on CPU: attention's core in fp32
    if not cfg.dropout:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    return model


def build_classifier(cfg: ModelConfig, ds_config: Optional[dict] = None,
                     num_classes: int = 2, label_ids: Optional[Sequence[int]] = None) -> Classifier:
    """Load the backbone and add a head of `num_classes` outputs (the task's K); `ds_config` (the
    resolved DeepSpeed config) must be given for ZeRO-3 so that the weights are partitioned while
    they load (no rank holds them all). head: label_tokens needs `label_ids`, the label words'
    first tokens (w2s_scale/prompts.py): the head starts as the LM head's rows of those tokens."""
    from transformers import AutoModel, AutoModelForCausalLM

    hf_config = load_hf_config(cfg)
    dtype = DTYPES[cfg.dtype]
    mode = head_mode(cfg, hf_config)
    if mode == "label_tokens" and (label_ids is None or len(label_ids) != num_classes):
        raise ModelError(f"model.head: label_tokens needs one label token per class ({num_classes}); "
                         f"got {label_ids}")
    keep_alive = None
    if ds_config and ds_config.get("zero_optimization", {}).get("stage") == 3:
        from transformers.integrations import HfDeepSpeedConfig

        # transformers partitions weights at load time while this object is alive
        keep_alive = HfDeepSpeedConfig(ds_config)
    lm_head = None
    if mode == "label_tokens":
        # the LM's decoder is the same module AutoModel loads (same weight names, so saved folders
        # reload with AutoModel); its LM head only lends the label words' rows to our head
        language_model = load_weights(AutoModelForCausalLM, cfg, hf_config)
        backbone, lm_head = language_model.base_model, language_model.get_output_embeddings()
        if getattr(lm_head, "bias", None) is not None:
            raise ModelError(f"model.head: label_tokens: the LM head of {shorten(cfg.name)} has a "
                             f"bias, which the label-token head does not carry; use head: auto")
        del language_model
    else:
        backbone = load_weights(AutoModel, cfg, hf_config)
    if cfg.gradient_checkpointing:
        # reentrant checkpointing: the non-reentrant one crashes with peft + ZeRO-3 (DeepSpeed #4332)
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        backbone.config.use_cache = False
    if cfg.linear_probe:
        backbone.requires_grad_(False)
    elif cfg.lora.enabled:
        backbone = apply_lora(backbone, cfg, hf_config)
    if cfg.gradient_checkpointing and (cfg.lora.enabled or cfg.linear_probe):
        # reentrant checkpointing needs an input that requires grad, else no gradient flows
        backbone.enable_input_require_grads()
    with zero_init_context(ds_config):
        model = Classifier(backbone, hf_config.hidden_size, mode, num_classes)
    model.head.to(dtype)
    if lm_head is not None:
        copy_label_rows(model.head, lm_head, label_ids)
        # LoRA leaves the LM head as it is (peft trains the adapters only), so the label rows
        # stay frozen too; full fine-tuning trains them, as it trains the LM head
        model.head.weight.requires_grad_(not cfg.lora.enabled)
    else:
        zero_init_head(model.head)
    del keep_alive
    return model


def copy_label_rows(head: nn.Linear, lm_head: nn.Module, label_ids: Sequence[int]) -> None:
    """head.weight = the LM head's rows of `label_ids`, under any ZeRO stage: both are gathered
    (ZeRO-3 partitions them; an in-place write to a partition does nothing), rank 0 writes and
    DeepSpeed re-partitions what it wrote."""
    source, target = lm_head.weight, head.weight
    rows = torch.as_tensor(list(label_ids), dtype=torch.long)
    if hasattr(source, "ds_id") or hasattr(target, "ds_id"):
        import deepspeed

        gather_source = deepspeed.zero.GatheredParameters([source] if hasattr(source, "ds_id") else [])
        gather_target = deepspeed.zero.GatheredParameters([target] if hasattr(target, "ds_id") else [],
                                                          modifier_rank=0)
        with gather_source, gather_target:
            if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
                with torch.no_grad():
                    target.copy_(source[rows].to(target.dtype))
    else:
        with torch.no_grad():
            target.copy_(source[rows].to(target.dtype))


def lora_targets(cfg: ModelConfig, hf_config) -> list[str]:
    if cfg.lora.target_modules:
        return list(cfg.lora.target_modules)
    if hf_config.model_type not in LORA_TARGETS:
        raise ModelError(f"model.lora.target_modules: no default for model type "
                         f"{hf_config.model_type!r}; list the projection modules to adapt")
    return LORA_TARGETS[hf_config.model_type]


def apply_lora(backbone: nn.Module, cfg: ModelConfig, hf_config) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=lora_targets(cfg, hf_config), bias="none",
                      fan_in_fan_out=hf_config.model_type == "gpt2")  # GPT-2 uses Conv1D
    return get_peft_model(backbone, lora)
