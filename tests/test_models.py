"""The classifier head: where it reads, how it starts, and ZeRO-3 partitioning of it."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from w2s_scale.config import ModelConfig
from w2s_scale.data.batching import collate
from w2s_scale.models import build_classifier, last_token_index, load_tokenizer


def test_last_token_index_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [2, 4]
    assert last_token_index(left).tolist() == [4, 4]


@pytest.mark.parametrize("kind", ["gpt2-strong", "qwen2", "llama"])
def test_head_reads_last_real_token_whatever_the_padding(tiny_models, kind):
    """'!' is GPT-2 token id 0: the reference's `input_ids != 0` rule would skip it."""
    cfg = ModelConfig(name=str(tiny_models[kind]))
    model = build_classifier(cfg).eval()
    torch.nn.init.normal_(model.head.weight)  # a non-zero head, so logits depend on features
    tok = load_tokenizer(cfg)
    texts = ["what a film!", "a long and rather dull story about nothing much at all"]
    ids = tok(texts)["input_ids"]
    assert ids[0][-1] == 0
    with torch.no_grad():
        logits = {}
        for side in ("right", "left"):
            input_ids, mask = collate(ids, tok.pad_token_id, side)
            logits[side] = model(input_ids, mask)
        alone = torch.cat([model(*collate([row], tok.pad_token_id)) for row in ids])
    torch.testing.assert_close(logits["right"], alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits["left"], alone, atol=1e-4, rtol=1e-4)


def test_encoder_reads_pooled_output_and_head_starts_at_zero():
    cfg = ModelConfig(name="offline:minilm-l6")
    model = build_classifier(cfg)
    assert model.mode == "pooled"
    assert model.head.weight.abs().sum() == 0
    tok = load_tokenizer(cfg)
    input_ids, mask = collate(tok(["fine", "not fine at all"])["input_ids"], tok.pad_token_id)
    probs = torch.softmax(model(input_ids, mask), -1)
    torch.testing.assert_close(probs, torch.full_like(probs, 0.5))


def test_dropout_is_off_unless_asked(tiny_models):
    off = build_classifier(ModelConfig(name=str(tiny_models["gpt2-weak"])))
    on = build_classifier(ModelConfig(name=str(tiny_models["gpt2-weak"]), dropout=True))
    rates = lambda m: [x.p for x in m.modules() if isinstance(x, torch.nn.Dropout)]  # noqa: E731
    assert rates(off) and all(p == 0 for p in rates(off))
    assert any(p > 0 for p in rates(on))


def test_linear_probe_trains_the_head_only(tiny_models):
    model = build_classifier(ModelConfig(name=str(tiny_models["gpt2-weak"]), linear_probe=True))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight"]


def test_zero3_head_is_zero_and_partitioned_on_two_ranks(tiny_models, tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29611",
         str(REPO / "tests/helpers/zero3_head_init.py"), str(tiny_models["gpt2-strong"]), str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert len(ranks) == 2
    for r in ranks:
        assert r["head_partitioned"] and r["head_shape"] == [2, 64]
        assert r["head_abs_sum"] == 0.0  # an in-place init on the partition would leave noise
        # each rank holds about half of the backbone, not all of it
        assert r["backbone_local_elements"] < 0.6 * r["backbone_full_elements"]
    assert sum(r["head_local_elements"] for r in ranks) >= 2 * 64
