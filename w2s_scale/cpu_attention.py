"""bf16 models on CPU: everything in bf16 but the core of attention, which runs in fp32.

PyTorch's CPU kernel of scaled_dot_product_attention (its flash attention for CPU) is slower in
bf16 than in fp32, and its backward much slower: forward + backward of q, k, v [32, 12, 48, 32]
(MiniLM-L6's heads at the demo's lengths) took 59 ms in bf16 against 15 ms in fp32 (torch 2.13,
AMD Zen 4 with AVX512-BF16, one thread, 2026-12-07); at 256 tokens 69 against 47 ms. So a bf16
model on a machine without a GPU gets the attention implementation `sdpa_fp32`: transformers'
sdpa with q, k and v cast to fp32 and the output cast back. Its masks are sdpa's (boolean).
The projections, the feed-forward layers and the weights stay bf16. GPUs keep plain sdpa.
"""
from __future__ import annotations

import torch

NAME = "sdpa_fp32"


def sdpa_in_fp32(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(),
                                          attention_mask, **kwargs)
    return out.to(query.dtype), weights


def register() -> None:
    """Make NAME an attention implementation transformers knows (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, sdpa_in_fp32)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def use_on_cpu(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """A bf16 transformers model that uses sdpa, on a machine without a GPU: sdpa_fp32 instead."""
    config = getattr(model, "config", None)
    if (dtype != torch.bfloat16 or torch.cuda.is_available() or config is None
            or getattr(config, "_attn_implementation", None) != "sdpa"):
        return
    register()
    model.set_attn_implementation(NAME)
