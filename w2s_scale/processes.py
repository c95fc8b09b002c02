"""Process-tree helpers and exit conventions shared by the `w2s` command and the Slurm per-node
wrapper (launch/slurm_node.py). Standard library only: the wrapper starts before torch loads."""
from __future__ import annotations

import contextlib
from pathlib import Path

EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped by a signal after checkpointing; rerun resumes
# launchers report any non-zero rank exit as their own failure (1): rank 0 writes "stopped"
# into the file this variable names, so a checkpointed stop can be told from a crash
STATUS_ENV = "W2S_STATUS_FILE"


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (Linux). The launchers start ranks in process
    groups of their own, so signals for the ranks are sent process by process."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
