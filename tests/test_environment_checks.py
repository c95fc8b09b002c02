"""Files that are not what their name says, folders a run must write that it cannot, devices
that do not exist: one line each, naming the file, folder or variable, before any rank starts."""
from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from conftest import run_w2s, tiny_config, write_config
from w2s_scale.data.readers import read_file
from w2s_scale.data.values import DataError
from w2s_scale.environment import EnvironmentProblem, check_devices

ROWS = "".join(json.dumps({"text": f"caf\u00e9 {i}", "label": i % 2}, ensure_ascii=False) + "\n"
               for i in range(50))
CSV = "text,label\n" + "".join(f"caf\u00e9 {i},{i % 2}\n" for i in range(50))


def _zip(text: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("data.jsonl", text)
    return out.getvalue()


def _parquet() -> bytes:
    import pandas as pd

    out = io.BytesIO()
    pd.DataFrame({"text": ["a", "b"], "label": [0, 1]}).to_parquet(out)
    return out.getvalue()


# name, bytes, what the line must say
CASES = {
    "gzip.jsonl": (lambda: gzip.compress(ROWS.encode()), "gzip-compressed"),
    "bzip2.csv": (lambda: bz2.compress(CSV.encode()), "bzip2-compressed"),
    "zipped.jsonl": (lambda: _zip(ROWS), "a zip archive"),
    "latin1.jsonl": (lambda: ROWS.encode("latin-1"), "not UTF-8 text (byte 0xe9 at line 1"),
    "latin1.csv": (lambda: CSV.encode("latin-1"), "not UTF-8 text (byte 0xe9 at line 2"),
    # past the first 1 MiB chunk: the whole file is checked, and the line is counted across chunks
    "late-cp1252.jsonl": (lambda: ROWS.replace("\u00e9", "e").encode() * 30000
                          + "caf\u00e9\n".encode("cp1252"), "at line 1500001"),
    "text.parquet": (lambda: ROWS.encode(), "not a parquet file (no PAR1 magic bytes; it starts like JSON"),
    "parquet.jsonl": (_parquet, "is a parquet file, not a plain jsonl file; name it .parquet"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_file_that_is_not_what_its_name_says_is_named_in_one_line(name, tmp_path):
    make, says = CASES[name]
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(DataError) as err:
        read_file(path, "data.path")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"data.path: {path} ") and says in message, message


def _experiment(tmp_path, tiny_models, tiny_data, env: dict, data_path: Path | None = None):
    config = tiny_config(tmp_path / "results", tiny_models, data_path or tiny_data, losses=["xent"])
    cfg = write_config(tmp_path / "cfg.yaml", config)
    return run_w2s(["experiment", "-c", str(cfg)], timeout=300, env=env)


@pytest.mark.parametrize("case", ["HF_HOME", "TORCH_EXTENSIONS_DIR", "CUDA_VISIBLE_DEVICES", "data file"])
def test_an_unusable_folder_device_or_file_stops_the_command_with_one_line(case, tiny_models,
                                                                          tiny_data, tmp_path):
    blocker = tmp_path / "a-file"  # a path under a file: no folder can be made there, even by root
    blocker.write_text("")
    env, data_path = {}, None
    if case == "HF_HOME":
        env = {"HF_HOME": str(blocker / "hf"), "HF_HUB_OFFLINE": "0"}
    elif case == "TORCH_EXTENSIONS_DIR":
        env = {"TORCH_EXTENSIONS_DIR": str(blocker / "ext")}
    elif case == "CUDA_VISIBLE_DEVICES":
        env = {"CUDA_VISIBLE_DEVICES": "gpu0"}
    else:
        data_path = tmp_path / "train.jsonl"
        data_path.write_bytes(gzip.compress(tiny_data.read_bytes()))
    proc = _experiment(tmp_path, tiny_models, tiny_data, env, data_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("w2s: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    named = {"HF_HOME": "HF_HOME: ", "TORCH_EXTENSIONS_DIR": "TORCH_EXTENSIONS_DIR: ",
             "CUDA_VISIBLE_DEVICES": "CUDA_VISIBLE_DEVICES: 'gpu0'", "data file": str(data_path)}[case]
    assert named in errors[0], errors
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("DONE"))


@pytest.mark.parametrize("cuda_build, driver, count, nproc, fails", [
    (True, True, 0, 1, True),     # CUDA_VISIBLE_DEVICES=7 on a 1-GPU machine: no GPU left
    (True, True, 1, 2, True),     # 2 ranks, 1 device usable
    (True, True, 2, 2, False),
    (False, False, 0, 2, False),  # a CPU machine: the variable is not used
])
def test_devices_named_in_cuda_visible_devices_must_exist(cuda_build, driver, count, nproc, fails,
                                                          monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,1")
    if fails:
        with pytest.raises(EnvironmentProblem, match=r"CUDA_VISIBLE_DEVICES: '7,1' gives"):
            check_devices(nproc, cuda_build, driver, count)
    else:
        check_devices(nproc, cuda_build, driver, count)
