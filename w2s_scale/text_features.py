"""`linear_probe: true` for text models: a linear head trained on frozen features extracted once.

A linear probe trains only its head, so what the head reads of a document never changes while it
trains. That is computed once: exactly models.Classifier.features (the pooled output, the mean of
the real tokens or the last real token, as the model's head mode says) of each document tokenised
at the run's max_length / overlong settings, by all ranks under an engine
(activations.head_features; ZeRO-3 forwards are collectives), and cached on disk by rank 0
(w2s_scale/features.py). A run extracts, in one pass, only the documents it reads that the cache
lacks: the ceiling, weak and transfer runs of one student share one extraction, whatever their
loss or label source.

The cache key is everything that changes the features and nothing else: the model's identity
(name, init, config_overrides, dtype, head, tokenizer, label_tokens), the data settings that
change the documents' tokens (dataset, path, test_path, text_column, max_length, overlong), and the
seed only for a randomly initialised backbone (whose weights it draws). Not the lr, loss, batch
sizes, ZeRO stage or the seed of a pretrained model. Each entry is also keyed by a digest of the
document's tokens, so an entry is never reused for another input (a data file edited in place, a
task whose formatting draws from the seed).

The head is the per-step frozen path's (models.Classifier's): a linear layer without bias,
zero-initialised (every document starts at p = 1/K), in the model's dtype, on the same
length-grouped global batches; so both paths give the same results (tests/test_text_features.py).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import numpy as np
from torch import nn
from transformers import set_seed

from w2s_scale import distributed as dist
from w2s_scale.activations import head_features
from w2s_scale.config import ExperimentConfig, ModelConfig, stable_hash
from w2s_scale.data.batching import TokenizedSet, tokenize
from w2s_scale.data.sources import num_classes
from w2s_scale.engine import build_engine
from w2s_scale.features import FeatureSet, cache_path, cached_features
from w2s_scale.models import DTYPES, load_tokenizer, zero_init_context, zero_init_head
from w2s_scale.planning import RunPlan

# what of a model section changes its features (not lora: refused with a probe; not dropout:
# features are extracted in eval mode; not train, save, label)
MODEL_FIELDS = {"name", "init", "config_overrides", "dtype", "head", "tokenizer", "label_tokens"}
# what of the data section changes a document's tokens (n_train, n_test, n_a, balance only choose
# documents: entries are per document)
DATA_FIELDS = {"dataset", "path", "test_path", "text_column", "max_length", "overlong"}


def features_key(cfg: ExperimentConfig, model: ModelConfig, seed: int) -> str:
    identity = model.model_dump(mode="json", include=MODEL_FIELDS)
    data = cfg.data.model_dump(mode="json", include=DATA_FIELDS)
    return stable_hash("text-features", identity, data, seed if model.init == "random" else None)


def features_path(cfg: ExperimentConfig, model: ModelConfig, seed: int) -> Path:
    """The cache of `model`'s features on this experiment's data; `seed` matters only for a
    randomly initialised backbone."""
    return cache_path(cfg, model, features_key(cfg, model, seed))


def entry_keys(data: TokenizedSet) -> list[str]:
    """Each document's cache entry: its id and a digest of its tokens."""
    return [f"{ex_id}:{hashlib.blake2b(np.asarray(tokens, dtype=np.int64).tobytes(), digest_size=8).hexdigest()}"
            for ex_id, tokens in zip(data.ids, data.input_ids)]


class FrozenHead(nn.Module):
    """models.Classifier's head on its own, reading cached features instead of the backbone."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.head = nn.Linear(dim, num_classes, bias=False)

    def forward(self, features):
        return self.head(features.to(self.head.weight.dtype)).float()


def build_frozen_head(model: ModelConfig, ds_config: Optional[dict], dim: int, k: int) -> FrozenHead:
    """Created, cast and zeroed as build_classifier does its head (partitioned under ZeRO-3)."""
    with zero_init_context(ds_config):
        probe = FrozenHead(dim, k)
    probe.head.to(DTYPES[model.dtype])
    zero_init_head(probe.head)
    return probe


class FrozenTextInputs:
    """A text probe's run: documents -> cached features (FeatureSet), and an engine over the head
    alone (pipeline.execute uses it as it uses TextInputs). `documents`: every document the run
    reads (its training part, test, B), whose missing features are extracted at the first encode."""
    trains = True

    def __init__(self, cfg: ExperimentConfig, plan: RunPlan, documents: list):
        self.cfg, self.plan, self.documents = cfg, plan, documents
        self.tokenizer = load_tokenizer(plan.model)
        # the seed that initialises a random backbone in the per-step path (pipeline.execute)
        self.path = features_path(cfg, plan.model, plan.train_seed)
        self._rows: Optional[dict[str, int]] = None  # entry key -> row of self._features
        self._features: Optional[np.ndarray] = None

    @property
    def dim(self) -> Optional[int]:
        return None if self._features is None else int(self._features.shape[1])

    def _tokenize(self, examples) -> TokenizedSet:
        data = self.cfg.data
        return tokenize(examples, self.tokenizer, data.max_length, data.overlong)

    def _load(self, tracker) -> None:
        tokens = self._tokenize(self.documents)
        keys = entry_keys(tokens)
        self._features = cached_features(self.path, tokens, lambda todo: self._extract(todo, tracker), keys)
        self._rows = {key: row for row, key in enumerate(keys)}

    def _extract(self, todo: TokenizedSet, tracker) -> np.ndarray:
        dist.say(f"{self.plan.name}: extracting frozen features of {len(todo)} documents "
                 f"({self.plan.model.short_name}) into {self.path}")
        set_seed(self.plan.train_seed)  # a random-initialised backbone: the same on every rank
        return head_features(self.plan.model, self.plan.train, todo, self.tokenizer, tracker)

    def encode(self, examples, tracker=None) -> FeatureSet:
        if self._rows is None:
            self._load(tracker)
        tokens = self._tokenize(examples)
        keys = entry_keys(tokens)
        unknown = next((key for key in keys if key not in self._rows), None)
        assert unknown is None, f"{unknown}: encode only the documents given to FrozenTextInputs"
        rows = [self._rows[key] for key in keys]
        return FeatureSet(tokens.ids, tokens.labels, num_classes(self.cfg.data), self._features[rows],
                          tokens.n_dropped, tokens.lengths)

    def num_classes(self, splits) -> int:
        return num_classes(self.cfg.data)

    def build_engine(self, total_steps: int, k: int):
        assert self.dim is not None, "encode the run's documents before building its probe"
        dim, model = self.dim, self.plan.model
        return build_engine(model, self.plan.train, total_steps, self.tokenizer, k,
                            build=lambda ds: build_frozen_head(model, ds, dim, k))
