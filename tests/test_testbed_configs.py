"""The automated-W2S testbed (docs/testbed.md): the Qwen3 / Qwen1.5 catalogue entries, the linear
schedule, the hard-label loss, configs/aar/ resolving to the published settings, and the ladder's
dry run (GPU-hours per model, whether it fits a cluster), all offline."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import REPO, run_w2s
from w2s_scale import catalogue
from w2s_scale.config import TrainConfig, experiment_for, stable_hash, train_for
from w2s_scale.engine import lr_lambda
from w2s_scale.loading import load_config, load_sweep
from w2s_scale.losses import LOSSES, compute_loss
from w2s_scale.resolved import format_settings, resolved_settings

TESTBED = REPO / "configs" / "aar" / "testbed.yaml"
LADDER = REPO / "configs" / "aar" / "ladder.yaml"
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
QWEN3_BASE = ["qwen3-0.6b-base", "qwen3-1.7b-base", "qwen3-4b-base", "qwen3-8b-base", "qwen3-14b-base"]
QWEN3_CHAT = ["qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b"]
NEW = QWEN3_BASE + QWEN3_CHAT + ["qwen1.5-0.5b-chat"]


# --- catalogue -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NEW)
def test_new_entries_count_their_parameters_as_the_meta_device_model(name):
    from transformers import AutoModel

    entry = catalogue.CATALOGUE[name]
    with torch.device("meta"):
        backbone = AutoModel.from_config(entry.hf_config())
    assert sum(p.numel() for p in backbone.parameters()) == entry.arch.backbone_params()
    assert entry.arch.total_params() == pytest.approx(entry.nominal_params_b * 1e9, rel=0.005)


def test_qwen3_shapes_as_published():
    for name in QWEN3_BASE + QWEN3_CHAT:
        arch = catalogue.CATALOGUE[name].arch
        config = catalogue.CATALOGUE[name].hf_config()
        assert (arch.model_type, arch.dim_per_head, arch.kv_heads, arch.vocab) == ("qwen3", 128, 8, 151936)
        assert config.head_dim == 128 and config.model_type == "qwen3"
        # 0.6B, 1.7B and 4B share the input embedding with the LM head; 8B and up do not
        assert config.tie_word_embeddings == (arch.hidden <= 2560)
    # q_norm and k_norm: one RMSNorm weight of head_dim per layer each
    arch = catalogue.CATALOGUE["qwen3-4b-base"].arch
    plain = catalogue.Arch("llama", arch.layers, arch.hidden, arch.heads, arch.kv_heads,
                           arch.intermediate, arch.vocab, arch.max_positions, head_dim=128)
    assert arch.backbone_params() - plain.backbone_params() == arch.layers * 2 * 128
    # published hub ids: base and instruct up to 14B; 32B as instruct only
    assert catalogue.lookup("Qwen/Qwen3-4B-Base").name == "qwen3-4b-base"
    assert catalogue.lookup("Qwen/Qwen3-4B").name == "qwen3-4b"
    assert catalogue.lookup("Qwen/Qwen3-32B").name == "qwen3-32b"
    assert catalogue.lookup("Qwen/Qwen3-32B-Base") is None
    assert catalogue.lookup("Qwen/Qwen1.5-0.5B-Chat").arch.model_type == "qwen2"


def test_chat_flags():
    for name in QWEN3_CHAT + ["qwen1.5-0.5b-chat"]:
        assert catalogue.CATALOGUE[name].chat, name
    for name, entry in catalogue.CATALOGUE.items():
        if name not in QWEN3_CHAT + ["qwen1.5-0.5b-chat"]:
            assert not entry.chat, name  # every other entry is a base model
    assert catalogue.CATALOGUE["qwen3-4b"].describe()["chat"] is True


def test_w2s_plan_covers_every_new_entry(tmp_path):
    names = [arg for name in NEW for arg in ("--model", name)]
    proc = run_w2s(["plan", "-c", str(TESTBED), "--seq-len", "1024", "--json", *names], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = json.loads(proc.stdout)
    plans = {p["model"]: p for p in listed[2:]}  # after the config's own weak and strong
    assert set(NEW) <= set(plans)
    for name in NEW:  # each on its catalogue resources, with its catalogue defaults
        assert plans[name]["fits"], plans[name]
        entry = catalogue.CATALOGUE[name]
        assert plans[name]["cluster"] == f"1 x {entry.slurm.gpus_per_node} x 80 GB"
    # the two testbed models first, as the config trains them: LoRA r 32 on every projection
    assert [p["model"] for p in listed[:2]] == ["qwen1.5-0.5b-chat", "qwen3-4b-base"]
    assert all(p["method"] == "ZeRO-2 LoRA ckpt bf16" and p["fits"] for p in listed[:2])


# --- the linear schedule and the hard-label loss ----------------------------------------------

@pytest.mark.parametrize("total,warmup", [(50, 5), (7, 0), (100, 10), (3, 1)])
def test_linear_schedule_is_transformers_linear_schedule(total, warmup):
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    theirs = get_linear_schedule_with_warmup(opt, warmup, total)
    ours = lr_lambda("linear", warmup, total)
    for step in range(total + 2):
        assert ours(step) == pytest.approx(theirs.lr_lambdas[0](step), abs=1e-12), step
    assert ours(total) == 0.0 and ours(warmup) == 1.0


def test_the_new_schedule_leaves_old_runs_hashes_alone():
    # a new Literal member changes no dump: a default train section hashes as before
    assert TrainConfig().model_dump()["schedule"] == "cosine"
    assert stable_hash(TrainConfig()) == stable_hash(TrainConfig(schedule="cosine"))
    assert stable_hash(TrainConfig(schedule="linear")) != stable_hash(TrainConfig())
    with pytest.raises(Exception, match="schedule"):
        TrainConfig(schedule="exponential")


def test_xent_hard_is_cross_entropy_against_the_argmax():
    logits = torch.tensor([[1.0, -1.0], [0.3, 0.2], [-2.0, 2.0], [0.0, 0.0]])
    weak = torch.tensor([[0.45, 0.55], [0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    hard = torch.tensor([1, 0, 0, 1])  # a tie goes to class 0, as the testbed's list.index(max)
    expect = torch.nn.functional.cross_entropy(logits, hard)
    assert compute_loss("xent_hard", logits, weak, 0.0).item() == pytest.approx(expect.item(), rel=1e-6)
    assert not LOSSES["xent_hard"].needs_global_stats and LOSSES["xent_hard"].defaults == {}


# --- configs/aar ---------------------------------------------------------------------------------

def _assert_testbed_model(model, train, chat_template: str):
    assert model.head == "label_tokens"
    assert model.label_tokens.template == "{text}\nLabel:"
    assert model.label_tokens.chat_template == chat_template
    assert model.label_tokens.leading_space is False
    assert model.dtype == "bf16" and model.gradient_checkpointing
    lora = model.lora
    assert lora.enabled and lora.r == 32 and lora.dropout == 0.0
    assert lora.target_modules == ALL_PROJECTIONS
    # rsLoRA r 32 alpha 32: the update scale alpha / sqrt(r), carried here by alpha / r
    assert lora.alpha / lora.r == pytest.approx(32 / math.sqrt(32), rel=1e-12)
    assert (train.lr, train.schedule, train.warmup_frac, train.batch_size, train.epochs) == (
        1e-4, "linear", 0.1, 32, 5)
    assert (train.weight_decay, train.max_grad_norm, train.length_grouping) == (0.0, 1.0, False)


def test_testbed_config_resolves_to_the_published_settings():
    cfg = load_config(TESTBED)
    assert cfg.weak.name == "qwen1.5-0.5b-chat" and catalogue.lookup(cfg.weak.name).hf_id == "Qwen/Qwen1.5-0.5B-Chat"
    assert cfg.strong.name == "qwen3-4b-base" and catalogue.lookup(cfg.strong.name).hf_id == "Qwen/Qwen3-4B-Base"
    assert cfg.seeds == [42, 43, 44, 45, 46]
    assert (cfg.data.dataset, cfg.data.path, cfg.data.max_length) == ("aar_pairwise", "labeled_data/chat", 8192)
    assert [loss.name for loss in cfg.losses] == ["xent_hard"]
    _assert_testbed_model(cfg.weak, train_for(cfg, cfg.weak), "on")      # a chat model: its template
    _assert_testbed_model(cfg.strong, train_for(cfg, cfg.strong), "off")  # a base model: bare prompt
    # the same settings in the printed resolution (what --dry-run shows)
    rows = next(iter(resolved_settings(load_sweep(TESTBED))["models"].values()))
    assert {r["schedule"] for r in rows} == {"linear"} and {r["head"] for r in rows} == {"label_tokens"}
    # one weak model and one student: no ladder, so no change of model to call a confound
    assert "confound:" not in format_settings(resolved_settings(load_sweep(TESTBED)))


def test_ladder_is_the_testbed_up_the_qwen3_family():
    sweep = load_sweep(LADDER)
    testbed = load_config(TESTBED)
    assert [m.name for m in sweep.models] == ["qwen1.5-0.5b-chat", *QWEN3_BASE, "qwen3-32b", "qwen2.5-72b"]
    assert [m.role for m in sweep.models] == ["weak"] + ["strong"] * 7
    assert sweep.seeds == testbed.seeds and sweep.losses == testbed.losses
    assert sweep.datasets[0] == testbed.data
    exp = experiment_for(sweep, 0)
    for model in sweep.models:
        plain = model.model_config_only()
        _assert_testbed_model(plain, train_for(exp, plain), "on" if model.role == "weak" else "off")
    text = format_settings(resolved_settings(sweep))
    confounds = [line for line in text.splitlines() if "confound:" in line]
    # no change of training method; the changes of model are named (the weak model is no rung)
    assert not any("lora" in c or "head" in c or "dtype" in c for c in confounds)
    assert any("chat False -> True from qwen3-14b-base to qwen3-32b" in c for c in confounds)
    assert any("family qwen3 -> qwen2.5 from qwen3-32b to qwen2.5-72b" in c for c in confounds)
    assert not any("qwen1.5" in c for c in confounds)


def test_ladder_dry_run_prints_gpu_hours_per_model_and_whether_it_fits():
    assert not (REPO / "labeled_data" / "chat").exists()  # offline and without the data
    proc = run_w2s(["sweep", "-c", str(LADDER), "--dry-run", "--cluster-gpus", "128",
                    "--cluster-hours", "48"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    # 5 x (the supervisor on train_label + 7 ceilings on train_unlabel) + 5 x 7 transfers: the
    # students' runs on train_label are not planned (nothing reads them)
    assert "40 gt runs, 35 transfer runs" in out and "75 to run" in out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("model") and "GPU-hours" in line)
    table = {line.split()[0]: line.split() for line in lines[start + 1: start + 10]}
    for model, gpus in (("qwen1.5-0.5b-chat", 1), ("qwen3-4b-base", 1), ("qwen3-8b-base", 4),
                        ("qwen3-32b", 8), ("qwen2.5-72b", 8)):
        assert int(table[model][2]) == gpus, table[model]
        assert float(table[model][3].replace(",", "")) > 0
    assert "total" in table
    assert "on 128 x H100 for 48 h" in out and ": FITS" in out
    assert "data.path labeled_data/chat not found here, not measured" in out
    assert "rows: aar_pairwise A + B 100,000, test 100,000 (data.n_train / data.n_test" in out
    assert "not checked by a dry run: the data files (data.path)" in out
    assert "memory per GPU (w2s plan)" in out and "NO" not in out.split("memory per GPU")[1].split("GB per GPU")[0]
    small = run_w2s(["sweep", "-c", str(LADDER), "--dry-run", "--cluster-gpus", "16"], timeout=300)
    assert small.returncode == 0 and "on 16 x H100 for 48 h" in small.stdout
    assert ": DOES NOT FIT" in small.stdout
