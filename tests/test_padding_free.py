"""train.padding_free (w2s_scale/padding_free.py): a micro-batch's texts packed into rows without
padding give the padded batch's logits, for every architecture the catalogue and the demos use
(GPT-2, Llama, Mistral, Qwen2, Qwen3 as causal LMs; BERT, RoBERTa, MPNet as encoders), for each
head (last token, label tokens, pooled, mean) and at an inner layer (probes); training through the
real engine gives the same losses and predictions, under ZeRO-0 on one rank and ZeRO-3 on two.
Tiny random-initialised models with real tokenizers (GPT-2's; MiniLM's WordPiece for encoders)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_config
from w2s_scale.assets import minilm_l6
from w2s_scale.config import ModelConfig, TrainConfig
from w2s_scale.data.batching import collate
from w2s_scale.distributed import free_port
from w2s_scale.errors import PaddingFreeError
from w2s_scale.models import build_classifier, load_tokenizer
from w2s_scale.padding_free import PackedLayout, fill_rows, pack
from w2s_scale.planning import results_identity

LAYERS = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
              max_position_embeddings=128)
CAUSAL = {
    "gpt2": dict(n_layer=2, n_embd=64, n_head=4, n_positions=128),
    "llama": dict(LAYERS, num_key_value_heads=2),
    "mistral": dict(LAYERS, num_key_value_heads=2),
    "qwen2": dict(LAYERS, num_key_value_heads=2),
    "qwen3": dict(LAYERS, num_key_value_heads=2, head_dim=16),
}
# RoBERTa and MPNet place a text after their padding index: two more positions
ENCODERS = {"bert": LAYERS, "roberta": dict(LAYERS, max_position_embeddings=130),
            "mpnet": dict(LAYERS, max_position_embeddings=130)}
# from one token to several dozen, so that rows hold one long text or several short ones
TEXTS = ["ok", "a fine film", "dull and long and boring beyond words, truly a waste of an evening",
         "yes", "the cast was very good but the plot was a mess of twists nobody asked for",
         "moving", "not bad at all", "I laughed, I cried, I left early",
         "an honest, sharp and quietly moving story of two brothers who never quite meet"]


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory, gpt2_tokenizer_dir) -> dict[str, Path]:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("padding-free")
    folders = {}
    for kind, sizes in {**CAUSAL, **ENCODERS}.items():
        torch.manual_seed(7)
        causal = kind in CAUSAL
        config = AutoConfig.for_model(kind, vocab_size=50257 if causal else 30522, **sizes)
        auto = AutoModelForCausalLM if causal else AutoModel
        auto.from_config(config).save_pretrained(root / kind)
        AutoTokenizer.from_pretrained(gpt2_tokenizer_dir if causal else minilm_l6()).save_pretrained(root / kind)
        folders[kind] = root / kind
    return folders


def _packed_and_padded(model, ids: list[list[int]], pad_id: int, layer=None):
    input_ids, mask = collate(ids, pad_id)
    packed_ids, layout = pack(ids, pad_id)
    assert packed_ids.numel() < input_ids.numel(), "the texts should pack into fewer tokens"
    with torch.no_grad():
        if layer is not None:
            return model.features(input_ids, mask, layer=layer), model.features(packed_ids, None, layer, layout)
        return model(input_ids, mask), model(packed_ids, None, packed=layout)


def _cases():
    cases = [(kind, "auto") for kind in CAUSAL] + [("gpt2", "label_tokens"), ("qwen3", "label_tokens")]
    return cases + [(kind, head) for kind in ENCODERS for head in ("auto", "mean")]


@pytest.mark.parametrize("kind,head", _cases())
def test_packed_logits_equal_padded(tiny_folders, kind, head):
    cfg = ModelConfig(name=str(tiny_folders[kind]), head=head)
    tok = load_tokenizer(cfg)
    ids = [tok(t)["input_ids"] for t in TEXTS]
    label_ids = [tok(" no")["input_ids"][0], tok(" yes")["input_ids"][0]] if head == "label_tokens" else None
    model = build_classifier(cfg, label_ids=label_ids).eval()
    if head != "label_tokens":  # a zero head gives zero logits: compare something
        torch.nn.init.normal_(model.head.weight, std=0.5)
    padded, packed = _packed_and_padded(model, ids, tok.pad_token_id)
    assert padded.abs().max() > 0.1
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)
    inner_padded, inner_packed = _packed_and_padded(model, ids, tok.pad_token_id, layer=1)
    torch.testing.assert_close(inner_packed, inner_padded, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_gradients_equal_padded_with_lora_and_checkpointing(tiny_folders, kind):
    """What large students train with: LoRA adapters and (reentrant) gradient checkpointing."""
    cfg = ModelConfig(name=str(tiny_folders[kind]), gradient_checkpointing=True,
                      lora={"enabled": True, "r": 4, "target_modules": ["q_proj", "v_proj"]
                            if kind == "llama" else ["query", "value"]})
    tok = load_tokenizer(cfg)
    ids = [tok(t)["input_ids"] for t in TEXTS]
    model = build_classifier(cfg).train()
    torch.nn.init.normal_(model.head.weight, std=0.5)
    trained = [p for p in model.parameters() if p.requires_grad]
    grads = []
    for inputs, packed in ((collate(ids, tok.pad_token_id), None), (pack(ids, tok.pad_token_id), True)):
        model.zero_grad()
        logits = model(inputs[0], None, packed=inputs[1]) if packed else model(*inputs)
        torch.nn.functional.cross_entropy(logits, torch.arange(len(ids)) % 2).backward()
        grads.append([p.grad.clone() for p in trained])
    assert len(trained) > 1 and any(g.abs().max() > 0 for g in grads[0][:-1])  # adapters learn
    for padded, packed in zip(*grads):
        torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["qwen2", "bert"])
def test_packed_logits_equal_padded_in_bf16_on_cpu(tiny_folders, kind):
    """bf16 on CPU runs attention through sdpa_fp32 (w2s_scale/cpu_attention.py): its masks too."""
    cfg = ModelConfig(name=str(tiny_folders[kind]), dtype="bf16")
    tok = load_tokenizer(cfg)
    model = build_classifier(cfg).eval()
    assert model.backbone.config._attn_implementation == "sdpa_fp32"
    torch.nn.init.normal_(model.head.weight, std=0.5)
    padded, packed = _packed_and_padded(model, [tok(t)["input_ids"] for t in TEXTS], tok.pad_token_id)
    torch.testing.assert_close(packed, padded, rtol=0.02, atol=0.02 * padded.abs().max().item())


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_attention_across_texts_would_be_seen(tiny_folders, kind):
    """The comparison above can fail: with one segment per row (encoders) or positions that run on
    through a row (causal LMs: no packed sequences found), texts attend to each other."""
    cfg = ModelConfig(name=str(tiny_folders[kind]))
    tok = load_tokenizer(cfg)
    ids = [tok(t)["input_ids"] for t in TEXTS]
    model = build_classifier(cfg).eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)
    packed_ids, layout = pack(ids, tok.pad_token_id)
    width = packed_ids.shape[1]
    leaky = PackedLayout(torch.arange(width).expand(len(packed_ids), width).clone(),
                         torch.zeros_like(layout.segments), layout.first, layout.last, layout.n_tokens)
    with torch.no_grad():
        padded = model(*collate(ids, tok.pad_token_id))
        wrong = model(packed_ids, None, packed=leaky)
    assert (wrong - padded).abs().max() > 1e-3


def test_rows_hold_each_text_once_no_wider_than_the_longest():
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(1, 40, size=50)]
    rows, width = fill_rows(lengths)
    assert width == max(lengths)
    assert sorted(i for row in rows for i in row) == list(range(50))
    assert all(sum(lengths[i] for i in row) <= width for row in rows)
    assert len(rows) * width < len(lengths) * width  # fewer tokens than the padded batch

    tokens = [list(range(100 * i, 100 * i + n)) for i, n in enumerate(lengths)]
    input_ids, layout = pack(tokens, pad_id=-5)
    flat = input_ids.reshape(-1)
    assert layout.n_tokens == sum(lengths)
    assert int((flat != -5).sum()) == sum(lengths)
    for i, text in enumerate(tokens):  # read indices in the batch's order, at the text's ends
        assert flat[layout.first[i]] == text[0] and flat[layout.last[i]] == text[-1]
        span = flat[layout.first[i]:layout.last[i] + 1].tolist()
        assert span == text
        assert layout.positions.reshape(-1)[layout.first[i]:layout.last[i] + 1].tolist() == list(range(len(text)))
        assert set(layout.segments.reshape(-1)[layout.first[i]:layout.last[i] + 1].tolist()) == {i}
    assert (layout.segments[layout.segments < 0] < 0).all()  # row tails: a segment of their own


def _train(folders: list[Path], stage: int, nproc: int, tmp_path: Path) -> dict:
    out = tmp_path / f"losses-{stage}-{nproc}.json"
    script = str(REPO / "tests/helpers/padding_free_train.py")
    launch = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               f"--master_port={free_port()}"] if nproc > 1 else [sys.executable])
    proc = subprocess.run([*launch, script, str(out), str(stage), *map(str, folders)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _same_training(result: dict) -> None:
    for folder, modes in result.items():
        padded, packed = modes["padded"], modes["packed"]
        assert len(padded["losses"]) == 4
        np.testing.assert_allclose(packed["losses"], padded["losses"], rtol=1e-4, err_msg=folder)
        np.testing.assert_allclose(packed["probs"], padded["probs"], atol=1e-4, err_msg=folder)
        assert padded["losses"][0] != padded["losses"][-1]  # it trained


def test_training_through_the_engine_matches_padded(tiny_folders, tmp_path):
    _same_training(_train([tiny_folders["qwen2"], tiny_folders["bert"]], 0, 1, tmp_path))


def test_zero3_on_two_ranks_matches_padded(tiny_folders, tmp_path):
    _same_training(_train([tiny_folders["gpt2"], tiny_folders["bert"]], 3, 2, tmp_path))


def test_unchecked_architectures_stop_at_preflight(tmp_path, tiny_models, tiny_data, gpt2_tokenizer_dir):
    """An OPT student (a causal LM whose packed rows are not checked) with padding_free: one line
    naming the model's setting and the fix, before any rank trains."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from w2s_scale.loading import load_config
    from w2s_scale.preflight import preflight

    opt = tmp_path / "opt"
    AutoModel.from_config(AutoConfig.for_model("opt", vocab_size=50272, hidden_size=32, ffn_dim=64,
                                               num_hidden_layers=1, num_attention_heads=2,
                                               word_embed_proj_dim=32)).save_pretrained(opt)
    AutoTokenizer.from_pretrained(gpt2_tokenizer_dir).save_pretrained(opt)
    raw = tiny_config(tmp_path / "results", tiny_models, tiny_data)
    raw["train"].update(zero_stage=0, padding_free=True)
    preflight(load_config(raw=raw), 1)  # GPT-2 weak and strong: accepted
    raw["strong"] = {"name": str(opt), "label": "opt"}
    with pytest.raises(PaddingFreeError, match=r"^strong.train.padding_free: opt models are not "
                                               r"checked .*; set train.padding_free: false"):
        preflight(load_config(raw=raw), 1)
    assert not (tmp_path / "results").exists()


def test_the_switch_leaves_run_hashes_alone():
    model = ModelConfig(name="gpt2")
    assert results_identity(model, TrainConfig()) == results_identity(model, TrainConfig(padding_free=True))
    assert "padding_free" not in TrainConfig().model_dump()
