"""Small helpers around the Slurm command-line tools.

Used by the sweep executor (submit jobs with dependencies, follow their states) and by the
multi-node launcher (node list -> rendezvous address, DeepSpeed hostfile, self-requeue).
Only the standard library; every function that runs a Slurm command takes ``env`` (a mapping
passed to the subprocess, e.g. with ``SLURM_CONF``), ``None`` meaning ``os.environ``.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

__all__ = [
    "SlurmError",
    "JobInfo",
    "TERMINAL_STATES",
    "hostnames",
    "parse_hostlist",
    "master_addr_port",
    "write_deepspeed_hostfile",
    "submit",
    "job_states",
    "requeue_self",
]

# Job states after which a job will not run again by itself.
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)


class SlurmError(RuntimeError):
    """A Slurm command failed (its stderr is in the message)."""


@dataclass(frozen=True)
class JobInfo:
    """What is known of one job.

    ``state`` is Slurm's base state (``PENDING``, ``RUNNING``, ``COMPLETED``, ``FAILED``,
    ``CANCELLED``, ...; ``UNKNOWN`` when no source knows the job). ``exit_code`` and ``signal``
    come from Slurm's ``ExitCode=code:signal`` once the job has ended (``None`` before).
    ``source`` says which tool answered: squeue, scontrol, sacct or jobcomp.
    """

    job_id: str
    state: str
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    restarts: int | None = None
    source: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED" and not self.exit_code


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    return dict(os.environ if env is None else env)


def _run(cmd: Sequence[str], env: Mapping[str, str] | None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(cmd), env=_env(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def _check(proc: subprocess.CompletedProcess, what: str) -> str:
    if proc.returncode != 0:
        raise SlurmError(f"{what} failed (rc={proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


# ---------------------------------------------------------------------------------------------
# Node lists
# ---------------------------------------------------------------------------------------------


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in host list {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ValueError(f"unbalanced '[' in host list {text!r}")
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _expand_range_list(body: str) -> list[str]:
    """``01-03,07`` -> ``["01", "02", "03", "07"]`` (zero padding kept)."""
    out = []
    for item in body.split(","):
        item = item.strip()
        if not item:
            continue
        m = re.fullmatch(r"(\d+)-(\d+)", item)
        if m:
            lo, hi = m.group(1), m.group(2)
            if int(hi) < int(lo):
                raise ValueError(f"bad range {item!r}")
            width = len(lo) if lo.startswith("0") else 0
            out.extend(str(i).zfill(width) for i in range(int(lo), int(hi) + 1))
        elif re.fullmatch(r"\d+", item):
            out.append(item)
        else:
            raise ValueError(f"bad range item {item!r}")
    return out


def parse_hostlist(nodelist: str) -> list[str]:
    """Expand a Slurm host list without Slurm: ``node[01-03,07],gpu5`` ->
    ``[node01, node02, node03, node07, gpu5]``. Several bracket groups in one name expand as a
    product (``r[1-2]n[1-2]`` -> r1n1, r1n2, r2n1, r2n2), as Slurm does."""
    hosts: list[str] = []
    for part in _split_top_level(nodelist):
        pieces = re.split(r"(\[[^\]]*\])", part)
        choices = []
        for piece in pieces:
            if piece.startswith("[") and piece.endswith("]"):
                choices.append(_expand_range_list(piece[1:-1]))
            elif piece:
                if "[" in piece or "]" in piece:
                    raise ValueError(f"bad host list {nodelist!r}")
                choices.append([piece])
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    return hosts


def hostnames(nodelist: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Expand a Slurm node list with ``scontrol show hostnames``; when scontrol is missing or
    cannot run (no slurm.conf), fall back to :func:`parse_hostlist`."""
    nodelist = nodelist.strip()
    if not nodelist:
        return []
    if shutil.which("scontrol", path=_env(env).get("PATH")):
        try:
            proc = _run(["scontrol", "show", "hostnames", nodelist], env, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc = None
        if proc is not None and proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.split()
    return parse_hostlist(nodelist)


def master_addr_port(env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """Rendezvous address and port for a (multi-node) job.

    Address: ``MASTER_ADDR`` if set, else the first host of ``SLURM_JOB_NODELIST`` (or
    ``SLURM_NODELIST``), else ``127.0.0.1``. Port: ``MASTER_PORT`` if set, else
    ``20000 + SLURM_JOB_ID % 20000`` (same on every node of the job, differs between jobs that
    share a node), else 29500.
    """
    env = os.environ if env is None else env
    addr = env.get("MASTER_ADDR")
    if not addr:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
        hosts = hostnames(nodelist, env=env) if nodelist else []
        addr = hosts[0] if hosts else "127.0.0.1"
    if env.get("MASTER_PORT"):
        port = int(env["MASTER_PORT"])
    elif env.get("SLURM_JOB_ID"):
        port = 20000 + int(re.sub(r"\D", "", env["SLURM_JOB_ID"]) or 0) % 20000
    else:
        port = 29500
    return addr, port


def write_deepspeed_hostfile(
    path: str | os.PathLike, hosts: Sequence[str], slots_per_host: int | Sequence[int]
) -> Path:
    """Write a DeepSpeed hostfile (``host slots=N`` per line) and return its path."""
    hosts = list(hosts)
    if not hosts:
        raise ValueError("no hosts")
    slots = [slots_per_host] * len(hosts) if isinstance(slots_per_host, int) else list(slots_per_host)
    if len(slots) != len(hosts) or any(int(s) < 1 for s in slots):
        raise ValueError(f"bad slots {slots_per_host!r} for {len(hosts)} hosts")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{h} slots={int(s)}\n" for h, s in zip(hosts, slots)))
    return path


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------


def submit(
    script: str | os.PathLike,
    args: Sequence[str] = (),
    sbatch_options: Sequence[str] = (),
    dependencies: Iterable[str | int] = (),
    env: Mapping[str, str] | None = None,
) -> str:
    """``sbatch --parsable [options] [--dependency=afterok:A:B --kill-on-invalid-dep=yes]
    script args...``; returns the job id (a string). With dependencies, the job runs only
    once all of them completed with exit code 0, and is cancelled (not left pending forever)
    if one of them fails."""
    cmd = ["sbatch", "--parsable", *sbatch_options]
    deps = [str(d) for d in dependencies]
    if deps:
        cmd += ["--dependency=afterok:" + ":".join(deps), "--kill-on-invalid-dep=yes"]
    cmd += [str(script), *map(str, args)]
    out = _check(_run(cmd, env), "sbatch")
    job_id = out.strip().splitlines()[-1].split(";")[0].strip() if out.strip() else ""
    if not re.fullmatch(r"\d+(_\d+)?", job_id):
        raise SlurmError(f"sbatch gave no job id: {out!r}")
    return job_id


def _parse_exit(text: str | None) -> tuple[int | None, int | None]:
    m = re.fullmatch(r"(\d+):(\d+)", (text or "").strip())
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def _base_state(state: str) -> str:
    # sacct writes "CANCELLED by 0"; squeue/scontrol may add "+" flags.
    return state.split()[0].rstrip("+").upper() if state.strip() else "UNKNOWN"


def _kv(line: str, key: str) -> str | None:
    m = re.search(rf"(?:^|\s){re.escape(key)}=(\S*)", line)
    return m.group(1) if m else None


def _config(env: Mapping[str, str] | None) -> dict[str, str]:
    """``scontrol show config`` as a dict (empty if it cannot run)."""
    try:
        proc = _run(["scontrol", "show", "config"], env, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if proc.returncode != 0:
        return {}
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^(\w+)\s*=\s*(.*)$", proc.stdout, re.M)}


def _from_squeue(ids: list[str], env) -> dict[str, JobInfo]:
    try:
        proc = _run(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%A|%i|%T|%r"], env)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out = {}
    if proc.returncode != 0:  # e.g. a single id the controller no longer knows
        return out
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        raw, shown, state, reason = parts
        for key in (raw, shown):
            if key in ids:
                out[key] = JobInfo(key, _base_state(state), reason or None, source="squeue")
    return out


def _scontrol_line(line: str) -> JobInfo | None:
    job_id, state = _kv(line, "JobId"), _kv(line, "JobState")
    if not job_id or state is None:
        return None
    state = _base_state(state)
    code, sig = _parse_exit(_kv(line, "ExitCode")) if state in TERMINAL_STATES else (None, None)
    restarts = _kv(line, "Restarts")
    return JobInfo(
        job_id,
        state,
        _kv(line, "Reason"),
        code,
        sig,
        int(restarts) if restarts and restarts.isdigit() else None,
        "scontrol",
    )


def _from_scontrol(ids: list[str], env) -> dict[str, JobInfo]:
    """``scontrol show job -o``: one call per id for a few ids, else one call for all jobs."""
    queries = [[j] for j in ids] if len(ids) <= 3 else [[]]
    out = {}
    for q in queries:
        try:
            proc = _run(["scontrol", "show", "job", "-o", *q], env)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode != 0:
            continue
        for line in proc.stdout.splitlines():
            info = _scontrol_line(line)
            if info is not None and info.job_id in ids:
                out[info.job_id] = info
    return out


def _from_sacct(ids: list[str], env) -> dict[str, JobInfo]:
    try:
        proc = _run(
            ["sacct", "-X", "-n", "-P", "-j", ",".join(ids), "-o", "JobID,State,ExitCode,Reason"], env
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if proc.returncode != 0:
        return {}
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 3 or parts[0] not in ids:
            continue
        code, sig = _parse_exit(parts[2])
        out[parts[0]] = JobInfo(
            parts[0], _base_state(parts[1]), (parts[3] if len(parts) > 3 else None) or None, code, sig,
            source="sacct",
        )
    return out


def _from_jobcomp(ids: list[str], config: Mapping[str, str]) -> dict[str, JobInfo]:
    if config.get("JobCompType", "").lower() != "jobcomp/filetxt":
        return {}
    loc = config.get("JobCompLoc")
    if not loc or not os.path.isfile(loc):
        return {}
    out = {}
    with open(loc, errors="replace") as f:
        for line in f:  # later lines (a requeued job's last run) override earlier ones
            job_id = _kv(line, "JobId")
            if job_id in ids:
                code, sig = _parse_exit(_kv(line, "ExitCode"))
                out[job_id] = JobInfo(job_id, _base_state(_kv(line, "JobState") or ""), None, code, sig,
                                      source="jobcomp")
    return out


def job_states(job_ids: Iterable[str | int], env: Mapping[str, str] | None = None) -> dict[str, JobInfo]:
    """State of each job (keys are the ids as strings).

    Live jobs from ``squeue``; ended jobs from ``scontrol show job`` (for MinJobAge seconds
    after the end), then ``sacct`` when accounting is on, then the ``jobcomp/filetxt`` file.
    A job no source knows is ``JobInfo(id, "UNKNOWN")``.
    """
    ids = list(dict.fromkeys(str(j) for j in job_ids))
    if not ids:
        return {}
    result = {j: info for j, info in _from_squeue(ids, env).items() if not info.finished}
    missing = [j for j in ids if j not in result]
    if missing:
        result.update(_from_scontrol(missing, env))
    missing = [j for j in ids if j not in result]
    if missing:
        config = _config(env)
        if config.get("AccountingStorageType", "accounting_storage/none") != "accounting_storage/none":
            result.update(_from_sacct(missing, env))
        missing = [j for j in ids if j not in result]
        if missing:
            result.update(_from_jobcomp(missing, config))
    return {j: result.get(j, JobInfo(j, "UNKNOWN")) for j in ids}


def requeue_self(env: Mapping[str, str] | None = None) -> None:
    """``scontrol requeue $SLURM_JOB_ID`` from inside a batch job: the job is killed and put
    back in the queue (it restarts after the credential lifetime with SLURM_RESTART_COUNT
    incremented). Save state first; return promptly and exit after calling this."""
    e = os.environ if env is None else env
    job_id = e.get("SLURM_JOB_ID")
    if not job_id:
        raise SlurmError("requeue_self: SLURM_JOB_ID is not set (not inside a Slurm job)")
    _check(_run(["scontrol", "requeue", job_id], env), "scontrol requeue")
