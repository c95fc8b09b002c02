"""head: label_tokens: classification through a causal LM's own LM head (w2s_scale/prompts.py,
models.py), on tiny random-initialised causal LMs of the real architectures (GPT-2, Qwen2, Qwen3,
Llama) with the real GPT-2 tokenizer; ZeRO-3 on 2 ranks against 1; LoRA adapters and whole models
saved and reloaded; the chat template on and off; zero-shot runs (train.epochs: 0)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from test_losses import free_port
from conftest import REPO, run_predictions, run_w2s, tiny_config, write_config
from w2s_scale.config import ConfigError, DataConfig, ModelConfig
from w2s_scale.data.batching import collate, tokenize
from w2s_scale.data.splits import make_splits
from w2s_scale.loading import load_config
from w2s_scale.models import build_classifier, load_tokenizer
from w2s_scale.prompts import label_prompt
from w2s_scale.saving import load_classifier

LM_SIZES = {
    "gpt2": dict(n_layer=2, n_embd=64, n_head=4, n_positions=256),
    "qwen2": dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True),
    "qwen3": dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                  tie_word_embeddings=False),
    "llama": dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False),
}
# a ChatML-style template (Qwen's layout), given to the "-instruct" copy of the tiny Qwen2
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
DATA = DataConfig(dataset="jsonl", path="unused.jsonl")


def _make_lm(kind: str, out: Path, tokenizer_dir: Path, chat: bool = False) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(4321)
    config = AutoConfig.for_model(kind, vocab_size=50257, **LM_SIZES[kind])
    if kind == "gpt2":
        config.bos_token_id = config.eos_token_id = 50256
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if chat:
        tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_lms(tmp_path_factory, gpt2_tokenizer_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-lms")
    lms = {kind: _make_lm(kind, root / kind, gpt2_tokenizer_dir) for kind in LM_SIZES}
    lms["qwen2-instruct"] = _make_lm("qwen2", root / "qwen2-instruct", gpt2_tokenizer_dir, chat=True)
    return lms


def _lm_logits_at_cue(folder: Path, ids: list[list[int]], word_ids) -> torch.Tensor:
    """What the testbed reads: the causal LM's own next-token logits of the label words."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(folder).eval()
    out = []
    with torch.no_grad():
        for row in ids:
            logits = lm(torch.tensor([row])).logits[0, -1]
            out.append(logits[list(word_ids)])
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["gpt2", "qwen2", "qwen3", "llama"])
def test_head_is_the_lm_heads_logits_of_the_label_words(tiny_lms, kind):
    cfg = ModelConfig(name=str(tiny_lms[kind]), head="label_tokens")
    tok = load_tokenizer(cfg)
    prompt = label_prompt(cfg, DATA, tok)
    model = build_classifier(cfg, num_classes=2, label_ids=prompt.word_ids).eval()
    ids = [prompt.encode(t, 64, "drop") for t in ["a fine film", "dull, flat and far too long for me"]]
    expected = _lm_logits_at_cue(tiny_lms[kind], ids, prompt.word_ids)
    with torch.no_grad():
        for side in ("right", "left"):
            got = model(*collate(ids, tok.pad_token_id, side))
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert model.head.weight.requires_grad  # full fine-tuning trains the label rows


def test_lora_freezes_the_label_rows_as_peft_freezes_the_lm_head(tiny_lms):
    cfg = ModelConfig(name=str(tiny_lms["qwen3"]), head="label_tokens", lora={"enabled": True, "r": 4})
    prompt = label_prompt(cfg, DATA, load_tokenizer(cfg))
    model = build_classifier(cfg, num_classes=2, label_ids=prompt.word_ids)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)


def test_prompt_template_words_and_chat_template(tiny_lms):
    base = ModelConfig(name=str(tiny_lms["qwen2"]), head="label_tokens")
    tok = load_tokenizer(base)
    plain = label_prompt(base, DATA, tok)
    assert not plain.chat and plain.words == ("False", "True")
    assert tok.decode(plain.encode("good film", 64, "drop")) == "good film\nLabel:"
    assert plain.word_ids == tuple(tok(w, add_special_tokens=False)["input_ids"][0] for w in ("False", "True"))
    spaced = label_prompt(base.model_copy(update={"label_tokens": base.label_tokens.model_copy(
        update={"leading_space": True})}), DATA, tok)
    assert spaced.word_ids == tuple(tok(" " + w, add_special_tokens=False)["input_ids"][0]
                                    for w in ("False", "True"))
    assert spaced.word_ids != plain.word_ids
    # auto: on for an instruct model whose tokenizer has a chat template, off for a base model
    chat_cfg = ModelConfig(name=str(tiny_lms["qwen2-instruct"]), head="label_tokens")
    chat_tok = load_tokenizer(chat_cfg)
    chat = label_prompt(chat_cfg, DATA, chat_tok)
    assert chat.chat
    assert chat_tok.decode(chat.encode("good film", 64, "drop")) == (
        "<|im_start|>user\ngood film\nLabel:<|im_end|>\n<|im_start|>assistant\n")
    off = chat_cfg.model_copy(update={"label_tokens": chat_cfg.label_tokens.model_copy(
        update={"chat_template": "off"})})
    assert not label_prompt(off, DATA, chat_tok).chat
    forced = base.model_copy(update={"label_tokens": base.label_tokens.model_copy(
        update={"chat_template": "on"})})
    with pytest.raises(ConfigError, match="label_tokens.chat_template: on, but the tokenizer"):
        label_prompt(forced, DATA, tok)


@pytest.mark.parametrize("words,message", [
    (["True", "Truely"], "begin with the same token"),
    (["A", "B", "C"], "3 word\\(s\\) for 2 classes"),
    (["A", " "], "empty"),
])
def test_bad_label_words_are_refused_in_one_line(tiny_lms, words, message):
    cfg = ModelConfig(name=str(tiny_lms["gpt2"]), head="label_tokens", label_tokens={"words": words})
    with pytest.raises(ConfigError, match=message):
        label_prompt(cfg, DATA, load_tokenizer(cfg))


def test_k_classes_without_words_of_their_own_need_them_listed(tiny_lms):
    cfg = ModelConfig(name=str(tiny_lms["gpt2"]), head="label_tokens")
    with pytest.raises(ConfigError, match="label_tokens.words: dataset 'bbc_news' has 5 classes"):
        label_prompt(cfg, DataConfig(dataset="bbc_news"), load_tokenizer(cfg))
    listed = cfg.model_copy(update={"label_tokens": cfg.label_tokens.model_copy(
        update={"words": ["business", "entertainment", "politics", "sport", "tech"]})})
    assert len(label_prompt(listed, DataConfig(dataset="bbc_news"), load_tokenizer(cfg)).word_ids) == 5


def test_overlong_documents_are_cut_inside_the_template_so_the_cue_stays(tiny_lms):
    cfg = ModelConfig(name=str(tiny_lms["gpt2"]), head="label_tokens")
    tok = load_tokenizer(cfg)
    prompt = label_prompt(cfg, DATA, tok)
    text = " ".join(f"word{i}" for i in range(60))
    cue = tok("\nLabel:", add_special_tokens=False)["input_ids"]
    for policy, kept_word in (("truncate", "word0"), ("truncate_left", "word59")):
        ids = prompt.encode(text, 20, policy)
        assert len(ids) <= 20 and ids[-len(cue):] == cue
        assert kept_word in tok.decode(ids)
    assert prompt.encode(text, 20, "drop") is None
    assert prompt.encode(text, 2, "truncate") is None  # the cue alone does not fit
    from w2s_scale.data.values import Example

    kept = tokenize([Example("a", text, 0), Example("b", "short", 1)], tok, 20, "drop", prompt)
    assert kept.ids == ["b"] and kept.n_dropped == 1


@pytest.mark.parametrize("fields,message", [
    ({"head": "label_tokens", "linear_probe": True}, "linear_probe: head: label_tokens"),
    ({"label_tokens": {"words": ["a", "b"]}}, "label_tokens: settings of head: label_tokens"),
    ({"head": "label_tokens", "label_tokens": {"template": "Label:"}}, "must contain \\{text\\}"),
])
def test_label_token_settings_are_checked_with_the_config(fields, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(name="gpt2", **fields)


def test_zero_epochs_only_for_a_label_token_head(tiny_models, tiny_data, tmp_path):
    config = tiny_config(tmp_path / "r", tiny_models, tiny_data)
    config["weak"]["train"] = {"epochs": 0}
    path = write_config(tmp_path / "c.yaml", config)
    proc = run_w2s(["experiment", "-c", str(path), "--dry-run"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "weak.train.epochs: 0 trains nothing" in proc.stderr


def test_label_tokens_on_an_encoder_is_refused_before_training(tiny_data, tmp_path):
    config = tiny_config(tmp_path / "r", {"gpt2-weak": "offline:minilm-l6", "gpt2-strong": "offline:minilm-l6"},
                         tiny_data)
    config["strong"]["head"] = "label_tokens"
    path = write_config(tmp_path / "c.yaml", config)
    proc = run_w2s(["experiment", "-c", str(path)])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "head: label_tokens reads a causal LM's own LM head" in proc.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("DONE"))


# --- whole experiments: zero-shot, chat template, ranks, saving ---------------------------------

def _experiment(root: Path, models: dict, data: Path, weak: dict, strong: dict, **train) -> Path:
    config = tiny_config(root / "results", {"gpt2-weak": "", "gpt2-strong": ""}, data,
                         losses=["xent"], weak={"label": "weak", **weak},
                         strong={"label": "strong", **strong})
    config["data"].update(max_length=48)
    config["train"].update(train)
    config["allow_larger_weak"] = True  # tiny models of alike size; which is larger is not the point
    return write_config(root / "cfg.yaml", config)


@pytest.fixture(scope="module")
def zero_shot_experiment(tmp_path_factory, tiny_lms, tiny_data):
    """weak: the tiny GPT-2 zero-shot (epochs 0) labels B; strong: the chat-templated Qwen2,
    fully fine-tuned on those labels; one rank."""
    root = tmp_path_factory.mktemp("zero-shot")
    path = _experiment(root, tiny_lms, tiny_data,
                       weak={"name": str(tiny_lms["gpt2"]), "head": "label_tokens", "train": {"epochs": 0}},
                       strong={"name": str(tiny_lms["qwen2-instruct"]), "head": "label_tokens"},
                       lr=1e-3, zero_stage=0)
    proc = run_w2s(["experiment", "-c", str(path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return path


def test_zero_shot_run_scores_the_untrained_lm_and_labels_b(zero_shot_experiment, tiny_lms):
    cfg = load_config(zero_shot_experiment)
    seed_dir = Path(cfg.results_dir) / cfg.name / cfg.data.dataset / "seed0"
    metrics = json.loads((seed_dir / "gt-weak/metrics.json").read_text())
    assert metrics["steps"] == 0
    tok = load_tokenizer(cfg.weak)
    prompt = label_prompt(cfg.weak, cfg.data, tok)
    test = tokenize(make_splits(cfg.data, 0).test, tok, cfg.data.max_length, cfg.data.overlong, prompt)
    expected = torch.softmax(_lm_logits_at_cue(tiny_lms["gpt2"], test.input_ids, prompt.word_ids), -1)[:, 1]
    rows = [json.loads(r) for r in (seed_dir / "gt-weak/test_predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == test.ids
    np.testing.assert_allclose([r["p1"] for r in rows], expected.numpy(), atol=1e-4)
    assert (seed_dir / "gt-weak/weak_labels.jsonl").exists()
    transfer = json.loads((seed_dir / "w2s-weak-to-strong-xent/metrics.json").read_text())
    assert transfer["steps"] > 0 and transfer["weak_model"] == "weak"


@pytest.fixture(scope="module")
def ranks_experiment(tmp_path_factory, tiny_lms, tiny_data):
    """The same label-token experiment under ZeRO-3 on 1 rank and on 2 (torchrun): weak Llama fully
    fine-tuned and saved whole (model16), strong Qwen3 with LoRA, adapters saved."""
    out = {}
    for nproc in (1, 2):
        root = tmp_path_factory.mktemp(f"ranks{nproc}")
        path = _experiment(root, tiny_lms, tiny_data,
                           weak={"name": str(tiny_lms["llama"]), "head": "label_tokens", "save": "model16"},
                           strong={"name": str(tiny_lms["qwen3"]), "head": "label_tokens",
                                   "lora": {"enabled": True, "r": 4, "alpha": 8}, "save": "adapters"},
                           lr=5e-3, zero_stage=3)
        args = ["experiment", "-c", str(path)] + (["--launcher", "torchrun", "--nproc", "2"] if nproc == 2 else [])
        proc = run_w2s(args, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
        out[nproc] = path
    return out


def _seed_dir(path: Path) -> Path:
    cfg = load_config(path)
    return Path(cfg.results_dir) / cfg.name / cfg.data.dataset / "seed0"


@pytest.mark.parametrize("run", ["gt-weak", "gt-strong", "w2s-weak-to-strong-xent"])
def test_zero3_two_ranks_give_the_one_rank_results(ranks_experiment, run):
    one, two = (run_predictions(_seed_dir(ranks_experiment[n]) / run) for n in (1, 2))
    assert len(one) == len(two) > 0
    np.testing.assert_allclose(one, two, atol=2e-3)
    assert one.std() > 0  # the label rows trained or LoRA moved them: not a constant


@pytest.mark.parametrize("run,folder", [("gt-weak", "model"), ("w2s-weak-to-strong-xent", "adapters")])
def test_saved_model_and_adapters_reload_to_the_runs_own_probabilities(ranks_experiment, run, folder):
    path = ranks_experiment[2]
    cfg = load_config(path)
    role = cfg.weak if run == "gt-weak" else cfg.strong
    run_dir = _seed_dir(path) / run
    model = load_classifier(run_dir / folder)
    assert model.mode == "label_tokens"
    tok = load_tokenizer(role)
    prompt = label_prompt(role, cfg.data, tok)
    test = tokenize(make_splits(cfg.data, 0).test, tok, cfg.data.max_length, cfg.data.overlong, prompt)
    with torch.no_grad():
        probs = torch.cat([torch.softmax(model(*collate(test.input_ids[i:i + 16], tok.pad_token_id)), -1)
                           for i in range(0, len(test), 16)])[:, 1].numpy()
    np.testing.assert_allclose(probs, run_predictions(run_dir), atol=2e-3)


def test_each_architecture_under_zero3_on_two_ranks_matches_one(tiny_lms, tmp_path):
    """Forward only, every architecture: the label rows copied from a partitioned LM head."""
    out = tmp_path / "probs.json"
    folders = [str(tiny_lms[k]) for k in ("gpt2", "qwen2", "qwen3", "llama")]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           f"--master_port={free_port()}", str(REPO / "tests/helpers/label_tokens_zero3.py"),
                           str(out), *folders], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    for folder in folders:
        cfg = ModelConfig(name=folder, head="label_tokens")
        tok = load_tokenizer(cfg)
        prompt = label_prompt(cfg, DATA, tok)
        ids = [prompt.encode(t, 64, "drop") for t in ["a fine film", "dull and long"]]
        expected = torch.softmax(_lm_logits_at_cue(Path(folder), ids, prompt.word_ids), -1)
        np.testing.assert_allclose(np.array(got[folder]), expected.numpy(), atol=1e-4)


def test_zero_epochs_in_a_sweep_model_between_the_ends_is_refused(tmp_path):
    from w2s_scale.loading import load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text("name: x\ndatasets: [{dataset: jsonl, path: data.jsonl}]\nmodels:\n"
                    "  - {name: gpt2, label: a}\n  - {name: gpt2, label: b, train: {epochs: 0}}\n"
                    "  - {name: gpt2, label: c}\n")
    with pytest.raises(ConfigError, match="models.1.train.epochs: 0 trains nothing"):
        load_sweep(path)
