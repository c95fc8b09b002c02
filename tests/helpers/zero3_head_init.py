"""Run under torchrun with 2 ranks: build a classifier under ZeRO-3 and report, per rank, the
head's gathered values and how many parameter elements this rank holds."""
import json
import sys


from w2s_scale import distributed as dist
from w2s_scale.config import ModelConfig, TrainConfig
from w2s_scale.ds_config import build
from w2s_scale.models import build_classifier

model_dir, out_path = sys.argv[1], sys.argv[2]
dist.init()
ds = build(TrainConfig(zero_stage=3, batch_size=4, micro_batch_size=2), "fp32", dist.world_size())
model = build_classifier(ModelConfig(name=model_dir), ds)
import deepspeed  # noqa: E402

head = model.head.weight
local_elements = head.ds_tensor.numel()
with deepspeed.zero.GatheredParameters([head]):
    full = head.detach().clone()
report = {"rank": dist.rank(), "head_shape": list(full.shape), "head_abs_sum": float(full.abs().sum()),
          "head_partitioned": hasattr(head, "ds_id"), "head_local_elements": local_elements,
          "backbone_local_elements": sum(p.ds_tensor.numel() for p in model.backbone.parameters()),
          "backbone_full_elements": sum(p.ds_numel for p in model.backbone.parameters())}
gathered = dist.all_gather_objects(report)
if dist.is_main():
    with open(out_path, "w") as f:
        json.dump(gathered, f)
dist.finish()
