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
CLASSES = (0, 1, 2)  # digits used as classes: K = 3


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
        "data": {"dataset": "images", "path": str(folder), "n_train": 120, "n_test": 48},
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


# --- data ---------------------------------------------------------------------------------------

def test_image_folder_splits_follow_the_reference_shuffle(digit_folder):
    """Train is the first n_train of the pool shuffled by default_rng(seed).shuffle (the reference's
    vision cut), test the next n_test; A/B are halves, or both the whole train set when shared."""
    from w2s_scale.config import DataConfig
    from w2s_scale.data.images import make_image_splits

    data = DataConfig(dataset="images", path=str(digit_folder), n_train=120, n_test=48)
    splits = make_image_splits(data, seed=3)
    order = np.arange(180)
    np.random.default_rng(3).shuffle(order)
    assert splits.a.ids + splits.b.ids == [f"train-{i}" for i in order[:120]]
    assert splits.test.ids == [f"train-{i}" for i in order[120:168]]
    assert splits.counts == {"a": 60, "b": 60, "test": 48}
    assert splits.a.n_classes == len(CLASSES)
    picture = splits.test.images([0])[0]
    assert picture.size == (8, 8)
    shared = make_image_splits(data, seed=3, shared_ab=True)
    assert shared.a.ids == shared.b.ids == splits.a.ids + splits.b.ids
    assert make_image_splits(data, seed=4).test.ids != splits.test.ids


def test_digits_source_is_scikit_learns_pictures():
    from w2s_scale.config import DataConfig
    from w2s_scale.data.images import make_image_splits

    splits = make_image_splits(DataConfig(dataset="digits", n_train=1000, n_test=500), seed=0)
    assert splits.counts == {"a": 500, "b": 500, "test": 500}
    assert splits.a.n_classes == 10 and set(splits.test.labels) == set(range(10))


def test_features_cached_once_and_reused(tmp_path):
    """Only the pictures not yet in the cache are extracted; the cache keeps every id once."""
    from w2s_scale.vision import FeatureSet, cached_features

    calls = []

    def extract(todo):
        calls.append(list(todo.ids))
        return np.array([[float(i.split("-")[1])] for i in todo.ids])

    class Ids:  # the two things cached_features reads of a PixelSet
        def __init__(self, ids):
            self.ids = ids

        def subset(self, keep):
            return Ids([self.ids[i] for i in keep])

    path = tmp_path / "f.npz"
    first = cached_features(path, Ids(["x-1", "x-2"]), extract)
    again = cached_features(path, Ids(["x-2", "x-3", "x-1"]), extract)
    assert calls == [["x-1", "x-2"], ["x-3"]]
    assert first[:, 0].tolist() == [1, 2] and again[:, 0].tolist() == [2, 3, 1]
    assert sorted(np.load(path)["ids"].tolist()) == ["x-1", "x-2", "x-3"]
    assert FeatureSet(["x-1"], np.array([0]), 2, first[:1]).model_inputs([0]).shape == (1, 1)


# --- models -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(TINY_VISION))
def test_each_architecture_gives_features_and_trains(kind, vision_models, digit_folder):
    """Each real architecture: its own processor, features of the documented width (CLS token for
    ViT/DINOv2, pooled output for ResNet/ConvNeXt), and a fine-tuned head whose loss falls."""
    import torch

    from w2s_scale.config import ModelConfig
    from w2s_scale.vision import (CLS_TYPES, build_extractor, build_fine_tuned, feature_dim,
                                  image_config, load_processor)

    cfg = ModelConfig(name=str(vision_models[kind]), init="pretrained")
    hf_config = image_config(cfg)
    assert (hf_config.model_type in CLS_TYPES) == (kind in ("vit", "dinov2"))
    from PIL import Image

    files = sorted(digit_folder.glob("digit*/*.png"))[::15]
    pictures = [Image.open(p) for p in files]
    labels = torch.tensor([CLASSES.index(int(p.parent.name[len("digit"):])) for p in files])
    pixels = load_processor(cfg)(pictures)
    assert pixels.shape == (len(pictures), 3, 16, 16)
    feats = build_extractor(cfg, None, trainable=False)(pixels)
    assert feats.shape == (len(pictures), feature_dim(hf_config))
    torch.manual_seed(0)
    model = build_fine_tuned(cfg, None, n_classes=3)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(model(pixels), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(np.log(3), abs=1e-4)  # zero head: uniform at the start
    assert losses[-1] < losses[0] - 0.1  # it learns: gradients reach the backbone and head


def test_lora_adapts_the_attention_of_a_vit(vision_models):
    """LoRA on a ViT: only the adapters and the new head train; the backbone's weights stay put."""
    import torch

    from w2s_scale.config import ModelConfig
    from w2s_scale.vision import build_fine_tuned

    cfg = ModelConfig(name=str(vision_models["vit"]), lora={"enabled": True, "r": 4})
    model = build_fine_tuned(cfg, None, n_classes=3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n == "head.weight" for n in trainable)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable if "lora_" in n}
    assert adapted in ({"q_proj", "k_proj", "v_proj"}, {"query", "key", "value"})
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    pixels = torch.randn(4, 3, 16, 16)
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(pixels), torch.tensor([0, 1, 2, 0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


# --- the experiment, end to end -------------------------------------------------------------------

def test_two_ranks_zero3_probe_and_fine_tuning(tmp_path, vision_models, digit_folder):
    """2 ranks under ZeRO-3: the weak model a linear probe on frozen ResNet features (extracted
    once by both ranks, cached by rank 0), the strong one a fine-tuned ViT; the transfer runs (xent,
    and logconf with its global-batch statistics over pictures) read the probe's soft labels on B."""
    results = tmp_path / "results"
    cfg = vision_config(results, digit_folder,
                        weak={"name": str(vision_models["resnet"]), "linear_probe": True,
                              "label": "resnet-probe"},
                        strong={"name": str(vision_models["vit"]), "label": "vit-ft"},
                        launch={"launcher": "torchrun", "nproc": 2}, losses=["xent", "logconf"])
    proc = run_w2s(["experiment", "-c", str(write_config(tmp_path / "c.yaml", cfg))], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = _metrics(results)
    assert set(metrics) == {"gt-resnet-probe", "gt-vit-ft", "w2s-resnet-probe-to-vit-ft-xent",
                            "w2s-resnet-probe-to-vit-ft-logconf"}
    assert all(m["world_size"] == 2 for m in metrics.values())
    assert metrics["gt-vit-ft"]["n_train"] == 60 and metrics["gt-vit-ft"]["n_test"] == 48
    caches = list((results / "vision" / "features").glob("resnet-probe-*.npz"))
    assert len(caches) == 1  # one cache for the probe's model, holding A, B and test once each
    cached = np.load(caches[0])
    assert len(cached["ids"]) == len(set(cached["ids"].tolist())) == 168
    assert cached["features"].shape == (168, 16)
    weak = [json.loads(line) for line in (results / "vision" / "images" / "seed0" / "gt-resnet-probe"
                                          / "weak_labels.jsonl").read_text().splitlines()]
    assert len(weak) == 60  # B, labelled with K = 3 class probabilities
    assert all(len(r["probs"]) == 3 and abs(sum(r["probs"]) - 1) < 1e-4 for r in weak)


def test_classifier_used_as_is_supervises_a_probe(tmp_path, vision_models, digit_folder):
    """The reference's shape: the weak model an image classifier with its own head, untrained; A
    and B the same images; the strong model a probe on frozen DINOv2 features."""
    results = tmp_path / "results"
    cfg = vision_config(results, digit_folder,
                        weak={"name": str(vision_models["vit-classifier"]), "head": "pretrained",
                              "label": "own-head"},
                        strong={"name": str(vision_models["dinov2"]), "linear_probe": True,
                                "label": "dinov2-probe"},
                        train={"epochs": 2, "lr": 1e-3, "batch_size": 8, "micro_batch_size": 8,
                               "eval_batch_size": 16, "zero_stage": 3, "max_grad_norm": 0,
                               "schedule": "reference_vision"})
    proc = run_w2s(["experiment", "-c", str(write_config(tmp_path / "c.yaml", cfg))], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = _metrics(results)
    weak, ceiling = metrics["gt-own-head"], metrics["gt-dinov2-probe"]
    assert weak["steps"] == 0 and weak["n_train"] == ceiling["n_train"] == 120  # A = B = all train
    assert metrics["w2s-own-head-to-dinov2-probe-xent"]["n_train"] == 120
    log = [json.loads(line) for line in (results / "vision" / "images" / "seed0" / "gt-dinov2-probe"
                                         / "log.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in log if r.get("event") == "train"]
    # the reference's CosineAnnealingLR(T_max=epochs) stepped per batch: back up after 2 x epochs
    # (the log shows the lr after each step, i.e. the next step's)
    assert lrs[:5] == pytest.approx([1e-3 * 0.5 * (1 + np.cos(np.pi * s / 2)) for s in range(1, 6)])


# --- the reference's ImageNet setting -------------------------------------------------------------

@pytest.mark.parametrize("strong, epochs", [("resnet50", 20), ("vitb8", 5)])
def test_reference_vision_configs_field_by_field(strong, epochs):
    """configs/reference/vision_*.yaml resolve to openai/weak-to-strong's vision/run_weak_strong.py:
    AlexNet's own head as the weak labels, a linear probe on frozen DINO features, 40,000 / 10,000
    of the ImageNet validation set, Adam lr 1e-3, batch 100, its per-batch cosine, no clipping."""
    from conftest import REPO
    from w2s_scale import ds_config
    from w2s_scale.loading import load_config
    from w2s_scale.config import train_for

    cfg = load_config(REPO / "configs" / "reference" / f"vision_alexnet_{strong}.yaml")
    assert (cfg.data.dataset, cfg.data.n_train, cfg.data.n_test) == ("imagenet_val", 40000, 10000)
    assert (cfg.weak.name, cfg.weak.head, cfg.weak.image_processor) == (
        "torchvision:alexnet", "pretrained", "reference")
    assert cfg.strong.linear_probe and cfg.strong.image_processor == "reference"
    assert cfg.strong.name == {"resnet50": "Ramos-Ramos/dino-resnet-50",
                               "vitb8": "facebook/dino-vitb8"}[strong]
    train = train_for(cfg, cfg.strong)
    assert (train.epochs, train.lr, train.batch_size, train.schedule) == (
        epochs, 1e-3, 100, "reference_vision")
    assert train.weight_decay == 0 and train.warmup_frac == 0 and train.max_grad_norm == 0
    assert [loss.name for loss in cfg.losses] == ["xent"] and cfg.seeds == [0]
    for world in (1, 2, 4):
        assert ds_config.build(train, "fp32", world)["train_batch_size"] == 100


def test_reference_transform_resizes_then_crops():
    """Shorter side 256, centre crop 224, ImageNet mean/std: a picture's centre survives."""
    from PIL import Image

    from w2s_scale.vision import IMAGENET_MEAN, IMAGENET_STD, ReferenceTransform

    picture = np.zeros((300, 600, 3), dtype=np.uint8)
    picture[:, 250:350] = 255  # a white band in the middle
    out = ReferenceTransform()([Image.fromarray(picture)])
    assert out.shape == (1, 3, 224, 224)
    white = (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert out[0, :, 112, 112].numpy() == pytest.approx(white, abs=1e-5)
    black = -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD)
    assert out[0, :, 112, 0].numpy() == pytest.approx(black, abs=1e-5)


# --- bad input: one line, before any rank starts ----------------------------------------------------

def _preflight_message(tmp_path, vision_models, digit_folder, **changes) -> str:
    from w2s_scale.loading import load_config
    from w2s_scale.errors import UserError
    from w2s_scale.preflight import preflight

    cfg = vision_config(tmp_path / "results", digit_folder,
                        weak={"name": str(vision_models["vit-classifier"]), "head": "pretrained"},
                        strong={"name": str(vision_models["resnet"]), "linear_probe": True})
    for key, value in changes.items():
        section, field = key.split("__")
        cfg[section] = {**cfg[section], field: value}
    with pytest.raises(UserError) as err:
        preflight(load_config(raw=cfg), 2)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("changes, expected", [
    ({"data__path": "/no/such/folder"}, "no such folder /no/such/folder; give the folder"),
    ({"data__image_column": "img"}, "data.image_column: data.path"),
    ({"data__label_column": "image"}, "data.label_column"),
    ({"data__num_classes": 2}, "data.num_classes: images has label 2"),
    ({"strong__head": "pretrained"}, "strong.head: pretrained trains nothing"),
    ({"weak__image_processor": "/no/such/processor"}, "weak.image_processor: cannot load"),
    ({"strong__save": "model16"}, "strong.save: image runs keep"),
    ({"weak__name": "torchvision:no_such_net"}, "weak.name: torchvision"),  # missing, or no such net
])
def test_bad_image_inputs_are_one_line(changes, expected, tmp_path, vision_models, digit_folder):
    assert expected in _preflight_message(tmp_path, vision_models, digit_folder, **changes)


def test_own_head_of_other_classes_is_refused(tmp_path, vision_models, digit_folder):
    """The weak classifier's own head must score the data's classes (2-class head, 3 digits)."""
    from w2s_scale.loading import load_config
    from w2s_scale.errors import UserError
    from w2s_scale.preflight import preflight

    two_class = make_tiny_vision_model("vit", tmp_path / "two-class", head_classes=2)
    cfg = vision_config(tmp_path / "results", digit_folder,
                        weak={"name": str(two_class), "head": "pretrained"},
                        strong={"name": str(vision_models["resnet"]), "linear_probe": True})
    with pytest.raises(UserError, match="own head of .* has 2 classes but images has 3"):
        preflight(load_config(raw=cfg), 1)


def test_bad_folder_exits_2_with_one_line(tmp_path, vision_models):
    cfg = vision_config(tmp_path / "results", tmp_path / "missing",
                        weak={"name": str(vision_models["vit-classifier"]), "head": "pretrained"},
                        strong={"name": str(vision_models["resnet"]), "linear_probe": True})
    proc = run_w2s(["experiment", "-c", str(write_config(tmp_path / "c.yaml", cfg))], timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("w2s: error:")]
    assert len(errors) == 1 and "no such folder" in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_sweeps_of_images_are_refused_before_anything_runs(tmp_path, vision_models, digit_folder):
    cfg = vision_config(tmp_path / "results", digit_folder,
                        weak={"name": str(vision_models["vit-classifier"]), "head": "pretrained"},
                        strong={"name": str(vision_models["resnet"]), "linear_probe": True})
    proc = run_w2s(["run", "-c", str(write_config(tmp_path / "c.yaml", cfg)), "--run",
                    "gt-vit-classifier"], timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "w2s: error: datasets: images is an image dataset" in proc.stderr
