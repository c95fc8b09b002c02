"""Hidden states of a pretrained model on a data split, for probes (w2s_scale/probes.py) and
frozen-feature linear probes (w2s_scale/text_features.py).

Extracted once, by every rank together (under ZeRO-3 each rank holds a part of the weights and
every forward is a collective), each example by exactly one rank; rank 0 writes them to the
stage's folder, where every later run reads them.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from w2s_scale import distributed as dist
from w2s_scale import ds_config as dsc
from w2s_scale.config import ConfigError, ModelConfig, TrainConfig
from w2s_scale.data.batching import TokenizedSet
from w2s_scale.engine import Engine, map_examples, on_tokens
from w2s_scale.models import build_classifier
from w2s_scale.planning import pretrained_only


def extract(model: ModelConfig, train: TrainConfig, data: TokenizedSet, tokenizer,
            layer: Optional[int], tracker=None) -> tuple[np.ndarray, int]:
    """Activations [N, hidden] at `layer` (None: the middle block, num_layers // 2) of the last
    real token (causal LMs) or the first token (encoders), and the layer used."""
    def chosen(hf_config) -> int:
        n_layers = hf_config.num_hidden_layers
        used = n_layers // 2 if layer is None else layer
        if not 0 <= used <= n_layers:
            raise ConfigError(f"labels.probe.layer: {layer} is not a layer of {model.short_name}, "
                              f"which has hidden states 0..{n_layers}; choose one of them (or leave "
                              f"it unset for the middle one, {n_layers // 2})")
        return used

    return _on_engine(model, train, data, tokenizer, chosen, tracker, "activations")


def head_features(model: ModelConfig, train: TrainConfig, data: TokenizedSet, tokenizer,
                  tracker=None) -> np.ndarray:
    """Exactly what the classifier's head reads (models.Classifier.features: the last layer, in
    the model's head mode), [N, hidden]: a frozen-feature linear probe's inputs."""
    features, _ = _on_engine(model, train, data, tokenizer, lambda hf_config: None, tracker, "features")
    return features


def _on_engine(model: ModelConfig, train: TrainConfig, data: TokenizedSet, tokenizer, choose_layer,
               tracker, desc: str) -> tuple[np.ndarray, Optional[int]]:
    """Classifier.features at the layer `choose_layer(hf_config)` picks (None: what the head
    reads) of every example, by all ranks under an engine without an optimizer."""
    import deepspeed  # deferred: only a run that extracts activations needs it loaded

    ds = dsc.build(train, model.dtype, dist.world_size())
    # nothing is trained here: no optimizer, so nothing of one to offload
    ds.get("zero_optimization", {}).pop("offload_optimizer", None)
    classifier = build_classifier(pretrained_only(model), ds)
    hf_config = classifier.backbone.config
    used = choose_layer(hf_config)
    engine, *_ = deepspeed.initialize(model=classifier, config=ds, dist_init_required=False)
    eng = Engine(engine, tokenizer, ds, train, total_steps=1)
    try:
        features = on_tokens(eng, data, lambda ids, mask: engine.module.features(ids, mask, layer=used))
        acts = map_examples(eng, data, features, tracker, desc=desc, width=hf_config.hidden_size)
    finally:
        eng.close()
    return acts, used
