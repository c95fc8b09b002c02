"""Images on the engine: tiny random-initialised ViT, ResNet, ConvNeXt and DINOv2 models (the real
architectures at toy sizes, each saved with its own image processor) on scikit-learn's real 8x8
digit pictures written as an image folder, under ZeRO-3 with 2 ranks, in both training modes:
frozen-feature linear probes (features extracted once, cached, reused) and full fine-tuning."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_w2s, write_config

TINY_VISION = {
    "vit": ("vit", dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64)),
    "dinov2": ("dinov2", dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, mlp_ratio=2)),
    "resnet": ("resnet", dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                              layer_type="basic", downsample_in_first_stage=False)),
    "convnext": ("convnext", dict(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], patch_size=2)),
}
CLASSES = (0, 1)  # digits used as classes


def make_tiny_vision_model(kind: str, out: Path, head_classes: int = 0) -> Path:
    """A random-initialised model saved as a transformers folder with a 16x16 image processor;
    with `head_classes`, an image classifier of that many classes (its head used as is)."""
    import torch
    from transformers import (AutoConfig, AutoModel, AutoModelForImageClassification,
                              ViTImageProcessor)

    model_type, sizes = TINY_VISION[kind]
    torch.manual_seed(1234)
    config = AutoConfig.for_model(model_type, num_labels=max(head_classes, 2), **sizes)
    auto = AutoModelForImageClassification if head_classes else AutoModel
    auto.from_config(config).save_pretrained(out)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(out)
    return out


def write_digit_folder(root: Path, classes=CLASSES, per_class: int = 60) -> Path:
    """scikit-learn's digit pictures as an image folder: <root>/<class>/<n>.png."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for c in classes:
        (root / f"digit{c}").mkdir(parents=True, exist_ok=True)
        rows = np.flatnonzero(digits.target == c)[:per_class]
        for n, r in enumerate(rows):
            pixels = (digits.images[r] * (255 / 16)).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / f"digit{c}" / f"{n}.png")
    return root


@pytest.fixture(scope="session")
def vision_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-vision")
    models = {kind: make_tiny_vision_model(kind, root / kind) for kind in TINY_VISION}
    models["vit-classifier"] = make_tiny_vision_model("vit", root / "vit-classifier",
                                                      head_classes=len(CLASSES))
    return models


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory) -> Path:
    return write_digit_folder(tmp_path_factory.mktemp("digits") / "images")


def vision_config(results: Path, folder: Path, weak: dict, strong: dict, **sections) -> dict:
    config = {
        "name": "vision", "results_dir": str(results), "seeds": [0],
        "data": {"dataset": "images", "path": str(folder), "n_train": 80, "n_test": 32},
        "weak": weak, "strong": strong,
        "train": {"epochs": 1, "lr": 1e-3, "batch_size": 8, "micro_batch_size": 4,
                  "eval_batch_size": 16, "zero_stage": 3, "max_grad_norm": 0},
        "losses": ["xent"],
        "tracking": {"progress": False},
    }
    config.update(sections)
    return config


def _metrics(results: Path, dataset: str = "images") -> dict[str, dict]:
    seed = results / "vision" / dataset / "seed0"
    return {p.parent.name: json.loads(p.read_text()) for p in seed.glob("*/metrics.json")}
