"""LoRA under ZeRO-3 on 2 ranks (real DeepSpeed over gloo, started by torchrun; real peft), with
tiny random-initialised Llama and Qwen2 models.

ZeRO-3 keeps parameters smaller than `stage3_param_persistence_threshold` (1e5 elements by
default) whole on every rank, which would leave every tensor of these tiny models unpartitioned
and the save tests vacuous: the DeepSpeed config here sets it to 0, so that every adapter matrix
and the head are split across the ranks as a 70B model's would be."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, run_w2s, tiny_config, write_config
from w2s_scale.loading import load_config
from w2s_scale.data.batching import collate, tokenize
from w2s_scale.data.splits import make_splits
from w2s_scale.models import load_tokenizer
from w2s_scale.saving import HEAD_FILE, load_classifier, merge_adapters

PARTITION_ALL = {
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
    "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,
                          "stage3_gather_16bit_weights_on_model_save": True}}
RUNS = {"gt-llama": "weak", "gt-qwen2": "strong", "w2s-llama-to-qwen2-xent": "strong"}
LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def lora_experiment(tmp_path_factory, tiny_models, tiny_data):
    """weak: Llama + LoRA; strong: Qwen2 + LoRA + gradient checkpointing; both save adapters."""
    root = tmp_path_factory.mktemp("lora-zero3")
    (root / "zero3_all.json").write_text(json.dumps(PARTITION_ALL))
    config = tiny_config(root / "results", tiny_models, tiny_data, losses=["xent"])
    lora = {"enabled": True, "r": 4, "alpha": 8}
    config["weak"] = {"name": str(tiny_models["llama"]), "label": "llama", "lora": lora,
                      "save": "adapters"}
    config["strong"] = {"name": str(tiny_models["qwen2"]), "label": "qwen2", "lora": lora,
                        "gradient_checkpointing": True, "save": "adapters"}
    config["train"].update(lr=5e-3, ds_config=str(root / "zero3_all.json"))
    path = write_config(root / "lora.yaml", config)
    proc = run_w2s(["experiment", "-c", str(path), "--launcher", "torchrun", "--nproc", "2"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    cfg = load_config(path)
    return cfg, Path(cfg.results_dir) / cfg.name / cfg.data.dataset / "seed0"


def test_lora_zero3_two_ranks_trains_and_saves_whole_adapters_and_head(lora_experiment):
    from safetensors.torch import load_file

    cfg, seed_dir = lora_experiment
    for run in RUNS:
        run_dir = seed_dir / run
        assert json.loads((run_dir / "metrics.json").read_text())["world_size"] == 2
        resolved = __import__("yaml").safe_load((run_dir / "config.yaml").read_text())
        zero = resolved["ds_config"]["zero_optimization"]
        assert zero["stage"] == 3 and zero["stage3_param_persistence_threshold"] == 0
        adapters = load_file(str(run_dir / "adapters" / "adapter_model.safetensors"))
        assert len(adapters) == 2 * len(LORA_MODULES) * 2  # 2 layers x 7 modules x (A, B)
        for name, tensor in adapters.items():
            if "lora_A" in name:
                assert tensor.shape[0] == 4 and tensor.shape[1] in (64, 128, 32), name
            else:
                assert tensor.shape[1] == 4 and tensor.shape[0] in (64, 128, 32), name
        # B starts at zero and the head starts at zero: non-zero means trained and saved whole
        assert all(t.abs().sum() > 0 for n, t in adapters.items() if "lora_B" in n)
        head = load_file(str(run_dir / "adapters" / HEAD_FILE))["weight"]
        assert head.shape == (2, 64) and head.abs().sum() > 0
        adapter_config = json.loads((run_dir / "adapters" / "adapter_config.json").read_text())
        assert sorted(adapter_config["target_modules"]) == sorted(LORA_MODULES)
        assert (adapter_config["r"], adapter_config["lora_alpha"]) == (4, 8)
        # the default keeps no weights: checkpoints are gone once the run is done
        assert not (run_dir / "checkpoints").exists()


def test_lora_with_gradient_checkpointing_under_zero3_reaches_every_layer(lora_experiment):
    from safetensors.torch import load_file

    cfg, seed_dir = lora_experiment
    assert cfg.strong.gradient_checkpointing and cfg.strong.lora.enabled
    for run in ("gt-qwen2", "w2s-llama-to-qwen2-xent"):
        adapters = load_file(str(seed_dir / run / "adapters" / "adapter_model.safetensors"))
        for layer in (0, 1):  # reentrant checkpointing without an input needing grad gives none
            moved = [n for n, t in adapters.items() if f"layers.{layer}." in n and "lora_B" in n
                     and t.abs().sum() > 0]
            assert len(moved) == len(LORA_MODULES), (run, layer, moved)
        log = [json.loads(line) for line in (seed_dir / run / "log.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in log if r.get("event") == "train"]
        assert losses and all(np.isfinite(losses))


def predict_plain(model, tokenizer, test_set, batch_size: int = 16) -> np.ndarray:
    probs = []
    with torch.no_grad():
        for i in range(0, len(test_set), batch_size):
            ids, mask = collate(test_set.input_ids[i:i + batch_size], tokenizer.pad_token_id,
                                tokenizer.padding_side)
            probs.append(torch.softmax(model(ids, mask).float(), -1)[:, 1])
    return torch.cat(probs).numpy()


def test_saved_adapters_reload_and_merge_to_the_runs_own_predictions(lora_experiment, tmp_path):
    from transformers import AutoModel

    cfg, seed_dir = lora_experiment
    splits = make_splits(cfg.data, 0)
    for run, role in RUNS.items():
        model_cfg = getattr(cfg, role)
        tokenizer = load_tokenizer(model_cfg)
        test_set = tokenize(splits.test, tokenizer, cfg.data.max_length, cfg.data.overlong)
        saved = {r["id"]: r["p1"] for r in map(json.loads, (seed_dir / run / "test_predictions.jsonl")
                                                .read_text().splitlines())}
        expected = np.array([saved[i] for i in test_set.ids])
        # plain transformers + peft, one process, no DeepSpeed
        reloaded = load_classifier(seed_dir / run / "adapters")
        probs = predict_plain(reloaded, tokenizer, test_set)
        assert np.abs(probs - expected).max() < 2e-6  # predictions are written to 6 decimals
        # merged into a full model that plain transformers loads without peft
        merged_dir = merge_adapters(seed_dir / run / "adapters", tmp_path / run)
        backbone = AutoModel.from_pretrained(str(merged_dir))
        assert not any("lora" in n for n, _ in backbone.named_parameters())
        merged = load_classifier(merged_dir)
        assert np.abs(predict_plain(merged, tokenizer, test_set) - expected).max() < 1e-5


def test_zero3_saves_adapters_and_whole_models_where_naive_peft_saves_empty_tensors(tiny_models, tmp_path):
    """GPT-2 + LoRA (Conv1D weights: merging transposes) and Llama fully fine-tuned, 2 ranks:
    adapters, model16 (LoRA merged) and model32 (fp32 from the ZeRO checkpoint) all reload to the
    engine's predictions, while peft's own save_pretrained writes (0,)-shaped tensors."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", "29617",
         str(REPO / "tests" / "helpers" / "zero3_save.py"), str(tmp_path),
         f"gpt2lora={tiny_models['gpt2-strong']}:lora", f"llamafull={tiny_models['llama']}:full"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    inputs = torch.load(tmp_path / "inputs.pt")
    for run, info in report.items():
        assert info["head_partitioned"]
        assert info["local_elements"] == pytest.approx(info["full_elements"] / 2, rel=0.01)
        engine_probs = torch.tensor(info["probs"])
        folders = ["model16", "model32"] + (["adapters"] if info["kind"] == "lora" else [])
        for folder in folders:
            model = load_classifier(tmp_path / run / folder)
            with torch.no_grad():
                probs = torch.softmax(model(inputs["ids"], inputs["mask"]), -1)[:, 1]
            assert torch.allclose(probs, engine_probs, atol=1e-5), (run, folder, probs, engine_probs)
        for folder in ("model16", "model32"):  # plain transformers, no peft, no adapter names
            state = AutoModel.from_pretrained(str(tmp_path / run / folder)).state_dict()
            assert state and not any("lora" in k or "base_layer" in k for k in state)
        if info["kind"] == "lora":
            naive = load_file(str(tmp_path / run / "naive" / "adapter_model.safetensors"))
            assert naive and all(t.numel() == 0 for t in naive.values())
            assert any("invalid shape" in w for w in info["naive_warnings"])


def test_saving_works_under_zero_stages_0_and_2_too(tiny_models, tmp_path):
    """Without ZeRO-3 nothing is partitioned, but stage 1-2 fp32 weights come back from
    zero_to_fp32 as views into one flat buffer, which safetensors refuses unless copied."""
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "helpers" / "save_stages.py"),
                           str(tiny_models["llama"]), str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in __import__("os").environ.items()
                               if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")})
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(r["stage"], r["save"]) for r in rows] == [
        (s, k) for s in (0, 2) for k in ("adapters", "model16", "model32")]
    assert all(r["max_diff"] < 1e-5 for r in rows), rows
    assert {r["folder"] for r in rows} == {"adapters", "model"}
