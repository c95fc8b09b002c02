"""Reading W&B's local transaction logs (`run-<id>.wandb`, written beside every run, offline or
online) with wandb's own protobuf messages: wandb 0.31 ships no Python reader for them (its
sync is in wandb-core)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

BLOCK = 32768  # the log's block size; a block's tail too short for a fragment header is padding
HEADER = 7     # the file header (":W&B" ...), and each fragment's: checksum, length, kind


def wandb_records(path: Path) -> Iterator:
    """The records of a .wandb file (a 7-byte header, then 32 KiB blocks of fragments, each
    with a 7-byte header: checksum, length, kind 1 full / 2 first / 3 middle / 4 last), parsed
    as wandb's own protobuf Record. A log cut short (its process killed) ends at its last whole
    record; a file that is not a W&B log is a ValueError."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        fragment = data[pos + HEADER:pos + HEADER + length]
        if len(fragment) < length:  # the write the kill interrupted
            return
        pos += HEADER + length
        if kind == 0:
            continue
        pending = fragment if kind in (1, 2) else pending + fragment
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(pending)
            except DecodeError:
                return
            yield record
            pending = b""


def last_history_step(wandb_dir: Path, run_id: str) -> int:
    """The last history step that the attempts of W&B run `run_id` under `wandb_dir` wrote to
    their local logs (`wandb/<offline-run|run>-<time>-<id>/run-<id>.wandb`); 0 if none."""
    last = 0
    for path in Path(wandb_dir).glob(f"wandb/*-{run_id}/run-{run_id}.wandb"):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") == "history":
                last = max(last, record.history.step.num)
    return last
