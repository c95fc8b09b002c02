"""Typed configs: YAML in, overrides, one-line errors naming the field, resolved hashes."""
import pytest

from w2s_scale.config import ConfigError, stable_hash, train_for
from w2s_scale.loading import load_config
from w2s_scale.ds_config import DSConfigError, build
from w2s_scale.config import TrainConfig

BASE = {"name": "t", "data": {"dataset": "jsonl", "path": "x.jsonl"},
        "weak": {"name": "w", "train": {"lr": 1e-3}}, "strong": {"name": "s"}}


def test_defaults_and_per_model_train_overrides():
    cfg = load_config(raw=BASE)
    assert cfg.train.batch_size == 32 and cfg.train.schedule == "cosine"
    assert train_for(cfg, cfg.weak).lr == 1e-3 and train_for(cfg, cfg.strong).lr == 5e-5
    assert [l.name for l in cfg.losses] == ["xent"]


def test_overrides_from_the_command_line():
    cfg = load_config(raw=BASE, overrides=["train.lr=1e-4", "losses=[xent, logconf]", "seeds=[1,2]"])
    assert cfg.train.lr == 1e-4 and [l.name for l in cfg.losses] == ["xent", "logconf"]
    assert cfg.seeds == [1, 2]


@pytest.mark.parametrize("overrides,field", [
    (["train.lrr=1"], "train.lrr"),
    (["train.lr=-1"], "train.lr"),
    (["train.schedule=exponential"], "train.schedule"),
    (["losses=[xent, nope]"], "losses.1.name"),
    (["data.dataset=imagenet"], "data.dataset"),
    (["train.batch_size=30", "train.micro_batch_size=8"], "batch_size"),
    (["weak.train.epochz=1"], "weak.train.epochz"),
    (["seeds=[]"], "seeds"),
    (["losses=[{name: logconf, params: {aux_coeff: 1}}]"], "losses.0.params"),
    (["losses=[{name: logconf, params: {warmup: cosine}}]"], "losses.0.params: loss 'logconf': param warmup"),
    (["losses=[{name: logconf, params: {warmup: 1}}]"], "losses.0.params: loss 'logconf': param warmup"),
    (["losses=[{name: window, params: {radius: wide}}]"], "give one of ['midweak']"),
    (["losses=[{name: xent}, {name: kl, params: {radius: midweak}}]"], "losses.1.params"),
])
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        load_config(raw=BASE, overrides=overrides)
    message = str(err.value)
    assert field in message and "\n" not in message


def test_loss_words_and_tags():
    cfg = load_config(raw=BASE, overrides=[
        "losses=[{name: logconf, params: {warmup: reference}}, {name: window, params: {radius: midweak}}]"])
    assert [l.tag for l in cfg.losses] == ["logconf-warmupreference", "window-radiusmidweak"]
    assert cfg.losses[0].params == {"warmup": "reference"}


def test_missing_section_and_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="strong: required field is missing"):
        load_config(raw={k: v for k, v in BASE.items() if k != "strong"})
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(raw=BASE, overrides=["train.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_hash_is_stable_and_sensitive():
    a, b = load_config(raw=BASE), load_config(raw=BASE, overrides=["train.lr=1e-4"])
    assert stable_hash(a.train) == stable_hash(load_config(raw=BASE).train)
    assert stable_hash(a.train) != stable_hash(b.train)


def test_ds_config_auto_fields_are_filled_from_train():
    train = TrainConfig(batch_size=32, micro_batch_size=4, zero_stage=3, max_grad_norm=0.5)
    ds = build(train, "bf16", world_size=2)
    assert ds["train_batch_size"] == 32 and ds["gradient_accumulation_steps"] == 4
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] is True and ds["communication_data_type"] == "fp32"
    assert ds["zero_optimization"]["stage"] == 3


@pytest.mark.parametrize("template", ["zero2.json", "zero3.json", "zero3_offload.json"])
def test_shipped_templates_resolve(template):
    ds = build(TrainConfig(ds_config=template, batch_size=16, micro_batch_size=8), "fp32", 2)
    assert ds["gradient_accumulation_steps"] == 1
    assert "auto" not in str(ds)


@pytest.mark.parametrize("template,needle", [
    ({"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_sav": True}},
     "stage3_gather_16bit_weights_on_model_save"),
    ({"zero_optimisation": {"stage": 2}}, "zero_optimization"),
    ({"bf16": {"enabeld": True}}, "enabled"),
    ({"train_batch_size": 64}, "train_batch_size"),
    ({"optimizer": {"type": "Adam"}}, "optimizer"),
])
def test_ds_config_mistakes_are_caught(template, needle):
    with pytest.raises(DSConfigError) as err:
        build(TrainConfig(batch_size=32, micro_batch_size=8), "fp32", 1, template=template)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_batch_not_divisible_by_ranks():
    with pytest.raises(DSConfigError, match="--nproc / launch.nproc .*3 ranks cannot share train.batch_size 32"):
        build(TrainConfig(batch_size=32, micro_batch_size=8), "fp32", world_size=3)


def test_demo_run_hashes_stay_those_of_runs_finished_before_later_settings():
    """Settings added later (K classes, image columns and processors, early stopping, the ground-
    truth curve) leave the hashes of runs that do not use them as they were (these are the hashes
    of commit 83bbb34, whose demo trained in fp32), so finished runs stay reusable instead of
    turning stale."""
    from conftest import REPO
    from w2s_scale.planning import plan_experiment

    fp32 = ["weak.dtype=fp32", "strong.dtype=fp32"]  # the demo trains in bf16 since 2026-12-07
    plans = {p.name: p.hash for p in plan_experiment(load_config(REPO / "configs/demo.yaml", fp32))}
    assert plans == {"gt-bert-2l-scratch": "0d073785b876", "gt-minilm-l6": "981d030de389",
                     "w2s-bert-2l-scratch-to-minilm-l6-xent": "dfeb69edad27",
                     "w2s-bert-2l-scratch-to-minilm-l6-logconf": "0aa7f10caaa8"}
