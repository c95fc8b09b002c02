"""configs/reference/*.yaml (and the two configs that claim the reference's setting) resolve, field
by field, to what openai/weak-to-strong does; the dry runs print those settings. No model loads."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, run_w2s
from w2s_scale import ds_config
from w2s_scale.config import train_for
from w2s_scale.resolved import resolved_settings
from w2s_scale.config import experiment_for
from w2s_scale.loading import load_sweep
from w2s_scale.sweep import plan_sweep

REFERENCE = sorted((REPO / "configs" / "reference").glob("*_gpt2.yaml"))  # text; vision_*: test_vision.py
CLAIMING = REFERENCE + [REPO / "configs" / "sciq_gpt2.yaml", REPO / "configs" / "sweep_gpt2.yaml"]
# the reference's MODELS_DICT learning rates (train_simple.py takes default_lr at batch 32)
LR = {"gpt2": 5e-5, "gpt2-medium": 5e-5, "gpt2-large": 1e-5, "gpt2-xl": 1e-5}


def test_the_five_reference_datasets_have_a_config():
    assert [p.stem for p in REFERENCE] == ["amazon_polarity_gpt2", "anthropic_hh_gpt2", "boolq_gpt2",
                                           "cosmos_qa_gpt2", "sciq_gpt2"]


@pytest.mark.parametrize("path", CLAIMING, ids=lambda p: str(p.relative_to(REPO)))
def test_reference_settings_field_by_field(path: Path):
    sweep = load_sweep(path)
    settings = resolved_settings(sweep)
    data = settings["datasets"]
    assert len(data) == 1
    assert {k: v for k, v in data[0].items() if k != "dataset"} == {
        "n_train": 20000, "n_test": 10000, "max_length": 1024, "overlong": "drop", "balance": False}
    rows = settings["models"][data[0]["dataset"]]
    names = [r["model"] for r in rows]
    assert names in (["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"], ["gpt2", "gpt2-large"])
    for row in rows:
        model = row["model"]
        assert row["dtype"] == "fp32", model
        assert row["head"] == "last_token", model
        assert row["dropout"] is False and row["linear_probe"] is False and row["lora"] is False
        assert row["optimizer"] == "AdamW wd 0 (= Adam)"
        assert row["lr"] == LR[model], model
        assert row["weight_decay"] == 0.0
        assert row["batch_size"] == 32
        assert 32 % row["micro_batch_size"] == 0
        assert row["epochs"] == 2
        assert row["schedule"] == "cosine" and row["warmup_frac"] == 0.0
        assert row["max_grad_norm"] == 0.0, model
        assert row["length_grouping"] is False, model
    # what DeepSpeed is actually given: no clipping, no mixed precision
    exp = experiment_for(sweep, 0)
    for model in sweep.models:
        plain = model.model_config_only()
        ds = ds_config.build(train_for(exp, plain), plain.dtype, 1)
        assert ds["gradient_clipping"] == 0.0
        assert not ds.get("bf16", {}).get("enabled") and not ds.get("fp16", {}).get("enabled")
        assert ds["train_batch_size"] == 32
    assert [(loss["name"], loss["params"]) for loss in settings["losses"]] == [
        ("xent", {}), ("logconf", {"aux_coef": 0.5, "warmup_frac": 0.1, "warmup": "reference"})]
    # the reference's sweep.py: every model on ground truth, every weak <= strong pair
    runs = plan_sweep(sweep)
    n = len(names)
    pairs = n * (n + 1) // 2 if sweep.self_transfer else n * (n - 1) // 2
    assert len(runs) == len(sweep.seeds) * (n + 2 * pairs)
    if n == 4:
        assert sweep.self_transfer


def test_claiming_configs_share_the_reference_sweeps_runs():
    reference = {r.key: r.plan.hash for r in plan_sweep(load_sweep(REFERENCE[-1]))}
    for other in CLAIMING[-2:]:
        for run in plan_sweep(load_sweep(other)):
            assert reference[run.key] == run.plan.hash, (other.name, run.key)


def test_dry_runs_print_the_resolved_settings(tmp_path):
    result = run_w2s(["sweep", "-c", str(REFERENCE[-1]), "--dry-run"], timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()
             if line.startswith("  ") and line.split()}
    assert lines["dtype"] == ["fp32"] * 4
    assert lines["max_grad_norm"] == ["0"] * 4
    assert lines["length_grouping"] == ["False"] * 4
    assert lines["lr"] == ["5e-05", "5e-05", "1e-05", "1e-05"]
    assert "logconf(aux_coef 0.5, warmup_frac 0.1, warmup reference)" in out
    assert "12 gt runs, 60 transfer runs" in out
    result = run_w2s(["experiment", "-c", str(REPO / "configs" / "sciq_gpt2.yaml"), "--dry-run"],
                     timeout=300)
    assert result.returncode == 0, result.stderr
    assert "runs: sciq/seed0/gt-gpt2, sciq/seed0/gt-gpt2-large" in result.stdout
    assert "max_grad_norm           0  " in result.stdout
    # the issue's spelling: `w2s experiment --dry-run` on a reference (sweep) config
    result = run_w2s(["experiment", "-c", str(REFERENCE[-1]), "--dry-run"], timeout=300)
    assert result.returncode == 0, result.stderr
    assert "warmup reference" in result.stdout and "gt-gpt2-xl" in result.stdout
    assert not (REPO / "results" / "reference-sciq-gpt2").exists()  # a dry run writes nothing
