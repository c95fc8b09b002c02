"""Known models: where they live on the hub, their architecture, and how to train them.

A config may name a model by its catalogue name (`strong: {name: qwen2.5-7b}`) or by its hub id
(`Qwen/Qwen2.5-7B`); either way the entry's defaults fill the model fields the user left unset
(see `apply_defaults` for the precedence). Any other hub id or local folder works with no entry: it
gets the generic defaults of `ModelConfig` / `TrainConfig`.

Every entry carries its architecture numbers, so its transformers config, parameter count and
memory plan resolve with no download (`Entry.hf_config()`); the real config on the hub is still
what a pretrained run loads.

To add a model, append one `Entry(...)` to `ENTRIES` below (or call `register(...)` from your own
code before the config is loaded). The training defaults are starting points chosen for 80 GB GPUs
and a global batch of 32 (micro batch x GPUs must divide it); they are not tuned results.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional


@dataclass(frozen=True)
class Arch:
    """The numbers that fix a model's shapes (those of its transformers config)."""

    model_type: str              # transformers model type: gpt2, qwen2, llama, bert, ...
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    max_positions: int
    tie_embeddings: bool = True
    head_dim: Optional[int] = None          # None: hidden // heads
    extra: dict[str, Any] = field(default_factory=dict)  # other config fields (rope, eps, ...)

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def config_kwargs(self) -> dict[str, Any]:
        if self.model_type == "gpt2":
            kwargs = dict(n_layer=self.layers, n_embd=self.hidden, n_head=self.heads,
                          n_inner=self.intermediate, n_positions=self.max_positions,
                          vocab_size=self.vocab, bos_token_id=self.vocab - 1,
                          eos_token_id=self.vocab - 1)
        else:
            kwargs = dict(num_hidden_layers=self.layers, hidden_size=self.hidden,
                          num_attention_heads=self.heads, intermediate_size=self.intermediate,
                          vocab_size=self.vocab, max_position_embeddings=self.max_positions,
                          tie_word_embeddings=self.tie_embeddings)
            if self.model_type != "bert":
                kwargs["num_key_value_heads"] = self.kv_heads
            if self.head_dim:
                kwargs["head_dim"] = self.head_dim
        return {**kwargs, **self.extra}

    def backbone_params(self) -> int:
        """Parameters of the transformers base model (AutoModel: no LM head), counted by hand;
        tests check the count against the model built on the meta device."""
        h, i, d, L = self.hidden, self.intermediate, self.dim_per_head, self.layers
        q, kv = self.heads * d, self.kv_heads * d
        if self.model_type == "gpt2":
            per_layer = 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + 2 * h + (h * i + i) + (i * h + h)
            return self.vocab * h + self.max_positions * h + L * per_layer + 2 * h
        if self.model_type in ("llama", "qwen2", "qwen3", "mistral"):
            qkv_bias = q + 2 * kv if self.model_type == "qwen2" else 0
            qk_norm = 2 * d if self.model_type == "qwen3" else 0  # q_norm, k_norm: RMSNorm per head
            per_layer = h * q + h * kv * 2 + q * h + qkv_bias + qk_norm + 3 * h * i + 2 * h
            return self.vocab * h + L * per_layer + h
        raise NotImplementedError(f"no parameter formula for {self.model_type}; "
                                  f"w2s_scale.memory counts it on the meta device instead")

    def total_params(self) -> int:
        """With the LM head, as model cards count (an untied head adds vocab x hidden)."""
        return self.backbone_params() + (0 if self.tie_embeddings else self.vocab * self.hidden)


@dataclass(frozen=True)
class Resources:
    """What one run of this model asks Slurm for (per job)."""

    nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_gpu: int = 8
    mem_gb: int = 64            # host memory per node
    time: str = "04:00:00"
    gpu_mem_gb: int = 80        # the GPU size the defaults were planned for

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class Entry:
    name: str                   # the catalogue name used in configs
    hf_id: str                  # hub id the weights and tokenizer load from
    family: str                 # gpt2, qwen2.5, llama-3
    arch: Arch
    nominal_params_b: float     # as published (with LM head), to check the architecture numbers
    lr: float
    micro_batch_size: int
    zero_stage: int
    offload: bool = False
    lora: bool = False
    lora_r: int = 16
    lora_alpha: float = 32.0
    gradient_checkpointing: bool = False
    dtype: str = "bf16"
    eval_batch_size: int = 32
    slurm: Resources = field(default_factory=Resources)
    # an instruct / chat model (post-trained on a chat template), not a base model: the
    # label-token head wraps prompts in the tokenizer's chat template for these (prompts.py)
    chat: bool = False

    def hf_config(self):
        """The transformers config of this architecture, built without a download."""
        from transformers import AutoConfig

        return AutoConfig.for_model(self.arch.model_type, **self.arch.config_kwargs())

    def train_defaults(self) -> dict[str, Any]:
        return {"lr": self.lr, "micro_batch_size": self.micro_batch_size,
                "eval_batch_size": self.eval_batch_size, "zero_stage": self.zero_stage,
                "offload": self.offload}

    def model_defaults(self) -> dict[str, Any]:
        """ModelConfig fields (as plain data) this entry sets when the user leaves them unset."""
        lora = {"enabled": self.lora}
        if self.lora:
            lora.update(r=self.lora_r, alpha=self.lora_alpha)
        return {"dtype": self.dtype, "gradient_checkpointing": self.gradient_checkpointing,
                "lora": lora, "train": self.train_defaults()}

    def sweep_resources(self) -> dict[str, Any]:
        """The Slurm request in the vocabulary of a sweep's `resources` (w2s_scale.sweep)."""
        r = self.slurm
        return {"nodes": r.nodes, "gpus_per_node": r.gpus_per_node,
                "cpus_per_task": r.cpus_per_gpu * r.gpus_per_node, "mem": f"{r.mem_gb}G",
                "time": r.time}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "hf_id": self.hf_id, "params_b": self.nominal_params_b,
                "chat": self.chat, **self.model_defaults(), "slurm": asdict(self.slurm)}


def _gpt2(name, layers, hidden, heads, params_b, **kw) -> Entry:
    arch = Arch("gpt2", layers, hidden, heads, heads, 4 * hidden, 50257, 1024)
    return Entry(name=name, hf_id={"gpt2": "openai-community/gpt2"}.get(name, f"openai-community/{name}"),
                 family="gpt2", arch=arch, nominal_params_b=params_b, **kw)


_QWEN_ROPE = {"rope_theta": 1000000.0, "rms_norm_eps": 1e-6}
_LLAMA_ROPE = {"rope_theta": 500000.0, "rms_norm_eps": 1e-5}


def _qwen(size, layers, hidden, heads, kv, inter, vocab, tied, params_b, variant="", **kw) -> Entry:
    arch = Arch("qwen2", layers, hidden, heads, kv, inter, vocab, 32768, tied, extra=_QWEN_ROPE)
    return Entry(name=f"qwen2.5-{size.lower()}{variant}", hf_id=f"Qwen/Qwen2.5-{size}",
                 family="qwen2.5", arch=arch, nominal_params_b=params_b, **kw)


def _llama(name, hf_id, layers, hidden, heads, inter, tied, params_b, head_dim=None, **kw) -> Entry:
    arch = Arch("llama", layers, hidden, heads, 8, inter, 128256, 131072, tied, head_dim,
                extra=_LLAMA_ROPE)
    return Entry(name=name, hf_id=hf_id, family="llama-3", arch=arch, nominal_params_b=params_b, **kw)


def _qwen3(size, layers, hidden, heads, inter, tied, params_b, base=True, **kw) -> Entry:
    # every Qwen3 dense size: 8 KV heads of 128 dimensions (head_dim is not hidden / heads), the
    # 151,936-token vocabulary; base models were published with a 32,768-token config, the
    # instruct (hybrid-thinking) ones with 40,960
    arch = Arch("qwen3", layers, hidden, heads, 8, inter, 151936, 32768 if base else 40960, tied,
                head_dim=128, extra=_QWEN_ROPE)
    suffix = "-Base" if base else ""
    return Entry(name=f"qwen3-{size.lower()}{suffix.lower()}", hf_id=f"Qwen/Qwen3-{size}{suffix}",
                 family="qwen3", arch=arch, nominal_params_b=params_b, chat=not base, **kw)


def _qwen3_pair(size, layers, hidden, heads, inter, tied, params_b, **kw) -> list[Entry]:
    """The base model and its instruct model: the same shapes and training defaults."""
    return [_qwen3(size, layers, hidden, heads, inter, tied, params_b, base=True, **kw),
            _qwen3(size, layers, hidden, heads, inter, tied, params_b, base=False, **kw)]


ONE = Resources(1, 1, mem_gb=64, time="04:00:00")
FOUR = Resources(1, 4, mem_gb=256, time="12:00:00")
EIGHT = Resources(1, 8, mem_gb=512, time="24:00:00")
EIGHT_LONG = Resources(1, 8, mem_gb=1024, time="48:00:00")
TWO_NODES = Resources(2, 8, mem_gb=1024, time="48:00:00")
FOUR_NODES = Resources(4, 8, mem_gb=1024, time="48:00:00")

ENTRIES: list[Entry] = [
    # the reference's ladder (Burns et al. 2023): lr 5e-5 up to gpt2-medium, 1e-5 above; full fine-tuning
    _gpt2("gpt2", 12, 768, 12, 0.124, lr=5e-5, micro_batch_size=32, zero_stage=2, slurm=ONE),
    _gpt2("gpt2-medium", 24, 1024, 16, 0.355, lr=5e-5, micro_batch_size=16, zero_stage=2, slurm=ONE),
    _gpt2("gpt2-large", 36, 1280, 20, 0.774, lr=1e-5, micro_batch_size=8, zero_stage=2, slurm=ONE),
    _gpt2("gpt2-xl", 48, 1600, 25, 1.558, lr=1e-5, micro_batch_size=8, zero_stage=2,
          gradient_checkpointing=True, slurm=ONE),
    # Qwen2.5 base models: full fine-tuning up to 14B (ZeRO-3 across a node from 7B), LoRA above
    _qwen("0.5B", 24, 896, 14, 2, 4864, 151936, True, 0.49, lr=2e-5, micro_batch_size=16,
          zero_stage=2, slurm=ONE),
    _qwen("1.5B", 28, 1536, 12, 2, 8960, 151936, True, 1.54, lr=1e-5, micro_batch_size=8,
          zero_stage=2, gradient_checkpointing=True, slurm=ONE),
    _qwen("3B", 36, 2048, 16, 2, 11008, 151936, True, 3.09, lr=1e-5, micro_batch_size=8,
          zero_stage=2, gradient_checkpointing=True, slurm=FOUR),
    _qwen("7B", 28, 3584, 28, 4, 18944, 152064, False, 7.61, lr=1e-5, micro_batch_size=4,
          zero_stage=3, gradient_checkpointing=True, eval_batch_size=16, slurm=EIGHT),
    _qwen("14B", 48, 5120, 40, 8, 13824, 152064, False, 14.7, lr=1e-5, micro_batch_size=4,
          zero_stage=3, gradient_checkpointing=True, eval_batch_size=16, slurm=EIGHT),
    _qwen("32B", 64, 5120, 40, 8, 27648, 152064, False, 32.5, lr=1e-4, micro_batch_size=4,
          zero_stage=3, lora=True, gradient_checkpointing=True, eval_batch_size=8, slurm=EIGHT),
    _qwen("72B", 80, 8192, 64, 8, 29568, 152064, False, 72.7, lr=1e-4, micro_batch_size=4,
          zero_stage=3, lora=True, gradient_checkpointing=True, eval_batch_size=8,
          slurm=EIGHT_LONG),
    # Llama 3.x base models (gated on the hub: accept the licence and log in first)
    _llama("llama-3.2-1b", "meta-llama/Llama-3.2-1B", 16, 2048, 32, 8192, True, 1.24, head_dim=64,
           lr=2e-5, micro_batch_size=8, zero_stage=2, gradient_checkpointing=True, slurm=ONE),
    _llama("llama-3.2-3b", "meta-llama/Llama-3.2-3B", 28, 3072, 24, 8192, True, 3.21, head_dim=128,
           lr=1e-5, micro_batch_size=8, zero_stage=2, gradient_checkpointing=True, slurm=FOUR),
    _llama("llama-3.1-8b", "meta-llama/Llama-3.1-8B", 32, 4096, 32, 14336, False, 8.03,
           lr=1e-5, micro_batch_size=4, zero_stage=3, gradient_checkpointing=True,
           eval_batch_size=16, slurm=EIGHT),
    _llama("llama-3.1-70b", "meta-llama/Llama-3.1-70B", 80, 8192, 64, 28672, False, 70.6,
           lr=1e-4, micro_batch_size=4, zero_stage=3, lora=True, gradient_checkpointing=True,
           eval_batch_size=8, slurm=EIGHT_LONG),
    # the top of the Qwen2.5 ladder fully fine-tuned, as 0.5B-14B are (lr 1e-5, ZeRO-3): a sweep
    # that names these instead of qwen2.5-32b / -72b reads PGR against size without the switch to
    # LoRA. Model states alone are 16 bytes a parameter, so they span 2 and 4 nodes of 8 GPUs.
    # Listed last: the hub ids still find the LoRA entries above.
    _qwen("32B", 64, 5120, 40, 8, 27648, 152064, False, 32.5, variant="-full", lr=1e-5,
          micro_batch_size=2, zero_stage=3, gradient_checkpointing=True, eval_batch_size=8,
          slurm=TWO_NODES),
    _qwen("72B", 80, 8192, 64, 8, 29568, 152064, False, 72.7, variant="-full", lr=1e-5,
          micro_batch_size=1, zero_stage=3, gradient_checkpointing=True, eval_batch_size=4,
          slurm=FOUR_NODES),
    # Qwen3 dense models, base (-base) and instruct (no suffix; chat), as published on the hub:
    # no 32B base model was released, so qwen3-32b is the instruct model alone. Defaults as the
    # Qwen2.5 sizes they sit between: full fine-tuning up to 14B, LoRA for 32B
    *_qwen3_pair("0.6B", 28, 1024, 16, 3072, True, 0.596, lr=2e-5, micro_batch_size=16,
                 zero_stage=2, slurm=ONE),
    *_qwen3_pair("1.7B", 28, 2048, 16, 6144, True, 1.72, lr=1e-5, micro_batch_size=8,
                 zero_stage=2, gradient_checkpointing=True, slurm=ONE),
    *_qwen3_pair("4B", 36, 2560, 32, 9728, True, 4.02, lr=1e-5, micro_batch_size=8,
                 zero_stage=2, gradient_checkpointing=True, slurm=FOUR),
    *_qwen3_pair("8B", 36, 4096, 32, 12288, False, 8.19, lr=1e-5, micro_batch_size=4,
                 zero_stage=3, gradient_checkpointing=True, eval_batch_size=16, slurm=EIGHT),
    *_qwen3_pair("14B", 40, 5120, 40, 17408, False, 14.8, lr=1e-5, micro_batch_size=4,
                 zero_stage=3, gradient_checkpointing=True, eval_batch_size=16, slurm=EIGHT),
    _qwen3("32B", 64, 5120, 64, 25600, False, 32.8, base=False, lr=1e-4, micro_batch_size=4,
           zero_stage=3, lora=True, gradient_checkpointing=True, eval_batch_size=8, slurm=EIGHT),
    # the automated-W2S testbed's weak supervisor (2026): Qwen1.5 is the qwen2 architecture with
    # full multi-head attention (16 KV heads), QKV biases and an untied LM head (0.62B with it;
    # Qwen2 was the first generation to tie the small models' embeddings)
    Entry(name="qwen1.5-0.5b-chat", hf_id="Qwen/Qwen1.5-0.5B-Chat", family="qwen1.5",
          arch=Arch("qwen2", 24, 1024, 16, 16, 2816, 151936, 32768, False, extra=_QWEN_ROPE),
          nominal_params_b=0.62, lr=2e-5, micro_batch_size=16, zero_stage=2, slurm=ONE, chat=True),
]

CATALOGUE: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    """Add (or replace) an entry; it is then found by its name and by its hub id."""
    CATALOGUE[entry.name] = entry
    return entry


for _entry in ENTRIES:
    register(_entry)


def lookup(name: str) -> Optional[Entry]:
    """The entry for a catalogue name or a hub id (case-insensitive), else None."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    low = name.lower()
    for entry in CATALOGUE.values():
        if low in (entry.name.lower(), entry.hf_id.lower()):
            return entry
    return None


def apply_defaults(raw: Any) -> Any:
    """Fill a model section (plain data, before validation) with its entry's dtype, gradient
    checkpointing and LoRA settings, where the user left them unset (`lora` key by key)."""
    entry = _entry_of(raw)
    if entry is None:
        return raw
    defaults = entry.model_defaults()
    out = dict(raw)
    for key in ("dtype", "gradient_checkpointing"):
        out.setdefault(key, defaults[key])
    given = out.get("lora")
    if given is None:
        out["lora"] = dict(defaults["lora"])
    elif isinstance(given, dict):
        out["lora"] = {**defaults["lora"], **given}
    # a LoraConfig object (built in code) is taken as given
    return out


def apply_train_defaults(raw: Any, explicit: Iterable[str] = ()) -> Any:
    """Fill a model section's `train` overrides with its entry's training defaults, except the
    keys the user set in that `train` or in the experiment's `train` section (`explicit`).

    Precedence, highest first: the model section (`strong.train.lr`, `strong.lora.r`,
    `strong.dtype`) > keys written in the experiment's `train` section (or by --set train.KEY) >
    the catalogue entry > the built-in defaults. The result is plain data again: a resolved
    config written out and read back gives the same runs.
    """
    entry = _entry_of(raw)
    if entry is None:
        return raw
    out = dict(raw)
    given = out.get("train") or {}
    if not isinstance(given, dict):
        return raw
    skip = set(explicit) | set(given)
    out["train"] = {**{k: v for k, v in entry.train_defaults().items() if k not in skip}, **given}
    return out


def slurm_defaults(name: str) -> dict[str, Any]:
    """A model's catalogue Slurm request as sweep `resources` keys; {} for other models."""
    entry = lookup(name)
    return entry.sweep_resources() if entry is not None else {}


def _entry_of(raw: Any) -> Optional[Entry]:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        return None
    return lookup(raw["name"])
