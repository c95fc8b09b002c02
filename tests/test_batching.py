"""Batches: the same global batches for any world size; every example scored exactly once."""
import numpy as np
import pytest
import torch

from w2s_scale.data.batching import (collate, eval_batches, global_batches, rank_micro_batches,
                                     steps_per_epoch, tokenize)
from w2s_scale.data.sources import DataError, Example


def test_global_batches_depend_on_seed_and_epoch_only():
    lengths = np.random.default_rng(0).integers(3, 60, size=203)
    a = global_batches(lengths, 16, seed=1, epoch=0)
    b = global_batches(lengths, 16, seed=1, epoch=0)
    c = global_batches(lengths, 16, seed=1, epoch=1)
    assert all((x == y).all() for x, y in zip(a, b))
    assert any((x != y).any() for x, y in zip(a, c))
    assert len(a) == steps_per_epoch(203, 16) == 12
    flat = np.concatenate(a)
    assert len(set(flat.tolist())) == len(flat) == 12 * 16  # no example twice in an epoch


def test_length_grouping_cuts_padding():
    lengths = np.random.default_rng(0).integers(3, 200, size=2048)
    padded = lambda batches: sum(len(b) * lengths[b].max() for b in batches)  # noqa: E731
    grouped = global_batches(lengths, 32, seed=0, epoch=0, group_by_length=True)
    plain = global_batches(lengths, 32, seed=0, epoch=0, group_by_length=False)
    assert padded(grouped) < 0.7 * padded(plain)


@pytest.mark.parametrize("world,accumulation", [(1, 4), (2, 2), (4, 1)])
def test_micro_batches_partition_the_global_batch(world, accumulation):
    batch = np.arange(100, 116)
    parts = [m for r in range(world) for m in rank_micro_batches(batch, r, world, accumulation)]
    assert sorted(np.concatenate(parts).tolist()) == batch.tolist()
    assert {len(p) for p in parts} == {16 // (world * accumulation)}


@pytest.mark.parametrize("n,world,batch", [(10, 3, 2), (7, 2, 4), (1, 2, 8), (64, 4, 16)])
def test_eval_batches_cover_every_example_once(n, world, batch):
    lengths = np.random.default_rng(n).integers(1, 30, size=n)
    seen, forwards = [], set()
    for rank in range(world):
        batches, n_forward = eval_batches(lengths, batch, rank, world)
        assert len(batches) <= n_forward
        forwards.add(n_forward)
        seen += [i for b in batches for i in b.tolist()]
    assert sorted(seen) == list(range(n))
    assert len(forwards) == 1  # every rank runs the same number of forwards (ZeRO-3)


def test_collate_pads_per_batch_on_either_side():
    ids, mask = collate([[5, 6, 7], [8]], pad_id=0, padding_side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = collate([[5, 6, 7], [8]], pad_id=0, padding_side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == torch.long


class _WordTokenizer:
    def __call__(self, texts, **_):
        return {"input_ids": [[len(w) for w in t.split()] for t in texts]}


@pytest.mark.parametrize("policy,expected", [("drop", [[1, 2]]), ("truncate", [[1, 2], [1, 2, 3]]),
                                             ("truncate_left", [[1, 2], [3, 4, 5]])])
def test_overlong_policy(policy, expected):
    examples = [Example("a", "x yy", 0), Example("b", "x yy zzz wwww vvvvv", 1)]
    tokenized = tokenize(examples, _WordTokenizer(), max_length=3, overlong=policy)
    assert tokenized.input_ids == expected
    assert tokenized.n_dropped == (1 if policy == "drop" else 0)


def test_everything_overlong_is_an_error():
    with pytest.raises(DataError, match="data.max_length"):
        tokenize([Example("a", "x y z w", 0)], _WordTokenizer(), max_length=2, overlong="drop")
