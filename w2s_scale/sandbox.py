"""A process that cannot see some folders: Linux user, mount and PID namespaces, stdlib only.

    python -m w2s_scale.sandbox SPEC_JSON

SPEC: {"hide": [{"path", "dev"}], "keep": [path], "cwd": path, "argv": [...], "env": {...},
"report": path}.
The process runs `argv` with `env` in a view of the filesystem where each hidden folder is an
empty, read-only tmpfs (its files are not there: opening one fails with ENOENT), except the
`keep` folders, which are bound back at their own paths even when they lie inside a hidden one
(the method's bundle and output folders inside its run folder).

Why it holds by construction, not by convention:
- the hiding mounts are made in a mount namespace of their own, then a second user namespace is
  entered: the kernel locks mounts inherited into a less privileged namespace (MNT_LOCKED), so
  the process cannot unmount or move a tmpfs to reveal what lies beneath, although it is root
  in its namespace;
- a PID namespace with its own /proc: /proc/PID/root and /proc/PID/fd of the processes outside
  (the framework's, which see everything) do not exist in it;
- the working folder is entered again by path after the mounts (an inherited working folder
  inside a hidden one would still reach its files), and no file descriptor is passed on.

Only the standard library is imported before the namespaces are made: unshare(CLONE_NEWUSER)
refuses a process with threads, and numpy or torch would start some. The first process forks
the one that becomes PID 1 of the new namespace, forwards SIGINT, SIGTERM and SIGUSR1 to it (a
stop request reaches the method, which checkpoints) and exits with its status.

Where the namespaces cannot be made (not Linux, user namespaces disabled, a container that
refuses a new /proc), the process exits with SETUP_FAILED after writing one line, the reason,
into the `report` file (stderr without one, after PREFIX); the caller refuses the isolated mode
then, and never runs the method without it. Either process ends when the one above it does
(PR_SET_PDEATHSIG): the first asks the method to stop, PID 1 is killed with its namespace.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from typing import Any, NoReturn

SETUP_FAILED = 97           # exit status: the sandbox could not be made (reason on stderr)
PREFIX = "w2s-sandbox: "    # how that reason's line starts

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
HIDDEN_TMPFS = "mode=0555,size=64k"  # room for the folders that lead to the kept ones


class SandboxError(Exception):
    """A namespace or mount the sandbox needs was refused."""


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _call(result: int, what: str) -> None:
    if result != 0:
        raise SandboxError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _unshare(flags: int, what: str) -> None:
    _call(_libc().unshare(ctypes.c_int(flags)), f"unshare({what})")


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    enc = (lambda s: None if s is None else s.encode())
    _call(_libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
          f"mount {fstype or 'bind'} on {target}")


def _map_ids(uid: int, gid: int) -> None:
    """This namespace's root is `uid`/`gid` of the one outside: files keep their owners."""
    for name, text in (("uid_map", f"0 {uid} 1\n"), ("setgroups", "deny\n"), ("gid_map", f"0 {gid} 1\n")):
        with open(f"/proc/self/{name}", "w") as fh:
            fh.write(text)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _build(spec: dict[str, Any]) -> None:
    """In PID 1 of the new namespaces: the view of the filesystem, then locked."""
    hide = [h["path"] for h in spec["hide"]]
    keep = [(os.open(k, os.O_PATH | os.O_DIRECTORY), k) for k in spec["keep"]]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing made here reaches the host
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # this namespace's PIDs only
    for path in hide:
        _mount("w2s-hidden", path, "tmpfs", MS_NOSUID | MS_NODEV, HIDDEN_TMPFS)
    for fd, path in keep:
        if any(_inside(path, h) for h in hide):
            os.makedirs(path, exist_ok=True)  # inside the empty tmpfs: the way to the kept folder
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)  # the folder itself, by handle
        os.close(fd)
    for path in hide:  # nothing can be put into a hidden folder either
        _mount(None, path, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, HIDDEN_TMPFS)
    # a second user namespace: the mounts above become locked there (MNT_LOCKED), so not even its
    # root can unmount a tmpfs and read what it covers
    _unshare(CLONE_NEWUSER | CLONE_NEWNS, "a user namespace that locks the mounts")
    _map_ids(0, 0)
    for h in spec["hide"]:
        if os.stat(h["path"]).st_dev == h["dev"]:
            raise SandboxError(f"{h['path']} is still visible after it was hidden")
    try:
        os.chdir(spec.get("cwd") or "/")  # by path, through the new mounts
    except OSError:  # the working folder was hidden: the method's paths are absolute anyway
        os.chdir("/")


_report = 2  # where _fail writes: the report file once it is open


def _fail(message: str) -> NoReturn:
    os.write(_report, f"{'' if _report != 2 else PREFIX}{message}\n".encode())
    os._exit(SETUP_FAILED)


def _on_parent_death(signum: int) -> None:
    _libc().prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


def main(argv: list[str]) -> NoReturn:
    global _report
    spec = json.loads(argv[1])
    if spec.get("report"):  # opened before any namespace: its path may be hidden later
        _report = os.open(spec["report"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    if not sys.platform.startswith("linux"):
        _fail(f"needs Linux namespaces; this is {sys.platform}")
    uid, gid = os.geteuid(), os.getegid()
    try:
        _unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID, "user, mount and PID namespaces")
        _map_ids(uid, gid)
    except (SandboxError, OSError) as err:
        _fail(f"{err} (user namespaces may be disabled: sysctl user.max_user_namespaces, "
              f"kernel.unprivileged_userns_clone)")
    _on_parent_death(signal.SIGTERM)  # the framework died: the method is asked to stop
    child = os.fork()
    if child == 0:  # PID 1 of the new namespace
        _on_parent_death(signal.SIGKILL)  # kept across execve: no method outlives this process
        try:
            _build(spec)
        except (SandboxError, OSError) as err:
            _fail(str(err))
        os.execve(spec["argv"][0], spec["argv"], spec["env"])
    for signum in FORWARDED:
        signal.signal(signum, lambda s, _f: os.kill(child, s))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


if __name__ == "__main__":
    main(sys.argv)
