"""The model catalogue (every entry resolves to a valid config, with no download) and the memory
planner (DeepSpeed's own estimators where they apply, the same byte counts elsewhere)."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import run_w2s, write_config
from w2s_scale import catalogue, memory
from w2s_scale.config import ModelConfig, TrainConfig, to_yaml, train_for
from w2s_scale.loading import load_config
from w2s_scale.ds_config import build as build_ds
from w2s_scale.models import load_hf_config, resolve_name

ENTRIES = list(catalogue.CATALOGUE.values())


def experiment(weak: dict, strong: dict, **sections) -> dict:
    return {"name": "cat", "data": {"dataset": "jsonl", "path": "unused.jsonl", "max_length": 1024},
            "weak": weak, "strong": strong, **sections}


def test_catalogue_holds_the_reference_ladder_and_todays_families():
    names = set(catalogue.CATALOGUE)
    assert {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"} <= names
    assert {f"qwen2.5-{s}" for s in ("0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b")} <= names
    assert {"llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "llama-3.1-70b"} <= names


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_entry_resolves_to_a_valid_config_without_download(entry):
    from transformers import AutoModel

    hf_config = entry.hf_config()
    assert hf_config.model_type == entry.arch.model_type
    with torch.device("meta"):  # shapes only: no memory, no weights
        backbone = AutoModel.from_config(hf_config)
    counted = sum(p.numel() for p in backbone.parameters())
    assert counted == entry.arch.backbone_params()
    # the architecture numbers reproduce the published size (LM head included, as model cards count)
    assert entry.arch.total_params() == pytest.approx(entry.nominal_params_b * 1e9, rel=0.015)

    assert resolve_name(entry.name) == entry.hf_id
    # a hub id finds its first entry; a variant of it (the -full entries) shares the hub id
    first = catalogue.lookup(entry.name.removesuffix("-full"))
    assert catalogue.lookup(entry.hf_id) is (first if entry.name.endswith("-full") else entry)
    cfg = load_config(raw=experiment({"name": "gpt2"}, {"name": entry.name}))
    model = cfg.strong
    assert (model.dtype, model.gradient_checkpointing, model.lora.enabled) == (
        entry.dtype, entry.gradient_checkpointing, entry.lora)
    train = train_for(cfg, model)
    assert (train.lr, train.micro_batch_size, train.zero_stage, train.offload) == (
        entry.lr, entry.micro_batch_size, entry.zero_stage, entry.offload)
    build_ds(train, model.dtype, entry.slurm.gpus)  # batch 32 splits over its Slurm GPUs
    # a random-initialised catalogue model is built from the catalogue: no hub access
    assert load_hf_config(ModelConfig(name=entry.name, init="random")).num_hidden_layers == entry.arch.layers


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_entry_defaults_fit_the_resources_they_ask_slurm_for(entry):
    cfg = load_config(raw=experiment({"name": "gpt2"}, {"name": entry.name}))
    cluster = memory.cluster_for(cfg.strong, gpu_mem_gb=entry.slurm.gpu_mem_gb,
                                 cpu_mem_gb=entry.slurm.mem_gb)
    assert (cluster.nodes, cluster.gpus_per_node) == (entry.slurm.nodes, entry.slurm.gpus_per_node)
    plan = memory.plan_model(cfg, cfg.strong, cluster)
    assert plan.fits, memory.format_table([plan])
    assert not plan.notes


def test_precedence_model_section_then_experiment_train_then_catalogue():
    raw = experiment({"name": "qwen2.5-0.5b"},
                     {"name": "Qwen/Qwen2.5-72B", "lora": {"r": 8}, "train": {"micro_batch_size": 2}},
                     train={"lr": 3e-5})
    cfg = load_config(raw=raw)
    strong = train_for(cfg, cfg.strong)
    assert strong.micro_batch_size == 2            # the model section wins
    assert strong.lr == 3e-5                       # then keys written in the experiment's train
    assert strong.zero_stage == 3                  # then the catalogue
    assert strong.epochs == TrainConfig().epochs   # then the built-in defaults
    assert (cfg.strong.lora.enabled, cfg.strong.lora.r, cfg.strong.lora.alpha) == (True, 8, 32.0)
    weak = train_for(cfg, cfg.weak)
    assert (weak.lr, weak.micro_batch_size, weak.zero_stage) == (3e-5, 16, 2)
    # a resolved config written out and read back is the same experiment
    again = load_config(raw=json.loads(json.dumps(cfg.model_dump(mode="json"))))
    assert again == cfg and train_for(again, again.strong) == strong
    assert load_config(raw=__import__("yaml").safe_load(to_yaml(cfg))) == cfg
    # `lora.enabled: false` turns the default LoRA into full fine-tuning
    full = load_config(raw=experiment({"name": "gpt2"}, {"name": "qwen2.5-72b", "lora": {"enabled": False}}))
    assert not full.strong.lora.enabled


def test_unknown_names_get_the_generic_defaults(tiny_models):
    model = ModelConfig(name=str(tiny_models["qwen2"]))
    assert model == ModelConfig.model_validate({"name": str(tiny_models["qwen2"])})
    assert (model.dtype, model.lora.enabled, model.train) == ("fp32", False, {})
    assert catalogue.lookup("some-org/some-model") is None
    assert resolve_name("some-org/some-model") == "some-org/some-model"


def test_a_user_adds_a_model_in_one_place():
    arch = catalogue.Arch("qwen2", 2, 64, 4, 2, 128, 1000, 128)
    entry = catalogue.Entry(name="my-qwen", hf_id="me/my-qwen", family="qwen2.5", arch=arch,
                            nominal_params_b=arch.total_params() / 1e9, lr=3e-4,
                            micro_batch_size=2, zero_stage=3, lora=True)
    catalogue.register(entry)
    try:
        cfg = load_config(raw=experiment({"name": "gpt2"}, {"name": "me/my-qwen"}))
        assert cfg.strong.lora.enabled and train_for(cfg, cfg.strong).lr == 3e-4
        assert resolve_name("my-qwen") == "me/my-qwen"
    finally:
        del catalogue.CATALOGUE["my-qwen"]


# --- memory ------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage,offload", [(2, False), (2, True), (3, False), (3, True)])
@pytest.mark.parametrize("name,cluster", [("qwen2.5-7b", memory.Cluster(1, 8)),
                                          ("llama-3.1-70b", memory.Cluster(2, 8)),
                                          ("gpt2-xl", memory.Cluster(1, 1))])
def test_full_finetuning_model_states_equal_deepspeeds_estimators(name, cluster, stage, offload):
    model = ModelConfig(name=name, lora={"enabled": False})
    shape = memory.model_shape(model)
    train = TrainConfig(zero_stage=stage, offload=offload, batch_size=cluster.gpus, micro_batch_size=1)
    plan = memory.estimate(shape, train, "bf16", True, False, 1024, cluster)
    gpu, cpu = memory.deepspeed_estimate(stage, shape.params, shape.largest_layer, cluster,
                                         plan.offload_optimizer, plan.offload_param)
    assert plan.deepspeed_model_states_gb == pytest.approx(gpu / memory.GB)
    assert plan.model_states_gb == pytest.approx(gpu / memory.GB, rel=1e-6, abs=1e-6)
    assert plan.cpu_gb_per_node == pytest.approx(cpu / memory.GB)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import AutoModel, BertConfig

    folder = tmp_path_factory.mktemp("bert")
    AutoModel.from_config(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["gpt2-strong", "qwen2", "llama", "bert"])
def test_lora_trainable_count_matches_peft(tiny_models, tiny_bert, kind):
    from transformers import AutoModel

    from w2s_scale.models import apply_lora

    folder = tiny_bert if kind == "bert" else tiny_models[kind]
    model = ModelConfig(name=str(folder), lora={"enabled": True, "r": 4})
    shape = memory.model_shape(model)
    hf_config = load_hf_config(model)
    backbone = apply_lora(AutoModel.from_config(hf_config), model, hf_config)
    adapters = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    head = 2 * hf_config.hidden_size
    assert shape.trainable == adapters + head
    assert shape.params == sum(p.numel() for p in backbone.parameters()) - adapters + head


def test_lora_and_zero3_make_a_72b_student_fit_one_node_and_full_finetuning_does_not():
    raw = experiment({"name": "qwen2.5-7b"}, {"name": "qwen2.5-72b"})
    cfg = load_config(raw=raw)
    node = memory.Cluster(1, 8, 80.0)
    lora = memory.plan_model(cfg, cfg.strong, node)
    assert lora.fits and lora.method == "ZeRO-3 LoRA ckpt bf16"
    assert lora.trainable < 0.005 * lora.params
    full = load_config(raw=experiment({"name": "qwen2.5-7b"}, {"name": "qwen2.5-72b", "lora": {"enabled": False}}))
    assert not memory.plan_model(full, full.strong, node).fits
    # two nodes halve the sharded weights; full fine-tuning still needs the optimizer off the GPU
    two = memory.Cluster(2, 8, 80.0, cpu_mem_gb=1024)
    mb2 = load_config(raw=experiment({"name": "qwen2.5-7b"}, {"name": "qwen2.5-72b", "lora": {"enabled": False},
                                                              "train": {"micro_batch_size": 2}}))
    assert not memory.plan_model(mb2, mb2.strong, two).fits
    off = load_config(raw=experiment({"name": "qwen2.5-7b"}, {"name": "qwen2.5-72b", "lora": {"enabled": False},
                                                              "train": {"micro_batch_size": 2, "offload": True}}))
    plan = memory.plan_model(off, off.strong, two)
    assert plan.fits and plan.offload_param and plan.cpu_gb_per_node < 1024
    # ZeRO-2 keeps the whole frozen model on every GPU: LoRA alone does not make it fit
    z2 = load_config(raw=experiment({"name": "qwen2.5-7b"}, {"name": "qwen2.5-72b", "train": {"zero_stage": 2}}))
    z2_plan = memory.plan_model(z2, z2.strong, node)
    assert not z2_plan.fits and z2_plan.params_gb > 140 and z2_plan.notes


def test_activations_shrink_with_checkpointing_and_grow_with_the_batch():
    shape = memory.model_shape(ModelConfig(name="llama-3.1-8b"))
    base = memory.activation_bytes(shape, 4, 1024, "bf16", checkpointing=False)
    assert memory.activation_bytes(shape, 4, 1024, "bf16", checkpointing=True) < base / 5
    assert memory.activation_bytes(shape, 8, 1024, "bf16", checkpointing=False) == 2 * base
    assert memory.activation_bytes(shape, 4, 1024, "fp32", checkpointing=False) == 2 * base


def test_plan_command_prints_every_model(tmp_path):
    path = write_config(tmp_path / "plan.yaml", experiment(
        {"name": "qwen2.5-0.5b"}, {"name": "qwen2.5-72b"}, train={"micro_batch_size": 2}))
    proc = run_w2s(["plan", "-c", str(path), "--nodes", "2", "--gpus-per-node", "8",
                    "--model", "llama-3.1-70b", "--model", "gpt2-xl", "--json"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    plans = json.loads(proc.stdout)  # nothing but the JSON on stdout
    assert [p["model"] for p in plans] == ["qwen2.5-0.5b", "qwen2.5-72b", "llama-3.1-70b", "gpt2-xl"]
    assert all(p["cluster"] == "2 x 8 x 80 GB" for p in plans)
    assert all(p["fits"] for p in plans)
    table = run_w2s(["plan", "-c", str(path), "--gpus-per-node", "8"], timeout=300)
    assert table.returncode == 0 and "qwen2.5-72b" in table.stdout and "ZeRO-3 LoRA" in table.stdout


def test_qwen25_sweep_config_plans_every_rung_and_asks_slurm_for_the_catalogues_resources():
    from conftest import REPO
    from w2s_scale.config import experiment_for
    from w2s_scale.loading import load_sweep

    sweep = load_sweep(REPO / "configs" / "qwen25_sweep.yaml")
    assert [m.name for m in sweep.models] == [f"qwen2.5-{s}" for s in
                                              ("0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b")]
    for model in sweep.models:
        assert model.resources == catalogue.slurm_defaults(model.name)
    plans = memory.plan_sweep_models(sweep)
    assert all(p.fits and not p.notes for p in plans), memory.format_table(plans)
    assert [p.cluster.gpus for p in plans] == [1, 1, 4, 8, 8, 8, 8]
    # every rung, not only the two ends the experiment view names, gets its catalogue defaults
    exp = experiment_for(sweep, 0)
    middle = train_for(exp, sweep.models[3].model_config_only())
    assert (middle.lr, middle.micro_batch_size, middle.zero_stage, middle.epochs) == (1e-5, 4, 3, 2)
    assert sweep.models[-1].lora.enabled and sweep.models[-1].save == "adapters"
