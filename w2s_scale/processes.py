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


# Each rank also keeps "<status file>.rank<N>" up to date: "<pid> running" while it works, then
# "<pid> done" or "<pid> failed <reason>". The parent watches these while the launcher runs, so
# that when a run fails it can say which rank stopped first and how, in one line.
def rank_beacon(rank: int, environ=None) -> Path | None:
    import os

    status = (environ or os.environ).get(STATUS_ENV)
    return Path(f"{status}.rank{rank}") if status else None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _read_beacons(status_file: Path) -> dict[int, tuple[int, str, str]]:
    beacons = {}
    for path in status_file.parent.glob(status_file.name + ".rank*"):
        with contextlib.suppress(OSError, ValueError):
            pid, state, *reason = path.read_text().split(" ", 2)
            beacons[int(path.name.rsplit(".rank", 1)[1])] = (int(pid), state, " ".join(reason))
    return beacons


def watch_ranks(child, status_file: Path, timeout_s: float, poll_s: float = 0.2) -> tuple[int, str | None]:
    """Wait for the launcher `child` (a Popen). Returns its exit code and, when a rank ended
    the run, one line saying which rank and how (see _first_failure)."""
    import subprocess

    first: str | None = None
    while True:
        try:
            code = child.wait(timeout=poll_s)
            break
        except subprocess.TimeoutExpired:  # still running
            pass
        if first is not None:
            continue
        first = _first_failure(_read_beacons(status_file), timeout_s)
    for path in status_file.parent.glob(status_file.name + ".rank*"):
        path.unlink(missing_ok=True)
    return code, first


# what a rank reports when a peer vanished under it: a consequence, not the cause
_PEER_GONE = ("connection closed", "connection reset", "broken pipe", "peer")


def _first_failure(beacons: dict[int, tuple[int, str, str]], timeout_s: float) -> str | None:
    """The line that names the rank which ended the run, from what the ranks left, or None
    while every rank is fine. A rank that gave up in a collective (timeout) names the ranks
    still "running": those stopped responding, and are killed now, so that the run ends
    rather than waiting for the launcher to notice."""
    import os
    import signal

    failed = {r: reason for r, (_, state, reason) in beacons.items() if state == "failed"}
    for rank, reason in sorted(failed.items()):
        if "timed out" in reason.lower() or "timeout" in reason.lower():
            silent = [(r, p) for r, (p, state, _) in sorted(beacons.items()) if state == "running"]
            if silent:
                for _, pid in silent:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                names = ", ".join(f"rank {r} (pid {p})" for r, p in silent)
                return (f"{names} stopped responding: rank {rank} waited "
                        f"launch.collective_timeout_s={timeout_s:g} s in a collective and gave up; "
                        f"the run was stopped")
    for rank, (pid, state, _) in sorted(beacons.items()):
        if state == "running" and not _alive(pid):
            return (f"rank {rank} (pid {pid}) died before finishing (killed, or crashed without "
                    f"a Python error); the launcher stopped the other ranks")
    for rank, reason in sorted(failed.items()):
        if not any(word in reason.lower() for word in _PEER_GONE):
            return f"rank {rank} failed: {reason}"
    return None
