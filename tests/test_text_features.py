"""Text linear probes on frozen features (w2s_scale/text_features.py, features.py): the features
are extracted once under the engine and cached, and the probe trained on them gives what the
per-step frozen path (the backbone run forward at every step) gave; with a non-xent loss and a
probe label source; on 2 ranks under ZeRO-3. Tiny random-initialised GPT-2s with the real GPT-2
tokenizer (tests/conftest.py); `head: mean` on a tiny BERT."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_config, write_config
from w2s_scale.config import ConfigError, ExperimentConfig, ModelConfig
from w2s_scale.data.batching import TokenizedSet
from w2s_scale.distributed import free_port
from w2s_scale.errors import ModelError
from w2s_scale.features import cached_features
from w2s_scale.loading import load_config
from w2s_scale.models import Classifier, build_classifier, head_mode
from w2s_scale.preflight import preflight
from w2s_scale.text_features import build_frozen_head, entry_keys, features_key

HELPER = REPO / "tests/helpers/text_probe_runs.py"
STRONG = "gpt2-strong"


def probe_config(results: Path, models: dict, data: Path) -> dict:
    """The tiny experiment with a linear-probe student, two losses and two label sources."""
    config = tiny_config(results, models, data, losses=["xent", "logconf"],
                         labels=["weak", {"source": "probe"}])
    # a larger lr than the fine-tuned weak model's: 10 steps of a zero head should move it
    config["strong"].update(linear_probe=True, train={"lr": 1e-2})
    return config


# --- the cache key and the cache -------------------------------------------------------------------

def _key(**changes) -> str:
    raw = tiny_config(Path("/r"), {"gpt2-weak": "/m/weak", STRONG: "/m/strong"}, Path("/d.jsonl"))
    for section, fields in changes.items():
        raw[section] = {**raw[section], **fields} if isinstance(raw[section], dict) else fields
    cfg = ExperimentConfig(**raw)
    return features_key(cfg, cfg.strong, cfg.seeds[0])


def test_cache_key_changes_with_what_changes_the_features_only():
    base = _key()
    changed = {"max_length": _key(data={"max_length": 64}), "overlong": _key(data={"overlong": "truncate"}),
               "dataset file": _key(data={"path": "/other.jsonl"}), "dtype": _key(strong={"dtype": "bf16"}),
               "head": _key(strong={"head": "mean"}), "model": _key(strong={"name": "/m/other"}),
               "overrides": _key(strong={"config_overrides": {"n_layer": 1}})}
    assert all(key != base for key in changed.values()), changed
    assert len(set(changed.values())) == len(changed)
    same = {"seed": _key(seeds=[7]), "lr": _key(train={"lr": 0.5}), "model lr": _key(strong={"train": {"lr": 0.5}}),
            "loss": _key(losses=["logconf"]), "batches": _key(train={"eval_batch_size": 4}),
            "sizes": _key(data={"n_train": 100, "n_test": 20}), "label": _key(strong={"label": "x"})}
    assert all(key == base for key in same.values()), same
    # a randomly initialised backbone: its weights, and so its features, are drawn from the seed
    assert _key(strong={"init": "random"}, seeds=[1]) != _key(strong={"init": "random"}, seeds=[2])


def test_cache_extracts_only_the_documents_it_lacks(tmp_path):
    calls = []

    def extract(todo: TokenizedSet) -> np.ndarray:
        calls.append(list(todo.ids))
        return np.array([[float(sum(tokens))] for tokens in todo.input_ids])

    def docs(tokens: dict) -> TokenizedSet:
        return TokenizedSet(list(tokens), list(tokens.values()), np.zeros(len(tokens), dtype=np.int64))

    path = tmp_path / "f.npz"
    first = docs({"a": [1, 2], "b": [3]})
    assert cached_features(path, first, extract, entry_keys(first))[:, 0].tolist() == [3, 3]
    again = docs({"b": [3], "c": [5, 5], "a": [1, 2]})
    assert cached_features(path, again, extract, entry_keys(again))[:, 0].tolist() == [3, 10, 3]
    # the same id with other tokens (a data file edited in place): extracted anew, never reused
    edited = docs({"a": [1, 2, 4]})
    assert cached_features(path, edited, extract, entry_keys(edited))[:, 0].tolist() == [7]
    assert calls == [["a", "b"], ["c"], ["a"]]
    assert len(np.load(path)["ids"]) == 4 and not list(tmp_path.glob(".*.tmp"))


# --- the head -----------------------------------------------------------------------------------

def test_the_probe_head_is_the_per_step_paths_head(tiny_models):
    """A bias-free, zero-initialised linear layer in the model's dtype, as before."""
    per_step = build_classifier(ModelConfig(name=str(tiny_models[STRONG]), linear_probe=True)).head
    for dtype in ("fp32", "bf16"):
        probe = build_frozen_head(ModelConfig(name="unused", dtype=dtype), None, 64, 2).head
        assert probe.bias is None and per_step.bias is None
        assert probe.weight.shape == per_step.weight.shape and not probe.weight.any()
        assert probe.weight.dtype == (torch.float32 if dtype == "fp32" else torch.bfloat16)
    assert not per_step.weight.any() and per_step.weight.dtype == torch.float32


def test_mean_head_is_the_mean_of_the_real_tokens():
    from transformers import BertConfig, BertModel, GPT2Config

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    model = Classifier(BertModel(config).eval(), 16, head_mode(ModelConfig(name="x", head="mean"), config))
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        batch = model.features(ids, mask)
        alone = model.backbone(input_ids=ids[:1, :3]).last_hidden_state.mean(1)
    torch.testing.assert_close(batch[:1], alone, atol=1e-5, rtol=1e-5)  # padding left out
    with pytest.raises(ModelError, match="model.head: mean pools an encoder"):
        head_mode(ModelConfig(name="x", head="mean"), GPT2Config())


def test_a_text_probe_keeps_no_weights(tiny_models, tiny_data, tmp_path):
    raw = probe_config(tmp_path, tiny_models, tiny_data)
    preflight(load_config(raw=raw), 1)  # the probe experiment itself passes
    raw["strong"]["save"] = "model16"
    with pytest.raises(ConfigError, match=r"strong.save: a linear probe .* set save: none"):
        preflight(load_config(raw=raw), 1)


# --- experiments: 1 rank (cached, redone, per-step) and 2 ranks -----------------------------------

def _helper(out: Path, steps: list[str], ranks: int = 1) -> None:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                 f"--master_port={free_port()}"] if ranks > 1 else [sys.executable])
    proc = subprocess.run([*launcher, str(HELPER), str(out), *steps], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory, tiny_models, tiny_data) -> Path:
    root = tmp_path_factory.mktemp("text-probe")
    cached = write_config(root / "cached.yaml", probe_config(root / "cached", tiny_models, tiny_data))
    per_step = write_config(root / "per_step.yaml", probe_config(root / "per_step", tiny_models, tiny_data))
    _helper(root, [f"cached={cached}", f"redo={cached}", f"per_step={per_step}"])
    return root


def _record(root: Path, step: str, rank: int = 0) -> dict:
    return json.loads((root / f"{step}-rank{rank}.json").read_text())


def _runs(results: Path) -> dict[str, Path]:
    seed = results / "tiny/jsonl/seed0"
    return {p.name: p for p in seed.iterdir() if (p / "test_predictions.jsonl").exists()}


def _probs(run: Path, name: str = "test_predictions.jsonl") -> np.ndarray:
    return np.array([json.loads(row)["p1"] for row in (run / name).read_text().splitlines()])


def _cache(results: Path) -> dict[str, np.ndarray]:
    (path,) = (results / "tiny/features").glob(f"{STRONG}-*.npz")
    with np.load(path) as cache:
        return dict(zip(cache["ids"].tolist(), cache["features"]))


def test_features_are_extracted_once_and_then_read_from_the_cache(one_rank):
    first, redo = _record(one_rank, "cached"), _record(one_rank, "redo")
    cache = _cache(one_rank / "cached")
    # one pass in the ceiling run (A, test and B together); every transfer run read the cache
    assert first["extractions"] == [len(cache)] and first["writes"] == 1
    assert len(cache) == 80 + 64 + 80  # A, test, B of the tiny data: each document once
    assert redo["extractions"] == [] and redo["writes"] == 0
    # the ceiling and 4 transfer runs each encode their training part, test and B
    assert redo["encodes"] == first["encodes"] and len(first["encodes"]) == 5 * 3
    assert _record(one_rank, "per_step")["extractions"] == []


def test_cached_probe_gives_the_per_step_frozen_paths_results(one_rank):
    cached, per_step = _runs(one_rank / "cached"), _runs(one_rank / "per_step")
    assert set(cached) == set(per_step) and f"gt-{STRONG}" in cached
    for name, run in per_step.items():
        np.testing.assert_allclose(_probs(cached[name]), _probs(run), atol=1e-4, err_msg=name)
        np.testing.assert_allclose(_probs(cached[name], "weak_labels.jsonl"),
                                   _probs(run, "weak_labels.jsonl"), atol=1e-4, err_msg=name)


def test_a_non_xent_loss_and_a_probe_label_source_train_the_probe(one_rank):
    runs = _runs(one_rank / "cached")
    for name in ("w2s-gpt2-weak-to-gpt2-strong-logconf", "w2s-gpt2-weak-knn-relabel-to-gpt2-strong-logconf",
                 "w2s-gpt2-weak-knn-relabel-to-gpt2-strong-xent"):
        metrics = json.loads((runs[name] / "metrics.json").read_text())
        assert metrics["steps"] > 0 and metrics["n_test"] == 64
        assert _probs(runs[name]).std() > 1e-3, f"{name}: the head never moved from p = 0.5"


def test_two_ranks_extract_together_and_only_rank_0_writes(one_rank, tiny_models, tiny_data, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", probe_config(tmp_path / "results", tiny_models, tiny_data))
    _helper(tmp_path, [f"cached={cfg}"], ranks=2)
    rank0, rank1 = _record(tmp_path, "cached", 0), _record(tmp_path, "cached", 1)
    assert rank0["extractions"] == rank1["extractions"] == [80 + 64 + 80]  # a collective
    assert (rank0["writes"], rank1["writes"]) == (1, 0)
    assert rank0["encodes"] == rank1["encodes"]  # bit for bit the same features on both ranks
    one, two = _cache(one_rank / "cached"), _cache(tmp_path / "results")
    assert set(one) == set(two)
    np.testing.assert_allclose(np.stack([two[k] for k in one]), np.stack(list(one.values())), atol=1e-5)
    for name, run in _runs(tmp_path / "results").items():  # ZeRO-3 on 2 ranks: the 1-rank results
        np.testing.assert_allclose(_probs(run), _probs(_runs(one_rank / "cached")[name]), atol=1e-4,
                                   err_msg=name)
