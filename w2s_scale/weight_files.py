"""Whether a model folder's weight files are whole, checked without loading a tensor.

A safetensors file is an 8-byte header length, a JSON header and the tensors' bytes, whose
offsets the header lists: the file must be exactly as long as the header says (a copy cut short,
or with bytes appended, is not), and the header must be JSON. A sharded checkpoint's index
must name shards that exist. A torch .bin in the zip format must have its zip directory (the
last thing written). Reads the headers and the files' sizes only: milliseconds for any model.
A byte changed inside the tensors' data is not seen (nothing was recorded to compare with).

Imports nothing of the package but errors (floor 0).
"""
from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Optional

from w2s_scale.errors import ModelError

INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
HEADER_LIMIT = 100 * 2**20  # safetensors refuses headers above 100 MB


class WeightsError(ModelError):
    """A model folder's weight file is cut short, not what its name says, or missing."""


def safetensors_problem(path: Path) -> Optional[str]:
    """What is wrong with a safetensors file's framing, or None."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{size} bytes, too short for a safetensors header"
        (n,) = struct.unpack("<Q", head)
        if n > min(HEADER_LIMIT, size - 8):
            return f"its header claims {n:,} bytes but the file has {size:,}"
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            return "its header is not valid JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    ends = [t["data_offsets"][1] for k, t in header.items()
            if k != "__metadata__" and isinstance(t, dict) and "data_offsets" in t]
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        return f"{size:,} bytes, but its header lists tensors up to {expected:,}"
    return None


def zip_problem(path: Path) -> Optional[str]:
    if path.stat().st_size == 0:
        return "empty"
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            if fh.read(2) == b"PK":  # a zip without its directory: written only in part
                return "a torch zip archive without its directory (cut short)"
        return None  # the legacy pickle format: nothing to check cheaply
    try:
        with zipfile.ZipFile(path):
            return None
    except (zipfile.BadZipFile, OSError) as err:
        return f"not a readable torch archive ({err})"


def check_folder(folder: Path, where: str) -> None:
    """Raise WeightsError naming the first incomplete weight file of a local model folder."""
    folder = Path(folder)
    names: set[str] = set()
    for index in INDEXES:
        path = folder / index
        if path.exists():
            try:
                weight_map = json.loads(path.read_text())["weight_map"]
                shards = set(weight_map.values())
            except (ValueError, KeyError, TypeError, AttributeError):
                raise WeightsError(f"{where}.name: {path} is not a readable shard index; copy the "
                                   f"model folder again") from None
            missing = sorted(s for s in shards if not (folder / s).is_file())
            if missing:
                raise WeightsError(f"{where}.name: {folder / missing[0]} is missing ({len(missing)} "
                                   f"of the {len(shards)} shards {index} lists); copy the model "
                                   f"folder again") from None
            names |= shards
    files = sorted({*(folder / n for n in names), *folder.glob("*.safetensors"), *folder.glob("*.bin")})
    for path in files:
        if path.suffix == ".safetensors":
            problem = safetensors_problem(path)
        elif path.suffix == ".bin" and "training_args" not in path.name:
            problem = zip_problem(path)
        else:
            continue
        if problem:
            raise WeightsError(f"{where}.name: {path} is incomplete or damaged ({problem}); copy "
                               f"or download the model again")
