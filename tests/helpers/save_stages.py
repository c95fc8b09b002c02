"""One process (a group of one): train a tiny classifier for 2 steps under ZeRO stages 0 and 2,
save it as `adapters`, `model16` and `model32` through save_weights (the call the pipeline makes),
reload each folder with plain transformers / peft and print the largest difference from the
engine's own predictions as JSON lines.  argv: MODEL_DIR OUT_DIR"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from w2s_scale import distributed as dist  # noqa: E402
from w2s_scale.config import ModelConfig, TrainConfig  # noqa: E402
from w2s_scale.engine import build_engine  # noqa: E402
from w2s_scale.models import load_tokenizer  # noqa: E402
from w2s_scale.saving import load_classifier, save_weights  # noqa: E402

model_dir, out = sys.argv[1], Path(sys.argv[2])
dist.init()
g = torch.Generator().manual_seed(0)
ids = torch.randint(0, 5000, (4, 10), generator=g)
mask = torch.ones_like(ids)
labels = torch.tensor([0, 1, 0, 1])
for stage in (0, 2):
    for save, lora in (("adapters", True), ("model16", True), ("model32", False)):
        cfg = ModelConfig(name=model_dir, lora={"enabled": lora, "r": 4}, save=save)
        train = TrainConfig(zero_stage=stage, batch_size=4, micro_batch_size=4, lr=1e-2)
        eng = build_engine(cfg, train, 2, load_tokenizer(cfg))
        for _ in range(2):
            eng.engine.backward(torch.nn.functional.cross_entropy(eng.engine(ids, mask), labels))
            eng.engine.step()
        eng.engine.eval()
        with torch.no_grad():
            expected = torch.softmax(eng.engine(ids, mask), -1)[:, 1]
        folder = save_weights(eng, cfg, out / f"stage{stage}-{save}", out / f"stage{stage}-{save}-ckpt")
        eng.close()
        with torch.no_grad():
            probs = torch.softmax(load_classifier(folder)(ids, mask), -1)[:, 1]
        print(json.dumps({"stage": stage, "save": save, "folder": folder.name,
                          "max_diff": float((probs - expected).abs().max())}), flush=True)
dist.finish()
