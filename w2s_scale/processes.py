"""Process-tree helpers and exit conventions shared by the `w2s` command and the Slurm per-node
wrapper (launch/slurm_node.py). Standard library only: the wrapper starts before torch loads."""
from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import NamedTuple

EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped by a signal after checkpointing; rerun resumes
# launchers report any non-zero rank exit as their own failure (1): rank 0 writes "stopped"
# into the file this variable names, so a checkpointed stop can be told from a crash
STATUS_ENV = "W2S_STATUS_FILE"
EXIT_INTERRUPTED = 130  # 128 + SIGINT: a second Ctrl-C ended the run at once, without a checkpoint
# how often a stop request is sent again to ranks that have not reacted yet: a rank ignores
# SIGUSR1 until its own handler is installed (the launchers start with it ignored), so a request
# that comes while the ranks still start up is repeated rather than lost
RESEND_EVERY_S = 3.0


# The launchers (torchrun, deepspeed) would not pass a stop on (torchrun dies of SIGUSR1, both
# kill their workers on SIGTERM and print a traceback on SIGINT), so whoever receives the stop
# (`w2s`, launch/slurm_node.py) sends every request to the ranks as SIGUSR1, which the launchers
# ignore, and leaves the name of the signal it received in "<status file>.signal": the ranks
# then name the signal the user or Slurm sent, not the one that carried it.
def record_signal(status_file: Path, name: str) -> None:
    tmp = Path(f"{status_file}.signal.tmp")
    tmp.write_text(name)
    tmp.replace(f"{status_file}.signal")


def received_signal(own: str, environ=None) -> str:
    """The stop signal to name: the one recorded by the process that launched this rank, else
    `own` (the one this process received)."""
    import os

    status = (environ or os.environ).get(STATUS_ENV)
    if status:
        with contextlib.suppress(OSError):
            recorded = Path(f"{status}.signal").read_text().strip()
            if recorded.startswith("SIG"):
                return recorded
    return own


@contextlib.contextmanager
def handling(signals, handler):
    """`handler` for each of `signals` inside the block; the previous handlers after it."""
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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


# Each rank also keeps "<status file>.rank<N>" up to date: "<pid> running <timeout s>" while it
# works, then "<pid> done", "<pid> failed <reason>" or "<pid> reported" (a user error the rank
# printed itself). While it runs, a thread of the rank touches the file every few seconds
# (`heartbeat`). The parent watches these while the launcher runs (`watch_ranks`), so that
# when a run fails it can say which rank stopped first and how, in one line, and so that a rank
# that stops responding ends the run within its collective timeout wherever the others wait.
def rank_beacon(rank: int, environ=None) -> Path | None:
    import os

    status = (environ or os.environ).get(STATUS_ENV)
    return Path(f"{status}.rank{rank}") if status else None


def heartbeat(beacon: Path, timeout_s: float):
    """Write "<pid> running <timeout_s>" into `beacon` and touch it from a daemon thread, well
    within `timeout_s`, until the returned event is set. A rank whose beacon stays untouched for
    `timeout_s` is frozen as a whole (stopped, swapped out, its interpreter stuck): every
    thread of a live Python process gets to run within that time."""
    import os
    import threading

    beacon.write_text(f"{os.getpid()} running {timeout_s:g}")
    stop = threading.Event()
    every_s = min(5.0, timeout_s / 10)

    def beat() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(OSError):
                os.utime(beacon)

    threading.Thread(target=beat, daemon=True, name="w2s-heartbeat").start()
    return stop


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class Beacon(NamedTuple):
    pid: int
    state: str    # running, done, failed, reported
    detail: str   # running: the rank's collective timeout (s); failed: why
    age_s: float  # since the rank last wrote or touched it


def _read_beacons(status_file: Path) -> dict[int, Beacon]:
    import time

    beacons = {}
    for path in status_file.parent.glob(status_file.name + ".rank*"):
        with contextlib.suppress(OSError, ValueError):
            age = time.time() - path.stat().st_mtime
            pid, state, *detail = path.read_text().split(" ", 2)
            beacons[int(path.name.rsplit(".rank", 1)[1])] = Beacon(int(pid), state, " ".join(detail), age)
    return beacons


def _kill(pids) -> None:
    import os
    import signal

    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# after a rank died or stopped responding, the launcher and the other ranks get this long to
# end by themselves (print their error, close W&B) before they are killed: the launchers' own
# clean-up waits for ranks that do not answer SIGTERM (ours take it as "stop at the next step")
GRACE_S = 20.0


def watch_ranks(child, status_file: Path, timeout_s: float | None = None,
                poll_s: float = 0.2) -> tuple[int, str | None]:
    """Wait for the launcher `child` (a Popen). Returns its exit code and, when a rank ended
    the run, one line saying which rank and how (see _first_failure). `timeout_s`: the ranks'
    collective timeout, where a rank does not say its own. A run whose rank died or stopped
    responding ends within GRACE_S of that being seen, whatever its other ranks wait for."""
    import subprocess
    import time

    first: str | None = None
    given_up_at = None
    timeouts: dict[int, float] = {}  # each rank's, as it said while running
    while True:
        try:
            code = child.wait(timeout=poll_s)
            break
        except subprocess.TimeoutExpired:  # still running
            pass
        if first is None:
            beacons = _read_beacons(status_file)
            timeouts.update({r: t for r, b in beacons.items()
                             if b.state == "running" and (t := _said_timeout(b)) is not None})
            first, broken = _first_failure(beacons, timeouts, timeout_s)
            given_up_at = time.monotonic() if broken else None
        elif given_up_at is not None and time.monotonic() - given_up_at > GRACE_S:
            _kill([*descendants(child.pid), child.pid])
            given_up_at = None
    for path in status_file.parent.glob(status_file.name + ".rank*"):
        path.unlink(missing_ok=True)
    Path(f"{status_file}.signal").unlink(missing_ok=True)
    return code, first


# what a rank reports when a peer vanished under it: a consequence, not the cause
_PEER_GONE = ("connection closed", "connection reset", "broken pipe", "peer")


def _said_timeout(beacon: Beacon) -> float | None:
    try:
        return float(beacon.detail.split()[0])
    except (ValueError, IndexError):
        return None


def _first_failure(beacons: dict[int, Beacon], timeouts: dict[int, float],
                   timeout_s: float | None) -> tuple[str | None, bool]:
    """The line that names the rank which ended the run, from what the ranks left, or None
    while every rank is fine; and whether the run is broken (a rank died or stopped
    responding: the rest must not be waited for). A rank that stopped responding (its
    heartbeat stale for its collective timeout, or a peer gave up waiting for it in a
    collective) is killed now, so that the run ends rather than waiting for the launcher."""
    running = {r: b for r, b in beacons.items() if b.state == "running"}
    for rank, b in sorted(running.items()):
        limit = _said_timeout(b) or timeouts.get(rank, timeout_s)
        if limit is not None and b.age_s > limit and _alive(b.pid):
            _kill([b.pid])
            return (f"rank {rank} (pid {b.pid}) stopped responding: no sign of life for "
                    f"launch.collective_timeout_s={limit:g} s (stopped, or frozen); the run was "
                    f"stopped"), True
    failed = {r: b for r, b in beacons.items() if b.state == "failed"}
    for rank, b in sorted(failed.items()):
        if "timed out" in b.detail.lower() or "timeout" in b.detail.lower():
            limit = timeouts.get(rank, timeout_s)
            waited = f"launch.collective_timeout_s={limit:g} s" if limit else "its collective timeout"
            silent = sorted(running.items())
            if silent:
                _kill(beacon.pid for _, beacon in silent)
                names = ", ".join(f"rank {r} (pid {beacon.pid})" for r, beacon in silent)
                return (f"{names} stopped responding: rank {rank} waited {waited} in a "
                        f"collective and gave up; the run was stopped"), True
            return (f"rank {rank} (pid {b.pid}) waited {waited} in a collective and gave up; no "
                    f"rank on this node stopped responding, so one on another node did (that "
                    f"node's log names it)"), True
    for rank, b in sorted(running.items()):
        if not _alive(b.pid):
            return (f"rank {rank} (pid {b.pid}) died before finishing (killed, or crashed "
                    f"without a Python error); the launcher stopped the other ranks"), True
    for rank, b in sorted(failed.items()):
        if not any(word in b.detail.lower() for word in _PEER_GONE):
            return f"rank {rank} failed: {b.detail}", False
    return None, False
