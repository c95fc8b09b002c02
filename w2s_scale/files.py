"""Writing shared files safely: whole or not at all, one writer at a time.

Imports nothing of the package, so every floor can use it (results, the offline data cache, the
model assets cache).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union


def atomic_write(path: Path, data: Union[str, bytes]) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never a part:
    a private temporary file beside it (so two writers never share one), then one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; shared results and caches should be readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive lock on `lock_path` (created if missing) held for the block: ranks and
    parallel runs that would build the same thing wait for the first, then reuse what it built.
    Where fcntl is missing (not POSIX) there is no lock; atomic writes alone keep files whole."""
    try:
        import fcntl  # deferred: POSIX only
    except ImportError:
        yield
        return
    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
