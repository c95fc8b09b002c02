"""Run under torchrun with 2 ranks: build label-token classifiers of the given tiny causal LMs
under ZeRO-3 (every tensor partitioned) and write rank 0's class probabilities of two prompts."""
import json
import sys

import torch

from w2s_scale import distributed as dist
from w2s_scale.config import DataConfig, ModelConfig, TrainConfig
from w2s_scale.data.batching import collate
from w2s_scale.ds_config import build
from w2s_scale.models import build_classifier, load_tokenizer
from w2s_scale.prompts import label_prompt

out_path, folders = sys.argv[1], sys.argv[2:]
dist.init()
ds = build(TrainConfig(zero_stage=3, batch_size=4, micro_batch_size=2), "fp32", dist.world_size())
ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # partition even tiny tensors
result = {}
for folder in folders:
    cfg = ModelConfig(name=folder, head="label_tokens")
    tok = load_tokenizer(cfg)
    prompt = label_prompt(cfg, DataConfig(dataset="jsonl", path="unused.jsonl"), tok)
    model = build_classifier(cfg, ds, 2, prompt.word_ids)
    assert hasattr(model.head.weight, "ds_id"), "the head should be partitioned"
    import deepspeed  # noqa: E402

    engine, *_ = deepspeed.initialize(model=model, config={**ds, "train_batch_size": 4,
                                                           "train_micro_batch_size_per_gpu": 2,
                                                           "gradient_accumulation_steps": 1},
                                      dist_init_required=False)
    ids = [prompt.encode(t, 64, "drop") for t in ["a fine film", "dull and long"]]
    with torch.no_grad():
        result[folder] = torch.softmax(engine(*collate(ids, tok.pad_token_id)), -1).tolist()
    engine.destroy()
if dist.is_main():
    with open(out_path, "w") as f:
        json.dump(result, f)
dist.finish()
