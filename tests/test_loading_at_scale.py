"""Loading at scale: under ZeRO-3 a model is partitioned while it loads, so no rank ever holds the
whole model. Measured, not assumed: a ~107M-parameter random Llama (428 MB in fp32) saved to a
folder is loaded the way every run loads it (`build_classifier` -> `from_pretrained` under
`HfDeepSpeedConfig`) by 1 rank and by 2 ranks; each rank reports the parameter elements it holds
(the sizes of its ZeRO-3 partitions, `ds_tensor`) and its peak memory during the load.

Peak memory is the process's anonymous resident memory (RssAnon, sampled every 0.5 ms): what the
process allocated itself. With glibc's default thresholds freed heap memory can stay resident, so
the ranks run with MALLOC_MMAP_THRESHOLD_ low enough that every tensor is its own mapping and is
returned on free. Rank 0 also reads the checkpoint file through a memory map (transformers gives
the other ranks meta tensors); those page-cache pages are shared and reclaimable and show in its
VmHWM (reported as rss_peak_delta_mb), not in its anonymous memory."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

HELPER = REPO / "tests" / "helpers" / "zero3_load_memory.py"
LLAMA_100M = dict(vocab_size=8192, hidden_size=768, intermediate_size=2048, num_hidden_layers=16,
                  num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=256)


@pytest.fixture(scope="module")
def llama_100m(tmp_path_factory):
    import torch
    from transformers import AutoModel, LlamaConfig

    folder = tmp_path_factory.mktemp("llama-100m")
    torch.manual_seed(0)
    AutoModel.from_config(LlamaConfig(**LLAMA_100M)).save_pretrained(folder)
    return folder


def measure(model_dir, out, nproc: int, port: int) -> list[dict]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
         "--master_addr", "127.0.0.1", "--master_port", str(port), str(HELPER), str(model_dir),
         str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def test_zero3_partitions_while_loading_two_ranks_hold_half_each(llama_100m, tmp_path):
    one = measure(llama_100m, tmp_path / "one.json", 1, 29631)
    two = measure(llama_100m, tmp_path / "two.json", 2, 29632)
    print(json.dumps({"1 rank": one, "2 ranks": two}, indent=1))  # shown with pytest -s

    full = one[0]["full_elements"]
    assert full > 100_000_000
    full_mb = full * 4 / 2**20
    (solo,) = one
    assert solo["partitioned"] and solo["local_elements"] == full
    assert solo["anon_peak_delta_mb"] > 0.9 * full_mb  # the measurement does see the model
    for rank in two:
        assert rank["partitioned"] and rank["full_elements"] == full
        # each rank holds its half (partitions are padded to a multiple of the world size)
        assert rank["local_elements"] == pytest.approx(full / 2, rel=0.001)
        assert rank["param_data_elements"] == 0  # nothing left gathered after loading
        # no rank ever held the whole model: its peak stays well under the model's size and
        # under what one rank alone needs
        assert rank["anon_peak_delta_mb"] < 0.7 * full_mb
        assert rank["anon_peak_delta_mb"] < 0.7 * solo["anon_peak_delta_mb"]
        assert rank["anon_after_delta_mb"] == pytest.approx(solo["anon_after_delta_mb"] / 2, rel=0.15)
    assert sum(r["local_elements"] for r in two) >= full
    # rank 1 maps no checkpoint file, so its kernel-tracked peak (exact, not sampled) agrees
    assert two[1]["rss_peak_delta_mb"] < 0.7 * full_mb
