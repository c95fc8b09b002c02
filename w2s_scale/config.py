"""Typed configuration: the sections of an experiment and of a sweep, validated, dumped, hashed.

The bottom of the package: it imports nothing of it but `errors` and the static model catalogue.
What reads files or needs the registries above (the YAML loader, `--set`, the checks against
the dataset registry, the losses and preflight) is w2s_scale/loading.py; every check here reads
the config's own fields alone.

pydantic (already a dependency of wandb) does the type checking and rejects unknown keys; we only
turn its multi-line reports into one line that names the field and how to fix it.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, ClassVar, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_serializer, model_validator)

from w2s_scale.catalogue import apply_defaults, apply_train_defaults
from w2s_scale.errors import ConfigError, shorten


class Strict(BaseModel):
    # inf/nan pass `gt=0` (an lr or epochs of .inf would crash mid-run): rejected for every float
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)
    # fields added after runs were finished with this section, with the value that means "as
    # before": left out of dumps while they hold it, and so out of run hashes, so that runs
    # finished before the field existed stay reusable (tests/test_kclass_data.py pins hashes)
    ADDED_LATER: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _leave_out_added_later(self, handler):
        out = handler(self)
        if isinstance(out, dict):
            for name, as_before in self.ADDED_LATER.items():
                if name in out and out[name] == as_before:
                    del out[name]
        return out


class LoraConfig(Strict):
    enabled: bool = False  # train LoRA adapters (peft) and the head; the backbone stays frozen
    r: int = Field(8, gt=0)  # the adapters' rank
    alpha: float = Field(16.0, gt=0)  # scaling: the update is (alpha / r) B A
    dropout: float = Field(0.0, ge=0, lt=1)  # dropout on the adapters' input
    # None: the architecture family's default (see models.LORA_TARGETS)
    target_modules: Optional[list[str]] = None


class LabelTokensConfig(Strict):
    """head: label_tokens (w2s_scale/prompts.py): the causal LM classifies through its own LM head.
    The document goes into `template`, the prompt ends in a cue, and the class distribution is the
    softmax over the LM head's logits of the K label words' first tokens at the cue's last token."""
    # `{text}` is the document as the dataset formats it; the prompt must end in the cue
    template: str = "{text}\nLabel:"
    # one word per class, class 0 first; None: the dataset's own (the automated-W2S testbed's
    # A/B and False/True), else False/True for binary tasks; K > 2 classes need them listed
    words: Optional[list[str]] = None
    # the prompt as the user turn of the tokenizer's chat template, the label as the first token
    # of the assistant's reply; auto: on for chat/instruct models (catalogue `chat`, else a name
    # with Instruct/Chat/-it) whose tokenizer has a chat template, off for base models
    chat_template: Literal["auto", "on", "off"] = "auto"
    # a space before each label word (" True"); off: the word right after the cue, as the testbed
    leading_space: bool = False


class ModelConfig(Strict):
    # HF hub id, local folder, catalogue name, or an offline asset ("offline:minilm-l6")
    name: str
    # pretrained weights, or the architecture initialised at random (config_overrides applied)
    init: Literal["pretrained", "random"] = "pretrained"
    # fields of the transformers config set before the model is built (n_layer, hidden_size, ...)
    config_overrides: dict[str, Any] = Field(default_factory=dict)
    # where the classification head reads: last real token (causal LMs), pooled output (encoders)
    # (or, `pretrained`, an image classifier's own head used as is, untrained: a weak supervisor;
    # `label_tokens`, causal LMs: the LM head's logits of one label word per class, see label_tokens;
    # `mean`, encoders: the mean of the real tokens' last hidden states, the pooling
    # sentence-transformers checkpoints such as all-MiniLM-L6-v2 were trained with)
    head: Literal["auto", "last_token", "pooled", "pretrained", "label_tokens", "mean"] = "auto"
    # head: label_tokens only: the prompt template, label words and chat template (LabelTokensConfig)
    label_tokens: Optional[LabelTokensConfig] = None
    tokenizer: Optional[str] = None  # defaults to `name`
    # image models: the AutoImageProcessor to load (defaults to `name`'s own), or `reference`: the
    # reference's ImageNet transform (resize 256, centre crop 224, ImageNet mean/std); see vision.py
    image_processor: Optional[str] = None
    ADDED_LATER: ClassVar[dict[str, Any]] = {"image_processor": None, "label_tokens": None}
    # training precision (16-bit: mixed, fp32 master weights; bf16 without a GPU computes the core
    # of attention in fp32, where CPU kernels are faster: w2s_scale/cpu_attention.py)
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    dropout: bool = False  # the reference trains with dropout off; switch on here
    # freeze the backbone, train the head alone: on features extracted once and cached
    # (w2s_scale/text_features.py, vision.py); display_name calls it "<label> (frozen probe)"
    linear_probe: bool = False
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, more time
    lora: LoraConfig = Field(default_factory=LoraConfig)  # LoRA adapters (peft), see LoraConfig
    # per-model overrides of the experiment's `train` section (lr, micro_batch_size, ...)
    train: dict[str, Any] = Field(default_factory=dict)
    # weights kept after training (see w2s_scale/saving.py): none (metrics, predictions and weak
    # labels only), the LoRA adapters + head, or the whole model in the training dtype (model16)
    # or in fp32 from the ZeRO checkpoint (model32), as a transformers folder + head
    save: Literal["none", "adapters", "model16", "model32"] = "none"

    # how runs and tables name this model; default: the model name's last component
    label: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _catalogue_defaults(cls, data: Any) -> Any:
        # a catalogue name (or hub id) fills the fields the user left unset; see catalogue.py
        data = apply_defaults(data)
        if isinstance(data, dict) and data.get("head") == "label_tokens" and data.get("label_tokens") is None:
            # one spelling of the defaults, so `head: label_tokens` alone hashes as when spelled out
            data = {**data, "label_tokens": {}}
        return data

    @model_validator(mode="after")
    def _label_tokens_settings(self) -> "ModelConfig":
        if self.label_tokens is not None and self.head != "label_tokens":
            raise ValueError(f"label_tokens: settings of head: label_tokens, but head is "
                             f"{self.head}; set head: label_tokens or remove label_tokens")
        if self.head == "label_tokens" and self.linear_probe:
            raise ValueError("linear_probe: head: label_tokens reads the LM head, which a linear "
                             "probe would retrain alone; use lora or full fine-tuning")
        if self.label_tokens is not None and "{text}" not in self.label_tokens.template:
            raise ValueError("label_tokens.template: the template must contain {text}, where "
                             "the document goes, e.g. \"{text}\\nLabel:\"")
        return self

    @model_validator(mode="after")
    def _adapters_need_lora(self) -> "ModelConfig":
        if self.save == "adapters" and not self.lora.enabled:
            raise ValueError("save: adapters needs lora.enabled: true; use save: model16 to keep "
                             "a fully fine-tuned model")
        if self.save == "adapters" and self.init == "random":
            raise ValueError("save: adapters of a randomly initialised base cannot be reloaded "
                             "(the base is not saved); use save: model16")
        return self

    @property
    def display_name(self) -> str:
        """How figures and tables name this model: `short_name`, and what it is when that is not
        a fine-tuned model (a linear probe on frozen features), so that a ladder mixing both is
        read right. The one place this naming is decided."""
        kind = self.training_kind
        return f"{self.short_name} ({kind})" if kind == "frozen probe" else self.short_name

    @property
    def training_kind(self) -> str:
        """What training changes: "frozen probe" (a head on frozen features) or "fine-tuned"
        (the model, whole or by LoRA). Figures draw each kind as its own line."""
        probe = self.linear_probe and self.head != "pretrained"  # an own head trains nothing
        return "frozen probe" if probe else "fine-tuned"

    @property
    def short_name(self) -> str:
        """A folder-safe name: `label`, else the model name's last path component."""
        if self.label:
            tail = self.label
        else:
            tail = self.name.rstrip("/").split("/")[-1].split(":")[-1]
            tail += "-scratch" if self.init == "random" else ""
        return "".join(c if c.isalnum() or c in "-_." else "-" for c in tail)


class DataConfig(Strict):
    dataset: str  # a name in w2s_scale.data.sources.DATASETS
    # local file/folder: for 'jsonl'/'csv'/'parquet' the data itself; for a hub dataset, local
    # files of the hub's schema (used instead of downloading)
    path: Optional[str] = None
    test_path: Optional[str] = None  # local files: a separate test file (else cut from `path`)
    text_column: str = "text"  # local files: the column holding the text
    image_column: str = "image"  # image datasets (w2s_scale/data/images.py)
    label_column: str = "label"  # local files: the column holding the label (0..K-1)
    n_train: int = Field(20000, gt=1)  # documents for A + B together (the reference's 20,000)
    n_test: int = Field(10000, gt=0)  # test documents (a hub task's smaller test split is used whole)
    max_length: int = Field(1024, gt=1)  # tokens per document, the special tokens included
    # over-long texts: dropped (the reference's policy), or cut keeping the start / the end
    overlong: Literal["drop", "truncate", "truncate_left"] = "drop"
    balance: bool = False  # downsample the majority class in each split
    # K classes of a local file (jsonl/csv/parquet: labels 0..K-1); unset: 2, or what a registered
    # task declares. Left out of dumps (and so of run hashes) while unset: binary runs keep theirs
    num_classes: Optional[int] = Field(None, ge=2)
    # documents of the n_train that form A (the weak supervisor's ground truth); the rest are B.
    # Unset: half, as the reference. A weak model trained from scratch needs more than a small
    # strong student needs (the offline ladder: A 1,000, B 400)
    n_a: Optional[int] = Field(None, ge=2)

    ADDED_LATER: ClassVar[dict[str, Any]] = {"num_classes": None, "image_column": "image", "n_a": None}

    def a_b_sizes(self, n_train: Optional[int] = None) -> tuple[int, int]:
        """Documents in A and in B out of `n_train` (default: the configured n_train)."""
        n = self.n_train if n_train is None else n_train
        a = n // 2 if self.n_a is None else n * self.n_a // self.n_train
        return a, n - a

    @model_validator(mode="after")
    def _a_leaves_b(self):
        if self.n_a is not None and self.n_train - self.n_a < 2:
            raise ValueError(f"n_a: {self.n_a} of n_train {self.n_train} documents leaves B fewer than 2; "
                             f"set n_a below {self.n_train - 1} or raise n_train")
        return self


class EarlyStoppingConfig(Strict):
    """Model selection without peeking (transfer runs): a validation split of B labelled by the
    weak supervisor is held out of training; every `every` optimizer steps (and at the last) the
    student is scored on it, and the checkpoint with the best AUC against the weak labels
    (hardened at 0.5, EleutherAI's rule) is the one tested."""
    every: int = Field(gt=0)  # optimizer steps between evaluations
    val_fraction: float = Field(0.1, gt=0, le=0.5)  # of B's weak-labelled examples


class GtCurveConfig(Strict):
    """Accuracy against ground truth through training (transfer runs): a slice of B is held out
    of training and used only for this curve (never for selection), scored every `every` steps."""
    every: int = Field(gt=0)  # optimizer steps between evaluations
    fraction: float = Field(0.1, gt=0, le=0.5)  # of B's examples


class TrainConfig(Strict):
    # passes over the training split (fractions allowed); 0: no training, a zero-shot run of a
    # head: label_tokens model (the LM as it is scores test and labels B)
    epochs: float = Field(2, ge=0)
    lr: float = Field(5e-5, gt=0)  # peak learning rate of AdamW
    batch_size: int = Field(32, gt=0)  # global: micro x accumulation x world size
    micro_batch_size: int = Field(32, gt=0)  # per rank and forward pass
    eval_batch_size: int = Field(64, gt=0)  # per rank, when predicting (not in run hashes)
    # reference_vision: the reference vision code's CosineAnnealingLR(T_max=epochs) stepped every
    # batch, so the lr follows 0.5 (1 + cos(pi step / epochs)): a cosine with period 2 x epochs steps.
    # linear: transformers' get_linear_schedule_with_warmup (warm-up from 0, then a straight line
    # to 0 at the last step), the automated-W2S testbed's schedule
    schedule: Literal["cosine", "constant", "reference_vision", "linear"] = "cosine"
    warmup_frac: float = Field(0.0, ge=0, lt=1)  # of the optimizer steps, a linear warm-up
    weight_decay: float = Field(0.0, ge=0)  # AdamW's decoupled decay (0: Adam)
    max_grad_norm: float = Field(1.0, ge=0)  # 0: no clipping
    zero_stage: Literal[0, 1, 2, 3] = 2  # DeepSpeed ZeRO: what is partitioned across ranks
    offload: bool = False  # ZeRO optimizer (and, stage 3, parameter) offload to CPU
    # a DeepSpeed JSON whose "auto" values are filled from this section; None: built from it
    ds_config: Optional[str] = None
    checkpoint_every: int = Field(0, ge=0)  # optimizer steps; 0: only on a stop signal
    keep_checkpoints: int = Field(1, gt=0)  # the newest N checkpoints are kept
    length_grouping: bool = True  # batches of similar lengths (less padding), in a seeded order
    # texts of a micro-batch packed into rows with no padding, attention kept within each text,
    # each read at its own token (w2s_scale/padding_free.py): the same logits within float
    # tolerance, fewer tokens when lengths vary (most with length_grouping off). Causal LMs gpt2,
    # llama, mistral, qwen2, qwen3 and encoders bert, roberta, mpnet; not in run hashes
    padding_free: bool = False
    # transfer runs only (w2s_scale/selection.py); None: off. Both hold examples of B out of
    # training, so both enter the run's hash when set
    early_stopping: Optional[EarlyStoppingConfig] = None
    gt_curve: Optional[GtCurveConfig] = None
    # ground-truth runs only: train on the first N documents of A (shuffled per seed) instead of
    # all of it. With data.n_a making A larger than B (for weak models trained from scratch),
    # N = B's size gives a strong ceiling as many examples as the students it bounds, as the
    # paper's equal halves do. None: all of A
    gt_n_train: Optional[int] = Field(None, ge=2)
    ADDED_LATER: ClassVar[dict[str, Any]] = {"early_stopping": None, "gt_curve": None,
                                             "gt_n_train": None, "padding_free": False}

    @model_validator(mode="after")
    def _held_out_leaves_training_data(self) -> "TrainConfig":
        held = sum(c.fraction if isinstance(c, GtCurveConfig) else c.val_fraction
                   for c in (self.early_stopping, self.gt_curve) if c is not None)
        if held > 0.5:
            raise ValueError(f"early_stopping.val_fraction + gt_curve.fraction hold out {held:g} "
                             f"of B; keep them at 0.5 or less together so the student has data "
                             f"to train on")
        return self

    @model_validator(mode="after")
    def _micro_divides_global(self) -> "TrainConfig":
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size}; choose batch_size = micro_batch_size x accumulation x ranks")
        return self


class LossConfig(Strict):
    name: str  # a key of w2s_scale.losses.LOSSES
    # numbers, or the words a loss accepts for a parameter (warmup: reference, radius: midweak)
    params: dict[str, Union[float, str]] = Field(default_factory=dict)

    @property
    def tag(self) -> str:
        extra = "".join(f"-{k}{v}" if isinstance(v, str) else f"-{k}{v:g}"
                        for k, v in sorted(self.params.items()))
        return f"{self.name}{extra}"


# --- the label stage: what a transfer run's student trains on (see w2s_scale/labels.py) ---------

class EnsembleMember(Strict):
    # a model of this experiment ("weak", "strong", or a model's label; in a sweep: a sweep
    # model's name, "weak" being each pair's weak model), or a whole model section
    model: Union[str, ModelConfig] = "weak"
    # trains the member's gt run with seed + seed_offset (another data order / initialisation)
    # on the same split of the data: an ensemble of seeds of one model
    seed_offset: int = Field(0, ge=0)


class ProbeConfig(Strict):
    """A probe on the pretrained strong model's activations (EleutherAI w2s's probes)."""
    # k nearest neighbours, logistic regression, topological; ccs: contrast-consistent search
    # (Burns et al. 2022) on contrast pairs, unsupervised, oriented by the weak labels (ccs.py)
    kind: Literal["knn", "logreg", "topo", "ccs"] = "knn"
    # relabel: train on the probe's predictions; filter: drop the examples whose weak label
    # disagrees most with the probe's
    mode: Literal["relabel", "filter"] = "relabel"
    # index into the model's hidden states (0: embeddings, i: after block i); None: the middle
    layer: Optional[int] = Field(None, ge=0)
    k: int = Field(50, gt=0)               # knn neighbours; topo: k_cc and k_zeta
    l2: float = Field(1e-3, ge=0)          # logreg: L2 penalty on the weights
    contamination: float = Field(0.1, gt=0, lt=1)  # filter: fraction of the examples dropped
    restarts: int = Field(10, gt=0)        # ccs: random starts, the lowest final loss kept
    ADDED_LATER: ClassVar[dict[str, Any]] = {"restarts": 10}


class ElicitationConfig(Strict):
    """labels: {source: elicitation}: labels of B from the pretrained strong model's own LM head,
    without the weak labels or any ground truth (Wen et al. 2025; w2s_scale/elicitation.py,
    docs/methods.md#unsupervised-elicitation)."""
    # icm_sampled (ours): Wen et al.'s ICM search (simulated annealing on mutual predictability)
    # with `context` sampled demonstrations per prompt, then the rest of B labelled in context;
    # zero_shot: Wen et al.'s zero-shot baseline, the label-token prompt alone
    mode: Literal["icm_sampled", "zero_shot"] = "icm_sampled"
    n_search: int = Field(256, gt=1)   # icm_sampled: examples of B the search labels (the authors' 256)
    # icm_sampled: demonstrations in each prompt (ICM: every other labelled example)
    context: int = Field(8, gt=0)
    iterations: int = Field(3000, gt=0)  # icm_sampled: search steps (the authors' K, 3000)
    initial: int = Field(8, gt=1)      # icm_sampled: examples labelled at random, balanced, first
    alpha: float = Field(50.0, gt=0)   # icm_sampled: U = alpha * mean log-odds (the paper's 50)
    t0: float = Field(10.0, gt=0)      # icm_sampled: first temperature (the authors' 10)
    t_min: float = Field(0.01, gt=0)   # icm_sampled: lowest temperature (the authors' 0.01)
    # icm_sampled (ours): a change is refused when a class would hold under this fraction of
    # the labels found (plain classification has no consistency term against one-class
    # labellings); 0: off
    min_class_fraction: float = Field(0.2, ge=0, lt=1)

    @model_validator(mode="after")
    def _fields_of_mode(self) -> "ElicitationConfig":
        if self.mode == "zero_shot":
            search = sorted(self.model_fields_set - {"mode"})
            if search:
                raise ValueError(f"{search[0]}: a setting of mode: icm_sampled (this is mode: "
                                 f"zero_shot, which shows no demonstrations); remove it")
        if self.initial > self.n_search:
            raise ValueError(f"initial: {self.initial} random labels do not fit n_search = "
                             f"{self.n_search}; lower initial or raise n_search")
        if self.t_min > self.t0:
            raise ValueError(f"t_min: {self.t_min:g} is above t0 = {self.t0:g}; the temperature "
                             f"only falls")
        return self


LABEL_SOURCES = ("weak", "ensemble", "probe", "bootstrap", "confident", "elicitation")
CONFIDENT_THRESHOLD = 0.75  # source: confident without a rule: the 2026 sandbox's (labels.py)


class LabelsConfig(Strict):
    # where the labels come from (w2s_scale/labels.py; docs/methods.md)
    source: Literal["weak", "ensemble", "probe", "bootstrap", "confident", "elicitation"] = "weak"
    members: list[EnsembleMember] = Field(default_factory=list)   # ensemble
    weights: Optional[list[float]] = None                         # ensemble; None: equal
    probe: Optional[ProbeConfig] = None                           # probe (None: its defaults)
    # bootstrap: the intermediate students, small -> large (names as in `members`, or model
    # sections); in a sweep, empty means every model between the pair's weak and strong
    via: list[Union[str, ModelConfig]] = Field(default_factory=list)
    # strong-to-strong: after training, the student is retrained this many times from its
    # pretrained weights on its own previous predictions on B
    s2s_iterations: int = Field(0, ge=0)
    # confident: keep the floor(keep_fraction x N) most confident weak labels of B (confidence:
    # max_k p_k; ties in example-id order), docs/methods.md#training-only-on-confident-weak-labels
    keep_fraction: Optional[float] = Field(None, gt=0, le=1)
    # confident: keep those whose confidence is strictly above threshold; with neither set,
    # threshold 0.75 (the 2026 sandbox's rule)
    threshold: Optional[float] = Field(None, ge=0, lt=1)
    # elicitation: the strong model's own labels (None: ElicitationConfig's defaults)
    elicitation: Optional[ElicitationConfig] = None
    ADDED_LATER: ClassVar[dict[str, Any]] = {"keep_fraction": None, "threshold": None,
                                             "elicitation": None}

    @model_validator(mode="after")
    def _fields_of_source(self) -> "LabelsConfig":
        src = self.source
        if src != "confident" and (self.keep_fraction is not None or self.threshold is not None):
            raise ValueError(f"keep_fraction/threshold belong to source: confident (this is source: "
                             f"{src}); remove them or set source: confident")
        if self.keep_fraction is not None and self.threshold is not None:
            raise ValueError("keep_fraction/threshold: source: confident keeps by one rule; give "
                             "keep_fraction or threshold, not both")
        if src != "ensemble" and (self.members or self.weights is not None):
            raise ValueError(f"members/weights belong to source: ensemble (this is source: {src}); "
                             f"remove them or set source: ensemble")
        if src != "probe" and self.probe is not None:
            raise ValueError(f"probe belongs to source: probe (this is source: {src}); remove it "
                             f"or set source: probe")
        if src != "elicitation" and self.elicitation is not None:
            raise ValueError(f"elicitation belongs to source: elicitation (this is source: {src}); "
                             f"remove it or set source: elicitation")
        if src != "bootstrap" and self.via:
            raise ValueError(f"via belongs to source: bootstrap (this is source: {src}); remove "
                             f"it or set source: bootstrap")
        if src == "ensemble":
            if len(self.members) < 2:
                raise ValueError("members: an ensemble needs at least 2 members, e.g. members: "
                                 "[{model: weak}, {model: weak, seed_offset: 1}]")
            if self.weights is not None:
                if len(self.weights) != len(self.members):
                    raise ValueError(f"weights: {len(self.weights)} weight(s) for "
                                     f"{len(self.members)} members; give one per member")
                if any(w < 0 for w in self.weights) or not sum(self.weights) > 0:
                    raise ValueError(f"weights: {shorten(self.weights)} must be >= 0 with a "
                                     f"positive sum")
            keys = [(m.model if isinstance(m.model, str) else m.model.model_dump_json(),
                     m.seed_offset) for m in self.members]
            if len(set(keys)) != len(keys):
                raise ValueError("members: two members are the same model with the same "
                                 "seed_offset; give one another seed_offset")
        return self

    @property
    def probe_or_default(self) -> ProbeConfig:
        return self.probe or ProbeConfig()

    @property
    def elicitation_or_default(self) -> ElicitationConfig:
        return self.elicitation or ElicitationConfig()

    @property
    def confident_rule(self) -> tuple[str, float]:
        """source: confident: ("keep_fraction", f) or ("threshold", t)."""
        if self.keep_fraction is not None:
            return "keep_fraction", self.keep_fraction
        return "threshold", CONFIDENT_THRESHOLD if self.threshold is None else self.threshold


def labels_shorthand(value: Any) -> Any:
    # `labels: ensemble`-style words and a single mapping are shorthand for a one-entry list
    if isinstance(value, (str, dict)):
        value = [value]
    if isinstance(value, list):
        return [{"source": v} if isinstance(v, str) else v for v in value]
    return value


def check_label_models(labels: list[LabelsConfig], named: dict[str, ModelConfig],
                       bootstrap_needs_via: bool) -> None:
    """Every model a label source names exists (ValueError naming the field otherwise)."""
    for i, entry in enumerate(labels):
        refs = [(f"labels.{i}.members.{j}.model", m.model) for j, m in enumerate(entry.members)]
        refs += [(f"labels.{i}.via.{j}", v) for j, v in enumerate(entry.via)]
        for where, ref in refs:
            if isinstance(ref, str) and ref not in named:
                raise ValueError(f"{where}: no model named {shorten(ref)}; name one of "
                                 f"{sorted(named)} or give a model section (name: ...)")
        if entry.source == "bootstrap" and bootstrap_needs_via and not entry.via:
            raise ValueError(f"labels.{i}.via: a bootstrap chain needs its intermediate models, "
                             f"e.g. via: [{{name: MODEL, label: mid}}] (a sweep walks its model "
                             f"ladder instead)")


def label_models(cfg: "ExperimentConfig") -> list[tuple[str, ModelConfig]]:
    """The model sections an experiment's label sources add (ensemble members, bootstrap steps),
    each with where it is written: they are checked and trained as weak and strong are."""
    out = []
    for i, entry in enumerate(cfg.labels):
        refs = [(f"labels.{i}.members.{j}.model", m.model) for j, m in enumerate(entry.members)]
        refs += [(f"labels.{i}.via.{j}", v) for j, v in enumerate(entry.via)]
        out += [(where, ref) for where, ref in refs if isinstance(ref, ModelConfig)]
    return out


# --- a weak-to-strong method behind the method contract (see w2s_scale/methods/) ----------------

class IsolationConfig(Strict):
    """`method.isolated`: the method runs in a process of its own that cannot read a label (Linux
    namespaces hide the results, the data and the label store from it) and is scored only by the
    evaluation service (docs/isolation.md#the-isolated-mode)."""
    # more folders to hide from the method's process, beyond the results_dir, the data files and
    # the data caches: the label store (and its log) where it is on the machine the job runs on
    hide: list[str] = Field(default_factory=list)
    # the evaluation service; None: $W2S_EVAL_URL, then the URL file `w2s serve` writes
    url: Optional[str] = None


class MethodConfig(Strict):
    """One method run per (weak, strong) pair and seed: the method is given B and test without
    labels, the soft labels of its label source on B, the weak model's on test and the anchors'
    accuracies, and trains students through the engine (docs/methods.md#writing-a-method)."""
    # a built-in method (transfer), "package.module:function", or the name of an entry point
    # of the group w2s_scale.methods
    name: str
    # the method's own settings, handed to it as given (they enter the run's hash)
    options: dict[str, Any] = Field(default_factory=dict)
    # train_student's default loss, and the loss of the students a bootstrap or strong-to-strong
    # label source trains before the method
    loss: LossConfig = Field(default_factory=lambda: LossConfig(name="xent"))
    # where the soft labels of B the method receives come from (as `labels` entries)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    # how runs and tables name the method; default: its name's last part, and a short hash of
    # its options, loss and labels when they are not the defaults
    label: Optional[str] = None
    # `true` or {hide: [...], url: ...}: run the method label-isolated (IsolationConfig); None:
    # in the run's own process, scored in-process. Left out of dumps while unset, so the hashes
    # and tags of methods that do not use it stay as they were
    isolated: Optional[IsolationConfig] = None

    ADDED_LATER: ClassVar[dict[str, Any]] = {"isolated": None}

    @field_validator("isolated", mode="before")
    @classmethod
    def _isolated_word(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value

    @field_validator("loss", mode="before")
    @classmethod
    def _loss_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_word(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value

    @property
    def tag(self) -> str:
        """A folder-safe name for run folders and tables ("transfer", "blend-3fa2c1")."""
        if self.label:
            base = self.label
        else:
            base = self.name.replace(":", ".").rstrip(".").split(".")[-1]
            settings = self.model_dump(mode="json", include={"options", "loss", "labels"})
            default = MethodConfig(name=self.name).model_dump(mode="json", include={"loss", "labels"})
            if self.isolated is not None:  # a run of its own, beside the same method in-process
                settings["isolated"] = True
            if (settings["options"] or {k: settings[k] for k in ("loss", "labels")} != default
                    or self.isolated is not None):
                base += "-" + stable_hash(settings)[:6]
        return "".join(c if c.isalnum() or c in "-_." else "-" for c in base)


def methods_shorthand(value: Any) -> Any:
    # `method: NAME` and a single mapping are shorthand for a one-entry list
    if isinstance(value, (str, dict)):
        value = [value]
    if isinstance(value, list):
        return [{"name": v} if isinstance(v, str) else v for v in value]
    return value


def method_field(methods: list, i: int, key: str) -> str:
    """How an error names a method's field: method.KEY for one method, method.I.KEY for several."""
    return f"method.{key}" if len(methods) == 1 else f"method.{i}.{key}"


def check_method_labels(methods: list[MethodConfig], named: dict[str, ModelConfig],
                        bootstrap_needs_via: bool) -> None:
    """The models a method's label source names exist (ValueError naming the field otherwise)."""
    for i, method in enumerate(methods):
        try:
            check_label_models([method.labels], named, bootstrap_needs_via)
        except ValueError as err:
            raise ValueError(method_field(methods, i, "labels." + str(err).removeprefix("labels.0."))) from None


class TrackingConfig(Strict):
    wandb: Literal["off", "online", "offline"] = "off"  # W&B logging (offline: synced later)
    # online, but no API key or no way to the W&B server (a cluster node): log offline and say
    # how to sync later, or stop before training (exit 2)
    on_no_network: Literal["offline", "error"] = "offline"
    project: str = "w2s-scale"  # W&B project
    entity: Optional[str] = None  # W&B team or user; None: the account's default
    progress: bool = True  # progress bars on rank 0


class LaunchConfig(Strict):
    launcher: Literal["none", "torchrun", "deepspeed"] = "none"  # what starts the ranks
    nproc: int = Field(1, gt=0)  # ranks on this machine
    # how long a collective waits for the other ranks before this rank gives up (a rank that
    # died or hangs then ends the run within this time; see docs/running-experiments.md,
    # "When a rank dies or hangs")
    collective_timeout_s: float = Field(1800.0, gt=0)
    # the local sweep executor: how many runs at once (each with its share of the CPU threads and,
    # when CUDA_VISIBLE_DEVICES lists GPUs, nproc GPUs of its own)
    parallel: int = Field(1, gt=0)
    ADDED_LATER: ClassVar[dict[str, Any]] = {"parallel": 1}


class ExperimentConfig(Strict):
    name: str  # runs land in results_dir/name/<dataset>/seed<k>/<run>
    results_dir: str = "results"  # the folder every run writes under (created if missing)
    seeds: list[int] = Field(default_factory=lambda: [0])  # one set of runs per seed
    data: DataConfig  # the dataset and its A / B / test sizes
    weak: ModelConfig  # the supervisor: trained on A, labels B
    strong: ModelConfig  # the student: trained on B's weak labels, and on A for its ceiling
    train: TrainConfig = Field(default_factory=TrainConfig)  # every model's, unless it overrides
    # the transfer losses: one set of transfer runs each
    losses: list[LossConfig] = Field(default_factory=lambda: [LossConfig(name="xent")])
    # where each transfer run's labels come from (one set of transfer runs per entry and loss)
    labels: list[LabelsConfig] = Field(default_factory=lambda: [LabelsConfig()])
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)  # W&B and progress bars
    launch: LaunchConfig = Field(default_factory=LaunchConfig)  # how the ranks start
    # a weak model with more parameters than the student it teaches is refused by preflight as
    # a likely mix-up (weak and strong swapped); true: that is meant (reverse transfer)
    allow_larger_weak: bool = False
    # methods behind the method contract (w2s_scale/methods/): one method run per entry and
    # seed, beside the transfer runs; a name alone or one mapping is a one-entry list
    method: list[MethodConfig] = Field(default_factory=list)
    ADDED_LATER: ClassVar[dict[str, Any]] = {"allow_larger_weak": False, "method": []}

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_shorthand(cls, value: Any) -> Any:
        return labels_shorthand(value)

    @field_validator("method", mode="before")
    @classmethod
    def _methods_shorthand(cls, value: Any) -> Any:
        return methods_shorthand(value)

    @model_validator(mode="after")
    def _check_methods(self) -> "ExperimentConfig":
        check_method_labels(self.method, {"weak": self.weak, "strong": self.strong,
                                          self.weak.short_name: self.weak,
                                          self.strong.short_name: self.strong}, bootstrap_needs_via=True)
        return self

    @model_validator(mode="before")
    @classmethod
    def _catalogue_train_defaults(cls, data: Any) -> Any:
        # catalogue models get their entry's lr, micro batch, ZeRO stage... where neither the model
        # section nor this experiment's `train` section sets them (see catalogue.py)
        if not isinstance(data, dict):
            return data
        train = data.get("train") or {}
        explicit = (train.model_fields_set if isinstance(train, BaseModel)
                    else set(train) if isinstance(train, dict) else set())  # else pydantic says why
        return {**data, **{role: apply_train_defaults(data[role], explicit)
                           for role in ("weak", "strong") if role in data}}

    @field_validator("losses", mode="before")
    @classmethod
    def _loss_shorthand(cls, value: Any) -> Any:
        # `losses: [xent, logconf]` is shorthand for [{name: xent}, {name: logconf}]
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds_nonempty(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("give at least one seed, e.g. seeds: [0]")
        return value

    @model_validator(mode="after")
    def _check_models(self) -> "ExperimentConfig":
        # the loss and dataset names are checked against their registries by loading.py
        for role in ("weak", "strong"):
            train = train_for(self, getattr(self, role), field=f"{role}.train")
            model = getattr(self, role)
            check_zero_shot(model, train, role)
            if model.save == "model32" and train.zero_stage == 0 and model.dtype != "fp32":
                raise ValueError(f"{role}.save: model32 reads DeepSpeed's fp32 master weights, "
                                 f"which ZeRO stage 0 in {model.dtype} does not keep; use "
                                 f"zero_stage >= 1 or save: model16")
        check_label_models(self.labels, {"weak": self.weak, "strong": self.strong,
                                         self.weak.short_name: self.weak,
                                         self.strong.short_name: self.strong}, bootstrap_needs_via=True)
        # the models label sources add: their merged train sections too (planning.py resolves
        # every run's settings with train_for, and must not meet an invalid one)
        for where, model in label_models(self):
            check_zero_shot(model, train_for(self, model, field=f"{where}.train"), where)
        return self


def check_zero_shot(model: ModelConfig, train: TrainConfig, where: str) -> None:
    """train.epochs: 0 only where an untrained model means something: the LM head's own label
    words (a new linear head starts at zero, every example at 1/K)."""
    if train.epochs == 0 and model.head != "label_tokens":
        raise ValueError(f"{where}.train.epochs: 0 trains nothing, and a new {model.head} head "
                         f"predicts 1/K for every example; set epochs > 0, or head: label_tokens "
                         f"for a zero-shot run")


def train_for(cfg: ExperimentConfig, model: ModelConfig, field: str = "train") -> TrainConfig:
    """The experiment's train section with one model's overrides applied (and validated):
    model.train > keys written in the experiment's train > the model's catalogue entry."""
    model_train = apply_train_defaults(model.model_dump(include={"name", "train"}),
                                       cfg.train.model_fields_set)["train"]
    merged = {**cfg.train.model_dump(), **model_train}
    try:
        return TrainConfig(**merged)
    except ValidationError as err:
        raise ConfigError(one_line(err, prefix=field)) from None


def one_line(err: ValidationError, prefix: str = "") -> str:
    first = err.errors()[0]
    # pydantic names the member of a Union it tried (params.radius.float): not part of the field
    loc = ".".join(str(p) for p in (prefix, *first["loc"]) if p not in ("", "float", "str", "int"))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key; check its spelling against the documented fields"
    elif first["type"] == "missing":
        msg = "required field is missing; add it to the config"
    elif "input" in first and first["type"] not in ("value_error",):
        msg = f"{msg} (got {shorten(first['input'])})"
    return f"{loc}: {msg}" if loc else msg


def to_yaml(model: BaseModel) -> str:
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)


def stable_hash(*parts: Any) -> str:
    """A short hash of plain data (pydantic models dumped first), stable across machines."""
    plain = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    blob = json.dumps(plain, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --- a sweep: models small -> large, datasets, seeds (see w2s_scale/sweep.py) ------------------

class Resources(Strict):
    """What one run asks of Slurm. Ranks per node default to the GPUs per node (one rank per
    GPU), or to launch.nproc on CPU-only nodes."""
    nodes: int = Field(1, gt=0)  # --nodes
    gpus_per_node: int = Field(0, ge=0)  # --gpus-per-node (0: CPU-only nodes)
    ranks_per_node: Optional[int] = Field(None, gt=0)  # None: the GPUs per node, else launch.nproc
    cpus_per_task: Optional[int] = Field(None, gt=0)  # cores for all the ranks of one node
    mem: Optional[str] = None                          # e.g. "64G" (--mem, per node)
    # each run's --time: `auto` (from the sweep's own estimate: 2 x estimate + 10 min, at least 15
    # min, whole minutes, at most max_job_time; see w2s_scale/packing.py), or a Slurm time kept as
    # given (a job of one run asks exactly it; a packed job asks the sum over its runs)
    time: str = "auto"
    # the longest --time a job asks for: caps `auto` limits and the sum of a pack (a run longer
    # than that checkpoints at the stop signal and its job requeues to resume)
    max_job_time: str = "06:00:00"
    pack: bool = True  # runs asking for the same resources share one job, in dependency order
    partition: Optional[str] = None  # --partition; None: the cluster's default
    account: Optional[str] = None  # --account; None: the user's default
    # per-node launcher (launch/slurm_node.py); None: none for a single rank, else torchrun
    launcher: Optional[Literal["torchrun", "deepspeed", "none"]] = None
    rdzv: Literal["c10d", "static"] = "c10d"          # torchrun: its rendezvous or fixed ranks
    signal_before_s: int = Field(180, ge=0)           # --signal=USR1@N: checkpoint, requeue
    sbatch: list[str] = Field(default_factory=list)   # extra options, passed through as given

    @field_validator("time", "max_job_time")
    @classmethod
    def _slurm_time(cls, value: str, info) -> str:
        if value == "auto" and info.field_name == "time":
            return value
        if slurm_seconds(value) is None:
            auto = "auto (from the estimate), " if info.field_name == "time" else ""
            raise ValueError(f"{shorten(value)} is not a Slurm time; write {auto}minutes, MM:SS, "
                             f"HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, e.g. 04:00:00")
        return value

    @field_validator("partition", "account")
    @classmethod
    def _slurm_names(cls, value: Optional[str], info) -> Optional[str]:
        # Slurm names: letters, digits, - _ . (a partition list is comma-separated)
        pattern = r"[A-Za-z0-9_.\-]+(,[A-Za-z0-9_.\-]+)*" if info.field_name == "partition" else r"[A-Za-z0-9_.\-]+"
        if value is not None and not re.fullmatch(pattern, value):
            raise ValueError(f"{shorten(value)} is not a Slurm {info.field_name} name (letters, "
                             f"digits, '-', '_', '.'{', comma-separated' if info.field_name == 'partition' else ''})")
        return value

    @field_validator("mem")
    @classmethod
    def _slurm_mem(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not re.fullmatch(r"[1-9][0-9]*[KMGT]?", value.strip()):
            raise ValueError(f"{shorten(value)} is not a Slurm memory size; write a positive "
                             f"number with an optional unit K, M, G or T, e.g. 64G")
        return value

    @field_validator("sbatch")
    @classmethod
    def _sbatch_options(cls, value: list[str]) -> list[str]:
        for option in value:
            if not option.startswith("-") or option.strip() != option:
                raise ValueError(f"{shorten(option)} is not an sbatch option (sbatch would read it "
                                 f"as the script); write each as --name=value, e.g. --qos=high")
        return value

    @model_validator(mode="after")
    def _signal_inside_time(self) -> "Resources":
        limit = slurm_seconds(self.time if self.time != "auto" else self.max_job_time)
        if limit and self.signal_before_s >= limit:
            raise ValueError(f"signal_before_s: {self.signal_before_s} s is not inside the job's time "
                             f"{self.time} ({limit} s), so the stop signal would come at the start; "
                             f"lower it or raise time")
        return self


def slurm_seconds(value: str) -> Optional[int]:
    """Seconds of a Slurm --time value (0 for UNLIMITED/INFINITE), None if it is not one."""
    text = value.strip()
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return 0
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        return None
    days, a, b, c = m.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (parts + [0, 0])[:3]
        total = int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    elif len(parts) == 1:  # minutes
        total = parts[0] * 60
    elif len(parts) == 2:  # MM:SS
        total = parts[0] * 60 + parts[1]
    else:  # HH:MM:SS
        total = parts[0] * 3600 + parts[1] * 60 + parts[2]
    return total if total > 0 else None


class SweepModel(ModelConfig):
    """A model of the sweep: a ModelConfig plus the Slurm resources its runs ask for (merged
    over the sweep's `resources`)."""
    resources: dict[str, Any] = Field(default_factory=dict)  # fields of Resources for this model's runs
    # weak: only teaches (a supervisor, never a student); strong: only learns; both: the
    # reference's grid, every model teaching every larger one. Not part of a run's identity.
    role: Literal["both", "weak", "strong"] = "both"
    # the seeds this model's runs use, a subset of the sweep's (None: all of them); a pair runs
    # on the seeds both of its models have. Lets cheap models (frozen probes) take more seeds
    # than an expensive one on the same ladder. Not part of a run's identity.
    seeds: Optional[list[int]] = None

    def model_config_only(self) -> ModelConfig:
        return ModelConfig(**self.model_dump(exclude={"resources", "role", "seeds"}))


class SweepConfig(Strict):
    name: str  # runs land in results_dir/name/<dataset>/seed<k>/<run>
    results_dir: str = "results"  # the folder every run writes under (created if missing)
    seeds: list[int] = Field(default_factory=lambda: [0])  # one set of runs per seed
    datasets: list[DataConfig]  # each a data section (`data:` is shorthand for one)
    models: list[SweepModel]           # ordered small -> large: a model teaches those after it
    train: TrainConfig = Field(default_factory=TrainConfig)  # every model's, unless it overrides
    # the transfer losses: one set of transfer runs each
    losses: list[LossConfig] = Field(default_factory=lambda: [LossConfig(name="xent")])
    self_transfer: bool = True         # also weak == strong (each model taught by itself)
    # where transfer runs' labels come from: one set of transfer runs per entry, pair and loss
    # (see w2s_scale/labels.py; source: bootstrap walks the ladder between each pair)
    labels: list[LabelsConfig] = Field(default_factory=lambda: [LabelsConfig()])
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    launch: LaunchConfig = Field(default_factory=LaunchConfig)  # the local executor's ranks
    executor: Literal["local", "slurm"] = "local"  # where `w2s sweep` runs the runs
    resources: Resources = Field(default_factory=Resources)  # every model's Slurm job, unless it overrides
    # a weak model with more parameters than a student it teaches is refused by preflight as a
    # likely mix-up (models are listed small -> large); true: that is meant (reverse transfer)
    allow_larger_weak: bool = False
    # methods behind the method contract (w2s_scale/methods/): one method run per entry, pair
    # and seed, beside the transfer runs; a name alone or one mapping is a one-entry list
    method: list[MethodConfig] = Field(default_factory=list)
    ADDED_LATER: ClassVar[dict[str, Any]] = {"allow_larger_weak": False, "method": []}

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "data" in data and "datasets" not in data:  # one dataset: `data:` as in experiments
                data["datasets"] = [data.pop("data")]
            if isinstance(data.get("losses"), list):
                data["losses"] = [{"name": v} if isinstance(v, str) else v for v in data["losses"]]
            if "labels" in data:
                data["labels"] = labels_shorthand(data["labels"])
            if "method" in data:
                data["method"] = methods_shorthand(data["method"])
        return data

    @field_validator("seeds", "datasets", "models", "losses")
    @classmethod
    def _nonempty(cls, value: list, info) -> list:
        if not value:
            raise ValueError(f"give at least one entry in {info.field_name}")
        return value

    @model_validator(mode="after")
    def _check(self) -> "SweepConfig":
        names = [m.short_name for m in self.models]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise ValueError(f"models.{i}: two models are both named {name!r}; give one a "
                                 f"`label`")
        datasets = [d.dataset for d in self.datasets]
        for i, name in enumerate(datasets):
            if datasets.index(name) != i:
                raise ValueError(f"datasets.{i}: dataset {name!r} appears twice; results of a "
                                 f"dataset share one folder, so run the other as its own sweep")
        named = {m.short_name: m.model_config_only() for m in self.models}
        check_label_models(self.labels, {**named, "weak": self.models[0], "strong": self.models[-1]},
                           bootstrap_needs_via=False)
        check_method_labels(self.method, {**named, "weak": self.models[0], "strong": self.models[-1]},
                            bootstrap_needs_via=False)
        for i, model in enumerate(self.models):
            unknown = sorted(set(model.seeds or []) - set(self.seeds))
            if model.seeds is not None and (not model.seeds or unknown):
                raise ValueError(f"models.{i}.seeds: {unknown or 'an empty list'} is not a subset of "
                                 f"the sweep's seeds {self.seeds}; list some of those, or leave "
                                 f"seeds out for all of them")
            try:
                resources_for(self, model)
            except ConfigError as err:
                raise ValueError(f"models.{i}.{err}") from None
        for i in range(len(self.datasets)):
            try:
                exp = experiment_for(self, i)
            except ConfigError as err:
                raise ValueError(str(err)) from None
        for i, model in enumerate(self.models):  # the models between the first and the last too
            check_zero_shot(model, train_for(exp, model.model_config_only(), field=f"models.{i}.train"),
                            f"models.{i}")
        return self


def resources_for(cfg: SweepConfig, model: SweepModel) -> Resources:
    merged = {**cfg.resources.model_dump(), **model.resources}
    try:
        return Resources(**merged)
    except ValidationError as err:
        raise ConfigError(one_line(err, prefix="resources")) from None


def experiment_for(cfg: SweepConfig, dataset_index: int) -> ExperimentConfig:
    """The experiment config a run of this dataset is planned and executed with: the same
    name, data and train settings as `w2s experiment` would use, hence the same run hashes."""
    raw = dict(name=cfg.name, results_dir=cfg.results_dir, seeds=cfg.seeds,
               data=cfg.datasets[dataset_index], weak=cfg.models[0].model_config_only(),
               strong=cfg.models[-1].model_config_only(), train=cfg.train, losses=cfg.losses,
               tracking=cfg.tracking, launch=cfg.launch, allow_larger_weak=cfg.allow_larger_weak)
    try:
        return ExperimentConfig(**raw)
    except ValidationError as err:
        raise ConfigError(one_line(err)) from None


def from_experiment(exp: ExperimentConfig) -> SweepConfig:
    """An experiment as a two-model sweep without self-transfer: the very same runs."""
    return SweepConfig(name=exp.name, results_dir=exp.results_dir, seeds=exp.seeds,
                       datasets=[exp.data], models=[exp.weak.model_dump(), exp.strong.model_dump()],
                       train=exp.train, losses=exp.losses, self_transfer=False,
                       labels=exp.labels, tracking=exp.tracking, launch=exp.launch,
                       allow_larger_weak=exp.allow_larger_weak, method=exp.method)
