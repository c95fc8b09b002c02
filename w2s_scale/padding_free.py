"""Padding-free batches (train.padding_free): a micro-batch's texts packed into rows with no pad
tokens between them, attention kept within each text, each text read at its own token.

Rows are filled first-fit-decreasing and are as wide as the batch's longest text, so a packed
batch never holds more tokens, nor more attention work, than the padded batch of the same texts:
attention on CPU (and sdpa anywhere) is computed densely under a mask, so wider rows would cost
attention over pairs of texts only to mask it out again.

How attention stays within a text:
- causal LMs: position ids that restart at 0 for each text, and no 2D attention mask. transformers
  then builds the block-diagonal causal mask itself (masking_utils.find_packed_sequence_indices;
  only without a cache, hence use_cache=False);
- encoders: a 4D block-diagonal mask, boolean for sdpa (and w2s_scale/cpu_attention.py's
  sdpa_fp32), additive for eager attention (MPNet's own), and the position ids the model would
  give the text alone (RoBERTa and MPNet count from after their padding index).
The tail of a row that no text fills holds pad tokens that form a text of their own: never read,
and never a query row with nothing to attend to (which would make NaNs).

Only the architectures in PACKABLE are accepted: each one's packed logits are checked against its
padded logits in tests/test_padding_free.py. Flash-attention's varlen path would need one row per
batch and is not checked here, so it is refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from w2s_scale import cpu_attention
from w2s_scale.errors import PaddingFreeError

# model type -> the first position id of a text: 0, or "after_padding" (padding index + 1)
PACKABLE = {"gpt2": 0, "llama": 0, "mistral": 0, "qwen2": 0, "qwen3": 0,
            "bert": 0, "roberta": "after_padding", "mpnet": "after_padding"}
# implementations that take a 4D mask or packed position ids; the first two take boolean masks
BOOLEAN_MASKS = {"sdpa", cpu_attention.NAME}
MASKED_ATTENTION = BOOLEAN_MASKS | {"eager"}


def check_model(field: str, model_type: str) -> None:
    """Refuse padding-free batches for an architecture whose packed logits are not checked;
    `field`: the setting as the user wrote it (strong.train.padding_free, ...)."""
    if model_type not in PACKABLE:
        raise PaddingFreeError(f"{field}: {model_type} models are not checked with "
                               f"padding-free batches (checked: {', '.join(sorted(PACKABLE))}); "
                               f"set train.padding_free: false for this model")


@dataclass
class PackedLayout:
    """Where the texts of a packed batch are: all [rows, width] but the two read indices."""
    positions: torch.Tensor  # position of each token within its text, from 0
    segments: torch.Tensor   # the text each token belongs to (its index in the batch); tail: -1 - row
    first: torch.Tensor      # [N] flat index (row * width + column) of each text's first token
    last: torch.Tensor       # [N] flat index of each text's last token
    n_tokens: int            # real tokens (pad tokens in row tails not counted)

    def to(self, device) -> "PackedLayout":
        return PackedLayout(self.positions.to(device), self.segments.to(device),
                            self.first.to(device), self.last.to(device), self.n_tokens)


def fill_rows(lengths: list[int]) -> tuple[list[list[int]], int]:
    """Texts (indices into `lengths`) per row, longest first into the first row with room, and
    the rows' width: the longest text."""
    width = max(lengths)
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for r, space in enumerate(room):
            if lengths[i] <= space:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(width - lengths[i])
    return rows, width


def pack(token_lists: list[list[int]], pad_id: int) -> tuple[torch.Tensor, PackedLayout]:
    """input_ids [rows, width] and the layout of the texts in them; the read indices follow the
    order of `token_lists`, so outputs come back in the batch's order."""
    # an empty text gets one pad token, read as the padded path reads an all-padding row
    tokens = [list(t) if len(t) else [pad_id] for t in token_lists]
    lengths = [len(t) for t in tokens]
    rows, width = fill_rows(lengths)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.empty((len(rows), width), dtype=torch.long)
    first = torch.empty(len(tokens), dtype=torch.long)
    last = torch.empty(len(tokens), dtype=torch.long)
    for r, members in enumerate(rows):
        column = 0
        for i in members:
            n = lengths[i]
            input_ids[r, column:column + n] = torch.tensor(tokens[i], dtype=torch.long)
            positions[r, column:column + n] = torch.arange(n)
            segments[r, column:column + n] = i
            first[i], last[i] = r * width + column, r * width + column + n - 1
            column += n
        positions[r, column:] = torch.arange(width - column)
        segments[r, column:] = -1 - r
    n_tokens = sum(len(t) for t in token_lists)
    return input_ids, PackedLayout(positions, segments, first, last, n_tokens)


def first_position(config) -> int:
    check_model("train.padding_free", config.model_type)  # preflight refused it already
    rule = PACKABLE[config.model_type]
    if rule == "after_padding":
        # RoBERTa pads with config.pad_token_id; MPNet's embeddings fix their padding index at 1
        padding = 1 if config.model_type == "mpnet" else config.pad_token_id
        return padding + 1
    return rule


def encoder_mask(segments: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """[rows, 1, width, width]: a token attends to the tokens of its own text only."""
    same = segments[:, None, :, None] == segments[:, None, None, :]
    if implementation in BOOLEAN_MASKS:  # torch's sdpa: True attends
        return same
    return torch.zeros(same.shape, dtype=dtype, device=same.device).masked_fill(
        ~same, torch.finfo(dtype).min)


def features(backbone, mode: str, input_ids: torch.Tensor, layout: PackedLayout,
             layer: Optional[int] = None) -> torch.Tensor:
    """What the classifier head reads, one row per text in the batch's order, as
    models.Classifier.features reads it from a padded batch: the last token's hidden state
    (causal LMs), the pooled output (encoders: the pooler over the first token) or the mean of
    the text's tokens (mode `mean`); `layer`: that hidden state instead of the last."""
    config = backbone.config
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    if implementation not in MASKED_ATTENTION:
        checked = ", ".join(sorted(MASKED_ATTENTION))
        raise PaddingFreeError(f"train.padding_free: attention implementation {implementation} is "
                               f"not checked with packed rows (checked: {checked}); set "
                               f"train.padding_free: false")
    kwargs = {"output_hidden_states": True} if layer is not None else {}
    positions = layout.positions + first_position(config)
    encoder = mode in ("pooled", "mean")
    if encoder:
        dtype = backbone.get_input_embeddings().weight.dtype
        out = backbone(input_ids=input_ids, position_ids=positions,
                       attention_mask=encoder_mask(layout.segments, implementation, dtype), **kwargs)
    else:
        out = backbone(input_ids=input_ids, attention_mask=None, position_ids=positions,
                       use_cache=False, **kwargs)
    hidden = out.hidden_states[layer] if layer is not None else out.last_hidden_state
    flat = hidden.reshape(-1, hidden.shape[-1])
    if not encoder:
        return flat[layout.last]
    if mode == "mean":
        return mean_per_text(flat, layout)
    firsts = flat[layout.first]
    pooler = getattr(backbone, "pooler", None)
    if layer is not None or pooler is None:
        return firsts
    return pooler(firsts[:, None])


def mean_per_text(flat: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """[rows * width, H] -> [N, H]: the mean of each text's tokens (row tails left out)."""
    segments = layout.segments.reshape(-1)
    real = segments >= 0
    sums = flat.new_zeros((len(layout.first), flat.shape[-1])).index_add(0, segments[real], flat[real])
    counts = (layout.last - layout.first + 1).to(flat.dtype)
    return sums / counts[:, None]
