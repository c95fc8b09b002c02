"""Bad input: a one-line error naming the field and the fix, a non-zero exit, and no run
folder marked complete."""
import json
from pathlib import Path

import pytest

from conftest import run_w2s, tiny_config, write_config


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _cases(tmp: Path, models: dict, data: Path):
    """(name, config edits, extra CLI args, words the error must contain)"""
    typo_ds = _write(tmp / "typo.json", json.dumps(
        {"zero_optimization": {"stage": 3, "stage3_prefetch_bucket_sise": 1000}}))
    return [
        ("unknown dataset", {"data": {"dataset": "imdbb", "path": str(data)}}, [], ["data.dataset", "imdbb"]),
        ("unknown model", {"strong": {"name": str(tmp / "no-such-model")}}, [], ["model.name", "no-such-model"]),
        ("unknown loss", {"losses": ["xent", "confidence"]}, [], ["losses.1.name", "confidence"]),
        ("malformed data file", {"data": {"dataset": "jsonl", "path": _write(
            tmp / "bad.jsonl", '{"text": "ok", "label": 1}\n{"text": "broken"\n')}}, [], ["line 2"]),
        ("empty data file", {"data": {"dataset": "jsonl", "path": _write(tmp / "empty.jsonl", "")}},
         [], ["empty"]),
        ("label outside 0/1", {"data": {"dataset": "jsonl", "path": _write(
            tmp / "label.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n')}}, [], ["label", "2"]),
        ("missing column", {"data": {"dataset": "jsonl", "path": str(data), "text_column": "body"}},
         [], ["body"]),
        ("misspelt DeepSpeed key", {"train": {"ds_config": typo_ds, "batch_size": 8,
                                              "micro_batch_size": 4}}, [],
         ["stage3_prefetch_bucket_sise", "stage3_prefetch_bucket_size"]),
        ("batch not divisible by ranks", {"train": {"batch_size": 8, "micro_batch_size": 4}},
         ["--launcher", "torchrun", "--nproc", "3"], ["train.batch_size", "3 ranks"]),
        ("unknown config key", {"trian": {"lr": 1}}, [], ["trian", "unknown key"]),
        ("bad value type", {"train": {"lr": "fast"}}, [], ["train.lr"]),
        ("bad override", {}, ["--set", "train.epochs"], ["key.path=value"]),
        ("batch larger than the data", {"train": {"batch_size": 512, "micro_batch_size": 8}},
         [], ["train.batch_size", "512"]),
        ("every text over max_length", {"data": {"dataset": "jsonl", "path": str(data),
                                                 "max_length": 2, "n_train": 160, "n_test": 64}},
         [], ["data.max_length"]),
        ("config file missing", None, [], ["does not exist"]),
    ]


CASE_NAMES = ["unknown dataset", "unknown model", "unknown loss", "malformed data file",
              "empty data file", "label outside 0/1", "missing column", "misspelt DeepSpeed key",
              "batch not divisible by ranks", "unknown config key", "bad value type", "bad override",
              "batch larger than the data", "every text over max_length", "config file missing"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_fails_cleanly(case, tiny_models, tiny_data, tmp_path):
    name, edits, args, needles = next(c for c in _cases(tmp_path, tiny_models, tiny_data) if c[0] == case)
    results = tmp_path / "results"
    if edits is None:
        cfg = tmp_path / "missing.yaml"
    else:
        config = tiny_config(results, tiny_models, tiny_data)
        for section, value in edits.items():
            if isinstance(value, dict) and isinstance(config.get(section), dict):
                config[section] = {**config[section], **value}
            else:
                config[section] = value
        cfg = write_config(tmp_path / "cfg.yaml", config)
    proc = run_w2s(["experiment", "-c", str(cfg), *args], timeout=300)
    assert proc.returncode != 0, f"{name}: exited 0"
    errors = [l for l in proc.stderr.splitlines() if l.startswith("w2s: error:")]
    assert len(errors) == 1, f"{name}: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], f"{name}: {errors[0]!r} lacks {needle!r}"
    assert not list(results.rglob("DONE")) if results.exists() else True
