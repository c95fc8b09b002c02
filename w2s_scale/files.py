"""Writing shared files safely: whole or not at all, one writer at a time.

Imports nothing of the package, so every floor can use it (results, the offline data cache, the
model assets cache).
"""
from __future__ import annotations

import contextlib
import errno
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator, Optional, Union


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


class Busy(Exception):
    """Another process holds the lock; the message says who, from the lock file."""


# errors of a filesystem that does not implement locks (Lustre without -o flock, some FUSE mounts)
NO_LOCKS = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK)


def hold_lock(lock_path: Path) -> Optional[IO]:
    """Take an exclusive, non-blocking lock on `lock_path` and write who holds it (pid, host,
    since) into it; the returned file keeps the lock until it is closed or the process ends.
    Raises Busy when another process holds it; returns None where the filesystem has no locks.

    fcntl.flock: on a local disk the kernel drops the lock when its process dies; on NFSv4 it is
    a lease on the server, released when the client's lease lapses (about 90 s after a node dies),
    so a stale lock never outlives its holder for long and needs no cleaning up."""
    import fcntl  # deferred: POSIX only

    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise Busy(holder) from None
    except OSError as err:
        handle.close()
        if err.errno in NO_LOCKS:
            return None
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    return handle
