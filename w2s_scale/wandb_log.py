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


# --- one offline run per stage -------------------------------------------------------------------
# W&B cannot resume an offline run: each attempt of a stage (stopped, killed, resumed) writes a
# folder of its own under the same id, and `wandb sync` does not merge them (wandb issues #2423,
# #3841, #5865): one replaces the other's history. So the attempts are merged here into the
# newest one's folder, in W&B's own record format: the first's header and run record, every
# attempt's other records in order, numbered anew, and only the last attempt's exit record. The
# merged attempts' folders move to wandb/.merged-attempts/, out of `offline-run-*`'s reach.
MERGED_DIR = ".merged-attempts"
MERGED_NOTE = "w2s-merged-attempts"  # in the merged folder: the attempts it holds
_ONCE = ("header", "run")             # kept once, from the first attempt that has one
_AT_END = ("exit", "final", "footer")  # kept from the last attempt only


def _fragments(payload: bytes, pos: int):
    """(padding, kind, fragment) pieces of one record written at file offset `pos`: a record
    that does not fit in its 32 KiB block is cut into first / middle / last fragments."""
    first = True
    while True:
        left = BLOCK - pos % BLOCK
        padding = b""
        if left < HEADER:  # too short for a fragment header: padded, the next block starts
            padding, pos, left = b"\0" * left, pos + left, BLOCK
        room = left - HEADER
        piece, payload = payload[:room], payload[room:]
        kind = (1 if first else 4) if not payload else (2 if first else 3)
        yield padding, kind, piece
        pos += len(padding) + HEADER + len(piece)
        first = False
        if not payload:
            return


def write_records(path: Path, header: bytes, records) -> None:
    """A .wandb file of `records` (wandb's protobuf Records) behind the file `header` (its first
    7 bytes, as wandb wrote them), each fragment with its CRC-32 (seeded with the kind byte)."""
    import zlib

    out = bytearray(header[:HEADER])
    for record in records:
        for padding, kind, piece in _fragments(record.SerializeToString(), len(out)):
            out += padding
            crc = zlib.crc32(piece, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF
            out += crc.to_bytes(4, "little") + len(piece).to_bytes(2, "little") + bytes([kind])
            out += piece
    Path(path).write_bytes(bytes(out))


def merge_offline_attempts(wandb_dir: Path, run_id: str) -> list[str]:
    """Merge the offline attempts of W&B run `run_id` under `wandb_dir`/wandb into the newest
    one's folder (see above); returns the folders merged into it (none: one attempt or none).
    Rank 0, after the attempt's W&B run finished."""
    import os
    import shutil

    root = Path(wandb_dir) / "wandb"
    attempts = sorted(root.glob(f"offline-run-*-{run_id}"))  # named by start time: in order
    if len(attempts) < 2:
        return []
    # into the newest attempt's folder: wandb's `latest-run`, `debug.log` and `debug-internal.log`
    # links point into it, and must not be left dangling
    target, log_name = attempts[-1], f"run-{run_id}.wandb"
    header = (attempts[0] / log_name).read_bytes()[:HEADER]
    merged, last_step, seen = [], 0, set()
    for i, folder in enumerate(attempts):
        log = folder / log_name
        for record in (wandb_records(log) if log.exists() else []):
            kind = record.WhichOneof("record_type")
            # the first header and run record (an attempt killed at once may have written none)
            if (kind in _ONCE and kind in seen) or (i < len(attempts) - 1 and kind in _AT_END):
                continue
            seen.add(kind)
            if kind == "history":
                # a step an earlier attempt holds already (a killed attempt's W&B service may
                # write its last step after the next attempt read where it stopped): W&B keeps
                # the first, and a step that goes back is dropped when synced
                if record.history.step.num <= last_step:
                    continue
                last_step = record.history.step.num
            merged.append(record)
    for num, record in enumerate(merged, start=1):
        record.num = num
    tmp = target / f".{log_name}.merging"
    write_records(tmp, header, merged)
    for folder in reversed(attempts[:-1]):  # the files their records name; newer ones kept
        files = folder / "files"
        for src in sorted(files.rglob("*")) if files.is_dir() else []:
            dst = target / "files" / src.relative_to(files)
            if src.is_dir():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.name == "output.log":  # the console output of every attempt, in order
                dst.write_bytes(src.read_bytes() + (dst.read_bytes() if dst.exists() else b""))
            elif not dst.exists():
                shutil.copyfile(src, dst)
    os.replace(tmp, target / log_name)
    note = target / MERGED_NOTE
    names = [folder.name for folder in attempts[:-1]]
    held = [line for folder in attempts for line in
            ((folder / MERGED_NOTE).read_text().split() if (folder / MERGED_NOTE).exists() else [])]
    note.write_text("\n".join(held + names) + "\n")
    (root / MERGED_DIR).mkdir(exist_ok=True)
    for folder in attempts[:-1]:
        os.replace(folder, root / MERGED_DIR / folder.name)
    return names
