"""Tokenisation, length-grouped batches, and how a global batch is shared among ranks.

Batches are planned from (seed, epoch) alone, never from the world size: the same global batches
are seen whether they are split over 1 rank or 16, which is what makes runs comparable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from w2s_scale.data.values import DataError, Example

# batches sorted by length within chunks of this many batches: padding shrinks, order stays random
GROUPING_CHUNK = 64


@dataclass
class TokenizedSet:
    ids: list[str]             # example ids, aligned with everything below
    input_ids: list[list[int]]
    labels: np.ndarray         # int [N], ground truth
    n_dropped: int = 0         # over-long examples left out under the "drop" policy

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(t) for t in self.input_ids])

    def subset(self, keep: np.ndarray) -> "TokenizedSet":
        return TokenizedSet([self.ids[i] for i in keep], [self.input_ids[i] for i in keep],
                            self.labels[keep], self.n_dropped)


def tokenize(examples: list[Example], tokenizer, max_length: int, overlong: str,
             prompt=None) -> TokenizedSet:
    """Tokenise; texts over max_length tokens are dropped, or cut keeping their start
    ("truncate") or their end ("truncate_left", where a question's last words matter).
    `prompt` (head: label_tokens, w2s_scale/prompts.LabelPrompt): each text inside its template,
    cut inside the template when over-long so that the cue stays."""
    if prompt is not None:
        encoded = [prompt.encode(e.text, max_length, overlong) for e in examples]
    else:
        encoded = tokenizer([e.text for e in examples], add_special_tokens=True, truncation=False)["input_ids"]
    ids, token_lists, labels, dropped = [], [], [], 0
    for example, tokens in zip(examples, encoded):
        if tokens is None:  # the prompt could not hold it
            dropped += 1
            continue
        if len(tokens) > max_length:
            if overlong == "drop":
                dropped += 1
                continue
            tokens = tokens[:max_length] if overlong == "truncate" else tokens[-max_length:]
        ids.append(example.id)
        token_lists.append(list(tokens))
        labels.append(example.label)
    if not ids:
        raise DataError(f"data.max_length: every example is longer than {max_length} tokens; "
                        f"raise max_length or set data.overlong: truncate")
    return TokenizedSet(ids, token_lists, np.array(labels, dtype=np.int64), dropped)


def collate(token_lists: list[list[int]], pad_id: int, padding_side: str = "right"):
    """Pad to the longest sequence of this batch only; the attention mask marks real tokens."""
    width = max(len(t) for t in token_lists)
    input_ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        span = slice(0, len(tokens)) if padding_side == "right" else slice(width - len(tokens), width)
        input_ids[row, span] = torch.tensor(tokens, dtype=torch.long)
        mask[row, span] = 1
    return input_ids, mask


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    # the last incomplete global batch is left out: equal micro-batches on every rank make the
    # averaged gradient exactly the mean over the global batch, for any number of ranks
    return n_examples // batch_size


def global_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                   group_by_length: bool = True) -> list[np.ndarray]:
    """This epoch's global batches (example indices), the same for every rank and world size."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    n_batches = steps_per_epoch(len(lengths), batch_size)
    order = order[: n_batches * batch_size]
    if group_by_length:
        chunk = batch_size * GROUPING_CHUNK
        pieces = []
        for start in range(0, len(order), chunk):
            piece = order[start:start + chunk]
            pieces.append(piece[np.argsort(-lengths[piece], kind="stable")])
        order = np.concatenate(pieces) if pieces else order
    batches = [order[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]
    if group_by_length:  # long and short batches interleaved, not all long ones first
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def rank_micro_batches(batch: np.ndarray, rank: int, world_size: int,
                       accumulation: int) -> list[np.ndarray]:
    """This rank's micro-batches of one global batch: accumulation step k gives rank r the
    (k * world_size + r)-th equal slice."""
    micro = len(batch) // (world_size * accumulation)
    return [batch[(k * world_size + rank) * micro:(k * world_size + rank + 1) * micro]
            for k in range(accumulation)]


def eval_batches(lengths: np.ndarray, batch_size: int, rank: int, world_size: int) -> tuple[list[np.ndarray], int]:
    """This rank's share for evaluation/prediction: every example exactly once over all ranks
    (no padding with duplicates), length-sorted to pad little. Also returns the number of
    batches every rank must run: under ZeRO-3 each forward is a collective, so ranks with fewer
    batches run extra forwards whose outputs are discarded."""
    order = np.argsort(-lengths, kind="stable")
    mine = order[rank::world_size]
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    longest_share = len(order[0::world_size])
    n_forward = -(-longest_share // batch_size)
    return batches, n_forward
