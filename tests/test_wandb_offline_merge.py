"""W&B offline gives one complete run per stage. W&B cannot resume an offline run: each attempt of
a stage (stopped, killed, resumed) writes an `offline-run-*` folder of its own under the same id,
and `wandb sync` does not merge them. The tracker merges them into one folder, in W&B's own
record format, and never reopens a finished offline run (PGR). Read back with wandb's protobuf
Records, fragment by fragment with the CRC-32 that wandb-core checks when it syncs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from conftest import REPO
from w2s_scale.wandb_log import BLOCK, HEADER, MERGED_DIR, wandb_records, write_records

_ATTEMPT = """
import sys, time
from pathlib import Path
from w2s_scale.tracking import Tracker
from w2s_scale.config import TrackingConfig
run_dir, first, last, how = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tracker = Tracker(run_dir / "log.jsonl", TrackingConfig(wandb="offline", project="t", progress=False),
                  run_name="gt-x", group="g")
if first > 1:
    tracker.log({"event": "resumed", "step": first - 1})
for step in range(first, last + 1):
    tracker.log({"event": "train", "step": step, "loss": 1.0 / step})
if how == "killed":  # killed once W&B has written its steps (a step's row is written when the
    # next one comes: the last is lost to the kill): no finish, no exit record
    from w2s_scale.wandb_log import last_history_step
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    while last_history_step(run_dir, run_id) < last - 1:
        time.sleep(0.2)
    print("ready", flush=True)
    time.sleep(600)
if how == "done":
    tracker.summary({"accuracy": 0.75})
else:
    tracker.log({"event": "stopped", "step": last, "signal": "SIGUSR1"})
tracker.close()
"""


def _attempt(run_dir: Path, first: int, last: int, how: str) -> str:
    cmd = [sys.executable, "-c", _ATTEMPT, str(run_dir), str(first), str(last), how]
    env = {**os.environ, "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}
    env.pop("WANDB_MODE", None)
    if how != "killed":
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    return ""


def _checked_fragments(path: Path) -> int:
    """Every fragment's CRC-32 as wandb-core checks it; the number of fragments."""
    data, pos, count = path.read_bytes(), HEADER, 0
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:
            pos += BLOCK - pos % BLOCK
            continue
        crc = int.from_bytes(data[pos:pos + 4], "little")
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        piece = data[pos + HEADER:pos + HEADER + length]
        assert crc == zlib.crc32(piece, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF, (path, pos)
        pos += HEADER + length
        count += 1
    assert pos == len(data), "the file ends mid-fragment"
    return count


def _read(folder: Path, run_id: str) -> dict:
    kinds, steps, summary = [], [], {}
    nums = []
    for record in wandb_records(folder / f"run-{run_id}.wandb"):
        kind = record.WhichOneof("record_type")
        kinds.append(kind)
        nums.append(record.num)
        if kind == "run":
            assert record.run.run_id == run_id
        elif kind == "history":
            steps.append(record.history.step.num)
        elif kind == "summary":
            summary.update({"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                            for i in record.summary.update})
    return {"kinds": kinds, "steps": steps, "summary": summary, "nums": nums}


def test_a_stopped_killed_and_resumed_stage_is_one_offline_run(tmp_path):
    run_dir = tmp_path / "run"
    _attempt(run_dir, 1, 4, "stopped")         # a preemption warning: checkpoint at step 4
    _attempt(run_dir, 5, 7, "killed")          # resumed, killed after step 7 (checkpoint at 4)
    out = _attempt(run_dir, 5, 10, "done")     # resumed from step 4 again, to the end
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    (folder,) = (run_dir / "wandb").glob("offline-run-*")  # one folder for `wandb sync`
    assert f"3 attempts of run {run_id} merged into one folder" in out
    assert len(list((run_dir / "wandb" / MERGED_DIR).glob(f"offline-run-*-{run_id}"))) == 2
    # wandb's own links (latest-run, debug.log, debug-internal.log) still lead somewhere
    links = [p for p in (run_dir / "wandb").iterdir() if p.is_symlink()]
    assert links and all(link.exists() for link in links), links
    assert _checked_fragments(folder / f"run-{run_id}.wandb") > 20
    run = _read(folder, run_id)
    assert run["kinds"][0] == "header" and run["kinds"].count("header") == 1
    assert run["kinds"].count("run") == 1 and run["kinds"][-1] == "exit"
    assert run["kinds"].count("exit") == 1
    assert run["nums"] == list(range(1, len(run["nums"]) + 1))
    assert run["steps"] == list(range(1, 11))  # every step once, in order: the whole history
    assert run["summary"]["accuracy"] == 0.75 and run["summary"]["stopped/step"] == 4


def test_a_finished_offline_run_is_not_reopened_for_its_pgr(tmp_path):
    from w2s_scale.config import TrackingConfig
    from w2s_scale.tracking import update_summary

    run_dir = tmp_path / "run"
    _attempt(run_dir, 1, 3, "done")
    before = sorted(p.name for p in (run_dir / "wandb").iterdir())
    update_summary(TrackingConfig(wandb="offline", project="t"),
                   (run_dir / "wandb_run_id").read_text().strip(), {"pgr": 0.5}, run_dir)
    assert sorted(p.name for p in (run_dir / "wandb").iterdir()) == before
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1


@pytest.mark.parametrize("size", [10, BLOCK - 2 * HEADER - 3, BLOCK, 3 * BLOCK + 11])
def test_records_of_any_size_are_written_in_wandbs_block_format(size, tmp_path):
    """Records cut across 32 KiB blocks (first / middle / last fragments), and block tails too
    short for a header, padded: read back the same."""
    from wandb.proto import wandb_internal_pb2

    records = []
    for i in range(3):
        record = wandb_internal_pb2.Record(num=i + 1)
        record.output_raw.line = "x" * size
        records.append(record)
    path = tmp_path / "run-x.wandb"
    write_records(path, b":W&B\xe1\xbe\x00", records)
    _checked_fragments(path)
    assert [r.output_raw.line for r in wandb_records(path)] == ["x" * size] * 3
