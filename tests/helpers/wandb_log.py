"""Reading W&B's offline run files (`run-<id>.wandb`) with wandb's own protobuf messages:
wandb 0.31 ships no Python reader for them (its sync is in wandb-core)."""
from pathlib import Path


def wandb_records(path: Path):
    """The records of a .wandb file (W&B's transaction log: a 7-byte header, then 32 KiB blocks
    of fragments each with a 7-byte header: checksum, length, kind 1 full / 2 first / 3 middle /
    4 last), parsed as wandb's own protobuf Record."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if pos + 7 + length > len(data):  # cut off: its writer was killed mid-record
            return
        fragment = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        pending = fragment if kind in (1, 2) else pending + fragment
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""
