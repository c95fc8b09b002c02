"""Records of what files were when they were written, and the check that they still are.

A record maps each file of a folder (its path inside the folder) to its size, a SHA-256 of its
content and, for jsonl files, its row count. A finished run (its DONE marker), each checkpoint
and the sweep's job book are recorded when written and checked before they are read: a file
missing, of another size or of other content is named in words, and the reader treats what it
read as unfinished.

Cost: SHA-256 reads about 1.7 GB/s on one core (measured on the 2-core test machine; see
docs/running-experiments.md, "What is verified"). Files up to FULL_HASH_BYTES are hashed whole,
so a run's own results (predictions, labels, metrics, activations up to 256 MiB) are checked byte
for byte; larger files (saved weights, big checkpoint shards) by their size and the hash of their
first and last SAMPLE_BYTES, so a check never reads more than 2 MiB of one. A folder that passed
its check is not hashed again by the same process while no file's size, inode or mtime changes.

Imports nothing of the package (floor 0).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

FULL_HASH_BYTES = 256 * 2**20
SAMPLE_BYTES = 2**20
SAMPLED = "ends:"  # prefix of the hash of a large file's first and last SAMPLE_BYTES

# folders that passed their check in this process, with what their files were then
_passed: set[tuple] = set()


def digest(path: Path, size: int) -> str:
    """SHA-256 of the whole file, or, above FULL_HASH_BYTES, of its two ends (marked as such)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= FULL_HASH_BYTES:
            for chunk in iter(lambda: fh.read(4 * 2**20), b""):
                h.update(chunk)
            return h.hexdigest()
        h.update(fh.read(SAMPLE_BYTES))
        fh.seek(size - SAMPLE_BYTES)
        h.update(fh.read(SAMPLE_BYTES))
        return SAMPLED + h.hexdigest()


def count_rows(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def record(folder: Path, skip: Callable[[str], bool] = lambda rel: False) -> dict[str, dict[str, Any]]:
    """{path inside `folder`: {bytes, sha256[, rows]}} of every file under it that `skip` keeps."""
    folder = Path(folder)
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink() or not path.is_file() or skip(rel):
            continue
        size = path.stat().st_size
        entry: dict[str, Any] = {"bytes": size, "sha256": digest(path, size)}
        if rel.endswith(".jsonl") and size <= FULL_HASH_BYTES:
            entry["rows"] = count_rows(path)
        out[rel] = entry
    return out


def check(folder: Path, files: dict[str, dict[str, Any]]) -> Optional[str]:
    """None when every recorded file is as it was recorded; else, in words, what is wrong with
    the first that is not ("weak_labels.jsonl has 812 bytes (10 rows), 1,624 (20 rows) when
    written")."""
    folder = Path(folder)
    if not isinstance(files, dict):
        return "its record of files is not readable"
    stats = []
    for rel, entry in files.items():
        path = folder / rel
        try:
            st = path.stat()
        except OSError:
            return f"{rel} is missing"
        if not path.is_file():
            return f"{rel} is not a file"
        stats.append((rel, st.st_size, st.st_ino, st.st_mtime_ns))
    key = (str(folder.resolve()), json.dumps(files, sort_keys=True), tuple(stats))
    if key in _passed:
        return None
    for rel, size, _ino, _mtime in stats:
        entry = files[rel]
        path = folder / rel
        if size != entry.get("bytes"):
            what = f"{rel} has {size:,} bytes, {entry.get('bytes', 0):,} when written"
            if "rows" in entry and size <= FULL_HASH_BYTES:
                what += f" ({count_rows(path)} rows, {entry['rows']} when written)"
            return what
        if digest(path, size) != entry.get("sha256"):
            return f"{rel} has other content than when written (same size, SHA-256 differs)"
    _passed.add(key)
    return None


def seal(payload: Any) -> str:
    """JSON text of `payload` that carries its own SHA-256: {"sha256": ..., "data": payload}."""
    body = json.dumps(payload, indent=1, sort_keys=True)
    return json.dumps({"sha256": hashlib.sha256(body.encode()).hexdigest(), "data": payload},
                      indent=1, sort_keys=True) + "\n"


def unseal(text: str) -> tuple[Any, Optional[str]]:
    """(payload, None) of a sealed text, or (None, what is wrong). Text written before seals
    (plain JSON without them) is returned as it is, unchecked."""
    try:
        outer = json.loads(text)
    except ValueError as err:
        return None, f"not valid JSON ({err.msg} at line {err.lineno})"
    if not (isinstance(outer, dict) and set(outer) == {"sha256", "data"}):
        return outer, None  # written before seals
    body = json.dumps(outer["data"], indent=1, sort_keys=True)
    if hashlib.sha256(body.encode()).hexdigest() != outer["sha256"]:
        return None, "its content does not match its SHA-256 (edited or damaged after it was written)"
    return outer["data"], None


def text_hash(text: str, length: int = 12) -> str:
    """The short content hash a file named after its content carries (the sweep's snapshots)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def remove_tree(path: Path) -> None:
    """Remove a folder (or file) that is known bad; missing is fine."""
    if Path(path).is_dir() and not Path(path).is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)
