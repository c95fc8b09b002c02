"""Run experiments whose strong model is a text linear probe, in one process group (a lone
process, or each rank under torchrun), and record on every rank what the frozen-feature cache did.

argv: OUT_DIR STEP=CONFIG [STEP=CONFIG ...], STEP one of
  cached    run_experiment as `w2s experiment` runs it (features extracted once, cached)
  redo      the same with --redo (every run again: the features must all come from the cache)
  per_step  the per-step frozen path that `linear_probe` took before: the backbone kept in the
            engine with requires_grad off, run forward at every step (pipeline.TextInputs)
Writes OUT_DIR/<STEP>-rank<R>.json: documents per extraction call, cache writes by this rank,
and a digest of the features of every encoded split."""
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from w2s_scale import distributed as dist  # noqa: E402
from w2s_scale import features, pipeline, text_features  # noqa: E402
from w2s_scale.loading import load_config  # noqa: E402

out_dir = Path(sys.argv[1])
record: dict = {}
head_features, add, encode = text_features.head_features, features._add, text_features.FrozenTextInputs.encode


def counted_head_features(model, train, data, tokenizer, tracker=None):
    record["extractions"].append(len(data))
    return head_features(model, train, data, tokenizer, tracker)


def counted_add(path, keys, new):
    record["writes"] += 1
    return add(path, keys, new)


def digested_encode(self, examples, tracker=None):
    out = encode(self, examples, tracker)
    record["encodes"].append(hashlib.sha256(out.features.tobytes()).hexdigest())
    return out


text_features.head_features = counted_head_features
features._add = counted_add
text_features.FrozenTextInputs.encode = digested_encode
cached_inputs = pipeline.run_inputs

dist.init()
for step in sys.argv[2:]:
    kind, config = step.split("=", 1)
    record.clear()
    record.update(extractions=[], writes=0, encodes=[])
    # the old path: every text run on tokens, the frozen backbone inside the engine
    pipeline.run_inputs = (cached_inputs if kind != "per_step"
                           else lambda cfg, plan, splits: pipeline.TextInputs(cfg, plan))
    pipeline.run_experiment(load_config(config), redo=kind == "redo")
    (out_dir / f"{kind}-rank{dist.rank()}.json").write_text(json.dumps(record))
dist.finish()
