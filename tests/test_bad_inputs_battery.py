"""A battery of bad inputs, as a careless user makes them, across every class preflight knows.

Each case must: exit 2; print exactly one `w2s: error:` line that names the cause (field, file or
value); print no traceback; mark nothing DONE; change nothing on disk (the inputs, the working
folder, the results folder); and leave an earlier finished run byte-identical. Cases run
in-process through `w2s_scale.cli.main` (the same code the `w2s` command runs), all of them stopping
at preflight; two run as real processes, where the exit status and stderr of the process matter.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import run_w2s, tiny_config, write_sentiment_jsonl

from w2s_scale import cli, launching
from w2s_scale.loading import load_config
from w2s_scale.planning import plan_experiment
from w2s_scale.results import RunDir


# --- shared setup: inputs, a finished run, a snapshot ------------------------------------------------

@pytest.fixture(scope="module")
def battery(tmp_path_factory, tiny_models, tiny_data):
    """Every input file the cases use, written once, and a results folder holding one finished run
    (written through the real RunDir API) that no bad input may touch."""
    root = tmp_path_factory.mktemp("battery")
    inputs, work = root / "inputs", root / "work"
    inputs.mkdir()
    work.mkdir()
    results = work / "results"
    base = tiny_config(results, tiny_models, tiny_data, losses=["xent", "logconf"])
    base["train"]["zero_stage"] = 0  # nothing here trains; keeps DeepSpeed's checks quick

    finished = plan_experiment(load_config(raw=base))[0]
    run = RunDir(finished.dir, finished.hash)
    run.prepare()
    run.write_json("metrics.json", {"run": finished.name, "accuracy": 0.75})
    run.write_jsonl("test_predictions.jsonl", [{"id": "test-0", "p1": 0.7, "label": 1}])
    run.mark_done()

    def write(name: str, content) -> Path:
        path = inputs / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    (inputs / "a-folder").mkdir()
    write("binary.yaml", bytes(range(256)) * 4)
    write("list.yaml", "- name: x\n- data: y\n")
    write("empty.yaml", "")
    write("bad.yaml", "name: x\ndata: [unclosed\n")
    for name, template in {
        "ds-list.json": [{"train_batch_size": "auto"}],
        "ds-nobatch.json": {"zero_optimization": {"stage": 2}},
        "ds-bf16-typo.json": {"bf16": {"enabeld": "auto"}},
        "ds-offload-typo.json": {"zero_optimization": {"stage": 3, "offload_param": {
            "device": "cpu", "pin_memroy": True}}},
        "ds-actckpt-typo.json": {"activation_checkpointing": {"partition_activation": True}},
        "ds-flops-typo.json": {"flops_profiler": {"enabled": False, "profile_stpe": 1}},
        "ds-comms-typo.json": {"comms_logger": {"enabled": False, "verbos": True}},
        "ds-dtypes-typo.json": {"data_types": {"grad_acum_dtype": "fp32"}},
        "ds-tensorboard-typo.json": {"tensorboard": {"enabled": False, "output_pth": "tb"}},
        "ds-fp16-not-object.json": {"fp16": True},
    }.items():
        batch = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
                 "gradient_accumulation_steps": "auto"}
        write(name, json.dumps(template if name in ("ds-list.json", "ds-nobatch.json")
                               else {**batch, **template}))
    write("ds-invalid.json", '{"train_batch_size": "auto",}')
    write("ds-binary.json", bytes(range(256)))
    (inputs / "ds-folder").mkdir()

    one_class = inputs / "one-class.jsonl"
    one_class.write_text("".join(json.dumps({"text": f"good film number {i}", "label": 1}) + "\n"
                                 for i in range(300)))
    write_sentiment_jsonl(inputs / "small-test.jsonl", 10, seed=7)
    write_sentiment_jsonl(inputs / "short-test.jsonl", 50, seed=8)
    copy = inputs / "train-copy.jsonl"
    shutil.copyfile(tiny_data, copy)
    write("a-file", "not a folder\n")

    from transformers import AutoTokenizer

    no_pad = AutoTokenizer.from_pretrained(tiny_models["gpt2-weak"])
    no_pad.eos_token = no_pad.unk_token = no_pad.bos_token = no_pad.pad_token = None
    no_pad.save_pretrained(inputs / "no-pad-tokenizer")

    # issue 19: weights cut short or with a broken header; data whose rows repeat
    for name, how in (("cut-model", "cut"), ("bad-header-model", "header")):
        folder = inputs / name
        shutil.copytree(tiny_models["gpt2-weak"], folder)
        weights = folder / "model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2] if how == "cut" else data[:8] + b"#" + data[9:])
    rows = tiny_data.read_text().splitlines()
    write("test-recased.jsonl", "".join(
        json.dumps({**json.loads(r), "text": json.loads(r)["text"].upper() + " !"}) + "\n"
        for r in rows[::-1]))
    write("listed-twice.jsonl", "\n".join(rows[:40] * 20) + "\n")  # 40 rows, each 20 times
    write("label-two.jsonl", "\n".join(rows[:-1] + [json.dumps({"text": "odd one", "label": 2})]) + "\n")

    return {"root": root, "inputs": inputs, "work": work, "results": results, "base": base,
            "data": tiny_data, "done": finished.dir / "DONE"}


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under root, with a hash of each file's bytes."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


def config_with(battery, edits: dict, name: str = "cfg.yaml") -> str:
    """The base config with sections updated (a dict merges into the section, anything else
    replaces it), written into the working folder's inputs; returns its path."""
    config = json.loads(json.dumps(battery["base"]))
    for section, value in edits.items():
        if isinstance(value, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **value}
        else:
            config[section] = value
    path = battery["root"] / "configs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return str(path)


def sweep_with(battery, edits: dict) -> str:
    """A sweep YAML over the base config's two models and data, with top-level keys replaced."""
    base = battery["base"]
    sweep = {k: base[k] for k in ("name", "results_dir", "seeds", "train", "losses", "tracking")}
    sweep.update({"datasets": [base["data"]], "models": [base["weak"], base["strong"]], **edits})
    path = battery["root"] / "configs" / "sweep.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(sweep))
    return str(path)


# --- the cases ------------------------------------------------------------------------------------
# (id, a function of the fixture giving the argv, words the error line must contain)

def _exp(edits=None, *args):
    return lambda b: ["experiment", "-c", config_with(b, edits or {}), *args]


def _inp(b, name):
    return str(b["inputs"] / name)


def _ds(name):
    return lambda b: ["experiment", "-c", config_with(b, {"train": {"ds_config": _inp(b, name)}})]


def _data(**fields):
    return lambda b: ["experiment", "-c", config_with(b, {"data": {
        k: (_inp(b, v) if k in ("path", "test_path") and not v.startswith("/") else v)
        for k, v in fields.items()}})]


def _loss(params, name="window"):
    return _exp({"losses": ["xent", {"name": name, "params": params}]})


HUGE = "x" * 20000

CASES = [
    # unreadable inputs: the config file
    ("config is a folder", lambda b: ["experiment", "-c", _inp(b, "a-folder")], ["a-folder", "is a folder"]),
    ("config is binary", lambda b: ["experiment", "-c", _inp(b, "binary.yaml")], ["binary.yaml", "not a text file"]),
    ("config is a YAML list", lambda b: ["experiment", "-c", _inp(b, "list.yaml")], ["list.yaml", "not a mapping"]),
    ("config is empty", lambda b: ["experiment", "-c", _inp(b, "empty.yaml")], ["empty.yaml", "is empty"]),
    ("config is not YAML", lambda b: ["experiment", "-c", _inp(b, "bad.yaml")], ["bad.yaml", "not valid YAML"]),
    ("config is missing", lambda b: ["experiment", "-c", _inp(b, "nope.yaml")], ["nope.yaml", "does not exist"]),
    # unreadable inputs: --set
    ("--set value not YAML", _exp({}, "--set", "train.lr=[1"), ["train.lr=[1", "not valid YAML"]),
    ("--set replaces a section", _exp({}, "--set", "train=5"), ["train=5", "whole section train"]),
    ("--set empty key", _exp({}, "--set", "=5"), ["'=5'", "empty part"]),
    ("--set empty key part", _exp({}, "--set", "train..lr=1"), ["train..lr=1", "empty part"]),
    ("--set bad list index", _exp({}, "--set", "losses.5.name=xent"), ["losses.5", "not an index"]),
    ("--set through a value", _exp({}, "--set", "train.lr.x=1"), ["train.lr", "not a section"]),
    ("--set without =", _exp({}, "--set", "train.lr"), ["key.path=value"]),
    ("section is a number", _exp({"train": 5}), ["train", "valid dictionary", "got 5"]),
    ("epochs infinite", _exp({}, "--set", "train.epochs=.inf"), ["train.epochs", "finite"]),
    ("--set huge value", _exp({}, "--set", f"data.dataset={HUGE}"), ["data.dataset", "20000 characters"]),
    # early stopping and the ground-truth curve (w2s_scale/selection.py)
    ("early stopping every 0", _exp({}, "--set", "train.early_stopping={every: 0}"),
     ["train.early_stopping.every", "greater than 0"]),
    ("early stopping holds out most of B", _exp({}, "--set", "train.early_stopping={every: 5, val_fraction: 0.9}"),
     ["train.early_stopping.val_fraction", "0.5"]),
    ("held-out slices together too large", _exp({"train": {"early_stopping": {"every": 5, "val_fraction": 0.3},
                                                          "gt_curve": {"every": 5, "fraction": 0.3}}}),
     ["early_stopping.val_fraction + gt_curve.fraction", "0.6"]),
    ("validation split under 2 examples", _exp({}, "--set", "train.early_stopping={every: 5, val_fraction: 0.01}"),
     ["strong.train.early_stopping.val_fraction", "0.01", "80"]),
    ("gt curve without every", _exp({}, "--set", "train.gt_curve={fraction: 0.1}"),
     ["train.gt_curve.every", "required"]),
    ("gt runs' subset larger than A", _exp({}, "--set", "train.gt_n_train=100"),
     ["weak.train.gt_n_train", "100", "A's 80 documents"]),
    # unreadable inputs: the DeepSpeed template
    ("ds_config is a folder", _ds("ds-folder"), ["train.ds_config", "ds-folder", "is a folder"]),
    ("ds_config is a JSON list", _ds("ds-list.json"), ["ds-list.json", "JSON list"]),
    ("ds_config is not JSON", _ds("ds-invalid.json"), ["ds-invalid.json", "not valid JSON"]),
    ("ds_config is binary", _ds("ds-binary.json"), ["ds-binary.json", "not a text file"]),
    ("ds_config lacks batch keys", _ds("ds-nobatch.json"), ["train_batch_size", "auto"]),
    ("ds_config section not an object", _ds("ds-fp16-not-object.json"), ["fp16", "not a JSON object"]),
    # DeepSpeed keys in every section
    ("ds typo in bf16", _ds("ds-bf16-typo.json"), ["bf16.enabeld", "'enabled'"]),
    ("ds typo in offload_param", _ds("ds-offload-typo.json"), ["offload_param.pin_memroy", "'pin_memory'"]),
    ("ds typo in activation_checkpointing", _ds("ds-actckpt-typo.json"),
     ["activation_checkpointing.partition_activation", "'partition_activations'"]),
    ("ds typo in flops_profiler", _ds("ds-flops-typo.json"), ["profile_stpe", "'profile_step'"]),
    ("ds typo in comms_logger", _ds("ds-comms-typo.json"), ["comms_logger.verbos", "'verbose'"]),
    ("ds typo in data_types", _ds("ds-dtypes-typo.json"), ["grad_acum_dtype", "'grad_accum_dtype'"]),
    ("ds typo in tensorboard", _ds("ds-tensorboard-typo.json"), ["tensorboard.output_pth", "'output_path'"]),
    # values that cannot work
    ("tokenizer without pad or eos", lambda b: ["experiment", "-c", config_with(b, {"weak": {
        "tokenizer": _inp(b, "no-pad-tokenizer")}})], ["weak.tokenizer", "no pad, eos or unk"]),
    ("tokenizer beyond the vocabulary", _exp({"weak": {"init": "random", "config_overrides": {
        "vocab_size": 1000}}}), ["weak.tokenizer", "50257 tokens", "1000"]),
    ("LoRA target not in the model", _exp({"strong": {"lora": {"enabled": True, "target_modules": [
        "c_attn", "q_proj"]}}}), ["strong.lora.target_modules", "q_proj"]),
    ("config_overrides that cannot build", _exp({"weak": {"init": "random", "config_overrides": {
        "n_embd": 30, "n_head": 4}}}), ["weak", "gpt2 cannot be built", "weak.config_overrides"]),
    ("LoRA with an empty target list", _exp({"strong": {"lora": {"enabled": True, "target_modules": []}}}),
     ["strong.lora.target_modules", "empty list"]),
    ("LoRA and linear probe", _exp({"strong": {"linear_probe": True, "lora": {"enabled": True}}}),
     ["strong", "linear_probe"]),
    ("max_length beyond positions", _exp({"data": {"max_length": 512}}), ["data.max_length", "512", "128 positions"]),
    ("fp16 on CPU", _exp({"weak": {"dtype": "fp16"}}), ["weak.dtype", "fp16", "cpu"]),
    ("batch not divisible by --nproc", _exp({}, "--launcher", "torchrun", "--nproc", "3"),
     ["--nproc", "3 ranks", "train.batch_size 8"]),
    ("batch larger than the data", _exp({"train": {"batch_size": 512, "micro_batch_size": 8}}),
     ["train.batch_size", "512"]),
    # values that would give wrong results
    ("absolute name", _exp({"name": "/tmp/elsewhere"}), ["name", "/tmp/elsewhere", "absolute"]),
    ("name escaping results_dir", _exp({"name": "../../outside"}), ["name", "..", "outside results_dir"]),
    ("over-long name", _exp({"name": "n" * 300}), ["name", "300 bytes"]),
    ("over-long model label", _exp({"weak": {"label": "w" * 200}}), ["weak.label", "200 bytes"]),
    ("results_dir is a file", lambda b: ["experiment", "-c", config_with(b, {"results_dir": _inp(b, "a-file")})],
     ["results_dir", "a-file", "is a file"]),
    ("duplicate seeds", _exp({"seeds": [0, 0]}), ["seeds", "[0]", "more than once"]),
    ("negative seed", _exp({"seeds": [0, -1]}), ["seeds", "-1"]),
    ("--nproc 0", _exp({}, "--nproc", "0"), ["--nproc", "got 0"]),
    ("--nproc negative", _exp({}, "--nproc", "-2"), ["--nproc", "got -2"]),
    ("empty loss list", _exp({"losses": []}), ["losses", "empty"]),
    ("duplicate loss", _exp({"losses": ["xent", "xent"]}), ["losses.1", "twice"]),
    ("window radius negative", _loss({"radius": -0.1}), ["losses.1.params.radius", "-0.1", "(0, 0.5)"]),
    ("window radius 0.5", _loss({"radius": 0.5}), ["losses.1.params.radius", "(0, 0.5)"]),
    ("aux_coef above 1", _loss({"aux_coef": 1.5}, "logconf"), ["losses.1.params.aux_coef", "[0, 1]"]),
    ("warmup_frac 1", _loss({"warmup_frac": 1.0}, "logconf"), ["losses.1.params.warmup_frac", "[0, 1)"]),
    ("product alpha negative", _loss({"alpha": -1}, "product"), ["losses.1.params.alpha", "[0, inf)"]),
    ("EleutherAI buffer of 0", _loss({"buffer_size": 0}, "logconf_eleuther"),
     ["losses.1.params.buffer_size", "[1, inf)"]),
    ("loss param word not accepted", _loss({"radius": "wide"}), ["losses.1.params", "radius", "wide"]),
    ("loss param NaN", _loss({"radius": float("nan")}), ["losses.1.params.radius", "nan"]),
    ("test file is the training file", lambda b: ["experiment", "-c", config_with(
        b, {"data": {"test_path": str(b["data"])}})], ["data.test_path", "is the training file"]),
    ("test file is a copy of it", _data(test_path="train-copy.jsonl"),
     ["data.test_path", "byte-identical copy"]),
    ("one class only", _data(path="one-class.jsonl"), ["only label-1", "PGR"]),
    ("test set far below n_test", _data(test_path="small-test.jsonl"), ["data.n_test", "10 documents", "64"]),
    # the other commands read configs the same way
    ("sweep with a folder config", lambda b: ["sweep", "-c", _inp(b, "a-folder"), "--dry-run"], ["is a folder"]),
    ("sweep YAML with a loss out of range", lambda b: ["sweep", "-c", sweep_with(b, {"losses": [
        {"name": "window", "params": {"radius": -1}}]}), "--dry-run"], ["losses.0.params.radius", "-1"]),
    ("sweep YAML with an absolute name", lambda b: ["status", "-c", sweep_with(b, {"name": "/x"})],
     ["name", "absolute"]),
    ("status with duplicate seeds", lambda b: ["status", "-c", config_with(b, {"seeds": [1, 1]})], ["seeds"]),
    ("report of a binary config", lambda b: ["report", "-c", _inp(b, "binary.yaml")], ["not a text file"]),
    ("summary with an absolute name", lambda b: ["summary", "-c", config_with(b, {"name": "/abs"})], ["absolute"]),
    ("run with --nproc 0", lambda b: ["run", "-c", config_with(b, {}), "--run", "gt-gpt2-weak", "--nproc", "0"],
     ["--nproc"]),
    ("plan with 0 GPUs per node", lambda b: ["plan", "-c", config_with(b, {}), "--gpus-per-node", "0"],
     ["--gpus-per-node", "got 0"]),
    ("plan with negative memory", lambda b: ["plan", "-c", config_with(b, {}), "--gpu-mem", "-5"],
     ["--gpu-mem", "-5"]),
    ("plan with 0 nodes", lambda b: ["plan", "-c", config_with(b, {}), "--nodes", "0"], ["--nodes"]),
    # issue 19, part 3: every limit checked before the first step
    ("weights cut short", lambda b: ["experiment", "-c", config_with(b, {"weak": {
        "name": _inp(b, "cut-model")}})], ["weak.name", "model.safetensors", "incomplete"]),
    ("weights header broken", lambda b: ["experiment", "-c", config_with(b, {"weak": {
        "name": _inp(b, "bad-header-model")}})], ["weak.name", "model.safetensors", "header"]),
    ("one model under two labels", lambda b: ["experiment", "-c", config_with(b, {"weak": {
        "name": b["base"]["strong"]["name"], "label": "other"}})], ["strong", "same model as weak"]),
    ("two models in one folder name", lambda b: ["experiment", "-c", config_with(b, {"strong": {
        "label": "gpt2-weak"}})], ["gt-gpt2-weak", "share this folder"]),
    ("weak model larger than its student", lambda b: ["experiment", "-c", config_with(b, {
        "weak": b["base"]["strong"], "strong": b["base"]["weak"]})], ["weak", "would teach the smaller"]),
    ("empty label list", _exp({"labels": []}), ["labels", "empty"]),
    ("label source twice", _exp({"labels": ["weak", "weak"]}), ["labels.1", "twice"]),
    ("probe k beyond B", _exp({"labels": [{"source": "probe", "probe": {"k": 500}}]}),
     ["labels.probe.k", "500", "80"]),
    ("probe filter drops nothing", _exp({"labels": [{"source": "probe", "probe": {
        "mode": "filter", "contamination": 0.001}}]}), ["labels.probe.contamination", "drops none"]),
    ("held-out slices leave less than a batch", _exp({"strong": {"train": {
        "batch_size": 64, "micro_batch_size": 8, "early_stopping": {"every": 5, "val_fraction": 0.5}}}}),
     ["strong.train.batch_size", "64", "held out"]),
    ("gt_n_train below the batch", _exp({"train": {"gt_n_train": 4}}), ["train.batch_size", "gt_n_train"]),
    ("sweep where no model teaches", lambda b: ["sweep", "-c", sweep_with(b, {"models": [
        {**b["base"]["weak"], "role": "strong"}, {**b["base"]["strong"], "role": "strong"}]}), "--dry-run"],
     ["models", "no model teaches"]),
    ("slurm time not a time", lambda b: ["sweep", "-c", sweep_with(b, {"resources": {"time": "4 hours"}}),
                                         "--dry-run"], ["resources.time", "4 hours", "not a Slurm time"]),
    ("slurm partition with a space", lambda b: ["sweep", "-c", sweep_with(b, {"resources": {
        "partition": "gpu a100"}}), "--dry-run"], ["resources.partition", "gpu a100"]),
    ("slurm memory unit", lambda b: ["sweep", "-c", sweep_with(b, {"resources": {"mem": "64GB"}}),
                                     "--dry-run"], ["resources.mem", "64GB"]),
    ("slurm option without a dash", lambda b: ["sweep", "-c", sweep_with(b, {"resources": {
        "sbatch": ["qos=high"]}}), "--dry-run"], ["resources.sbatch", "qos=high"]),
    ("slurm signal after the time limit", lambda b: ["sweep", "-c", sweep_with(b, {"resources": {
        "time": "00:02:00", "signal_before_s": 300}}), "--dry-run"], ["signal_before_s", "300"]),
    ("slurm GPUs negative", lambda b: ["sweep", "-c", sweep_with(b, {"resources": {"gpus_per_node": -1}}),
                                       "--dry-run"], ["resources.gpus_per_node", "-1"]),
    ("dry run MFU 0", lambda b: ["sweep", "-c", sweep_with(b, {}), "--dry-run", "--mfu", "0"], ["--mfu", "got 0"]),
    ("dry run MFU above 1", lambda b: ["sweep", "-c", sweep_with(b, {}), "--dry-run", "--mfu", "35"], ["--mfu", "35"]),
    ("dry run cluster of 0 GPUs", lambda b: ["sweep", "-c", sweep_with(b, {}), "--dry-run", "--cluster-gpus", "0"],
     ["--cluster-gpus", "got 0"]),
    ("dry run cluster hours negative", lambda b: ["sweep", "-c", sweep_with(b, {}), "--dry-run", "--cluster-hours",
                                                  "-1"], ["--cluster-hours", "-1"]),
    # issue 19, part 4: the data's rows
    ("test rows repeat training rows", _data(test_path="test-recased.jsonl"),
     ["data.text", "test rows", "repeat a training row"]),
    ("training rows listed twice", _data(path="listed-twice.jsonl"), ["data.text", "training rows",
                                                                      "repeat another row"]),
    ("label beyond the classes", _data(path="label-two.jsonl"), ["label", "2"]),
    ("a class no row has", _exp({"data": {"num_classes": 3}}), ["data.num_classes", "label 2"]),
]


def _main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as stop:  # argparse's own errors
        return stop.code


def _check_clean(battery, before: dict, code: int, err: str, out: str, needles: list[str], case: str):
    assert code == 2, f"{case}: exit {code}\n{err[-3000:]}"
    errors = [line for line in err.splitlines() if line.startswith("w2s: error:")]
    assert len(errors) == 1, f"{case}: {err[-3000:]}"
    assert "Traceback" not in err + out, f"{case}: {err[-3000:]}"
    assert len(errors[0]) < 700, f"{case}: {len(errors[0])} characters"
    for needle in needles:
        assert needle in errors[0], f"{case}: {errors[0]!r} lacks {needle!r}"
    assert [p for p in battery["root"].rglob("DONE")] == [battery["done"]], case
    assert snapshot(battery["root"]) == before, f"{case}: something on disk changed"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_stops_at_preflight(case, battery, capsys, monkeypatch):
    name, argv_of, needles = case
    monkeypatch.chdir(battery["work"])
    argv = argv_of(battery)  # writes the case's config before the snapshot
    before = snapshot(battery["root"])
    code = _main(argv)
    captured = capsys.readouterr()
    _check_clean(battery, before, code, captured.err, captured.out, needles, name)
    _transcribe(battery, name, argv, captured.err)


def _transcribe(battery, name: str, argv: list[str], err: str) -> None:
    """With W2S_BATTERY_TRANSCRIPT=FILE, append the case's command and its error line to FILE
    (JSON lines, the battery's folder shown as $B): the table of causes in an issue's closing note
    comes from what the battery saw, not from memory."""
    target = os.environ.get("W2S_BATTERY_TRANSCRIPT")
    if not target:
        return
    root = str(battery["root"])
    line = next(l for l in err.splitlines() if l.startswith("w2s: error:"))
    command = " ".join(["w2s", *(a if len(a) < 120 else a[:60] + "..." for a in argv)])
    with open(target, "a") as out:
        out.write(json.dumps({"case": name, "command": command.replace(root, "$B"),
                              "error": line.replace(root, "$B")}) + "\n")


def test_a_small_test_shortfall_is_one_warning(battery, capsys):
    """50 test documents for n_test = 64 (more than half): preflight passes, with one warning."""
    from w2s_scale.preflight import preflight

    raw = json.loads(json.dumps(battery["base"]))
    raw["data"]["test_path"] = _inp(battery, "short-test.jsonl")
    before = snapshot(battery["root"])
    preflight(load_config(raw=raw), 1)
    warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith("w2s: warning:")]
    assert len(warnings) == 1 and "50 of the 64" in warnings[0], warnings
    assert snapshot(battery["root"]) == before


@pytest.mark.parametrize("value,allowed,inside", [
    (0.0, "[0, 1)", True), (1.0, "[0, 1)", False), (1.0, "[0, 1]", True), (0.0, "(0, 0.5)", False),
    (0.49, "(0, 0.5)", True), (1e9, "[0, inf)", True), (-1e-9, "[0, inf)", False),
    (1.0, "{0, 1}", True), (0.5, "{0, 1}", False), (float("nan"), "[0, 1]", False)])
def test_loss_ranges_read_as_intervals(value, allowed, inside):
    from w2s_scale.preflight import in_range

    assert in_range(value, allowed) is inside


def test_every_loss_param_has_a_range():
    """A new loss param without a range would pass preflight with any value."""
    from w2s_scale.losses import LOSSES

    for name, spec in LOSSES.items():
        numeric = {k for k, v in spec.defaults.items() if not isinstance(v, str)}
        assert set(spec.ranges) == numeric, name


def test_the_battery_covers_forty_causes():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", ["config is binary", "fp16 on CPU"])
def test_bad_input_as_a_process(case, battery):
    """The real command in a fresh process: exit status 2 and stderr as a user sees them."""
    name, argv_of, needles = next(c for c in CASES if c[0] == case)
    argv = argv_of(battery)
    before = snapshot(battery["root"])
    proc = run_w2s(argv, timeout=300)
    _check_clean(battery, before, proc.returncode, proc.stderr, proc.stdout, needles, name)


def _ranks_started_by_hand(battery, argv: list[str]):
    """`torchrun --nproc_per_node=2 launch/rank.py ARGV`, as a user or a Slurm node starts ranks:
    no `w2s` parent, so no preflight passed before them."""
    import subprocess
    import sys

    from conftest import REPO
    from w2s_scale.distributed import free_port

    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={free_port()}", str(REPO / "launch" / "rank.py"), *argv],
        cwd=battery["work"], capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != launching.PREFLIGHT_PASSED_ENV})


def test_bad_input_stops_ranks_that_a_launcher_started_itself(battery):
    """`torchrun ... launch/rank.py experiment` (no `w2s` parent, so no preflight of its own):
    every rank runs preflight before any collective; rank 0 prints the one line, and no rank
    reaches a model or leaves a traceback of ours (torchrun reports the failure its own way)."""
    from conftest import REPO

    name, argv_of, needles = next(c for c in CASES if c[0] == "fp16 on CPU")
    argv = argv_of(battery)
    before = snapshot(battery["root"])
    proc = _ranks_started_by_hand(battery, argv)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("w2s: error:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr[-3000:]
    assert all(needle in errors[0] for needle in needles), errors[0]
    assert f'File "{REPO / "w2s_scale"}' not in proc.stderr, proc.stderr[-3000:]
    assert snapshot(battery["root"]) == before


def test_bad_input_stops_w2s_run_ranks_that_a_launcher_started_itself(battery):
    """The same for `launch/rank.py run --run-key KEY`, what a Slurm job's ranks run: each rank
    runs the run's preflight before any collective (before the launch path was shared, `w2s run`
    in launched ranks skipped it and started training the fp16 model on CPU)."""
    from conftest import REPO
    from w2s_scale.loading import load_sweep
    from w2s_scale.sweep import plan_sweep

    _name, argv_of, _needles = next(c for c in CASES if c[0] == "fp16 on CPU")
    config = argv_of(battery)[2]  # experiment -c CONFIG
    weak_gt = next(r for r in plan_sweep(load_sweep(Path(battery["work"]) / config))
                   if r.plan.kind == "gt" and r.plan.model.dtype == "fp16")
    before = snapshot(battery["root"])
    proc = _ranks_started_by_hand(battery, ["run", "-c", config, f"--run-key={weak_gt.key}"])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("w2s: error:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr[-3000:]
    assert all(needle in errors[0] for needle in ("dtype", "fp16", "cpu")), errors[0]
    assert f'File "{REPO / "w2s_scale"}' not in proc.stderr, proc.stderr[-3000:]
    assert snapshot(battery["root"]) == before
