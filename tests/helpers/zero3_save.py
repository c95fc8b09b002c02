"""Run under torchrun with 2 ranks: train tiny classifiers under ZeRO-3 for a few steps, then save
them every way w2s_scale.saving offers (and, for contrast, the naive peft way), and write the
engine's own predictions on fixed inputs so that the test can reload each folder and compare.

argv: OUT_DIR RUN_NAME=MODEL_DIR:lora|full[:fp32|bf16] ..."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from w2s_scale import distributed as dist  # noqa: E402
from w2s_scale.config import ModelConfig, TrainConfig  # noqa: E402
from w2s_scale.engine import build_engine  # noqa: E402
from w2s_scale.models import load_tokenizer  # noqa: E402
from w2s_scale.saving import save_adapters, save_model  # noqa: E402


def fixed_inputs():
    """8 rows of right-padded random tokens of different lengths, labels 0/1."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5000, (8, 12), generator=g)
    lengths = torch.tensor([12, 9, 5, 12, 7, 3, 11, 8])
    mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
    return ids * mask, mask, torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])


out_dir = Path(sys.argv[1])
# ZeRO-3 keeps parameters under stage3_param_persistence_threshold elements (default 1e5) whole on
# every rank: tiny models' LoRA matrices and head would never be partitioned. 0 partitions all.
template = out_dir / "zero3_partition_all.json"
template.write_text(json.dumps({
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
    "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,
                          "stage3_gather_16bit_weights_on_model_save": True}}))
dist.init()
report = {}
ids, mask, labels = fixed_inputs()
for spec in sys.argv[2:]:
    run, rest = spec.split("=", 1)
    model_dir, kind, *dtype = rest.split(":")
    torch.manual_seed(0)
    model_cfg = ModelConfig(name=model_dir, lora={"enabled": kind == "lora", "r": 4, "alpha": 8},
                            dtype=dtype[0] if dtype else "fp32")
    train = TrainConfig(zero_stage=3, batch_size=8, micro_batch_size=4, lr=1e-2, ds_config=str(template))
    eng = build_engine(model_cfg, train, total_steps=3, tokenizer=load_tokenizer(model_cfg))
    rows = slice(4 * dist.rank(), 4 * dist.rank() + 4)  # each rank its half of the batch
    for _ in range(3):
        logits = eng.engine(ids[rows], mask[rows])
        eng.engine.backward(torch.nn.functional.cross_entropy(logits.float(), labels[rows]))
        eng.engine.step()
    eng.engine.eval()
    with torch.no_grad():  # a ZeRO-3 forward is a collective: every rank runs the same one
        probs = torch.softmax(eng.engine(ids, mask).float(), -1)[:, 1]
    folder = out_dir / run
    eng.engine.empty_partition_cache()  # re-partition what the forward left gathered
    info = {"probs": probs.tolist(), "model_dir": model_dir, "kind": kind, "dtype": model_cfg.dtype}
    backbone = eng.engine.module.backbone
    if kind == "lora":
        if dist.is_main():  # the naive way (peft #2450): save_pretrained on a ZeRO-3 model
            import warnings

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                backbone.save_pretrained(str(folder / "naive"))
            info["naive_warnings"] = [str(w.message)[:200] for w in caught]
        save_adapters(eng.engine.module, model_cfg, folder / "adapters", eng.tokenizer)
    save_model(eng, model_cfg, folder / "model16", "model16")
    save_model(eng, model_cfg, folder / "model32", "model32", ckpt_dir=folder / "ckpt")
    head = eng.engine.module.head.weight
    info["head_partitioned"] = head.data.numel() == 0 and head.ds_tensor.numel() < head.ds_numel
    lora = [(n, p) for n, p in eng.engine.module.named_parameters() if "lora_" in n]
    if lora:
        info["lora_param"] = [lora[0][0], hasattr(lora[0][1], "ds_id"), lora[0][1].data.numel(),
                              tuple(lora[0][1].shape)]
    info["local_elements"] = sum(p.ds_tensor.numel() for p in eng.engine.module.parameters())
    info["full_elements"] = sum(p.ds_numel for p in eng.engine.module.parameters())
    report[run] = info
    eng.close()
if dist.is_main():
    torch.save({"ids": ids, "mask": mask}, out_dir / "inputs.pt")
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
dist.finish()
