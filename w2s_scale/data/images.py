"""Image datasets: where the pictures come from, and the seeded A / B / test cut of them.

Three sources, named by `data.dataset`:
- `images`: `data.path` is a local folder in the `datasets` imagefolder layout (`<path>/<class>/<file>`,
  or `<path>/train/<class>/...` and `<path>/test/<class>/...`), a folder of parquet/arrow files with an
  Image column, or a hub dataset id; `data.test_path` optionally a separate test folder. Read with
  `datasets.load_dataset`, pictures decoded lazily (only the rows a batch needs).
- `imagenet_val`: the reference's setting, the 50,000-image ImageNet validation set (the hub's
  ILSVRC/imagenet-1k `validation` split, or `data.path` = a local imagefolder of it, one folder per
  wnid, whose sorted order is the standard class order), cut into train and test.
- `digits`: scikit-learn's 1,797 8x8 handwritten digits in 10 classes (ships with the wheel: offline).

Every source gives ids f"{split}-{row}" (row = position in the split as stored) and integer labels
in range(n_classes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from w2s_scale.config import DataConfig
from w2s_scale.data.values import DataError
from w2s_scale.errors import shorten

IMAGE_DATASETS = ("images", "imagenet_val", "digits")
IMAGENET_HUB_ID = "ILSVRC/imagenet-1k"


def is_image_data(data: DataConfig) -> bool:
    return data.dataset in IMAGE_DATASETS


@dataclass
class ImageRows:
    """One split opened for reading: labels at once, pictures only when asked for."""
    split: str
    labels: np.ndarray                        # int [N]
    n_classes: int
    load: Callable[[Sequence[int]], list]     # rows -> PIL images, in that order

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageSet:
    """Some rows of a split: ids, labels, and the pictures on demand."""
    ids: list[str]
    labels: np.ndarray
    n_classes: int
    rows: np.ndarray                          # positions in `source`
    source: ImageRows = field(repr=False)
    n_dropped: int = 0                        # text sets drop over-long documents; pictures never

    def __len__(self) -> int:
        return len(self.ids)

    def images(self, positions: Sequence[int]) -> list:
        return self.source.load([int(self.rows[i]) for i in positions])

    def subset(self, keep: np.ndarray) -> "ImageSet":
        keep = np.asarray(keep, dtype=int)
        return ImageSet([self.ids[i] for i in keep], self.labels[keep], self.n_classes,
                        self.rows[keep], self.source)


@dataclass
class ImageSplits:
    a: ImageSet
    b: ImageSet
    test: ImageSet
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {"a": len(self.a), "b": len(self.b), "test": len(self.test)}


# --- sources -----------------------------------------------------------------------------------

def _digits(split: str) -> Optional[ImageRows]:
    if split == "test":
        return None  # one pool: the test set is cut from it
    from sklearn.datasets import load_digits
    from PIL import Image

    bunch = load_digits()
    # 0..16 ink levels -> 8-bit greyscale pictures, as an image folder of them would hold
    pixels = (bunch.images * (255 / 16)).round().astype(np.uint8)
    return ImageRows(split, bunch.target.astype(np.int64), 10,
                     lambda rows: [Image.fromarray(pixels[r], mode="L") for r in rows])


def _load_hf(path: str, split: str, where: str):
    """A `datasets` split from a local folder or the hub, or None if the dataset has no such split."""
    import datasets

    local = Path(path).expanduser()
    if not local.exists() and (local.is_absolute() or path.startswith((".", "~"))):
        raise DataError(f"{where}: no such folder {local}; give the folder of the images "
                        f"(imagefolder layout: <folder>/<class>/<image>)")
    try:
        if local.exists():
            if not local.is_dir():
                raise DataError(f"{where}: {local} is a file; give the folder of the images "
                                f"(imagefolder layout: <folder>/<class>/<image>)")
            names = datasets.get_dataset_split_names(str(local))
            if split not in names:
                return None
            return datasets.load_dataset(str(local), split=split)
        names = datasets.get_dataset_split_names(path)
        if split not in names:
            return None
        return datasets.load_dataset(path, split=split)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds here
        kind = "folder" if local.exists() else "hub dataset"
        first = (str(err).splitlines() or [""])[0][:160]
        raise DataError(f"{where}: cannot read the {kind} {shorten(path)} ({type(err).__name__}: "
                        f"{first}); give an image folder (<folder>/<class>/<image>) or a reachable "
                        f"hub dataset id") from None


def _from_hf(ds, cfg: DataConfig, split: str, where: str) -> ImageRows:
    import datasets

    features = ds.features
    for column, fld in ((cfg.image_column, "image_column"), (cfg.label_column, "label_column")):
        if column not in features:
            raise DataError(f"data.{fld}: {where} has no column {column!r} (columns: "
                            f"{', '.join(sorted(features))}); set data.{fld} to one of them")
    if not isinstance(features[cfg.image_column], datasets.Image):
        raise DataError(f"data.image_column: column {cfg.image_column!r} of {where} holds "
                        f"{type(features[cfg.image_column]).__name__} values, not images; name the "
                        f"column of pictures")
    label_feature = features[cfg.label_column]
    integers = isinstance(label_feature, datasets.Value) and label_feature.dtype.startswith(
        ("int", "uint"))
    if not (isinstance(label_feature, datasets.ClassLabel) or integers):
        raise DataError(f"data.label_column: column {cfg.label_column!r} of {where} holds "
                        f"{getattr(label_feature, 'dtype', type(label_feature).__name__)} values; "
                        f"name the column of class indices 0, 1, ... (a ClassLabel)")
    labels = np.asarray(ds.with_format("numpy")[cfg.label_column])
    if labels.size and labels.min() < 0:
        raise DataError(f"data.label_column: column {cfg.label_column!r} of {where} has label "
                        f"{int(labels.min())}; class indices start at 0")
    if isinstance(label_feature, datasets.ClassLabel):
        n_classes = label_feature.num_classes
    else:
        n_classes = int(labels.max()) + 1 if labels.size else 0
    column = cfg.image_column

    def load(rows: Sequence[int]) -> list:
        return list(ds.select(list(rows))[column]) if len(rows) else []

    return ImageRows(split, labels.astype(np.int64), n_classes, load)


def open_images(cfg: DataConfig, split: str) -> Optional[ImageRows]:
    """The named split ('train' or 'test') of an image source, or None if it has no test split."""
    if cfg.dataset == "digits":
        return _digits(split)
    if cfg.dataset == "imagenet_val":
        if split == "test":
            return None  # the reference cuts its test set from the same 50,000 images
        path = cfg.path or IMAGENET_HUB_ID
        where = f"data.path {shorten(path)}"
        # a local imagefolder has only a 'train' split; the hub keeps the images under 'validation'
        ds = _load_hf(path, "train" if cfg.path else "validation", where)
        if ds is None:
            raise DataError(f"{where}: no ImageNet validation images found; give the folder of "
                            f"the 50,000 validation images, one subfolder per class")
        return _from_hf(ds, cfg, split, where)
    if cfg.dataset != "images":
        raise DataError(f"data.dataset: {cfg.dataset!r} is not an image dataset; choose one of "
                        f"{list(IMAGE_DATASETS)}")
    if not cfg.path:
        raise DataError("data.path: the images dataset needs a path: an image folder "
                        "(<folder>/<class>/<image>) or a hub dataset id")
    if split == "test" and cfg.test_path:
        ds = _load_hf(cfg.test_path, "train", f"data.test_path {shorten(cfg.test_path)}")
        if ds is None:
            raise DataError(f"data.test_path: {shorten(cfg.test_path)} holds no images")
        return _from_hf(ds, cfg, split, f"data.test_path {shorten(cfg.test_path)}")
    where = f"data.path {shorten(cfg.path)}"
    ds = _load_hf(cfg.path, split, where)
    if ds is None:
        if split == "train":
            raise DataError(f"{where} has no 'train' split; put the images in <folder>/<class>/ "
                            f"or <folder>/train/<class>/")
        return None
    return _from_hf(ds, cfg, split, where)


def image_classes(cfg: DataConfig, train_rows: ImageRows, test_rows: Optional[ImageRows]) -> int:
    """K: the label feature's class count (or the largest label + 1), or `data.num_classes`."""
    found = max(train_rows.n_classes, test_rows.n_classes if test_rows else 0)
    if cfg.num_classes is None:
        return found
    top = max(int(r.labels.max()) for r in (train_rows, test_rows) if r is not None and len(r))
    if top >= cfg.num_classes:
        raise DataError(f"data.num_classes: {cfg.dataset} has label {top}, so at least {top + 1} "
                        f"classes, not {cfg.num_classes}; raise num_classes or remove it")
    return cfg.num_classes


# --- splits ------------------------------------------------------------------------------------

def _take(rows: ImageRows, positions: np.ndarray, n_classes: int) -> ImageSet:
    return ImageSet([f"{rows.split}-{int(i)}" for i in positions], rows.labels[positions],
                    n_classes, positions, rows)


def make_image_splits(cfg: DataConfig, seed: int, shared_ab: bool = False) -> ImageSplits:
    """Train and test cut as the reference's vision code does: the pool shuffled by
    `np.random.default_rng(seed).shuffle`, the first n_train images train and the next n_test test
    (a separate test split, where the source has one, is shuffled by its own seeded stream).
    A and B are the halves of train, or with `shared_ab` both the whole of it: when the weak
    supervisor is not trained on A (a classifier used as is, the reference's AlexNet) nothing keeps
    them apart, and the reference trains the ceiling and the transfer on the same images."""
    if seed < 0:
        raise DataError(f"seeds: seed {seed} is negative; use seeds >= 0")
    train_rows = open_images(cfg, "train")
    test_rows = open_images(cfg, "test")
    assert train_rows is not None
    n_classes = image_classes(cfg, train_rows, test_rows)
    order = np.arange(len(train_rows))
    np.random.default_rng(seed).shuffle(order)
    notes = []
    if test_rows is None:
        n_train = cfg.n_train
        if len(order) < cfg.n_train + cfg.n_test:  # a small pool is shared n_train : n_test
            n_train = round(len(order) * cfg.n_train / (cfg.n_train + cfg.n_test))
        train_pos = order[:n_train]
        test_pos = order[n_train:n_train + cfg.n_test]
        test = _take(train_rows, test_pos, n_classes)
    else:
        n_train = min(cfg.n_train, len(order))
        train_pos = order[:n_train]
        test_order = np.arange(len(test_rows))
        np.random.default_rng([seed, 1]).shuffle(test_order)
        test = _take(test_rows, test_order[:cfg.n_test], n_classes)
    if n_train < cfg.n_train or len(test) < cfg.n_test:
        notes.append(f"{cfg.dataset}: {n_train} train / {len(test)} test images for n_train "
                     f"{cfg.n_train} / n_test {cfg.n_test}")
    train = _take(train_rows, train_pos, n_classes)
    if shared_ab:
        a = b = train
    else:
        half = len(train) // 2
        a, b = train.subset(np.arange(half)), train.subset(np.arange(half, len(train)))
    for name, part in (("a", a), ("b", b), ("test", test)):
        if len(part) < 2:
            fld = "data.n_test" if name == "test" else "data.n_train"
            raise DataError(f"{fld}: split {name} of {cfg.dataset} has {len(part)} images (need >= "
                            f"2); give more images or raise {fld}")
    return ImageSplits(a, b, test, notes)
