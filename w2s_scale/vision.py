"""Image models on the run engine: processors, backbones, heads, and frozen features cached on disk.

A run's model is used in one of three ways (ModelConfig):
- `head: pretrained`: an image classifier's own head, used as is (nothing trained); its class
  probabilities are the weak labels (the reference's AlexNet).
- `linear_probe: true`: the reference's strong students. The backbone's features are extracted
  once per model and image under the multi-rank engine (every rank scores its share; rank 0 writes
  the cache), then a linear head (nn.Linear with bias, PyTorch's default init, as the reference's
  probe) is trained on them through the same engine.
- otherwise: the backbone and a zero-initialised linear head fine-tuned together (or LoRA), under
  any ZeRO stage.

Features: the CLS token of the last (layer-normed) hidden state for ViT-like models (ViT, DeiT,
DINO, DINOv2), whose ViT pooler is untrained in DINO checkpoints; the pooled output of CNNs
(ResNet: global average pool, ConvNeXt: pooled and layer-normed). Backbones load through
transformers (AutoModel / AutoModelForImageClassification) with their own AutoImageProcessor;
`torchvision:<arch>` names a torchvision classifier (the reference's AlexNet), for `head: pretrained`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from w2s_scale import ds_config
from w2s_scale.config import ExperimentConfig, ModelConfig, stable_hash
from w2s_scale.data.images import ImageSet, image_classes, open_images
from w2s_scale.engine import build_engine, forward_all
from w2s_scale.errors import ModelError, shorten
# the frozen-feature cache, shared with text probes (also imported from here, as before)
from w2s_scale.features import FeatureSet, cache_path, cached_features
from w2s_scale.models import (DTYPES, zero_init_context, load_hf_config, load_weights,
                              resolve_name, zero_init_head)

# model types whose features are the CLS token (else: the pooled output)
CLS_TYPES = {"vit", "deit", "dinov2", "dinov2_with_registers", "beit", "data2vec-vision",
             "vit_msn", "vit_mae"}
# LoRA's default targets: the attention projections, as transformers 5 names them (q_proj...) or as
# earlier releases did (query...)
ATTENTION_PROJECTIONS = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))
TORCHVISION = "torchvision:"
# the reference's ImageNet transform (torchvision Resize(256), CenterCrop(224), Normalize)
REFERENCE_RESIZE, REFERENCE_CROP = 256, 224
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# --- pictures -> pixel values ------------------------------------------------------------------

class ReferenceTransform:
    """Shorter side to 256 (bilinear), centre crop 224, scale to [0, 1], ImageNet mean/std."""

    def __call__(self, images: Sequence) -> torch.Tensor:
        from PIL import Image

        out = []
        for image in images:
            image = image.convert("RGB")
            w, h = image.size
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(REFERENCE_RESIZE * long / short)
            size = (REFERENCE_RESIZE, new_long) if w <= h else (new_long, REFERENCE_RESIZE)
            image = image.resize(size, Image.BILINEAR)
            w, h = image.size
            top, left = int(round((h - REFERENCE_CROP) / 2.0)), int(round((w - REFERENCE_CROP) / 2.0))
            image = image.crop((left, top, left + REFERENCE_CROP, top + REFERENCE_CROP))
            array = np.asarray(image, dtype=np.float32) / 255.0
            array = (array - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
            out.append(torch.from_numpy(array.transpose(2, 0, 1).copy()))
        return torch.stack(out)


class HFProcessor:
    """A transformers image processor, fed RGB pictures."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, images: Sequence) -> torch.Tensor:
        rgb = [image.convert("RGB") for image in images]
        return self.processor(images=rgb, return_tensors="pt")["pixel_values"]


def load_processor(cfg: ModelConfig, where: str = "model"):
    """The model's own AutoImageProcessor, the one named by `image_processor`, or the reference's."""
    if cfg.image_processor == "reference" or (cfg.image_processor is None
                                              and cfg.name.startswith(TORCHVISION)):
        return ReferenceTransform()
    from transformers import AutoImageProcessor

    name = resolve_name(cfg.image_processor or cfg.name)
    try:
        return HFProcessor(AutoImageProcessor.from_pretrained(name))
    except Exception as err:  # noqa: BLE001 - transformers raises many kinds here
        raise ModelError(f"{where}.image_processor: cannot load an image processor from "
                         f"{shorten(name)} ({type(err).__name__}); give a folder or hub id with a "
                         f"preprocessor_config.json, or image_processor: reference") from None


@dataclass
class PixelSet:
    """Images as the engine reads them: `model_inputs(rows)` processes those rows' pictures."""
    images: ImageSet
    processor: object

    ids = property(lambda self: self.images.ids)
    labels = property(lambda self: self.images.labels)
    n_classes = property(lambda self: self.images.n_classes)
    n_dropped = property(lambda self: 0)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def lengths(self) -> np.ndarray:  # every picture costs the same: batches need no grouping
        return np.ones(len(self), dtype=np.int64)

    def subset(self, keep: np.ndarray) -> "PixelSet":
        return PixelSet(self.images.subset(keep), self.processor)

    def model_inputs(self, rows: Sequence[int]) -> torch.Tensor:
        return self.processor(self.images.images(rows))


# --- modules -----------------------------------------------------------------------------------

def feature_dim(hf_config) -> int:
    if getattr(hf_config, "hidden_sizes", None):  # CNNs: the last stage's channels
        return int(hf_config.hidden_sizes[-1])
    return int(hf_config.hidden_size)


class FeatureExtractor(nn.Module):
    def __init__(self, backbone: nn.Module, cls_token: bool):
        super().__init__()
        self.backbone = backbone
        self.cls_token = cls_token

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.backbone(pixel_values=pixel_values)
        if self.cls_token:
            return out.last_hidden_state[:, 0]
        return out.pooler_output.flatten(1)


class FineTuned(nn.Module):
    """Backbone features + a zero-initialised linear head over K classes, trained together."""

    def __init__(self, extractor: FeatureExtractor, dim: int, n_classes: int):
        super().__init__()
        self.extractor = extractor
        self.head = nn.Linear(dim, n_classes, bias=False)  # zero: every picture starts at 1/K

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feats = self.extractor(pixel_values)
        return self.head(feats.to(self.head.weight.dtype)).float()


class OwnHead(nn.Module):
    """An image classifier's logits from its own pretrained head, used as is."""

    def __init__(self, classifier: nn.Module, torchvision: bool):
        super().__init__()
        self.classifier = classifier
        self.torchvision = torchvision

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.torchvision:
            return self.classifier(pixel_values).float()
        return self.classifier(pixel_values=pixel_values).logits.float()


class LinearProbe(nn.Module):
    """The reference's probe: nn.Linear(D, K) with bias and PyTorch's default initialisation."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features.to(self.linear.weight.dtype)).float()


def _load(cfg: ModelConfig, hf_config, ds_config: Optional[dict], with_head: bool) -> nn.Module:
    """The transformers model, partitioned while it loads under ZeRO-3."""
    from transformers import AutoModel, AutoModelForImageClassification

    keep_alive = None
    if ds_config and ds_config.get("zero_optimization", {}).get("stage") == 3:
        from transformers.integrations import HfDeepSpeedConfig

        # transformers partitions weights at load time while this object is alive
        keep_alive = HfDeepSpeedConfig(ds_config)
    auto = AutoModelForImageClassification if with_head else AutoModel
    model = load_weights(auto, cfg, hf_config)
    del keep_alive
    return model


def torchvision_builder(cfg: ModelConfig, where: str = "model"):
    """torchvision's constructor of `torchvision:<arch>` (torchvision is an optional dependency)."""
    arch = cfg.name[len(TORCHVISION):]
    try:
        import torchvision
    except ImportError:
        raise ModelError(f"{where}.name: {cfg.name} needs torchvision; pip install torchvision "
                         f"(the release made for the installed torch)") from None
    builder = getattr(torchvision.models, arch, None)
    if builder is None:
        raise ModelError(f"{where}.name: torchvision has no model {arch!r}; e.g. torchvision:alexnet")
    return builder


def _torchvision_model(cfg: ModelConfig, ds_config: Optional[dict]) -> nn.Module:
    builder = torchvision_builder(cfg)
    with zero_init_context(ds_config):
        # pretrained: torchvision's ImageNet weights (downloaded once into the torch hub cache)
        return builder(weights="DEFAULT" if cfg.init == "pretrained" else None)


def image_config(cfg: ModelConfig):
    """The transformers config of an image model (overrides applied, dropout off unless asked)."""
    return load_hf_config(cfg)


def build_own_head(cfg: ModelConfig, ds_config: Optional[dict]) -> OwnHead:
    if cfg.name.startswith(TORCHVISION):
        model = _torchvision_model(cfg, ds_config)
        torchvision = True
    else:
        model = _load(cfg, image_config(cfg), ds_config, with_head=True)
        torchvision = False
    model.requires_grad_(False)
    return OwnHead(model, torchvision)


def build_extractor(cfg: ModelConfig, ds_config: Optional[dict], trainable: bool) -> FeatureExtractor:
    hf_config = image_config(cfg)
    backbone = _load(cfg, hf_config, ds_config, with_head=False)
    if not trainable:
        backbone.requires_grad_(False)
    elif cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        leaves = {name.rsplit(".", 1)[-1] for name, _ in backbone.named_modules()}
        found = [names for names in ATTENTION_PROJECTIONS if set(names) <= leaves]
        targets = cfg.lora.target_modules or (list(found[0]) if found else None)
        if not targets:
            raise ModelError(f"model.lora.target_modules: {hf_config.model_type} has no attention "
                             f"projections to adapt by default; list the modules to adapt")
        backbone = get_peft_model(backbone, LoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=list(targets), bias="none"))
    if cfg.gradient_checkpointing and trainable:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    return FeatureExtractor(backbone, hf_config.model_type in CLS_TYPES)


def build_fine_tuned(cfg: ModelConfig, ds_config: Optional[dict], n_classes: int) -> FineTuned:
    extractor = build_extractor(cfg, ds_config, trainable=True)
    with zero_init_context(ds_config):
        model = FineTuned(extractor, feature_dim(image_config(cfg)), n_classes)
    model.head.to(DTYPES[cfg.dtype])
    zero_init_head(model.head)
    return model


def build_probe(cfg: ModelConfig, ds_config: Optional[dict], dim: int, n_classes: int) -> LinearProbe:
    with zero_init_context(ds_config):
        return LinearProbe(dim, n_classes)


# --- frozen features, extracted once ------------------------------------------------------------

def features_path(cfg: ExperimentConfig, model: ModelConfig, seed: int) -> Path:
    """One cache per (model, data) pair; a random-initialised backbone's features also depend on
    the seed that initialised it."""
    identity = model.model_dump(mode="json", include={"name", "init", "config_overrides", "dtype",
                                                      "image_processor"})
    data = cfg.data.model_dump(mode="json", include={"dataset", "path", "test_path",
                                                     "image_column", "label_column"})
    key = stable_hash("features", identity, data, seed if model.init == "random" else None)
    return cache_path(cfg, model, key)


class ImageInputs:
    """How one run's images become engine inputs, and its engine (pipeline.execute uses it)."""

    def __init__(self, cfg: ExperimentConfig, model: ModelConfig, train_cfg, seed: int):
        self.cfg, self.model, self.train_cfg, self.seed = cfg, model, train_cfg, seed
        self.own_head = model.head == "pretrained"
        self.probe = model.linear_probe and not self.own_head
        self.trains = not self.own_head
        self.processor = load_processor(model)
        self.dim: Optional[int] = None

    def encode(self, images: ImageSet, tracker=None):
        pixels = PixelSet(images, self.processor)
        if not self.probe:
            return pixels
        feats = cached_features(features_path(self.cfg, self.model, self.seed), pixels,
                                lambda todo: self._extract(todo, tracker))
        self.dim = feats.shape[1]
        return FeatureSet(pixels.ids, pixels.labels, pixels.n_classes, feats)

    def _extract(self, pixels: PixelSet, tracker) -> np.ndarray:
        from transformers import set_seed

        set_seed(self.seed)  # a random-initialised backbone: the same on every rank and attempt
        eng = build_engine(self.model, self.train_cfg, 1, None,
                           build=lambda ds: build_extractor(self.model, ds, trainable=False))
        try:
            return forward_all(eng, pixels, tracker, desc="features")
        finally:
            eng.close()

    def num_classes(self, splits) -> int:
        return splits.a.n_classes

    def build_engine(self, total_steps: int, n_classes: int):
        if self.own_head:
            build = lambda ds: build_own_head(self.model, ds)  # noqa: E731
        elif self.probe:
            assert self.dim is not None, "encode the training images before building a probe"
            build = lambda ds: build_probe(self.model, ds, self.dim, n_classes)  # noqa: E731
        else:
            build = lambda ds: build_fine_tuned(self.model, ds, n_classes)  # noqa: E731
        return build_engine(self.model, self.train_cfg, total_steps, None, n_classes, build=build)


# --- checks before any rank starts --------------------------------------------------------------

def preflight_images(cfg: ExperimentConfig, plans: list, world_size: int) -> None:
    """What can fail on bad input for an image experiment: the data source and its columns, each
    model's config, processor and head, and the settings images do not support. `plans`: the
    experiment's runs (planning.plan_experiment), whose gt runs carry each model's settings."""
    rows = open_images(cfg.data, "train")
    test = open_images(cfg.data, "test")
    n_classes = image_classes(cfg.data, rows, test)
    if n_classes < 2:
        raise ModelError(f"data.label_column: {cfg.data.dataset} has {n_classes} class; "
                         f"weak-to-strong needs at least 2")
    if cfg.strong.head == "pretrained":
        raise ModelError("strong.head: pretrained trains nothing, so the transfer would learn "
                         "nothing from the weak labels; use linear_probe: true or fine-tune")
    for where, model in (("weak", cfg.weak), ("strong", cfg.strong)):
        train = next(p.train for p in plans if p.kind == "gt" and p.model == model)
        ds_config.build(train, model.dtype, world_size)
        if model.save != "none":
            raise ModelError(f"{where}.save: image runs keep metrics, predictions and weak labels "
                             f"only; set save: none")
        if train.gt_n_train is not None:
            raise ModelError(f"{where}.train.gt_n_train: image runs train on all of A; remove it")
        if model.head == "mean":
            raise ModelError(f"{where}.head: mean pools a text encoder's tokens; image models read "
                             f"their CLS token or pooled output; remove head (or head: pretrained)")
        if model.name.startswith(TORCHVISION) and model.head != "pretrained":
            raise ModelError(f"{where}.head: {model.name} is used only as a classifier with its "
                             f"own head; set head: pretrained")
        load_processor(model, where)
        if model.name.startswith(TORCHVISION):
            torchvision_builder(model, where)
            continue
        hf_config = image_config(model)
        if model.head == "pretrained" and hf_config.num_labels != n_classes:
            raise ModelError(f"{where}.head: the own head of {shorten(model.name)} has "
                             f"{hf_config.num_labels} classes but {cfg.data.dataset} has "
                             f"{n_classes}; use a classifier of the data's classes, or train a "
                             f"head (linear_probe: true)")
