"""bf16 models on CPU compute attention's core in fp32 (w2s_scale/cpu_attention.py): the
implementation is switched for bf16 only and only without a GPU, and its logits are the bf16
model's within bf16 rounding (closer to fp32's than plain bf16 sdpa's, never further)."""
from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_model
from w2s_scale import cpu_attention
from w2s_scale.config import ModelConfig
from w2s_scale.data.batching import collate
from w2s_scale.models import build_classifier, load_tokenizer

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the switch is for CPU machines")
TEXTS = ["a fine film", "dull and long and boring beyond words", "ok", "the cast was good but the plot was not"]


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory, gpt2_tokenizer_dir):
    return make_tiny_model("qwen2", tmp_path_factory.mktemp("cpu-attention") / "qwen2", gpt2_tokenizer_dir)


def test_bf16_on_cpu_uses_sdpa_in_fp32_and_gives_the_same_logits(qwen2):
    fp32 = build_classifier(ModelConfig(name=str(qwen2))).eval()
    assert fp32.backbone.config._attn_implementation == "sdpa"
    torch.nn.init.normal_(fp32.head.weight, std=0.5)
    bf16 = build_classifier(ModelConfig(name=str(qwen2), dtype="bf16")).eval()
    assert bf16.backbone.config._attn_implementation == cpu_attention.NAME
    bf16.load_state_dict({k: v.to(torch.bfloat16) for k, v in fp32.state_dict().items()})
    tok = load_tokenizer(ModelConfig(name=str(qwen2)))
    batch = collate([tok(t)["input_ids"] for t in TEXTS], tok.pad_token_id)
    with torch.no_grad():
        exact, ours = fp32(*batch), bf16(*batch)
        bf16.backbone.set_attn_implementation("sdpa")
        plain = bf16(*batch)
    scale = exact.abs().max().item()
    assert (ours - exact).abs().max() < 0.02 * scale
    assert (ours - exact).abs().max() <= (plain - exact).abs().max() + 1e-3 * scale

